"""Verify runs, their label caches and derived runs: every chunk, all metadata, stored results.

    netdissect verify RUN [RUN...] [--label-cache PATH] [--dataset DIR] [--full]

Reads every chunk of the finished blocks (CRC32C, present on disk), every zarr.json
(readable, matching the digest recorded when it was written), the stored thresholds
and cubes (intact, computed from the run as it is now), the run's label cache (the
default path of its dataset fingerprint, or --label-cache) and the derived runs in
RUN/rotations (stale when their source changed), and the dataset's images and label
PNGs against the records made when they were read (stat; --full hashes every file).
Prints one line per finding: what
is damaged, incomplete or stale and the command that repairs it; a clean run prints a
short summary. Takes no lock and writes nothing (pipeline/verify.py).
`python scripts/verify.py` takes the same arguments.
Exit code: 0 all clean, 1 something is damaged, incomplete or stale, 2 bad arguments.
"""
from __future__ import annotations

import argparse
import sys

from cache.labels import LabelCacheError
from cache.store import RunError
from pipeline import cli, commandline
from pipeline.broden import BrodenError
from pipeline.verify import verify_run


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("runs", nargs="+", metavar="RUN", help="run directories (or URLs)")
    cli.add_run_data(p)
    p.add_argument("--full", action="store_true",
                   help="hash every image and label PNG (default: only files whose size "
                        "or mtime changed since they were recorded)")


def run(a: argparse.Namespace) -> int:
    found = []

    def body() -> None:
        for run in a.runs:
            findings, notes = verify_run(run, a.label_cache, a.dataset, a.full)
            for f in findings:
                print(f)
            if not findings:
                print(f"{run}: intact ({'; '.join(notes)})")
            found.extend(findings)

    rc = cli.run_main(body, (BrodenError, LabelCacheError, RunError),
                      disk_note="verify writes nothing; check that the files can be read",
                      interrupt_note="nothing was written")
    return rc or (1 if found else 0)


def main(argv=None) -> int:
    return commandline.standalone(sys.modules[__name__], argv)
