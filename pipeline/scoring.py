"""From integer counts to dissection results: IoU, unit labels, detectors, summaries.

Pure functions over one quantile level of an IoU cube (DESIGN.md definitions):

    I(k,c)   intersect   (K, L) int64
    A(k,g)   activation  (K, G) int64   sum over x in X_g of |M_k(x)|
    |L_c|    label_pixels (L,) int64
    U(k,c) = A(k, g(c)) + |L_c| - I(k,c);  IoU = I / U (0 when U = 0)

Re-scoring at another IoU threshold or category subset is a call to
:func:`dissect` on the same counts: no replay of any cache.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np


def iou_matrix(intersect: np.ndarray, activation: np.ndarray, label_pixels: np.ndarray,
               primary: np.ndarray) -> np.ndarray:
    """(..., L) float64 IoU = I / (A(g(c)) + |L_c| - I), 0 when the union is 0; columns
    of labels without a category (primary < 0) are 0. The one place IoU is computed.

    intersect (..., L) and activation (..., G) integer counts (or integer-valued floats,
    cast exactly to int64), e.g. (K, L) and (K, G) for the units of one level, or
    (R, L) and (R, G) for the replicates of a null model; label_pixels (L,) int;
    primary (L,) int.
    """
    I = np.asarray(intersect, dtype=np.int64)
    primary = np.asarray(primary)
    has_cat = primary >= 0
    act = np.zeros_like(I)
    act[..., has_cat] = np.asarray(activation, dtype=np.int64)[..., primary[has_cat]]
    U = act + np.asarray(label_pixels, dtype=np.int64) - I
    iou = np.zeros(I.shape, dtype=np.float64)
    ok = (U > 0) & has_cat[None, :]
    iou[ok] = I[ok] / U[ok]
    return iou


@dataclass
class UnitResult:
    """One unit's labels. ``best[g]`` = (label, iou) for each selected category g."""
    unit: int                         # 0-based
    label: int | str                  # best label number overall (0 if none); a name
                                      # when read from a result CSV
    category: str
    iou: float
    best: dict[str, tuple[int, float]] = field(default_factory=dict)


@dataclass
class Dissection:
    """Per-unit labels and layer summary at one IoU threshold and category subset.

    iou: (K, L) float64 with columns of unselected categories zeroed
    """
    iou: np.ndarray
    units: list[UnitResult]
    categories: list[str]
    iou_threshold: float

    def detectors(self) -> list[UnitResult]:
        """Units whose best IoU exceeds the threshold (strictly)."""
        return [u for u in self.units if u.iou > self.iou_threshold]

    def summary(self) -> dict:
        """Detector counts under both conventions: :func:`count_detectors`."""
        return count_detectors(self.units, self.categories, self.iou_threshold)


def _named(label) -> bool:
    """A label that counts as a concept: not None and not "" (the published CSVs name
    the anchors' nameless scalar label 0 ""; we never count it)."""
    return label is not None and label != ""


def count_detectors(units: Sequence[UnitResult], categories: Sequence[str],
                    iou_threshold: float) -> dict:
    """Detectors and unique detectors of a layer under both conventions (see README).

    units: per-unit top label, its category and IoU, and ``best[g] = (label, iou)`` per
    category (labels may be label numbers or names); a unit is a detector when its IoU
    exceeds ``iou_threshold`` strictly.

    - ``unique_top_labels``: distinct top labels among detector units, per category of
      that label and in total (what most re-implementations print);
    - ``per_category_sum``: for each category g, the distinct best-in-g labels among
      units whose best IoU within g exceeds the threshold, summed over categories
      (what the published NetDissect figures count).
    """
    categories = list(categories)
    det = [u for u in units if u.iou > iou_threshold and _named(u.label)]
    by_cat = {g: {u.label for u in det if u.category == g} for g in categories}
    per_cat = {g: len({u.best[g][0] for u in units
                       if g in u.best and u.best[g][1] > iou_threshold
                       and _named(u.best[g][0])})
               for g in categories}
    return {
        "units": len(units),
        "iou_threshold": iou_threshold,
        "categories": categories,
        "detectors": len(det),
        "detectors_per_category": {g: sum(u.category == g for u in det) for g in categories},
        "unique_top_labels": sum(len(v) for v in by_cat.values()),
        "unique_top_labels_per_category": {g: len(v) for g, v in by_cat.items()},
        "per_category_sum": sum(per_cat.values()),
        "per_category_sum_per_category": per_cat,
    }


def dissect(intersect: np.ndarray, activation: np.ndarray, label_pixels: np.ndarray,
            primary: np.ndarray, categories: Sequence[str], *,
            selected: Sequence[str] | None = None, iou_threshold: float = 0.04) -> Dissection:
    """Label every unit from one level's counts.

    categories: names of all G categories (index = primary's values);
    selected: subset to score (default all); labels of other categories are ignored.
    Ties in IoU go to the lowest label number.
    """
    if not 0.0 <= iou_threshold <= 1.0:
        raise ValueError(f"--iou-threshold must be in [0, 1], got {iou_threshold}")
    categories = list(categories)
    selected = list(categories if selected is None else selected)
    unknown = [c for c in selected if c not in categories]
    if unknown:
        raise ValueError(f"--categories: unknown {unknown}; the dataset has {categories}")
    selected = [c for c in categories if c in selected]
    primary = np.asarray(primary, dtype=np.int64)
    sel_idx = [categories.index(c) for c in selected]
    keep = np.isin(primary, sel_idx)
    iou = iou_matrix(intersect, activation, label_pixels, primary)
    iou[:, ~keep] = 0.0
    K = iou.shape[0]
    units = []
    for k in range(K):
        best = {}
        for g, name in zip(sel_idx, selected):
            cols = np.flatnonzero(primary == g)
            if cols.size:
                j = cols[np.argmax(iou[k, cols])]      # first max = lowest label number
                best[name] = (int(j), float(iou[k, j]))
        if keep.any():
            j = int(np.argmax(np.where(keep, iou[k], -1.0)))
            units.append(UnitResult(k, j, categories[primary[j]], float(iou[k, j]), best))
        else:
            units.append(UnitResult(k, 0, "", 0.0, best))
    return Dissection(iou, units, selected, iou_threshold)
