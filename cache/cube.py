"""Exact thresholds and IoU cubes of one layer, stored next to its activation cache.

Inside a layer's Zarr group::

    quantiles/thresholds   (V, K) float64  T[v, k] for levels[v]   attrs: levels, source
    cube/intersect         (V, K, L) int64  I(k, c) per level
    cube/activation        (V, K, G) int64  sum over x in X_g of |M_k(x)| per level
    cube/thresholds        (V, K) float64   the thresholds the counts were made at
    cube/label_pixels      (L,) int64       |L_c|
                                            attrs: levels, source, categories

``source`` is a JSON dict naming what the numbers were computed from (the
activation cache's model/dataset fingerprints, layer, dtype, number of images,
and for the cube the label cache fingerprint). Stored results whose source
differs from the current one are stale and ignored, so they are recomputed
only when the cache changes. Levels are kept sorted ascending; adding a level
merges it into the stored arrays. Chunks carry a CRC32C: a damaged stored cube or
threshold array reads as absent and is recomputed from the caches.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import zarr

from cache.zarr_io import read_whole, zstd_codecs


@dataclass
class Cube:
    """Counts of one layer at V quantile levels (see module docstring for shapes)."""
    levels: np.ndarray          # (V,) float64 ascending
    thresholds: np.ndarray      # (V, K) float64
    intersect: np.ndarray       # (V, K, L) int64
    activation: np.ndarray      # (V, K, G) int64
    label_pixels: np.ndarray    # (L,) int64
    categories: list[str]

    def level_index(self, q: float) -> int:
        """Index of level ``q`` (exact match to 1e-12), or KeyError."""
        hit = np.flatnonzero(np.abs(self.levels - q) <= 1e-12)
        if not hit.size:
            raise KeyError(q)
        return int(hit[0])

    def select(self, levels) -> "Cube":
        idx = [self.level_index(q) for q in levels]
        return Cube(self.levels[idx], self.thresholds[idx], self.intersect[idx],
                    self.activation[idx], self.label_pixels, self.categories)


def _array(g: zarr.Group, name: str, data: np.ndarray) -> None:
    g.create_array(name, data=np.ascontiguousarray(data),
                   compressors=zstd_codecs(), overwrite=True)


def read_thresholds(layer: zarr.Group, source: dict) -> tuple[np.ndarray, np.ndarray] | None:
    """(levels (V,), thresholds (V, K)) stored for this source, or None."""
    if "quantiles" not in layer:
        return None
    q = layer["quantiles"]
    if q.attrs.get("source") != source or "thresholds" not in q:
        return None
    try:
        return np.asarray(q.attrs["levels"], dtype=np.float64), read_whole(q["thresholds"])
    except Exception:               # noqa: BLE001 - damaged: recomputed by the caller
        return None


def write_thresholds(layer: zarr.Group, levels, thresholds: np.ndarray, source: dict) -> None:
    """Merge (levels, thresholds) into what is stored for ``source`` and write it."""
    levels = np.asarray(levels, dtype=np.float64)
    old = read_thresholds(layer, source)
    if old is None:
        old = (np.zeros(0), np.zeros((0,) + np.shape(thresholds)[1:]))
    levels, (thresholds,) = merge_levels(old[0], [old[1]], levels, [np.asarray(thresholds)])
    g = layer.require_group("quantiles")
    g.attrs["source"] = None                       # invalid while being rewritten
    _array(g, "thresholds", thresholds)
    g.attrs.update({"levels": [float(v) for v in levels], "source": source})


def merge_levels(old_levels: np.ndarray, old: list[np.ndarray], new_levels: np.ndarray,
                 new: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
    """Union of two level sets (new wins on equal levels), sorted ascending; each array's
    first axis follows its levels."""
    keep = [i for i, q in enumerate(old_levels)
            if not np.any(np.abs(new_levels - q) <= 1e-12)]
    lv = np.concatenate([old_levels[keep], new_levels])
    order = np.argsort(lv, kind="stable")
    return lv[order], [np.concatenate([a[keep], b])[order] for a, b in zip(old, new)]


def read_cube(layer: zarr.Group, source: dict) -> Cube | None:
    """The stored cube for ``source``, or None if absent, stale or incomplete."""
    if "cube" not in layer:
        return None
    g = layer["cube"]
    if g.attrs.get("source") != source or not g.attrs.get("complete"):
        return None
    try:
        return Cube(np.asarray(g.attrs["levels"], dtype=np.float64),
                    *(read_whole(g[n]) for n in ("thresholds", "intersect", "activation",
                                                 "label_pixels")),
                    list(g.attrs["categories"]))
    except Exception:               # noqa: BLE001 - damaged: recomputed by the caller
        return None


def write_cube(layer: zarr.Group, cube: Cube, source: dict) -> Cube:
    """Merge ``cube``'s levels into the stored cube for ``source``; return the merged cube."""
    old = read_cube(layer, source)
    if old is not None:
        names = ("thresholds", "intersect", "activation")
        lv, arrays = merge_levels(old.levels, [getattr(old, n) for n in names], cube.levels,
                                  [getattr(cube, n) for n in names])
        cube = Cube(lv, *arrays, cube.label_pixels, cube.categories)
    g = layer.require_group("cube")
    g.attrs["complete"] = False
    for name in ("thresholds", "intersect", "activation", "label_pixels"):
        _array(g, name, getattr(cube, name))
    g.attrs.update({"levels": [float(v) for v in cube.levels], "source": source,
                    "categories": list(cube.categories), "complete": True})
    return cube
