"""Activation arrays of a run: creation, block writes, resume bookkeeping, readers.

See ``cache/store.py`` for the whole run layout. Per layer (node = ``layer_node(name)``)::

    layers/<node>/activations  (N, K, h, w) float16|float32  chunks (n, k, h, w), lz4|zstd
    layers/<node>/maxima       (N, K) float32                chunks (B, K)
    progress                   (num_blocks,) uint8           chunks (1,)

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

Readers (``activations``, ``maxima``, ``layer_names``, ``check_complete``, ...) live in
``cache/store.py`` and are re-exported here; they take a run path or a ``zarr.Group``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import zarr
from zarr.codecs import BloscCodec, Crc32cCodec, ZstdCodec

from cache.store import (activations, check_complete, check_layer, is_complete,  # noqa: F401
                         layer_group, layer_names, layer_node, maxima, progress,
                         read_progress)

TARGET_CHUNK_BYTES = 2 << 20     # ~2 MB raw per activation chunk
ARRAY_CONFIG = {"write_empty_chunks": True}
# Measured on float16 post-ReLU maps of the demo CNN (about half zeros), one core:
#   lz4  (Blosc lz4, clevel 5, no shuffle): 1.67x smaller, ~630 MB/s encode, ~2.8 GB/s decode
#   zstd (Zstd level 3):                    2.10x smaller, ~150 MB/s encode, ~0.6 GB/s decode
#   none:                                   1x, only a copy and the file write
COMPRESSIONS = ("lz4", "zstd", "none")


def compressor(name: str = "lz4"):
    """The zarr v3 codec of a compression preset (see COMPRESSIONS); None = raw."""
    if name == "lz4":
        return BloscCodec(cname="lz4", clevel=5, shuffle="noshuffle")
    if name == "zstd":
        return ZstdCodec(level=3, checksum=True)
    if name == "none":
        return None
    raise ValueError(f"compression must be one of {COMPRESSIONS}, got {name!r}")


def codecs(name: str = "lz4") -> list:
    """The bytes-to-bytes codecs of a preset followed by a CRC32C checksum of the
    stored chunk: a flipped or truncated byte fails the read with a checksum error
    (``cache/integrity.py`` names the chunk; ``extract.py --repair`` rewrites it)."""
    c = compressor(name)
    return ([c] if c is not None else []) + [Crc32cCodec()]


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
                      config=ARRAY_CONFIG, overwrite=True,
                      attributes={"layer": name, "axes": ["image", "unit", "y", "x"]})
    node.create_array("maxima", shape=(num_images, K), chunks=(block, K), dtype="float32",
                      compressors=codecs(compression), fill_value=0, config=ARRAY_CONFIG,
                      overwrite=True, attributes={"layer": name, "axes": ["image", "unit"]})


def create_progress(group: zarr.Group, num_images: int, block: int) -> None:
    group.create_array("progress", shape=(num_blocks(num_images, block),), chunks=(1,),
                       dtype="uint8", compressors=codecs("none"), fill_value=0,
                       config=ARRAY_CONFIG,
                       overwrite=True, attributes={"block_images": block})


def _writable(arr: zarr.Array) -> zarr.Array:
    """``write_empty_chunks`` is a runtime setting that zarr does not store: an array
    opened from disk has it off (all-zero chunks deleted, plus a costly all-equal test
    of every chunk), so writers reopen arrays with it on."""
    return arr.with_config({"write_empty_chunks": True})


class BlockWriter:
    """Writes whole blocks of a run; opens each array once (zarr.json is not re-read)."""

    def __init__(self, group: zarr.Group, layers: list[str]):
        self.block = int(group.attrs["block_images"])
        self.num_images = int(group.attrs["dataset"]["num_images"])
        self.arrays = {n: (_writable(group[f"layers/{layer_node(n)}/activations"]),
                           _writable(group[f"layers/{layer_node(n)}/maxima"]))
                       for n in layers}
        self.progress = _writable(group["progress"])

    def write(self, b: int, acts: dict[str, np.ndarray], maxima: dict[str, np.ndarray]
              ) -> None:
        """Write block b: acts[name] (n, K, h, w), maxima[name] (n, K) float32 with
        n = the block's image count; then set its progress entry."""
        start, stop = block_range(b, self.block, self.num_images)
        for name, a in acts.items():
            if a.shape[0] != stop - start:
                raise ValueError(f"block {b} of layer {name!r}: {a.shape[0]} images, "
                                 f"expected {stop - start}")
            arr, mx = self.arrays[name]
            arr[start:stop] = a
            mx[start:stop] = maxima[name]
        self.progress[b] = 1


# ----------------------------------------------------------------------- readers
# (defined in cache/store.py with the layout; re-exported here)
@dataclass(frozen=True)
class LayerInfo:
    """Shape facts of one cached layer: N images, K units, h x w maps."""
    name: str
    num_images: int
    units: int
    height: int
    width: int
    dtype: str


def layer_info(run, layer: str) -> LayerInfo:
    a = activations(run, layer)
    N, K, h, w = a.shape
    return LayerInfo(layer, N, K, h, w, str(a.dtype))
