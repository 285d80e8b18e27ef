#!/usr/bin/env python
"""Verify runs, their label caches and derived runs: every chunk, all metadata, stored results.

This script runs `netdissect verify` from a checkout: the command is
pipeline/commandline/verify.py (its docstring and --help describe the options).
"""
import sys

import _bootstrap  # noqa: F401

from pipeline.commandline.verify import main

if __name__ == "__main__":
    sys.exit(main())
