"""The label cache's storage: its Zarr v3 layout, the chunk-by-chunk writer, the reader.

Scoring reads label tiles from here and never decodes a PNG again; decoding a dataset into
this layout is pipeline/label_decoding.py's job. Layout::

    LABELS.zarr/zarr.json     attrs: format, version, dataset {path, fingerprint, num_images,
                              seg_size}, categories, label_names, primary_category,
                              num_labels, num_slots, num_scalar_slots, chunk_images, complete
    planes         (N, P, sh, sw) uint16   canonical per-pixel label slots
                                           (cache/labelsets.py: distinct labels, descending,
                                           zero padded; labels that are also scalar labels of
                                           the image are left to the scalars)
    scalars        (N, S) int32            distinct scalar labels per image, zero padded
    present        (N, G) bool             image holds a label whose primary category is g
    chunk_label_pixels (C, L) int64        |L_c| summed over each image chunk
    label_pixels   (L,) int64              |L_c| over the dataset (laid out with the rest,
                                           written when complete)
    label_files    (N, 32) uint8           per image: stamp and digest of its label PNGs
                                           (pipeline/dataset_files.py), written with its
                                           chunk; absent in caches made before it
    done           (C,) uint8              1 once chunk c is fully written (resume bookkeeping)
    attrs-copy.json                        the root attrs as laid out and the digest of
                                           every array's zarr.json (cache/metadata.py):
                                           damaged metadata is named and restored by
                                           ``cache_labels.py --repair``

P = the largest number of PNG entries in one index.csv row (at least 1), S = the
largest number of scalar entries. Writing is resumable chunk by chunk: ``done`` is set
only after a chunk's data is written, and ``layout_ready`` (with the metadata digests and
the copy of the root attrs: cache/metadata.seal) only after every array exists (a half
set-up is laid out again). Every chunk carries a CRC32C (``cache/zarr_io.py``).

    open_for_build(path, fingerprint, overwrite)   the group to build into (refuses others)
    lay_out(path, meta, dims, chunk_images)        a new empty layout (mode "w")
    LabelCacheWriter(group, path)                  pending chunks, write(), finish()
    LabelCache.open(path)                          read access to a complete cache
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zarr
from zarr.codecs import Crc32cCodec

from cache import metadata
from cache.store import is_url, location, writing
from cache.zarr_io import (WRITE_CONFIG, read_flags, read_whole,
                           writable, zstd_codecs)

FORMAT = "netdissect-labels"
VERSION = 1


class LabelCacheError(RuntimeError):
    """A label cache is missing, incomplete or was built from another dataset."""


@dataclass
class LabelTile:
    """Labels of images [start, stop).

    planes:  (B, P, sh, sw) uint16 canonical label slots
    scalars: (B, S) int32 scalar labels, zero padded
    present: (B, G) bool category presence
    """
    start: int
    planes: np.ndarray
    scalars: np.ndarray
    present: np.ndarray


def default_label_cache_path(dataset) -> Path | str:
    """``$NETDISSECT_CACHE`` (default ``~/.cache/netdissect``)/labels-<fingerprint16>.zarr
    for a dataset (anything with ``fingerprint()``) or its fingerprint: keyed by the
    dataset's content, so a moved or copied dataset (or run) finds its cache.
    ``$NETDISSECT_CACHE`` may be an fsspec URL (then a URL string is returned)."""
    fp = dataset if isinstance(dataset, str) else dataset.fingerprint()
    root = os.environ.get("NETDISSECT_CACHE", str(Path.home() / ".cache" / "netdissect"))
    name = f"labels-{fp[:16]}.zarr"
    return f"{root.rstrip('/')}/{name}" if is_url(root) else Path(location(root)) / name


# ------------------------------------------------------------------ the cache
class LabelCache:
    """Read access to a complete label cache (see module docstring)."""

    def __init__(self, group: zarr.Group, path: str):
        self.group = group
        self.path = path
        a = dict(group.attrs)
        if a.get("format") != FORMAT:
            raise LabelCacheError(f"{path}: not a label cache (format={a.get('format')!r})")
        if not a.get("complete"):
            raise LabelCacheError(f"{path}: label cache is incomplete; rebuild it with "
                                  f"scripts/cache_labels.py (it resumes where it stopped)")
        self.attrs = a
        self.planes = group["planes"]
        self.scalars = group["scalars"]
        self.present = group["present"]
        try:
            self.label_pixels = np.asarray(read_whole(group["label_pixels"]),
                                           dtype=np.int64)                      # (L,)
        except Exception as e:                  # noqa: BLE001 - named below
            from cache.integrity import describe, label_fix, scan_array
            damage = scan_array(group["label_pixels"])
            if not damage:
                raise
            raise LabelCacheError(describe(damage, label_fix(path, a))) from e

    @classmethod
    def open(cls, path: str | os.PathLike) -> "LabelCache":
        """The complete cache at ``path``; LabelCacheError when there is none or it is
        incomplete, MetadataError (a RunError) naming damaged metadata and the repair."""
        path = str(location(path))
        if not metadata.exists(metadata.open_store(path)):
            raise LabelCacheError(f"{path}: no label cache here")
        from cache.integrity import check_label_metadata
        check_label_metadata(path)
        try:
            g = zarr.open_group(path, mode="r")
        except (FileNotFoundError, zarr.errors.GroupNotFoundError) as e:
            raise LabelCacheError(f"{path}: no label cache here ({e})") from e
        return cls(g, path)

    @property
    def num_images(self) -> int:
        return int(self.planes.shape[0])

    @property
    def seg_size(self) -> tuple[int, int]:
        return tuple(self.planes.shape[2:])

    @property
    def categories(self) -> list[str]:
        return list(self.attrs["categories"])

    @property
    def num_labels(self) -> int:
        return int(self.attrs["num_labels"])

    @property
    def primary_category(self) -> np.ndarray:
        """(L,) int64 primary category index per label number, -1 = none."""
        return np.asarray(self.attrs["primary_category"], dtype=np.int64)

    @property
    def label_names(self) -> list[str]:
        return list(self.attrs["label_names"])

    @property
    def fingerprint(self) -> str:
        return self.attrs["dataset"]["fingerprint"]

    @property
    def chunk_images(self) -> int:
        return int(self.planes.chunks[0])

    @property
    def has_file_records(self) -> bool:
        """False for caches made before ``label_files`` (changed PNGs go unnoticed)."""
        return "label_files" in self.group

    def file_records(self) -> np.ndarray:
        """(N, 32) uint8 label-file records (pipeline/dataset_files.py); LabelCacheError
        naming a chunk that is missing or damaged."""
        from cache.integrity import label_fix, read_named
        return read_named(self.group["label_files"], label_fix(self.path, self.attrs),
                          LabelCacheError)

    @property
    def content_key(self) -> str | None:
        """sha256 of the label PNGs' digests (None without records): stored cubes are
        keyed to it, so a re-decoded PNG makes them stale (as
        pipeline.dataset_files.content_key)."""
        if not self.has_file_records:
            return None
        return hashlib.sha256(self.file_records()[:, 16:].tobytes()).hexdigest()

    def label_pixels_upto(self, n: int) -> np.ndarray:
        """(L,) int64 |L_c| over images [0, n) (all of them: :attr:`label_pixels`)."""
        if n >= self.num_images:
            return self.label_pixels
        full = n // self.chunk_images
        out = self.group["chunk_label_pixels"][:full].sum(axis=0).astype(np.int64)
        start = full * self.chunk_images
        if start < n:
            t = self.read(start, n)
            sh, sw = self.seg_size
            out += np.bincount(t.planes.ravel(), minlength=self.num_labels)
            sc = t.scalars[t.scalars != 0]
            out += np.bincount(sc, minlength=self.num_labels) * (sh * sw)
            out[0] = 0
        return out

    def read(self, start: int, stop: int) -> LabelTile:
        """Labels of images [start, stop)."""
        return LabelTile(start, self.planes[start:stop], self.scalars[start:stop],
                         self.present[start:stop])

    def check_dataset(self, dataset) -> None:
        """Raise if this cache was not built from ``dataset`` (a BrodenDataset)."""
        fp = dataset.fingerprint()
        if fp != self.fingerprint:
            raise LabelCacheError(
                f"{self.path}: label cache was built from a dataset with fingerprint "
                f"{self.fingerprint[:16]}, but {dataset.directory} has {fp[:16]}; rebuild it "
                f"(scripts/cache_labels.py --rebuild) or point at the right cache")


# ---------------------------------------------------------------- the writer
def open_for_build(path: str, fingerprint: str, overwrite: bool) -> zarr.Group:
    """The group at ``path`` to build a cache of dataset ``fingerprint`` into: created
    if absent, emptied with ``overwrite``; another format or dataset is refused. A layout
    that a kill cut short (no ``layout_ready``, whatever attributes it got) holds no data
    and is laid out again by the caller, whichever dataset it was begun for."""
    with writing(path):         # a full disk or read-only filesystem names the cache
        g = zarr.open_group(path, mode="w" if overwrite else "a")
    if overwrite:
        return zarr.open_group(path, mode="w")
    if metadata.exists(metadata.open_store(path)):
        from cache.integrity import check_label_metadata
        check_label_metadata(path)      # MetadataError naming the file and --repair
    g = zarr.open_group(path, mode="a")
    a = dict(g.attrs)
    if a and a.get("format") != FORMAT:
        raise LabelCacheError(f"{path}: exists and is not a label cache; choose another path")
    if a.get("layout_ready") and a["dataset"]["fingerprint"] != fingerprint:
        raise LabelCacheError(
            f"{path} holds the label cache of another dataset ({a['dataset'].get('path')}, "
            f"fingerprint {a['dataset']['fingerprint'][:16]}; this one's is "
            f"{fingerprint[:16]}): give another path (score.py --label-cache, "
            f"cache_labels.py --out), or rebuild it for this dataset with "
            f"`scripts/cache_labels.py --dataset DATASET --out {path} --rebuild`")
    return g


def lay_out(path: str, meta: dict, dims: tuple[int, int, int, int, int], chunk_images: int
            ) -> zarr.Group:
    """A new, empty cache at ``path`` (whatever was there is replaced).

    meta: {dataset: {path, fingerprint, num_images, seg_size}, categories, label_names,
    primary_category}; dims: (N, P, S, sh, sw). ``layout_ready`` is written last."""
    with writing(path):         # a full disk or read-only filesystem names the cache
        return _lay_out(path, meta, dims, chunk_images)


def _lay_out(path: str, meta: dict, dims: tuple[int, int, int, int, int],
             chunk_images: int) -> zarr.Group:
    N, P, S, sh, sw = dims
    G, L = len(meta["categories"]), len(meta["label_names"])
    C = -(-N // chunk_images)
    g = zarr.open_group(path, mode="w", attributes={    # zarr.json written once, whole
        "format": FORMAT, "version": VERSION, "complete": False,
        "dataset": meta["dataset"],
        "categories": list(meta["categories"]),
        "label_names": list(meta["label_names"]),
        "primary_category": [int(v) for v in meta["primary_category"]],
        "num_labels": L, "num_slots": P, "num_scalar_slots": S,
        "chunk_images": chunk_images,
    })
    zstd = zstd_codecs()
    cfg = WRITE_CONFIG
    g.create_array("planes", shape=(N, P, sh, sw), chunks=(chunk_images, P, sh, sw),
                   dtype="uint16", compressors=zstd, fill_value=0, config=cfg)
    g.create_array("scalars", shape=(N, S), chunks=(chunk_images, S), dtype="int32",
                   compressors=zstd, fill_value=0, config=cfg)
    g.create_array("present", shape=(N, G), chunks=(chunk_images, G), dtype="bool",
                   compressors=zstd, fill_value=False, config=cfg)
    g.create_array("chunk_label_pixels", shape=(C, L), chunks=(1, L), dtype="int64",
                   compressors=zstd, fill_value=0, config=cfg)
    g.create_array("label_files", shape=(N, 32), chunks=(chunk_images, 32), dtype="uint8",
                   compressors=zstd, fill_value=0, config=cfg)
    g.create_array("done", shape=(C,), chunks=(1,), dtype="uint8", fill_value=0, config=cfg,
                   compressors=[Crc32cCodec()])
    g.create_array("label_pixels", shape=(L,), chunks=(L,), dtype="int64", compressors=zstd,
                   fill_value=0, config=cfg)
    metadata.seal(g, "layout_ready")     # written last: a half set-up is redone
    return g


def layout_metadata(attrs: dict) -> dict[str, bytes]:
    """{store key: bytes} of every zarr.json of a label cache whose sealed root attrs are
    ``attrs`` (its copy, cache/metadata.py), laid out again in memory."""
    dims = (int(attrs["dataset"]["num_images"]), int(attrs["num_slots"]),
            int(attrs["num_scalar_slots"]), *(int(v) for v in attrs["dataset"]["seg_size"]))
    return metadata.layout_bytes(
        lambda mem: lay_out(mem, attrs, dims, int(attrs["chunk_images"])), attrs)


class LabelCacheWriter:
    """Writes the image chunks of a laid-out cache; ``finish`` marks it complete."""

    ARRAYS = ("planes", "scalars", "present", "chunk_label_pixels", "label_files", "done")

    def __init__(self, group: zarr.Group, path: str):
        self.group = group
        self.path = path
        self.chunk_images = int(group.attrs["chunk_images"])
        self.num_images = int(group["planes"].shape[0])
        self.arrays = {n: writable(group[n]) for n in self.ARRAYS}

    def pending(self) -> list[tuple[int, int]]:
        """Images [start, stop) of every chunk not yet marked done."""
        done = read_flags(self.group["done"])
        B, N = self.chunk_images, self.num_images
        return [(c * B, min((c + 1) * B, N)) for c in range(-(-N // B)) if not done[c]]

    def write(self, start: int, planes: np.ndarray, scalars: np.ndarray,
              present: np.ndarray, counts: np.ndarray, files: np.ndarray) -> None:
        """Write the chunk starting at image ``start``: planes (B, P, sh, sw) uint16,
        scalars (B, S) int32, present (B, G) bool, counts (L,) int64 = its |L_c|, files
        (B, 32) uint8 = its label-file records; then mark it done. A failed write (e.g.
        a full disk) raises LabelCacheError."""
        stop = start + planes.shape[0]
        c = start // self.chunk_images
        arrays = self.arrays
        try:
            arrays["planes"][start:stop] = planes
            arrays["scalars"][start:stop] = scalars
            arrays["present"][start:stop] = present
            arrays["chunk_label_pixels"][c] = counts
            arrays["label_files"][start:stop] = files
            arrays["done"][c] = 1             # only after the chunk's data is written
        except OSError as e:
            raise LabelCacheError(
                f"{self.path}: writing label chunk {c} (images {start}-{stop - 1}) failed "
                f"({e}); finished chunks are kept: fix the cause (e.g. free disk space) "
                f"and rerun the same command to resume") from e

    def finish(self) -> LabelCache:
        """Write label_pixels (the sum over chunks), mark the cache complete, open it."""
        g = self.group
        total = g["chunk_label_pixels"][:].sum(axis=0)
        with writing(f"{self.path}/label_pixels"):
            if "label_pixels" in g:                 # laid out with the rest
                writable(g["label_pixels"])[:] = total
            else:                                   # a layout begun before it was
                g.create_array("label_pixels", data=total, chunks=total.shape,
                               compressors=zstd_codecs(), overwrite=True)
        with writing(f"{self.path}/zarr.json"):
            g.attrs["complete"] = True
        return LabelCache(g, self.path)
