"""Experiments on cached runs, each in its own module on the shared derived-run writer.

- ``rotation``: the random-rotation experiment (the paper's Figure 4): Q^alpha applied to
  a cached layer, each derived run dissected again.
"""
