"""The analyses beside a results document: the compositional search (``<layer>.formulas.json``,
``netdissect compositional``) and the concept vectors (``<layer>.concept_vectors.json``,
``netdissect concept-vectors``) written in the same folder at the same quantile, linked
into the results document's ``analyses`` block (schema version 2) and shown on its page.

    attach_analyses(doc, folder, layer_file)   doc["analyses"] and units[i]["formula"]
    refresh_results(run, layer, folder, ...)   after an analysis: the results document
                                               and the page written again with it

Each analysis keeps its own versioned document (a later scoring cannot drop it, and
searches with other settings sit beside it); the results document holds its summary and
file name. An analysis is linked only when it was computed at the document's very
thresholds (the same quantile and the same T_k, float for float): one made before a
re-extraction, or at another quantile, is left out and said so through ``log``.
"""
from __future__ import annotations

import json
from pathlib import Path

FORMULAS_SCHEMA = "netdissect-zarr/formulas"
VECTORS_SCHEMA = "netdissect-zarr/concept-vectors"
#: schema -> the newest version this code reads
READABLE = {FORMULAS_SCHEMA: 1, VECTORS_SCHEMA: 1}


def analysis_folder(quantile: float) -> str:
    """The folder under results/ of an analysis at ``quantile``: "" at the default 0.005
    (beside the default scoring), else ``q<quantile>`` (beside the scoring at it)."""
    return "" if float(quantile) == 0.005 else f"q{float(quantile):g}"


def analysis_files(layer_file: str) -> dict[str, str]:
    """{analysis: file name} of the default analyses of one layer."""
    return {"formulas": f"{layer_file}.formulas.json",
            "concept_vectors": f"{layer_file}.concept_vectors.json"}


def read_analysis(path: Path, schema: str) -> dict | None:
    """The analysis document at ``path`` if it is one of ``schema`` this code reads, else
    None (absent, unreadable, another schema or a newer version)."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or doc.get("schema") != schema:
        return None
    v = doc.get("schema_version")
    return doc if isinstance(v, int) and 1 <= v <= READABLE[schema] else None


def _same_thresholds(doc: dict, other: dict) -> bool:
    a, b = doc.get("thresholds") or {}, other.get("thresholds") or {}
    try:
        return (float(a["quantile"]) == float(b["quantile"])
                and [float(t) for t in a["T"]] == [float(t) for t in b["T"]])
    except (KeyError, TypeError, ValueError):
        return False


def _single_iou(unit: dict) -> float:
    """IoU of a formulas-document unit's best single label (its length-1 formula)."""
    first = (unit.get("by_length") or [None])[0]
    return float(first["iou"]) if first else 0.0


def _formulas_block(f: dict, file: str) -> dict:
    units = [u for u in f.get("units", []) if u.get("best")]
    gain = [u for u in units if u["best"]["iou"] > _single_iou(u)]
    return {"file": file, "schema": f["schema"], "schema_version": f["schema_version"],
            "created": f.get("created"), "config": f.get("config"),
            "units": len(f.get("units", [])), "units_with_formula": len(units),
            "units_improved_over_single": len(gain),
            "mean_iou": _mean(u["best"]["iou"] for u in units),
            "search_seconds": f.get("search_seconds")}


def _vectors_block(v: dict, file: str) -> dict:
    keep = ("concept", "label", "category", "unit", "unit_iou", "vector_iou", "units_50",
            "units_90")
    return {"file": file, "schema": v["schema"], "schema_version": v["schema_version"],
            "created": v.get("created"), "config": v.get("config"),
            "split": v.get("split"), "summary": v.get("summary"),
            "concepts": [{k: c.get(k) for k in keep} for c in v.get("concepts", [])]}


def _mean(values) -> float:
    vals = [float(x) for x in values]
    return sum(vals) / len(vals) if vals else 0.0


def attach_analyses(doc: dict, folder: str | Path, layer_file: str, log=None) -> dict:
    """Set ``doc["analyses"]`` = {"formulas": block or None, "concept_vectors": block or
    None} from the analyses of ``layer_file`` in ``folder`` made at the document's
    thresholds, and each unit record's ``formula`` ({formula, iou, length, single_iou},
    the default search's best) when the search explained that unit. Returns ``doc``."""
    names = analysis_files(layer_file)
    found = {"formulas": None, "concept_vectors": None}
    for u in doc["units"]:
        u.pop("formula", None)
    for key, schema, block in (("formulas", FORMULAS_SCHEMA, _formulas_block),
                               ("concept_vectors", VECTORS_SCHEMA, _vectors_block)):
        other = read_analysis(Path(folder) / names[key], schema)
        if other is None:
            continue
        if not _same_thresholds(doc, other):
            if log is not None:
                log(f"{Path(folder) / names[key]}: made at other thresholds than "
                    f"{layer_file}.json (another quantile or extraction); not linked, "
                    f"rerun netdissect {key.replace('_', '-')} to refresh it")
            continue
        found[key] = block(other, names[key])
        if key == "formulas":
            by_unit = {int(u["unit"]): u for u in other.get("units", [])}
            for rec in doc["units"]:
                f = by_unit.get(int(rec["unit"]))
                if f and f.get("best"):
                    rec["formula"] = {"formula": f["best"]["formula"],
                                      "iou": float(f["best"]["iou"]),
                                      "length": int(f["best"]["length"]),
                                      "single_iou": _single_iou(f)}
    doc["analyses"] = found
    return doc


def analysis_written(run, layer: str, final, folder: str, dataset=None, log=print,
                     refresh: bool = True) -> None:
    """After an analysis was written to ``final`` (the results folder ``folder`` of the
    run, "" or ``q<Q>``): :func:`refresh_results` there (when ``refresh``: the default
    analysis of the layer) and the run's index rebuilt. Nothing for results at a URL."""
    from cache import store
    if store.is_url(final):
        return
    if refresh:
        refresh_results(run, layer, Path(final), dataset, log)
    from pipeline.reports.index_page import write_index
    write_index(Path(final).parent if folder else Path(final))


def refresh_results(run, layer: str, folder: Path, dataset=None, log=print) -> Path | None:
    """After an analysis was written into ``folder``: when a scoring at its quantile wrote
    a results document there, link the analyses into it and write it and its page
    ``<layer>.html`` again; returns the page's path (None without a results document)."""
    from cache import store
    from pipeline.files import write_json, write_text
    from pipeline.reports.document import document_path, read_document
    from pipeline.reports.html_page import layer_report
    name = store.layer_file_name(layer)
    path = document_path(folder, name)
    if not path.is_file():
        return None
    doc = attach_analyses(read_document(path), folder, name, log)
    write_json(path, doc)
    page = write_text(folder / f"{name}.html",
                      layer_report(doc, run, layer, dataset, log=lambda *a: None))
    log(f"[{layer}] {path.name} and {page.name} updated with the analyses beside them")
    return page
