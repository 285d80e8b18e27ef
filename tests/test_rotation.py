"""Random rotation (pipeline/experiments/, scripts/rotate.py): Q uniform on SO(K), the
fractional power along the geodesic, derived runs of rotated activations, and the
experiment CLI on a small extracted run of tiny_net."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from cache import store
from pipeline.experiments import derived_runs as dr
from pipeline.cli import parse_alphas
from pipeline.experiments import rotation_matrices as rot
from pipeline.layer_stages import ScoreConfig, layer_cube, layer_results
from scoring_fixtures import (assert_cubes_equal, cli, make_dataset, make_labels, make_run,
                              stored_cube)

LAYER = "features.3"
KS = (1, 2, 3, 4, 5, 16, 33)


def err(a, b) -> float:
    return float(np.abs(np.asarray(a) - np.asarray(b)).max()) if np.size(a) else 0.0


# ----------------------------------------------------------------------- matrices
@pytest.mark.parametrize("K", KS)
def test_rotation_is_orthogonal_with_det_one(K):
    for seed in range(3):
        Q = rot.random_rotation(K, seed)
        assert Q.shape == (K, K) and Q.dtype == np.float64
        assert err(Q.T @ Q, np.eye(K)) < 1e-12
        assert abs(np.linalg.det(Q) - 1.0) < 1e-9
    np.testing.assert_array_equal(rot.random_rotation(K, 7), rot.random_rotation(K, 7))


@pytest.mark.parametrize("K", KS)
def test_fractional_powers(K):
    Q = rot.random_rotation(K, 1)
    np.testing.assert_array_equal(rot.fractional_rotation(Q, 0.0), np.eye(K))
    assert err(rot.fractional_rotation(Q, 1.0), Q) < 1e-6
    for a, b in [(0.2, 0.3), (0.5, 0.5), (0.1, 0.9), (0.25, 0.6), (0.0, 0.7)]:
        Qa, Qb = rot.fractional_rotation(Q, a), rot.fractional_rotation(Q, b)
        assert err(Qa @ Qb, rot.fractional_rotation(Q, a + b)) < 1e-6
        assert err(Qa.T @ Qa, np.eye(K)) < 1e-9
        assert np.linalg.det(Qa) == pytest.approx(1.0, abs=1e-9)


def test_fractional_rotation_is_the_minimal_geodesic_in_2d():
    t = 2.5
    Q = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    half = rot.fractional_rotation(Q, 0.5)
    want = np.array([[np.cos(t / 2), -np.sin(t / 2)], [np.sin(t / 2), np.cos(t / 2)]])
    assert err(half, want) < 1e-12


def test_minus_one_eigenvalue_pairs():
    """-I on a plane (plus a 3-d rotation): paired and rotated by alpha * pi."""
    Q = np.eye(5)
    Q[:2, :2] = -np.eye(2)
    Q[2:, 2:] = rot.random_rotation(3, 4)
    Q = np.diag([1, 1, 1, -1, -1.0]) @ Q @ np.diag([1, 1, 1, -1, -1.0])   # still SO(5)
    for M in (Q, -np.eye(4), np.diag([-1.0, 1, -1, 1])):
        K = M.shape[0]
        assert err(rot.fractional_rotation(M, 1.0), M) < 1e-9
        half = rot.fractional_rotation(M, 0.5)
        assert err(half @ half, M) < 1e-9
        assert err(half.T @ half, np.eye(K)) < 1e-12


def test_rejects_non_rotations():
    with pytest.raises(ValueError, match="det Q = -1"):
        rot.fractional_rotation(np.diag([1.0, -1.0]), 0.5)
    with pytest.raises(ValueError, match="not orthogonal"):
        rot.fractional_rotation(np.array([[1.0, 1.0], [0.0, 1.0]]), 0.5)


def test_distribution_sanity():
    """Over many seeds: det +1 always; E[Q] ~ 0 and E[Q_ij^2] ~ 1/K (Haar moments);
    the rotation angle of SO(2) is uniform (mean |t| ~ pi/2)."""
    K, n = 4, 600
    Qs = np.stack([rot.random_rotation(K, s) for s in range(n)])
    assert np.all(np.abs(np.linalg.det(Qs) - 1) < 1e-9)
    assert np.abs(Qs.mean(axis=0)).max() < 0.12
    assert np.abs((Qs ** 2).mean(axis=0) - 1 / K).max() < 0.06
    t = np.array([np.arctan2(Q[1, 0], Q[0, 0]) for Q in
                  (rot.random_rotation(2, s) for s in range(n))])
    assert abs(np.abs(t).mean() - np.pi / 2) < 0.15
    assert abs((t > 0).mean() - 0.5) < 0.08


def test_random_combination_rows_unit_norm():
    M = rot.random_combination(9, 3)
    assert np.allclose(np.linalg.norm(M, axis=1), 1.0)
    assert err(M.T @ M, np.eye(9)) > 0.1                 # not a rotation
    np.testing.assert_array_equal(M, rot.random_combination(9, 3))


def test_parse_alphas():
    assert parse_alphas("1,0,0.5,0.5") == [0.0, 0.5, 1.0]
    for spec, msg in [("a", "comma-separated"), ("", "no alpha"), ("0,1.5", r"\[0, 1\]")]:
        with pytest.raises(ValueError, match=f"--alphas.*{msg}"):
            parse_alphas(spec)


# ----------------------------------------------------------------------- derived runs
@pytest.fixture(scope="module")
def small(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rotation")
    data = make_dataset(tmp / "broden", num_images=24)
    run = make_run(data, tmp / "run")
    labels = make_labels(data, tmp / "labels.zarr")
    return {"tmp": tmp, "data": data, "run": run, "labels": labels}


def _score(run, labels, q=0.005):
    cfg = ScoreConfig(quantile=q, levels=(q,), progress=False)
    cube = layer_cube(run, LAYER, labels, cfg, log=lambda m: None)
    d, summary, _ = layer_results(run, LAYER, cube, labels, cfg, log=lambda m: None)
    return cube, d, summary


def test_identity_rotation_reproduces_the_unrotated_cube(small):
    src = small["run"]
    assert str(store.activations(src, LAYER).dtype) == "float16"
    K = store.activations(src, LAYER).shape[1]
    I = rot.fractional_rotation(rot.random_rotation(K, 0), 0.0)
    out = dr.write_transformed_run(src, LAYER, I, small["tmp"] / "ident",
                                transform={"kind": "rotation", "alpha": 0.0, "seed": 0},
                                progress=False)
    a0 = np.asarray(store.activations(src, LAYER)[:]).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(store.activations(out, LAYER)[:]), a0)
    np.testing.assert_array_equal(np.asarray(store.maxima(out, LAYER)[:]),
                                  np.asarray(store.maxima(src, LAYER)[:]))
    _, d0, s0 = _score(src, small["labels"])
    _, d1, s1 = _score(out, small["labels"])
    assert_cubes_equal(stored_cube(src, LAYER), stored_cube(out, LAYER))
    np.testing.assert_array_equal(d0.iou, d1.iou)
    assert s0 == s1
    attrs = store.read_run_attrs(out)
    assert attrs["model"]["fingerprint"] != store.read_run_attrs(src)["model"]["fingerprint"]
    assert attrs["transform"]["kind"] == "rotation" and attrs["source"]["layer"] == LAYER
    assert attrs["dtype"] == "float32"


def test_rotation_values_and_resume(small):
    """r = Q f at every position (float64 reference); a rewritten block after a fake
    interruption gives the same array; another transform at the same place is a new
    fingerprint and rewrites the run."""
    src = small["run"]
    f = np.asarray(store.activations(src, LAYER)[:]).astype(np.float64)
    K = f.shape[1]
    Q = rot.fractional_rotation(rot.random_rotation(K, 5), 0.6)
    dest = small["tmp"] / "rot06"
    dr.write_transformed_run(src, LAYER, Q, dest, transform={"kind": "rotation", "alpha": 0.6,
                                                           "seed": 5}, progress=False)
    r = np.asarray(store.activations(dest, LAYER)[:])
    want = np.einsum("ij,njyx->niyx", Q, f).astype(np.float32)
    np.testing.assert_allclose(r, want, rtol=1e-6, atol=1e-6)
    assert (r < 0).any()                                    # rotated values are signed
    np.testing.assert_array_equal(np.asarray(store.maxima(dest, LAYER)[:]),
                                  r.reshape(r.shape[0], K, -1).max(axis=2))
    fp = store.read_run_attrs(dest)["model"]["fingerprint"]
    assert dr.derived_is_complete(dest, fp)
    g = store.open_run(dest, mode="r+")
    g["progress"][0] = 0                                    # as if killed in block 0
    assert not dr.derived_is_complete(dest, fp)
    dr.write_transformed_run(src, LAYER, Q, dest, transform={"kind": "rotation", "alpha": 0.6,
                                                           "seed": 5}, progress=False)
    assert dr.derived_is_complete(dest, fp)
    np.testing.assert_array_equal(np.asarray(store.activations(dest, LAYER)[:]), r)
    dr.write_transformed_run(src, LAYER, np.eye(K), dest, progress=False)
    assert store.read_run_attrs(dest)["model"]["fingerprint"] != fp
    np.testing.assert_array_equal(np.asarray(store.activations(dest, LAYER)[:]),
                                  f.astype(np.float32))
    with pytest.raises(ValueError, match=r"must be \(16, 16\)"):
        dr.write_transformed_run(src, LAYER, np.eye(3), dest, progress=False)


def test_rotation_lowers_a_planted_detector(small):
    """Unit 0 replaced by a near-perfect detector of the most frequent scene/texture
    label (a graded map over exactly that label's images, at a quantile that keeps ~90%
    of them): IoU ~0.98. Rotating the basis spreads it over all units: for every seed
    tried, the best IoU of that concept over the rotated units drops."""
    from cache.labels import LabelCache
    from pipeline.scoring import iou_matrix
    from scoring_fixtures import copy_fresh
    labels = small["labels"]
    src = copy_fresh(small["run"], small["tmp"] / "planted")
    sc = np.asarray(LabelCache.open(labels.path).scalars[:])[:, 0]
    vals, cnt = np.unique(sc[sc > 0], return_counts=True)
    c, n_c = int(vals[cnt.argmax()]), int(cnt.max())
    g = store.layer_group(src, LAYER, mode="a")
    a = np.asarray(g["activations"][:]).astype(np.float32)
    N, K, h, w = a.shape
    amp = np.quantile(a[:, 1:], 0.99)
    a[:, 0] = 0
    a[sc == c, 0] = amp * (1 + 0.05 * np.random.default_rng(0).random((n_c, h, w)))
    a = a.astype(np.float16)
    g["activations"].with_config({"write_empty_chunks": True})[:] = a
    g["maxima"][:] = a.astype(np.float32).reshape(N, K, -1).max(axis=2)
    q = 0.9 * n_c / N
    cfg = ScoreConfig(quantile=q, levels=(q,), progress=False)

    def best_iou(run) -> float:
        cube = layer_cube(run, LAYER, labels, cfg, log=lambda m: None)
        iou = iou_matrix(cube.intersect[0], cube.activation[0], cube.label_pixels,
                         labels.primary_category)
        return float(iou[:, c].max())

    before = best_iou(src)
    assert before > 0.95
    for seed in range(3):
        Q = rot.random_rotation(K, seed)
        out = dr.write_transformed_run(src, LAYER, Q, small["tmp"] / f"planted-rot{seed}",
                                    progress=False)
        assert best_iou(out) < before - 0.02, seed


# ----------------------------------------------------------------------- CLI
@pytest.mark.slow
def test_rotate_cli_end_to_end(small):
    out = small["tmp"] / "rotations"
    args = ("scripts/rotate.py", small["run"], "--layer", LAYER, "--alphas", "0,0.5,1",
            "--seed", "2", "--baseline", "combination", "--label-cache",
            small["tmp"] / "labels.zarr", "--out", out, "--quiet")
    first = cli(*args)
    runs = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert runs == [f"{LAYER}-combination-seed2", f"{LAYER}-seed2-a0", f"{LAYER}-seed2-a0.5",
                    f"{LAYER}-seed2-a1"]
    assert (out / f"{LAYER}-seed2.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with open(out / f"{LAYER}-seed2.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["transform"], r["alpha"]) for r in rows] == [
        ("rotation", "0.0"), ("rotation", "0.5"), ("rotation", "1.0"), ("combination", "")]
    assert {"per_category_sum", "unique_top_labels", "detectors"} <= set(rows[0])
    assert "reusing" not in first.stdout
    assert "unique detectors of features.3 against the rotation" in first.stdout
    # alpha 0 is the unrotated layer: the same counts as score.py on the source run
    score = cli("scripts/score.py", small["run"], "--layer", LAYER, "--label-cache",
                small["tmp"] / "labels.zarr", "--levels", "0.005", "--quiet")
    import json
    doc = json.loads((Path(small["run"]) / "results" / f"{LAYER}.json").read_text())
    for key in ("detectors", "unique_top_labels", "per_category_sum"):
        assert int(rows[0][key]) == doc["summary"][key], (key, score.stdout)
    assert not (out / f"{LAYER}-seed2-a0" / "results").exists()
    # rerun: every derived run reused, no replay, same table; --reports adds report files
    again = cli(*args, "--reports")
    assert again.stdout.count("reusing the derived run") == 4
    assert "IoU cube at" not in again.stdout and "exact quantiles" not in again.stdout
    assert (out / f"{LAYER}-seed2-a0" / "results" / f"{LAYER}.csv").is_file()
    with open(out / f"{LAYER}-seed2.csv") as fh:
        assert list(csv.DictReader(fh)) == rows


@pytest.mark.slow
def test_rotate_cli_errors(small):
    r = cli("scripts/rotate.py", small["run"], "--layer", "nope", "--label-cache",
            small["tmp"] / "labels.zarr", check=False)
    assert r.returncode == 2 and "nope" in r.stderr
    r = cli("scripts/rotate.py", small["run"], "--layer", LAYER, "--alphas", "0,2",
            "--label-cache", small["tmp"] / "labels.zarr", check=False)
    assert r.returncode == 2 and "--alphas" in r.stderr


def test_derived_run_of_a_source_extracted_again_is_stale(small, tmp_path):
    """A derived run keyed to its source's content: after the source layer is extracted
    again with other preprocessing, the experiment writes the derived run anew instead of
    reusing it, and gives what a fresh experiment gives."""
    from pipeline.experiments.rotation import RotationSpec, run_experiment
    run = tmp_path / "run"
    make_run(small["data"], run)
    out = tmp_path / "rotations"                      # outside the run: --overwrite keeps it
    spec = RotationSpec(layer=LAYER, alphas=(0.5,), out=out)

    def experiment(where, spec):
        said = []
        res = run_experiment(where, spec, ScoreConfig(levels=(0.005,), progress=False),
                             label_cache=small["labels"].path, log=said.append)
        return res.points, said
    experiment(run, spec)
    make_run(small["data"], run, overwrite=True, yes=True, mean=(0.2, 0.3, 0.4))
    points, said = experiment(run, spec)
    assert not [m for m in said if "reusing" in m], said
    fresh, _ = experiment(run, RotationSpec(layer=LAYER, alphas=(0.5,), out=tmp_path / "new"))
    assert points == fresh
