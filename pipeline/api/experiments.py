"""The experiments on cached runs from a notebook, as DataFrames: :func:`compare`
(pipeline/reports/compare.py), :func:`rotate` (pipeline/experiments/rotation.py),
:func:`sweep` (pipeline/sweep.py) and :func:`null` (pipeline/null_model.py). Each is a
thin call into that code; :func:`layer_dissection` is the scoring stages up to the
dissection, for the ones that need no report files."""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from cache.cube import Cube
from cache.labels import LabelCache
from pipeline.api.results import (LayerResults, Results, layer_list, null_config,
                                  score_config, sweep_frame)
from pipeline.api.run import Log, Run, as_run, chosen_log
from pipeline.layer_stages import (DEFAULT_LEVELS, ScoreConfig, dissect_cube, layer_cube,
                                   layer_null)
from pipeline.reports import compare as compare_mod
from pipeline.reports.document import to_table
from pipeline.reports.tables import (CONVENTIONS, TOTALS, category_order, count_columns,
                                     count_values)
from pipeline.scoring import Dissection
from pipeline.stages import check_categories, needs_writing, run_label_cache, scoring_lock


@dataclass
class LayerDissection:
    """A layer's cube, its label cache, and the dissection at the config's quantile."""
    cube: Cube
    labels: LabelCache
    dissection: Dissection
    config: ScoreConfig


def layer_dissection(run: Run, layer: str, config: ScoreConfig,
                     label_cache: str | os.PathLike | None = None, log: Log = print
                     ) -> LayerDissection:
    """The stages of pipeline/stages.py's score_run without the report files: the label
    cache, the layer's thresholds and cube (computed and stored only when missing, under
    the run's lock), the dissection at ``config.quantile``."""
    config.all_levels()
    labels = run_label_cache(run.path, config.dataset, label_cache,
                             progress=config.progress, log=log)
    check_categories(labels, config.categories)
    writes = needs_writing(run.path, [layer], labels, config)
    with scoring_lock(run.path, log) if writes else contextlib.nullcontext():
        cube = layer_cube(run.path, layer, labels, config, log=log)
    d = dissect_cube(cube, labels, config.quantile, config.iou_threshold, config.categories)
    return LayerDissection(cube, labels, d, config)


def _config(quantile, iou_threshold, categories, device, levels, progress, dataset=None,
            null=None) -> ScoreConfig:
    return score_config(quantile=quantile, iou_threshold=iou_threshold,
                        categories=categories, null=null, name=None, top_images=0,
                        device=device, levels=levels, workers=None, tile_images=None,
                        dataset=dataset, results_dir=None, progress=progress)


# ------------------------------------------------------------------------ compare
def compare(*sources, iou_threshold: float = 0.04, layers: Sequence[str] | None = None,
            scoring: str = "") -> pd.DataFrame:
    """Sources side by side, each counted again at ``iou_threshold`` under both
    conventions (what scripts/compare.py prints). A source is a :class:`Results` (each
    of its layers), a :class:`LayerResults`, a :class:`Run`, a run directory (its
    scored layers; ``layers`` selects some, ``scoring`` a named scoring), a results
    document or a NetDissect result CSV. One row per source and category and a
    ``total`` row: source, category, units, iou_threshold, detectors,
    unique_top_labels, per_category_sum (empty where a source does not score the
    category). ``frame.attrs["settings"]`` holds what each source was scored with and
    warnings where they differ (compare.py's lines)."""
    tables = []
    for src in sources:
        if isinstance(src, Results):
            tables += [to_table(r.document, _name(src.run, r)) for r in src.values()]
        elif isinstance(src, LayerResults):
            tables.append(to_table(src.document, src.layer))
        else:
            path = src.path if isinstance(src, Run) else src
            tables += compare_mod.load_sources([path], layer_list(layers), scoring)
    seen: dict[str, int] = {}
    for t in tables:
        seen[t.name] = seen.get(t.name, 0) + 1
        if seen[t.name] > 1:
            t.name = f"{t.name}#{seen[t.name]}"
    summaries = compare_mod.compare(tables, iou_threshold)
    cats = category_order(tables)
    rows = []
    for t, s in zip(tables, summaries):
        for c in cats:
            rows.append([t.name, c, s["units"], s["iou_threshold"],
                         *(s[key][c] if c in s[key] else None for _, key, _ in CONVENTIONS)])
        rows.append([t.name, "total", s["units"], s["iou_threshold"],
                     *(s[tot] for tot in TOTALS)])
    frame = pd.DataFrame(rows, columns=["source", "category", "units", "iou_threshold",
                                        *TOTALS])
    frame.attrs["settings"] = compare_mod.settings_lines(tables, iou_threshold)
    return frame


def _name(run: Run, r: LayerResults) -> str:
    scoring = r.document["config"].get("name", "")
    return f"{Path(str(run.path)).name}{f'[{scoring}]' if scoring else ''}/{r.layer}"


# ------------------------------------------------------------------------- rotate
def rotate(run: "Run | str | os.PathLike", layer: str, *,
           alphas: Sequence[float] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0), seed: int = 0,
           baseline: str | None = None, out: str | os.PathLike | None = None,
           quantile: float = 0.005, iou_threshold: float = 0.04,
           categories: Sequence[str] | None = None, device: str = "auto",
           dtype: str = "float32", reports: bool = False,
           label_cache: str | os.PathLike | None = None, progress: bool = False,
           log: Log | None = None) -> pd.DataFrame:
    """The random-rotation experiment of scripts/rotate.py on ``layer``: Q^alpha (Q
    uniform on SO(K), from ``seed``) applied to the cached maps into derived runs under
    ``out`` (default RUN/rotations), each scored from scratch; ``baseline=
    "combination"`` adds random unit-norm combinations. One row per transform:
    transform, alpha (None for the baseline), detectors, unique_top_labels,
    per_category_sum, then ``<cat>-<total>``; ``frame.attrs`` holds the written "csv"
    and "png"."""
    from pipeline.experiments.rotation import RotationSpec, run_experiment
    handle = as_run(run)
    config = _config(quantile, iou_threshold, categories, device, (quantile,), progress)
    spec = RotationSpec(layer=layer, alphas=tuple(alphas), seed=seed, baseline=baseline,
                        dtype=dtype, out=out, reports=reports)
    res = run_experiment(handle.path, spec, config, label_cache=label_cache,
                         log=chosen_log(progress, log))
    cats = list(res.points[0][2]["categories"]) if res.points else []
    frame = pd.DataFrame([[kind, alpha, *count_values(s, cats)]
                          for kind, alpha, s in res.points],
                         columns=["transform", "alpha", *count_columns(cats)])
    frame.attrs.update(csv=res.csv_path, png=res.chart_path)
    return frame


# -------------------------------------------------------------------------- sweep
def sweep(run: "Run | str | os.PathLike | LayerResults", layer: str | None = None,
          thresholds="0.01:0.2:0.01", *, quantile: float = 0.005,
          categories: Sequence[str] | None = None, device: str = "auto",
          levels: Sequence[float] = DEFAULT_LEVELS,
          label_cache: str | os.PathLike | None = None, progress: bool = False,
          log: Log | None = None) -> pd.DataFrame:
    """Detectors and unique detectors (both conventions) of ``layer`` at each IoU
    threshold (a list, or ``"start:stop:step"`` as --sweep takes), from the cube (no
    replay when it is stored; no file written). ``run`` may be a LayerResults (its
    labelling and categories are swept; ``layer`` and the scoring options then do not
    apply). One row per threshold: iou_threshold, the three totals, ``<cat>-<total>``."""
    from pipeline import cli
    from pipeline import sweep as sweep_mod
    if isinstance(thresholds, str):
        thresholds = cli.parse_thresholds(thresholds, "thresholds=")
    if isinstance(run, LayerResults):
        d = dissect_cube(run.cube.full, run.labels, run.cube.quantile,
                         run.document["config"]["iou_threshold"],
                         run.document["config"]["categories"])
    else:
        if layer is None:
            raise ValueError("sweep(run, layer, thresholds): name the layer")
        config = _config(quantile, 0.04, categories, device, levels, progress)
        d = layer_dissection(as_run(run), layer, config, label_cache,
                             chosen_log(progress, log)).dissection
    return sweep_frame(sweep_mod.sweep(d.units, d.categories, thresholds))


# --------------------------------------------------------------------------- null
def null(run: "Run | str | os.PathLike", layer: str, *, kinds="both",
         permutations: int = 100, images: int | None = 500, seed: int = 0,
         quantile: float = 0.005, categories: Sequence[str] | None = None,
         device: str = "auto", levels: Sequence[float] = DEFAULT_LEVELS,
         label_cache: str | os.PathLike | None = None, progress: bool = False,
         log: Log | None = None) -> pd.DataFrame:
    """Permutation p-values of every unit's best IoU (score.py --null, README "Null
    model"), at the unit's threshold T_k at ``quantile``, on a seeded subsample of
    ``images`` images (None: all) with ``permutations`` replicates; kinds: "image",
    "spatial", "both" or a list. No file written. One row per unit: unit (0-based), concept
    (the label tested, its number; 0: none), label (its name), iou_sample (best IoU on the subsample),
    then per kind ``p_<kind>``, ``p_concept_<kind>``, ``mean_<kind>``, ``max_<kind>``;
    ``frame.attrs["images"]`` is the subsample's image indices."""
    if not isinstance(kinds, str):
        kinds = ",".join(kinds)
    cfg = null_config(kinds)
    cfg.permutations, cfg.images, cfg.seed = int(permutations), images, int(seed)
    cfg.check()
    config = _config(quantile, 0.04, categories, device, levels, progress, null=cfg)
    say = chosen_log(progress, log)
    ld = layer_dissection(as_run(run), layer, config, label_cache, say)
    res = layer_null(as_run(run).path, layer, ld.cube, ld.dissection, ld.labels, config,
                     log=say)
    names = ld.labels.label_names
    cols = {"unit": np.arange(len(res.concept)), "concept": res.concept,
            "label": [names[int(c)] if c else "" for c in res.concept],
            "iou_sample": res.iou_sample}
    for kind in res.kinds:
        cols.update({f"p_{kind}": res.p[kind], f"p_concept_{kind}": res.p_concept[kind],
                     f"mean_{kind}": res.null_mean[kind], f"max_{kind}": res.null_max[kind]})
    frame = pd.DataFrame(cols)
    frame.attrs["images"] = res.images
    return frame


def formulas(run: "Run | str | os.PathLike", layer: str, *, quantile: float = 0.005,
             length: int = 3, beam: int = 5, units=None,
             categories: Sequence[str] | None = None, label_cache=None,
             progress: bool = False, log: Log | None = None) -> pd.DataFrame:
    """Compositional explanations of ``layer`` (``netdissect compositional``;
    pipeline/compositional/explain.py): one row per unit (``unit`` from 1, as in the
    CSV written beside the results), its best formula and IoU per length and its best
    single label; ``attrs`` holds the csv and json paths."""
    from pipeline.compositional import compositional
    res = compositional(as_run(run).path, layer, quantile, length, beam, units, label_cache,
                        progress, categories=categories, log=chosen_log(progress, log))
    frame = pd.DataFrame(res.rows, columns=res.header)
    frame.attrs.update(csv=res.csv_path, json=res.json_path)
    return frame


def concept_vectors(run: "Run | str | os.PathLike", layer: str, concepts=None, *,
                    progress: bool = False, log: Log | None = None, **options
                    ) -> tuple[pd.DataFrame, np.ndarray]:
    """Concept vectors (Net2Vec) of ``layer`` (``netdissect concept-vectors``;
    pipeline/concept_vectors/experiment.py, whose keyword options it takes): (one row per
    concept, the weights (concepts, K))."""
    from pipeline.concept_vectors import concept_vectors as run_vectors
    return run_vectors(as_run(run).path, layer, concepts, progress=progress,
                       log=chosen_log(progress, log), **options)
