"""Slow, obviously-correct NumPy reference of the DESIGN.md definitions.

Written from the definitions alone (no import of the kernels): per-pixel bilinear
upsampling in float64 (lerp form, align_corners=False coordinates), np.quantile,
strict masks, L_c(x) from RAW planes and scalars as sets, X_g from primary categories.
"""
from __future__ import annotations

import math

import numpy as np


def source_coord(dst: int, n_in: int, n_out: int) -> tuple[int, int, float]:
    """(i0, i1, w1) of output index dst, align_corners=False, clamped like torch."""
    scale = n_in / n_out
    src = scale * (dst + 0.5) - 0.5
    if src < 0:
        src = 0.0
    i0 = int(math.floor(src))
    i1 = i0 + 1 if i0 < n_in - 1 else i0
    return i0, i1, src - i0


def upsample_ref(a: np.ndarray, sh: int, sw: int) -> np.ndarray:
    """(..., h, w) -> (..., sh, sw) float64, one output pixel at a time, lerp form:
    top = a00 + wx*(a01-a00); bot = a10 + wx*(a11-a10); S = top + wy*(bot-top)."""
    a = np.asarray(a, dtype=np.float64)
    h, w = a.shape[-2:]
    out = np.empty(a.shape[:-2] + (sh, sw), dtype=np.float64)
    for Y in range(sh):
        y0, y1, wy = source_coord(Y, h, sh)
        for X in range(sw):
            x0, x1, wx = source_coord(X, w, sw)
            a00, a01 = a[..., y0, x0], a[..., y0, x1]
            a10, a11 = a[..., y1, x0], a[..., y1, x1]
            top = a00 + wx * (a01 - a00)
            bot = a10 + wx * (a11 - a10)
            out[..., Y, X] = top + wy * (bot - top)
    return out


def thresholds_ref(acts: np.ndarray, levels) -> np.ndarray:
    """(V, K) float64: np.quantile of each unit's values at 1 - q."""
    acts = np.asarray(acts)
    return np.array([[np.quantile(acts[:, k].astype(np.float64).ravel(), 1 - q)
                      for k in range(acts.shape[1])] for q in levels], dtype=np.float64)


def label_mask(planes: np.ndarray, scalars, c: int, shape) -> np.ndarray:
    """L_c(x) as a (sh, sw) bool mask from raw planes (P, sh, sw) and raw scalars."""
    if c != 0 and c in [int(s) for s in scalars]:
        return np.ones(shape, dtype=bool)
    m = np.zeros(shape, dtype=bool)
    if c == 0:
        return m
    for p in planes:
        m |= (p == c)
    return m


def image_categories(planes, scalars, label_category, num_categories) -> np.ndarray:
    """(G,) bool: category g has some label of primary category g in the image."""
    labels = set(int(s) for s in scalars if s != 0)
    for p in planes:
        labels |= set(int(v) for v in np.unique(p) if v != 0)
    out = np.zeros(num_categories, dtype=bool)
    for c in labels:
        out[label_category[c]] = True
    return out


def counts_ref(acts, thresholds, planes_list, scalars_list, label_category,
               num_categories, seg_size):
    """Counts at one or several threshold vectors.

    acts: (N, K, h, w); thresholds: (K,) or (V, K) float64
    planes_list[x]: (P_x, sh, sw) raw label planes; scalars_list[x]: raw scalar labels
    label_category: (L,) primary category of each label (entry 0 unused)
    returns I (K, L) int64, act (K, G) int64, lab (L,) int64 (sum_x |L_c(x)|);
    with (V, K) thresholds I is (V, K, L) and act (V, K, G).
    """
    acts = np.asarray(acts)
    thr = np.asarray(thresholds, dtype=np.float64)
    single = thr.ndim == 1
    thr = thr.reshape(-1, acts.shape[1])
    V = thr.shape[0]
    N, K = acts.shape[:2]
    L = len(label_category)
    sh, sw = seg_size
    I = np.zeros((V, K, L), dtype=np.int64)
    act = np.zeros((V, K, num_categories), dtype=np.int64)
    lab = np.zeros(L, dtype=np.int64)
    for x in range(N):
        S = upsample_ref(acts[x], sh, sw)                       # (K, sh, sw)
        cats = image_categories(planes_list[x], scalars_list[x], label_category,
                                num_categories)
        masks = [label_mask(planes_list[x], scalars_list[x], c, (sh, sw)) for c in range(L)]
        for c in range(1, L):
            lab[c] += masks[c].sum()
        for v in range(V):
            M = S > thr[v][:, None, None]                       # strict
            for k in range(K):
                for g in range(num_categories):
                    if cats[g]:
                        act[v, k, g] += M[k].sum()
                for c in range(1, L):
                    I[v, k, c] += (M[k] & masks[c]).sum()
    if single:
        return I[0], act[0], lab
    return I, act, lab


def label_pixels_canonical(planes, scalars, num_labels: int) -> np.ndarray:
    """sum over images of |L_c|: (L,) int64 from CANONICAL planes (B, P, sh, sw), each
    pixel's distinct labels, and scalars (B, S) (a scalar label covers all sh * sw
    pixels), as the label cache stores them. Entry 0 is zero."""
    planes = np.asarray(planes, dtype=np.int64)
    scalars = np.asarray(scalars, dtype=np.int64).reshape(planes.shape[0], -1)
    npix = planes.shape[2] * planes.shape[3]
    out = np.bincount(planes.reshape(-1), minlength=num_labels)
    out = out + np.bincount(scalars.reshape(-1), minlength=num_labels) * npix
    out[0] = 0
    return out


def iou_ref(I, act, lab, label_category) -> np.ndarray:
    """(K, L) IoU: I / (act[:, g(c)] + lab[c] - I), 0 where the union is 0."""
    I = np.asarray(I, dtype=np.int64)
    K, L = I.shape
    iou = np.zeros((K, L), dtype=np.float64)
    for k in range(K):
        for c in range(1, L):
            U = act[k, label_category[c]] + lab[c] - I[k, c]
            iou[k, c] = I[k, c] / U if U > 0 else 0.0
    return iou


def iou_matrix_ref(acts, thresholds, planes_list, scalars_list, label_category,
                   num_categories, seg_size) -> np.ndarray:
    """Full (K, L) IoU matrix at thresholds (K,)."""
    I, act, lab = counts_ref(acts, thresholds, planes_list, scalars_list, label_category,
                             num_categories, seg_size)
    return iou_ref(I, act, lab, label_category)
