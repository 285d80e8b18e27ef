#!/usr/bin/env python
"""Convert your own concepts to a Broden directory: COCO annotations, index-PNG masks, per-image labels.

This script runs `netdissect convert` from a checkout: the command is
pipeline/commandline/convert.py (its docstring and --help describe the options).
"""
import sys

import _bootstrap  # noqa: F401

from pipeline.commandline.convert import main

if __name__ == "__main__":
    sys.exit(main())
