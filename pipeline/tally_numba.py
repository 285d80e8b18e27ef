"""The compiled CPU pixel stage of :mod:`pipeline.tally` (imports numba; the tally falls
back to its array code when that import fails).

One pass per tile, image by image and unit by unit, with no intermediate arrays:

1. a map whose maximum (+ rounding slack) cannot exceed the unit's lowest level T[0, k]
   is skipped, then each cell (the output pixels sharing four source values) whose
   corner maximum cannot;
2. a cell whose corner minimum and maximum (each widened by the slack) pass the same
   number of levels c bins every pixel at c without upsampling ("uniform");
3. otherwise S is computed in the lerp form of :mod:`pipeline.upsample` (top = a00 + wx
   (a01 - a00), bot = a10 + wx (a11 - a10), S = top + wy (bot - top), in float64, the
   same operations in the same order, so the same bits). S is linear along a row of a
   cell, so the two end pixels of a segment of a row (SEGMENT pixels) bound it (+ the
   slack): segments that cannot pass T[0, k] are skipped, segments whose bounds pass
   the same number of levels are binned whole, and in the others every pixel is binned
   at (its label set, c = #{v : T[v, k] < S}), c counted by eight comparisons without
   branches (so at most MAX_LEVELS levels; c = 0, inactive, is binned too and dropped
   at expansion);
4. after each map the (set, c) histogram is expanded: each non-zero entry adds its count
   to the set's labels (plane slots and the image's scalars) and, summed over sets, to
   the categories present in the image; only the entries touched are visited and zeroed.

Counts are int64 and exact; the work is O(active cells x pixels per cell), independent
of the number of labels and of how many labels a pixel carries. ``nogil``: tiles may be
counted in threads. Compiled once per dtype and cached on disk (numba's ``cache=True``).
Helpers take scalars only: a helper taking arrays pays numba's reference counting on
every call, which measured slower than the work itself.
"""
from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["count_tile", "MAX_LEVELS"]

MAX_LEVELS = 8          # thresholds per unit the compiled pass counts (t0..t7 below)
SEGMENT = 8             # pixels of a row of a cell bounded together (measured: 4 slower,
                        # whole rows of 16 about 7% slower)


@njit(cache=True, nogil=True)
def _passed(x, t0, t1, t2, t3, t4, t5, t6, t7) -> int:
    """#{v : t_v < x} for the (up to 8) levels t0..t7 of a unit, +inf past V."""
    return ((x > t0) + (x > t1) + (x > t2) + (x > t3)
            + (x > t4) + (x > t5) + (x > t6) + (x > t7))


@njit(cache=True, nogil=True)
def count_tile(acts, Ts, slack, y1s, wy, ystart, x1s, wx, xstart, sid, labels, set_image,
               present, hist, cat):
    """Add one tile's counts to ``hist`` and ``cat``.

    acts:      (B, K, h, w) float32 or float64 activations
    Ts:        (V, K) float64 thresholds, ascending along V for each unit; V <= 8
    slack:     relative rounding slack of the lerp form (pipeline.tally._SLACK)
    y1s, x1s:  (h,), (w,) int64 second source index of each cell row / column
    wy, wx:    (sh,), (sw,) float64 weight w1 of each output row / column
    ystart:    (h + 1,) int64: output rows Y with idx0 == i are ystart[i] .. ystart[i+1]-1
    xstart:    (w + 1,) int64 likewise for columns
    sid:       (B, sh * sw) int64 global label-set id of each pixel (sets ordered by image)
    labels:    (NS, W) int64 labels of each set (0 = padding; label 0 is never reported)
    set_image: (B + 1,) int64 offsets: the sets of image b are set_image[b] .. [b+1]-1
    present:   (B, G) bool categories of each image
    hist:      ((V + 1) * K * L,) int64 counts by (c, k, label), added to
    cat:       ((V + 1) * K * G,) int64 counts by (c, k, g), added to
    """
    B, K, h, w = acts.shape
    V = Ts.shape[0]
    C = V + 1
    L = hist.shape[0] // (C * K)
    G = cat.shape[0] // (C * K)
    sw = wx.shape[0]
    W = labels.shape[1]
    max_ns = 1
    for b in range(B):
        max_ns = max(max_ns, set_image[b + 1] - set_image[b])
    H = np.zeros(max_ns * C, np.int64)          # (set, c) counts of one map
    touched = np.empty(max_ns * C, np.int64)    # its non-zero entries
    top = np.empty(sw, np.float64)
    dif = np.empty(sw, np.float64)
    ent = np.empty(sw, np.int64)               # (set, c) entry of each pixel of a row
    tot = np.zeros(C, np.int64)
    inf = np.inf
    for b in range(B):
        s0 = set_image[b]
        for k in range(K):
            t0 = Ts[0, k]
            mx = -inf
            mag = 0.0
            for i in range(h):
                for j in range(w):
                    a = np.float64(acts[b, k, i, j])
                    if a > mx:
                        mx = a
                    if abs(a) > mag:
                        mag = abs(a)
            if not mx + mag * slack > t0:
                continue
            # the unit's levels as scalars (+inf past V: never passed)
            t1 = Ts[1, k] if V > 1 else inf
            t2 = Ts[2, k] if V > 2 else inf
            t3 = Ts[3, k] if V > 3 else inf
            t4 = Ts[4, k] if V > 4 else inf
            t5 = Ts[5, k] if V > 5 else inf
            t6 = Ts[6, k] if V > 6 else inf
            t7 = Ts[7, k] if V > 7 else inf
            nt = 0
            for i in range(h):
                Ya, Yb = ystart[i], ystart[i + 1]
                if Ya == Yb:
                    continue
                i1 = y1s[i]
                for j in range(w):
                    Xa, Xb = xstart[j], xstart[j + 1]
                    if Xa == Xb:
                        continue
                    j1 = x1s[j]
                    a00 = np.float64(acts[b, k, i, j])
                    a01 = np.float64(acts[b, k, i, j1])
                    a10 = np.float64(acts[b, k, i1, j])
                    a11 = np.float64(acts[b, k, i1, j1])
                    hi = max(max(a00, a01), max(a10, a11))
                    lo = min(min(a00, a01), min(a10, a11))
                    m = max(max(abs(a00), abs(a01)), max(abs(a10), abs(a11))) * slack
                    if not hi + m > t0:
                        continue
                    c = _passed(hi + m, t0, t1, t2, t3, t4, t5, t6, t7)
                    uniform = lo - m > t0 and c == _passed(lo - m, t0, t1, t2, t3, t4, t5,
                                                           t6, t7)
                    if not uniform:
                        for X in range(Xa, Xb):
                            t = a00 + wx[X] * (a01 - a00)
                            top[X] = t
                            dif[X] = (a10 + wx[X] * (a11 - a10)) - t
                    for Y in range(Ya, Yb):
                        row = Y * sw
                        wyY = wy[Y]
                        xa = Xa
                        while xa < Xb:
                            xb = Xb if uniform else min(xa + SEGMENT, Xb)
                            upsample = False
                            if not uniform:
                                e0 = top[xa] + wyY * dif[xa]
                                e1 = top[xb - 1] + wyY * dif[xb - 1]
                                if not max(e0, e1) + m > t0:
                                    xa = xb
                                    continue
                                c = _passed(max(e0, e1) + m, t0, t1, t2, t3, t4, t5, t6, t7)
                                upsample = c != _passed(min(e0, e1) - m, t0, t1, t2, t3, t4,
                                                        t5, t6, t7)
                            if upsample:
                                for X in range(xa, xb):
                                    S = top[X] + wyY * dif[X]
                                    ent[X] = (sid[b, row + X] - s0) * C + _passed(
                                        S, t0, t1, t2, t3, t4, t5, t6, t7)
                            else:
                                for X in range(xa, xb):
                                    ent[X] = (sid[b, row + X] - s0) * C + c
                            for X in range(xa, xb):
                                e = ent[X]
                                if H[e] == 0:
                                    touched[nt] = e
                                    nt += 1
                                H[e] += 1
                            xa = xb
            # expand this map's (set, c) histogram to labels and categories
            for q in range(nt):
                e = touched[q]
                n = H[e]
                H[e] = 0
                s = e // C
                c = e - s * C
                if c == 0:                              # inactive pixels of a row
                    continue
                tot[c] += n
                base = (c * K + k) * L
                for r in range(W):
                    hist[base + labels[s0 + s, r]] += n
            for c in range(1, C):
                n = tot[c]
                if n:
                    tot[c] = 0
                    base = (c * K + k) * G
                    for g in range(G):
                        if present[b, g]:
                            cat[base + g] += n


def cell_starts(idx0: np.ndarray, n_in: int) -> np.ndarray:
    """(n_in + 1,) int64: the output indices whose first source index is i are
    starts[i] .. starts[i + 1] - 1 (idx0 is non-decreasing)."""
    return np.searchsorted(idx0, np.arange(n_in + 1), side="left").astype(np.int64)
