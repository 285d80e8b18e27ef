"""Unpack a downloaded archive (e.g. broden1_224.zip) safely: checksum, then every member.

    netdissect unpack ARCHIVE --out DIR [--sha256 HEX]

Checks the archive's SHA-256 when --sha256 is given, then refuses the whole archive if any
member would land outside DIR (an absolute name, '..'), is a link out of DIR or a special
file; only then extracts it into DIR (a new or empty folder), atomically (pipeline/archives.py).
Exit code: 0 unpacked, 2 refused (nothing was written), 1 an environment failure.
Example: netdissect unpack ~/Downloads/broden1_224.zip --out data/broden
(`python scripts/unpack.py` takes the same arguments; --to is the old spelling of --out).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipeline import cli, commandline
from pipeline.archives import ArchiveError, members, unpack


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("archive", metavar="ARCHIVE", help="a .zip, .tar, .tar.gz/.tgz or .tar.xz")
    p.add_argument("--out", "--to", dest="to", required=True, metavar="DIR",
                   help="folder to unpack into (created; must be empty if it exists)")
    p.add_argument("--sha256", metavar="HEX", default=None,
                   help="the archive's published SHA-256: checked before anything is unpacked")


def run(a: argparse.Namespace) -> int:
    def body() -> None:
        out = unpack(a.archive, a.to, a.sha256)
        n = len(members(a.archive, out))
        print(f"unpacked {n} members of {a.archive} into {out}"
              + ("" if a.sha256 else " (no --sha256 given: the checksum was not checked)"))

    return cli.run_main(body, (ArchiveError,),
                        interrupt_note=f"nothing is under {Path(a.to)}; rerun the same "
                                       f"command",
                        disk_note=f"nothing is under {Path(a.to)}: free space and rerun the "
                                  f"same command",
                        read_only_note=f"--to {a.to} is read-only: choose a writable --to")


def main(argv=None) -> int:
    return commandline.standalone(sys.modules[__name__], argv)
