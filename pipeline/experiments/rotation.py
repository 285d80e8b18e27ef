"""The random-rotation experiment (the paper's Figure 4) on one cached layer of a run.

For each alpha, Q^alpha (Q uniform on SO(K), drawn from the seed; rotation_matrices.py)
is applied to the cached activations of the layer into a derived run
OUT/<layer>-seed<S>-a<alpha> (derived_runs.py; OUT defaults to RUN/rotations), and the
derived run is scored from scratch (exact thresholds, IoU cube at the quantile) with the
source run's label cache. With ``baseline="combination"`` a derived run
OUT/<layer>-combination-seed<S> whose units are random unit-norm combinations is scored
too. The table of unique detectors against alpha is written as OUT/<layer>-seed<S>.csv
(both conventions) and .png (the per-category sum, as the paper's figures count). A rerun
reuses complete derived runs and their stored cubes; the network is never touched.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from cache import store
from pipeline.experiments import rotation_matrices as rot
from pipeline.experiments.derived_runs import (derived_fingerprint, derived_is_complete,
                                               source_identity, transform_record,
                                               write_transformed_run)
from pipeline.layer_stages import ScoreConfig, cube_summary, layer_cube, layer_results
from pipeline.reports.charts import rotation_chart
from pipeline.files import write_csv
from pipeline.reports.tables import rotation_rows, rotation_table
from pipeline.stages import check_categories, run_label_cache, scoring_lock


@dataclass
class RotationSpec:
    """What to rotate: ``layer`` of the run, at ``alphas`` in [0, 1] of Q drawn from
    ``seed``; ``baseline``: None or "combination"; ``dtype`` of the derived runs;
    ``out``: directory of the derived runs, table and chart (default RUN/rotations);
    ``reports``: also write each derived run's results files (seconds per run);
    ``repair``: check every chunk of complete derived runs and rewrite damaged blocks."""
    layer: str
    alphas: Sequence[float] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
    seed: int = 0
    baseline: str | None = None
    dtype: str = "float32"
    out: str | os.PathLike | None = None
    reports: bool = False
    repair: bool = False


@dataclass
class RotationResult:
    """points: [(kind, alpha or None, summary)] in job order; the table and chart files."""
    points: list
    csv_path: Path
    chart_path: Path
    table: str


def derived_dir(out: Path, layer: str, seed: int, kind: str, alpha: float | None) -> Path:
    """Where the derived run of one job lives (module docstring)."""
    name = store.layer_file_name(layer)
    if kind == "rotation":
        return out / f"{name}-seed{seed}-a{rot.alpha_name(alpha)}"
    return out / f"{name}-{kind}-seed{seed}"


def _out_dir(run, spec: RotationSpec) -> Path:
    where = store.run_path(run)
    if spec.out is None and isinstance(where, str):
        raise ValueError(f"{where} is a URL: give --out, a local directory for the "
                         f"derived runs")
    if spec.out is not None and store.is_url(spec.out):
        raise ValueError(f"--out {spec.out}: derived runs are written to a local (or "
                         f"shared-filesystem) directory; give a local --out (copy it to "
                         f"object storage afterwards if you like)")
    return Path(store.location(spec.out)) if spec.out else Path(where) / "rotations"


def _transform(spec: RotationSpec, Q: np.ndarray, K: int, kind: str, alpha: float | None
               ) -> tuple[np.ndarray, dict]:
    """(matrix, transform record) of one job."""
    if kind == "rotation":
        return rot.fractional_rotation(Q, alpha), {"kind": "rotation", "alpha": alpha,
                                                   "seed": spec.seed}
    return rot.random_combination(K, spec.seed), {"kind": kind, "alpha": None,
                                                  "seed": spec.seed}


def _derived_run(run, spec: RotationSpec, out: Path, Q: np.ndarray, K: int, kind: str,
                 alpha: float | None, config: ScoreConfig, log) -> Path:
    """The derived run of one job: reused when complete, else written (or finished)."""
    t0 = time.perf_counter()
    M, transform = _transform(spec, Q, K, kind, alpha)
    dest = derived_dir(out, spec.layer, spec.seed, kind, alpha)
    what = f"{kind} a={alpha}" if kind == "rotation" else kind
    fp = derived_fingerprint(source_identity(run, spec.layer), spec.layer,
                             transform_record(transform, M, spec.dtype))
    if derived_is_complete(dest, fp) and not spec.repair:
        log(f"[{what}] reusing the derived run {dest}")
    else:
        write_transformed_run(run, spec.layer, M, dest, transform=transform,
                              dtype=spec.dtype, progress=config.progress,
                              repair=spec.repair, log=log)
        log(f"[{what}] derived run {dest}: {time.perf_counter() - t0:.1f} s")
    return dest


def _score_derived(dest: Path, spec: RotationSpec, labels, config: ScoreConfig, log=print
                   ) -> dict:
    """Score the derived run from scratch (its lock held); the detector summary. Its
    stage lines go to ``log`` only with ``config.progress``."""
    quiet = (lambda m: None) if not config.progress else log
    with scoring_lock(dest):
        cube = layer_cube(dest, spec.layer, labels, config, log=quiet)
        if spec.reports:
            return layer_results(dest, spec.layer, cube, labels, config, log=quiet)[1]
        return cube_summary(cube, labels, config)


def run_experiment(run_location, spec: RotationSpec, config: ScoreConfig, *,
                   label_cache: str | os.PathLike | None = None,
                   scheduler: str | None = None, cluster: str | None = None,
                   security=None, log=print) -> RotationResult:
    """Rotate ``spec.layer`` of the run at ``run_location`` at every alpha (and the
    baseline), score each derived run and write the table and chart (module docstring).
    Raises ValueError / RunError / LabelCacheError / BrodenError naming what to fix."""
    from pipeline.devices import check_device
    from pipeline.distributed import check_scheduler_args, check_shared, dask_scheduler
    alphas = [float(a) for a in spec.alphas]
    config.all_levels()
    check_scheduler_args(scheduler, cluster)
    check_device(config.device, local=not (scheduler or cluster))
    run = store.open_run(run_location, mode="r")
    store.check_layer(run, spec.layer)
    out = _out_dir(run, spec)
    K = int(store.activations(run, spec.layer).shape[1])
    labels = run_label_cache(run, config.dataset, label_cache, progress=config.progress,
                             log=log)
    check_categories(labels, config.categories)
    jobs: list[tuple[str, float | None]] = [("rotation", x) for x in alphas]
    if spec.baseline:
        jobs.append((spec.baseline, None))
    Q = rot.random_rotation(K, spec.seed)
    points = []
    with dask_scheduler(scheduler, cluster, log, security) as client:
        if client is not None:
            check_shared(run, labels)
        config.client = client
        for kind, alpha in jobs:
            dest = _derived_run(run, spec, out, Q, K, kind, alpha, config, log)
            points.append((kind, alpha, _score_derived(dest, spec, labels, config, log)))
    return _write_tables(out, spec, config, points)


def _write_tables(out: Path, spec: RotationSpec, config: ScoreConfig, points: list
                  ) -> RotationResult:
    stem = f"{store.layer_file_name(spec.layer)}-seed{spec.seed}"
    csv_path = write_csv(out / f"{stem}.csv", *rotation_rows(points))
    png = rotation_chart(out / f"{stem}.png", points,
                         title=f"{spec.layer}: unique detectors under rotation "
                               f"(seed {spec.seed}, IoU > {config.iou_threshold}, "
                               f"q = {config.quantile})")
    table = rotation_table(points, f"unique detectors of {spec.layer} against the rotation "
                                   f"(per-category sum by category; both totals):")
    return RotationResult(points, csv_path, png, table)
