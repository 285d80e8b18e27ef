#!/usr/bin/env python
"""Compositional explanations of a layer's units: the best formula of concepts (AND, OR,
AND NOT, up to --length atoms) for each unit, by beam search, from the run's caches.

This script runs `netdissect compositional` from a checkout: the command is
pipeline/commandline/compositional.py (its docstring and --help describe the options).
"""
import sys

import _bootstrap  # noqa: F401

from pipeline.commandline.compositional import main

if __name__ == "__main__":
    sys.exit(main())
