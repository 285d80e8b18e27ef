"""Score a whole run: its dataset and label cache, the run lock, and every layer's stages.

The method, top to bottom (scripts/score.py is this plus argument parsing and printing)::

    run    = store.open_run(path)                          activation cache (extract.py)
    labels = run_label_cache(run)                          decoded once per dataset
    for layer in layers:
        cube = layer_cube(run, layer, labels, config)      exact T_k, then the IoU cube
        d, summary, csv = layer_results(run, layer, cube, labels, config)
                                                           results document, CSV, HTML

``score_run`` does exactly that, with the optional IoU-threshold sweep, exports and a
Dask cluster, under the run's lock when something will be stored in the run
(thresholds or a cube to compute: a second writer of a local run is refused; the label
cache has its own lock); a run whose every asked level is stored is only read, so it is
reported from while another process holds its lock, or on a read-only filesystem with
``ScoreConfig.results_dir`` (--results-dir) placing the report files elsewhere. The
per-layer stages themselves are in pipeline/layer_stages.py.
"""
from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import zarr

from cache import store
from cache.cube import Cube
from cache.labels import LabelCache, LabelCacheError, default_label_cache_path
from cache.zarr_io import writable
from pipeline.broden import BrodenDataset, BrodenError
from pipeline.dataset_files import find_changes, image_files
from pipeline.files import write_npy
from pipeline.layer_stages import (ScoreConfig, layer_cube, layer_results, layer_stored,
                                   layer_sweep)
from pipeline.label_decoding import build_label_cache, refresh_label_cache
from pipeline.scoring import Dissection


# ------------------------------------------------------------- a run's dataset
def run_dataset(run, dataset: str | os.PathLike | None = None) -> BrodenDataset:
    """The Broden dataset of a run: ``dataset`` (--dataset) or the path extract.py recorded;
    refused unless its fingerprint is the run's."""
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
            f"--dataset {ds_path} is not the dataset the run was extracted from "
            f"({attrs['dataset']['path']}, {attrs['dataset']['num_images']} images; "
            f"fingerprints {ds.fingerprint()[:16]} and "
            f"{attrs['dataset']['fingerprint'][:16]} differ, i.e. index.csv or the label "
            f"tables differ): pass that Broden directory, or extract this one again")
    return ds


def run_label_cache(run, dataset: str | os.PathLike | None = None,
                    label_cache: str | os.PathLike | None = None, *, progress: bool = True,
                    log=print) -> LabelCache:
    """The label cache of a run's dataset, built on first use, with the dataset's files
    checked. A complete cache of the run's dataset fingerprint (at ``label_cache`` or the
    default path, which is keyed by the fingerprint) is used even when the dataset has
    moved; building one needs the dataset (``dataset``, default the path extract.py
    recorded). When the dataset is there, the run's images and the cache's label PNGs
    are compared with the files now (:func:`check_run_images`,
    ``label_decoding.refresh_label_cache``: changed PNGs are decoded again)."""
    fp = store.read_run_attrs(run)["dataset"]["fingerprint"]
    ds = run_dataset(run, dataset) if dataset else _recorded_dataset(run, log)
    path = label_cache or default_label_cache_path(fp)
    try:
        labels = LabelCache.open(path)
        if labels.fingerprint != fp:
            labels = None
    except LabelCacheError:
        labels = None
    if ds is not None:
        check_run_images(run, ds, log)
    if labels is not None:
        return labels if ds is None else refresh_label_cache(ds, labels, progress=progress,
                                                             log=log)
    ds = ds or run_dataset(run, dataset)
    labels = build_label_cache(ds, path, progress=progress, log=log,
                               start=f"building the label cache at {path} (once per dataset)"
                               if progress else None)
    labels.check_dataset(ds)
    return labels


def _recorded_dataset(run, log) -> BrodenDataset | None:
    """The dataset at the path the run recorded, or None (with a note) when it is not
    there or is no longer the run's dataset (its files are then not checked)."""
    attrs = store.read_run_attrs(run)["dataset"]
    if not (Path(attrs["path"]) / "index.csv").is_file():
        log(f"note: the run's dataset is not at {attrs['path']} (moved?): its images and "
            f"label PNGs are not checked for changes; pass --dataset to check them")
        return None
    try:
        return run_dataset(run)
    except (BrodenError, LabelCacheError) as e:
        log(f"note: {e}; its images and label PNGs are not checked for changes")
        return None


def check_run_images(run, ds: BrodenDataset, log=print) -> None:
    """Raise RunError naming the first changed image (and the blocks to re-extract with
    ``extract.py --repair``) when an image file the run was extracted from changed
    since; refresh the stamps of images touched without a change (when the run is
    writable). Runs without image records (derived, synthetic) are not checked."""
    stored = store.image_records(run)
    if stored is None:
        return
    changes = find_changes(ds, stored, image_files)
    if changes.stale:
        block = int(store.read_run_attrs(run)["block_images"])
        blocks = changes.units(block)
        raise store.RunError(
            f"{store.run_path(run)}: {changes.describe('image files')}: the activations of "
            f"block(s) {blocks[:10]}{' ...' if len(blocks) > 10 else ''} are stale; rerun "
            f"the scripts/extract.py command that made the run with --repair (re-extracts "
            f"only those blocks), then score again")
    if changes.restamped and not isinstance(store.run_path(run), str):
        try:                            # the stamps are only a shortcut: a run that is
            with store.RunLock(store.run_path(run), "stamp refresh"):    # busy or
                group = zarr.open_group(store.run_path(run), mode="r+")  # read-only
                changes.restamp(writable(group["image_files"]))         # is left as is
        except (OSError, store.RunError) as e:
            log(f"note: could not refresh the image stamps of {store.run_path(run)} ({e}); "
                f"the images whose mtime changed are hashed again next time")


def check_categories(labels: LabelCache, categories: Sequence[str] | None) -> None:
    """Raise ValueError naming --categories when one is not a category of the dataset."""
    if labels.categories and categories:
        unknown = [c for c in categories if c not in labels.categories]
        if unknown:
            raise ValueError(f"--categories: unknown {unknown}; the dataset has "
                             f"{labels.categories}")


def scoring_lock(run, log=print) -> contextlib.AbstractContextManager:
    """The run's lock while scoring writes into it, so a second writer (scoring or
    extraction) of the same run is refused; an fsspec URL has none (object storage has
    no file lock), and a note (``store.no_lock_note``) says so."""
    where = store.run_path(run)
    if isinstance(where, str):
        log(store.no_lock_note(where, "scoring"))
        return contextlib.nullcontext()
    return store.RunLock(where, "scoring")


def needs_writing(run, layers: Sequence[str], labels: LabelCache, config: ScoreConfig
                  ) -> bool:
    """True when scoring will store something in the run: thresholds or a cube."""
    return not all(layer_stored(run, layer, labels, config) for layer in layers)


# ------------------------------------------------------------------ whole run
@dataclass
class LayerScore:
    """What scoring one layer gave: the cube at the config's levels, the dissection at
    its quantile, the summary (count_detectors() + facts), where the CSV went, and the
    sweep summaries and files when a sweep was asked for."""
    layer: str
    cube: Cube
    dissection: Dissection
    summary: dict
    csv_path: Path | str
    seconds: float
    sweep: list[dict] | None = None
    sweep_files: tuple | None = None
    sweep_seconds: float = 0.0


@dataclass
class Exports:
    """Arrays written as .npy for one layer: ``iou`` (K, L) IoU matrix (column j = label
    number j), ``thresholds`` (K,) T_k at the config's quantile."""
    iou: str | os.PathLike | None = None
    thresholds: str | os.PathLike | None = None

    def __bool__(self) -> bool:
        return bool(self.iou or self.thresholds)


def score_run(run_location, config: ScoreConfig, *, layers: Sequence[str] | None = None,
              label_cache: str | os.PathLike | None = None, sweep: Sequence[float] | None = None,
              scheduler: str | None = None, cluster: str | None = None, security=None,
              exports: Exports | None = None,
              on_layer: Callable[[LayerScore], None] | None = None,
              log=print) -> list[LayerScore]:
    """Score ``layers`` (default every layer) of the run at ``run_location`` (path or URL):
    label cache, thresholds, cube, results files, optional ``sweep`` (IoU thresholds)
    and ``exports``; on a Dask cluster when ``scheduler`` (``security``: its
    :func:`pipeline.distributed.scheduler_security`) or ``cluster`` is given.
    ``on_layer`` is called with each LayerScore as soon as that layer is done.
    Raises ValueError / RunError / LabelCacheError / BrodenError naming what to fix."""
    from pipeline.devices import check_device
    from pipeline.distributed import check_scheduler_args, check_shared, dask_scheduler
    config.all_levels()
    from pipeline.reports.images import MAX_TOP_IMAGES
    if not 0 <= config.top_images <= MAX_TOP_IMAGES:
        raise ValueError(f"--top-images must be in 0..{MAX_TOP_IMAGES}, got "
                         f"{config.top_images}")
    check_scheduler_args(scheduler, cluster)
    check_device(config.device, local=not (scheduler or cluster))
    exports = exports or Exports()
    run = store.open_run(run_location, mode="r")
    layers = list(layers or store.layer_names(run))
    for layer in layers:
        store.check_layer(run, layer)
    if exports and len(layers) != 1:
        raise ValueError("--export-iou/--export-thresholds need exactly one layer: "
                         f"add --layers (the run has {layers})")
    done = []
    # the label cache first (it has its own lock; a changed label PNG is decoded again
    # and makes the cube stale), then the run's lock only when something will be stored
    labels = run_label_cache(run, config.dataset, label_cache, progress=config.progress,
                             log=log)
    check_categories(labels, config.categories)
    writes = needs_writing(run, layers, labels, config)
    with scoring_lock(run, log) if writes else contextlib.nullcontext():
        with dask_scheduler(scheduler, cluster, log, security) as client:
            if client is not None:
                check_shared(run, labels)
            config.client = client
            for layer in layers:
                done.append(score_layer(run, layer, labels, config, sweep, exports, log))
                if on_layer is not None:
                    on_layer(done[-1])
    return done


def score_layer(run, layer: str, labels: LabelCache, config: ScoreConfig,
                sweep: Sequence[float] | None = None, exports: Exports | None = None,
                log=print) -> LayerScore:
    """Cube, results files, optional sweep and exports of one layer."""
    cube = layer_cube(run, layer, labels, config, log=log)
    t0 = time.perf_counter()
    d, summary, csv_path = layer_results(run, layer, cube, labels, config, log=log)
    out = LayerScore(layer, cube, d, summary, csv_path, time.perf_counter() - t0)
    if sweep:
        t1 = time.perf_counter()
        out.sweep, *files = layer_sweep(run, layer, d, sweep, config.results_dir,
                                        config.scoring_name())
        out.sweep_files = tuple(files)
        out.sweep_seconds = time.perf_counter() - t1
    if exports and exports.iou:
        write_npy(exports.iou, d.iou)
    if exports and exports.thresholds:
        write_npy(exports.thresholds, cube.thresholds[cube.level_index(config.quantile)])
    return out
