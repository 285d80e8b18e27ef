"""Exact held-out counts of a concept vector's mask and of single units' masks.

Vector mask of concept c (weights w (K,), bias b, probability threshold tau, 0.5 by
default as in Net2Vec):

    M_w(x) = sigmoid(S(sum_k w_k A_k(x)) + b) > tau  <=>  S(sum_k w_k A_k(x)) > logit(tau) - b

with S the scoring's bilinear upsampling (pipeline/upsample.py) of the combined
low-resolution map (float64); upsampling is linear, so this is w . a(x) + b at every
pixel up to rounding, for K times less upsampling. Counts over the held-out images,
as the scoring's IoU (DESIGN.md) with M_w in place of M_k:

    I_w(c) = sum_x |M_w(x) ∩ L_c(x)|,   A_w(c) = sum over x in X_g(c) of |M_w(x)|,
    IoU = I_w / (A_w + |L_c| - I_w)

Images outside X_g add nothing (they hold no label of category g, so no pixel of c).
An (image, concept) map whose low-resolution maximum cannot exceed the threshold is
skipped (bilinear values never exceed their inputs; a rounding slack keeps it exact).
The single units' counts I(k, c), A(k, g) on either split come from the scoring's own
tally kernel (:func:`unit_tally`), at T_k.
"""
from __future__ import annotations

import numpy as np
import torch

from pipeline.tally import Tally
from pipeline.upsample import upsample

_SLACK = 2.0 ** -40


def logit(tau: float) -> float:
    """log(tau / (1 - tau)); ValueError naming --threshold outside (0, 1)."""
    if not 0.0 < tau < 1.0:
        raise ValueError(f"--threshold must be in (0, 1), got {tau}")
    return float(np.log(tau) - np.log1p(-tau))


def vector_counts(acts: np.ndarray, planes: np.ndarray, scalars: np.ndarray,
                  present: np.ndarray, weights: np.ndarray, bias: np.ndarray,
                  labels: np.ndarray, categories: np.ndarray, tau: float = 0.5,
                  device: str = "cpu", chunk_values: int = 1 << 22
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(I_w (C,) int64, A_w (C,) int64) of C concept vectors over a tile of images.

    acts (B, K, h, w); planes (B, P, sh, sw) canonical label slots; scalars (B, S);
    present (B, G) bool; weights (C, K) float64; bias (C,); labels (C,) label numbers;
    categories (C,) their primary category index.
    """
    dev = torch.device(device)
    B = acts.shape[0]
    C = len(labels)
    inter = np.zeros(C, dtype=np.int64)
    act = np.zeros(C, dtype=np.int64)
    if B == 0 or C == 0:
        return inter, act
    sh, sw = planes.shape[2:]
    A = torch.as_tensor(np.asarray(acts), device=dev).to(torch.float64)
    W = torch.as_tensor(np.asarray(weights, dtype=np.float64), device=dev)
    t = logit(tau) - np.asarray(bias, dtype=np.float64)                  # (C,)
    low = torch.einsum("bkhw,ck->bchw", A, W)                            # (B, C, h, w)
    mx = low.amax(dim=(2, 3)).cpu().numpy()
    mag = low.abs().amax(dim=(2, 3)).cpu().numpy()
    pres = np.asarray(present, dtype=bool)[:, np.asarray(categories)]    # (B, C)
    live = pres & (mx + _SLACK * mag >= t[None, :])
    bi, ci = np.nonzero(live)
    step = max(1, chunk_values // (sh * sw))
    for s in range(0, bi.size, step):
        b, c = bi[s:s + step], ci[s:s + step]
        up = upsample(low[torch.as_tensor(b, device=dev), torch.as_tensor(c, device=dev)],
                      (sh, sw))
        m = (up > torch.as_tensor(t[c], device=dev)[:, None, None]).cpu().numpy()
        lab = labels[c]
        inside = (planes[b] == lab[:, None, None, None]).any(axis=1)
        inside |= (scalars[b] == lab[:, None]).any(axis=1)[:, None, None]
        np.add.at(act, c, m.reshape(m.shape[0], -1).sum(axis=1))
        np.add.at(inter, c, (m & inside).reshape(m.shape[0], -1).sum(axis=1))
    return inter, act


def unit_tally(thresholds: np.ndarray, num_labels: int, num_categories: int,
               map_size: tuple[int, int], seg_size: tuple[int, int], device: str = "cpu"
               ) -> Tally:
    """An empty Tally of single-unit masks M_k = S_k > T_k: thresholds (K,) float64."""
    return Tally(np.asarray(thresholds, dtype=np.float64)[None, :], num_labels,
                 num_categories, map_size, seg_size, device=device)


def iou(inter: np.ndarray, union: np.ndarray) -> np.ndarray:
    """I / U elementwise, 0 where U = 0."""
    inter, union = np.asarray(inter, np.int64), np.asarray(union, np.int64)
    out = np.zeros(inter.shape, dtype=np.float64)
    ok = union > 0
    out[ok] = inter[ok] / union[ok]
    return out
