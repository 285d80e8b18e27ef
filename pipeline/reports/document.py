"""The results document: one versioned JSON file per scored layer, ``RUN/results/<layer>.json``;
built from a dissection, read and checked, and turned into the tables compare.py reads.

Every other report of a layer (the NetDissect CSV, :mod:`pipeline.reports.netdissect_csv`;
the HTML page, :mod:`pipeline.reports.html_page`) is generated from it, and
``scripts/compare.py`` reads it. Schema ``netdissect-zarr/results`` version 1 (README,
"The results document")::

    schema, schema_version, created (UTC ISO 8601)
    run:        path, layer, model {spec, weights, fingerprint}, dataset {path, fingerprint,
                num_images, image_size, seg_size}, activations {shape [N, K, h, w], dtype},
                preprocessing, extraction_versions, label_cache {path, fingerprint}
    versions:   of the scoring (tool, python, numpy, torch, zarr)
    config:     quantile, levels_in_cube, iou_threshold, categories (scored),
                all_categories, null (NullConfig as run, or null), name (the scoring's
                folder under results/, "" for the default scoring; absent before it
                existed: read as "")
    thresholds: quantile, T (K floats)
    summary:    count_detectors() at iou_threshold + layer, quantile, levels_in_cube,
                warnings (list of sentences, e.g. coarse maps: :func:`map_warnings`)
                [+ significant_detectors when the null was run]
    units:      K records in unit order: unit (from 1), label, label_number, category, iou,
                detector, [p_image, p_spatial, null {concept, iou_sample, mean_*, max_*}],
                best {category: {label, label_number, truth, activation, intersect, iou}}
    null:       null-model run facts (kinds, permutations, images, seed, seconds) or null
    analyses:   (version 2) {formulas, concept_vectors}: each null or the summary and file
                name of that analysis made beside the document at its very thresholds
                (pipeline/reports/analyses.py); with formulas, each unit record gains
                ``formula`` {formula, iou, length, single_iou}

A reader accepts documents of this schema with ``schema_version <= SCHEMA_VERSION`` and
refuses newer ones. Version 1 keeps the keys of the summary JSON it replaces
(``summary``, ``thresholds``, ``units``); version 2 adds ``analyses`` (a version 1
document reads as having none).
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
from pathlib import Path
from typing import Sequence

import numpy as np

from pipeline.reports.netdissect_csv import P_COLUMNS, CategoryStats, ResultTable, p_columns
from pipeline.scoring import Dissection, UnitResult

SCHEMA = "netdissect-zarr/results"
SCHEMA_VERSION = 2
ALPHA = 0.05


class ResultsError(ValueError):
    """A results document is missing, unreadable, or of another schema or a newer version."""


# ------------------------------------------------------------------------ building
def scoring_versions() -> dict:
    """Versions of what scored the run."""
    import torch
    import zarr
    try:
        from importlib.metadata import version
        tool = version("netdissect-zarr")
    except Exception:
        tool = "0.1.0"
    return {"tool": tool, "python": platform.python_version(), "numpy": np.__version__,
            "torch": torch.__version__, "zarr": zarr.__version__}


def run_metadata(run_attrs: dict, layer: str, run_path, acts_shape: Sequence[int],
                 acts_dtype: str, label_cache_path: str, label_fingerprint: str) -> dict:
    """The document's ``run`` block from the run's root attributes (cache/store.py)."""
    return {
        "path": str(run_path), "layer": layer,
        "model": dict(run_attrs.get("model", {})),
        "dataset": dict(run_attrs.get("dataset", {})),
        "activations": {"shape": [int(s) for s in acts_shape], "dtype": str(acts_dtype)},
        "preprocessing": dict(run_attrs.get("preprocessing", {})),
        "extraction_versions": dict(run_attrs.get("versions", {})),
        "label_cache": {"path": str(label_cache_path), "fingerprint": label_fingerprint},
    }


#: Maps with fewer cells than this on a side get a warning (:func:`map_warnings`): 7 x 7 is
#: the coarsest layer the published dissections scored (ResNet layer4 at 224 px).
COARSE_MAPS = 7


def map_warnings(shape) -> list[str]:
    """The warnings of a layer whose activation cache has ``shape`` (N, K, h, w): maps
    coarser than :data:`COARSE_MAPS` cells on a side inflate the detector counts."""
    if not shape or len(shape) != 4 or min(shape[2:]) >= COARSE_MAPS:
        return []
    h, w = shape[2:]
    return [f"coarse maps: {h} x {w} cells per image (fewer than {COARSE_MAPS} on a side). "
            f"Upsampled, a unit's mask is a few smooth blobs per image, which overlap large "
            f"concepts (colours, whole-image scene and texture labels, big objects) well "
            f"enough to pass the IoU threshold by chance: detector counts are inflated and "
            f"labels say little. Extract at a larger --input-size, or an earlier layer"]


def build_document(d: Dissection, intersect: np.ndarray, activation: np.ndarray,
                   label_pixels: np.ndarray, categories: Sequence[str],
                   label_names: Sequence[str], thresholds: np.ndarray, *, layer: str,
                   quantile: float, levels: Sequence[float], run: dict,
                   null=None, null_config: dict | None = None, name: str = "") -> dict:
    """The results document of one layer (module docstring).

    intersect (K, L), activation (K, G) over all G ``categories``, label_pixels (L,) at
    ``quantile``; thresholds (K,) T_k; null: a pipeline.null_model.NullResult or None.
    """
    cats = list(categories)
    summary = d.summary()
    summary.update({"layer": layer, "quantile": float(quantile),
                    "levels_in_cube": [float(q) for q in levels],
                    "warnings": map_warnings(run.get("activations", {}).get("shape"))})
    units = []
    for u in d.units:
        rec = {"unit": u.unit + 1, "label": label_names[u.label] if u.category else "",
               "label_number": int(u.label), "category": u.category, "iou": float(u.iou),
               "detector": bool(u.iou > d.iou_threshold)}
        if null is not None:
            rec.update(_null_fields(null, u.unit, label_names))
        rec["best"] = {c: _best_in_category(u, c, cats.index(c), intersect, activation,
                                            label_pixels, label_names)
                       for c in d.categories}
        units.append(rec)
    null_block = None
    if null is not None:
        sig = {}
        for kind in null.kinds:
            col = P_COLUMNS[kind]
            sig[col] = sum(1 for r in units if r["detector"] and r[col] <= ALPHA)
        summary["significant_detectors"] = {"alpha": ALPHA, **sig}
        null_block = {"kinds": list(null.kinds), "permutations": int(null.permutations),
                      "images": int(len(null.images)), "seed": int(null.seed),
                      "seconds": round(float(null.seconds), 3)}
    return {
        "schema": SCHEMA, "schema_version": SCHEMA_VERSION,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "run": run,
        "versions": scoring_versions(),
        "config": {"quantile": float(quantile), "levels_in_cube": [float(q) for q in levels],
                   "iou_threshold": float(d.iou_threshold), "categories": list(d.categories),
                   "all_categories": cats, "null": null_config, "name": name},
        "thresholds": {"quantile": float(quantile), "T": [float(t) for t in thresholds]},
        "summary": summary,
        "units": units,
        "null": null_block,
        "analyses": {"formulas": None, "concept_vectors": None},
    }


def _null_fields(null, k: int, label_names: Sequence[str]) -> dict:
    """The null-model keys of unit k's record: its p-value columns, then ``null``."""
    rec = {P_COLUMNS[kind]: float(null.p[kind][k]) for kind in null.kinds}
    rec["null"] = {
        "iou_sample": float(null.iou_sample[k]),
        "concept": label_names[int(null.concept[k])] if null.concept[k] else "",
        "concept_iou_sample": float(null.concept_iou_sample[k]),
        **{f"p_concept_{kd}": float(null.p_concept[kd][k]) for kd in null.kinds},
        **{f"mean_{kd}": float(null.null_mean[kd][k]) for kd in null.kinds},
        **{f"max_{kd}": float(null.null_max[kd][k]) for kd in null.kinds}}
    return rec


def _best_in_category(u: UnitResult, c: str, g: int, intersect: np.ndarray,
                      activation: np.ndarray, label_pixels: np.ndarray,
                      label_names: Sequence[str]) -> dict:
    """``best[c]`` of unit u's record; g: c's index in all categories."""
    if c in u.best:
        j, iou = u.best[c]
        return {"label": label_names[j], "label_number": int(j),
                "truth": int(label_pixels[j]), "activation": int(activation[u.unit, g]),
                "intersect": int(intersect[u.unit, j]), "iou": float(iou)}
    return {"label": "", "label_number": None, "truth": 0,       # a category without labels
            "activation": int(activation[u.unit, g]), "intersect": 0, "iou": 0.0}


# --------------------------------------------------------------- reading, checking
def check_document(doc, where: str = "results document") -> dict:
    """Raise ResultsError unless ``doc`` is a results document this code can read."""
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        got = doc.get("schema") if isinstance(doc, dict) else type(doc).__name__
        raise ResultsError(f"{where}: not a results document (schema {got!r}, expected "
                           f"{SCHEMA!r}); re-score the run with scripts/score.py")
    v = doc.get("schema_version")
    if not isinstance(v, int) or v < 1 or v > SCHEMA_VERSION:
        raise ResultsError(f"{where}: schema_version {v!r} is not supported (this code "
                           f"reads 1..{SCHEMA_VERSION}); update the tool or re-score")
    for key in ("config", "summary", "units", "thresholds", "run"):
        if key not in doc:
            raise ResultsError(f"{where}: missing key {key!r}")
    return doc


def read_document(path: str | os.PathLike) -> dict:
    """The checked results document at ``path`` (ResultsError names the file)."""
    path = Path(path)
    try:
        with open(path) as f:
            doc = json.load(f)
    except OSError as e:
        raise ResultsError(f"{path}: cannot read ({e.strerror})") from None
    except json.JSONDecodeError as e:
        raise ResultsError(f"{path}: not JSON ({e})") from None
    return check_document(doc, str(path))


def document_path(results_dir: str | os.PathLike, layer_file: str) -> Path:
    """``<results_dir>/<layer_file>.json``."""
    return Path(results_dir) / f"{layer_file}.json"


# ------------------------------------------------------------------ as result tables
def to_table(doc: dict, name: str | None = None) -> ResultTable:
    """The document as a :class:`ResultTable` (string labels), as compare.py reads it."""
    cats = list(doc["config"]["categories"])
    units, stats = [], []
    for u in doc["units"]:
        best = {c: (u["best"][c]["label"], float(u["best"][c]["iou"])) for c in cats}
        units.append(UnitResult(u["unit"] - 1, u["label"], u["category"], float(u["iou"]),
                                best))
        stats.append({c: CategoryStats(b["label"], int(b["truth"]), int(b["activation"]),
                                       int(b["intersect"]), float(b["iou"]))
                      for c, b in ((c, u["best"][c]) for c in cats)})
    extra = {col: [repr(float(u[col])) for u in doc["units"]] for col in p_columns(doc)}
    cfg = doc["config"]
    settings = {"quantile": cfg.get("quantile"), "iou_threshold": cfg.get("iou_threshold"),
                "categories": list(cfg.get("categories") or []),
                "all_categories": list(cfg.get("all_categories") or cats),
                "scoring": cfg.get("name", ""), "null": bool(cfg.get("null"))}
    return ResultTable(name or doc["run"].get("layer", "layer"), cats, units, stats, extra,
                       str(doc["run"].get("path", "")), settings)


def run_tables(run_dir: str | os.PathLike, layers: Sequence[str] | None = None,
               scoring: str = "") -> list[ResultTable]:
    """ResultTables of a run's scored layers (from the results documents of the
    ``scoring`` named, default the plain results/<layer>.json), named
    ``<run dir name>/<layer>`` (``<run dir name>[<scoring>]/<layer>`` for a named one), in
    the run's layer order. ``layers`` selects some."""
    from cache import store
    run = store.open_run(run_dir, mode="r")
    names = store.layer_names(run)
    if layers:
        unknown = [l for l in layers if l not in names]
        if unknown:
            raise ResultsError(f"--layers: {unknown} not in the run {run_dir} (it has "
                               f"{names})")
        names = [l for l in names if l in layers]
    rdir = Path(store.results_dir(run))
    if scoring:
        rdir = rdir / scoring
        if not rdir.is_dir():
            raise ResultsError(f"{run_dir}: no scoring named {scoring!r} (no {rdir}); it "
                               f"has {scorings(run_dir) or 'only the default scoring'}")
    tag = f"[{scoring}]" if scoring else ""
    tables = []
    for layer in names:
        path = document_path(rdir, store.layer_file_name(layer))
        if not path.is_file():
            if layers:
                raise ResultsError(f"{run_dir}: layer {layer!r} has not been scored (no "
                                   f"{path}); run scripts/score.py {run_dir} --layer {layer}")
            continue
        tables.append(to_table(read_document(path), f"{Path(run_dir).name}{tag}/{layer}"))
    if not tables:
        raise ResultsError(f"{run_dir}: no scored layer (no {rdir}/<layer>.json); run "
                           f"scripts/score.py {run_dir} first")
    return tables


def scorings(run_dir: str | os.PathLike) -> list[str]:
    """The named scorings of a run: the folders of results/ holding results documents."""
    from cache import store
    rdir = Path(store.results_dir(run_dir))
    if not rdir.is_dir():
        return []
    return sorted(d.name for d in rdir.iterdir() if d.is_dir() and any(d.glob("*.json")))
