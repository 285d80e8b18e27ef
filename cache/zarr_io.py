"""How this project's Zarr arrays are encoded and written: codecs, write settings, flags.

- ``codecs(name)``: the bytes-to-bytes codecs of a compression preset (``COMPRESSIONS``)
  followed by a CRC32C of the stored chunk, so a flipped or truncated byte fails the read
  (``cache/integrity.py`` names the chunk). Every array of a run, a label cache and a cube
  is encoded with one of these lists.
- ``WRITE_CONFIG`` / ``writable(arr)``: ``write_empty_chunks=True``. Zarr keeps that setting
  only at runtime, so an array reopened from disk has it off (all-zero chunks would be
  deleted, and every chunk tested for being all-equal); writers reopen arrays with it on,
  so every chunk of a finished block exists on disk and a missing one is damage.
- ``read_flags(arr)``: a (C,) uint8 resume-flag array (a run's ``progress``, a label
  cache's ``done``) read tolerantly: a flag that a kill left unreadable reads as 0, so its
  chunk is redone.
- ``absent_chunks(arr)`` / ``read_whole(arr)``: zarr reads a chunk that is not on disk as
  its fill value, silently. Every chunk of this project's arrays is written, so an absent
  one is damage: ``absent_chunks`` finds them with one listing of the array's keys, and
  ``read_whole`` refuses to read an array that lacks one (MissingChunks).
"""
from __future__ import annotations

import numpy as np
import zarr
from zarr.codecs import BloscCodec, Crc32cCodec, ZstdCodec
from zarr.core.sync import sync

WRITE_CONFIG = {"write_empty_chunks": True}
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


def zstd_codecs() -> list:
    """Zstd level 3 then a CRC32C: label caches and cubes (integers, written once)."""
    return [ZstdCodec(level=3), Crc32cCodec()]


def writable(arr: zarr.Array) -> zarr.Array:
    """``arr`` reopened with ``write_empty_chunks`` on (module docstring)."""
    return arr.with_config(WRITE_CONFIG)


def read_flags(arr: zarr.Array) -> np.ndarray:
    """(C,) uint8 flags; a flag a kill left unreadable reads as 0 (its chunk is redone)."""
    try:
        return np.asarray(arr[:])
    except Exception:                           # noqa: BLE001
        out = np.zeros(arr.shape[0], dtype=np.uint8)
        for c in range(arr.shape[0]):
            try:
                out[c] = arr[c]
            except Exception:                   # noqa: BLE001
                out[c] = 0
        return out


def clear_flags(arr: zarr.Array, indices) -> None:
    """Set flags ``indices`` of ``arr`` to 0 (their chunks are redone by the next resume)."""
    arr = writable(arr)
    for i in indices:
        arr[i] = 0


class MissingChunks(ValueError):
    """An array lacks chunks on disk (zarr would read them as the fill value)."""

    def __init__(self, arr: zarr.Array, chunks: list[tuple[int, ...]]):
        self.array, self.chunks = arr.path, chunks
        super().__init__(f"{arr.path}: {len(chunks)} chunk(s) missing on disk, first "
                         f"{chunks[:3]}")


async def _keys(store, prefix: str) -> set[str]:
    return {k async for k in store.list_prefix(prefix)}


def chunk_key(arr: zarr.Array, coords: tuple[int, ...]) -> str:
    """The store key of chunk ``coords`` of ``arr``."""
    return f"{arr.path}/{arr.metadata.encode_chunk_key(coords)}".lstrip("/")


def absent_chunks(arr: zarr.Array) -> list[tuple[int, ...]]:
    """Chunk coordinates of ``arr`` not in its store, from one listing of its keys."""
    listed = sync(_keys(arr.store, f"{arr.path}/".lstrip("/")))
    return [c for c in (tuple(int(v) for v in i) for i in np.ndindex(*arr._chunk_grid_shape))
            if chunk_key(arr, c) not in listed]


def read_whole(arr: zarr.Array) -> np.ndarray:
    """``arr[:]``, refused with MissingChunks when a chunk is absent on disk."""
    missing = absent_chunks(arr)
    if missing:
        raise MissingChunks(arr, missing)
    return arr[:]
