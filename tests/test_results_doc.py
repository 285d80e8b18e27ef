"""The results document (pipeline/reports/document.py): schema, metadata, per-unit statistics; the
CSV and HTML generated from it (the CSV byte-identical to the direct NetDissect writer)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from cache import store
from cache.labels import LabelCache
from pipeline.layer_stages import ScoreConfig, layer_cube
from pipeline.reports.document import (SCHEMA, SCHEMA_VERSION, ResultsError, check_document,
                                       read_document, to_table)
from pipeline.files import write_csv
from pipeline.reports.netdissect_csv import read_result_csv
from pipeline.scoring import count_detectors, dissect
from clirun import cli
from result_csv_reference import result_rows
import scoring_fixtures as sf

pytestmark = pytest.mark.slow        # subprocess pipelines, kills, clusters: seconds each

ROOT = Path(__file__).resolve().parents[1]
LAYER = "features.3"


@pytest.fixture(scope="module")
def scored(tmp_path_factory, tiny_data):
    tmp = tmp_path_factory.mktemp("results_doc")
    run = sf.cli_extract(tiny_data, tmp / "run", LAYER)
    labels = tmp / "labels.zarr"
    cli("scripts/score.py", run, "--label-cache", labels, "--levels", "0.005", "--quiet",
        "--iou-threshold", "0.03", "--export-iou", tmp / "iou.npy",
        "--export-thresholds", tmp / "T.npy")
    res = run / "results" / "iou0.03"                 # the scoring named by its setting
    text = (res / f"{LAYER}.json").read_text()
    return {"tmp": tmp, "run": run, "labels": labels, "res": res, "text": text,
            "doc": json.loads(text)}


def test_schema_and_run_metadata(scored):
    doc = scored["doc"]
    assert doc["schema"] == SCHEMA == "netdissect-zarr/results"
    assert doc["schema_version"] == SCHEMA_VERSION == 2
    attrs = store.read_run_attrs(scored["run"])
    run = doc["run"]
    assert run["layer"] == LAYER and Path(run["path"]) == scored["run"]
    assert run["model"] == attrs["model"] and run["dataset"] == attrs["dataset"]
    assert run["activations"] == {"shape": [30, 16, 13, 13], "dtype": "float16"}
    assert run["preprocessing"] == attrs["preprocessing"]
    assert run["extraction_versions"] == attrs["versions"]
    lc = LabelCache.open(scored["labels"])
    assert run["label_cache"] == {"path": str(scored["labels"]), "fingerprint": lc.fingerprint}
    assert set(doc["versions"]) == {"tool", "python", "numpy", "torch", "zarr"}
    assert doc["config"] == {"quantile": 0.005, "levels_in_cube": [0.005],
                             "iou_threshold": 0.03, "categories": lc.categories,
                             "all_categories": lc.categories, "null": None,
                             "name": "iou0.03"}
    assert doc["null"] is None
    json.loads(scored["text"], parse_constant=lambda c: pytest.fail(f"{c} in the JSON"))


def test_thresholds_units_and_statistics(scored):
    doc = scored["doc"]
    np.testing.assert_array_equal(doc["thresholds"]["T"], np.load(scored["tmp"] / "T.npy"))
    iou = np.load(scored["tmp"] / "iou.npy")
    table = read_result_csv(scored["res"] / f"{LAYER}.csv")
    assert [u["unit"] for u in doc["units"]] == list(range(1, 17))
    for u in doc["units"]:
        k = u["unit"] - 1
        assert u["iou"] == iou[k].max() and u["label_number"] == 1 + np.argmax(iou[k, 1:])
        assert u["detector"] == (u["iou"] > 0.03)
        assert "p_image" not in u and "null" not in u
        assert set(u["best"]) == set(doc["config"]["categories"])
        for c, b in u["best"].items():
            st = table.stats[k][c]                               # the CSV agrees
            assert (b["label"], b["truth"], b["activation"], b["intersect"], b["iou"]) == (
                st.label, st.truth, st.activation, st.intersect, st.iou)
            assert b["iou"] == iou[k, b["label_number"]]


def test_csv_generated_from_document_is_byte_identical(scored, tmp_path):
    """The CSV written from the document equals the direct writer's (result_rows on
    the Dissection of the stored cube): existing NetDissect readers see no change."""
    lc = LabelCache.open(scored["labels"])
    cfg = ScoreConfig(levels=(0.005,), iou_threshold=0.03, progress=False)
    logs = []
    cube = layer_cube(scored["run"], LAYER, lc, cfg, log=logs.append)
    assert logs == []                                             # from the stored cube
    d = dissect(cube.intersect[0], cube.activation[0], cube.label_pixels,
                lc.primary_category, cube.categories, iou_threshold=0.03)
    header, rows = result_rows(d, cube.intersect[0], cube.activation[0], cube.label_pixels,
                               cube.categories, lc.label_names)
    direct = write_csv(tmp_path / "direct.csv", header, rows)
    assert direct.read_bytes() == (scored["res"] / f"{LAYER}.csv").read_bytes()


def test_summary_both_conventions_and_round_trips(scored):
    doc = scored["doc"]
    s = doc["summary"]
    assert s["layer"] == LAYER and s["quantile"] == 0.005 and s["iou_threshold"] == 0.03
    t = to_table(doc)
    again = t.summary(0.03)
    assert {k: s[k] for k in again} == again
    csv_table = read_result_csv(scored["res"] / f"{LAYER}.csv")
    for thr in (0.0, 0.02, 0.03, 0.05):
        assert csv_table.summary(thr) == t.summary(thr)
    # the document's units are enough to count at another threshold
    units = t.units
    assert count_detectors(units, t.categories, 0.0)["detectors"] == sum(
        u["iou"] > 0 for u in doc["units"])
    assert s["detectors"] > 0 and s["per_category_sum"] >= s["unique_top_labels"]


def test_html_generated_from_document(scored):
    html = (scored["res"] / f"{LAYER}.html").read_text()
    s = scored["doc"]["summary"]
    assert html.startswith("<!DOCTYPE html>") and "netdissect-zarr/results v2" in html
    assert f"<th>{s['detectors']}</th><th>{s['unique_top_labels']}</th>" \
           f"<th>{s['per_category_sum']}</th>" in html
    assert len(re.findall(r"<tr id=unit-\d+ class=det ", html)) == s["detectors"]


def test_reader_refuses_other_documents(scored, tmp_path):
    doc = scored["doc"]
    assert read_document(scored["res"] / f"{LAYER}.json")["units"] == doc["units"]
    newer = dict(doc, schema_version=SCHEMA_VERSION + 1)
    with pytest.raises(ResultsError, match="schema_version 3 is not supported"):
        check_document(newer, "x.json")
    with pytest.raises(ResultsError, match="not a results document"):
        check_document({"summary": {}}, "old.json")
    missing = {k: v for k, v in doc.items() if k != "units"}
    with pytest.raises(ResultsError, match="missing key 'units'"):
        check_document(missing, "x.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ResultsError, match="bad.json: not JSON"):
        read_document(bad)
    with pytest.raises(ResultsError, match="cannot read"):
        read_document(tmp_path / "absent.json")
