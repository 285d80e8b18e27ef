"""Experiments, each in its own module: on cached runs (on the shared derived-run writer),
and the paper's experiments in miniature as command lines.

- ``rotation``: the random-rotation experiment (the paper's Figure 4): Q^alpha applied to
  a cached layer, each derived run dissected again; ``rotation_matrices``: Q, Q^alpha and
  random combinations; ``derived_runs``: the shared writer of runs holding r = M f(x).
- ``miniature``: the paper's experiments in miniature on the embedded default (by layer,
  over training, variants, rotation), planned as the project's own command lines.
"""
