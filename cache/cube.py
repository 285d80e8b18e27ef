"""Exact thresholds and IoU cubes of one layer, stored next to its activation cache.

Inside a layer's Zarr group::

    quantiles/thresholds   (V, K) float64  T[v, k] for levels[v]   attrs: levels, source
    cube/intersect         (V, K, L) int64  I(k, c) per level
    cube/activation        (V, K, G) int64  sum over x in X_g of |M_k(x)| per level
    cube/thresholds        (V, K) float64   the thresholds the counts were made at
    cube/label_pixels      (L,) int64       |L_c|
                                            attrs: levels, source, categories, complete
    tally_partial/{a,b}    a replay in progress: its counts so far (:class:`TallyCheckpoint`)

Both nodes' attrs also hold ``digest``: the sha256 of their other attrs and their arrays'
zarr.json (cache/metadata.py), written in the same write as the final attrs. A node whose
metadata is unreadable or no longer matches its digest (an edited ``levels``, dtype...) is
derived data: it is recomputed, with a one-line note.

``source`` is a JSON dict naming what the numbers were computed from (the
activation cache's model/dataset fingerprints, layer, dtype, number of images,
and for the cube the label cache fingerprint). Stored results whose source
differs from the current one are stale and ignored, so they are recomputed
only when the cache changes. Levels are kept sorted ascending; adding a level
merges it into the stored arrays. Chunks carry a CRC32C: a damaged stored cube or
threshold array reads as absent and is recomputed from the caches.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass

import numpy as np
import zarr

from cache import metadata
from cache.store import store_location
from cache.zarr_io import WRITE_CONFIG, read_whole, zstd_codecs

THRESHOLD_ARRAYS = ("thresholds",)
CUBE_ARRAYS = ("thresholds", "intersect", "activation", "label_pixels")


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
    # every chunk written, all-zero ones included (thresholds of units that are zero on
    # more than 1 - q of their values are 0): an absent chunk reads as damage
    g.create_array(name, data=np.ascontiguousarray(data), compressors=zstd_codecs(),
                   overwrite=True, config=WRITE_CONFIG)


def node_digest(zstore, node: str, attrs: dict, arrays) -> tuple[str | None, str | None]:
    """(sha256 of ``attrs`` without ``digest`` and of the zarr.json of the node's
    ``arrays``, None) or (None, which array's metadata is unreadable)."""
    metas = {}
    for name in arrays:
        key = metadata.node_key(f"{node}/{name}")
        metas[name], problem = metadata.read_json(zstore, key)
        if problem:
            return None, f"{store_location(zstore, key)} {problem}"
    rest = {k: v for k, v in attrs.items() if k != "digest"}
    return metadata.sha256({"attrs": rest, "arrays": metas}), None


def node_problem(layer: zarr.Group, name: str, arrays) -> tuple[dict | None, str | None]:
    """(attrs of the stored node ``name`` of a layer group, what is wrong with its
    metadata or None); (None, None) when there is no such node."""
    node = f"{layer.path}/{name}".strip("/")
    meta, problem = metadata.read_json(layer.store, metadata.node_key(node))
    if problem == "is missing":
        return None, None
    attrs = (meta or {}).get("attributes")
    if problem is None and not isinstance(attrs, dict):
        problem = "holds no attributes object"
    if problem is None:
        digest, problem = node_digest(layer.store, node, attrs, arrays)
        if problem is None and attrs.get("digest") != digest:
            problem = "metadata changed after writing (or stored before digests)"
    return attrs, problem


def stored_node(layer: zarr.Group, name: str, arrays, wanted, log=None) -> zarr.Group | None:
    """The stored node ``name`` of a layer group when ``wanted(attrs)`` (its source is
    current, it is complete) and its metadata is intact (readable, matching its digest);
    else None, with a note through ``log`` when it was damaged (it is recomputed)."""
    node = f"{layer.path}/{name}".strip("/")
    meta, problem = metadata.read_json(layer.store, metadata.node_key(node))
    if problem is None and not wanted((meta or {}).get("attributes") or {}):
        return None                                 # stale or being written: no note
    attrs, problem = node_problem(layer, name, arrays)
    if problem:
        _note(log, f"{store_location(layer.store, node)}: {problem}; recomputing it")
    return layer[name] if attrs is not None and problem is None else None


def _note(log, text: str) -> None:
    if log is not None:
        log(f"note: {text}")


def _read(g: zarr.Group, names, log) -> list[np.ndarray] | None:
    """The arrays ``names`` of a stored node, or None (noted) when a chunk is damaged."""
    try:
        return [read_whole(g[n]) for n in names]
    except Exception as e:          # noqa: BLE001 - damaged: recomputed by the caller
        _note(log, f"{store_location(g.store, g.path)}: a chunk is damaged or missing "
                   f"({type(e).__name__}: {e}); recomputing it")
        return None


def _seal_node(g: zarr.Group, attrs: dict, arrays) -> None:
    """Write a stored node's final attrs with their digest, in one write."""
    final = dict(g.attrs, **attrs)
    digest, _ = node_digest(g.store, g.path, final, arrays)
    g.attrs.update(dict(attrs, digest=digest))


def read_thresholds(layer: zarr.Group, source: dict, log=None
                    ) -> tuple[np.ndarray, np.ndarray] | None:
    """(levels (V,), thresholds (V, K)) stored for this source, or None."""
    q = stored_node(layer, "quantiles", THRESHOLD_ARRAYS,
                    lambda a: a.get("source") == source, log)
    got = None if q is None else _read(q, THRESHOLD_ARRAYS, log)
    if got is None:
        return None
    return np.asarray(q.attrs["levels"], dtype=np.float64), got[0]


def thresholds_at(stored: tuple[np.ndarray, np.ndarray] | None, quantile: float
                  ) -> np.ndarray | None:
    """(K,) T_k at ``quantile`` from :func:`read_thresholds`'s (levels, thresholds), or
    None when nothing is stored or not at that level (exact match to 1e-12)."""
    if stored is None:
        return None
    hit = np.flatnonzero(np.abs(stored[0] - float(quantile)) <= 1e-12)
    return stored[1][hit[0]] if hit.size else None


def write_thresholds(layer: zarr.Group, levels, thresholds: np.ndarray, source: dict) -> None:
    """Merge (levels, thresholds) into what is stored for ``source`` and write it."""
    levels = np.asarray(levels, dtype=np.float64)
    old = read_thresholds(layer, source)
    if old is None:
        old = (np.zeros(0), np.zeros((0,) + np.shape(thresholds)[1:]))
    levels, (thresholds,) = merge_levels(old[0], [old[1]], levels, [np.asarray(thresholds)])
    g = layer.create_group("quantiles", overwrite=True, attributes={"source": None})
    _array(g, "thresholds", thresholds)             # (invalid while being rewritten)
    _seal_node(g, {"levels": [float(v) for v in levels], "source": source},
               THRESHOLD_ARRAYS)


def merge_levels(old_levels: np.ndarray, old: list[np.ndarray], new_levels: np.ndarray,
                 new: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
    """Union of two level sets (new wins on equal levels), sorted ascending; each array's
    first axis follows its levels."""
    keep = [i for i, q in enumerate(old_levels)
            if not np.any(np.abs(new_levels - q) <= 1e-12)]
    lv = np.concatenate([old_levels[keep], new_levels])
    order = np.argsort(lv, kind="stable")
    return lv[order], [np.concatenate([a[keep], b])[order] for a, b in zip(old, new)]


def read_cube(layer: zarr.Group, source: dict, log=None) -> Cube | None:
    """The stored cube for ``source``, or None if absent, stale, incomplete or damaged
    (noted through ``log``)."""
    g = stored_node(layer, "cube", CUBE_ARRAYS,
                    lambda a: a.get("source") == source and a.get("complete"), log)
    got = None if g is None else _read(g, CUBE_ARRAYS, log)
    if got is None:
        return None
    return Cube(np.asarray(g.attrs["levels"], dtype=np.float64), *got,
                list(g.attrs["categories"]))


def write_cube(layer: zarr.Group, cube: Cube, source: dict) -> Cube:
    """Merge ``cube``'s levels into the stored cube for ``source``; return the merged cube."""
    old = read_cube(layer, source)
    if old is not None:
        names = ("thresholds", "intersect", "activation")
        lv, arrays = merge_levels(old.levels, [getattr(old, n) for n in names], cube.levels,
                                  [getattr(cube, n) for n in names])
        cube = Cube(lv, *arrays, cube.label_pixels, cube.categories)
    g = layer.create_group("cube", overwrite=True, attributes={"complete": False})
    for name in CUBE_ARRAYS:
        _array(g, name, getattr(cube, name))
    _seal_node(g, {"levels": [float(v) for v in cube.levels], "source": source,
                   "categories": list(cube.categories), "complete": True}, CUBE_ARRAYS)
    return cube


# ------------------------------------------------------------- replay checkpoints
PARTIAL = "tally_partial"
PARTIAL_ARRAYS = ("intersect_by_c", "activation_by_c")


class TallyCheckpoint:
    """The counts of a layer's replay in progress, so that a scoring killed inside the
    replay resumes from the tiles it finished (:func:`pipeline.replay.replay_cube`).

    Inside the layer's group, ``tally_partial/a`` and ``tally_partial/b`` are written in
    turn, each with the Tally counts ``intersect_by_c`` (V + 1, K, L) and
    ``activation_by_c`` (V + 1, K, G) int64 and attrs ``key`` (what is counted: the cube
    source, levels, a SHA-256 of the thresholds, the tile ranges), ``done`` (start images
    of the finished tiles), ``images`` and ``seq``, sealed with a digest after the arrays
    (as the cube is). A kill while one slot is written leaves the other intact, so a kill
    loses at most the tiles finished since the last save (a save every ``every`` seconds;
    0: after every tile) and those in flight. :meth:`clear` removes both once the cube
    is stored.
    """

    def __init__(self, layer: zarr.Group, key: dict, every: float = 30.0, log=None):
        self.layer, self.every, self.log = layer, float(every), log
        self.key = json.loads(json.dumps(key))          # as stored (lists, not tuples)
        self.seq = 0
        self._last = time.monotonic()

    def load(self) -> tuple[dict, list[int]] | None:
        """(counts: the two arrays and ``images``, done tile starts) of the newest intact
        slot for this key, or None."""
        best = None
        for slot in ("a", "b"):
            g = stored_node(self.layer, f"{PARTIAL}/{slot}", PARTIAL_ARRAYS,
                            lambda a: a.get("key") == self.key, self.log)
            got = None if g is None else _read(g, PARTIAL_ARRAYS, self.log)
            if got is not None and (best is None or g.attrs["seq"] > best[0]):
                best = (int(g.attrs["seq"]), dict(zip(PARTIAL_ARRAYS, got),
                                                  images=int(g.attrs["images"])),
                        [int(s) for s in g.attrs["done"]])
        if best is None:
            return None
        self.seq = best[0] + 1
        return best[1], best[2]

    def due(self) -> bool:
        """Whether ``every`` seconds have passed since the last save (or the start)."""
        return time.monotonic() - self._last >= self.every

    def save(self, state: dict, done) -> None:
        """Store a Tally's ``state`` (:meth:`pipeline.tally.Tally.state_dict`) as the
        counts of the tiles starting at ``done``, in the slot not holding the newest."""
        g = self.layer.require_group(PARTIAL).create_group(
            "ab"[self.seq % 2], overwrite=True, attributes={"key": None})
        for name in PARTIAL_ARRAYS:
            _array(g, name, np.asarray(state[name], dtype=np.int64))
        _seal_node(g, {"key": self.key, "done": sorted(int(s) for s in done),
                       "images": int(state["images"]), "seq": self.seq}, PARTIAL_ARRAYS)
        self.seq += 1
        self._last = time.monotonic()

    def clear(self) -> None:
        """Remove the checkpoint (the cube is stored)."""
        if PARTIAL in self.layer:
            del self.layer[PARTIAL]
