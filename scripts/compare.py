#!/usr/bin/env python
"""Put dissections side by side: our runs and published NetDissect result tables.

    python scripts/compare.py RUN_OR_CSV... [--layers conv5,...] [--iou-threshold 0.04]
        [--out DIR]

Each argument is a run directory (all its scored layers, from results/<layer>.json), a
results document (<layer>.json) or a NetDissect result CSV (ours or published, e.g.
../shared/golden/*.csv). Prints detectors and unique detectors per category under both
conventions, and writes DIR/comparison.csv and DIR/comparison.png (grouped bars of unique
detectors per category). No replay: runs are read from their results documents.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import _bootstrap  # noqa: F401

from cache.store import RunError
from pipeline.reports.charts import comparison_chart
from pipeline.reports.compare import compare, load_sources
from pipeline.reports.document import ResultsError
from pipeline.files import write_csv
from pipeline.reports.netdissect_csv import ResultCSVError
from pipeline.reports.tables import comparison_rows, comparison_table


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Compare dissections (see module docstring).")
    p.add_argument("sources", nargs="+", metavar="RUN_OR_CSV",
                   help="run directories, <layer>.json results documents or result CSVs")
    p.add_argument("--layers", default=None,
                   help="comma-separated layers to take from run directories (default all)")
    p.add_argument("--iou-threshold", type=float, default=0.04,
                   help="a unit is a detector when its IoU exceeds this (default 0.04)")
    p.add_argument("--out", default=None,
                   help="directory for comparison.csv and comparison.png (default: none "
                        "written)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    a = parse_args(argv)
    layers = [l.strip() for l in a.layers.split(",") if l.strip()] if a.layers else None
    try:
        tables = load_sources(a.sources, layers)
        summaries = compare(tables, a.iou_threshold)
        print(comparison_table(tables, summaries))
        if a.out:
            out = Path(a.out)
            try:
                out.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise ValueError(f"--out {out}: cannot create the directory ({e.strerror})"
                                 ) from None
            csv_path = write_csv(out / "comparison.csv", *comparison_rows(tables, summaries))
            png = comparison_chart(out / "comparison.png", tables, summaries)
            print(f"wrote {csv_path} and {png}")
    except (ResultCSVError, ResultsError, RunError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
