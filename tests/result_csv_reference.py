"""Direct writer of the NetDissect result CSV rows from a Dissection and its counts: the
reference the CSV generated from the results document is tested against
(pipeline/reports/netdissect_csv.py, csv_rows), written independently of it.

Layout of the published NetDissect result files: ``unit,category,label,score`` then, for
each category, ``<cat>-label,<cat>-truth,<cat>-activation,<cat>-intersect,<cat>-iou``;
units numbered from 1, one row per unit, sorted by score descending (ties: unit number
ascending).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from pipeline.scoring import Dissection

CSV_FIELDS = ("label", "truth", "activation", "intersect", "iou")


def result_rows(d: Dissection, intersect: np.ndarray, activation: np.ndarray,
                label_pixels: np.ndarray, categories: Sequence[str],
                label_names: Sequence[str]) -> tuple[list[str], list[list]]:
    """(header, rows) of the NetDissect result table.

    intersect (K, L), activation (K, G) over all G ``categories``, label_pixels (L,).
    """
    cats = list(d.categories)
    header = ["unit", "category", "label", "score"] + [
        f"{c}-{f}" for c in cats for f in CSV_FIELDS]
    order = sorted(d.units, key=lambda u: (-u.iou, u.unit))
    rows = []
    for u in order:
        row = [u.unit + 1, u.category, label_names[u.label] if u.category else "",
               repr(u.iou)]
        for c in cats:
            g = list(categories).index(c)
            if c in u.best:
                j, iou = u.best[c]
                row += [label_names[j], int(label_pixels[j]), int(activation[u.unit, g]),
                        int(intersect[u.unit, j]), repr(iou)]
            else:
                row += ["", 0, int(activation[u.unit, g]), 0, repr(0.0)]
        rows.append(row)
    return header, rows
