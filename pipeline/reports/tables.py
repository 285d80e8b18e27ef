"""The summary tables of detector counts: rows for the CSVs and printable tables of one
layer, of an IoU-threshold sweep, of a rotation experiment and of a comparison.

Every table shows :func:`pipeline.scoring.count_detectors` summaries under the conventions of
CONVENTIONS: ``detectors`` (detector units), ``unique_top_labels`` (distinct top labels
among them) and ``per_category_sum`` (per category, distinct best-in-category labels above
the threshold, summed: the published convention), each as a total and per category. The
CSV rows (``*_rows``: (header, rows), written with :func:`pipeline.files.write_csv`)
hold the totals, then ``<cat>-detectors``, ``<cat>-unique_top_labels``,
``<cat>-per_category_sum`` per category; the comparison CSV is tidy (a row per source and
category) because its sources may score different categories. These CSVs are for people:
a name a spreadsheet would run as a formula is made inert
(:func:`pipeline.reports.spreadsheet.inert_table`).
"""
from __future__ import annotations

from typing import Sequence

from pipeline.reports.netdissect_csv import ResultTable
from pipeline.reports.spreadsheet import inert_table

#: (total key, per-category key, short column name) of each counting convention.
CONVENTIONS = (("detectors", "detectors_per_category", "det"),
               ("unique_top_labels", "unique_top_labels_per_category", "top"),
               ("per_category_sum", "per_category_sum_per_category", "per-cat"))
TOTALS = tuple(total for total, _, _ in CONVENTIONS)
#: Display order of Broden's categories (others follow, in order of appearance).
CATEGORY_ORDER = ("object", "part", "scene", "material", "texture", "color")

#: (kind, alpha or None, summary) of one transform of a rotation experiment.
RotationPoint = tuple[str, float | None, dict]


# ---------------------------------------------------------------- shared columns
def categories_of(summaries: Sequence[dict]) -> list[str]:
    """The first summary's categories (none when there is no summary)."""
    return list(summaries[0]["categories"]) if summaries else []


def count_columns(categories: Sequence[str]) -> list[str]:
    """The totals, then ``<cat>-<total>`` per category: the count columns of a CSV."""
    return [*TOTALS] + [f"{c}-{t}" for c in categories for t in TOTALS]


def count_values(summary: dict, categories: Sequence[str]) -> list:
    """One summary's values of :func:`count_columns`."""
    return ([summary[t] for t in TOTALS]
            + [summary[key][c] for c in categories for _, key, _ in CONVENTIONS])


def _count_cells(det, top, per) -> str:
    """The printed ``detectors  unique(top)  unique(per-cat)`` cells of one row."""
    return f"{det:>9}  {top:>11}  {per:>15}"


# ----------------------------------------------------------------------- one layer
def summary_table(layer: str, summary: dict) -> str:
    """A printable table of detectors and unique detectors per category."""
    cats = summary["categories"]
    w = max([len(c) for c in cats] + [8])
    lines = [f"layer {layer}: {summary['units']} units, IoU > {summary['iou_threshold']}"
             f", quantile {summary.get('quantile', '?')}",
             f"  {'category':<{w}}  detectors  unique(top)  unique(per-cat)"]
    for c in cats:
        lines.append(f"  {c:<{w}}  " + _count_cells(*(summary[key][c]
                                                      for _, key, _ in CONVENTIONS)))
    lines.append(f"  {'total':<{w}}  " + _count_cells(*(summary[t] for t in TOTALS)))
    lines += [f"  warning: {text}" for text in summary.get("warnings", [])]
    return "\n".join(lines)


# --------------------------------------------------------------------------- sweep
def sweep_rows(summaries: Sequence[dict]) -> tuple[list[str], list[list]]:
    """(header, rows) of an IoU-threshold sweep (one summary per threshold): iou_threshold,
    then :func:`count_columns`."""
    cats = categories_of(summaries)
    header = ["iou_threshold", *count_columns(cats)]
    rows = [[s["iou_threshold"], *count_values(s, cats)] for s in summaries]
    return inert_table(header, rows)


def sweep_table(summaries: Sequence[dict], title: str = "") -> str:
    """A printable table: threshold, detectors, unique (top), unique (per-cat)."""
    lines = [title] if title else []
    lines.append(f"  {'IoU >':>7}  detectors  unique(top)  unique(per-cat)")
    for s in summaries:
        lines.append(f"  {s['iou_threshold']:>7.4g}  " + _count_cells(*(s[t] for t in TOTALS)))
    return "\n".join(lines)


# ------------------------------------------------------------------------ rotation
def rotation_rows(points: Sequence[RotationPoint]) -> tuple[list[str], list[list]]:
    """(header, rows) of (kind, alpha, summary) points: transform, alpha ("" for a
    baseline), then :func:`count_columns`."""
    cats = categories_of([s for _, _, s in points])
    header = ["transform", "alpha", *count_columns(cats)]
    rows = [[kind, "" if alpha is None else float(alpha), *count_values(s, cats)]
            for kind, alpha, s in points]
    return inert_table(header, rows)


def rotation_table(points: Sequence[RotationPoint], title: str = "") -> str:
    """Printable: per point, the per-category sum by category and both totals."""
    cats = categories_of([s for _, _, s in points])
    lines = [title] if title else []
    head = f"  {'transform':<11} {'alpha':>5}  " + "".join(f"{c[:9]:>10}" for c in cats)
    lines.append(head + "  unique(per-cat)  unique(top)  detectors")
    for kind, alpha, s in points:
        a = "" if alpha is None else f"{alpha:.3g}"
        lines.append(f"  {kind:<11} {a:>5}  "
                     + "".join(f"{s['per_category_sum_per_category'][c]:>10}" for c in cats)
                     + f"  {s['per_category_sum']:>15}  {s['unique_top_labels']:>11}"
                       f"  {s['detectors']:>9}")
    return "\n".join(lines)


# ---------------------------------------------------------------------- comparison
def category_order(tables: Sequence[ResultTable]) -> list[str]:
    """Union of the tables' categories: Broden's in CATEGORY_ORDER, then others."""
    allc: list[str] = []
    for t in tables:
        allc += [c for c in t.categories if c not in allc]
    return [c for c in CATEGORY_ORDER if c in allc] + [c for c in allc
                                                       if c not in CATEGORY_ORDER]


def comparison_rows(tables: Sequence[ResultTable], summaries: Sequence[dict]
                    ) -> tuple[list[str], list[list]]:
    """Tidy (header, rows): source, category (or ``total``), units, iou_threshold,
    detectors, unique_top_labels, per_category_sum; a category a source does not score
    has empty counts."""
    header = ["source", "category", "units", "iou_threshold", *TOTALS]
    rows = []
    cats = category_order(tables)
    for t, s in zip(tables, summaries):
        for c in cats:
            vals = [s[key][c] if c in s[key] else "" for _, key, _ in CONVENTIONS]
            rows.append([t.name, c, s["units"], s["iou_threshold"], *vals])
        rows.append([t.name, "total", s["units"], s["iou_threshold"],
                     *(s[tot] for tot in TOTALS)])
    return inert_table(header, rows)


def comparison_counts(summary: dict, category: str | None) -> list | None:
    """(det, top, per-cat) of one source in ``category`` (None: the totals), or None when
    the source does not score that category."""
    if category is None:
        return [summary[tot] for tot in TOTALS]
    if category not in summary["categories"]:
        return None
    return [summary[key][category] for _, key, _ in CONVENTIONS]


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
        vals = comparison_counts(s, c)
        if vals is None:
            return f"  {'-':>{w}}"
        return f"  {f'{vals[0]:>4}  {vals[1]:>4}  {vals[2]:>7}':>{w}}"

    for c in cats:
        lines.append(f"{c:<{w0}}" + "".join(cell(s, c, w) for s, w in zip(summaries, widths)))
    lines.append(f"{'total':<{w0}}" + "".join(cell(s, None, w)
                                              for s, w in zip(summaries, widths)))
    lines.append(units)
    lines.append("det: detector units (IoU > threshold); top: unique top labels among "
                 "them; per-cat: per-category sum (the published convention)")
    return "\n".join(lines)
