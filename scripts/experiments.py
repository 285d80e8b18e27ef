#!/usr/bin/env python
"""The paper's experiments in miniature, on the embedded default (synthetic Broden + demo CNN).

This script runs `netdissect experiments` from a checkout: the command is
pipeline/commandline/experiments.py (its docstring and --help describe the options).
"""
import sys

import _bootstrap  # noqa: F401

from pipeline.commandline.experiments import main

if __name__ == "__main__":
    sys.exit(main())
