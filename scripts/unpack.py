#!/usr/bin/env python
"""Unpack a downloaded archive (e.g. broden1_224.zip) safely: checksum, then every member.

This script runs `netdissect unpack` from a checkout: the command is
pipeline/commandline/unpack.py (its docstring and --help describe the options).
"""
import sys

import _bootstrap  # noqa: F401

from pipeline.commandline.unpack import main

if __name__ == "__main__":
    sys.exit(main())
