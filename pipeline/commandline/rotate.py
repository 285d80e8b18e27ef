"""Random-rotation experiment (the paper's Figure 4) on a cached layer.

    netdissect rotate RUN --layers L [--alphas 0,0.2,0.4,0.6,0.8,1] [--seed 0]
        [--baseline combination] [--label-cache PATH] [--dataset DIR] [--quantile 0.005]
        [--iou-threshold 0.04] [--categories object,...] [--out DIR] [--device auto]
        [--dtype float32] [--reports] [--repair] [--scheduler ADDRESS | --cluster local:N]
        [--quiet]

The experiment is pipeline/experiments/rotation.py's run_experiment; this command parses
and prints (`python scripts/rotate.py` takes the same arguments). For each alpha, Q^alpha
(Q uniform on SO(K), drawn from --seed) is applied to the cached activations of layer L
chunk by chunk, into a derived run
OUT/<layer>-seed<S>-a<alpha> (OUT defaults to RUN/rotations); the derived run is scored
from scratch (exact thresholds, IoU cube at --quantile) with the source run's label cache
(--reports: plus score.py's report files in each derived run).
With --baseline combination, a derived run OUT/<layer>-combination-seed<S> whose units
are random unit-norm linear combinations of the layer's units is scored too.
Prints a table of unique detectors per category against alpha and writes it as
OUT/<layer>-seed<S>.csv (both conventions) and OUT/<layer>-seed<S>.png (the per-category
sum, as the paper's figures count). A rerun reuses derived runs (and their stored
thresholds and cubes) that are complete; the network is never touched.
"""
from __future__ import annotations

import argparse
import sys

from cache.labels import LabelCacheError
from cache.store import RunError
from pipeline import cli, commandline
from pipeline.broden import BrodenError
from pipeline.experiments.rotation import RotationSpec, run_experiment


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="run directory written by scripts/extract.py")
    cli.add_layers(p, required=True, help="the layer of the run to rotate (one)")
    p.add_argument("--alphas", default="0,0.2,0.4,0.6,0.8,1",
                   help="fractions of the rotation, in [0, 1] (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of Q (and of the baseline)")
    p.add_argument("--baseline", choices=["combination"], default=None,
                   help="also score a random-linear-combination baseline (each unit "
                        "replaced by a random unit-norm combination of the units)")
    cli.add_run_data(p)
    cli.add_scoring(p)
    p.add_argument("--out", default=None,
                   help="directory of the derived runs, table and chart "
                        "(default RUN/rotations)")
    p.add_argument("--dtype", default="float32", choices=["float32", "float64", "float16"],
                   help="stored dtype of derived runs (default float32: rotated values "
                        "are signed; float16 sources stay exact)")
    cli.add_compute(p)
    p.add_argument("--repair", action="store_true",
                   help="check every chunk of complete derived runs (CRC32C, missing) and "
                        "rewrite only the blocks holding damaged ones")
    p.add_argument("--reports", action="store_true",
                   help="also write each derived run's results/<layer>.json/.csv/.html "
                        "(as score.py does; seconds per derived run)")
    cli.add_quiet(p)


def check(p: argparse.ArgumentParser, a: argparse.Namespace) -> None:
    if len(a.layers) != 1:
        p.error(f"--layers: rotate one layer at a time, got {a.layers}")


def run(a: argparse.Namespace) -> int:
    def body() -> None:
        spec = RotationSpec(layer=a.layers[0], alphas=cli.parse_alphas(a.alphas),
                            seed=a.seed, baseline=a.baseline, dtype=a.dtype, out=a.out,
                            reports=a.reports, repair=a.repair)
        config = cli.score_config(a, levels=(a.quantile,))
        res = run_experiment(a.run, spec, config, label_cache=a.label_cache,
                             scheduler=a.scheduler, cluster=a.cluster,
                             security=cli.scheduler_security(a))
        print(res.table)
        print(f"  table: {res.csv_path}\n  chart: {res.chart_path} (per-category sum, as "
              f"the paper's Figure 4)")

    return cli.run_main(
        body, (BrodenError, LabelCacheError, RunError),
        disk_note="finished blocks of derived runs and stored cubes are kept: fix the "
                  "cause and rerun the same command",
        interrupt_note="finished derived-run blocks and cubes are kept; rerun the same "
                       "command to finish",
        read_only_note="the derived runs are written under --out (and cubes into the "
                       "run): give a writable --out, or copy the run to a writable place")


def main(argv=None) -> int:
    return commandline.standalone(sys.modules[__name__], argv)
