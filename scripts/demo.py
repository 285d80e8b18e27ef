#!/usr/bin/env python
"""The main job on the embedded default (what `make demo` runs).

This script runs `netdissect demo` from a checkout: the command is
pipeline/commandline/demo.py (its docstring and --help describe the options).
"""
import sys

import _bootstrap  # noqa: F401

from pipeline.commandline.demo import main

if __name__ == "__main__":
    sys.exit(main())
