"""scripts/score.py end to end: numbers equal the NumPy reference; re-scoring needs no replay."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from cache import store
from pipeline.broden import BrodenDataset
from pipeline.synthetic.writer import write_dataset
import reference as ref
from clirun import cli
import scoring_fixtures as sf

pytestmark = pytest.mark.slow        # subprocess pipelines, kills, clusters: seconds each

ROOT = Path(__file__).resolve().parents[1]
LAYER = "features.3"          # ReLU output of a stride-2 conv: 13 x 13 maps at input 26


@pytest.fixture(scope="module")
def scored(tmp_path_factory, tiny_data, tiny_cli_run):
    tmp = tmp_path_factory.mktemp("score_cli")
    data, run = tiny_data, sf.copy_fresh(tiny_cli_run, tmp / "run")
    labels = tmp / "labels.zarr"
    out = cli("scripts/score.py", run, "--label-cache", labels, "--levels", "0.005,0.02",
              "--quiet", "--export-iou", tmp / "iou.npy", "--export-thresholds",
              tmp / "thr.npy", "--layer", LAYER)
    return {"tmp": tmp, "data": data, "run": run, "labels": labels, "stdout": out.stdout}


def reference_iou(scored, q):
    acts = store.activations(scored["run"], LAYER)[:]
    ds = BrodenDataset(scored["data"])
    labs = [ds.load_labels(i) for i in range(len(ds))]
    T = ref.thresholds_ref(acts, [q])[0]
    iou = ref.iou_matrix_ref(acts, T, [l.planes for l in labs], [l.scalars for l in labs],
                             np.maximum(ds.primary_category, 0), len(ds.all_categories),
                             ds.segmentation_size())
    return T, iou, acts


def test_thresholds_and_iou_equal_reference(scored):
    T, iou, acts = reference_iou(scored, 0.005)
    assert acts.shape[2:] == (13, 13)
    np.testing.assert_array_equal(np.load(scored["tmp"] / "thr.npy"), T)
    got = np.load(scored["tmp"] / "iou.npy")
    assert got.shape == iou.shape and np.all(got[:, 0] == 0)
    np.testing.assert_array_equal(got, iou)
    assert got.max() > 0                               # the test is not vacuous


def test_result_csv_and_json(scored):
    res = scored["run"] / "results"
    rows = list(csv.DictReader(open(res / f"{LAYER}.csv")))
    iou = np.load(scored["tmp"] / "iou.npy")
    assert len(rows) == iou.shape[0]
    assert [float(r["score"]) for r in rows] == sorted(iou.max(axis=1), reverse=True)
    names = BrodenDataset(scored["data"]).label_names
    for r in rows:
        k = int(r["unit"]) - 1
        assert names[int(np.argmax(iou[k]))] == r["label"]
    js = json.load(open(res / f"{LAYER}.json"))
    summary = js["summary"]
    assert summary["detectors"] == int((iou.max(axis=1) > 0.04).sum())
    assert [u["unit"] for u in js["units"]] == list(range(1, iou.shape[0] + 1))
    for u in js["units"]:
        k = u["unit"] - 1
        assert u["iou"] == iou[k].max() and u["label_number"] == 1 + np.argmax(iou[k, 1:])
        assert u["detector"] == (iou[k].max() > 0.04)
        for c, b in u["best"].items():
            assert names[b["label_number"]] == b["label"] and b["iou"] <= u["iou"]
    assert summary["quantile"] == 0.005 and summary["levels_in_cube"] == [0.005, 0.02]
    assert "IoU cube at [0.005, 0.02]" in scored["stdout"]


def test_rescoring_needs_no_replay(scored):
    r = cli("scripts/score.py", scored["run"], "--label-cache", scored["labels"], "--levels",
            "0.005,0.02", "--layer", LAYER, "--iou-threshold", "0.1", "--categories",
            "object,texture", "--quantile", "0.02", "--quiet")
    assert "IoU cube" not in r.stdout and "quantiles" not in r.stdout
    res = scored["run"] / "results" / "q0.02_iou0.1_cat-object+texture"
    rows = list(csv.DictReader(open(res / f"{LAYER}.csv")))
    assert [k for k in rows[0] if k.endswith("-iou")] == ["object-iou", "texture-iou"]
    assert {r["category"] for r in rows} <= {"object", "texture"}
    summary = json.load(open(res / f"{LAYER}.json"))["summary"]
    assert summary["iou_threshold"] == 0.1 and summary["quantile"] == 0.02
    assert summary["categories"] == ["object", "texture"]


def test_new_quantile_replays_only_that_level(scored, tmp_path):
    r = cli("scripts/score.py", scored["run"], "--label-cache", scored["labels"], "--levels",
            "0.005,0.02", "--layer", LAYER, "--quantile", "0.01", "--quiet",
            "--export-iou", tmp_path / "iou01.npy")
    assert "IoU cube at [0.01]" in r.stdout and "exact quantiles at [0.01]" in r.stdout
    _, iou, _ = reference_iou(scored, 0.01)
    np.testing.assert_array_equal(np.load(tmp_path / "iou01.npy"), iou)
    summary = json.load(open(scored["run"] / "results" / "q0.01" / f"{LAYER}.json"))["summary"]
    assert summary["levels_in_cube"] == [0.005, 0.01, 0.02]


def test_all_layers_by_default(scored):
    r = cli("scripts/score.py", scored["run"], "--label-cache", scored["labels"], "--levels",
            "0.005", "--quiet")
    assert "layer features.2:" in r.stdout and "layer features.3:" in r.stdout
    assert (scored["run"] / "results" / "features.2.csv").is_file()


@pytest.mark.parametrize("args, message", [
    (["--quantile", "1.5"], "--quantile must be in (0, 1), got 1.5"),
    (["--iou-threshold", "-0.1"], "--iou-threshold must be in [0, 1]"),
    (["--layer", "conv9"], "layer 'conv9' is not in the run"),
    (["--categories", "object,smell"], "--categories: unknown ['smell']"),
    (["--export-iou", "x.npy"], "need exactly one layer"),
])
def test_bad_arguments_are_named(scored, args, message):
    r = cli("scripts/score.py", scored["run"], "--label-cache", scored["labels"], "--quiet",
            *args, check=False)
    assert r.returncode == 2 and message in r.stderr, r.stderr


def test_other_dataset_is_refused(scored, tmp_path):
    other = write_dataset(tmp_path / "other", num_images=30, image_size=48, seg_size=24,
                          seed=12, workers=1, progress=False)
    r = cli("scripts/score.py", scored["run"], "--dataset", other, "--label-cache",
            tmp_path / "l.zarr", "--quiet", check=False)
    assert r.returncode == 2 and "is not the dataset the run was extracted from" in r.stderr
    from cache import store
    recorded = store.read_run_attrs(scored["run"])["dataset"]
    assert f"--dataset {other} is not" in r.stderr and recorded["path"] in r.stderr


def test_not_a_run(tmp_path):
    r = cli("scripts/score.py", tmp_path, "--quiet", check=False)
    assert r.returncode == 2 and "not a run" in r.stderr
