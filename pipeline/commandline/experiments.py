"""The paper's experiments in miniature, on the embedded default (synthetic Broden + demo CNN).

    netdissect experiments [--out runs/experiments] [--figures docs/figures]
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
pipeline/commands.py; this command parses and prints (`python scripts/experiments.py`
takes the same arguments).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipeline import cli, commandline
from pipeline.commands import StepFailed, run_steps
from pipeline.experiments.miniature import MiniatureConfig, plan_miniature


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="runs/experiments", help="where the runs go")
    p.add_argument("--figures", default="docs/figures",
                   help="where the comparison and rotation charts and tables are copied")
    p.add_argument("--num-images", type=int, default=2000,
                   help="images of the generated dataset (default 2000)")
    p.add_argument("--seed", type=int, default=2, help="dataset seed")
    p.add_argument("--variant-iterations", type=int, default=300,
                   help="training iterations of each regulariser and width variant "
                        "(default 300)")
    p.add_argument("--skip-variants", action="store_true",
                   help="leave out experiment 3 (the variants, which train models)")
    cli.add_quiet(p)


def check(p: argparse.ArgumentParser, a: argparse.Namespace) -> None:
    cli.check_at_least(p, a, 1, "num_images", "variant_iterations")
    cli.check_at_least(p, a, 0, "seed")


def run(a: argparse.Namespace) -> int:
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


def main(argv=None) -> int:
    return commandline.standalone(sys.modules[__name__], argv)
