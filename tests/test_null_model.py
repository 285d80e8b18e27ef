"""The null model (pipeline/null_model.py): permutation p-values of each unit's best IoU.

- the vectorised image-shuffle and spatial (rigid motion) nulls equal a slow NumPy
  reference built from DESIGN.md's definitions (tests/reference.py), replicate by replicate;
- on all images the observed statistic is the cube's IoU exactly;
- a planted detector unit gets the smallest possible p, smooth-noise units do not (their
  p-values spread over (0, 1]), and results are seeded;
- the CLI: hand-built units of the known-answer model are significant under both nulls
  (the whole-image ``banded`` texture cannot be tested spatially: p = 1), the random-weight
  units of tests/model_factories.py:tiny_net mostly are not; p columns are appended last.
"""
from __future__ import annotations

import csv
import json
import os
import subprocess

from clirun import cli
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import zarr

import reference as ref
from cache import activations as cache_acts
from cache import store
from pipeline.label_decoding import build_label_cache
from pipeline.broden import BrodenDataset
from pipeline.layer_stages import ScoreConfig, layer_cube, layer_results
from cache.labelsets import canonical_planes, canonical_scalars
from pipeline.null_model import (NullConfig, _Labels, _motions, _Scorer, _active_pixels,
                                 _unit_null, null_p_values, p_value)
from pipeline.synthetic.catalogue import LABELS
from pipeline.synthetic.writer import write_dataset

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------ vs the reference
def _case(seed, n=5, K=3, hw=(4, 4), seg=(8, 8)):
    """Random maps and RAW labels: plane labels 1..4 (categories 0, 1), scalar labels 5, 6
    (category 2), and what the label cache would hold for them."""
    rng = np.random.default_rng(seed)
    primary = np.array([-1, 0, 0, 1, 1, 2, 2])
    L, G = len(primary), 3
    z = rng.standard_normal((n, K, hw[0] + 2, hw[1] + 2))
    acts = sum(z[:, :, a:a + hw[0], b:b + hw[1]] for a in range(3) for b in range(3)) / 3
    acts = np.maximum(acts, 0).astype(np.float32)
    planes, scalars = [], []
    for _ in range(n):
        pl = np.zeros((2, *seg), np.int64)
        for p in range(2):
            for _ in range(3):
                y, x = rng.integers(0, seg[0], 2)
                pl[p, y:y + rng.integers(1, 5), x:x + rng.integers(1, 5)] = rng.integers(1, 5)
        planes.append(pl)
        scalars.append(rng.choice([5, 6], size=int(rng.integers(0, 2)), replace=False))
    cache = SimpleNamespace(
        planes=np.stack([canonical_planes(p, s, 2) for p, s in zip(planes, scalars)]),
        scalars=np.stack([canonical_scalars(s, 1) for s in scalars]),
        present=np.stack([ref.image_categories(p, s, primary, G)
                          for p, s in zip(planes, scalars)]),
        num_labels=L, seg_size=seg, path="memory", fingerprint=f"case{seed}")
    return acts, primary, planes, scalars, cache


def _ref_stat(masks, label_img, planes, scalars, primary, keep, c):
    """(best IoU over kept, IoU of c) of masks[j] compared with the labels of image
    label_img[j], from raw labels (tests/reference.py)."""
    L = len(primary)
    G = primary.max() + 1
    I = np.zeros(L)
    A = np.zeros(G)
    lp = np.zeros(L)
    shape = masks[0].shape
    for i in range(len(planes)):
        for cc in range(1, L):
            lp[cc] += ref.label_mask(planes[i], scalars[i], cc, shape).sum()
    for j, M in enumerate(masks):
        i = label_img[j]
        cats = ref.image_categories(planes[i], scalars[i], primary, G)
        A += cats * M.sum()
        for cc in range(1, L):
            I[cc] += (M & ref.label_mask(planes[i], scalars[i], cc, shape)).sum()
    U = A[primary[1:]] + lp[1:] - I[1:]
    iou = np.concatenate([[0.0], np.where(U > 0, I[1:] / np.where(U > 0, U, 1), 0.0)])
    return np.where(keep, iou, 0.0).max(), iou[c]


def _move(M, motion):
    tr, fy, fx, dy, dx = (int(v) for v in motion)
    M = M.T if tr else M
    M = M[::-1] if fy else M
    M = M[:, ::-1] if fx else M
    return np.roll(M, (dy, dx), axis=(0, 1))


@pytest.mark.parametrize("seed", range(3))
def test_nulls_equal_reference(seed):
    acts, primary, planes, scalars, cache = _case(seed)
    n, K = acts.shape[:2]
    seg = cache.seg_size
    T = ref.thresholds_ref(acts, [0.1])[0]
    keep = np.array([False, True, True, True, True, True, True])
    keep[2] = seed != 1                                 # a concept left out of the scoring
    lab = _Labels(cache, np.arange(n), True)
    score = _Scorer(lab, primary, keep)
    rng = np.random.default_rng(seed)
    R = 6
    sigma = np.stack([rng.permutation(n) for _ in range(R)])
    motions = _motions(rng, R, n, *seg)
    motions[:, 0] = 0                                   # replicate 0: the identity motion
    for k in range(K):
        S = ref.upsample_ref(acts[:, k], *seg)          # (n, sh, sw)
        masks = list(S > T[k])
        j, p = _active_pixels(acts[:, k], T[k], seg, chunk=100)
        got_mask = np.zeros((n, seg[0] * seg[1]), bool)
        got_mask[j, p] = True
        np.testing.assert_array_equal(got_mask.reshape(n, *seg), np.stack(masks))
        if j.size == 0:
            continue
        c = 3
        best, conc, nulls = _unit_null(j, p, lab, score, c, ("image", "spatial"), sigma,
                                       motions, seg, chunk=7)
        want = _ref_stat(masks, np.arange(n), planes, scalars, primary, keep, c)
        assert (best, conc) == pytest.approx(want, abs=1e-15)
        for r in range(R):
            want = _ref_stat([masks[jj] for jj in range(n)], sigma[r], planes, scalars,
                             primary, keep, c)
            got = (nulls["image"][0][r], nulls["image"][1][r])
            assert got == pytest.approx(want, abs=1e-15), ("image", k, r)
            moved = [_move(masks[jj], motions[:, r, jj]) for jj in range(n)]
            want = _ref_stat(moved, np.arange(n), planes, scalars, primary, keep, c)
            got = (nulls["spatial"][0][r], nulls["spatial"][1][r])
            assert got == pytest.approx(want, abs=1e-15), ("spatial", k, r)
        assert nulls["spatial"][0][0] == best          # the identity motion is a tie


def test_p_value_formula():
    assert p_value(np.array([0.1, 0.2, 0.3]), 0.25) == 2 / 4
    assert p_value(np.array([0.1, 0.2, 0.3]), 0.3) == 2 / 4     # ties count against
    assert p_value(np.array([0.1, 0.2]), 0.5) == 1 / 3
    np.testing.assert_array_equal(p_value(np.array([[0.1, 0.5], [0.2, 0.6]]), [0.15, 0.7]),
                                  [2 / 3, 1 / 3])


def test_bad_config():
    for cfg, msg in [(NullConfig(kinds=("shuffle",)), "--null: unknown kind"),
                     (NullConfig(permutations=0), "--null-permutations must be >= 1"),
                     (NullConfig(images=0), "--null-images must be >= 1")]:
        with pytest.raises(ValueError, match=msg):
            cfg.check()


# --------------------------------------------------------------- a planted run
def planted_run(tmp: Path, n=120, size=48, seg=24, noise_units=24, seed=3):
    """A run (no network) whose unit 1 is the box-downsampled sky mask of each image
    (graded by a little noise) and units 2.. are smooth Gaussian noise."""
    data = write_dataset(tmp / "broden", num_images=n, image_size=size, seg_size=seg,
                         seed=seed, workers=1, progress=False)
    ds = BrodenDataset(data)
    labels = build_label_cache(ds, tmp / "labels.zarr", workers=1, progress=False)
    rng = np.random.default_rng(seed)
    h = w = seg // 2
    sky = (labels.planes[:] == LABELS["sky"]).any(axis=1)
    det = sky.reshape(n, h, 2, w, 2).mean(axis=(2, 4)) * (1 + 0.1 * rng.random((n, h, w)))
    z = rng.standard_normal((n, noise_units, h + 2, w + 2))
    noise = sum(z[:, :, a:a + h, b:b + w] for a in range(3) for b in range(3)) / 3
    acts = np.concatenate([det[:, None], np.maximum(noise, 0)], axis=1).astype(np.float32)
    K = acts.shape[1]
    run = tmp / "run"
    attrs = {"format": store.RUN_FORMAT, "version": store.RUN_VERSION,
             "dataset": {"path": str(Path(data).resolve()), "fingerprint": ds.fingerprint(),
                         "num_images": n, "image_size": [size, size], "seg_size": [seg, seg]},
             "model": {"spec": "planted", "weights": None, "fingerprint": f"planted-{seed}"},
             "preprocessing": {}, "layers": ["planted"], "dtype": "float32",
             "layer_nodes": {"planted": "planted"}, "layer_shapes": {"planted": [K, h, w]},
             "block_images": 64, "versions": {}, "layout_complete": True}
    g = zarr.open_group(run, mode="w", attributes=attrs)
    cache_acts.create_layer_arrays(g, "planted", (K, h, w), n, 64, "float32")
    cache_acts.create_progress(g, n, 64)
    g["layers/planted/activations"][:] = acts
    g["layers/planted/maxima"][:] = acts.reshape(n, K, -1).max(axis=2)
    g["progress"][:] = 1
    return run, labels


R = 100


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("planted")
    run, labels = planted_run(tmp)
    cfg = ScoreConfig(quantile=0.05, levels=(0.05,), progress=False,
                      null=NullConfig(permutations=R, images=None, seed=0))
    cube = layer_cube(run, "planted", labels, cfg, log=lambda *a: None)
    layer_results(run, "planted", cube, labels, cfg, log=lambda *a: None)
    doc = json.load(open(run / "results" / cfg.scoring_name() / "planted.json"))
    return {"run": run, "labels": labels, "cube": cube, "doc": doc}


def test_observed_is_the_cube_iou_on_all_images(planted):
    for u in planted["doc"]["units"]:
        assert u["null"]["iou_sample"] == u["iou"]             # exact: same counts
        assert u["null"]["concept_iou_sample"] == u["iou"]
        assert u["null"]["concept"] == u["label"]


def test_planted_detector_is_significant_noise_is_not(planted):
    units = planted["doc"]["units"]
    det = units[0]
    assert det["label"] == "sky" and det["iou"] > 0.5
    assert det["p_image"] == det["p_spatial"] == 1 / (R + 1)
    noise = units[1:]
    p = np.array([u["p_image"] for u in noise])
    assert np.mean(p <= 0.05) <= 0.2, p                        # about uniform on (0, 1]
    assert np.median(p) > 0.2, p
    # the noise units' best concepts are textures (whole-image labels): untestable by
    # moving the mask within the image
    assert all(u["p_spatial"] == 1.0 for u in noise if u["category"] == "texture")


def test_subsample_is_seeded(planted):
    acts = store.activations(planted["run"], "planted")
    cube, labels = planted["cube"], planted["labels"]
    T = cube.thresholds[0]
    concepts = [u["label_number"] for u in planted["doc"]["units"]]
    args = (acts, labels, T, concepts, labels.primary_category, None)
    a = null_p_values(*args, NullConfig(permutations=30, images=50, seed=1))
    b = null_p_values(*args, NullConfig(permutations=30, images=50, seed=1))
    c = null_p_values(*args, NullConfig(permutations=30, images=50, seed=2))
    assert a.images.size == 50 and np.all(np.diff(a.images) > 0)
    np.testing.assert_array_equal(a.images, b.images)
    for kind in ("image", "spatial"):
        np.testing.assert_array_equal(a.p[kind], b.p[kind])
    assert not np.array_equal(a.images, c.images)
    assert a.p["image"][0] == 1 / 31                           # still the planted detector


# ----------------------------------------------------------------------- the CLI
def _run(args, env=None) -> subprocess.CompletedProcess:
    return cli(*args, env=env, check=False)


def _ok(args, env=None):
    r = _run(args, env)
    assert r.returncode == 0, f"{args[0]} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}"
    return r


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


@pytest.fixture(scope="module")
def known_answer(tmp_path_factory):
    from tests.test_known_answer import IMAGE_SIZE, MODEL, NUM_IMAGES, SEED, SEG_SIZE
    tmp = tmp_path_factory.mktemp("null_known_answer")
    data = write_dataset(tmp / "data", num_images=NUM_IMAGES, image_size=IMAGE_SIZE,
                         seg_size=SEG_SIZE, seed=SEED, workers=1, progress=False)
    env = dict(os.environ, NETDISSECT_CACHE=str(tmp / "cache"))
    run = tmp / "run"
    _ok(["scripts/extract.py", "--dataset", data, "--model", MODEL, "--layers", "units",
         "--out", run, "--mean", "0,0,0", "--std", "1,1,1", "--workers", "0",
         "--batch-size", "64", "--no-progress"], env)
    score = ["scripts/score.py", run, "--label-cache", tmp / "labels.zarr", "--quantile",
             "0.05", "--quiet"]
    _ok(score, env)
    plain = _rows(run / "results" / "q0.05" / "units.csv")
    out = _ok(score + ["--null", "--null-permutations", "50", "--null-images", "all"], env)
    null = run / "results" / "q0.05_null-image+spatial-p50-nall-s0"   # beside the plain one
    return {"run": run, "env": env, "score": score, "plain": plain, "stdout": out.stdout,
            "rows": _rows(null / "units.csv"), "doc": json.load(open(null / "units.json"))}


@pytest.mark.slow
def test_known_answer_units_are_significant(known_answer):
    from tests.known_answer_model import UNITS
    units = {UNITS[u["unit"] - 1]: u for u in known_answer["doc"]["units"]}
    for name in ("red-c", "yellow-c", "sky", "banded"):
        assert units[name]["label"] == name
        assert units[name]["p_image"] == 1 / 51, units[name]
    for name in ("red-c", "yellow-c", "sky"):               # pixel concepts: located
        assert units[name]["p_spatial"] == 1 / 51, units[name]
    assert units["banded"]["p_spatial"] == 1.0               # whole-image texture
    assert units["dead"]["p_image"] == units["dead"]["p_spatial"] == 1.0
    assert "null model (image, spatial; 50 permutations, 300 images)" in known_answer["stdout"]
    assert "IoU cube" not in known_answer["stdout"]           # no replay for the null
    s = known_answer["doc"]["summary"]["significant_detectors"]
    assert s == {"alpha": 0.05, "p_image": 4, "p_spatial": 3}


@pytest.mark.slow
def test_p_columns_are_appended_last(known_answer):
    plain, rows = known_answer["plain"], known_answer["rows"]
    assert rows[0] == plain[0] + ["p_image", "p_spatial"]
    assert [r[:-2] for r in rows[1:]] == plain[1:]           # everything else unchanged
    doc = {u["unit"]: u for u in known_answer["doc"]["units"]}
    for r in rows[1:]:
        u = doc[int(r[0])]
        assert float(r[-2]) == u["p_image"] and float(r[-1]) == u["p_spatial"]


@pytest.mark.slow
def test_only_one_kind(known_answer):
    r = _ok(known_answer["score"] + ["--null", "image", "--null-permutations", "20",
                                     "--null-images", "100", "--null-seed", "3"],
            known_answer["env"])
    assert "null model (image; 20 permutations, 100 images)" in r.stdout
    res = known_answer["run"] / "results" / "q0.05_null-image-p20-n100-s3"
    rows = _rows(res / "units.csv")
    assert rows[0][-1] == "p_image" and "p_spatial" not in rows[0]
    doc = json.load(open(res / "units.json"))
    assert doc["config"]["null"] == {"kinds": ["image"], "permutations": 20, "images": 100,
                                     "seed": 3}


@pytest.mark.parametrize("args, message", [
    (["--null", "shuffle"], "--null: unknown kind(s) ['shuffle']"),
    (["--null", "--null-permutations", "0"], "--null-permutations must be >= 1"),
    (["--null", "--null-images", "many"], "--null-images 'many': expected a number"),
])
def test_bad_null_arguments_are_named(args, message, capsys, tmp_path):
    """In-process (the arguments are checked before the run is opened)."""
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import score
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    assert score.main([str(tmp_path), "--quiet", *args]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.slow
def test_random_weight_units_mostly_not_significant(tmp_path):
    """tiny_net's random conv units respond to colours and edges, so a few may be real
    (weak) detectors; most are not distinguishable from a shuffled image."""
    data = write_dataset(tmp_path / "broden", num_images=60, image_size=48, seg_size=24,
                         seed=11, workers=1, progress=False)
    run = tmp_path / "run"
    _ok(["scripts/extract.py", "--dataset", data, "--model",
         "tests/model_factories.py:tiny_net", "--layers", "features.3", "--input-size", "26",
         "--out", run, "--workers", "0", "--no-progress"])
    _ok(["scripts/score.py", run, "--label-cache", tmp_path / "l.zarr", "--quiet", "--null",
         "--null-images", "all"])
    doc = json.load(open(run / "results" / "null-image+spatial-p100-nall-s0" /
                         "features.3.json"))
    p = np.array([u["p_image"] for u in doc["units"]])
    assert p.size == 16
    assert np.mean(p <= 0.05) <= 0.25, p
    assert np.median(p) > 0.1, p
    # testing each unit's label alone ignores that it was picked as the best of ~80
    # concepts: most of these units look significant that way (README, "Null model")
    pc = np.array([u["null"]["p_concept_image"] for u in doc["units"]])
    assert np.mean(pc <= 0.05) >= 0.5, pc
