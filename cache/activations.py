"""Activation arrays of a run: creating a run, block writes, resume bookkeeping.

See ``cache/store.py`` for the whole run layout. Per layer (node = ``layer_node(name)``)::

    layers/<node>/activations  (N, K, h, w) float16|float32  chunks (n, k, h, w), lz4|zstd
    layers/<node>/maxima       (N, K) float32                chunks (B, K)
    progress                   (num_blocks,) uint8           chunks (1,)
    image_files                (N, 32) uint8                 chunks (B, 32): per image, the
                               stamp and digest of its file (pipeline/dataset_files.py),
                               written with its block (extracted runs made since it exist)

Every stored chunk ends with a CRC32C of its bytes (``codecs``), so corruption is
detected on read rather than returned as wrong numbers.

Images are processed in blocks of B = ``block_images`` images: block b holds images
[b*B, min((b+1)*B, N)). n divides B, so every chunk lies inside one block and two
blocks never write the same chunk. A block's ``progress`` entry is set only after all
its arrays are written, so a kill at any moment loses at most the unfinished blocks,
which are rewritten whole on resume. All writes use ``write_empty_chunks=True`` (a
dead unit's all-zero chunk is still written, so a block is always complete on disk);
zarr keeps that setting only at runtime, so :class:`BlockWriter` sets it when it opens
the arrays.

A new run is made in one place, :func:`create_run` (extraction, rotated runs and synthetic
runs alike): the root attributes of :func:`run_attrs` in one write of ``zarr.json``, then
every layer's arrays and ``progress``, then ``layout_complete``. Readers
(``activations``, ``maxima``, ``layer_names``, ``check_complete``, ...) are in
``cache/store.py``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from cache import metadata
from cache.store import (RUN_FORMAT, RUN_VERSION, clear_run_dir, layer_node, store_location,
                         writing)
from cache.zarr_io import WRITE_CONFIG, codecs, writable

TARGET_CHUNK_BYTES = 2 << 20     # ~2 MB raw per activation chunk


def chunk_shape(K: int, h: int, w: int, itemsize: int, block: int,
                target_bytes: int = TARGET_CHUNK_BYTES) -> tuple[int, int, int, int]:
    """Chunk (n, k, h, w) of an (N, K, h, w) array: n divides ``block``; k is K if a
    chunk of all units fits ``target_bytes``, else a power of two that fits."""
    per_map = h * w * itemsize
    n = block
    while n > 1 and n * per_map > target_bytes:        # huge maps: fewer images
        n = max(d for d in range(1, n) if block % d == 0)
    k_fit = max(1, target_bytes // (n * per_map))
    if k_fit >= K:
        k = K
    else:
        k = 1 << (int(k_fit).bit_length() - 1)         # power of two <= k_fit
    return (n, k, h, w)


def num_blocks(num_images: int, block: int) -> int:
    return -(-num_images // block)


def block_range(b: int, block: int, num_images: int) -> tuple[int, int]:
    """Images [start, stop) of block b."""
    return b * block, min((b + 1) * block, num_images)


def create_layer_arrays(group: zarr.Group, name: str, shape: tuple[int, int, int],
                        num_images: int, block: int, dtype: str, compression: str = "lz4"
                        ) -> None:
    """Create (overwriting) ``layers/<node>/{activations, maxima}`` for one layer."""
    K, h, w = shape
    node = group.require_group("layers").require_group(layer_node(name))
    node.attrs.update({"layer": name, "shape": [K, h, w]})
    node.create_array("activations", shape=(num_images, K, h, w),
                      chunks=chunk_shape(K, h, w, np.dtype(dtype).itemsize, block),
                      dtype=dtype, compressors=codecs(compression), fill_value=0,
                      config=WRITE_CONFIG, overwrite=True,
                      attributes={"layer": name, "axes": ["image", "unit", "y", "x"]})
    node.create_array("maxima", shape=(num_images, K), chunks=(block, K), dtype="float32",
                      compressors=codecs(compression), fill_value=0, config=WRITE_CONFIG,
                      overwrite=True, attributes={"layer": name, "axes": ["image", "unit"]})


def create_progress(group: zarr.Group, num_images: int, block: int) -> None:
    group.create_array("progress", shape=(num_blocks(num_images, block),), chunks=(1,),
                       dtype="uint8", compressors=codecs("none"), fill_value=0,
                       config=WRITE_CONFIG,
                       overwrite=True, attributes={"block_images": block})


class BlockWriter:
    """Writes whole blocks of a run; opens each array once (zarr.json is not re-read)."""

    def __init__(self, group: zarr.Group, layers: list[str]):
        self.block = int(group.attrs["block_images"])
        self.num_images = int(group.attrs["dataset"]["num_images"])
        self.arrays = {n: (writable(group[f"layers/{layer_node(n)}/activations"]),
                           writable(group[f"layers/{layer_node(n)}/maxima"]))
                       for n in layers}
        self.progress = writable(group["progress"])
        self.files = writable(group["image_files"]) if "image_files" in group else None

    def write(self, b: int, acts: dict[str, np.ndarray], maxima: dict[str, np.ndarray],
              files: np.ndarray | None = None) -> None:
        """Write block b: acts[name] (n, K, h, w), maxima[name] (n, K) float32 with
        n = the block's image count, files (n, 32) uint8 its image records (runs with
        ``image_files``); then set its progress entry."""
        start, stop = block_range(b, self.block, self.num_images)
        for name, a in acts.items():
            if a.shape[0] != stop - start:
                raise ValueError(f"block {b} of layer {name!r}: {a.shape[0]} images, "
                                 f"expected {stop - start}")
            arr, mx = self.arrays[name]
            with writing(store_location(arr.store, arr.path)):
                arr[start:stop] = a
            with writing(store_location(mx.store, mx.path)):
                mx[start:stop] = maxima[name]
        if self.files is not None:
            if files is None:
                raise ValueError(f"block {b}: the run records image files; pass them")
            with writing(store_location(self.files.store, self.files.path)):
                self.files[start:stop] = files
        with writing(store_location(self.progress.store, self.progress.path)):
            self.progress[b] = 1


def run_attrs(*, dataset: dict, model: dict, layer_shapes: dict[str, tuple[int, int, int]],
              dtype: str, preprocessing: dict | None = None, versions: dict | None = None,
              **extra: Any) -> dict:
    """The root attributes of a run (layout in ``cache/store.py``), as plain JSON.

    dataset: {path, fingerprint, num_images, image_size, seg_size}; model: {spec,
    weights, fingerprint}; layer_shapes: {layer: (K, h, w)} in the run's layer order;
    ``extra``: more root keys (``source`` and ``transform`` of a derived run, ...).
    ``block_images``, ``compression`` and ``layout_complete`` are added by create_run.
    """
    layers = list(layer_shapes)
    attrs = {
        "format": RUN_FORMAT, "version": RUN_VERSION,
        "dataset": dataset, "model": model,
        "preprocessing": preprocessing or {},
        "layers": layers, "dtype": str(dtype),
        "layer_nodes": {n: layer_node(n) for n in layers},
        "layer_shapes": {n: [int(v) for v in s] for n, s in layer_shapes.items()},
        "versions": versions or {}, **extra,
    }
    return plain_json(attrs)


def create_run(out: str | os.PathLike, attrs: dict, block: int, compression: str = "lz4",
               image_files: bool = False) -> zarr.Group:
    """Clear ``out`` (cache.store.clear_run_dir: the lock file stays, a directory that
    is not a run is refused) and lay out an empty run: ``attrs`` (from run_attrs) plus
    block_images and compression in one write of zarr.json, every layer's arrays for
    ``attrs["dataset"]["num_images"]`` images, ``progress`` (and ``image_files``: runs
    extracted from image files, recorded as the root attr ``image_files``), then the seal
    (cache/metadata.py: the digests of every node's metadata and the copy of the root
    attrs, written with layout_complete)."""
    clear_run_dir(out)
    attrs = dict(attrs, block_images=int(block), compression=compression,
                 layout_complete=False)
    if image_files:
        attrs["image_files"] = True
    with writing(out):          # a full disk or read-only filesystem names the run
        # one write of zarr.json with all attrs; never mode="w": it would delete .lock
        group = zarr.open_group(Path(out), mode="a", attributes=attrs)
        _lay_out(group, attrs)
        metadata.seal(group, "layout_complete")
    return group


def _lay_out(group: zarr.Group, attrs: dict) -> None:
    """Every layer's arrays, ``progress`` and (root attr ``image_files``) the image
    records of a run with root attrs ``attrs``."""
    N, block = int(attrs["dataset"]["num_images"]), int(attrs["block_images"])
    for name, shape in attrs["layer_shapes"].items():
        create_layer_arrays(group, name, tuple(shape), N, block, attrs["dtype"],
                            attrs["compression"])
    create_progress(group, N, block)
    if attrs.get("image_files"):
        group.create_array("image_files", shape=(N, 32), chunks=(block, 32), dtype="uint8",
                           compressors=codecs("zstd"), fill_value=0, config=WRITE_CONFIG,
                           overwrite=True)


def layout_metadata(attrs: dict) -> dict[str, bytes]:
    """{store key: bytes} of every zarr.json of a run whose sealed root attrs are
    ``attrs`` (the run's copy, cache/metadata.py), laid out again in memory."""
    return metadata.layout_bytes(lambda mem: _lay_out(zarr.open_group(mem, mode="w"), attrs),
                                 attrs)


def plain_json(value: Any) -> Any:
    """``value`` with numpy scalars and tuples made plain JSON (zarr attrs need it)."""
    if isinstance(value, dict):
        return {str(k): plain_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_json(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value
