"""Canonical per-pixel label sets: the form the label cache stores and the tally reads.

L_c(x) (DESIGN.md) is a *set*: a pixel that carries label c in two planes counts
once, and a scalar label already covers every pixel. Canonical planes make that
structural so that counting needs no de-duplication:

- each pixel's slots hold the distinct non-zero labels of its planes, sorted
  descending, zero-padded;
- a plane label equal to one of the image's scalar labels is dropped (the
  scalar already puts that label on every pixel);
- scalar labels are distinct, non-zero, sorted descending, zero-padded.
"""
from __future__ import annotations

import numpy as np


def canonical_planes(planes: np.ndarray, scalars: np.ndarray, num_slots: int) -> np.ndarray:
    """Canonical label slots of one image.

    planes:  (P, sh, sw) integer label planes (0 = unlabelled), P may be 0
    scalars: (S,) integer scalar labels of the same image (0 entries ignored)
    returns: (num_slots, sh, sw) uint16; raises ValueError if a pixel carries
             more than ``num_slots`` distinct labels.
    """
    p = np.asarray(planes, dtype=np.int64)
    sh, sw = p.shape[1:] if p.ndim == 3 else (0, 0)
    out = np.zeros((num_slots, sh, sw), dtype=np.uint16)
    if p.shape[0] == 0:
        return out
    s = np.asarray(scalars, dtype=np.int64)
    s = s[s != 0]
    if s.size:
        p = np.where(np.isin(p, s), 0, p)
    p = -np.sort(-p, axis=0)                       # descending per pixel
    dup = np.zeros_like(p, dtype=bool)
    dup[1:] = p[1:] == p[:-1]
    p[dup] = 0
    p = -np.sort(-p, axis=0)                       # zeros (removed duplicates) to the end
    used = int((p != 0).sum(axis=0).max())
    if used > num_slots:
        raise ValueError(f"a pixel carries {used} distinct labels but only {num_slots} "
                         f"slots are available")
    if p.max(initial=0) > np.iinfo(np.uint16).max:
        raise ValueError("label numbers above 65535 do not fit the uint16 label cache")
    k = min(num_slots, p.shape[0])
    out[:k] = p[:k]
    return out


def canonical_scalars(scalars: np.ndarray, num_slots: int) -> np.ndarray:
    """(num_slots,) int32: distinct non-zero scalar labels, descending, zero-padded."""
    s = np.unique(np.asarray(scalars, dtype=np.int64))
    s = s[s != 0][::-1]
    if s.size > num_slots:
        raise ValueError(f"{s.size} distinct scalar labels but only {num_slots} slots")
    out = np.zeros(num_slots, dtype=np.int32)
    out[: s.size] = s
    return out
