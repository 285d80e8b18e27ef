"""Scoring from a notebook: :func:`score` runs what ``scripts/score.py`` runs
(:func:`pipeline.stages.score_run`, writing the same files in the same place) and returns
:class:`Results`: per layer the units as a pandas DataFrame, the summary under both
conventions, the IoU cube as numpy arrays and the paths of the files written."""
from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from cache import store
from cache.cube import Cube
from cache.labels import LabelCache
from pipeline.api.run import Log, Run, as_run, chosen_log
from pipeline.layer_stages import DEFAULT_LEVELS, ScoreConfig, dissect_cube
from pipeline.null_model import KINDS, NullConfig
from pipeline.reports import document as results_doc
from pipeline.reports.netdissect_csv import FIELDS, p_columns
from pipeline.reports.tables import CONVENTIONS, TOTALS
from pipeline.stages import score_run


# ---------------------------------------------------------------- frames of a document
def units_frame(doc: dict) -> pd.DataFrame:
    """One row per unit of a results document, in unit order: ``unit`` (0-based: the
    channel index; the CSV and the document number units from 1), ``label``,
    ``label_number``, ``category``, ``iou`` (best IoU; the CSV's ``score``),
    ``threshold`` (T_k at the quantile), ``detector``, ``p_image``/``p_spatial`` when the
    null model ran, then per scored category g ``g-label``, ``g-truth``, ``g-activation``,
    ``g-intersect``, ``g-iou`` (the unit's best concept in g and its counts, as the CSV
    names them)."""
    cats = list(doc["config"]["categories"])
    pcols = p_columns(doc)
    T = doc["thresholds"]["T"]
    rows = []
    for u in doc["units"]:
        row = {"unit": u["unit"] - 1, "label": u["label"], "label_number": u["label_number"],
               "category": u["category"], "iou": float(u["iou"]),
               "threshold": float(T[u["unit"] - 1]), "detector": bool(u["detector"])}
        row.update({col: float(u[col]) for col in pcols})
        for c in cats:
            row.update({f"{c}-{f}": u["best"][c][f] for f in FIELDS})
        rows.append(row)
    return pd.DataFrame(rows)


def counts_frame(summary: dict) -> pd.DataFrame:
    """A summary's counts: one row per category and ``total``; columns ``detectors``,
    ``unique_top_labels``, ``per_category_sum`` (the published convention)."""
    rows = {c: {total: summary[key][c] for total, key, _ in CONVENTIONS}
            for c in summary["categories"]}
    rows["total"] = {t: summary[t] for t in TOTALS}
    return pd.DataFrame.from_dict(rows, orient="index")[list(TOTALS)]


@dataclass
class LayerCube:
    """A layer's IoU cube at the scoring's quantile, as numpy arrays:
    iou (K, L) float64 (column j = label number j; columns of unscored categories 0),
    intersect (K, L) int64 I(k, c), activation (K, G) int64 (active pixels on the
    images of each category), label_pixels (L,) int64 |L_c|, thresholds (K,) float64
    T_k; label_names (L,), categories (G,) and primary (L,) category index of each
    label (-1: none); full: every stored level (cache.cube.Cube: levels (V,),
    thresholds (V, K), intersect (V, K, L), activation (V, K, G))."""
    quantile: float
    iou: np.ndarray
    intersect: np.ndarray
    activation: np.ndarray
    label_pixels: np.ndarray
    thresholds: np.ndarray
    label_names: list[str]
    categories: list[str]
    primary: np.ndarray
    full: Cube = field(repr=False)


@dataclass
class LayerResults:
    """One scored layer. units: :func:`units_frame`; summary: the results document's
    summary (``detectors``, ``unique_top_labels``, ``per_category_sum``, each also
    ``_per_category``, plus iou_threshold, quantile, warnings); counts: the summary as a
    DataFrame (:func:`counts_frame`); cube: :class:`LayerCube`; paths: the files written
    ({"json", "csv", "html"} and "sweep_csv"/"sweep_png" with a sweep; {} for
    :meth:`at`); document: the results document; sweep: per-threshold summaries (a
    DataFrame) when a sweep was asked for; labels: the label cache scored against."""
    layer: str
    units: pd.DataFrame
    summary: dict
    cube: LayerCube
    paths: dict[str, Path | str]
    document: dict = field(repr=False)
    sweep: pd.DataFrame | None = None
    labels: LabelCache | None = field(default=None, repr=False)

    @property
    def counts(self) -> pd.DataFrame:
        return counts_frame(self.summary)

    @property
    def detectors(self) -> pd.DataFrame:
        """The rows of :attr:`units` whose best IoU exceeds the threshold."""
        return self.units[self.units["detector"]]

    def at(self, iou_threshold: float | None = None,
           categories: Sequence[str] | None = None) -> "LayerResults":
        """This layer scored again from its cube at another IoU threshold or category
        subset, in memory: no replay, no file written (``score(run, iou_threshold=...)``
        writes the named scoring as score.py would). p-values are not carried over."""
        cfg = self.document["config"]
        thr = cfg["iou_threshold"] if iou_threshold is None else float(iou_threshold)
        cats = list(categories) if categories is not None else (
            None if cfg["categories"] == cfg["all_categories"] else cfg["categories"])
        name = ScoreConfig(quantile=cfg["quantile"], iou_threshold=thr,
                           categories=cats).scoring_name()
        doc = _document(self.cube.full, self.labels, self.cube.quantile, thr, cats,
                        self.document["run"], name)
        return results_of(self.layer, doc, self.cube.full, self.labels, {})


def _document(cube: Cube, labels: LabelCache, quantile: float, iou_threshold: float,
              categories, run_meta: dict, name: str) -> dict:
    """The results document (pipeline.reports.document) of a cube at one level, built in
    memory from the same dissection score.py writes."""
    v = cube.level_index(quantile)
    d = dissect_cube(cube, labels, quantile, iou_threshold, categories)
    return results_doc.build_document(
        d, cube.intersect[v], cube.activation[v], cube.label_pixels, cube.categories,
        labels.label_names, cube.thresholds[v], layer=run_meta.get("layer", ""),
        quantile=quantile, levels=cube.levels, run=run_meta, name=name)


def results_of(layer: str, doc: dict, cube: Cube, labels: LabelCache, paths: dict
               ) -> LayerResults:
    """The LayerResults of a results document and the cube it was made from."""
    q = float(doc["config"]["quantile"])
    v = cube.level_index(q)
    d = dissect_cube(cube, labels, q, float(doc["config"]["iou_threshold"]),
                     doc["config"]["categories"])
    lc = LayerCube(q, d.iou, cube.intersect[v], cube.activation[v], cube.label_pixels,
                   cube.thresholds[v], labels.label_names, list(cube.categories),
                   labels.primary_category, cube)
    return LayerResults(layer, units_frame(doc), doc["summary"], lc, paths, doc,
                        labels=labels)


class Results(Mapping):
    """The scored layers of one :func:`score` call: ``results[layer]`` is a
    :class:`LayerResults`; with one layer, ``results.units``, ``.summary``, ``.counts``,
    ``.cube``, ``.paths``, ``.at(...)`` are that layer's."""

    def __init__(self, run: Run, layers: dict[str, LayerResults], config: ScoreConfig):
        self.run, self.config, self._layers = run, config, layers

    def __getitem__(self, layer: str) -> LayerResults:
        try:
            return self._layers[layer]
        except KeyError:
            raise KeyError(f"layer {layer!r} was not scored here; scored: "
                           f"{list(self._layers)}") from None

    def __iter__(self):
        return iter(self._layers)

    def __len__(self) -> int:
        return len(self._layers)

    @property
    def layers(self) -> list[str]:
        return list(self._layers)

    def only(self) -> LayerResults:
        """The one layer scored (ValueError naming the layers when there are several)."""
        if len(self._layers) != 1:
            raise ValueError(f"{len(self._layers)} layers were scored ({self.layers}): "
                             f"pick one, results['{self.layers[0]}']")
        return next(iter(self._layers.values()))

    units = property(lambda self: self.only().units)
    summary = property(lambda self: self.only().summary)
    counts = property(lambda self: self.only().counts)
    cube = property(lambda self: self.only().cube)
    paths = property(lambda self: self.only().paths)

    def at(self, iou_threshold: float | None = None,
           categories: Sequence[str] | None = None) -> "Results":
        """Every layer :meth:`LayerResults.at` the new threshold or categories."""
        return Results(self.run, {k: v.at(iou_threshold, categories)
                                  for k, v in self._layers.items()}, self.config)

    def __repr__(self) -> str:
        parts = [f"{k}: {v.summary['detectors']} detectors, "
                 f"{v.summary['per_category_sum']} unique (per-cat)"
                 for k, v in self._layers.items()]
        return f"Results({str(self.run.path)!r}; {'; '.join(parts)})"


# --------------------------------------------------------------------------- scoring
def null_config(null) -> NullConfig | None:
    """``null=`` of :func:`score`: None/False (no null model), True or "both", "image",
    "spatial", a dict of NullConfig fields, or a NullConfig."""
    if null is None or null is False:
        return None
    if isinstance(null, NullConfig):
        cfg = null
    elif null is True or null == "both":
        cfg = NullConfig(kinds=tuple(KINDS))
    elif isinstance(null, str):
        cfg = NullConfig(kinds=tuple(k.strip() for k in null.split(",")))
    elif isinstance(null, Mapping):
        cfg = NullConfig(**dict(null))
    else:
        raise ValueError(f"null={null!r}: expected True, 'image', 'spatial', 'both', a "
                         f"dict of NullConfig fields or a NullConfig")
    cfg.check()
    return cfg


def layer_list(layer) -> list[str] | None:
    """``layer=`` of the API: None (every layer), a name, ``"a,b"`` or a list."""
    if layer is None:
        return None
    if isinstance(layer, str):
        return [t.strip() for t in layer.split(",") if t.strip()]
    return list(layer)


def score_config(*, quantile: float, iou_threshold: float, categories, null, name,
                 top_images: int, device: str, levels, workers, tile_images, dataset,
                 results_dir, progress: bool) -> ScoreConfig:
    """The ScoreConfig of the API's keyword arguments (what pipeline.cli.score_config
    builds from score.py's options)."""
    if isinstance(categories, str):
        categories = [c.strip() for c in categories.split(",") if c.strip()]
    return ScoreConfig(quantile=quantile, iou_threshold=iou_threshold,
                       categories=list(categories) if categories else None, device=device,
                       levels=tuple(levels), tile_images=tile_images, workers=workers,
                       progress=progress, null=null_config(null), top_images=top_images,
                       dataset=dataset, results_dir=results_dir, name=name)


def _read_document(path: Path | str) -> dict:
    """The results document beside a CSV that scoring wrote (local path or URL)."""
    if store.is_url(str(path)):
        import fsspec
        with fsspec.open(str(path), "r") as f:
            return results_doc.check_document(json.load(f), str(path))
    return results_doc.read_document(path)


def _paths(csv_path: Path | str, page_name: str) -> dict[str, Path | str]:
    """The report files of a layer beside its CSV: {"json", "csv", "html"}."""
    if store.is_url(str(csv_path)):
        csv_path = str(csv_path)
        return {"json": csv_path[:-len(".csv")] + ".json", "csv": csv_path,
                "html": f"{csv_path.rsplit('/', 1)[0]}/{page_name}"}
    p = Path(csv_path)
    return {"json": p.with_suffix(".json"), "csv": p, "html": p.with_name(page_name)}


def score(run: "Run | str | os.PathLike", layer: "str | Sequence[str] | None" = None, *,
          quantile: float = 0.005, iou_threshold: float = 0.04,
          categories: "Sequence[str] | str | None" = None, null=None,
          name: str | None = None, top_images: int = 8, device: str = "auto",
          levels: Sequence[float] = DEFAULT_LEVELS, sweep=None,
          dataset: str | os.PathLike | None = None,
          label_cache: str | os.PathLike | None = None,
          results_dir: str | os.PathLike | None = None, workers: int | None = None,
          tile_images: int | None = None, scheduler: str | None = None,
          cluster: str | None = None, progress: bool = False,
          log: Log | None = None) -> Results:
    """Score ``layer`` (a name, a list, or None: every layer) of ``run`` exactly as
    ``scripts/score.py`` does, with its options as keywords: exact thresholds, the IoU
    cube (stored in the run; a new ``iou_threshold``/``categories``, or a ``quantile``
    among the cube's ``levels``, needs no replay), and the report files in the same
    place (``results/<layer>.*`` for the default settings, ``results/<name>/`` for
    others: ScoreConfig.scoring_name()). null: the null model (True, "image", "spatial",
    or a dict of pipeline.null_model.NullConfig fields); sweep: IoU thresholds (a list or
    ``"0.01:0.2:0.01"``), also written as score.py --sweep writes them. progress: tqdm
    bars and log lines (else silent); log: where log lines go instead."""
    from pipeline import cli
    handle = as_run(run)
    config = score_config(quantile=quantile, iou_threshold=iou_threshold,
                          categories=categories, null=null, name=name,
                          top_images=top_images, device=device, levels=levels,
                          workers=workers, tile_images=tile_images, dataset=dataset,
                          results_dir=results_dir, progress=progress)
    if isinstance(sweep, str):
        sweep = cli.parse_thresholds(sweep, "sweep=")
    scores = score_run(handle.path, config, layers=layer_list(layer),
                       label_cache=label_cache, sweep=list(sweep) if sweep else None,
                       scheduler=scheduler, cluster=cluster, log=chosen_log(progress, log))
    out = {}
    for s in scores:
        paths = _paths(s.csv_path, config.page_name(store.layer_file_name(s.layer)))
        doc = _read_document(paths["json"])
        labels = LabelCache.open(doc["run"]["label_cache"]["path"])
        res = results_of(s.layer, doc, s.cube, labels, paths)
        if s.sweep is not None:
            res.paths.update(sweep_csv=s.sweep_files[0], sweep_png=s.sweep_files[1])
            res.sweep = sweep_frame(s.sweep)
        out[s.layer] = res
    return Results(handle, out, config)


def sweep_frame(summaries: Sequence[dict]) -> pd.DataFrame:
    """Per-threshold summaries as a DataFrame: ``iou_threshold``, the three totals, then
    ``<cat>-<total>`` per category (the columns of <layer>.sweep.csv)."""
    from pipeline.reports.tables import count_columns, count_values
    cats = list(summaries[0]["categories"]) if summaries else []
    return pd.DataFrame([[s["iou_threshold"], *count_values(s, cats)] for s in summaries],
                        columns=["iou_threshold", *count_columns(cats)])


def load(run: "Run | str | os.PathLike", layer: "str | Sequence[str] | None" = None, *,
         scoring: str = "", label_cache: str | os.PathLike | None = None) -> Results:
    """The Results of a scoring done before (by :func:`score` or score.py), read back
    without scoring again: the results documents of ``scoring`` (a name under results/,
    "" for the default scoring) and the cube stored in the run. ``layer``: those layers
    (default every layer scored). ValueError naming the fix when a layer was not scored
    or its stored cube no longer matches the run (score it again)."""
    from cache.cube import read_cube
    from pipeline.layer_stages import cube_source
    handle = as_run(run)
    rdir = Path(str(store.results_dir(handle.path)))
    rdir = rdir / scoring if scoring else rdir
    wanted = layer_list(layer)
    out = {}
    for name in wanted or handle.layers:
        stem = store.layer_file_name(name)
        doc_path = rdir / f"{stem}.json"
        if not doc_path.is_file():
            if wanted:
                raise ValueError(f"layer {name!r} of {handle.path} has no scoring "
                                 f"{scoring!r} (no {doc_path}): score it with "
                                 f"api.score(run, {name!r}, ...)")
            continue
        doc = results_doc.read_document(doc_path)
        labels = LabelCache.open(label_cache or doc["run"]["label_cache"]["path"])
        cube = read_cube(store.layer_group(handle.path, name),
                         cube_source(handle.path, name, labels))
        if cube is None or not np.any(np.abs(cube.levels - doc["config"]["quantile"])
                                      <= 1e-12):
            raise ValueError(f"layer {name!r} of {handle.path}: the stored cube is missing "
                             f"or was made from other caches than {doc_path}: score it "
                             f"again with api.score(run, {name!r}, ...)")
        paths = {k: p for k, p in _paths(rdir / f"{stem}.csv", f"{stem}.html").items()
                 if p.is_file()}
        out[name] = results_of(name, doc, cube, labels, paths)
    if not out:
        raise ValueError(f"{handle.path}: no layer has the scoring {scoring!r} (no "
                         f"{rdir}/<layer>.json): score the run with api.score(run)")
    cfg = doc["config"]
    cats = None if cfg["categories"] == cfg["all_categories"] else cfg["categories"]
    return Results(handle, out, ScoreConfig(quantile=cfg["quantile"],
                                            iou_threshold=cfg["iou_threshold"],
                                            categories=cats, name=cfg.get("name") or None))
