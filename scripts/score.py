#!/usr/bin/env python
"""Score a run: exact thresholds, IoU cube, per-unit labels and detector counts.

    python scripts/score.py RUN_DIR [--dataset BRODEN_DIR] [--layer L ...] [--quantile 0.005]
        [--iou-threshold 0.04] [--categories object,part,...] [--device auto]
        [--export-iou PATH.npy] [--export-thresholds PATH.npy]
        [--sweep 0.01:0.2:0.01] [--null [image|spatial|both]] [--null-permutations 100]
        [--null-images 500|all] [--null-seed 0] [--scheduler ADDRESS | --cluster local:N]
        [--top-images 8]

Replays the activation cache (never the network). Thresholds and the cube are stored in the
run; a new --iou-threshold or --categories, or a --quantile among the cube's levels, is
answered from the stored cube without any replay. So are --sweep (detectors against the IoU
threshold) and --null (permutation p-values from the activation and label caches).
With --scheduler or --cluster the quantiles and the tally run as Dask graphs on a
dask.distributed cluster (same numbers); a local run is locked while it is scored.
"""
from __future__ import annotations

import argparse
import contextlib
import sys
import time

import _bootstrap  # noqa: F401

import numpy as np

from cache import store
from cache.labels import LabelCache, LabelCacheError, run_label_cache
from pipeline.broden import BrodenError
from pipeline.dissect import (DEFAULT_LEVELS, ScoreConfig, layer_cube, layer_results,
                              layer_sweep)
from pipeline.distributed import check_scheduler_args, check_shared, dask_scheduler
from pipeline.null_model import KINDS, NullConfig
from pipeline.reports.tables import summary_table, sweep_table
from pipeline.sweep import parse_thresholds


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Score an extracted run (see module docstring).")
    p.add_argument("run", help="run directory written by scripts/extract.py, or its fsspec "
                               "URL (memory://, s3://, gcs://...)")
    p.add_argument("--dataset", help="Broden directory (default: the one extract.py recorded)")
    p.add_argument("--label-cache", help="label cache path (default: under $NETDISSECT_CACHE)")
    p.add_argument("--layer", action="append", default=None,
                   help="layer to score (repeatable; default: every layer of the run)")
    p.add_argument("--quantile", type=float, default=0.005,
                   help="activation quantile q: T_k is the (1-q) quantile (default 0.005)")
    p.add_argument("--levels", default=",".join(str(q) for q in DEFAULT_LEVELS),
                   help="quantile levels kept in the cube (default %(default)s)")
    p.add_argument("--iou-threshold", type=float, default=0.04,
                   help="a unit is a detector when its best IoU exceeds this (default 0.04)")
    p.add_argument("--categories", default=None,
                   help="comma-separated subset of categories to score (default: all)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--tile-images", type=int, default=None, help="images per replay tile")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="tiles counted at once on CPU, in N worker processes (default: one "
                        "per core, in processes for large caches and threads for small ones; "
                        "1: in this process)")
    p.add_argument("--export-iou", help="write the (units x labels) IoU matrix (.npy); "
                   "column j = label number j; needs exactly one layer")
    p.add_argument("--export-thresholds", help="write the (units,) thresholds T_k (.npy); "
                   "needs exactly one layer")
    p.add_argument("--sweep", metavar="START:STOP:STEP", default=None,
                   help="also count detectors at each IoU threshold of this grid (or a "
                        "comma list), from the cube: results/<layer>.sweep.csv and .png")
    p.add_argument("--null", nargs="?", const="both", default=None,
                   metavar="image|spatial|both",
                   help="permutation p-values of each unit's best IoU: image shuffle, "
                        "spatial (rigid motion of the mask) or both (default when given "
                        "bare); adds p_image/p_spatial columns (README, 'Null model')")
    p.add_argument("--null-permutations", type=int, default=100,
                   help="replicates R of the null model (default 100; smallest p 1/(R+1))")
    p.add_argument("--null-images", default="500",
                   help="random subsample of images for the null model, or 'all' "
                        "(default 500)")
    p.add_argument("--null-seed", type=int, default=0, help="seed of the null model")
    p.add_argument("--scheduler", metavar="ADDRESS", default=None,
                   help="run the quantiles and the tally on this dask.distributed scheduler "
                        "(e.g. tcp://10.0.0.5:8786); the run and label cache must be at a "
                        "path or URL the workers can open")
    p.add_argument("--cluster", metavar="local:N", default=None,
                   help="start a LocalCluster of N worker processes for the quantiles and "
                        "the tally (default: neither, the local threaded scheduler)")
    p.add_argument("--top-images", type=int, default=8, metavar="N",
                   help="the HTML report shows each unit's top N images (by per-image "
                        "maximum) with its mask drawn; 0: no images (default 8)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p.parse_args(argv)


def open_labels(a: argparse.Namespace, run) -> LabelCache:
    """The label cache of the run's dataset (cache.labels.run_label_cache)."""
    return run_label_cache(run, a.dataset, a.label_cache, progress=not a.quiet)


def null_config(a: argparse.Namespace) -> NullConfig | None:
    """The NullConfig asked for by --null* (None without --null); errors name the flag."""
    if a.null is None:
        return None
    kinds = list(KINDS) if a.null == "both" else [k.strip() for k in a.null.split(",")]
    if a.null_images.strip().lower() == "all":
        images = None
    else:
        try:
            images = int(a.null_images)
        except ValueError:
            raise ValueError(f"--null-images {a.null_images!r}: expected a number of images "
                             f"or 'all'") from None
    cfg = NullConfig(kinds=tuple(kinds), permutations=a.null_permutations, images=images,
                     seed=a.null_seed)
    cfg.check()
    return cfg


def score_layer(a: argparse.Namespace, config: ScoreConfig, run, layer: str,
                labels: LabelCache, sweep) -> None:
    """Cube, results, optional sweep and exports of one layer, printed as they finish."""
    cube = layer_cube(run, layer, labels, config)
    t0 = time.perf_counter()
    d, summary, csv_path = layer_results(run, layer, cube, labels, config)
    print(summary_table(layer, summary))
    if "significant_detectors" in summary:
        sig = summary["significant_detectors"]
        print(f"  detectors with p <= {sig['alpha']} (uncorrected): " + ", ".join(
            f"{k} {v}" for k, v in sig.items() if k != "alpha"))
    print(f"  results: {csv_path} (+ .json results document, .html); "
          f"{time.perf_counter() - t0:.2f} s")
    if sweep:
        t1 = time.perf_counter()
        summaries, sweep_csv, png = layer_sweep(run, layer, d, sweep)
        print(sweep_table(summaries, f"  IoU-threshold sweep of {layer} (from the "
                                     f"cube, no replay):"))
        print(f"  sweep: {sweep_csv} (+ .png); {time.perf_counter() - t1:.2f} s")
    if a.export_iou:
        np.save(a.export_iou, d.iou)
        print(f"  IoU matrix {d.iou.shape} -> {a.export_iou}")
    if a.export_thresholds:
        T = cube.thresholds[cube.level_index(config.quantile)]
        np.save(a.export_thresholds, T)
        print(f"  thresholds {T.shape} -> {a.export_thresholds}")


def run_lock(run) -> contextlib.AbstractContextManager:
    """The run's lock while scoring writes into it (a local run; an fsspec URL has none),
    so a second writer (scoring or extraction) of the same run is refused."""
    where = store.run_path(run)
    if isinstance(where, str):
        return contextlib.nullcontext()
    return store.RunLock(where, "scoring")


def score(a: argparse.Namespace, config: ScoreConfig) -> None:
    """Everything main() does once the arguments parsed; raises the errors it reports."""
    config.all_levels()
    if config.top_images < 0:
        raise ValueError(f"--top-images must be >= 0, got {config.top_images}")
    check_scheduler_args(a.scheduler, a.cluster)
    sweep = parse_thresholds(a.sweep) if a.sweep else None
    config.null = null_config(a)
    run = store.open_run(a.run, mode="r")
    layers = a.layer or store.layer_names(run)
    for layer in layers:
        store.check_layer(run, layer)
    if (a.export_iou or a.export_thresholds) and len(layers) != 1:
        raise ValueError("--export-iou/--export-thresholds need exactly one layer: "
                         f"add --layer (the run has {layers})")
    with run_lock(run):
        labels = open_labels(a, run)
        if labels.categories and config.categories:
            unknown = [c for c in config.categories if c not in labels.categories]
            if unknown:
                raise ValueError(f"--categories: unknown {unknown}; the dataset has "
                                 f"{labels.categories}")
        with dask_scheduler(a.scheduler, a.cluster) as client:
            if client is not None:
                check_shared(run, labels)
            config.client = client
            for layer in layers:
                score_layer(a, config, run, layer, labels, sweep)


def main(argv=None) -> int:
    a = parse_args(argv)
    try:
        levels = [float(q) for q in a.levels.split(",") if q.strip()]
    except ValueError:
        print(f"error: --levels {a.levels!r}: expected comma-separated numbers", file=sys.stderr)
        return 2
    cats = [c.strip() for c in a.categories.split(",")] if a.categories else None
    config = ScoreConfig(quantile=a.quantile, iou_threshold=a.iou_threshold, categories=cats,
                         device=a.device, levels=levels, tile_images=a.tile_images,
                         workers=a.workers, progress=not a.quiet, top_images=a.top_images,
                         dataset=a.dataset)
    try:
        score(a, config)
    except (BrodenError, LabelCacheError, store.RunError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:                # e.g. a full disk while writing a cube or report
        print(f"error: {e}\nthresholds and cubes stored before are kept (a cube is marked "
              f"complete only once written): fix the cause (e.g. free disk space) and rerun "
              f"the same command", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted: stored thresholds and cubes are kept; nothing is lost; rerun "
              "the same command to finish", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
