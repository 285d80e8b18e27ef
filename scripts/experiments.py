#!/usr/bin/env python
"""The paper's experiments in miniature, on the embedded default (synthetic Broden + demo CNN).

    python scripts/experiments.py [--out runs/experiments] [--figures docs/figures]
        [--num-images 2000] [--seed 2] [--variant-iterations 300] [--skip-variants]
        [--quiet]

1. by layer: conv1..conv5 of the committed demo CNN;
2. over training: conv5 of the checkpoints saved at iterations 0, 100, 300, 600, 1200
   (runs/demo_training, trained with the committed weights' command if missing);
3. regularisers and width: conv5 of the demo CNN trained for --variant-iterations without
   BatchNorm, with dropout 0.5, and with a 512-unit conv5, against the baseline's own
   checkpoint at the same iteration;
4. rotation: conv3 and conv5 of the committed model under Q^alpha, alpha = 0 .. 1.
Every step is the real command line (extract.py, score.py, compare.py, rotate.py), printed
first; comparisons go to <out>/<experiment>/comparison.{csv,png}, copied to --figures.
Runs that exist are reused, so a rerun only does what is missing.
The plan is pipeline/experiments/miniature.py's plan_miniature, run by
pipeline/commands.py; this script parses and prints.
"""
from __future__ import annotations

import sys
from pathlib import Path

import _bootstrap  # noqa: F401

from pipeline import cli
from pipeline.commands import StepFailed, run_steps
from pipeline.experiments.miniature import MiniatureConfig, plan_miniature


def parse_args(argv=None):
    p = cli.parser(__doc__)
    p.add_argument("--out", default="runs/experiments", help="where the runs go")
    p.add_argument("--figures", default="docs/figures",
                   help="where the comparison and rotation charts and tables are copied")
    p.add_argument("--num-images", type=int, default=2000)
    p.add_argument("--seed", type=int, default=2, help="dataset seed")
    p.add_argument("--variant-iterations", type=int, default=300)
    p.add_argument("--skip-variants", action="store_true")
    cli.add_quiet(p)
    a = p.parse_args(argv)
    cli.check_at_least(p, a, 1, "num_images", "variant_iterations")
    cli.check_at_least(p, a, 0, "seed")
    return a


def main(argv=None) -> int:
    a = parse_args(argv)
    config = MiniatureConfig(out=Path(a.out), figures=Path(a.figures),
                             num_images=a.num_images, seed=a.seed,
                             variant_iterations=a.variant_iterations,
                             skip_variants=a.skip_variants, quiet=a.quiet)
    try:
        run_steps(plan_miniature(config, python=sys.executable), "experiments")
    except StepFailed as e:
        sys.exit(str(e))
    print(f"\nfigures and tables in {config.figures}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
