#!/usr/bin/env python
"""Train the demo CNN (pipeline/models/demo.py DemoCNN) to classify synthetic Broden scenes.

This script runs `netdissect train-demo` from a checkout: the command is
pipeline/commandline/train_demo.py (its docstring and --help describe the options).
"""
import sys

import _bootstrap  # noqa: F401

from pipeline.commandline.train_demo import main

if __name__ == "__main__":
    sys.exit(main())
