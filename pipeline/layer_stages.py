"""The scoring stages of one layer of a run: thresholds -> IoU cube -> results.

Each stage takes the run and reuses what is stored when it was computed from the
same activation cache (same model, dataset, layer, dtype, images):

    layer_thresholds(run, layer, levels)          exact T per level (Dask over Zarr)
    layer_cube(run, layer, labels, levels)        integer counts (torch replay)
    layer_results(run, layer, cube, config)       results document (JSON) [+ null model]
                                                  -> CSV + HTML generated from it
    layer_sweep(layer, dissection, thresholds)    IoU-threshold sweep (CSV + PNG)

Only a level missing from the stored cube triggers a replay, and only of that level; the
results, the null model and the sweep never replay. With ``ScoreConfig.client`` (a
``distributed.Client``, see pipeline/distributed.py) the quantiles and the replay run as
Dask graphs on its cluster; the numbers are the same.

A read that fails on a damaged chunk is reported as a RunError naming the chunk and
the repair command (``cache/integrity.py``); NaN or infinite activations as a
ValueError naming the layer, the units and the fix.
"""
from __future__ import annotations

import hashlib
import os
import re
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from cache import store
from cache.integrity import check_present
from cache.cube import (Cube, TallyCheckpoint, read_cube, read_thresholds, write_cube,
                        write_thresholds)
from cache.labels import LabelCache
from pipeline import sweep as sweep_mod
from pipeline.dataset_files import content_key
from pipeline.null_model import NullConfig, NullResult, null_p_values
from pipeline.reports import document as results_doc
from pipeline.reports.charts import sweep_chart
from pipeline.files import write_csv, write_json, write_text
from pipeline.reports.images import DEFAULT_TOP_IMAGES
from pipeline.reports.spreadsheet import formula_cells
from pipeline.reports.netdissect_csv import csv_rows
from pipeline.reports.tables import sweep_rows
from pipeline.scoring import Dissection, dissect

DEFAULT_LEVELS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05)
DEFAULT_QUANTILE, DEFAULT_IOU = 0.005, 0.04
_NAME = re.compile(r"[A-Za-z0-9._+-]+")
#: Seconds between checkpoints of a layer's replay (cache.cube.TallyCheckpoint; 0: every tile).
CHECKPOINT_ENV = "NETDISSECT_CHECKPOINT_SECONDS"


@dataclass
class ScoreConfig:
    """What score.py was asked for. ``levels`` are the cube's quantile levels (the
    defaults plus ``quantile``); results are reported at ``quantile``."""
    quantile: float = DEFAULT_QUANTILE
    iou_threshold: float = DEFAULT_IOU
    categories: Sequence[str] | None = None
    device: str = "auto"
    levels: Sequence[float] = DEFAULT_LEVELS
    tile_images: int | None = None
    workers: int | None = None              # tiles counted at once (None: one per core)
    progress: bool = True
    null: NullConfig | None = None          # run the null model (pipeline/null_model.py)
    client: Any = None                      # distributed.Client: score on its cluster
    top_images: int = DEFAULT_TOP_IMAGES    # HTML report: top images per unit (0: none)
    dataset: Any = None                     # ... read from here (None: the run's record)
    results_dir: Any = None                 # report files here (None: RUN/results)
    checkpoint_seconds: float = field(      # save the replay's counts this often
        default_factory=lambda: float(os.environ.get(CHECKPOINT_ENV, 30)))
    name: str | None = None                 # --name: this scoring's results folder

    def scoring_name(self) -> str:
        """Where this scoring's report files go under ``results/``: ``--name`` when
        given, else a name made of the settings that change the numbers and differ
        from the defaults (e.g. ``q0.01_iou0.08_cat-object+part``,
        ``null-image-p1000-n500-s0``), or "" (the plain ``results/<layer>.*``) for the
        default scoring. So scorings with other settings sit beside each other and never
        overwrite the default one. (``top_images`` only changes the page:
        :meth:`page_name`.)"""
        if self.name is not None:
            if not _NAME.fullmatch(self.name) or self.name in (".", ".."):
                raise ValueError(f"--name {self.name!r}: use letters, digits, '.', '_', "
                                 f"'+' and '-' (a folder name under results/)")
            return self.name
        parts = []
        if float(self.quantile) != DEFAULT_QUANTILE:
            parts.append(f"q{float(self.quantile):g}")
        if float(self.iou_threshold) != DEFAULT_IOU:
            parts.append(f"iou{float(self.iou_threshold):g}")
        if self.categories:
            cats = "+".join(self.categories)
            parts.append(f"cat-{cats}" if _NAME.fullmatch(cats) else
                         f"cat-{hashlib.sha256(cats.encode()).hexdigest()[:10]}")
        if self.null is not None:
            n = self.null
            parts.append(f"null-{'+'.join(n.kinds)}-p{n.permutations}-n{n.images or 'all'}"
                         f"-s{n.seed}")
        return "_".join(parts)

    def page_name(self, layer_file: str) -> str:
        """The HTML page's file name: ``<layer>.html`` with the default number of top
        images, ``<layer>.top<N>.html`` with another, so a page without images (or with
        more) never replaces the default one."""
        top = "" if self.top_images == DEFAULT_TOP_IMAGES else f".top{self.top_images}"
        return f"{layer_file}{top}.html"

    def all_levels(self) -> list[float]:
        if not 0.0 < float(self.quantile) < 1.0:
            raise ValueError(f"--quantile must be in (0, 1), got {self.quantile}")
        for q in self.levels:
            if not 0.0 < float(q) < 1.0:
                raise ValueError(f"--levels: every level must be in (0, 1), got {q}")
        lv = sorted(set(float(q) for q in self.levels) | {float(self.quantile)})
        if not 0.0 <= self.iou_threshold <= 1.0:
            raise ValueError(f"--iou-threshold must be in [0, 1], got {self.iou_threshold}")
        for flag, n in (("--tile-images", self.tile_images), ("--workers", self.workers)):
            if n is not None and n < 1:
                raise ValueError(f"{flag} must be >= 1, got {n}")
        return lv


def layer_source(run, layer: str) -> dict:
    """What a layer's thresholds are computed from (stale when any of it changes)."""
    a = store.read_run_attrs(run)
    acts = store.activations(run, layer)
    images = store.image_records(run)
    return {"layer": layer, "model": a["model"]["fingerprint"],
            "dataset": a["dataset"]["fingerprint"], "num_images": int(acts.shape[0]),
            "shape": [int(s) for s in acts.shape], "dtype": str(acts.dtype),
            "images": None if images is None else content_key(images)}


def cube_source(run, layer: str, labels: LabelCache) -> dict:
    """What a layer's cube is computed from: its thresholds' source, the label cache's
    dataset fingerprint and the digests of its label PNGs (stale when any changes)."""
    return {**layer_source(run, layer), "labels": labels.fingerprint,
            "label_files": labels.content_key}


def _missing(have: np.ndarray | None, want: Sequence[float]) -> list[float]:
    if have is None:
        return list(want)
    return [q for q in want if not np.any(np.abs(have - q) <= 1e-12)]


@contextmanager
def named_failures(run, layer: str, labels: LabelCache | None = None) -> Iterator[None]:
    """Turn a failed read of ``layer``'s caches into a RunError naming the damaged
    chunks and the repair command, and NaN/inf activations into a ValueError naming
    the layer, the units and what to do; other errors pass through unchanged."""
    from pipeline.quantiles import NonFiniteActivations
    try:
        yield
    except NonFiniteActivations as e:
        raise ValueError(
            f"layer {layer!r} of {store.run_path(run)}: {e}. Float16 overflow (values "
            f"beyond +-65504) stores inf/NaN: re-extract with --dtype float32 --overwrite; "
            f"otherwise the model itself produces them (check its weights and "
            f"preprocessing)") from None
    except store.RunError:
        raise
    except Exception as e:                          # noqa: BLE001 - maybe a bad chunk
        # (a CRC32C mismatch is a ValueError; a codec failure another type)
        from cache.integrity import explain
        named = explain(run, layer, labels)
        if named is None:
            raise
        raise named from e


def check_finite_maxima(run, layer: str) -> None:
    """Raise NonFiniteActivations if a unit's per-image maxima (N, K) hold NaN or +inf
    (NaN and +inf propagate into the maxima, so this reads only (N, K) values)."""
    from pipeline.quantiles import NonFiniteActivations
    mx = np.asarray(store.maxima(run, layer)[:], dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(mx).all(axis=0))
    if bad.size:
        raise NonFiniteActivations(bad)


def layer_thresholds(run, layer: str, levels: Sequence[float], *, log=print,
                     client: Any = None, check: bool = True, progress: bool = False
                     ) -> tuple[np.ndarray, np.ndarray]:
    """(levels (V,), T (V, K) float64) for the asked levels; computes only missing ones
    (on ``client``'s cluster when given, else with Dask's local threaded scheduler),
    after a start line and with a progress bar (``progress``, local only).
    ``check=False``: the caller has already checked that every chunk is on disk."""
    from pipeline.quantiles import exact_thresholds     # dask: imported only when needed
    source = layer_source(run, layer)
    stored = read_thresholds(store.layer_group(run, layer), source, log)
    todo = _missing(None if stored is None else stored[0], levels)
    if todo:
        t0 = time.perf_counter()
        if client is not None:
            from pipeline.distributed import check_shared
            check_shared(run)
        # no client: the local threaded scheduler, whatever Dask's default is
        kwargs = {"scheduler": client if client is not None else "threads"}
        if check:
            check_present(run, layer)       # an absent chunk would be read as zeros
        acts = store.activations(run, layer)
        log(f"[{layer}] exact quantiles at {todo}: {acts.shape[0]} images x {acts.shape[1]} "
            f"units x {acts.shape[2]} x {acts.shape[3]} ...")
        with named_failures(run, layer):
            check_finite_maxima(run, layer)
            T = exact_thresholds(acts, todo, compute_kwargs=kwargs,
                                 progress=f"quantiles {layer}"
                                 if progress and client is None else None)
        with _writing_layer(run, layer):
            write_thresholds(store.layer_group(run, layer, mode="a"), todo, T, source)
        log(f"[{layer}] exact quantiles at {todo}: {time.perf_counter() - t0:.1f} s")
        stored = read_thresholds(store.layer_group(run, layer), source)
    lv, T = stored
    idx = [int(np.flatnonzero(np.abs(lv - q) <= 1e-12)[0]) for q in levels]
    return lv[idx], T[idx]


def layer_cube(run, layer: str, labels: LabelCache, config: ScoreConfig, *, log=print
               ) -> Cube:
    """The IoU cube at ``config.all_levels()``, replaying only the missing levels."""
    check_present(run, layer, labels)       # an absent chunk would be read as zeros
    levels = config.all_levels()
    source = cube_source(run, layer, labels)
    group = store.layer_group(run, layer)
    stored = read_cube(group, source, log)
    todo = _missing(None if stored is None else stored.levels, levels)
    if not todo:        # stored thresholds beside a reused cube: damaged ones recomputed
        layer_thresholds(run, layer, levels, log=log, client=config.client, check=False,
                         progress=config.progress)
    if todo:
        lv, T = layer_thresholds(run, layer, todo, log=log, client=config.client,
                                 progress=config.progress,
                                 check=False)
        t0 = time.perf_counter()
        with named_failures(run, layer, labels):
            new, checkpoint = _replay(run, layer, labels, lv, T, config, source, log)
        n = new.intersect.shape[1]
        log(f"[{layer}] IoU cube at {[float(q) for q in lv]}: {time.perf_counter() - t0:.1f} s "
            f"({store.activations(run, layer).shape[0]} images, {n} units)")
        with _writing_layer(run, layer):
            stored = write_cube(store.layer_group(run, layer, mode="a"), new, source)
            if checkpoint is not None:
                checkpoint.clear()
    return stored.select(levels)


def _writing_layer(run, layer: str):
    """store.writing naming the layer's group (where thresholds and cubes go)."""
    group = store.layer_group(run, layer)
    return store.writing(store.store_location(group.store, group.path))


def layer_stored(run, layer: str, labels: LabelCache, config: ScoreConfig) -> bool:
    """True when the thresholds and cube of every level ``config`` asks for are stored
    (scoring then only reads the run: no lock, nothing written into it)."""
    source = cube_source(run, layer, labels)
    stored = read_cube(store.layer_group(run, layer), source)
    return not _missing(None if stored is None else stored.levels, config.all_levels())


def _replay(run, layer: str, labels: LabelCache, levels, T: np.ndarray,
            config: ScoreConfig, source: dict, log=print
            ) -> tuple[Cube, TallyCheckpoint | None]:
    """(cube, its checkpoint to clear once the cube is stored): the threaded replay
    (default), checkpointed in the layer's group every ``config.checkpoint_seconds``
    (resumed from a checkpoint of the same counts), or, with ``config.client``, the Dask
    graph (not checkpointed: a killed graph is counted again)."""
    if config.client is not None:
        from pipeline.distributed import replay_cube_dask
        return replay_cube_dask(run, layer, labels, levels, T, device=config.device,
                                tile_images=config.tile_images,
                                compute_kwargs={"scheduler": config.client}), None
    from pipeline.replay import replay_cube, tile_ranges  # torch: only when replaying
    acts = store.activations(run, layer)
    key = {"source": source, "levels": [float(q) for q in levels],
           "thresholds": hashlib.sha256(np.ascontiguousarray(T, np.float64)).hexdigest(),
           "tiles": tile_ranges(acts, labels, config.tile_images)}
    checkpoint = TallyCheckpoint(store.layer_group(run, layer, mode="a"), key,
                                 config.checkpoint_seconds, log)
    cube = replay_cube(acts, store.maxima(run, layer), labels, levels, T,
                       device=config.device, tile_images=config.tile_images,
                       workers=config.workers, progress=config.progress,
                       desc=f"tally {layer}", checkpoint=checkpoint, log=log)
    return cube, checkpoint


def dissect_cube(cube: Cube, labels: LabelCache, quantile: float, iou_threshold: float,
                 categories: Sequence[str] | None = None) -> Dissection:
    """The dissection (pipeline.scoring.dissect) of a cube at one of its levels."""
    v = cube.level_index(quantile)
    return dissect(cube.intersect[v], cube.activation[v], cube.label_pixels,
                   labels.primary_category, cube.categories, selected=categories,
                   iou_threshold=iou_threshold)


def cube_summary(cube: Cube, labels: LabelCache, config: ScoreConfig) -> dict:
    """Detector counts (both conventions) of a cube at ``config.quantile``: the summary
    layer_results writes, without its report files (those cost seconds per run)."""
    d = dissect_cube(cube, labels, config.quantile, config.iou_threshold, config.categories)
    return {**d.summary(), "quantile": float(config.quantile)}


def layer_null(run, layer: str, cube: Cube, d: Dissection, labels: LabelCache,
               config: ScoreConfig, *, log=print) -> NullResult:
    """The null model (``config.null``) of a layer's units at ``config.quantile``, each
    tested with its label in ``d`` (the dissection of ``cube`` at that quantile) over
    ``d``'s categories; a tqdm bar with ``config.progress``."""
    from tqdm.auto import tqdm
    v = cube.level_index(config.quantile)
    acts = store.activations(run, layer)
    concepts = [u.label if u.category else 0 for u in d.units]
    primary = labels.primary_category
    keep = np.isin(primary, [list(cube.categories).index(c) for c in d.categories])
    with tqdm(total=acts.shape[1], unit="unit", desc=f"null {layer}",
              disable=not config.progress, dynamic_ncols=True) as bar:
        null = null_p_values(acts, labels, cube.thresholds[v], concepts, primary, keep,
                             config.null, progress=bar.update)
    log(f"[{layer}] null model ({', '.join(null.kinds)}; {null.permutations} "
        f"permutations, {len(null.images)} images): {null.seconds:.1f} s")
    return null


def layer_results(run, layer: str, cube: Cube, labels: LabelCache, config: ScoreConfig,
                  *, log=print) -> tuple[Dissection, dict, Path]:
    """Dissect at ``config.quantile`` (and run the null model when ``config.null``); write
    the results document <run>/results/<layer>.json and, generated from it, <layer>.csv
    and <layer>.html, then rebuild the index of the run's scorings (results/index.html,
    pipeline/reports/index_page.py). Returns (dissection, summary, csv path)."""
    v = cube.level_index(config.quantile)
    d = dissect_cube(cube, labels, config.quantile, config.iou_threshold, config.categories)
    acts = store.activations(run, layer)
    null = None
    if config.null is not None:
        null = layer_null(run, layer, cube, d, labels, config, log=log)
    meta = results_doc.run_metadata(store.read_run_attrs(run), layer, store.run_path(run),
                                    acts.shape, acts.dtype, labels.path, labels.fingerprint)
    null_cfg = None
    if config.null is not None:
        null_cfg = {"kinds": list(config.null.kinds),
                    "permutations": int(config.null.permutations),
                    "images": config.null.images, "seed": int(config.null.seed)}
    doc = results_doc.build_document(
        d, cube.intersect[v], cube.activation[v], cube.label_pixels, cube.categories,
        labels.label_names, cube.thresholds[v], layer=layer, quantile=config.quantile,
        levels=cube.levels, run=meta, null=null, null_config=null_cfg,
        name=config.scoring_name())
    name = store.layer_file_name(layer)
    with store.results_output(run, config.results_dir, config.scoring_name()) as (out, final):
        if not store.is_url(final):     # the analyses made beside it at these thresholds
            from pipeline.reports.analyses import attach_analyses
            attach_analyses(doc, final, name, log)
        write_json(results_doc.document_path(out, name), doc)
        header, rows = csv_rows(doc)
        write_csv(out / f"{name}.csv", header, rows)
        _note_formulas(layer, name, config.page_name(name), header, rows, log)
        from pipeline.reports.html_page import layer_report
        page = layer_report(doc, run, layer, config.dataset, config.top_images,
                            progress=config.progress, log=log)
        write_text(out / config.page_name(name), page)
    from pipeline.reports.index_page import write_index   # the run's index of its scorings
    if store.is_url(final):
        write_index(final.rsplit("/", 1)[0] if config.scoring_name() else final)
    else:
        write_index(Path(final).parent if config.scoring_name() else Path(final))
    return d, doc["summary"], _final_path(final, f"{name}.csv")


def _note_formulas(layer: str, name: str, page: str, header, rows, log) -> None:
    """Say when the NetDissect CSV (written exactly: scripts read it) holds names that a
    spreadsheet would run as formulas (:mod:`pipeline.reports.spreadsheet`)."""
    formulas = formula_cells(header, rows)
    if formulas:
        log(f"[{layer}] {len(formulas)} label or category name(s) start with =, +, - or @ "
            f"(e.g. {formulas[0]!r}): {name}.csv keeps them exactly, as scripts read it, "
            f"and a spreadsheet may run them as formulas: import it with text columns, or "
            f"read {page}")


def layer_sweep(run, layer: str, d: Dissection, thresholds, results_dir=None,
                scoring: str = "") -> tuple[list[dict], Path, Path]:
    """Sweep the IoU threshold over ``d``'s labelling (no replay); write
    <run>/results[/<scoring>]/<layer>.sweep.csv and .sweep.png (under ``results_dir``
    when given). Returns (summaries, csv, png)."""
    summaries = sweep_mod.sweep(d.units, d.categories, thresholds)
    name = store.layer_file_name(layer)
    with store.results_output(run, results_dir, scoring) as (out, final):
        write_csv(out / f"{name}.sweep.csv", *sweep_rows(summaries))
        sweep_chart(out / f"{name}.sweep.png", summaries,
                    title=f"{layer}: detectors against the IoU threshold")
    return (summaries, _final_path(final, f"{name}.sweep.csv"),
            _final_path(final, f"{name}.sweep.png"))


def _final_path(final: str, name: str) -> Path | str:
    """Where a report file ended up: a Path for local runs, a URL for URL runs."""
    return f"{final}/{name}" if store.is_url(final) else Path(final) / name
