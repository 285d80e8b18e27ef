"""Put dissections side by side: load runs of ours and published NetDissect result tables,
and count each again at one IoU threshold.

    tables = load_sources(["runs/demo/run", "../shared/golden/caffe_reference_places205.csv"])
    summaries = compare(tables, iou_threshold=0.04)
    print(comparison_table(tables, summaries))        # pipeline.reports.tables
    csv_path, png, page = write_comparison("runs/cmp", tables, summaries)

Each source is a run directory (every scored layer, from its results documents), a results
document (``<layer>.json``) or a NetDissect result CSV (ours or published). Every table is
counted again at the asked threshold under both conventions
(:func:`pipeline.scoring.count_detectors`); sources are compared by category counts, never
by label names (the published tables name real-Broden concepts). The side-by-side table
and CSV rows are in :mod:`pipeline.reports.tables`, the chart in
:mod:`pipeline.reports.charts`; :func:`write_comparison` writes both as
``DIR/comparison.csv``, ``DIR/comparison.png`` and ``DIR/comparison.html``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from pipeline.files import write_csv
from pipeline.reports.charts import comparison_chart
from pipeline.reports.document import read_document, run_tables, to_table
from pipeline.reports.netdissect_csv import ResultCSVError, ResultTable, read_result_csv
from pipeline.reports.tables import comparison_rows


def load_sources(paths: Sequence[str | os.PathLike], layers: Sequence[str] | None = None,
                 scoring: str = "") -> list[ResultTable]:
    """ResultTables of every source (module docstring); ``layers`` selects layers of run
    directories, ``scoring`` their named scoring (default the plain one). Names are file
    stems or ``<run>/<layer>``, made unique with ``#2``..."""
    tables: list[ResultTable] = []
    for p in paths:
        path = Path(p)
        if path.is_dir():
            tables += run_tables(path, layers, scoring)
        elif path.is_file() and path.suffix.lower() == ".json":
            doc = read_document(path)
            named = doc["config"].get("name")
            tables.append(to_table(doc, f"{path.stem}[{named}]" if named else path.stem))
        elif path.is_file():
            tables.append(read_result_csv(path))
        else:
            raise ResultCSVError(f"{p}: no such run directory or result file; pass run "
                                 f"directories, <layer>.json results documents or "
                                 f"NetDissect result CSVs")
    seen: dict[str, int] = {}
    for t in tables:
        seen[t.name] = seen.get(t.name, 0) + 1
        if seen[t.name] > 1:
            t.name = f"{t.name}#{seen[t.name]}"
    return tables


def settings_lines(tables: Sequence[ResultTable], iou_threshold: float) -> list[str]:
    """What each source was scored with (quantile, categories, scoring name; a CSV
    says nothing: "settings not recorded"), then a ``warning:`` line for each setting the
    sources differ in, since their counts are then not comparable as they stand."""
    lines, seen = [], {"quantile": set(), "categories": set()}
    for t in tables:
        s = t.settings
        if not s:
            lines.append(f"  {t.name}: settings not recorded (a result CSV)")
            continue
        cats = s["categories"] if s["categories"] != s["all_categories"] else ["all"]
        seen["quantile"].add(s["quantile"])
        seen["categories"].add(tuple(s["categories"]))
        extra = "".join([f", scoring {s['scoring']!r}" if s["scoring"] else "",
                         ", with the null model" if s["null"] else ""])
        lines.append(f"  {t.name}: quantile {s['quantile']:g}, scored at IoU > "
                     f"{s['iou_threshold']:g}, categories {'+'.join(cats)}{extra}")
    if len(seen["quantile"]) > 1:
        lines.append(f"warning: the sources were scored at different quantiles "
                     f"({', '.join(f'{q:g}' for q in sorted(seen['quantile']))}): their "
                     f"unit masks differ, so their counts are not comparable as they stand")
    if len(seen["categories"]) > 1:
        lines.append("warning: the sources were scored on different categories: a unit's "
                     "label is its best concept among the categories scored, so counts "
                     "differ where categories are missing ('-' cells)")
    return [f"sources (all counted again at IoU > {iou_threshold:g}):", *lines]


def compare(tables: Sequence[ResultTable], iou_threshold: float = 0.04) -> list[dict]:
    """One count_detectors() summary per table at ``iou_threshold``."""
    if not 0.0 <= iou_threshold <= 1.0:
        raise ValueError(f"--iou-threshold must be in [0, 1], got {iou_threshold}")
    return [t.summary(iou_threshold) for t in tables]


def write_comparison(out: str | os.PathLike, tables: Sequence[ResultTable],
                     summaries: Sequence[dict], settings: Sequence[str] = ()
                     ) -> tuple[Path, Path, Path]:
    """Write ``out/comparison.csv`` (:func:`pipeline.reports.tables.comparison_rows`),
    ``out/comparison.png`` (:func:`pipeline.reports.charts.comparison_chart`) and
    ``out/comparison.html`` (:mod:`pipeline.reports.compare_page`, with the
    :func:`settings_lines`), creating ``out``; returns their paths. ValueError naming --out
    if it cannot be created."""
    from pipeline.files import write_text
    from pipeline.reports.compare_page import render_comparison
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"--out {out}: cannot create the directory ({e.strerror})"
                         ) from None
    csv_path = write_csv(out / "comparison.csv", *comparison_rows(tables, summaries))
    png = comparison_chart(out / "comparison.png", tables, summaries)
    page = write_text(out / "comparison.html",
                      render_comparison(tables, summaries, settings, png.read_bytes()))
    return csv_path, png, page
