"""Write a synthetic dataset in the Broden on-disk format (see pipeline/synthetic/).

    netdissect synthetic --out DIR [--profile demo|broden]
        [--num-images 2000] [--image-size 224] [--seg-size 112] [--seed 0] [--workers N]
        [--quiet]

The dataset is pipeline/synthetic/writer.py's write_dataset (the same files for any
--workers); this command checks the arguments and prints what it wrote
(`python scripts/make_synthetic_broden.py` takes the same arguments). Profiles
(pipeline/synthetic/profiles.py): demo (81 concepts, the default) and broden (Broden's
1,197 labels, sources and frequencies; use it to measure at Broden's scale).
Example: netdissect synthetic --out data/synthetic_broden --num-images 2000
         netdissect synthetic --out data/broden_like --profile broden --num-images 63305
"""
from __future__ import annotations

import argparse
import sys
import time

from pipeline import cli, commandline
from pipeline.synthetic.catalogue import CATEGORIES
from pipeline.synthetic.profiles import PROFILES, get_profile
from pipeline.synthetic.writer import write_dataset


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="output directory (created; files overwritten)")
    p.add_argument("--profile", choices=tuple(PROFILES), default="demo",
                   help="what to generate: " + "; ".join(f"{k}: {v}" for k, v in
                                                       PROFILES.items()))
    p.add_argument("--num-images", type=int, default=2000, help="number of images (default 2000; "
                   "real Broden has 63305)")
    p.add_argument("--image-size", type=int, default=224, help="image side in pixels (224)")
    p.add_argument("--seg-size", type=int, default=112, help="segmentation side in pixels (112)")
    p.add_argument("--seed", type=int, default=0, help="dataset seed (0)")
    p.add_argument("--workers", type=int, default=None,
                   help="worker processes (default: all cores; the output does not depend on it)")
    cli.add_quiet(p)


def check(p: argparse.ArgumentParser, a: argparse.Namespace) -> None:
    if a.num_images < 1:
        p.error(f"--num-images must be >= 1, got {a.num_images}")
    if a.seed < 0:
        p.error(f"--seed must be >= 0, got {a.seed}")
    if not 8 <= a.seg_size <= a.image_size:
        p.error(f"need 8 <= --seg-size <= --image-size, got {a.seg_size} and {a.image_size}")
    if a.workers is not None and a.workers < 1:
        p.error(f"--workers must be >= 1, got {a.workers}")


def run(a: argparse.Namespace) -> int:
    def body() -> None:
        t0 = time.perf_counter()
        out = write_dataset(a.out, num_images=a.num_images, image_size=a.image_size,
                            seg_size=a.seg_size, seed=a.seed, workers=a.workers,
                            progress=not a.quiet, profile=a.profile)
        dt = time.perf_counter() - t0
        size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
        print(f"wrote {a.num_images} images of profile {a.profile} "
              f"({len(get_profile(a.profile).concepts)} labels; {', '.join(CATEGORIES)}) "
              f"to {out} in {dt:.1f} s ({a.num_images / dt:.0f} images/s, "
              f"{size / 2**20:.0f} MiB on disk)")

    return cli.run_main(
        body, (),
        disk_note="the dataset is incomplete: fix the cause and rerun the same command "
                  "(it writes every file again)",
        interrupt_note="the dataset is incomplete; rerun the same command",
        read_only_note=f"--out {a.out} is read-only: choose a writable --out")


def main(argv: list[str] | None = None) -> int:
    return commandline.standalone(sys.modules[__name__], argv)
