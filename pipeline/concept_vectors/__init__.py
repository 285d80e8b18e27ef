"""Concept vectors (Net2Vec, Fong & Vedaldi 2018) from a run's caches: ``sampling``
(the split and each concept's bounded pixel sample), ``training`` (per-pixel logistic
regression), ``evaluation`` (exact held-out counts), ``experiment`` (the whole job:
:func:`concept_vectors`), ``cli`` (its command line)."""
from pipeline.concept_vectors.experiment import concept_vectors

__all__ = ["concept_vectors"]
