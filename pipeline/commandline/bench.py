"""Measure each stage: images/s, wall time, peak resident memory, bytes on disk.

    netdissect bench [STAGE ...] --out DIR --num-images N
        [--dataset BRODEN_DIR] [--synthetic-activations K,h,w | --model SPEC --layers L]
        [--image-size 224 --seg-size 112] [--profile demo|broden] [--device auto]
        [--append BENCHMARKS.md] [--json PATH] [--quiet]

Stages (default: all that apply, in this order): generate (synthetic Broden into
OUT/broden_N unless --dataset), labels (label cache), extract (a model, with the bare
forward loop as baseline) or activations (with --synthetic-activations: a cache of those
shapes with ReLU-like statistics, no model), quantiles (six levels), tally (IoU cube,
six levels), rescore (a new IoU threshold from the stored cube), files (the check of
every image and label PNG against its record that precedes scoring). Each stage runs in a
fresh process. The table is printed and, with --append, appended to the file together
with the machine and the command (--quiet: only the table, no line per stage).
The work is pipeline/benchmark.py (plan_stages, run_benchmark, append_markdown); this
command parses and prints (`python scripts/bench.py` takes the same arguments; the table
records the command as that).
"""
from __future__ import annotations

import argparse
import sys

from pipeline import benchmark as B
from pipeline import cli, commandline
from pipeline.synthetic.profiles import PROFILES


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("stages", nargs="*",
                   help=f"subset of {B.STAGES} (default: all that apply)")
    p.add_argument("--out", "--work", dest="work", default="runs/bench", metavar="DIR",
                   help="working directory: where the datasets, runs and caches go "
                        "(default runs/bench)")
    p.add_argument("--num-images", type=int, default=2000,
                   help="images of the generated dataset (default 2000)")
    p.add_argument("--dataset", help="existing Broden directory (skips generate)")
    p.add_argument("--image-size", type=int, default=224,
                   help="generated image side in pixels (default 224)")
    p.add_argument("--seg-size", type=int, default=112,
                   help="generated segmentation side in pixels (default 112)")
    p.add_argument("--profile", choices=tuple(PROFILES), default="demo",
                   help="the generated dataset: demo (81 concepts) or broden (1,197 "
                        "concepts with Broden's statistics; see make_synthetic_broden.py)")
    p.add_argument("--synthetic-activations", help="K,h,w: measure a cache of these shapes")
    p.add_argument("--model", default="demo",
                   help="the model of the extract stage, as extract.py --model (default demo)")
    cli.add_layers(p, help="layers to extract; the first is measured (default conv5)")
    p.add_argument("--batch-size", type=int, default=64,
                   help="images per forward pass of the extract stage (default 64)")
    cli.add_device(p)
    p.add_argument("--workers", type=int, default=None,
                   help="worker processes of generate and labels (default: their own)")
    p.add_argument("--append", help="append the table to this markdown file")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON here")
    cli.add_quiet(p, help="print only the final table (no line per stage)")


def check(p: argparse.ArgumentParser, a: argparse.Namespace) -> None:
    """Plans the stages (``a.plan``); ``p.error`` names what is wrong."""
    try:
        a.plan = B.plan_stages(
            a.work, a.num_images, a.stages, dataset=a.dataset, image_size=a.image_size,
            seg_size=a.seg_size, model=a.model,
            synthetic=B.parse_shape(a.synthetic_activations)
            if a.synthetic_activations else None,
            layers=",".join(a.layers) if a.layers else "conv5",
            batch_size=a.batch_size, device=a.device, workers=a.workers,
            profile=a.profile)
    except ValueError as e:
        p.error(str(e))


def run(a: argparse.Namespace) -> int:
    results = B.run_benchmark(a.plan, log=None if a.quiet else
                              lambda line: print(line, flush=True))
    print("\n" + B.table(results))
    if a.append:
        B.append_markdown(a.append, results, a.num_images, a.command_argv)
        print(f"appended to {a.append}")
    if a.json:
        print(f"wrote {B.write_json(a.json, results, a.command_argv)}")
    return 0


def main(argv=None) -> int:
    return commandline.standalone(sys.modules[__name__], argv)
