"""IoU, unit labels, detectors and the result CSV from integer counts."""
from __future__ import annotations

import csv

import numpy as np
import pytest

from pipeline.files import write_csv
from pipeline.scoring import dissect, iou_matrix
from result_csv_reference import result_rows

CATS = ["color", "object", "scene"]


def brute_iou(I, A, Lp, primary):
    K, L = I.shape
    out = np.zeros((K, L))
    for k in range(K):
        for c in range(L):
            if primary[c] < 0:
                continue
            u = A[k, primary[c]] + Lp[c] - I[k, c]
            out[k, c] = I[k, c] / u if u > 0 else 0.0
    return out


def random_counts(rng, K=7, L=9, G=3):
    primary = np.concatenate([[-1, -1], rng.permutation(np.arange(L - 2) % G)])
    Lp = rng.integers(0, 50, size=L)
    A = rng.integers(0, 60, size=(K, G))
    I = np.zeros((K, L), dtype=np.int64)
    for k in range(K):
        for c in range(L):
            if primary[c] >= 0:
                I[k, c] = rng.integers(0, min(Lp[c], A[k, primary[c]]) + 1)
    return I, A, Lp, primary


@pytest.mark.parametrize("seed", range(5))
def test_iou_matches_brute_force(seed):
    I, A, Lp, primary = random_counts(np.random.default_rng(seed))
    np.testing.assert_array_equal(iou_matrix(I, A, Lp, primary), brute_iou(I, A, Lp, primary))


def test_labels_ties_detectors_and_subsets():
    primary = np.array([-1, 0, 0, 1, 1, 2])
    Lp = np.array([0, 10, 10, 10, 10, 10])
    # unit 0: labels 1 and 2 tie at IoU 0.5 -> lowest number 1; unit 1: object 4;
    # unit 2 never fires (all zero) -> no detector; unit 3: weak scene
    I = np.array([[0, 5, 5, 0, 0, 0],
                  [0, 0, 0, 1, 8, 0],
                  [0, 0, 0, 0, 0, 0],
                  [0, 0, 0, 0, 0, 1]])
    A = np.array([[5, 0, 0], [0, 8, 0], [0, 0, 0], [0, 0, 30]])
    d = dissect(I, A, Lp, primary, CATS, iou_threshold=0.04)
    assert [(u.label, u.category) for u in d.units] == [(1, "color"), (4, "object"),
                                                         (1, "color"), (5, "scene")]
    assert d.units[0].iou == 0.5 and d.units[1].iou == 8 / 10
    assert d.units[3].iou == pytest.approx(1 / 39)
    assert [u.unit for u in d.detectors()] == [0, 1]
    s = d.summary()
    assert s["detectors"] == 2 and s["unique_top_labels"] == 2
    assert s["unique_top_labels_per_category"] == {"color": 1, "object": 1, "scene": 0}
    # per-category: unit 0 is also best-in-object with IoU 0 -> not counted
    assert s["per_category_sum_per_category"] == {"color": 1, "object": 1, "scene": 0}
    # re-scoring: a lower threshold, a subset of categories
    low = dissect(I, A, Lp, primary, CATS, iou_threshold=0.02).summary()
    assert low["detectors"] == 3 and low["unique_top_labels_per_category"]["scene"] == 1
    sub = dissect(I, A, Lp, primary, CATS, selected=["scene", "object"])
    assert sub.categories == ["object", "scene"]
    assert [u.label for u in sub.units] == [3, 4, 3, 5]
    assert sub.units[0].iou == 0.0 and set(sub.units[0].best) == {"object", "scene"}
    with pytest.raises(ValueError, match="iou-threshold"):
        dissect(I, A, Lp, primary, CATS, iou_threshold=1.5)
    with pytest.raises(ValueError, match="unknown.*'texture'"):
        dissect(I, A, Lp, primary, CATS, selected=["texture"])


def test_result_csv_layout(tmp_path):
    I, A, Lp, primary = random_counts(np.random.default_rng(3), K=5, L=9, G=3)
    d = dissect(I, A, Lp, primary, CATS)
    names = [f"l{i}" for i in range(9)]
    header, rows = result_rows(d, I, A, Lp, CATS, names)
    path = write_csv(tmp_path / "r.csv", header, rows)
    got = list(csv.DictReader(open(path)))
    assert list(got[0].keys()) == ["unit", "category", "label", "score"] + [
        f"{c}-{f}" for c in CATS for f in ["label", "truth", "activation", "intersect", "iou"]]
    scores = [float(r["score"]) for r in got]
    assert scores == sorted(scores, reverse=True)
    assert sorted(int(r["unit"]) for r in got) == [1, 2, 3, 4, 5]
    iou = iou_matrix(I, A, Lp, primary)
    for r in got:
        k = int(r["unit"]) - 1
        assert float(r["score"]) == iou[k].max()
        for g, c in enumerate(CATS):
            j = names.index(r[f"{c}-label"])
            assert primary[j] == g
            assert float(r[f"{c}-iou"]) == iou[k, primary == g].max()
            assert int(r[f"{c}-truth"]) == Lp[j] and int(r[f"{c}-intersect"]) == I[k, j]
            assert int(r[f"{c}-activation"]) == A[k, g]
