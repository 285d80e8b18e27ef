"""Score a run: exact thresholds, IoU cube, per-unit labels and detector counts.

    netdissect score RUN_DIR [--dataset BRODEN_DIR] [--layers L,...] [--quantile 0.005]
        [--iou-threshold 0.04] [--categories object,part,...] [--device auto]
        [--export-iou PATH.npy] [--export-thresholds PATH.npy]
        [--sweep 0.01:0.2:0.01] [--null [image|spatial|both]] [--null-permutations 100]
        [--null-images 500|all] [--null-seed 0] [--scheduler ADDRESS | --cluster local:N]
        [--top-images 8] [--results-dir DIR] [--quiet]

Replays the activation cache (never the network). Thresholds and the cube are stored in the
run; a new --iou-threshold or --categories, or a --quantile among the cube's levels, is
answered from the stored cube without any replay. So are --sweep (detectors against the IoU
threshold) and --null (permutation p-values from the activation and label caches).
With --scheduler or --cluster the quantiles and the tally run as Dask graphs on a
dask.distributed cluster (same numbers); a local run is locked while something is stored
in it (thresholds, a cube); one already scored at every asked level is only read, so
--results-dir DIR reports from a run on a read-only filesystem.
The work is pipeline/stages.py's score_run; this command parses and prints
(`python scripts/score.py` takes the same arguments).
"""
from __future__ import annotations

import argparse
import sys

from cache.labels import LabelCacheError
from cache.store import RunError
from pipeline import cli, commandline
from pipeline.broden import BrodenError
from pipeline.layer_stages import DEFAULT_LEVELS
from pipeline.reports.tables import summary_table, sweep_table
from pipeline.stages import Exports, LayerScore, score_run


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="run directory written by scripts/extract.py, or its fsspec "
                               "URL (memory://, s3://, gcs://...)")
    cli.add_run_data(p)
    cli.add_layers(p)
    cli.add_scoring(p)
    p.add_argument("--levels", default=",".join(str(q) for q in DEFAULT_LEVELS),
                   help="quantile levels kept in the cube (default %(default)s)")
    cli.add_compute(p)
    p.add_argument("--export-iou", help="write the (units x labels) IoU matrix (.npy); "
                   "column j = label number j; needs exactly one layer")
    p.add_argument("--export-thresholds", help="write the (units,) thresholds T_k (.npy); "
                   "needs exactly one layer")
    p.add_argument("--sweep", metavar="START:STOP:STEP", default=None,
                   help="also count detectors at each IoU threshold of this grid (or a "
                        "comma list), from the cube: results/<layer>.sweep.csv and .png")
    cli.add_null(p)
    p.add_argument("--top-images", type=int, default=8, metavar="N",
                   help="the HTML report shows each unit's top N images (by per-image "
                        "maximum) with its mask drawn, 8 in the row and the rest (up to 64) "
                        "under 'more'; 0: no images (default 8)")
    p.add_argument("--results-dir", metavar="DIR", default=None,
                   help="write the report files (<layer>.json, .csv, .html, sweeps) into "
                        "DIR instead of RUN/results (e.g. for a run on a read-only "
                        "filesystem)")
    p.add_argument("--name", metavar="NAME", default=None,
                   help="this scoring's folder under results/ (default: made of the "
                        "settings that differ from the defaults, e.g. q0.01_iou0.08, so "
                        "scorings never overwrite each other; the default settings write "
                        "results/<layer>.* as before)")
    cli.add_quiet(p)


def print_layer(s: LayerScore, exports: Exports) -> None:
    """The summary of one scored layer, as it finishes."""
    print(summary_table(s.layer, s.summary))
    if "significant_detectors" in s.summary:
        sig = s.summary["significant_detectors"]
        print(f"  detectors with p <= {sig['alpha']} (uncorrected): " + ", ".join(
            f"{k} {v}" for k, v in sig.items() if k != "alpha"))
    print(f"  results: {s.csv_path} (+ .json results document, .html); {s.seconds:.2f} s")
    if s.sweep is not None:
        print(sweep_table(s.sweep, f"  IoU-threshold sweep of {s.layer} (from the "
                                   f"cube, no replay):"))
        print(f"  sweep: {s.sweep_files[0]} (+ .png); {s.sweep_seconds:.2f} s")
    if exports.iou:
        print(f"  IoU matrix {s.dissection.iou.shape} -> {exports.iou}")
    if exports.thresholds:
        print(f"  thresholds {s.cube.thresholds.shape[1:]} -> {exports.thresholds}")


def run(a: argparse.Namespace) -> int:
    exports = Exports(a.export_iou, a.export_thresholds)

    def body() -> None:
        config = cli.score_config(a, cli.parse_levels(a.levels), top_images=a.top_images,
                                  null=cli.null_config(a), results_dir=a.results_dir,
                                  name=a.name)
        score_run(a.run, config, layers=a.layers, label_cache=a.label_cache,
                  sweep=cli.parse_thresholds(a.sweep) if a.sweep else None,
                  scheduler=a.scheduler, cluster=a.cluster,
                  security=cli.scheduler_security(a), exports=exports,
                  on_layer=lambda s: print_layer(s, exports))

    return cli.run_main(
        body, (BrodenError, LabelCacheError, RunError),
        disk_note="thresholds and cubes stored before are kept (a cube is marked complete "
                  "only once written): fix the cause (e.g. free disk space) and rerun the "
                  "same command",
        interrupt_note="stored thresholds and cubes are kept; nothing is lost; rerun the "
                       "same command to finish",
        read_only_note=f"the run {a.run} (or --results-dir) is read-only: add --results-dir "
                       f"DIR to write the report files elsewhere (a run whose thresholds and "
                       f"cube are stored at every asked level is only read); if they must "
                       f"be computed, copy the run (cp -r {a.run} COPY) and score the copy")


def main(argv=None) -> int:
    return commandline.standalone(sys.modules[__name__], argv)
