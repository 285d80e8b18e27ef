"""The scoring stages of one layer of a run: thresholds -> IoU cube -> results.

Each stage takes the run and reuses what is stored when it was computed from the
same activation cache (same model, dataset, layer, dtype, images):

    layer_thresholds(run, layer, levels)          exact T per level (Dask over Zarr)
    layer_cube(run, layer, labels, levels)        integer counts (torch replay)
    layer_results(run, layer, cube, config)       CSV + JSON + printed table

Only a level missing from the stored cube triggers a replay, and only of that level.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from cache import store
from cache.cube import Cube, read_cube, read_thresholds, write_cube, write_thresholds
from cache.labels import LabelCache
from pipeline import report
from pipeline.scoring import Dissection, dissect

DEFAULT_LEVELS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05)


@dataclass
class ScoreConfig:
    """What score.py was asked for. ``levels`` are the cube's quantile levels (the
    defaults plus ``quantile``); results are reported at ``quantile``."""
    quantile: float = 0.005
    iou_threshold: float = 0.04
    categories: Sequence[str] | None = None
    device: str = "auto"
    levels: Sequence[float] = DEFAULT_LEVELS
    tile_images: int | None = None
    progress: bool = True

    def all_levels(self) -> list[float]:
        lv = sorted(set(float(q) for q in self.levels) | {float(self.quantile)})
        for q in lv:
            if not 0.0 < q < 1.0:
                raise ValueError(f"--quantile must be in (0, 1), got {q}")
        if not 0.0 <= self.iou_threshold <= 1.0:
            raise ValueError(f"--iou-threshold must be in [0, 1], got {self.iou_threshold}")
        return lv


def layer_source(run, layer: str) -> dict:
    """What a layer's thresholds are computed from (stale when any of it changes)."""
    a = store.read_run_attrs(run)
    acts = store.activations(run, layer)
    return {"layer": layer, "model": a["model"]["fingerprint"],
            "dataset": a["dataset"]["fingerprint"], "num_images": int(acts.shape[0]),
            "shape": [int(s) for s in acts.shape], "dtype": str(acts.dtype)}


def _missing(have: np.ndarray | None, want: Sequence[float]) -> list[float]:
    if have is None:
        return list(want)
    return [q for q in want if not np.any(np.abs(have - q) <= 1e-12)]


def layer_thresholds(run, layer: str, levels: Sequence[float], *, log=print
                     ) -> tuple[np.ndarray, np.ndarray]:
    """(levels (V,), T (V, K) float64) for the asked levels; computes only missing ones."""
    from pipeline.quantiles import exact_thresholds     # dask: imported only when needed
    source = layer_source(run, layer)
    stored = read_thresholds(store.layer_group(run, layer), source)
    todo = _missing(None if stored is None else stored[0], levels)
    if todo:
        t0 = time.perf_counter()
        T = exact_thresholds(store.activations(run, layer), todo)
        write_thresholds(store.layer_group(run, layer, mode="a"), todo, T, source)
        log(f"[{layer}] exact quantiles at {todo}: {time.perf_counter() - t0:.1f} s")
        stored = read_thresholds(store.layer_group(run, layer), source)
    lv, T = stored
    idx = [int(np.flatnonzero(np.abs(lv - q) <= 1e-12)[0]) for q in levels]
    return lv[idx], T[idx]


def layer_cube(run, layer: str, labels: LabelCache, config: ScoreConfig, *, log=print
               ) -> Cube:
    """The IoU cube at ``config.all_levels()``, replaying only the missing levels."""
    levels = config.all_levels()
    source = {**layer_source(run, layer), "labels": labels.fingerprint}
    group = store.layer_group(run, layer)
    stored = read_cube(group, source)
    todo = _missing(None if stored is None else stored.levels, levels)
    if todo:
        from pipeline.replay import replay_cube            # torch: only when replaying
        lv, T = layer_thresholds(run, layer, todo, log=log)
        t0 = time.perf_counter()
        new = replay_cube(store.activations(run, layer), store.maxima(run, layer), labels,
                          lv, T, device=config.device, tile_images=config.tile_images,
                          progress=config.progress, desc=f"tally {layer}")
        n = new.intersect.shape[1]
        log(f"[{layer}] IoU cube at {[float(q) for q in lv]}: {time.perf_counter() - t0:.1f} s "
            f"({store.activations(run, layer).shape[0]} images, {n} units)")
        stored = write_cube(store.layer_group(run, layer, mode="a"), new, source)
    return stored.select(levels)


def layer_results(run, layer: str, cube: Cube, labels: LabelCache, config: ScoreConfig
                  ) -> tuple[Dissection, dict, Path]:
    """Dissect at ``config.quantile``; write <run>/results/<layer>.csv and .json."""
    v = cube.level_index(config.quantile)
    d = dissect(cube.intersect[v], cube.activation[v], cube.label_pixels,
                labels.primary_category, cube.categories, selected=config.categories,
                iou_threshold=config.iou_threshold)
    summary = d.summary()
    summary.update({"layer": layer, "quantile": config.quantile,
                    "levels_in_cube": [float(q) for q in cube.levels]})
    header, rows = report.result_rows(d, cube.intersect[v], cube.activation[v],
                                      cube.label_pixels, cube.categories, labels.label_names)
    out = store.results_dir(run)
    out.mkdir(parents=True, exist_ok=True)
    name = store.layer_file_name(layer)
    report.write_result_csv(out / f"{name}.csv", header, rows)
    report.write_json(out / f"{name}.json", {
        "summary": summary,
        "thresholds": {"quantile": config.quantile,
                       "T": [float(t) for t in cube.thresholds[v]]},
        "units": report.unit_records(d, labels.label_names),
        "run": str(store.run_path(run)),
    })
    return d, summary, out / f"{name}.csv"
