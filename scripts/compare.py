#!/usr/bin/env python
"""Put dissections side by side: our runs and published NetDissect result tables.

This script runs `netdissect compare` from a checkout: the command is
pipeline/commandline/compare.py (its docstring and --help describe the options).
"""
import sys

import _bootstrap  # noqa: F401

from pipeline.commandline.compare import main

if __name__ == "__main__":
    sys.exit(main())
