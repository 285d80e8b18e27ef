#!/usr/bin/env python
"""The main job on the embedded default (what `make demo` runs).

    python scripts/demo.py [--out runs/demo] [--num-images 2000] [--seed 2]
        [--layers conv2,conv3,conv4,conv5] [--device auto] [--quiet]

1. generate a synthetic Broden dataset (skipped when already there),
2. use the committed demo CNN checkpoint (trains one if it is missing),
3. scripts/extract.py on several layers,
4. scripts/score.py on every extracted layer,
and say where the results are. Each step is the real command line, printed first.
The plan is pipeline/demo_job.py's plan_demo, run by pipeline/commands.py; this script
parses and prints (and imports no torch: `make demo` starts at once on a fresh machine).
"""
from __future__ import annotations

import sys
import time

import _bootstrap  # noqa: F401

from pipeline import cli
from pipeline.commands import StepFailed, run_steps
from pipeline.demo_job import DEMO_LAYERS, plan_demo


def parse_args(argv=None):
    p = cli.parser(__doc__)
    p.add_argument("--out", default="runs/demo", help="where the dataset and run go")
    p.add_argument("--num-images", type=int, default=2000)
    p.add_argument("--seed", type=int, default=2,
                   help="dataset seed (the demo model was trained on seed 1 images)")
    cli.add_layers(p, help=f"layers to extract and score (default {','.join(DEMO_LAYERS)})")
    p.add_argument("--device", default="auto")
    cli.add_quiet(p)
    a = p.parse_args(argv)
    cli.check_at_least(p, a, 1, "num_images")
    cli.check_at_least(p, a, 0, "seed")
    return a


def main(argv=None) -> int:
    a = parse_args(argv)
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


if __name__ == "__main__":
    sys.exit(main())
