"""Label-set ids of a tile's pixels (step 3 of :mod:`pipeline.tally`).

A pixel's *label set* is its (image, canonical label slots) combination; the tally bins
active pixels by set and expands each set's counts to its labels once. The sets of a
tile are numbered image by image (``offsets``), in one of two exact ways whose cost
depends neither on how many labels a pixel carries nor on the label numbers:

- ``"numba"`` (CPU, when numba is installed; :mod:`pipeline.label_sets_numba`): one
  pass over the pixels with a hash table per image, O(pixels x slots); within an image
  sets are numbered in order of first occurrence;
- ``"torch"`` (CUDA, and CPU without numba): sorted unique of packed keys in rounds.
  The first round packs the image and as many slots as fit in 62 bits; each further
  round packs the previous round's id (an index below the tile's pixel count) with
  the next slots, so a key never overflows whatever P and L are (2 rounds for P = 7 at
  L = 1,198, one for P <= 4). Sets are in lexicographic (image, slots) order.

Both give every pixel of a set the same id and every set its labels exactly; only the
numbering within an image differs, which no count depends on.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["LabelSets", "label_sets", "numba_available"]

# labels and ids are packed into non-negative int64 keys: 62 bits leave the sign bit free
_KEY_BITS = 62


@dataclass
class LabelSets:
    """Label sets of a tile: pixel -> set id; sets ordered by image."""
    sid: torch.Tensor       # (B, n) int64 global set id of each pixel
    image: torch.Tensor     # (NS,) int64 image of each set
    labels: torch.Tensor    # (NS, P + S) int64 plane labels of the set + scalars of its image
    offsets: list           # (B + 1,) first set of each image


def _bits(x: int) -> int:
    return max(1, int(x).bit_length())


def numba_available() -> bool:
    """Whether the compiled CPU kernel can be used (numba imports)."""
    return _numba_kernel() is not None


_NUMBA: list = []       # [kernel or None] once the import was tried


def _numba_kernel():
    """:func:`pipeline.label_sets_numba.first_occurrence_sets`, or None without numba."""
    if not _NUMBA:
        try:
            from pipeline.label_sets_numba import first_occurrence_sets
        except ImportError:
            first_occurrence_sets = None
        _NUMBA.append(first_occurrence_sets)
    return _NUMBA[0]


def label_sets(planes: torch.Tensor, scalars: torch.Tensor, num_labels: int,
               method: str = "auto") -> LabelSets:
    """The label sets of a tile.

    planes:     (B, P, n) int32 or int64 tensor, or a numpy array of any integer dtype,
                of canonical slots (labels 0..num_labels-1; any strides)
    scalars:    (B, S) int64 scalar labels of each image
    num_labels: L, at most 2^31
    method:     "numba", "torch" or "auto" (numba on CPU when installed, else torch)
    """
    host = isinstance(planes, np.ndarray)        # the label cache's slots, as read
    if method == "auto":
        method = "numba" if (host or planes.device.type == "cpu") and numba_available() \
            else "torch"
    if method == "numba":
        kernel = _numba_kernel()
        if kernel is None:
            raise ValueError("label-set method 'numba' needs numba: pip install numba, "
                             "or use method='torch'")
        if not host and planes.device.type != "cpu":
            raise ValueError(f"label-set method 'numba' runs on CPU, planes are on "
                             f"{planes.device}: use method='torch'")
        sid, rep = kernel(planes if host else planes.numpy())
        sid, rep = torch.from_numpy(sid), torch.from_numpy(rep)
    elif method == "torch":
        if host:
            planes = torch.from_numpy(planes.astype(np.int32))
        sid, rep = _packed_rounds(planes, num_labels)
    else:
        raise ValueError(f"label-set method must be 'auto', 'numba' or 'torch', got {method!r}")
    return _sets_from(planes, scalars, sid, rep)


def _packed_rounds(planes: torch.Tensor, num_labels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(sid (B, n) int64, rep (NS,) int64): lexicographic (image, slots) set ids by
    rounds of torch.unique over packed keys (module docstring), and one pixel b * n + x
    of each set."""
    B, P, n = planes.shape
    bits = _bits(num_labels - 1)
    if bits > _KEY_BITS // 2:
        raise ValueError(f"num_labels must be at most 2^31, got {num_labels}")
    key = torch.arange(B, device=planes.device)[:, None].expand(B, n)
    used, p = _bits(B - 1), 0
    while True:
        take = min(P - p, (_KEY_BITS - used) // bits)
        if take == 0 and p < P:                 # 2^31 or more sets: never in a real tile
            raise ValueError(f"a tile of {B} x {n} pixels is too large to number its label sets")
        for q in range(p, p + take):
            key = (key << bits) | planes[:, q]
        p += take
        uniq, key = torch.unique(key, return_inverse=True)    # key: (B, n) ids
        if p == P:
            break
        used = _bits(uniq.numel() - 1)
    sid = key
    rep = torch.empty(uniq.numel(), dtype=torch.int64, device=planes.device)
    rep.scatter_(0, sid.reshape(-1), torch.arange(B * n, device=planes.device))
    return sid, rep


def _sets_from(planes, scalars, sid, rep) -> LabelSets:
    """The LabelSets of ids ``sid`` (B, n) with representative pixels ``rep`` (NS,)
    (flat b * n + x; sets ordered by image)."""
    B, P, n = planes.shape
    image = rep // n
    if isinstance(planes, np.ndarray):
        slots = torch.from_numpy(planes[image.numpy(), :, (rep - image * n).numpy()]
                                 .astype(np.int64))                  # (NS, P)
    else:
        slots = planes[image, :, rep - image * n].to(torch.int64)      # (NS, P)
    labels = torch.cat([slots, scalars[image].to(torch.int64)], dim=1)
    counts = torch.bincount(image, minlength=B)
    offsets = [0] + torch.cumsum(counts, 0).tolist()
    return LabelSets(sid, image, labels, offsets)
