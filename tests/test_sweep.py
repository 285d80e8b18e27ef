"""IoU-threshold sweep (pipeline/sweep.py, pipeline/reports/tables.py, score.py --sweep):
counted from the stored cube with no replay, and equal to brute-force counts from the
exported IoU matrix."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from pipeline.broden import BrodenDataset
from pipeline.reports.tables import sweep_rows, sweep_table
from pipeline.scoring import UnitResult
from pipeline.cli import parse_thresholds
from pipeline.sweep import sweep
from clirun import cli
import scoring_fixtures as sf

pytestmark = pytest.mark.slow        # subprocess pipelines, kills, clusters: seconds each

ROOT = Path(__file__).resolve().parents[1]
LAYER = "features.3"


def test_parse_thresholds():
    assert parse_thresholds("0.01:0.2:0.01") == [round(0.01 * i, 2) for i in range(1, 21)]
    assert parse_thresholds("0:0.1:0.04") == [0.0, 0.04, 0.08]         # stop off the grid
    assert parse_thresholds("0.04") == [0.04]
    assert parse_thresholds("0.02, 0.04,0.08") == [0.02, 0.04, 0.08]
    for spec, msg in [("0.1:0.01:0.01", "stop >= start"), ("0:1:0", "step > 0"),
                      ("a:b:c", "expected start:stop:step"), ("0:1", "start:stop:step"),
                      ("0.5,1.5", r"in \[0, 1\]"), ("", "no threshold")]:
        with pytest.raises(ValueError, match=f"--sweep.*{msg}"):
            parse_thresholds(spec)


def test_sweep_counts_by_hand():
    cats = ["object", "scene"]
    units = [UnitResult(0, 1, "object", 0.10, {"object": (1, 0.10), "scene": (5, 0.05)}),
             UnitResult(1, 1, "object", 0.06, {"object": (1, 0.06), "scene": (6, 0.03)}),
             UnitResult(2, 5, "scene", 0.03, {"object": (2, 0.01), "scene": (5, 0.03)})]
    s = {x["iou_threshold"]: x for x in sweep(units, cats, [0.0, 0.02, 0.04, 0.08])}
    assert [s[t]["detectors"] for t in (0.0, 0.02, 0.04, 0.08)] == [3, 3, 2, 1]
    assert [s[t]["unique_top_labels"] for t in (0.0, 0.02, 0.04, 0.08)] == [2, 2, 1, 1]
    # per category: object {1, 2} + scene {5, 6} at 0; {1} + {5, 6} at 0.02; {1} + {5}
    # at 0.04; {1} + {} at 0.08
    assert [s[t]["per_category_sum"] for t in (0.0, 0.02, 0.04, 0.08)] == [4, 3, 2, 1]
    header, rows = sweep_rows(list(s.values()))
    assert header[:4] == ["iou_threshold", "detectors", "unique_top_labels",
                          "per_category_sum"]
    assert header[4:7] == ["object-detectors", "object-unique_top_labels",
                           "object-per_category_sum"]
    assert rows[2][:7] == [0.04, 2, 1, 2, 2, 1, 1]
    assert "0.04" in sweep_table(list(s.values()))


@pytest.fixture(scope="module")
def swept(tmp_path_factory, tiny_data):
    tmp = tmp_path_factory.mktemp("sweep")
    data, run = tiny_data, sf.cli_extract(tiny_data, tmp / "run", LAYER)
    labels = tmp / "labels.zarr"
    cli("scripts/score.py", run, "--label-cache", labels, "--levels", "0.005", "--quiet")
    out = cli("scripts/score.py", run, "--label-cache", labels, "--levels", "0.005",
              "--quiet", "--sweep", "0:0.2:0.01", "--export-iou", tmp / "iou.npy")
    return {"tmp": tmp, "data": data, "run": run, "labels": labels, "stdout": out.stdout}


def test_sweep_needs_no_replay(swept):
    assert "IoU cube at" not in swept["stdout"]
    assert "exact quantiles" not in swept["stdout"]
    assert "IoU-threshold sweep of features.3 (from the cube, no replay)" in swept["stdout"]
    res = swept["run"] / "results"
    assert (res / f"{LAYER}.sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_sweep_equals_brute_force(swept):
    iou = np.load(swept["tmp"] / "iou.npy")                       # (K, L)
    ds = BrodenDataset(swept["data"])
    primary = np.asarray(ds.primary_category)
    cats = list(ds.all_categories)
    with open(swept["run"] / "results" / f"{LAYER}.sweep.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [float(r["iou_threshold"]) for r in rows] == [round(0.01 * i, 2)
                                                         for i in range(21)]
    top = 1 + np.argmax(iou[:, 1:], axis=1)
    best = iou[np.arange(len(top)), top]
    for r in rows:
        t = float(r["iou_threshold"])
        det = best > t
        assert int(r["detectors"]) == det.sum()
        assert int(r["unique_top_labels"]) == len(set(top[det]))
        total = 0
        for g, c in enumerate(cats):
            cols = np.flatnonzero(primary == g)
            bj = cols[np.argmax(iou[:, cols], axis=1)]
            bi = iou[np.arange(len(bj)), bj]
            n = len(set(bj[bi > t]))
            assert int(r[f"{c}-per_category_sum"]) == n, (t, c)
            assert int(r[f"{c}-detectors"]) == int((det & (primary[top] == g)).sum())
            total += n
        assert int(r["per_category_sum"]) == total
    assert int(rows[0]["detectors"]) > 0                           # not vacuous


def test_bad_sweep_is_named(swept):
    r = cli("scripts/score.py", swept["run"], "--label-cache", swept["labels"], "--levels",
            "0.005", "--quiet", "--sweep", "0.2:0.1:0.01", check=False)
    assert r.returncode == 2 and "--sweep '0.2:0.1:0.01'" in r.stderr, r.stderr
