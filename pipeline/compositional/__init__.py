"""Compositional explanations (Mu & Andreas, NeurIPS 2020) from a run's caches: formulas
of concepts (AND, OR, AND NOT) whose masks best match a unit's, by beam search.

``set_counts`` (one replay: active pixels per unit and global label set), ``search``
(the beam search over those counts), ``explain`` (the stage: ``compositional(run,
layer, ...)`` and its report files), ``cli`` (the command line's ``main``).
"""
from pipeline.compositional.explain import CompositionalResult, compositional

__all__ = ["compositional", "CompositionalResult"]
