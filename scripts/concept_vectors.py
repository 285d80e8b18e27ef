#!/usr/bin/env python
"""Concept vectors (Net2Vec): per concept, a weighting of a layer's units learned by
per-pixel logistic regression, against the best single unit on held-out images.

This script runs `netdissect concept-vectors` from a checkout: the command is
pipeline/commandline/concept_vectors.py (its docstring and --help describe the options).
"""
import sys

import _bootstrap  # noqa: F401

from pipeline.commandline.concept_vectors import main

if __name__ == "__main__":
    sys.exit(main())
