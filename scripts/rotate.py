#!/usr/bin/env python
"""Random-rotation experiment (the paper's Figure 4) on a cached layer.

This script runs `netdissect rotate` from a checkout: the command is
pipeline/commandline/rotate.py (its docstring and --help describe the options).
"""
import sys

import _bootstrap  # noqa: F401

from pipeline.commandline.rotate import main

if __name__ == "__main__":
    sys.exit(main())
