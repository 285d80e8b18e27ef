"""Known answer on a real architecture: torchvision resnet18 whose conv1 unit 0 is set by
hand to a red detector (tests/known_answer_model.red_resnet18_state_dict; every other unit
of the layer dead) is dissected by the CLI (``--model torchvision:resnet18 --weights``)
to exactly that concept: unit 0 labelled red-c, the only detector.

Measured on the dataset below (300 images, 64 px, segmentations 32 px, seed 5): red-c IoU
0.658 at q = 0.05 and 0.397 at q = 0.02 (a linear filter also fires weakly on orange and
dark-red pixels named otherwise). About 30 s on 2 shared CPU cores.
"""
from __future__ import annotations

import csv
import json
import os

import numpy as np
import pytest
import torch

from cache import store
from clirun import cli
from pipeline.broden import BrodenDataset
from pipeline.synthetic.writer import write_dataset
from tests.known_answer_model import RED_THRESHOLD, RED_WEIGHTS, red_resnet18_state_dict

pytestmark = pytest.mark.slow

MIN_IOU = {0.05: 0.55, 0.02: 0.33}


@pytest.fixture(scope="module")
def dissected(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("known_resnet")
    data = write_dataset(tmp / "data", num_images=300, image_size=64, seg_size=32, seed=5,
                         workers=1, progress=False)
    weights = tmp / "red_resnet18.pth"
    torch.save(red_resnet18_state_dict(), weights)
    env = dict(os.environ, NETDISSECT_CACHE=str(tmp / "cache"))
    run = tmp / "run"
    cli("scripts/extract.py", "--dataset", data, "--model", "torchvision:resnet18",
        "--weights", weights, "--layers", "relu", "--out", run, "--mean", "0,0,0", "--std",
        "1,1,1", "--workers", "0", "--batch-size", "64", "--quiet", env=env)
    out = {"data": data, "run": run}
    for q in MIN_IOU:
        cli("scripts/score.py", run, "--label-cache", tmp / "labels.zarr", "--quantile",
            str(q), "--quiet", env=env)
        res = run / "results" / f"q{q:g}"             # a named scoring (not the default q)
        with open(res / "relu.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        out[q] = {"rows": rows, "summary": json.loads((res / "relu.json").read_text())["summary"]}
    return out


def test_stored_maps_are_the_hand_set_filter(dissected):
    acts = store.activations(dissected["run"], "relu")
    assert acts.shape == (300, 64, 32, 32)
    ds = BrodenDataset(dissected["data"])
    for i in (0, 7):
        px = ds.load_image(i).astype(np.float64) / 255.0           # (64, 64, 3)
        want = np.maximum(px[::2, ::2] @ np.array(RED_WEIGHTS) - RED_THRESHOLD, 0)
        got = np.asarray(acts[i], dtype=np.float64)
        np.testing.assert_allclose(got[0], want, atol=2e-3, rtol=2e-3)   # float16
        assert not got[1:].any()


@pytest.mark.parametrize("q", list(MIN_IOU))
def test_red_unit_is_the_only_detector_and_it_is_red(dissected, q):
    rows, summary = dissected[q]["rows"], dissected[q]["summary"]
    unit0 = next(r for r in rows if r["unit"] == "1")
    assert unit0["label"] == "red-c" and unit0["category"] == "color", unit0
    assert float(unit0["score"]) > MIN_IOU[q], unit0
    assert summary["detectors"] == 1 and summary["units"] == 64
    assert all(float(r["score"]) == 0.0 for r in rows if r["unit"] != "1")
