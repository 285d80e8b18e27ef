#!/usr/bin/env python
"""Score a run: exact thresholds, IoU cube, per-unit labels and detector counts.

This script runs `netdissect score` from a checkout: the command is
pipeline/commandline/score.py (its docstring and --help describe the options).
"""
import sys

import _bootstrap  # noqa: F401

from pipeline.commandline.score import main

if __name__ == "__main__":
    sys.exit(main())
