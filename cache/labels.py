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
build continues where it stopped) and uses worker processes for decoding. Every
chunk carries a CRC32C; ``repair=True`` re-decodes only the chunks that fail it
(``cache/integrity.py``). A local build holds ``LABELS.zarr.lock`` (a second builder
of the same cache is refused); the cache may also live at an fsspec URL (no lock).
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
from zarr.codecs import Crc32cCodec, ZstdCodec

from cache.store import RunLock, is_url, location
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


def default_label_cache_path(dataset: "BrodenDataset | str") -> Path | str:
    """``$NETDISSECT_CACHE`` (default ``~/.cache/netdissect``)/labels-<fingerprint16>.zarr
    for a dataset or its fingerprint: keyed by the dataset's content, so a moved or
    copied dataset (or run) finds its cache. ``$NETDISSECT_CACHE`` may be an fsspec URL
    (then a URL string is returned)."""
    fp = dataset if isinstance(dataset, str) else dataset.fingerprint()
    root = os.environ.get("NETDISSECT_CACHE", str(Path.home() / ".cache" / "netdissect"))
    name = f"labels-{fp[:16]}.zarr"
    return f"{root.rstrip('/')}/{name}" if is_url(root) else Path(location(root)) / name


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
        path = str(location(path))
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
                      overwrite: bool = False, progress: bool = True,
                      repair: bool = False, log=print) -> LabelCache:
    """Decode every image of ``dataset`` into a label cache at ``path`` and return it.

    Resumes an interrupted build of the same dataset; a complete cache is returned
    as is. A cache of another dataset at ``path`` is refused unless ``overwrite``.
    All categories are cached, whatever subset ``dataset`` selected. ``repair``:
    first check every finished chunk and re-decode those that fail their checksum.
    Raises RunLockedError while another process builds the same (local) cache.
    """
    if dataset.categories != dataset.all_categories:
        dataset = BrodenDataset(dataset.directory)
    path = str(location(path or default_label_cache_path(dataset)))
    if len(dataset) == 0:
        raise BrodenError(f"{dataset.directory / 'index.csv'}: has no image rows; a label "
                          f"cache needs at least one image")
    if is_url(path):
        return _build(dataset, path, chunk_images, workers, overwrite, progress, repair, log)
    where = Path(path)
    with RunLock(where.parent, "label-cache build", name=where.name + ".lock"):
        return _build(dataset, path, chunk_images, workers, overwrite, progress, repair, log)


def _build(dataset: BrodenDataset, path: str, chunk_images: int, workers: int | None,
           overwrite: bool, progress: bool, repair: bool, log) -> LabelCache:
    """build_label_cache's work, with the lock held (arguments as there)."""
    fp = dataset.fingerprint()
    N = len(dataset)
    sh, sw = dataset.segmentation_size()
    P, S = _slot_counts(dataset)
    L = dataset.num_labels
    C = -(-N // chunk_images)

    g = _open_or_create(path, fp, overwrite)
    if repair and g.attrs.get("layout_ready"):
        from cache.integrity import repair_label_cache
        repair_label_cache(g, log)
    if g.attrs.get("complete"):
        return LabelCache(g, path)
    if g.attrs.get("layout_ready"):
        chunk_images = int(g.attrs["chunk_images"])     # resume with the layout on disk
        C = -(-N // chunk_images)
    else:
        g = zarr.open_group(path, mode="w")              # nothing or a half set-up: start over
        _create_layout(g, dataset, fp, (N, P, S, sh, sw), chunk_images)
    done = _read_done(g["done"])
    todo = [(c * chunk_images, min((c + 1) * chunk_images, N), P, S)
            for c in range(C) if not done[c]]
    bar = tqdm(total=N, initial=N - sum(b - a for a, b, _, _ in todo), unit="img",
               desc="label cache", disable=not progress, dynamic_ncols=True)

    arrays = {n: g[n].with_config({"write_empty_chunks": True})
              for n in ("planes", "scalars", "present", "chunk_label_pixels", "done")}

    def store(start: int, result) -> None:
        planes, scalars, present, counts = result
        stop = start + planes.shape[0]
        c = start // chunk_images
        try:
            arrays["planes"][start:stop] = planes
            arrays["scalars"][start:stop] = scalars
            arrays["present"][start:stop] = present
            arrays["chunk_label_pixels"][c] = counts
            arrays["done"][c] = 1             # only after the chunk's data is written
        except OSError as e:
            raise LabelCacheError(
                f"{path}: writing label chunk {c} (images {start}-{stop - 1}) failed "
                f"({e}); finished chunks are kept: fix the cause (e.g. free disk space) "
                f"and rerun the same command to resume") from e
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
                   chunks=(L,), compressors=_codecs(), overwrite=True)
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
    zstd = _codecs()
    cfg = {"write_empty_chunks": True}
    g.create_array("planes", shape=(N, P, sh, sw), chunks=(chunk_images, P, sh, sw),
                   dtype="uint16", compressors=zstd, fill_value=0, config=cfg)
    g.create_array("scalars", shape=(N, S), chunks=(chunk_images, S), dtype="int32",
                   compressors=zstd, fill_value=0, config=cfg)
    g.create_array("present", shape=(N, G), chunks=(chunk_images, G), dtype="bool",
                   compressors=zstd, fill_value=False, config=cfg)
    g.create_array("chunk_label_pixels", shape=(C, L), chunks=(1, L), dtype="int64",
                   compressors=zstd, fill_value=0, config=cfg)
    g.create_array("done", shape=(C,), chunks=(1,), dtype="uint8", fill_value=0, config=cfg,
                   compressors=[Crc32cCodec()])
    g.attrs["layout_ready"] = True       # written last: a half set-up is redone


def _read_done(arr: zarr.Array) -> np.ndarray:
    """(C,) uint8 done flags; a flag a kill left unreadable reads as 0 (chunk redone)."""
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


def _codecs() -> list:
    """zstd then a CRC32C of the stored chunk (corruption fails the read)."""
    return [ZstdCodec(level=3), Crc32cCodec()]


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


# ------------------------------------------------------------- a run's labels
def run_dataset(run, dataset: str | os.PathLike | None = None) -> BrodenDataset:
    """The Broden dataset of a run: ``dataset`` (--dataset) or the path extract.py recorded;
    refused unless its fingerprint is the run's."""
    from cache import store
    attrs = store.read_run_attrs(run)
    ds_path = dataset or attrs["dataset"]["path"]
    try:
        ds = BrodenDataset(ds_path)
    except BrodenError as e:
        if dataset:
            raise
        raise BrodenError(f"{e}\n(the run recorded the dataset at {ds_path}; if it has "
                          f"moved, pass its new location with --dataset)") from None
    if ds.fingerprint() != attrs["dataset"]["fingerprint"]:
        raise LabelCacheError(
            f"--dataset {ds_path}: its fingerprint {ds.fingerprint()[:16]} differs from the "
            f"dataset the run was extracted from ({attrs['dataset']['fingerprint'][:16]}); "
            f"pass the same Broden directory or extract again")
    return ds


def run_label_cache(run, dataset: str | os.PathLike | None = None,
                    label_cache: str | os.PathLike | None = None, *, progress: bool = True,
                    log=print) -> LabelCache:
    """The label cache of a run's dataset, built on first use. A complete cache of the
    run's dataset fingerprint (at ``label_cache`` or the default path, which is keyed by
    the fingerprint) is used even when the dataset has moved; building one needs the
    dataset (``dataset``, default the path extract.py recorded)."""
    from cache import store
    fp = store.read_run_attrs(run)["dataset"]["fingerprint"]
    ds = run_dataset(run, dataset) if dataset else None
    path = label_cache or default_label_cache_path(fp)
    try:
        labels = LabelCache.open(path)
        if labels.fingerprint == fp:
            return labels
    except LabelCacheError:
        pass
    ds = ds or run_dataset(run, dataset)
    if progress:
        log(f"building the label cache at {path} (once per dataset)")
    labels = build_label_cache(ds, path, progress=progress)
    labels.check_dataset(ds)
    return labels

