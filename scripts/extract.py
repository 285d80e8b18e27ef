#!/usr/bin/env python
"""Extract a model's layer activations over a Broden dataset into a run (Zarr cache).

This script runs `netdissect extract` from a checkout: the command is
pipeline/commandline/extract.py (its docstring and --help describe the options).
"""
import sys

import _bootstrap  # noqa: F401

from pipeline.commandline.extract import main

if __name__ == "__main__":
    sys.exit(main())
