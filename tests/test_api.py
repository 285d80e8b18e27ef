"""The notebook API (pipeline/api/): an in-memory nn.Module extracted, scored and
compared end to end; its DataFrames against the files the same scoring writes; its
cube against score.py's; resume with the same module and refusal of a changed one."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from cache import store
from cache.store import RunError
from cache.zarr_io import clear_flags
from model_factories import TinyNet, tiny_net
from pipeline import api
from pipeline.extract_config import ExtractError
from scoring_fixtures import ROOT, assert_cubes_equal, cli, copy_fresh, stored_cube

LAYERS = ["features.2", "features.3"]
LAYER = "features.3"
LEVELS = (0.005, 0.02)
OPTIONS = dict(input_size=(26, 26), batch_size=8, workers=0)


@pytest.fixture(scope="module")
def module_run(tiny_data, tmp_path_factory):
    """tiny_net's module in memory (in training mode), extracted with the API."""
    model = tiny_net().train()
    run = api.extract(model, tiny_data, LAYERS, tmp_path_factory.mktemp("api") / "run",
                      **OPTIONS)
    return model, run


def scored(run, tiny_labels, **kw):
    return api.score(run, LAYER, levels=LEVELS, top_images=0,
                     label_cache=tiny_labels.path, **kw)


def test_an_in_memory_module_is_extracted_and_given_back(module_run, tiny_data):
    model, run = module_run
    assert model.training and all(m.training for m in model.modules())
    assert run.layers == LAYERS and run.num_images == 30
    assert run.shapes == {"features.2": (16, 13, 13), "features.3": (16, 13, 13)}
    assert run.extraction.status == "extracted" and run.extraction.images == 30
    rec = run.attrs["model"]
    assert rec["source"] == "module" and rec["class"] == "model_factories.TinyNet"
    assert rec["spec"] == "in-memory model_factories.TinyNet"
    from pipeline.models.checkpoints import model_fingerprint
    assert rec["fingerprint"] == model_fingerprint(tiny_net())
    # preprocessing as for a factory model: the given size, ImageNet's mean/std
    prep = run.attrs["preprocessing"]
    assert prep["sources"] == {"input_size": "--input-size", "mean": "default (ImageNet)",
                               "std": "default (ImageNet)"}
    # the stored maps are the module's eval-mode outputs
    acts = run.activations(LAYER)
    assert acts.shape == (30, 16, 13, 13)
    assert run.activations(LAYER, dask=True).shape == acts.shape
    from pipeline.broden import BrodenDataset
    from pipeline.preprocess import Preprocessing, ResizedImages, to_model_input
    pixels = torch.from_numpy(np.stack([ResizedImages(BrodenDataset(tiny_data), (26, 26))[i][1]
                                        for i in range(2)]))
    x = to_model_input(pixels, Preprocessing((26, 26), tuple(prep["mean"]),
                                             tuple(prep["std"]), False), torch.device("cpu"))
    with torch.no_grad():
        want = torch.relu(tiny_net().eval().features[:3](x)).to(torch.float16).numpy()
    np.testing.assert_array_equal(np.asarray(acts[:2]), want)


def test_resume_with_the_same_module_and_refuse_a_changed_one(module_run, tmp_path, capsys):
    model, run = module_run
    path = tmp_path / "run"
    shutil.copytree(run.path, path)
    again = api.extract(model, run.attrs["dataset"]["path"], LAYERS, path, **OPTIONS)
    assert again.extraction.status == "complete"
    before = np.asarray(again.activations(LAYER)[:])
    group = store.open_run(path, mode="r+")
    clear_flags(group["progress"], [1])                       # images 8..15 to redo
    resumed = api.extract(model, run.attrs["dataset"]["path"], LAYERS, path, **OPTIONS)
    assert resumed.extraction.status == "resumed" and resumed.extraction.images == 8
    np.testing.assert_array_equal(np.asarray(resumed.activations(LAYER)[:]), before)
    assert capsys.readouterr() == ("", "")                    # silent by default

    changed = tiny_net()
    with torch.no_grad():
        changed.fc.bias[0] += 1.0
    with pytest.raises(RunError, match="model fingerprint"):
        api.extract(changed, run.attrs["dataset"]["path"], LAYERS, path, **OPTIONS)

    class OtherNet(TinyNet):          # the same weights, another class
        pass
    other = OtherNet()
    other.load_state_dict(model.state_dict())
    with pytest.raises(RunError, match="model class: run has model_factories.TinyNet"):
        api.extract(other, run.attrs["dataset"]["path"], LAYERS, path, **OPTIONS)


def test_a_spec_string_gives_the_same_run(module_run, tiny_data, tmp_path):
    _, run = module_run
    spec = f"{ROOT / 'tests' / 'model_factories.py'}:tiny_net"
    by_spec = api.extract(spec, tiny_data, LAYERS, tmp_path / "spec", **OPTIONS)
    assert by_spec.attrs["model"]["spec"] == spec
    assert "class" not in by_spec.attrs["model"]
    assert by_spec.attrs["model"]["fingerprint"] == run.attrs["model"]["fingerprint"]
    np.testing.assert_array_equal(np.asarray(by_spec.activations(LAYER)[:]),
                                  np.asarray(run.activations(LAYER)[:]))
    # a module's run names a factory in its repair command; one with the same weights
    # resumes it
    from cache.integrity import extract_command
    assert ("--model '<file.py:function returning your model_factories.TinyNet with the "
            "same weights>'") in extract_command(run.attrs, run.path)
    copy = tmp_path / "copy"
    shutil.copytree(run.path, copy)
    assert api.extract(spec, tiny_data, LAYERS, copy, **OPTIONS).extraction.status == \
        "complete"


def test_options_are_checked(tiny_data, tmp_path):
    with pytest.raises(TypeError, match=r"unknown option\(s\) \['batchsize'\]"):
        api.extract(tiny_net(), tiny_data, LAYERS, tmp_path / "r", batchsize=4)
    with pytest.raises(ExtractError, match="load the weights into it first"):
        api.extract(tiny_net(), tiny_data, LAYERS, tmp_path / "r", weights="w.pt")


def test_the_frames_are_the_files_the_scoring_writes(module_run, tiny_labels, capsys):
    _, run = module_run
    res = scored(run, tiny_labels)
    assert capsys.readouterr() == ("", "")                    # silent by default
    lr = res[LAYER]
    assert res.layers == [LAYER] and res.units is lr.units
    assert lr.paths["csv"] == run.path / "results" / f"{LAYER}.csv"
    assert all(p.is_file() for p in lr.paths.values())
    doc = json.loads(lr.paths["json"].read_text())
    assert lr.summary == doc["summary"]

    csv = pd.read_csv(lr.paths["csv"], keep_default_na=False).sort_values("unit")
    units = lr.units
    assert list(units["unit"]) == list(range(16))             # 0-based, the CSV 1-based
    assert list(csv["unit"] - 1) == list(units["unit"])
    assert list(csv["label"]) == list(units["label"])
    assert list(csv["category"]) == list(units["category"])
    np.testing.assert_array_equal(csv["score"].to_numpy(), units["iou"].to_numpy())
    for col in [c for c in csv.columns if "-" in c]:
        assert list(csv[col]) == list(units[col]), col
    assert list(units["detector"]) == list(units["iou"] > 0.04)
    np.testing.assert_array_equal(units["threshold"], doc["thresholds"]["T"])

    loaded = api.load(run.path)                               # read back, not scored
    assert loaded.layers == [LAYER]
    pd.testing.assert_frame_equal(loaded.units, lr.units)
    np.testing.assert_array_equal(loaded.cube.intersect, lr.cube.intersect)
    with pytest.raises(ValueError, match="no scoring 'nope'"):
        api.load(run.path, LAYER, scoring="nope")

    # counts under both conventions, and the cube's arrays behind them
    counts = lr.counts
    assert counts.loc["total", "per_category_sum"] == doc["summary"]["per_category_sum"]
    assert counts.loc["total", "unique_top_labels"] == doc["summary"]["unique_top_labels"]
    assert counts.loc["total", "detectors"] == int(units["detector"].sum())
    cube = lr.cube
    stored = stored_cube(run.path)
    v = 0                                   # levels (0.005, 0.02): q = 0.005 is the first
    np.testing.assert_array_equal(cube.intersect, stored["intersect"][v])
    np.testing.assert_array_equal(cube.activation, stored["activation"][v])
    np.testing.assert_array_equal(cube.thresholds, stored["thresholds"][v])
    assert cube.iou.shape == (16, len(cube.label_names))
    for k in range(16):
        j = 1 + int(np.argmax(cube.iou[k, 1:]))
        assert cube.iou[k, j] == units.loc[k, "iou"]
        if units.loc[k, "category"]:
            assert cube.label_names[j] == units.loc[k, "label"]


@pytest.mark.slow
def test_rescoring_gives_what_score_py_gives(module_run, tiny_labels, tmp_path):
    _, run = module_run
    first = scored(run, tiny_labels)
    res = scored(run, tiny_labels, iou_threshold=0.08, categories=["object", "part"])
    name = "iou0.08_cat-object+part"
    assert res.paths["csv"] == run.path / "results" / name / f"{LAYER}.csv"
    # in memory from the cube: the same units as the written named scoring
    at = first.at(iou_threshold=0.08, categories=["object", "part"])
    pd.testing.assert_frame_equal(at.units, res.units)
    assert at.summary == res.summary and at.paths == {}
    assert set(res.units["category"]) <= {"object", "part"}

    copy = copy_fresh(run.path, tmp_path / "cli")
    cli("scripts/score.py", copy, "--label-cache", tiny_labels.path, "--layer", LAYER,
        "--levels", "0.005,0.02", "--iou-threshold", "0.08", "--categories", "object,part",
        "--top-images", "0", "--quiet")
    assert_cubes_equal(stored_cube(copy), stored_cube(run.path))
    full = res.cube.full
    assert_cubes_equal({"thresholds": full.thresholds, "intersect": full.intersect,
                        "activation": full.activation, "label_pixels": full.label_pixels},
                       stored_cube(copy))
    assert ((copy / "results" / name / f"{LAYER}.csv").read_bytes()
            == res.paths["csv"].read_bytes())
    # score.py's scoring read back: the same frames and cube
    loaded = api.load(copy, scoring=name, label_cache=tiny_labels.path)
    pd.testing.assert_frame_equal(loaded.units, res.units)
    assert loaded.summary == res.summary
    np.testing.assert_array_equal(loaded.cube.iou, res.cube.iou)
    assert loaded.paths["csv"] == copy / "results" / name / f"{LAYER}.csv"


def test_compare_sweep_null_and_rotate(module_run, tiny_labels, tmp_path, capsys):
    _, run = module_run
    res = scored(run, tiny_labels)
    at = res.at(iou_threshold=0.08)
    frame = api.compare(res, at[LAYER], iou_threshold=0.04)
    total = frame[frame["category"] == "total"].set_index("source")
    assert list(total.index) == [f"run/{LAYER}", LAYER]
    assert (total["per_category_sum"] == res.summary["per_category_sum"]).all()  # recounted
    by_path = api.compare(run, iou_threshold=0.08)
    assert by_path[by_path["category"] == "total"]["per_category_sum"].tolist() == [
        at.summary["per_category_sum"]]
    assert "quantile 0.005" in "\n".join(frame.attrs["settings"])

    sw = api.sweep(run, LAYER, [0.02, 0.08], levels=LEVELS, label_cache=tiny_labels.path)
    assert sw["iou_threshold"].tolist() == [0.02, 0.08]
    assert sw.loc[1, "per_category_sum"] == at.summary["per_category_sum"]
    assert sw.loc[0, "detectors"] == res.at(iou_threshold=0.02).summary["detectors"]
    assert api.sweep(res[LAYER], thresholds="0.02:0.08:0.06").equals(sw)

    p = api.null(run, LAYER, kinds="image", permutations=9, images=12, levels=LEVELS,
                 label_cache=tiny_labels.path)
    assert list(p["unit"]) == list(range(16)) and len(p.attrs["images"]) == 12
    assert ((p["p_image"] >= 0.1) & (p["p_image"] <= 1.0)).all()        # 1/(R+1)..1
    assert "p_spatial" not in p
    assert (p["label"] == res.units["label"].where(res.units["category"] != "", "")).all()

    rot = api.rotate(run, LAYER, alphas=(0.0,), out=tmp_path / "rot", quantile=0.005,
                     label_cache=tiny_labels.path)
    assert rot["transform"].tolist() == ["rotation"] and rot.loc[0, "alpha"] == 0.0
    assert rot.loc[0, "per_category_sum"] == res.summary["per_category_sum"]  # Q^0 = I
    assert rot.attrs["csv"].is_file()
    assert capsys.readouterr() == ("", "")


def test_progress_shows_bars_and_log_lines(module_run, tiny_labels, tmp_path, capsys):
    _, run = module_run
    copy = copy_fresh(run.path, tmp_path / "run")
    api.score(copy, LAYER, levels=(0.005,), top_images=0, label_cache=tiny_labels.path,
              progress=True)
    out, err = capsys.readouterr()
    assert "exact quantiles" in out and "tally" in err


def test_the_notebook_example_runs(tmp_path, monkeypatch, capsys):
    import runpy
    monkeypatch.chdir(tmp_path)
    g = runpy.run_path(str(ROOT / "docs" / "notebook_example.py"))
    run, conv2, strict = g["run"], g["conv2"], g["strict"]
    assert run.shapes == {"conv1": (16, 64, 64), "conv2": (32, 32, 32)}
    assert run.attrs["model"]["class"].endswith(".SmallNet")
    assert list(conv2.units["unit"]) == list(range(32))
    assert conv2.cube.iou.shape == (32, len(conv2.cube.label_names))
    res = tmp_path / "notebook_example" / "run" / "results"
    assert (res / "conv2.csv").is_file() and (res / "iou0.08" / "conv2.csv").is_file()
    assert strict.summary == g["strict_written"].summary
    assert strict.summary["detectors"] < conv2.summary["detectors"]
    totals = g["comparison"][g["comparison"]["category"] == "total"]
    assert totals["source"].tolist() == ["run/conv1", "run/conv2"]
    assert totals["per_category_sum"].tolist()[1] == conv2.summary["per_category_sum"]
    sweep = g["thresholds"]
    assert sweep["iou_threshold"].tolist() == [0.02, 0.04, 0.06, 0.08, 0.1]
    assert sweep.loc[1, "per_category_sum"] == conv2.summary["per_category_sum"]
    assert sweep["detectors"].is_monotonic_decreasing
    assert capsys.readouterr() == ("", "")


def test_formulas_and_concept_vectors(module_run, tiny_labels, capsys):
    """The API's compositional explanations and concept vectors are the commands' tables,
    printed nowhere without progress=True."""
    import csv
    _, run = module_run
    frame = api.formulas(run, LAYER, length=2, beam=2, label_cache=tiny_labels.path)
    K = run.shapes[LAYER][0]
    assert len(frame) == K and list(frame["unit"]) == list(range(1, K + 1))
    with open(frame.attrs["csv"], newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["formula"] for r in rows] == list(frame["formula"])
    assert all(frame["iou"] >= frame["single_iou"] - 1e-12)     # a formula is never worse
    vectors, weights = api.concept_vectors(run, LAYER, ["sky", "brick"],
                                           label_cache=tiny_labels.path,
                                           pixels_per_concept=200, steps=5)
    assert list(vectors["concept"]) == ["sky", "brick"] and weights.shape == (2, K)
    assert capsys.readouterr().out == ""
