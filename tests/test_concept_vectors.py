"""Concept vectors (pipeline/concept_vectors/): Net2Vec on the caches.

- the sampled pixels' features are the scoring's upsampling, bit for bit;
- the held-out counts of a vector's mask and of the best single unit's mask equal a slow
  NumPy reference of DESIGN.md (tests/reference.py: per-pixel upsampling, raw label
  planes, scalar labels, images lacking the category);
- seeded: the same seed gives the same weights bit for bit, another seed other weights;
- the known answer: a concept encoded only as the sum of two units (each covers half of
  it, plus noise) is recovered by a vector with most of its weight on those two, and a
  held-out IoU above either unit's;
- the sample is bounded (at most n pixels per concept, positives in L_c, negatives in
  X_g and outside L_c, no pixel twice);
- the API writes the CSV, weights and chart of a real run; the CLI names bad flags.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import reference as ref
from cache.labels import LabelTile
from cache.labelsets import canonical_planes, canonical_scalars
from pipeline.commandline import concept_vectors as cli
from pipeline.concept_vectors.evaluation import vector_counts
from pipeline.concept_vectors.experiment import VectorConfig, compute, concept_vectors
from pipeline.concept_vectors.sampling import (image_features, pixel_features, plan_sample,
                                               split_images)
from pipeline.concept_vectors.training import TrainConfig, units_carrying
from pipeline.upsample import upsample


class FakeLabels:
    """The LabelCache interface over in-memory raw labels (canonical form built here)."""

    def __init__(self, planes, scalars, primary, categories, slots=3):
        self.raw = (planes, scalars)
        self.primary_category = np.asarray(primary)
        self.categories = list(categories)
        self.num_labels = len(primary)
        self.label_names = ["-"] + [f"c{i}" for i in range(1, len(primary))]
        self.planes = np.stack([canonical_planes(p, s, slots) for p, s in zip(planes, scalars)])
        S = max(1, max(len(s) for s in scalars))
        self.scalars = np.stack([canonical_scalars(s, S) for s in scalars])
        self.present = np.stack([ref.image_categories(p, s, self.primary_category,
                                                      len(categories))
                                 for p, s in zip(planes, scalars)])
        self.seg_size = tuple(self.planes.shape[2:])
        self.chunk_images = 8

    def read(self, start, stop):
        return LabelTile(start, self.planes[start:stop], self.scalars[start:stop],
                         self.present[start:stop])


def random_case(seed, n=14, K=3, hw=(4, 4), seg=(8, 8)):
    """Random smooth maps and raw labels: plane labels 1..4 (categories 0, 1; a few
    images hold none of category 1), scalar labels 5, 6 (category 2)."""
    rng = np.random.default_rng(seed)
    primary = np.array([-1, 0, 0, 1, 1, 2, 2])
    z = rng.standard_normal((n, K, hw[0] + 2, hw[1] + 2))
    acts = sum(z[:, :, a:a + hw[0], b:b + hw[1]] for a in range(3) for b in range(3)) / 3
    acts = np.maximum(acts, 0).astype(np.float32)
    planes, scalars = [], []
    for i in range(n):
        pl = np.zeros((2, *seg), np.int64)
        for p in range(2):
            for _ in range(3):
                y, x = rng.integers(0, seg[0], 2)
                hi = 5 if i % 4 else 3                      # every 4th: no category 1
                pl[p, y:y + rng.integers(1, 5), x:x + rng.integers(1, 5)] = rng.integers(1, hi)
        planes.append(pl)
        scalars.append(rng.choice([5, 6], size=int(rng.integers(0, 2)), replace=False))
    return acts, FakeLabels(planes, scalars, primary, ["a", "b", "c"])


def reference_counts(acts, labels, images, mask_fn, c):
    """(I, A) of concept c over ``images``: mask_fn(x) -> (sh, sw) bool."""
    g = labels.primary_category[c]
    planes, scalars = labels.raw
    I = A = 0
    for x in images:
        M = mask_fn(x)
        L = ref.label_mask(planes[x], scalars[x], c, labels.seg_size)
        if ref.image_categories(planes[x], scalars[x], labels.primary_category, 3)[g]:
            A += int(M.sum())
        I += int((M & L).sum())
    return I, A


# -------------------------------------------------------------- upsampling, counts
def test_pixel_features_are_the_scoring_upsampling():
    rng = np.random.default_rng(0)
    maps = rng.standard_normal((5, 7, 7)).astype(np.float32)
    full = upsample(torch.from_numpy(maps), (30, 26)).numpy().reshape(5, -1)
    pix = rng.choice(30 * 26, 100, replace=False)
    np.testing.assert_array_equal(pixel_features(maps, pix, (30, 26)), full[:, pix].T)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_vector_counts_equal_reference(seed):
    acts, labels = random_case(seed)
    rng = np.random.default_rng(100 + seed)
    chosen = np.array([1, 3, 4, 5])
    W = rng.standard_normal((4, acts.shape[1]))
    bias = rng.standard_normal(4) * 0.3
    for tau in (0.5, 0.3):
        I, A = vector_counts(acts, labels.planes, labels.scalars, labels.present, W, bias,
                             chosen, labels.primary_category[chosen], tau)
        for j, c in enumerate(chosen):
            S = lambda x: ref.upsample_ref(acts[x], *labels.seg_size)      # noqa: E731
            t = np.log(tau / (1 - tau))
            want = reference_counts(acts, labels, range(len(acts)),
                                    lambda x: np.tensordot(W[j], S(x), 1) + bias[j] > t, c)
            assert (I[j], A[j]) == want, (tau, c)


@pytest.mark.parametrize("seed", [3, 4])
def test_heldout_iou_equals_reference(seed):
    acts, labels = random_case(seed, n=20)
    T = ref.thresholds_ref(acts, [0.1])[0]
    cfg = VectorConfig(quantile=0.1, pixels_per_concept=40, seed=seed,
                       train=TrainConfig(steps=20), tile_images=6)
    frame, W = compute(acts, acts.reshape(*acts.shape[:2], -1).max(axis=2), labels, T, cfg)
    held = np.flatnonzero(~split_images(len(acts), 0.5, seed))
    assert len(frame) and frame["label"].tolist() == sorted(frame["label"])
    sh, sw = labels.seg_size
    for r, w in zip(frame.itertuples(), W):
        c = r.label
        vec = reference_counts(acts, labels, held, lambda x: np.tensordot(
            w, ref.upsample_ref(acts[x], sh, sw), 1) + r.bias > 0, c)
        lp = sum(ref.label_mask(*(a[x] for a in labels.raw), c, (sh, sw)).sum()
                 for x in held)
        assert r.heldout_pixels == lp
        assert (r.vector_intersection, r.vector_union) == (vec[0], vec[1] + lp - vec[0])
        unit = reference_counts(acts, labels, held, lambda x: ref.upsample_ref(
            acts[x, r.unit], sh, sw) > T[r.unit], c)
        assert (r.unit_intersection, r.unit_union) == (unit[0], unit[1] + lp - unit[0])
        U = r.vector_union
        assert r.vector_iou == (r.vector_intersection / U if U else 0.0)


# ------------------------------------------------------------------ the sample
def test_sample_is_bounded_and_where_it_should_be():
    acts, labels = random_case(5, n=30, K=1, hw=(8, 8))
    sh, sw = labels.seg_size
    acts = np.arange(sh * sw, dtype=np.float32).reshape(1, 1, sh, sw).repeat(30, 0)
    train = split_images(30, 0.5, 0)
    tr = np.flatnonzero(train)
    planes, scalars = labels.raw
    plans = {}
    for c, n in ((1, 50), (3, 7), (5, 10 ** 6)):
        g = labels.primary_category[c]
        counts = np.array([ref.label_mask(planes[x], scalars[x], c, (sh, sw)).sum()
                           for x in tr])
        imgs = tr[counts > 0]
        cat = tr[labels.present[tr, g]]
        s = plan_sample(c, imgs, counts[counts > 0], cat, sh * sw, n, seed=0)
        plans[c] = (s, (c, imgs, counts[counts > 0], cat, sh * sw, n))
        P, N = s.candidates
        assert P == counts.sum() and N == len(cat) * sh * sw - P
        assert s.size == min(n, P + N) and s.pos.sum() == min(P, n // 2)
        got = []
        for x in np.unique(s.image):
            (rows, f), = image_features(acts[x], labels.planes[x], labels.scalars[x], [s],
                                        [int(np.searchsorted(s.image, x))], int(x), (sh, sw))
            L = ref.label_mask(planes[x], scalars[x], c, (sh, sw)).ravel()
            pix = f[:, 0].astype(np.int64)          # the map holds each pixel's index
            assert np.array_equal(L[pix], s.pos[rows])
            assert labels.present[x, g] and train[x]
            got += [(x, p) for p in pix]
        assert len(set(got)) == len(got) == s.size            # no pixel twice
    for s, args in plans.values():                              # seeded per concept
        again = plan_sample(*args, seed=0)
        assert np.array_equal(again.image, s.image) and np.array_equal(again.rank, s.rank)


# -------------------------------------------------------------- reproducibility
def test_same_seed_same_weights():
    acts, labels = random_case(6, n=24)
    T = ref.thresholds_ref(acts, [0.1])[0]
    mx = acts.reshape(*acts.shape[:2], -1).max(axis=2)
    cfg = VectorConfig(quantile=0.1, pixels_per_concept=60, seed=7, train=TrainConfig(steps=30))
    f1, w1 = compute(acts, mx, labels, T, cfg)
    f2, w2 = compute(acts, mx, labels, T, cfg)
    np.testing.assert_array_equal(w1, w2)
    assert f1.equals(f2)
    _, w3 = compute(acts, mx, labels, T, VectorConfig(**{**cfg.__dict__, "seed": 8}))
    assert not np.array_equal(w1, w3)


# ------------------------------------------------------------------ known answer
def two_unit_case(n=80, seg=16, noise_units=4, seed=0):
    """Concept 1 (category 0) is a random rectangle in most images; unit 0 is 1 on its
    left half, unit 1 on its right half, each plus uniform noise in [0, 0.4); units
    2.. are uniform noise in [0, 1.2). Maps at label resolution (upsampling = identity).
    Concept 2 (category 0) is another rectangle nothing encodes."""
    rng = np.random.default_rng(seed)
    K = 2 + noise_units
    acts = np.zeros((n, K, seg, seg), np.float32)
    planes, scalars = [], []
    for i in range(n):
        pl = np.zeros((1, seg, seg), np.int64)
        y, x = rng.integers(0, seg // 2, 2)
        hh, ww = rng.integers(4, seg // 2 + 1, 2)
        y2, x2 = rng.integers(0, seg - 3, 2)
        pl[0, y2:y2 + 3, x2:x2 + 3] = 2
        if i % 5:
            pl[0, y:y + hh, x:x + ww] = 1
            acts[i, 0, y:y + hh, x:x + ww // 2] = 1
            acts[i, 1, y:y + hh, x + ww // 2:x + ww] = 1
        planes.append(pl)
        scalars.append(np.zeros(0, np.int64))
    acts[:, :2] += rng.uniform(0, 0.4, (n, 2, seg, seg))
    acts[:, 2:] = rng.uniform(0, 1.2, (n, noise_units, seg, seg))
    return acts, FakeLabels(planes, scalars, np.array([-1, 0, 0]), ["object"], slots=1)


def test_known_answer_two_units():
    acts, labels = two_unit_case()
    T = ref.thresholds_ref(acts, [0.05])[0]
    mx = acts.reshape(*acts.shape[:2], -1).max(axis=2)
    cfg = VectorConfig(quantile=0.05, pixels_per_concept=2000, train=TrainConfig(steps=50))
    frame, W = compute(acts, mx, labels, T, cfg, wanted=[1])
    r = frame.iloc[0]
    assert r.unit in (0, 1) and r.unit_iou < 0.55
    assert r.vector_iou > 0.9 > r.unit_iou + 0.3
    share = np.abs(W[0, :2]).sum() / np.abs(W[0]).sum()
    assert share > 0.8, W[0]
    assert r.units_50 <= 2 and r.units_90 <= 2
    assert r.sampled_positives + r.sampled_negatives <= 2000


def test_units_carrying():
    assert units_carrying(np.array([0.0, 3.0, -1.0, 1.0]), 0.5) == 1
    assert units_carrying(np.array([0.0, 3.0, -1.0, 1.0]), 0.9) == 3
    assert units_carrying(np.array([1.0, 1.0]), 0.5) == 1
    assert units_carrying(np.zeros(3), 0.5) == 0


# -------------------------------------------------------------- API and CLI on a run
def test_api_writes_results(tiny_run, tiny_labels, tmp_path):
    import shutil
    run = shutil.copytree(tiny_run, tmp_path / "run")
    names = tiny_labels.label_names
    frame, W = concept_vectors(run, "features.3", concepts=["sky", "brick"],
                               quantile=0.02, pixels_per_concept=500,
                               label_cache=tiny_labels, steps=20)
    assert frame["concept"].tolist() == sorted(["sky", "brick"], key=names.index)
    assert W.shape == (2, 16)
    for k in ("csv", "npy", "png", "json"):
        assert Path(frame.attrs[k]).is_file(), k
    np.testing.assert_array_equal(np.load(frame.attrs["npy"]), W)
    import pandas as pd
    back = pd.read_csv(frame.attrs["csv"])
    assert back["concept"].tolist() == frame["concept"].tolist()
    np.testing.assert_allclose(back["vector_iou"], frame["vector_iou"])


@pytest.mark.parametrize("args, message", [
    (["--train-fraction", "1.5"], "--train-fraction"),
    (["--pixels", "1"], "--pixels"),
    (["--concepts", "no-such-thing"], "--concepts"),
])
def test_cli_names_bad_flags(tiny_run, tiny_labels, args, message, capsys):
    rc = cli.main([str(tiny_run), "--layer", "features.3", "--label-cache",
                   str(tiny_labels.path), "--quiet", *args])
    assert rc == 2
    assert message in capsys.readouterr().err


def test_cli_runs(tiny_run, tiny_labels, tmp_path, capsys):
    import shutil
    run = shutil.copytree(tiny_run, tmp_path / "run")
    rc = cli.main([str(run), "--layer", "features.3", "--label-cache", str(tiny_labels.path),
                   "--concepts", "sky,brick", "--pixels", "200", "--steps", "5",
                   "--quantile", "0.02", "--quiet"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "of 2 concepts" in out
    for ext in ("csv", "npy", "png", "json"):
        assert (run / "results" / "q0.02" / f"features.3.concept_vectors.{ext}").is_file()


def test_results_document_and_page_link_the_vectors(tiny_run, tiny_labels, tmp_path):
    """Concept vectors at the scoring's quantile are linked into its results document
    (schema v2 ``analyses``) and shown on its page; the vectors' own document holds the
    frame with units from 1 and the weights' digest; a scoring at another quantile is not
    linked to them."""
    import hashlib
    import html as html_lib
    import json
    import scoring_fixtures as sf
    from pipeline.layer_stages import ScoreConfig, layer_results
    run = sf.copy_fresh(tiny_run, tmp_path / "run")
    cube = sf.score_library(run, tiny_labels, "features.3")
    res = run / "results"
    assert "id=concept-vectors" not in (res / "features.3.html").read_text()
    frame, W = concept_vectors(run, "features.3", concepts=["sky", "brick"],
                               pixels_per_concept=400, label_cache=tiny_labels, steps=10)
    own = json.loads(Path(frame.attrs["json"]).read_text())
    assert own["schema"] == "netdissect-zarr/concept-vectors" and own["schema_version"] == 1
    assert [c["concept"] for c in own["concepts"]] == frame["concept"].tolist()
    assert [c["unit"] for c in own["concepts"]] == (frame["unit"] + 1).tolist()
    assert own["weights"]["sha256"] == hashlib.sha256(
        Path(frame.attrs["npy"]).read_bytes()).hexdigest()
    assert own["weights"]["shape"] == list(W.shape)
    top = own["concepts"][0]["top_units"]
    assert top[0][1] == W[0, top[0][0] - 1] and abs(top[0][1]) == np.abs(W[0]).max()
    import pandas as pd
    csv = pd.read_csv(frame.attrs["csv"])
    assert csv["unit"].tolist() == (frame["unit"] + 1).tolist()

    doc = json.loads((res / "features.3.json").read_text())
    block = doc["analyses"]["concept_vectors"]
    assert block["file"] == "features.3.concept_vectors.json"
    assert block["summary"]["concepts"] == 2
    assert block["summary"]["vector_better"] == int((frame["vector_iou"] >
                                                     frame["unit_iou"]).sum())
    page = (res / "features.3.html").read_text()
    assert "id=concept-vectors" in page
    for _, r in frame.iterrows():
        assert f"<td class=l>{html_lib.escape(r['concept'])}</td>" in page
        assert f"<td>{r['vector_iou']:.4f}</td>" in page
        assert f"<a href='#unit-{r['unit'] + 1}'>" in page
    index = (res / "index.html").read_text()
    assert "href='features.3.concept_vectors.csv'" in index

    layer_results(run, "features.3", cube, tiny_labels, ScoreConfig(progress=False),
                  log=lambda *a: None)                  # a rescoring keeps the link
    assert json.loads((res / "features.3.json").read_text())["analyses"][
        "concept_vectors"] == block
    other = ScoreConfig(progress=False, quantile=0.02, levels=sf.LEVELS)
    logs: list[str] = []
    layer_results(run, "features.3", cube, tiny_labels, other, log=logs.append)
    far = json.loads((res / "q0.02" / "features.3.json").read_text())
    assert far["analyses"] == {"formulas": None, "concept_vectors": None}
    assert "id=concept-vectors" not in (res / "q0.02" / "features.3.html").read_text()
    path = Path(frame.attrs["json"])                    # made at other T_k: not linked
    own["thresholds"]["T"][0] = np.nextafter(own["thresholds"]["T"][0], np.inf)
    path.write_text(json.dumps(own))
    layer_results(run, "features.3", cube, tiny_labels, ScoreConfig(progress=False),
                  log=logs.append)
    assert json.loads((res / "features.3.json").read_text())["analyses"][
        "concept_vectors"] is None
    assert any("features.3.concept_vectors.json: made at other thresholds" in m
               for m in logs), logs
    assert "id=concept-vectors" not in (res / "features.3.html").read_text()
