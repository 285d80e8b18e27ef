#!/usr/bin/env python
"""Random-rotation experiment (the paper's Figure 4) on a cached layer.

    python scripts/rotate.py RUN --layer L [--alphas 0,0.2,0.4,0.6,0.8,1] [--seed 0]
        [--baseline combination] [--label-cache PATH] [--dataset DIR] [--quantile 0.005]
        [--iou-threshold 0.04] [--categories object,...] [--out DIR] [--device auto]
        [--dtype float32] [--reports] [--scheduler ADDRESS | --cluster local:N] [--quiet]

For each alpha, Q^alpha (Q uniform on SO(K), drawn from --seed; pipeline/rotation.py) is
applied to the cached activations of layer L chunk by chunk, into a derived run
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
import time
from pathlib import Path

import _bootstrap  # noqa: F401

from cache import store
from cache.labels import LabelCacheError, run_label_cache
from pipeline import rotation as rot
from pipeline.broden import BrodenError
from pipeline.dissect import ScoreConfig, layer_cube, layer_results
from pipeline.distributed import check_scheduler_args, check_shared, dask_scheduler
from pipeline.reports.charts import rotation_chart
from pipeline.reports.files import write_csv
from pipeline.reports.tables import rotation_rows, rotation_table


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Rotate a cached layer and dissect again "
                                            "(see module docstring).")
    p.add_argument("run", help="run directory written by scripts/extract.py")
    p.add_argument("--layer", required=True, help="layer of the run to rotate")
    p.add_argument("--alphas", default="0,0.2,0.4,0.6,0.8,1",
                   help="fractions of the rotation, in [0, 1] (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of Q (and of the baseline)")
    p.add_argument("--baseline", choices=["combination"], default=None,
                   help="also score a random-linear-combination baseline (each unit "
                        "replaced by a random unit-norm combination of the units)")
    p.add_argument("--dataset", help="Broden directory (default: the one extract.py recorded)")
    p.add_argument("--label-cache", help="label cache path (default: under $NETDISSECT_CACHE)")
    p.add_argument("--quantile", type=float, default=0.005,
                   help="activation quantile q: T_k is the (1-q) quantile (default 0.005)")
    p.add_argument("--iou-threshold", type=float, default=0.04,
                   help="a unit is a detector when its best IoU exceeds this (default 0.04)")
    p.add_argument("--categories", default=None,
                   help="comma-separated subset of categories to score (default: all)")
    p.add_argument("--out", default=None,
                   help="directory of the derived runs, table and chart "
                        "(default RUN/rotations)")
    p.add_argument("--dtype", default="float32", choices=["float32", "float64", "float16"],
                   help="stored dtype of derived runs (default float32: rotated values "
                        "are signed; float16 sources stay exact)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--tile-images", type=int, default=None, help="images per replay tile")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="tiles counted at once on CPU, in N worker processes (default: one "
                        "per core, in processes for large caches and threads for small ones; "
                        "1: in this process)")
    p.add_argument("--scheduler", metavar="ADDRESS", default=None,
                   help="run the quantiles and the tally on this dask.distributed scheduler")
    p.add_argument("--cluster", metavar="local:N", default=None,
                   help="start a LocalCluster of N worker processes for the scoring")
    p.add_argument("--reports", action="store_true",
                   help="also write each derived run's results/<layer>.json/.csv/.html "
                        "(as score.py does; seconds per derived run)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p.parse_args(argv)


def derived_dir(out: Path, layer: str, seed: int, kind: str, alpha: float | None) -> Path:
    name = store.layer_file_name(layer)
    if kind == "rotation":
        return out / f"{name}-seed{seed}-a{rot.alpha_name(alpha)}"
    return out / f"{name}-{kind}-seed{seed}"


def experiment(a: argparse.Namespace, config: ScoreConfig) -> list:
    """Everything main() does once the arguments parsed; returns the points
    [(kind, alpha, summary)]; raises the errors main() reports."""
    alphas = rot.parse_alphas(a.alphas)
    config.all_levels()
    check_scheduler_args(a.scheduler, a.cluster)
    run = store.open_run(a.run, mode="r")
    store.check_layer(run, a.layer)
    where = store.run_path(run)
    if a.out is None and isinstance(where, str):
        raise ValueError(f"{where} is a URL: give --out, a local directory for the "
                         f"derived runs")
    out = Path(a.out) if a.out else Path(where) / "rotations"
    K = int(store.activations(run, a.layer).shape[1])
    labels = run_label_cache(run, a.dataset, a.label_cache, progress=not a.quiet)
    if labels.categories and config.categories:
        unknown = [c for c in config.categories if c not in labels.categories]
        if unknown:
            raise ValueError(f"--categories: unknown {unknown}; the dataset has "
                             f"{labels.categories}")
    jobs: list[tuple[str, float | None]] = [("rotation", x) for x in alphas]
    if a.baseline:
        jobs.append((a.baseline, None))
    Q = rot.random_rotation(K, a.seed)
    points = []
    quiet = (lambda m: None) if a.quiet else print
    with dask_scheduler(a.scheduler, a.cluster) as client:
        if client is not None:
            check_shared(run, labels)
        config.client = client
        for kind, alpha in jobs:
            t0 = time.perf_counter()
            if kind == "rotation":
                M = rot.fractional_rotation(Q, alpha)
                transform = {"kind": "rotation", "alpha": alpha, "seed": a.seed}
            else:
                M = rot.random_combination(K, a.seed)
                transform = {"kind": kind, "alpha": None, "seed": a.seed}
            dest = derived_dir(out, a.layer, a.seed, kind, alpha)
            what = f"{kind} a={alpha}" if kind == "rotation" else kind
            fp = rot.derived_fingerprint(
                store.read_run_attrs(run)["model"]["fingerprint"], a.layer,
                rot.transform_record(transform, M, a.dtype))
            if rot.derived_is_complete(dest, fp):
                print(f"[{what}] reusing the derived run {dest}")
            else:
                rot.write_rotated_run(run, a.layer, M, dest, transform=transform,
                                      dtype=a.dtype, progress=not a.quiet)
                print(f"[{what}] derived run {dest}: {time.perf_counter() - t0:.1f} s")
            with store.RunLock(dest, "scoring"):
                cube = layer_cube(dest, a.layer, labels, config, log=quiet)
                if a.reports:
                    _, summary, _ = layer_results(dest, a.layer, cube, labels, config,
                                                  log=quiet)
                else:
                    summary = rot.cube_summary(cube, labels, config.quantile,
                                               config.iou_threshold, config.categories)
            points.append((kind, alpha, summary))
    stem = f"{store.layer_file_name(a.layer)}-seed{a.seed}"
    csv_path = write_csv(out / f"{stem}.csv", *rotation_rows(points))
    png = rotation_chart(out / f"{stem}.png", points,
                         title=f"{a.layer}: unique detectors under rotation "
                               f"(seed {a.seed}, IoU > {config.iou_threshold}, "
                               f"q = {config.quantile})")
    print(rotation_table(points, f"unique detectors of {a.layer} against the rotation "
                                 f"(per-category sum by category; both totals):"))
    print(f"  table: {csv_path}\n  chart: {png} (per-category sum, as the paper's Figure 4)")
    return points


def main(argv=None) -> int:
    a = parse_args(argv)
    cats = [c.strip() for c in a.categories.split(",")] if a.categories else None
    config = ScoreConfig(quantile=a.quantile, iou_threshold=a.iou_threshold, categories=cats,
                         device=a.device, levels=(a.quantile,), tile_images=a.tile_images,
                         workers=a.workers, progress=not a.quiet)
    try:
        experiment(a, config)
    except (BrodenError, LabelCacheError, store.RunError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: {e}\nfinished blocks of derived runs and stored cubes are kept: fix "
              f"the cause and rerun the same command", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted: finished derived-run blocks and cubes are kept; rerun the "
              "same command to finish", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
