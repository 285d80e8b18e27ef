"""The label cache: every image's labels decoded once into a Zarr v3 group.

Scoring reads label tiles from here and never decodes a PNG again. Layout::

    LABELS.zarr/zarr.json     attrs: format, version, dataset {path, fingerprint, num_images,
                              seg_size}, categories, label_names, primary_category,
                              num_labels, num_slots, num_scalar_slots, chunk_images, complete
    planes         (N, P, sh, sw) uint16   canonical per-pixel label slots
                                           (pipeline/labelsets.py: distinct labels, descending,
                                           zero padded; labels that are also scalar labels of
                                           the image are left to the scalars)
    scalars        (N, S) int32            distinct scalar labels per image, zero padded
    present        (N, G) bool             image holds a label whose primary category is g
    chunk_label_pixels (C, L) int64        |L_c| summed over each image chunk
    label_pixels   (L,) int64              |L_c| over the dataset (written when complete)
    done           (C,) uint8              1 once chunk c is fully written (resume bookkeeping)

P = the largest number of PNG entries in one index.csv row (at least 1), S = the
largest number of scalar entries. Building is resumable chunk by chunk (a killed
build continues where it stopped) and uses worker processes for decoding.
"""
from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import zarr
from tqdm import tqdm
from zarr.codecs import ZstdCodec

from pipeline.broden import BrodenDataset, BrodenError
from pipeline.labelsets import canonical_planes, canonical_scalars

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


def default_label_cache_path(dataset: BrodenDataset) -> Path:
    """``$NETDISSECT_CACHE`` (default ``~/.cache/netdissect``)/labels-<fingerprint16>.zarr"""
    root = Path(os.environ.get("NETDISSECT_CACHE", Path.home() / ".cache" / "netdissect"))
    return root / f"labels-{dataset.fingerprint()[:16]}.zarr"


def _slot_counts(dataset: BrodenDataset) -> tuple[int, int]:
    """(P, S): most PNG entries and most scalar entries in one row."""
    P = S = 0
    for r in dataset.rows:
        n_png = sum(1 for cells in r.cells.values() for e in cells if isinstance(e, str))
        n_sc = sum(1 for cells in r.cells.values() for e in cells if isinstance(e, int))
        P, S = max(P, n_png), max(S, n_sc)
    return max(P, 1), max(S, 1)


# ---------------------------------------------------------------- worker side
_WORKER_DATASET: BrodenDataset | None = None


def _init_worker(directory: str) -> None:
    global _WORKER_DATASET
    _WORKER_DATASET = BrodenDataset(directory)


def decode_range(dataset: BrodenDataset, start: int, stop: int, P: int, S: int
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Decode images [start, stop) into (planes, scalars, present, label_pixels (L,) int64)."""
    sh, sw = dataset.segmentation_size()
    B = stop - start
    planes = np.zeros((B, P, sh, sw), dtype=np.uint16)
    scalars = np.zeros((B, S), dtype=np.int32)
    present = np.zeros((B, len(dataset.all_categories)), dtype=bool)
    counts = np.zeros(dataset.num_labels, dtype=np.int64)
    for b, i in enumerate(range(start, stop)):
        lab = dataset.load_labels(i)
        scalars[b] = canonical_scalars(lab.scalars, S)
        planes[b] = canonical_planes(lab.planes, lab.scalars, P)
        present[b] = dataset.categories_present(lab)
        counts += np.bincount(planes[b].ravel(), minlength=dataset.num_labels)
        counts[scalars[b][scalars[b] != 0]] += sh * sw
    counts[0] = 0
    return planes, scalars, present, counts


def _decode_chunk(args: tuple[int, int, int, int]):
    start, stop, P, S = args
    assert _WORKER_DATASET is not None
    return start, decode_range(_WORKER_DATASET, start, stop, P, S)


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
                                  f"build_label_cache (it resumes where it stopped)")
        self.attrs = a
        self.planes = group["planes"]
        self.scalars = group["scalars"]
        self.present = group["present"]
        self.label_pixels = np.asarray(group["label_pixels"][:], dtype=np.int64)  # (L,)

    @classmethod
    def open(cls, path: str | os.PathLike) -> "LabelCache":
        path = str(path)
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

    def tiles(self, tile_images: int | None = None, limit: int | None = None
              ) -> Iterator[LabelTile]:
        """Consecutive tiles of ``tile_images`` images (default: one chunk) up to ``limit``."""
        n = self.num_images if limit is None else min(limit, self.num_images)
        step = tile_images or self.chunk_images
        for s in range(0, n, step):
            yield self.read(s, min(s + step, n))

    def check_dataset(self, dataset: BrodenDataset) -> None:
        """Raise if this cache was not built from ``dataset``."""
        fp = dataset.fingerprint()
        if fp != self.fingerprint:
            raise LabelCacheError(
                f"{self.path}: label cache was built from a dataset with fingerprint "
                f"{self.fingerprint[:16]}, but {dataset.directory} has {fp[:16]}; rebuild it "
                f"(build_label_cache(..., overwrite=True)) or point at the right cache")


def build_label_cache(dataset: BrodenDataset, path: str | os.PathLike | None = None, *,
                      chunk_images: int = 256, workers: int | None = None,
                      overwrite: bool = False, progress: bool = True) -> LabelCache:
    """Decode every image of ``dataset`` into a label cache at ``path`` and return it.

    Resumes an interrupted build of the same dataset; a complete cache is returned
    as is. A cache of another dataset at ``path`` is refused unless ``overwrite``.
    All categories are cached, whatever subset ``dataset`` selected.
    """
    if dataset.categories != dataset.all_categories:
        dataset = BrodenDataset(dataset.directory)
    path = str(path or default_label_cache_path(dataset))
    fp = dataset.fingerprint()
    N = len(dataset)
    if N == 0:
        raise BrodenError(f"{dataset.directory / 'index.csv'}: has no image rows")
    sh, sw = dataset.segmentation_size()
    P, S = _slot_counts(dataset)
    L = dataset.num_labels
    C = -(-N // chunk_images)

    g = _open_or_create(path, fp, overwrite)
    if g.attrs.get("complete"):
        return LabelCache(g, path)
    if g.attrs.get("layout_ready"):
        chunk_images = int(g.attrs["chunk_images"])     # resume with the layout on disk
        C = -(-N // chunk_images)
    else:
        g = zarr.open_group(path, mode="w")              # nothing or a half set-up: start over
        _create_layout(g, dataset, fp, (N, P, S, sh, sw), chunk_images)
    done = g["done"][:]
    todo = [(c * chunk_images, min((c + 1) * chunk_images, N), P, S)
            for c in range(C) if not done[c]]
    bar = tqdm(total=N, initial=N - sum(b - a for a, b, _, _ in todo), unit="img",
               desc="label cache", disable=not progress, dynamic_ncols=True)

    def store(start: int, result) -> None:
        planes, scalars, present, counts = result
        stop = start + planes.shape[0]
        c = start // chunk_images
        g["planes"][start:stop] = planes
        g["scalars"][start:stop] = scalars
        g["present"][start:stop] = present
        g["chunk_label_pixels"][c] = counts
        g["done"][c] = 1                      # only after the chunk's data is written
        bar.update(stop - start)

    workers = workers if workers is not None else min(os.cpu_count() or 1, 8)
    try:
        if workers <= 1 or len(todo) <= 1:
            for start, stop, p, s in todo:
                store(start, decode_range(dataset, start, stop, p, s))
        else:
            with ProcessPoolExecutor(workers, initializer=_init_worker,
                                     initargs=(str(dataset.directory),)) as pool:
                for start, result in _bounded_map(pool, _decode_chunk, todo, 2 * workers):
                    store(start, result)
    finally:
        bar.close()
    g.create_array("label_pixels", data=g["chunk_label_pixels"][:].sum(axis=0),
                   chunks=(L,), overwrite=True)
    g.attrs["complete"] = True
    return LabelCache(g, path)


def _create_layout(g: zarr.Group, dataset: BrodenDataset, fp: str,
                   dims: tuple[int, int, int, int, int], chunk_images: int) -> None:
    N, P, S, sh, sw = dims
    G, L = len(dataset.all_categories), dataset.num_labels
    C = -(-N // chunk_images)
    g.attrs.update({
        "format": FORMAT, "version": VERSION, "complete": False,
        "dataset": {"path": str(dataset.directory.resolve()), "fingerprint": fp,
                    "num_images": N, "seg_size": [sh, sw]},
        "categories": dataset.all_categories,
        "label_names": dataset.label_names,
        "primary_category": [int(v) for v in dataset.primary_category],
        "num_labels": L, "num_slots": P, "num_scalar_slots": S,
        "chunk_images": chunk_images,
    })
    zstd = ZstdCodec(level=3)
    cfg = {"write_empty_chunks": True}
    g.create_array("planes", shape=(N, P, sh, sw), chunks=(chunk_images, P, sh, sw),
                   dtype="uint16", compressors=zstd, fill_value=0, config=cfg)
    g.create_array("scalars", shape=(N, S), chunks=(chunk_images, S), dtype="int32",
                   compressors=zstd, fill_value=0, config=cfg)
    g.create_array("present", shape=(N, G), chunks=(chunk_images, G), dtype="bool",
                   compressors=zstd, fill_value=False, config=cfg)
    g.create_array("chunk_label_pixels", shape=(C, L), chunks=(1, L), dtype="int64",
                   compressors=zstd, fill_value=0, config=cfg)
    g.create_array("done", shape=(C,), chunks=(1,), dtype="uint8", fill_value=0, config=cfg)
    g.attrs["layout_ready"] = True       # written last: a half set-up is redone


def _bounded_map(pool, fn, items, depth: int):
    """pool.map in order, with at most ``depth`` tasks in flight (bounded memory)."""
    items = iter(items)
    pending = []
    for it in items:
        pending.append(pool.submit(fn, it))
        if len(pending) >= depth:
            break
    while pending:
        yield pending.pop(0).result()
        nxt = next(items, None)
        if nxt is not None:
            pending.append(pool.submit(fn, nxt))


def _open_or_create(path: str, fingerprint: str, overwrite: bool) -> zarr.Group:
    if overwrite:
        return zarr.open_group(path, mode="w")
    g = zarr.open_group(path, mode="a")
    a = dict(g.attrs)
    if a and a.get("format") != FORMAT:
        raise LabelCacheError(f"{path}: exists and is not a label cache; choose another path")
    if a and a["dataset"]["fingerprint"] != fingerprint:
        raise LabelCacheError(
            f"{path}: label cache of another dataset (fingerprint "
            f"{a['dataset']['fingerprint'][:16]} != {fingerprint[:16]}); pass overwrite=True "
            f"(--rebuild-labels) to rebuild it, or use another path")
    return g
