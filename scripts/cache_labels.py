#!/usr/bin/env python
"""Decode a Broden directory's labels once into a label cache (Zarr).

This script runs `netdissect cache-labels` from a checkout: the command is
pipeline/commandline/cache_labels.py (its docstring and --help describe the options).
"""
import sys

import _bootstrap  # noqa: F401

from pipeline.commandline.cache_labels import main

if __name__ == "__main__":
    sys.exit(main())
