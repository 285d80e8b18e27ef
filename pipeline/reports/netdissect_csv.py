"""The NetDissect result CSV: its column layout, written from a results document and read
from ours (``RUN/results/<layer>.csv``) or the published files.

The layout (NetDissect, NetDissect-Lite, and ours) is one row per unit::

    unit,category,label,score,<cat>-label,<cat>-truth,<cat>-activation,<cat>-intersect,
    <cat>-iou, ... (one group of five per category, in any category order)

``unit`` is numbered from 1, ``score`` is the unit's best IoU, ``label``/``category`` its
best concept; ``<cat>-label`` is the unit's best concept within the category and the other
four its counts and IoU. Columns after those (e.g. our ``p_image``, ``p_spatial``) are kept
as ``extra``.

Writing (:func:`csv_rows`): the scored categories in the document's order, then the p-value
columns (``p_image``, ``p_spatial``) when the null model was run; rows sorted by score
descending (ties: unit number ascending); floats as ``repr`` (shortest round trip).

Reading (:func:`read_result_csv`) accepts these quirks of the published files:

- label names carry Broden's suffixes (``street-s`` for scenes, ``green-c`` for colours);
  they are kept verbatim (the golden files name real-Broden concepts; our synthetic runs
  share the suffix convention but not the concepts, so compare by counts, not by labels);
- ``<cat>-activation`` is sometimes written as a float (``2843788.0``);
- an empty ``<cat>-label`` (some ``texture`` cells of three golden files) is the anchors'
  nameless concept for Broden's scalar label 0: its numbers are kept, but it is never
  counted as a concept (:func:`pipeline.scoring.count_detectors`).
"""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from pipeline.scoring import UnitResult, count_detectors

FIELDS = ("label", "truth", "activation", "intersect", "iou")
BASE = ("unit", "category", "label", "score")
#: p-value columns appended (in this order) to the CSV when the null model was run, by
#: null-model kind (the results document's unit records use the same names).
P_COLUMNS = {"image": "p_image", "spatial": "p_spatial"}


class ResultCSVError(ValueError):
    """A result CSV is unreadable or not in the NetDissect layout (names file, row, column)."""


@dataclass
class CategoryStats:
    """A unit's best concept within one category and its counts."""
    label: str
    truth: int          # |L_c| over the dataset
    activation: int     # unit's active pixels on images of the category
    intersect: int
    iou: float


@dataclass
class ResultTable:
    """One layer's per-unit results (from a CSV or a results document).

    units: in unit order, ``units[i].unit == i`` (0-based) with string labels;
    stats[i][g]: CategoryStats of unit i in category g;
    extra: extra columns (after the NetDissect ones) by name, one string per unit.
    """
    name: str
    categories: list[str]
    units: list[UnitResult]
    stats: list[dict[str, CategoryStats]] = field(default_factory=list)
    extra: dict[str, list[str]] = field(default_factory=dict)
    source: str = ""
    settings: dict = field(default_factory=dict)    # quantile, categories, scoring (documents)

    def summary(self, iou_threshold: float = 0.04) -> dict:
        """Detector counts under both conventions (pipeline.scoring.count_detectors)."""
        return count_detectors(self.units, self.categories, iou_threshold)


def category_columns(categories: Sequence[str]) -> list[str]:
    """``<cat>-label,-truth,-activation,-intersect,-iou`` of each category, in order."""
    return [f"{c}-{f}" for c in categories for f in FIELDS]


# ------------------------------------------------------------------------- writing
def p_columns(doc: dict) -> list[str]:
    """The p-value columns a results document holds (empty when the null was not run)."""
    null = doc.get("null")
    return [P_COLUMNS[k] for k in null["kinds"]] if null else []


def csv_rows(doc: dict) -> tuple[list[str], list[list]]:
    """(header, rows) of the NetDissect result CSV of a results document: ``unit,category,
    label,score`` then ``<cat>-label,-truth,-activation,-intersect,-iou`` per scored category;
    p-value columns (``p_image``, ``p_spatial``) appended at the end when the null was run.
    One row per unit, by score descending (ties: unit ascending)."""
    cats = list(doc["config"]["categories"])
    pcols = p_columns(doc)
    header = [*BASE] + category_columns(cats) + pcols
    rows = []
    for u in sorted(doc["units"], key=lambda u: (-u["iou"], u["unit"])):
        row = [u["unit"], u["category"], u["label"], repr(float(u["iou"]))]
        for c in cats:
            b = u["best"][c]
            row += [b["label"], int(b["truth"]), int(b["activation"]), int(b["intersect"]),
                    repr(float(b["iou"]))]
        row += [repr(float(u[col])) for col in pcols]
        rows.append(row)
    return header, rows


# ------------------------------------------------------------------------- reading
def read_result_csv(path: str | os.PathLike, name: str | None = None) -> ResultTable:
    """Read a NetDissect result CSV (see module docstring) into a :class:`ResultTable`.

    Categories come from the ``<cat>-label`` columns, in column order. Units may be in
    any row order; they must be numbered 1..K without gaps or repeats.
    """
    path = Path(path)
    header, rows = _read(path)
    cats, extra_cols = _layout(path, header)
    col = {h: i for i, h in enumerate(header)}
    by_unit: dict[int, tuple] = {}
    for r, row in enumerate(rows, start=2):
        if not row:
            continue
        if len(row) != len(header):
            raise ResultCSVError(f"{path}: row {r} has {len(row)} fields, the header "
                                 f"{len(header)}")
        unit = _num(row[col["unit"]], int, path, r, "unit")
        if unit in by_unit:
            raise ResultCSVError(f"{path}: row {r}: unit {unit} appears twice")
        by_unit[unit] = (*_parse_row(path, r, row, col, cats, unit),
                         [row[col[h]] for h in extra_cols])
    K = len(by_unit)
    if K == 0:
        raise ResultCSVError(f"{path}: no unit rows")
    if sorted(by_unit) != list(range(1, K + 1)):
        gaps = sorted(set(range(1, max(by_unit) + 1)) - set(by_unit))[:5]
        raise ResultCSVError(f"{path}: units must be numbered 1..{K}; missing {gaps} "
                             f"(or numbered from 0)")
    ordered = [by_unit[k] for k in range(1, K + 1)]
    return ResultTable(name or path.stem, cats, [o[0] for o in ordered],
                       [o[1] for o in ordered],
                       {h: [o[2][j] for o in ordered] for j, h in enumerate(extra_cols)},
                       str(path))


def _read(path: Path) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the CSV at ``path``; ResultCSVError if unreadable or empty."""
    try:
        f = open(path, newline="")
    except OSError as e:
        raise ResultCSVError(f"{path}: cannot read the result CSV ({e.strerror})") from None
    with f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            raise ResultCSVError(f"{path}: empty file; expected a NetDissect result CSV "
                                 f"with header {','.join(BASE)},...")
        return header, list(reader)


def _layout(path: Path, header: list[str]) -> tuple[list[str], list[str]]:
    """(categories, extra columns) of a header; ResultCSVError unless it has the NetDissect
    layout."""
    missing = [c for c in BASE if c not in header]
    if missing:
        raise ResultCSVError(f"{path}: no column(s) {missing} in the header; expected the "
                             f"NetDissect layout {','.join(BASE)},<cat>-label,...")
    cats = [h[: -len("-label")] for h in header if h.endswith("-label") and h != "label"]
    if not cats:
        raise ResultCSVError(f"{path}: no <category>-label column; expected the NetDissect "
                             f"layout {','.join(BASE)},<cat>-label,<cat>-truth,...")
    for c in cats:
        absent = [f"{c}-{f}" for f in FIELDS if f"{c}-{f}" not in header]
        if absent:
            raise ResultCSVError(f"{path}: category {c!r} lacks column(s) {absent}")
    known = set(BASE) | set(category_columns(cats))
    return cats, [h for h in header if h not in known]


def _parse_row(path: Path, r: int, row: list[str], col: dict[str, int], cats: list[str],
               unit: int) -> tuple[UnitResult, dict[str, CategoryStats]]:
    """(UnitResult, stats by category) of CSV row ``r``, which holds unit ``unit`` (from 1)."""
    get = lambda h: row[col[h]]                                      # noqa: E731
    stats, best = {}, {}
    for c in cats:
        s = CategoryStats(get(f"{c}-label"),
                          _num(get(f"{c}-truth"), int, path, r, f"{c}-truth"),
                          _num(get(f"{c}-activation"), int, path, r, f"{c}-activation"),
                          _num(get(f"{c}-intersect"), int, path, r, f"{c}-intersect"),
                          _num(get(f"{c}-iou"), float, path, r, f"{c}-iou"))
        stats[c] = s
        best[c] = (s.label, s.iou)
    u = UnitResult(unit - 1, get("label"), get("category"),
                   _num(get("score"), float, path, r, "score"), best)
    return u, stats


def _num(text: str, kind, path, row: int, col: str):
    try:
        v = float(text)
    except ValueError:
        raise ResultCSVError(f"{path}: row {row}, column {col!r}: {text!r} is not a number"
                             ) from None
    if kind is int:
        if v != int(v):
            raise ResultCSVError(f"{path}: row {row}, column {col!r}: {text!r} is not an "
                                 f"integer count")
        return int(v)
    return v
