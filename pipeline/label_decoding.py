"""Decode a Broden dataset's labels into the label cache (cache/labels.py), once per dataset.

Per image chunk: every image's segmentation planes and scalar labels in canonical form
(cache/labelsets.py), its category presence and the chunk's label pixel counts |L_c|.
Chunks are decoded in worker processes and written as they finish; the build resumes
where a killed one stopped, and ``repair=True`` first restores damaged metadata from the
layout and re-decodes only the chunks that fail their checksum (cache/integrity.py). A
local build holds ``LABELS.zarr.lock`` (a
second builder of the same cache is refused); the cache may also live at an fsspec URL
(no lock).
"""
from __future__ import annotations

import contextlib
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import zarr
from tqdm.auto import tqdm

from cache import labels as label_store
from cache.integrity import repair_label_cache, repair_label_metadata
from cache.labels import LabelCache, LabelCacheError, default_label_cache_path
from cache.labelsets import canonical_planes, canonical_scalars
from cache.store import RunError, RunLock, is_url, location, no_lock_note
from cache.zarr_io import clear_flags, writable
from pipeline.broden import BrodenDataset, BrodenError
from pipeline.dataset_files import find_changes, label_files, records
from pipeline.parallel import bounded_map, worker_start


def slot_counts(dataset: BrodenDataset) -> tuple[int, int]:
    """(P, S): most PNG entries and most scalar entries in one row (at least 1 each)."""
    P = S = 0
    for r in dataset.rows:
        n_png = sum(1 for cells in r.cells.values() for e in cells if isinstance(e, str))
        n_sc = sum(1 for cells in r.cells.values() for e in cells if isinstance(e, int))
        P, S = max(P, n_png), max(S, n_sc)
    return max(P, 1), max(S, 1)


def decode_range(dataset: BrodenDataset, start: int, stop: int, P: int, S: int
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Decode images [start, stop) into (planes (B, P, sh, sw) uint16, scalars (B, S)
    int32, present (B, G) bool, label_pixels (L,) int64, label-file records (B, 32)
    uint8 (pipeline/dataset_files.py))."""
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
    return planes, scalars, present, counts, records(dataset, range(start, stop), label_files)


# ---------------------------------------------------------------- worker side
_WORKER_DATASET: BrodenDataset | None = None


def _init_worker(directory: str) -> None:
    global _WORKER_DATASET
    worker_start()
    _WORKER_DATASET = BrodenDataset(directory)


def _decode_chunk(start: int, stop: int, P: int, S: int):
    assert _WORKER_DATASET is not None
    return start, decode_range(_WORKER_DATASET, start, stop, P, S)


# ------------------------------------------------------------------ the build
def build_label_cache(dataset: BrodenDataset, path: str | os.PathLike | None = None, *,
                      chunk_images: int = 256, workers: int | None = None,
                      overwrite: bool = False, progress: bool = True,
                      repair: bool = False, log=print, start: str | None = None
                      ) -> LabelCache:
    """Decode every image of ``dataset`` into a label cache at ``path`` and return it.

    Resumes an interrupted build of the same dataset; a complete cache is checked
    against the dataset's label PNGs (:func:`refresh_label_cache`) and returned. A
    cache of another dataset at ``path`` is refused unless ``overwrite``.
    All categories are cached, whatever subset ``dataset`` selected. ``repair``:
    first check every finished chunk and re-decode those that fail their checksum.
    ``start``: a line logged once the build is under way (not when it is refused).
    Raises RunLockedError while another process builds the same (local) cache.
    """
    if chunk_images < 1:
        raise LabelCacheError(f"--chunk-images {chunk_images}: must be >= 1 (images per "
                              f"label-cache chunk; default 256)")
    if workers is not None and workers < 0:
        raise LabelCacheError(f"--workers {workers}: must be >= 0 (decoding processes; "
                              f"0 or 1: in this process)")
    if dataset.categories != dataset.all_categories:
        dataset = BrodenDataset(dataset.directory)
    path = str(location(path or default_label_cache_path(dataset)))
    if not is_url(path) and Path(path).exists() and not Path(path).is_dir():
        raise LabelCacheError(f"--out {path}: is a file, not a label cache directory; "
                              f"choose a new path")
    if len(dataset) == 0:
        raise BrodenError(f"{dataset.directory / 'index.csv'}: has no image rows; a label "
                          f"cache needs at least one image")
    if not (overwrite or repair):
        try:
            cache = LabelCache.open(path)
            if cache.fingerprint == dataset.fingerprint():     # complete: bring up to date
                return refresh_label_cache(dataset, cache, progress=progress, log=log)
        except LabelCacheError:
            pass
    with _build_lock(path, log):
        return _build(dataset, path, chunk_images, workers, overwrite, progress, repair, log,
                      start)


def _build_lock(path: str, log=print):
    """``LABELS.zarr.lock`` beside a local cache (a second builder is refused); none
    for an fsspec URL (object storage has no file lock: a note says so)."""
    if is_url(path):
        log(no_lock_note(path, "label-cache build"))
        return contextlib.nullcontext()
    where = Path(path)
    return RunLock(where.parent, "label-cache build", name=where.name + ".lock")


def refresh_label_cache(dataset: BrodenDataset, labels: LabelCache, *, full: bool = False,
                        progress: bool = True, log=print) -> LabelCache:
    """``labels`` checked against the label PNGs of ``dataset`` now (their records,
    pipeline/dataset_files.py): chunks holding a row whose PNGs changed are decoded again
    (a note names the first file), and stamps of files touched without a change are
    refreshed. ``full``: hash every PNG, whatever its stamp. Returns the cache to use."""
    if not labels.has_file_records:
        log(f"note: {labels.path} was built before label-file records; a changed label PNG "
            f"is not noticed: rebuild it (scripts/cache_labels.py --rebuild) to get them")
        return labels
    if dataset.categories != dataset.all_categories:
        dataset = BrodenDataset(dataset.directory)
    changes = find_changes(dataset, labels.file_records(), label_files, full)
    if not changes.stale:
        if changes.restamped:
            _restamp(labels, changes, log)
        return labels
    with _build_lock(labels.path):
        g = zarr.open_group(labels.path, mode="r+")
        chunks = changes.units(labels.chunk_images)
        log(f"{labels.path}: {changes.describe('label PNGs')}; decoding label chunk(s) "
            f"{chunks[:10]}{' ...' if len(chunks) > 10 else ''} again")
        g.attrs["complete"] = False
        clear_flags(g["done"], chunks)
        return _build(dataset, labels.path, labels.chunk_images, None, False, progress,
                      False, log)


def _restamp(labels: LabelCache, changes, log) -> None:
    """Store the new stamps of label PNGs touched without a change (a shortcut for the
    next check only: a cache that cannot be written is used as it is)."""
    try:
        with _build_lock(labels.path):
            changes.restamp(writable(zarr.open_group(labels.path, mode="r+")["label_files"]))
    except (OSError, LabelCacheError, RunError) as e:
        log(f"note: could not refresh the label-file stamps of {labels.path} ({e}); the "
            f"files whose mtime changed are hashed again next time")


def _layout_meta(dataset: BrodenDataset, fp: str) -> dict:
    """What cache/labels.lay_out records about the dataset."""
    return {"dataset": {"path": str(dataset.directory.resolve()), "fingerprint": fp,
                        "num_images": len(dataset),
                        "seg_size": list(dataset.segmentation_size())},
            "categories": dataset.all_categories, "label_names": dataset.label_names,
            "primary_category": dataset.primary_category}


def _build(dataset: BrodenDataset, path: str, chunk_images: int, workers: int | None,
           overwrite: bool, progress: bool, repair: bool, log, start: str | None = None
           ) -> LabelCache:
    """build_label_cache's work, with the lock held (arguments as there)."""
    fp = dataset.fingerprint()
    P, S = slot_counts(dataset)
    if repair and not overwrite:
        repair_label_metadata(path, log)    # damaged zarr.json restored from the layout
    g = label_store.open_for_build(path, fp, overwrite)
    if repair and g.attrs.get("layout_ready"):
        repair_label_cache(g, log)
    if g.attrs.get("complete"):
        return LabelCache(g, path)
    if start:
        log(start)
    if not g.attrs.get("layout_ready"):        # nothing or a half set-up: start over
        sh, sw = dataset.segmentation_size()
        g = label_store.lay_out(path, _layout_meta(dataset, fp),
                                (len(dataset), P, S, sh, sw), chunk_images)
    writer = label_store.LabelCacheWriter(g, path)   # resumes with the layout on disk
    todo = [(a, b, P, S) for a, b in writer.pending()]
    N = writer.num_images
    bar = tqdm(total=N, initial=N - sum(b - a for a, b, _, _ in todo), unit="img",
               desc="label cache", disable=not progress, dynamic_ncols=True)

    def store(start: int, result) -> None:
        writer.write(start, *result)
        bar.update(result[0].shape[0])

    workers = workers if workers is not None else min(os.cpu_count() or 1, 8)
    try:
        if workers <= 1 or len(todo) <= 1:
            for start, stop, p, s in todo:
                store(start, decode_range(dataset, start, stop, p, s))
        else:
            with ProcessPoolExecutor(workers, initializer=_init_worker,
                                     initargs=(str(dataset.directory),)) as pool:
                for start, result in bounded_map(pool, _decode_chunk, todo, 2 * workers):
                    store(start, result)
    finally:
        bar.close()
    return writer.finish()
