#!/usr/bin/env python
"""Measure each stage: images/s, wall time, peak resident memory, bytes on disk.

This script runs `netdissect bench` from a checkout: the command is
pipeline/commandline/bench.py (its docstring and --help describe the options).
"""
import sys

import _bootstrap  # noqa: F401

from pipeline.commandline.bench import main

if __name__ == "__main__":
    sys.exit(main())
