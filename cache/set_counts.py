"""Label-set counts of one layer at one quantile, stored next to its cube: the sufficient
statistics of compositional explanations (pipeline/compositional/).

A *global label set* is the set of labels a pixel carries: its canonical plane labels
plus the scalar labels of its image (a scalar label covers every pixel), merged across
tiles and images by the label tuple. For any Boolean formula f over labels

    I(k, f)  = sum over sets s with f(s) of active[k, s]
    |f|      = sum over sets s with f(s) of pixels[s]
    |M_k|    = sum over all sets s of active[k, s]

so the counts below answer every formula's IoU without another replay. Inside a
layer's Zarr group::

    set_counts/q<quantile>/sets        (S, W) int32   labels of set s, descending, 0-padded
                                                      (a row of zeros: unlabelled pixels)
                          /pixels      (S,) int64     pixels of the dataset in set s
                          /thresholds  (K,) float64   T_k the counts were made at
                          /offsets     (K + 1,) int64 unit k's entries: [offsets[k], offsets[k+1])
                          /set_index   (nnz,) int64   set of each entry (ascending per unit)
                          /active      (nnz,) int64   active pixels (S_k > T_k) of the unit in it
    attrs: schema, version, quantile, source, num_images, complete, digest

Sets are in lexicographic order of their rows, so the arrays do not depend on tiling or
on the order tiles finished in. ``source`` names what the counts came from (the cube's
source: model, dataset, layer, label cache) plus the thresholds' SHA-256; stored counts of
another source are stale and ignored. The digest (cache/metadata.py, as for the cube)
makes an edited or damaged node read as absent, so it is recomputed.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import zarr

from cache.cube import _array, _read, _seal_node, stored_node

SCHEMA = "netdissect-zarr/set-counts"
VERSION = 1
GROUP = "set_counts"
ARRAYS = ("sets", "pixels", "thresholds", "offsets", "set_index", "active")


@dataclass
class SetCounts:
    """Active pixels per (unit, global label set) and pixels per set (module docstring),
    unit-major sparse (CSR): unit k's sets are set_index[offsets[k]:offsets[k + 1]]."""
    quantile: float
    thresholds: np.ndarray      # (K,) float64
    sets: np.ndarray            # (S, W) int32 labels, descending, zero padded
    pixels: np.ndarray          # (S,) int64
    offsets: np.ndarray         # (K + 1,) int64
    set_index: np.ndarray       # (nnz,) int64
    active: np.ndarray          # (nnz,) int64, > 0
    num_images: int

    @property
    def num_units(self) -> int:
        return int(self.offsets.shape[0] - 1)

    @property
    def num_sets(self) -> int:
        return int(self.sets.shape[0])

    def unit(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(set indices (n,) int64 ascending, active pixels (n,) int64) of unit k."""
        a, b = int(self.offsets[k]), int(self.offsets[k + 1])
        return self.set_index[a:b], self.active[a:b]

    def unit_pixels(self) -> np.ndarray:
        """(K,) int64 |M_k|: active pixels of each unit over the dataset."""
        csum = np.concatenate([[0], np.cumsum(self.active, dtype=np.int64)])
        return csum[self.offsets[1:]] - csum[self.offsets[:-1]]


def group_name(quantile: float) -> str:
    """The node of one quantile under ``set_counts/``: ``q0.005``."""
    return f"q{float(quantile):g}"


def thresholds_digest(thresholds: np.ndarray) -> str:
    """SHA-256 of the (K,) float64 thresholds, as a counts source records them."""
    return hashlib.sha256(np.ascontiguousarray(thresholds, np.float64)).hexdigest()


def counts_source(cube_source: dict, quantile: float, thresholds: np.ndarray) -> dict:
    """What set counts at ``quantile`` are computed from: the cube's source, the
    quantile and a SHA-256 of the (K,) float64 thresholds."""
    return {**cube_source, "quantile": float(quantile),
            "thresholds": thresholds_digest(thresholds)}


def read_set_counts(layer: zarr.Group, quantile: float, source: dict, log=None
                    ) -> SetCounts | None:
    """The stored counts at ``quantile`` for ``source``, or None if absent, stale,
    incomplete or damaged (noted through ``log``)."""
    if GROUP not in layer:
        return None
    name = f"{GROUP}/{group_name(quantile)}"
    g = stored_node(layer, name, ARRAYS,
                    lambda a: a.get("source") == source and a.get("complete")
                    and a.get("version", 0) <= VERSION, log)
    got = None if g is None else _read(g, ARRAYS, log)
    if got is None:
        return None
    sets, pixels, thr, offsets, set_index, active = got
    return SetCounts(float(g.attrs["quantile"]), thr, sets, pixels, offsets, set_index,
                     active, int(g.attrs["num_images"]))


def write_set_counts(layer: zarr.Group, counts: SetCounts, source: dict) -> None:
    """Store ``counts`` under ``set_counts/q<quantile>`` (replacing what was there),
    sealed complete with its digest after the arrays."""
    parent = layer.require_group(GROUP)
    g = parent.create_group(group_name(counts.quantile), overwrite=True,
                            attributes={"complete": False})
    for name in ARRAYS:
        _array(g, name, getattr(counts, name))
    _seal_node(g, {"schema": SCHEMA, "version": VERSION, "quantile": float(counts.quantile),
                   "source": source, "num_images": int(counts.num_images),
                   "complete": True}, ARRAYS)
