"""Put dissections side by side: runs of ours and published NetDissect result tables.

    tables = load_sources(["runs/demo/run", "../shared/golden/caffe_reference_places205.csv"])
    summaries = compare(tables, iou_threshold=0.04)
    print(comparison_table(tables, summaries))

Each source is a run directory (every scored layer, from its results documents), a results
document (``<layer>.json``) or a NetDissect result CSV (ours or published). Every table is
counted again at the asked threshold under both conventions
(:func:`pipeline.scoring.count_detectors`); sources are compared by category counts, never
by label names (the published tables name real-Broden concepts).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from pipeline.netdissect_csv import ResultCSVError, ResultTable, read_result_csv
from pipeline.results import ResultsError, read_document, run_tables, to_table
from pipeline.report import write_result_csv

#: Display order of Broden's categories (others follow, in order of appearance).
CATEGORY_ORDER = ("object", "part", "scene", "material", "texture", "color")
CONVENTIONS = (("detectors", "detectors_per_category", "det"),
               ("unique_top_labels", "unique_top_labels_per_category", "top"),
               ("per_category_sum", "per_category_sum_per_category", "per-cat"))


def load_sources(paths: Sequence[str | os.PathLike], layers: Sequence[str] | None = None
                 ) -> list[ResultTable]:
    """ResultTables of every source (module docstring); ``layers`` selects layers of run
    directories. Names are file stems or ``<run>/<layer>``, made unique with ``#2``..."""
    tables: list[ResultTable] = []
    for p in paths:
        path = Path(p)
        if path.is_dir():
            tables += run_tables(path, layers)
        elif path.is_file() and path.suffix.lower() == ".json":
            tables.append(to_table(read_document(path), path.stem))
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


def category_order(tables: Sequence[ResultTable]) -> list[str]:
    """Union of the tables' categories: Broden's in CATEGORY_ORDER, then others."""
    allc: list[str] = []
    for t in tables:
        allc += [c for c in t.categories if c not in allc]
    return [c for c in CATEGORY_ORDER if c in allc] + [c for c in allc
                                                       if c not in CATEGORY_ORDER]


def compare(tables: Sequence[ResultTable], iou_threshold: float = 0.04) -> list[dict]:
    """One count_detectors() summary per table at ``iou_threshold``."""
    if not 0.0 <= iou_threshold <= 1.0:
        raise ValueError(f"--iou-threshold must be in [0, 1], got {iou_threshold}")
    return [t.summary(iou_threshold) for t in tables]


def comparison_rows(tables: Sequence[ResultTable], summaries: Sequence[dict]
                    ) -> tuple[list[str], list[list]]:
    """Tidy (header, rows): source, category (or ``total``), units, iou_threshold,
    detectors, unique_top_labels, per_category_sum; a category a source does not score
    has empty counts."""
    header = ["source", "category", "units", "iou_threshold", "detectors",
              "unique_top_labels", "per_category_sum"]
    rows = []
    cats = category_order(tables)
    for t, s in zip(tables, summaries):
        for c in cats:
            vals = [s[key][c] if c in s[key] else "" for _, key, _ in CONVENTIONS]
            rows.append([t.name, c, s["units"], s["iou_threshold"], *vals])
        rows.append([t.name, "total", s["units"], s["iou_threshold"],
                     *(s[tot] for tot, _, _ in CONVENTIONS)])
    return header, rows


def comparison_table(tables: Sequence[ResultTable], summaries: Sequence[dict]) -> str:
    """Side by side: a row per category (and total), three columns per source
    (det = detector units, top = unique top labels, per-cat = per-category sum)."""
    cats = category_order(tables)
    w0 = max([len(c) for c in cats] + [8])
    widths = [max(len(t.name), 19) for t in tables]
    thr = summaries[0]["iou_threshold"] if summaries else 0.04
    head1 = f"{'IoU > ' + format(thr, 'g'):<{w0}}" + "".join(
        f"  {t.name:>{w}}" for t, w in zip(tables, widths))
    head2 = f"{'category':<{w0}}" + "".join(
        f"  {'det   top  per-cat':>{w}}" for w in widths)
    units = f"{'units':<{w0}}" + "".join(f"  {s['units']:>{w}}"
                                         for s, w in zip(summaries, widths))
    lines = [head1, head2]

    def cell(s, c, w):
        if c is None:
            vals = [s[tot] for tot, _, _ in CONVENTIONS]
        elif c not in s["categories"]:
            return f"  {'-':>{w}}"
        else:
            vals = [s[key][c] for _, key, _ in CONVENTIONS]
        return f"  {f'{vals[0]:>4}  {vals[1]:>4}  {vals[2]:>7}':>{w}}"

    for c in cats:
        lines.append(f"{c:<{w0}}" + "".join(cell(s, c, w) for s, w in zip(summaries, widths)))
    lines.append(f"{'total':<{w0}}" + "".join(cell(s, None, w)
                                              for s, w in zip(summaries, widths)))
    lines.append(units)
    lines.append("det: detector units (IoU > threshold); top: unique top labels among "
                 "them; per-cat: per-category sum (the published convention)")
    return "\n".join(lines)


def write_comparison_csv(path: str | os.PathLike, tables, summaries) -> Path:
    """Write the table atomically (temp file + rename)."""
    header, rows = comparison_rows(tables, summaries)
    return write_result_csv(path, header, rows)


def comparison_chart(path: str | os.PathLike, tables: Sequence[ResultTable],
                     summaries: Sequence[dict]) -> Path:
    """PNG of grouped bars: unique detectors per category, one bar per source; left panel
    unique top labels, right panel per-category sum."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    cats = category_order(tables)
    x = np.arange(len(cats))
    n = max(1, len(tables))
    width = 0.8 / n
    fig, axes = plt.subplots(1, 2, figsize=(max(8, 1.2 * len(cats) * 2 + 2), 4.5),
                             sharey=True)
    for ax, (tot, key, _), ttl in zip(
            axes, CONVENTIONS[1:], ("unique top labels", "per-category sum (published)")):
        for i, (t, s) in enumerate(zip(tables, summaries)):
            vals = [s[key].get(c, 0) for c in cats]
            ax.bar(x - 0.4 + width * (i + 0.5), vals, width,
                   label=f"{t.name} ({s[tot]})")
        ax.set_xticks(x, cats, rotation=20)
        ax.set_title(f"unique detectors: {ttl}", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7)
    axes[0].set_ylabel(f"count (IoU > {summaries[0]['iou_threshold'] if summaries else ''})")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


__all__ = ["load_sources", "compare", "comparison_rows", "comparison_table",
           "write_comparison_csv", "comparison_chart", "category_order",
           "ResultCSVError", "ResultsError"]
