#!/usr/bin/env python
"""Download Broden (broden1_224 or broden1_227): resumable, checksum-verified, unpacked safely.

This script runs `netdissect download` from a checkout: the command is
pipeline/commandline/download.py (its docstring and --help describe the options).
"""
import sys

import _bootstrap  # noqa: F401

from pipeline.commandline.download import main

if __name__ == "__main__":
    sys.exit(main())
