"""Download Broden (broden1_224 or broden1_227): resumable, checksum-verified, unpacked safely.

    netdissect download NAME --dest DIR [--mirror URL ...] [--no-keep-archive] [--quiet]
    netdissect download --list

Fetches DIR/NAME.zip (resuming an interrupted transfer; mirrors tried in order),
verifies its checksum before unpacking, unpacks it into DIR/NAME (pipeline/download.py)
and prints the folder to pass as --dataset. Offline: download the zip by other means and
put it at DIR/NAME.zip; the same command then verifies and unpacks it.
Exit code: 0 ready, 2 refused or not downloadable (the message says what to do), 1 an
environment failure (disk full, read-only folder).
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from pipeline import cli, commandline
from pipeline.download import CATALOGUE, DownloadError, download


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The command's options (pipeline/commandline/'s interface)."""
    p.add_argument("name", nargs="?", choices=sorted(CATALOGUE), metavar="NAME",
                   help=f"the dataset: {', '.join(sorted(CATALOGUE))}")
    p.add_argument("--dest", default="data", help="folder to put NAME.zip and NAME/ in "
                                                  "(default data)")
    p.add_argument("--mirror", action="append", default=None, metavar="URL",
                   help="a URL of the zip, used instead of the known ones "
                        "(repeat for several, tried in order)")
    p.add_argument("--retries", type=int, default=3,
                   help="resumes per mirror after a dropped connection (default 3)")
    p.add_argument("--no-keep-archive", action="store_true",
                   help="delete NAME.zip once unpacked")
    p.add_argument("--list", action="store_true", help="list the known datasets and URLs")
    cli.add_quiet(p)


def check(p: argparse.ArgumentParser, a: argparse.Namespace) -> None:
    if a.name is None and not a.list:
        p.error("give a dataset name (or --list)")
    cli.check_at_least(p, a, 0, "retries")


def run(a: argparse.Namespace) -> int:
    """List the catalogue, or download as ``a`` asks; the exit status (module docstring)."""
    if a.list:
        for e in CATALOGUE.values():
            print(f"{e.name}: sha256 {e.sha256 or '(not recorded)'}; " + " | ".join(e.urls))
        return 0

    def body() -> None:
        out = download(a.name, a.dest, a.mirror, retries=a.retries,
                       keep_archive=not a.no_keep_archive, progress=not a.quiet)
        print(f"{a.name} is ready: pass --dataset {out}")

    return cli.run_main(body, (DownloadError,),
                        interrupt_note=f"the partial download is kept in {a.dest}; rerun "
                                       f"the same command to resume",
                        disk_note=f"the partial download is kept in {a.dest}: free space "
                                  f"and rerun the same command to resume",
                        read_only_note=f"--dest {a.dest} is not writable: choose another "
                                       f"--dest")


def main(argv: Sequence[str] | None = None) -> int:
    """The stand-alone command (``python -m pipeline.download_cli``)."""
    return commandline.standalone(sys.modules[__name__], argv)


if __name__ == "__main__":
    raise SystemExit(main())
