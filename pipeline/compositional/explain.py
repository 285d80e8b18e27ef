"""Compositional explanations of a layer's units from a run's caches: the stage that
reads or computes the label-set counts and runs the beam search for every unit.

    compositional(run, layer, quantile, length, beam, units)
        T_k at the quantile           stored thresholds (computed once, as scoring does)
        set counts                    stored in the run, or one replay (set_counts.py)
        beam search per unit          search.py, no pass over the caches
        -> results/<layer>.formulas.csv and .formulas.json

Definitions (pipeline/compositional/search.py): M_k(x) = S_k(x) > T_k as in the
classic scoring, T_k its exact (1 - q) quantile; a label's mask is L_c(x) (a scalar
label, e.g. a scene, covers every pixel of its image); a formula's mask is its Boolean
combination, pixel by pixel; IoU = |M ∩ F| / |M ∪ F| summed over *every* image of the
run (no X_g restriction: a formula mixes categories). Re-running with another length,
beam, unit range or category subset reuses the stored counts (no replay).

Where this differs from the authors' code (jayelm/compexp, vision/): T_k is the exact
quantile, not a sketch; S_k is this project's normative upsampling, not PIL's; the
dataset is the run's (they used Broden's ADE20K images and the categories object, part,
scene, texture, color: pass ``categories`` for the atoms); extensions that leave a
formula's mask unchanged and candidates whose mask equals a kept one are dropped (they
keep them, so their beam can hold copies of one mask); IoU has no 1e-10 in the union.
Like theirs: a scalar label covers its whole image, the union is over the whole
dataset, the beam keeps the best of the old beam and its extensions, every label may
extend a formula, and only singles with IoU > 0 start the beam.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import numpy as np

from cache import store
from cache.set_counts import SetCounts, counts_source, read_set_counts, write_set_counts
from pipeline.compositional.search import SetIndex, UnitFormulas, search_unit
from pipeline.reports.analyses import FORMULAS_SCHEMA as SCHEMA
from pipeline.reports.analyses import analysis_folder, analysis_written

__all__ = ["compositional", "CompositionalResult", "parse_units", "formulas_name",
           "layer_set_counts"]

SCHEMA_VERSION = 1
DEFAULT_QUANTILE, DEFAULT_LENGTH, DEFAULT_BEAM = 0.005, 3, 5


@dataclass
class CompositionalResult:
    """The search's outcome for one layer: one UnitFormulas per searched unit (``unit``
    0-based; rows and files number units from 1), the CSV rows, the files written and
    the timings {set_counts_seconds, set_counts_reused, sets, entries, search_seconds}."""
    layer: str
    quantile: float
    length: int
    beam: int
    units: list[UnitFormulas]
    header: list[str]
    rows: list[list]
    csv_path: Path | str
    json_path: Path | str
    stats: dict = field(default_factory=dict)


def parse_units(spec, num_units: int) -> list[int]:
    """Unit numbers from 1 (as in the CSVs): None -> all; ``"1-10,12"`` or an iterable of
    ints -> those, sorted and distinct. ValueError naming --units when one is outside
    1..num_units or the text does not parse."""
    if spec is None:
        return list(range(1, num_units + 1))
    out: set[int] = set()
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    for item in items:
        try:
            if isinstance(item, str) and "-" in item.strip()[1:]:
                a, b = item.split("-", 1)
                lo, hi = int(a), int(b)
                if hi < lo:
                    raise ValueError
                out.update(range(lo, hi + 1))
            else:
                out.add(int(item))
        except ValueError:
            raise ValueError(f"--units: {item!r} is not a unit number or range such as "
                             f"1-10 (units are numbered from 1)") from None
    bad = [u for u in out if not 1 <= u <= num_units]
    if bad:
        raise ValueError(f"--units: {sorted(bad)[:5]} outside 1..{num_units} (the layer's "
                         f"units, numbered from 1)")
    return sorted(out)


def formulas_name(layer_file: str, length: int, beam: int, units: str | None,
                  categories: Sequence[str] | None) -> str:
    """File stem ``<layer>.formulas``, with the settings that differ from the defaults
    appended (``.len2-beam10-units1-10-cat-object+part``) so searches never overwrite
    each other (the quantile picks the folder, as for scoring)."""
    parts = []
    if length != DEFAULT_LENGTH:
        parts.append(f"len{length}")
    if beam != DEFAULT_BEAM:
        parts.append(f"beam{beam}")
    if units is not None:
        parts.append("units" + "".join(ch if ch.isalnum() or ch in "-," else "_"
                                       for ch in str(units)).replace(",", "+"))
    if categories:
        parts.append("cat-" + "+".join(categories))
    return f"{layer_file}.formulas" + (f".{'-'.join(parts)}" if parts else "")


def layer_set_counts(run, layer: str, labels, quantile: float, *, workers: int | None = None,
                     progress: bool = False, log=print) -> tuple[SetCounts, dict]:
    """(SetCounts at ``quantile``, stats): the stored ones when current, else computed
    by one replay (thresholds first, as scoring computes them) and stored in the run
    under its lock. Stats: set_counts_seconds, set_counts_reused, sets, entries."""
    from pipeline.layer_stages import cube_source, layer_source
    from cache.cube import read_thresholds, thresholds_at
    from pipeline.stages import scoring_lock
    group = store.layer_group(run, layer)
    T = thresholds_at(read_thresholds(group, layer_source(run, layer)), quantile)
    if T is not None:
        source = counts_source(cube_source(run, layer, labels), quantile, T)
        counts = read_set_counts(group, quantile, source, log)
        if counts is not None:
            return counts, {"set_counts_seconds": 0.0, "set_counts_reused": True,
                            "sets": counts.num_sets, "entries": int(counts.active.shape[0])}
    with scoring_lock(run, log):
        return _compute(run, layer, labels, quantile, workers, progress, log)


def _compute(run, layer, labels, quantile, workers, progress, log) -> tuple[SetCounts, dict]:
    from cache.integrity import check_present
    from pipeline.compositional.set_counts import replay_set_counts
    from pipeline.layer_stages import cube_source, layer_thresholds, named_failures
    check_present(run, layer, labels)       # an absent chunk would be read as zeros
    _, T = layer_thresholds(run, layer, [quantile], log=log, check=False, progress=progress)
    T = T[0]
    acts = store.activations(run, layer)
    log(f"[{layer}] label-set counts at q = {quantile:g}: {acts.shape[0]} images x "
        f"{acts.shape[1]} units ...")
    with named_failures(run, layer, labels):
        counts, st = replay_set_counts(acts, store.maxima(run, layer), labels, quantile, T,
                                       workers=workers, progress=progress,
                                       desc=f"set counts {layer}")
    source = counts_source(cube_source(run, layer, labels), quantile, T)
    group = store.layer_group(run, layer, mode="a")
    with store.writing(store.store_location(group.store, group.path)):
        write_set_counts(group, counts, source)
    log(f"[{layer}] label-set counts: {st['seconds']:.1f} s, {st['sets']} label sets, "
        f"{st['entries']} (unit, set) entries")
    return counts, {"set_counts_seconds": st["seconds"], "set_counts_reused": False,
                    "sets": st["sets"], "entries": st["entries"]}


def compositional(run, layer: str, quantile: float = DEFAULT_QUANTILE,
                  length: int = DEFAULT_LENGTH, beam: int = DEFAULT_BEAM, units=None,
                  label_cache: str | os.PathLike | None = None, progress: bool = False, *,
                  categories: Sequence[str] | None = None, dataset=None,
                  workers: int | None = None, results_dir=None, log=print
                  ) -> CompositionalResult:
    """Best formulas (AND, OR, AND NOT; up to ``length`` atoms; beam ``beam``) of the
    units ``units`` (numbers from 1: None for all, ``"1-10"``, or a list) of ``layer``
    at ``quantile``; atoms are the labels of ``categories`` (default: all). Writes
    ``results/[q<quantile>/]<layer>.formulas[...].csv`` and ``.json`` (under
    ``results_dir`` when given). Raises ValueError / RunError / LabelCacheError naming
    what to fix."""
    from pipeline.stages import check_categories, run_label_cache
    if not 0.0 < float(quantile) < 1.0:
        raise ValueError(f"--quantile must be in (0, 1), got {quantile}")
    for flag, n in (("--length", length), ("--beam", beam)):
        if int(n) < 1:
            raise ValueError(f"{flag} must be at least 1, got {n}")
    run = store.open_run(run, mode="r")
    store.check_layer(run, layer)
    K = int(store.activations(run, layer).shape[1])
    unit_numbers = parse_units(units, K)
    labels = run_label_cache(run, dataset, label_cache, progress=progress, log=log)
    check_categories(labels, categories)
    counts, stats = layer_set_counts(run, layer, labels, float(quantile), workers=workers,
                                     progress=progress, log=log)
    t0 = time.perf_counter()
    index = SetIndex(counts, labels.num_labels)
    allowed = _allowed(labels, categories)
    found = [search_unit(index, u - 1, allowed, length, beam) for u in unit_numbers]
    stats["search_seconds"] = time.perf_counter() - t0
    log(f"[{layer}] formula search (length {length}, beam {beam}): {len(found)} units in "
        f"{stats['search_seconds']:.1f} s")
    header, rows = formula_rows(found, labels, length)
    doc = _document(run, layer, labels, counts, found, float(quantile), length, beam,
                    units, categories, stats)
    from pipeline.files import write_csv, write_json
    from pipeline.reports.spreadsheet import inert_table
    folder = analysis_folder(quantile)
    stem = formulas_name(store.layer_file_name(layer), length, beam,
                         None if units is None else _units_text(units), categories)
    with store.results_output(run, results_dir, folder) as (out, final):
        write_csv(out / f"{stem}.csv", *inert_table(header, rows))
        write_json(out / f"{stem}.json", doc)
    analysis_written(run, layer, final, folder, dataset, log,
                     refresh=stem == f"{store.layer_file_name(layer)}.formulas")
    where = (lambda n: f"{final}/{n}") if store.is_url(final) else (lambda n: Path(final) / n)
    return CompositionalResult(layer, float(quantile), length, beam, found, header, rows,
                               where(f"{stem}.csv"), where(f"{stem}.json"), stats)


def _units_text(units) -> str:
    return units if isinstance(units, str) else ",".join(str(int(u)) for u in units)


def _allowed(labels, categories: Sequence[str] | None) -> np.ndarray:
    """(L,) bool: labels that may be atoms (primary category among ``categories``)."""
    primary = labels.primary_category
    if not categories:
        return primary >= 0
    keep = [labels.categories.index(c) for c in categories]
    return np.isin(primary, keep)


def formula_rows(found: list[UnitFormulas], labels, length: int) -> tuple[list[str], list[list]]:
    """The CSV: one row per unit (from 1), best formula first, then the best single label
    and the best formula of each length."""
    names, cats, primary = labels.label_names, labels.categories, labels.primary_category
    header = ["unit", "formula", "formula_labels", "length", "iou", "intersect",
              "formula_pixels", "unit_pixels", "single_label", "single_category",
              "single_iou"]
    for n in range(1, length + 1):
        header += [f"formula_{n}", f"iou_{n}"]
    rows = []
    for u in found:
        b, s = u.best, u.single
        row = [u.unit + 1,
               "" if b is None else b.formula.text(names),
               "" if b is None else b.formula.text(),
               0 if b is None else len(b.formula),
               0.0 if b is None else b.iou,
               0 if b is None else b.intersect,
               0 if b is None else b.pixels,
               u.unit_pixels,
               "" if s is None else names[s.formula.atoms[0]],
               "" if s is None else cats[primary[s.formula.atoms[0]]],
               0.0 if s is None else s.iou]
        for f in u.by_length:
            row += ["", 0.0] if f is None else [f.formula.text(names), f.iou]
        rows.append(row)
    return header, rows


def _scored_json(s, names) -> dict | None:
    if s is None:
        return None
    return {"formula": s.formula.text(names), "atoms": list(s.formula.atoms),
            "ops": list(s.formula.ops), "length": len(s.formula), "iou": s.iou,
            "intersect": s.intersect, "pixels": s.pixels}


def _document(run, layer, labels, counts: SetCounts, found, quantile, length, beam, units,
              categories, stats) -> dict:
    from pipeline.reports.document import run_metadata, scoring_versions
    acts = store.activations(run, layer)
    names = labels.label_names
    return {
        "schema": SCHEMA, "schema_version": SCHEMA_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "run": run_metadata(store.read_run_attrs(run), layer, store.run_path(run), acts.shape,
                            acts.dtype, labels.path, labels.fingerprint),
        "versions": scoring_versions(),
        "config": {"quantile": quantile, "length": length, "beam": beam,
                   "units": None if units is None else _units_text(units),
                   "categories": list(categories) if categories else None,
                   "ops": ["AND", "OR", "AND NOT"],
                   "union": "whole dataset: |M_k| over every image, |F| over every image"},
        "set_counts": {"images": counts.num_images, "sets": counts.num_sets,
                       "entries": int(counts.active.shape[0]),
                       "seconds": stats.get("set_counts_seconds"),
                       "reused": stats.get("set_counts_reused")},
        "search_seconds": stats.get("search_seconds"),
        "thresholds": {"quantile": quantile, "T": [float(t) for t in counts.thresholds]},
        "units": [{"unit": u.unit + 1, "unit_pixels": u.unit_pixels,
                   "best": _scored_json(u.best, names),
                   "by_length": [_scored_json(s, names) for s in u.by_length]}
                  for u in found],
    }
