"""Bilinear upsampling S_k(x) of activation maps (DESIGN.md, "Normative definitions").

Sampling positions and weights are those of ``F.interpolate(mode="bilinear",
align_corners=False)``; the arithmetic is fixed to the lerp form in float64:

  scale = n_in / n_out                                   (float64)
  src   = max(scale * (dst + 0.5) - 0.5, 0)
  i0    = floor(src); i1 = i0 + 1 if i0 < n_in - 1 else i0; w = src - i0
  top = a00 + wx * (a01 - a00); bot = a10 + wx * (a11 - a10); S = top + wy * (bot - top)

(a00 = A[y0, x0], a01 = A[y0, x1], a10 = A[y1, x0], a11 = A[y1, x1].) With this form
a constant map stays exactly constant and S never exceeds the largest of its four
inputs (each lerp is monotone and 0 <= w < 1), so maps or cells whose maximum does not
exceed T cannot produce an active pixel and may be skipped exactly.

Output pixels sharing the same (y0, y1, x0, x1) form a rectangle, a "cell"; the
tally kernel upsamples only cells (and pieces of cells) whose largest possible value
exceeds T. :func:`axis_pieces` cuts each axis into pieces of at most ``g`` output pixels
of one cell.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["bilinear_weights", "upsample", "AxisPieces", "axis_pieces"]


def bilinear_weights(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per output index along one axis: (idx0 (n_out,) int64, idx1 (n_out,) int64,
    w1 (n_out,) float64); value = a[idx0] + w1 * (a[idx1] - a[idx0])."""
    if n_in < 1 or n_out < 1:
        raise ValueError(f"sizes must be >= 1, got n_in={n_in}, n_out={n_out}")
    scale = np.float64(n_in) / np.float64(n_out)
    src = scale * (np.arange(n_out, dtype=np.float64) + 0.5) - 0.5
    src = np.maximum(src, 0.0)
    idx0 = np.floor(src).astype(np.int64)
    idx0 = np.minimum(idx0, n_in - 1)
    idx1 = np.where(idx0 < n_in - 1, idx0 + 1, idx0)
    w1 = src - idx0
    return idx0, idx1, w1


def upsample(maps: torch.Tensor, size: tuple[int, int] | int) -> torch.Tensor:
    """Bilinear upsampling in float64, lerp form (module docstring).

    maps: (..., h, w) tensor (any float dtype, CPU or CUDA)
    size: (sh, sw) or an int for a square output
    returns (..., sh, sw) float64 on maps.device
    """
    sh, sw = (size, size) if isinstance(size, int) else size
    h, w = maps.shape[-2:]
    dev = maps.device
    a = maps.to(torch.float64)
    y0, y1, wy = (torch.as_tensor(t, device=dev) for t in bilinear_weights(h, sh))
    x0, x1, wx = (torch.as_tensor(t, device=dev) for t in bilinear_weights(w, sw))
    # rows: R[..., y, X] = a[y, x0] + wx * (a[y, x1] - a[y, x0])  (= "top"/"bot")
    left = a[..., x0]
    rows = left + wx * (a[..., x1] - left)
    top = rows[..., y0, :]
    return top + wy[:, None] * (rows[..., y1, :] - top)


@dataclass(frozen=True)
class AxisPieces:
    """One axis cut into pieces: runs of <= g consecutive output pixels of one cell.

    lo, hi: (n_pieces,) int64 source indices (idx0, idx1) shared by the piece
    pos:    (n_pieces, g) int64 output index, -1 for padding
    w:      (n_pieces, g) float64 weight w1 (0 for padding)
    """
    lo: np.ndarray
    hi: np.ndarray
    pos: np.ndarray
    w: np.ndarray

    @property
    def g(self) -> int:
        return int(self.pos.shape[1])


def axis_pieces(n_in: int, n_out: int, g: int | None = None) -> AxisPieces:
    """Pieces of one axis (see :class:`AxisPieces`); g defaults to ceil(n_out / n_in)
    (7 -> 112: 8 pieces of 16 pixels, two of them half padding)."""
    idx0, idx1, w1 = bilinear_weights(n_in, n_out)
    if g is None:
        g = max(1, -(-n_out // n_in))
    starts = []
    for i in range(n_out):
        if i == 0 or idx0[i] != idx0[i - 1] or i - starts[-1] >= g:
            starts.append(i)
    starts.append(n_out)
    P = len(starts) - 1
    pos = np.full((P, g), -1, dtype=np.int64)
    w = np.zeros((P, g), dtype=np.float64)
    lo = np.empty(P, dtype=np.int64)
    hi = np.empty(P, dtype=np.int64)
    for p in range(P):
        s, e = starts[p], starts[p + 1]
        pos[p, : e - s] = np.arange(s, e)
        w[p, : e - s] = w1[s:e]
        lo[p], hi[p] = idx0[s], idx1[s]
    return AxisPieces(lo=lo, hi=hi, pos=pos, w=w)
