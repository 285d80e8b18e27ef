"""Write dissection results: the NetDissect result CSV, JSON files, a printed table.

The per-layer results document (``<layer>.json``) and the CSV and HTML generated from it are
in :mod:`pipeline.results`; :func:`result_rows` is the direct writer the generated CSV is
tested against. The CSV has the column layout of the published NetDissect result files so that
existing analysis scripts read it: ``unit,category,label,score`` then, for each
category, ``<cat>-label,<cat>-truth,<cat>-activation,<cat>-intersect,<cat>-iou``;
units numbered from 1, one row per unit, sorted by score descending (ties: unit
number ascending).
"""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path
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


def write_result_csv(path: str | os.PathLike, header: list[str], rows: list[list]) -> Path:
    """Write atomically (temp file + rename), so a crash never leaves half a CSV."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    os.replace(tmp, path)
    return path


def write_json(path: str | os.PathLike, obj: dict) -> Path:
    """Write plain JSON atomically (numpy scalars converted)."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, default=_plain)
        f.write("\n")
    os.replace(tmp, path)
    return path


def _plain(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")


def summary_table(layer: str, summary: dict) -> str:
    """A printable table of detectors and unique detectors per category."""
    cats = summary["categories"]
    w = max([len(c) for c in cats] + [8])
    lines = [f"layer {layer}: {summary['units']} units, IoU > {summary['iou_threshold']}"
             f", quantile {summary.get('quantile', '?')}",
             f"  {'category':<{w}}  detectors  unique(top)  unique(per-cat)"]
    for c in cats:
        lines.append(f"  {c:<{w}}  {summary['detectors_per_category'][c]:>9}  "
                     f"{summary['unique_top_labels_per_category'][c]:>11}  "
                     f"{summary['per_category_sum_per_category'][c]:>15}")
    lines.append(f"  {'total':<{w}}  {summary['detectors']:>9}  "
                 f"{summary['unique_top_labels']:>11}  {summary['per_category_sum']:>15}")
    return "\n".join(lines)
