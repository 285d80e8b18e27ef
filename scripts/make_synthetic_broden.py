#!/usr/bin/env python
"""Write a synthetic dataset in the Broden on-disk format (see pipeline/synthetic/).

This script runs `netdissect synthetic` from a checkout: the command is
pipeline/commandline/synthetic.py (its docstring and --help describe the options).
"""
import sys
from pathlib import Path

# the repo root on sys.path (as scripts/_bootstrap.py does; inline so that the script can
# also be loaded by its path, as tests/test_synthetic.py does)
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.commandline.synthetic import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
