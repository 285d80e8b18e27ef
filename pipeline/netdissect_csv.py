"""Read NetDissect result CSVs: ours (``RUN/results/<layer>.csv``) and the published ones.

The layout (NetDissect, NetDissect-Lite, and ours) is one row per unit::

    unit,category,label,score,<cat>-label,<cat>-truth,<cat>-activation,<cat>-intersect,
    <cat>-iou, ... (one group of five per category, in any category order)

``unit`` is numbered from 1, ``score`` is the unit's best IoU, ``label``/``category`` its
best concept; ``<cat>-label`` is the unit's best concept within the category and the other
four its counts and IoU. Columns after those (e.g. our ``p_image``, ``p_spatial``) are kept
as ``extra``. Quirks of the published files this reader accepts:

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

from pipeline.scoring import UnitResult, count_detectors

FIELDS = ("label", "truth", "activation", "intersect", "iou")
BASE = ("unit", "category", "label", "score")


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

    def summary(self, iou_threshold: float = 0.04) -> dict:
        """Detector counts under both conventions (pipeline.scoring.count_detectors)."""
        return count_detectors(self.units, self.categories, iou_threshold)


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


def read_result_csv(path: str | os.PathLike, name: str | None = None) -> ResultTable:
    """Read a NetDissect result CSV (see module docstring) into a :class:`ResultTable`.

    Categories come from the ``<cat>-label`` columns, in column order. Units may be in
    any row order; they must be numbered 1..K without gaps or repeats.
    """
    path = Path(path)
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
        rows = list(reader)
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
    known = set(BASE) | {f"{c}-{f}" for c in cats for f in FIELDS}
    extra_cols = [h for h in header if h not in known]
    col = {h: i for i, h in enumerate(header)}
    by_unit: dict[int, tuple] = {}
    for r, row in enumerate(rows, start=2):
        if not row:
            continue
        if len(row) != len(header):
            raise ResultCSVError(f"{path}: row {r} has {len(row)} fields, the header "
                                 f"{len(header)}")
        get = lambda h: row[col[h]]                                  # noqa: E731
        unit = _num(get("unit"), int, path, r, "unit")
        if unit in by_unit:
            raise ResultCSVError(f"{path}: row {r}: unit {unit} appears twice")
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
        by_unit[unit] = (u, stats, [row[col[h]] for h in extra_cols])
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
