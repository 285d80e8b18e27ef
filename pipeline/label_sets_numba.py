"""The compiled CPU kernel of :mod:`pipeline.label_sets`: label-set ids by one pass over
the pixels with a hash table per image (imports numba; pipeline.label_sets falls back
to torch when that import fails).

Per image, each pixel is first compared with the previous pixel (label maps are mostly
runs, so most pixels stop there); otherwise its P slots are hashed into an
open-addressing table of at least 2n entries (load <= 1/2) whose entries are set ids,
and a hit is confirmed by comparing the slots with the set's representative pixel, so
the ids are exact whatever the hash does. Work is O(pixels x slots), independent of the
label numbers; compiled once per dtype and cached on disk (numba's ``cache=True``).
"""
from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["first_occurrence_sets"]

_SEED = np.uint64(0x243F6A8885A308D3)
_MUL = np.uint64(0x9E3779B97F4A7C15)     # 2^64 / golden ratio (Fibonacci hashing)


@njit(cache=True, nogil=True)
def _same(planes, b, i, j) -> bool:
    """Whether pixels i and j of image b have the same slots."""
    for q in range(planes.shape[1]):
        if planes[b, q, i] != planes[b, q, j]:
            return False
    return True


@njit(cache=True, nogil=True)
def _number_sets(planes, sid, rep) -> int:
    """Fill sid (B, n) with set ids (first occurrence order, image by image) and
    rep[s] with the pixel (local index x) that opened set s; returns the set count."""
    B, P, n = planes.shape
    size = 2
    while size < 2 * n:
        size *= 2
    mask = size - 1
    table = np.empty(size, np.int64)
    ns = 0
    for b in range(B):
        table[:] = -1
        first = ns
        for i in range(n):
            if i > 0 and _same(planes, b, i, i - 1):
                sid[b, i] = sid[b, i - 1]
                continue
            h = _SEED
            for q in range(P):
                h = (h ^ np.uint64(planes[b, q, i])) * _MUL
            slot = np.int64((h ^ (h >> np.uint64(29))) & np.uint64(mask))
            while True:
                s = table[slot]
                if s < 0:                               # a new set of image b
                    table[slot] = ns
                    rep[ns] = i
                    sid[b, i] = ns
                    ns += 1
                    break
                if _same(planes, b, i, rep[s]):
                    sid[b, i] = s
                    break
                slot = (slot + 1) & mask
        for s in range(first, ns):
            rep[s] += b * n
    return ns


def first_occurrence_sets(planes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """planes (B, P, n) int32/int64 canonical slots (any strides) ->
    (sid (B, n) int64 set id of each pixel, rep (NS,) int64 flat pixel b * n + x that
    opened each set); sets numbered image by image, in order of first occurrence."""
    B, _, n = planes.shape
    sid = np.empty((B, n), np.int64)
    rep = np.empty(B * n, np.int64)
    ns = _number_sets(planes, sid, rep)
    return sid, rep[:ns]
