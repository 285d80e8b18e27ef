"""Write the tables and label PNGs of a Broden directory (the writer's side of pipeline/broden.py).

Shared by the synthetic generator (pipeline/synthetic/writer.py) and the converters
(pipeline/converters/): both count, per category g and label l, ``freq[g, l]`` (images
in which l occurs in g), ``pix[g, l]`` (pixels of l in g over the dataset, a pixel
counted once whatever the number of planes; a scalar label counts every pixel) and
``cat_freq[g]`` (images holding category g), then write from them, as NetDissect's
builder (joinseg.py) does:

- ``c_<category>.csv``: ``code,number,name,frequency,coverage``; coverage = ``pix /
  (sh*sw)``, the sum over images of the fraction of the image covered, which decides each
  label's primary category when the dataset is read;
- ``category.csv``: ``name,first,last,count,frequency`` (frequency: images holding the
  category);
- ``label.csv``: ``number,name,category,frequency,coverage,syns`` with ``category`` as
  ``object(12);part(3)``;
- label PNGs: label number = R + 256*G.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from PIL import Image

from pipeline.files import write_csv

#: The largest label number a PNG plane can hold (R + 256*G, 8-bit channels).
MAX_LABEL = 65535


def encode_plane(plane: np.ndarray) -> Image.Image:
    """A label plane (H, W) int (0..65535) as the RGB image Broden stores: R + 256*G."""
    plane = np.asarray(plane)
    if plane.size and (plane.min() < 0 or plane.max() > MAX_LABEL):
        raise ValueError(f"label numbers must lie in 0..{MAX_LABEL} to fit R + 256*G, got "
                         f"{plane.min()}..{plane.max()}")
    rgb = np.zeros(plane.shape + (3,), dtype=np.uint8)
    rgb[:, :, 0] = plane & 255
    rgb[:, :, 1] = plane >> 8
    return Image.fromarray(rgb, "RGB")


def union_pixel_counts(planes: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Labels and their pixel counts over the union of ``planes`` (H, W) int (a pixel
    counts once per label): (k,) int64 label numbers ascending, (k,) int64 counts."""
    if len(planes) == 1:
        st = planes[0].reshape(1, -1)
    else:
        st = np.sort(np.stack(planes).reshape(len(planes), -1), axis=0)
        st[1:][st[1:] == st[:-1]] = 0
    counts = np.bincount(st.ravel())
    counts[0] = 0
    labels = np.flatnonzero(counts)
    return labels.astype(np.int64), counts[labels].astype(np.int64)


def write_broden_csv(path: str | os.PathLike, header: Sequence, rows: Iterable[Sequence]
                     ) -> Path:
    """A Broden CSV table: ``\\n`` line ends, written atomically (pipeline/files.py)."""
    return write_csv(path, header, rows, lineterminator="\n")


def fmt_float(x: float) -> str:
    """A coverage as text: the shortest exact repr, so distinct counts stay distinct."""
    return repr(float(x))


def write_tables(out: str | os.PathLike, categories: Sequence[str],
                 labels: Sequence[tuple[int, str]], members: Sequence[Sequence[int]],
                 freq: np.ndarray, pix: np.ndarray, cat_freq: np.ndarray, npx: int) -> None:
    """Write c_<category>.csv, category.csv and label.csv into ``out``.

    ``categories``: the G names in category.csv order (ties in primary category go to
    the later one); ``labels``: (number, name) in label.csv order; ``members[g]``: the
    label numbers c_<categories[g]>.csv lists, in code order (codes 1, 2, ...);
    ``freq``, ``pix``: (G, L) int64; ``cat_freq``: (G,) int64 (module docstring);
    ``npx``: sh * sw pixels of a segmentation.
    """
    out = Path(out)
    names = dict(labels)
    for g, cat in enumerate(categories):
        write_broden_csv(out / f"c_{cat}.csv", ["code", "number", "name", "frequency",
                                                "coverage"],
                         [[code, n, names[n], int(freq[g, n]), fmt_float(pix[g, n] / npx)]
                          for code, n in enumerate(members[g], start=1)])
    write_broden_csv(out / "category.csv", ["name", "first", "last", "count", "frequency"],
                     [[cat, min(members[g]), max(members[g]), len(members[g]),
                       int(cat_freq[g])] for g, cat in enumerate(categories)])
    member_sets = [set(m) for m in members]
    label_rows = []
    for n, name in labels:
        gs = [g for g in range(len(categories)) if n in member_sets[g]]
        label_rows.append([n, name,
                           ";".join(f"{categories[g]}({int(freq[g, n])})" for g in gs),
                           int(sum(freq[g, n] for g in gs)),
                           fmt_float(sum(pix[g, n] for g in gs) / npx), ""])
    write_broden_csv(out / "label.csv", ["number", "name", "category", "frequency",
                                         "coverage", "syns"], label_rows)
