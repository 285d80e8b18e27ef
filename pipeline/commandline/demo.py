"""The main job on the embedded default (what `make demo` runs).

    netdissect demo [--out runs/demo] [--num-images 2000] [--seed 2]
        [--layers conv2,conv3,conv4,conv5] [--device auto] [--quiet]

1. generate a synthetic Broden dataset (skipped when already there),
2. use the committed demo CNN checkpoint (trains one if it is missing),
3. scripts/extract.py on several layers,
4. scripts/score.py on every extracted layer,
and say where the results are. Each step is the real command line, printed first.
The plan is pipeline/demo_job.py's plan_demo, run by pipeline/commands.py; this command
parses and prints (and imports no torch: `make demo` starts at once on a fresh machine;
`python scripts/demo.py` takes the same arguments).
"""
from __future__ import annotations

import argparse
import sys
import time

from pipeline import cli, commandline
from pipeline.commands import StepFailed, run_steps
from pipeline.demo_job import DEMO_LAYERS, plan_demo


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="runs/demo", help="where the dataset and run go")
    p.add_argument("--num-images", type=int, default=2000,
                   help="images of the generated dataset (default 2000)")
    p.add_argument("--seed", type=int, default=2,
                   help="dataset seed (the demo model was trained on seed 1 images)")
    cli.add_layers(p, help=f"layers to extract and score (default {','.join(DEMO_LAYERS)})")
    cli.add_device(p)
    cli.add_quiet(p)


def check(p: argparse.ArgumentParser, a: argparse.Namespace) -> None:
    cli.check_at_least(p, a, 1, "num_images")
    cli.check_at_least(p, a, 0, "seed")


def run(a: argparse.Namespace) -> int:
    py = sys.executable
    t0 = time.perf_counter()
    job = plan_demo(a.out, a.num_images, a.seed, a.layers or DEMO_LAYERS, a.device, a.quiet,
                    python=py)
    try:
        run_steps(job.steps, "demo")
    except StepFailed as e:
        sys.exit(str(e))
    run_dir = job.run_dir
    print(f"\ndemo finished in {time.perf_counter() - t0:.0f} s")
    print(f"results: {run_dir / 'results'}  (per layer: <layer>.csv in the NetDissect layout, "
          f"<layer>.json results document, <layer>.html page)")
    print(f"try re-scoring without replay: {py} scripts/score.py {run_dir} --iou-threshold 0.08 "
          f"(written to {run_dir}/results/iou0.08/)")
    return 0


def main(argv=None) -> int:
    return commandline.standalone(sys.modules[__name__], argv)
