"""Decode a Broden directory's labels once into a label cache (Zarr).

    netdissect cache-labels --dataset BRODEN_DIR [--out LABELS.zarr] [--workers N]
        [--repair] [--overwrite]

Without --out the cache goes to $NETDISSECT_CACHE (default ~/.cache/netdissect)
under a name derived from the dataset fingerprint, where score.py looks for it.
An interrupted build resumes when the command is run again; --repair re-checks every
chunk's CRC32C and re-decodes only the damaged ones; --overwrite (alias --rebuild)
replaces a cache of another dataset. --out may be an fsspec URL.
`python scripts/cache_labels.py` takes the same arguments.
"""
from __future__ import annotations

import argparse
import sys

from cache.labels import LabelCacheError
from cache.store import RunError
from pipeline import cli, commandline
from pipeline.broden import BrodenDataset, BrodenError
from pipeline.label_decoding import build_label_cache


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", required=True, help="Broden directory (holds index.csv)")
    p.add_argument("--out", help="label cache path (default: under $NETDISSECT_CACHE)")
    p.add_argument("--workers", type=int, default=None, help="decoding processes")
    p.add_argument("--chunk-images", type=int, default=256,
                   help="images per chunk of the cache (default 256)")
    p.add_argument("--overwrite", "--rebuild", dest="overwrite", action="store_true",
                   help="replace a cache of another dataset")
    p.add_argument("--repair", action="store_true",
                   help="re-decode only the chunks that fail their checksum (or are missing)")
    cli.add_quiet(p)


def run(a: argparse.Namespace) -> int:
    def body() -> None:
        cache = build_label_cache(BrodenDataset(a.dataset), a.out, chunk_images=a.chunk_images,
                                  workers=a.workers, overwrite=a.overwrite, repair=a.repair,
                                  progress=not a.quiet)
        print(f"label cache: {cache.path} ({cache.num_images} images, "
              f"{cache.num_labels - 1} label numbers, {cache.planes.shape[1]} label slots "
              f"per pixel)")

    return cli.run_main(
        body, (BrodenError, LabelCacheError, RunError),
        disk_note="finished chunks are kept: fix the cause (e.g. free disk space) and run "
                  "the same command to resume",
        interrupt_note="finished chunks are kept; run the same command to resume",
        read_only_note="the label cache's location is read-only: give a writable --out "
                       "(or copy the cache there) and rerun")


def main(argv=None) -> int:
    return commandline.standalone(sys.modules[__name__], argv)
