"""``python -m pipeline``: the ``netdissect`` command, for a checkout that is not installed."""
import sys

from pipeline.commandline.main import main

if __name__ == "__main__":
    sys.exit(main())
