"""The concept vectors' versioned document ``<layer>.concept_vectors.json`` (schema
``netdissect-zarr/concept-vectors`` version 1), written beside the CSV, the weights
(.npy) and the chart::

    schema, schema_version, created, run (as in the results document), versions
    config:     quantile, train_fraction, pixels_per_concept, seed, threshold, steps, l2,
                weighting, device
    split:      train_images, heldout_images
    thresholds: quantile, T (K floats): the single units' T_k
    weights:    file (the .npy), shape [C, K], sha256 of its bytes; row i = concepts[i],
                column k = unit k + 1
    summary:    concepts, vector_better (vector IoU > best unit's), mean_vector_iou,
                mean_unit_iou, by_category {category: the same four}
    seconds:    of the whole experiment
    concepts:   one record per concept: the CSV's columns (units numbered from 1), plus
                top_units [[unit, weight], ...] (the 10 largest |w|)

The results document at the same thresholds links it (pipeline/reports/analyses.py).
"""
from __future__ import annotations

import hashlib
from datetime import datetime, timezone

import numpy as np
import pandas as pd

from pipeline.reports.analyses import VECTORS_SCHEMA as SCHEMA

SCHEMA_VERSION = 1
TOP_UNITS = 10
#: the frame's columns that hold a 0-based unit; files number units from 1
UNIT_COLUMNS = ("unit", "oracle_unit")


def numbered_from_one(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of the API's frame with its unit columns numbered from 1, as the files are."""
    out = frame.copy()
    for col in UNIT_COLUMNS:
        out[col] = out[col] + 1
    return out


def _summary(rows: pd.DataFrame) -> dict:
    return {"concepts": int(len(rows)),
            "vector_better": int((rows["vector_iou"] > rows["unit_iou"]).sum()),
            "mean_vector_iou": float(rows["vector_iou"].mean()) if len(rows) else 0.0,
            "mean_unit_iou": float(rows["unit_iou"].mean()) if len(rows) else 0.0}


def vectors_document(files: pd.DataFrame, weights: np.ndarray, weights_file: str,
                     weights_bytes: bytes, run_block: dict, versions: dict, config: dict,
                     thresholds: np.ndarray) -> dict:
    """The document (module docstring) of ``files`` (the frame as the files hold it:
    :func:`numbered_from_one`) and its (C, K) ``weights``, whose .npy file
    ``weights_file`` holds ``weights_bytes``."""
    by_cat = {str(c): _summary(g) for c, g in files.groupby("category", sort=False)}
    concepts = []
    for rec, w in zip(files.to_dict(orient="records"), np.asarray(weights)):
        top = np.argsort(-np.abs(w), kind="stable")[:TOP_UNITS]
        concepts.append({**{k: (v.item() if isinstance(v, np.generic) else v)
                            for k, v in rec.items()},
                         "top_units": [[int(k) + 1, float(w[k])] for k in top]})
    return {
        "schema": SCHEMA, "schema_version": SCHEMA_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "run": run_block, "versions": versions, "config": config,
        "split": {"train_images": int(files.attrs.get("train_images", 0)),
                  "heldout_images": int(files.attrs.get("heldout_images", 0))},
        "thresholds": {"quantile": float(config["quantile"]),
                       "T": [float(t) for t in thresholds]},
        "weights": {"file": weights_file, "shape": [int(s) for s in np.shape(weights)],
                    "sha256": hashlib.sha256(weights_bytes).hexdigest()},
        "summary": {**_summary(files), "by_category": by_cat},
        "seconds": files.attrs.get("seconds"),
        "concepts": concepts,
    }
