"""A hand-written Broden directory with the real format's corner cases.

Labels (number, name, where):   1 red (color)   2 blue (color)   3 house (object)
  4 window (object cov 0.1, part cov 0.5 -> primary part)   5 door (part)
  6 wood (material 0.4, texture 0.4 -> tie -> texture, listed later)   7 street (scene)
  8 stripes (texture)   300 sky (object; number > 255 so G != 0 in the PNG)
Rows: 1 scene image, two PNGs in the part cell, scalar scene 7;
      2 texture image with scalars "8;0" (0 = no label) and a color PNG, empty others;
      3 material image whose plane carries wood (primary texture) and red;
      4 window in object and part planes at the same pixels (a set: counts once),
        and the scalar 8 also painted in a plane (covered by the scalar already).
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

CATEGORIES = ["color", "object", "part", "material", "scene", "texture"]
LABELS = {1: "red", 2: "blue", 3: "house", 4: "window", 5: "door", 6: "wood",
          7: "street", 8: "stripes", 300: "sky"}
# category -> [(label, coverage)]
CATEGORY_LABELS = {
    "color": [(1, 2.0), (2, 1.0)],
    "object": [(3, 0.5), (4, 0.1), (300, 0.2)],
    "part": [(4, 0.5), (5, 0.2)],
    "material": [(6, 0.4)],
    "scene": [(7, 1.0)],
    "texture": [(8, 1.0), (6, 0.4)],
}
PRIMARY = {1: "color", 2: "color", 3: "object", 4: "part", 5: "part", 6: "texture",
           7: "scene", 8: "texture", 300: "object"}
SH = SW = 4
IH = IW = 8


def _png(path: Path, labels: np.ndarray) -> None:
    rgb = np.zeros(labels.shape + (3,), dtype=np.uint8)
    rgb[..., 0] = labels % 256
    rgb[..., 1] = labels // 256
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path)


def planes_of_rows() -> dict[int, dict[str, list[np.ndarray]]]:
    """Ground-truth planes per row (1-based) and category."""
    z = lambda: np.zeros((SH, SW), dtype=np.int32)
    r1c, r1o, r1p1, r1p2 = z(), z(), z(), z()
    r1c[:2] = 1; r1c[2:] = 2
    r1o[:, :2] = 3; r1o[0, 3] = 300
    r1p1[0, 0] = 4; r1p2[1, 1] = 5; r1p2[0, 0] = 5
    r2c = z(); r2c[:] = 2
    r3m, r3c = z(), z()
    r3m[1:3, 1:3] = 6; r3c[0] = 1
    r4o, r4p, r4x = z(), z(), z()
    r4o[:2, :2] = 4; r4p[1:3, 1:3] = 4; r4x[3, 3] = 8
    return {1: {"color": [r1c], "object": [r1o], "part": [r1p1, r1p2]},
            2: {"color": [r2c]},
            3: {"material": [r3m], "color": [r3c]},
            4: {"object": [r4o], "part": [r4p, r4x]}}


SCALARS = {1: {"scene": [7]}, 2: {"texture": [8]}, 3: {}, 4: {"texture": [8]}}
RAW_SCALAR_CELLS = {1: {"scene": "7"}, 2: {"texture": "8;0", "scene": "0"}, 3: {},
                    4: {"texture": "8"}}


def write_tiny_broden(root: Path) -> Path:
    """Write the directory under ``root`` and return it."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "category.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["name", "first", "last", "count", "frequency"])
        for c in CATEGORIES:
            w.writerow([c, 0, 0, len(CATEGORY_LABELS[c]), 4])
    with open(root / "label.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["number", "name", "category", "frequency", "coverage", "syns"])
        for n, name in LABELS.items():
            cats = ";".join(f"{c}(1)" for c in CATEGORIES
                            if any(l == n for l, _ in CATEGORY_LABELS[c]))
            w.writerow([n, name, cats, 1, 0.1, ""])
    for c in CATEGORIES:
        with open(root / f"c_{c}.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["code", "number", "name", "frequency", "coverage"])
            for code, (n, cov) in enumerate(CATEGORY_LABELS[c], start=1):
                w.writerow([code, n, LABELS[n], 1, cov])
    rows = []
    for r, cats in planes_of_rows().items():
        img = np.full((IH, IW, 3), 40 * r, dtype=np.uint8)
        Image.fromarray(img).save(_mk(root / "images" / "src" / f"{r}.jpg"))
        cells = {c: [] for c in CATEGORIES}
        for c, planes in cats.items():
            for j, p in enumerate(planes):
                name = f"src/{r}_{c}_{j}.png"
                _png(root / "images" / name, p)
                cells[c].append(name)
        row = {c: ";".join(v) for c, v in cells.items()}
        for c, v in RAW_SCALAR_CELLS[r].items():
            row[c] = v
        rows.append({"image": f"src/{r}.jpg", "split": "train", "ih": IH, "iw": IW,
                     "sh": SH, "sw": SW, **row})
    with open(root / "index.csv", "w", newline="") as f:
        w = csv.DictWriter(f, ["image", "split", "ih", "iw", "sh", "sw"] + CATEGORIES)
        w.writeheader()
        w.writerows(rows)
    return root


def _mk(p: Path) -> Path:
    p.parent.mkdir(parents=True, exist_ok=True)
    return p
