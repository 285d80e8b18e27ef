"""Put dissections side by side: our runs and published NetDissect result tables.

    netdissect compare RUN_OR_CSV... [--layers conv5,...] [--iou-threshold 0.04]
        [--out DIR]

Each argument is a run directory (all its scored layers, from results/<layer>.json), a
results document (<layer>.json) or a NetDissect result CSV (ours or published, e.g.
../shared/golden/*.csv). Prints detectors and unique detectors per category under both
conventions, and writes DIR/comparison.csv, DIR/comparison.png (grouped bars of unique
detectors per category) and DIR/comparison.html (the settings, the chart and the table). No replay: runs are read from their results documents.
The work is pipeline/reports/compare.py's load_sources, compare and write_comparison;
this command parses and prints (`python scripts/compare.py` takes the same arguments).
"""
from __future__ import annotations

import argparse
import sys

from cache.store import RunError
from pipeline import cli, commandline
from pipeline.reports.compare import compare, load_sources, settings_lines, write_comparison
from pipeline.reports.document import ResultsError
from pipeline.reports.netdissect_csv import ResultCSVError
from pipeline.reports.tables import comparison_table


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("sources", nargs="+", metavar="RUN_OR_CSV",
                   help="run directories, <layer>.json results documents or result CSVs")
    cli.add_layers(p, help="comma-separated layers to take from run directories "
                           "(default all)")
    p.add_argument("--iou-threshold", type=float, default=0.04,
                   help="a unit is a detector when its IoU exceeds this (default 0.04)")
    p.add_argument("--scoring", metavar="NAME", default="",
                   help="take run directories' named scoring NAME (a folder under "
                        "results/, see score.py --name; default: the plain results)")
    p.add_argument("--out", default=None,
                   help="directory for comparison.csv, .png and .html (default: none "
                        "written)")


def run(a: argparse.Namespace) -> int:
    def body() -> None:
        tables = load_sources(a.sources, a.layers, a.scoring)
        summaries = compare(tables, a.iou_threshold)
        print(comparison_table(tables, summaries))
        settings = settings_lines(tables, a.iou_threshold)
        print("\n".join(settings))
        if a.out:
            csv_path, png, page = write_comparison(a.out, tables, summaries, settings)
            print(f"wrote {csv_path}, {png} and {page}")

    return cli.run_main(
        body, (ResultCSVError, ResultsError, RunError),
        disk_note="the sources are only read: fix the cause and rerun the same command",
        interrupt_note="the sources are only read; rerun the same command",
        read_only_note="the sources are only read: choose a writable --out DIR and rerun")


def main(argv=None) -> int:
    return commandline.standalone(sys.modules[__name__], argv)
