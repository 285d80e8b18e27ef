"""Compositional explanations: label-set counts and the beam search, exactly against a
slow NumPy brute force that builds every formula's pixel mask from the raw label planes
(tests/reference.py's L_c(x), not label sets) and the upsampled unit masks; known
answers; the stage and command line on a small run."""
from __future__ import annotations

import json

import numpy as np
import pytest

import reference as R
from cache.labelsets import canonical_planes, canonical_scalars
from pipeline.compositional.search import OPS, Formula, SetIndex, search_unit
from pipeline.compositional.set_counts import SetTally, count_tile_sets
from pipeline.quantiles import exact_thresholds_inmemory


# ----------------------------------------------------------------- random cases
def make_case(seed, B=5, K=6, map_size=(5, 5), seg_size=(16, 16), L=300, n_labels=14):
    """Random activations (float16 with ties at T, a unit that never fires, a constant
    unit) and RAW labels: up to 7 planes (pixels with 5-7 labels), duplicates across
    planes, scalar labels (also painted in planes), label numbers above 255, an image
    without planes or scalars."""
    rng = np.random.default_rng(seed)
    h, w = map_size
    sh, sw = seg_size
    acts = rng.choice(np.array([0, 0, 0, 0.25, 0.5, 1, 1.5, 2], np.float16), (B, K, h, w))
    acts[:, 0] = 0                                    # never fires
    acts[:, 1] = np.float16(0.5)                      # constant
    pool = np.concatenate([[0], rng.choice(np.arange(1, L), n_labels - 1, replace=False)])
    pool[1] = 256 + int(rng.integers(0, 40))          # a label number above 255
    planes, scalars = [], []
    for b in range(B):
        P = 0 if b == B - 1 else int(rng.integers(1, 8))
        pl = np.zeros((P, sh, sw), np.int64)
        for p in range(P):
            for _ in range(3):
                y, x = rng.integers(0, sh), rng.integers(0, sw)
                pl[p, y:y + rng.integers(2, sh), x:x + rng.integers(2, sw)] = rng.choice(pool)
        if P >= 2:
            pl[1, : sh // 3] = pl[0, : sh // 3]       # the same label twice at a pixel
        sc = rng.choice(pool[1:], size=int(rng.integers(0, 3)), replace=False) \
            if b < B - 1 else np.zeros(0, np.int64)
        if P and sc.size:
            pl[0, :3, :3] = sc[0]                     # a scalar label also in a plane
        planes.append(pl)
        scalars.append(sc)
    return acts, planes, scalars, L


def canonical(planes, scalars, P=8, S=3):
    cp = np.stack([canonical_planes(p, s, P) for p, s in zip(planes, scalars)])
    cs = np.stack([canonical_scalars(s, S) for s in scalars])
    return cp, cs


def set_counts_of(acts, planes, scalars, T, L, tiles=((0, None),)):
    cp, cs = canonical(planes, scalars)
    width = cp.shape[1] + cs.shape[1]
    total = SetTally(acts.shape[1], width)
    for a, b in tiles:
        b = acts.shape[0] if b is None else b
        total.merge(count_tile_sets(acts[a:b], None, cp[a:b], cs[a:b], T, L, width))
    return total.result(0.1, T)


# ----------------------------------------------------------------- the brute force
def unit_masks(acts, T, seg_size):
    """(N, K, sh, sw) bool M_k(x) = upsampled S_k > T_k (tests/reference.py)."""
    S = np.stack([R.upsample_ref(a, *seg_size) for a in acts])
    return S > np.asarray(T)[None, :, None, None]


def formula_mask(f: Formula, planes, scalars, seg_size) -> np.ndarray:
    """(N, sh, sw) bool: the formula on every pixel, from the raw planes."""
    return np.stack([f.evaluate(lambda c: R.label_mask(p, s, c, seg_size))
                     for p, s in zip(planes, scalars)])


def brute_iou(M, F) -> tuple[int, int, float]:
    inter, union = int((M & F).sum()), int((M | F).sum())
    return inter, int(F.sum()), (inter / union if union else 0.0)


def fast_counts(counts, index, k, f: Formula) -> tuple[int, int, int]:
    """(I, |f|, |M_k|) from set counts: the formula evaluated on each set's labels."""
    truth = f.evaluate(lambda c: (counts.sets == c).any(axis=1))
    sets, act = counts.unit(k)
    return int(act[truth[sets]].sum()), int(counts.pixels[truth].sum()), int(act.sum())


def present_labels(planes, scalars) -> list[int]:
    out = set()
    for p, s in zip(planes, scalars):
        out |= {int(v) for v in np.unique(p) if v}
        out |= {int(v) for v in s if v}
    return sorted(out)


def random_formula(rng, labels, length) -> Formula:
    atoms = tuple(int(c) for c in rng.choice(labels, length))
    return Formula(atoms, tuple(OPS[i] for i in rng.integers(0, 3, length - 1)))


# ----------------------------------------------------------------- set counts
@pytest.mark.parametrize("seed", range(4))
def test_any_formula_counts_equal_the_pixel_brute_force(seed):
    acts, planes, scalars, L = make_case(seed)
    T = exact_thresholds_inmemory(acts, [0.1])[0]
    counts = set_counts_of(acts, planes, scalars, T, L)
    index = SetIndex(counts, L)
    M = unit_masks(acts, T, (16, 16))
    labels = present_labels(planes, scalars)
    rng = np.random.default_rng(100 + seed)
    for _ in range(40):
        f = random_formula(rng, labels + [int(rng.integers(1, L))], int(rng.integers(1, 4)))
        F = formula_mask(f, planes, scalars, (16, 16))
        for k in range(acts.shape[1]):
            I, P, Mk = fast_counts(counts, index, k, f)
            assert (I, P, Mk) == (int((M[:, k] & F).sum()), int(F.sum()), int(M[:, k].sum())), \
                (seed, f, k)
    # |L_c| from the sets is the label cache's |L_c| (reference.py, from canonical planes)
    cp, cs = canonical(planes, scalars)
    np.testing.assert_array_equal(index.label_pixels, R.label_pixels_canonical(cp, cs, L))
    assert counts.pixels.sum() == acts.shape[0] * 16 * 16
    assert counts.unit_pixels()[0] == 0                 # the unit that never fires


def test_counts_do_not_depend_on_tiling():
    acts, planes, scalars, L = make_case(7, B=7)
    T = exact_thresholds_inmemory(acts, [0.05])[0]
    whole = set_counts_of(acts, planes, scalars, T, L)
    for tiles in (((0, 3), (3, None)), ((4, None), (0, 1), (1, 4))):
        part = set_counts_of(acts, planes, scalars, T, L, tiles)
        for name in ("sets", "pixels", "offsets", "set_index", "active"):
            np.testing.assert_array_equal(getattr(part, name), getattr(whole, name), name)
    # sets are distinct rows in lexicographic order; every entry is positive
    rows = [tuple(r) for r in whole.sets]
    assert rows == sorted(set(rows))
    assert (whole.active > 0).all() and (whole.pixels > 0).all()


def test_ties_at_the_threshold_are_not_active():
    """Many values equal T exactly: M = S > T strictly, as the cube counts."""
    acts, planes, scalars, L = make_case(3)
    T = exact_thresholds_inmemory(acts, [0.3])[0]
    assert (acts == T[None, :, None, None].astype(np.float16)).any()
    counts = set_counts_of(acts, planes, scalars, T, L)
    M = unit_masks(acts, T, (16, 16))
    np.testing.assert_array_equal(counts.unit_pixels(), M.sum(axis=(0, 2, 3)))


# ----------------------------------------------------------------- the search
def brute_search(M, planes, scalars, labels, length, beam, seg_size):
    """The beam search of pipeline/compositional/search.py, every mask built from pixels."""
    masks = {c: formula_mask(Formula((c,)), planes, scalars, seg_size) for c in labels}

    def score(f, F):
        return (f, F, brute_iou(M, F)[2])

    singles = [score(Formula((c,)), masks[c]) for c in labels]
    singles = [s for s in sorted(singles, key=lambda s: -s[2]) if s[2] > 0]  # stable: by label
    best = [None] * length
    if not singles:
        return best
    cur = singles[:beam]
    best[0] = cur[0]
    for _ in range(length - 1):
        cands = list(cur)
        for f, F, _ in cur:
            for op in OPS:
                for c in labels:
                    G = F & masks[c] if op == "AND" else F | masks[c] if op == "OR" \
                        else F & ~masks[c]
                    if not G.any() or np.array_equal(G, F):
                        continue
                    cands.append(score(f.extend(op, c), G))
        ranked = [s for s in sorted(cands, key=lambda s: -s[2]) if s[2] > 0]
        new = [s for s in sorted(cands[len(cur):], key=lambda s: -s[2]) if s[2] > 0]
        for n in sorted({len(s[0]) for s in new}):
            top = next(s for s in new if len(s[0]) == n)
            if best[n - 1] is None or top[2] > best[n - 1][2]:
                best[n - 1] = top
        kept, seen = [], []
        for s in ranked:
            if len(kept) == beam:
                break
            if not any(np.array_equal(s[1], t) for t in seen):
                seen.append(s[1])
                kept.append(s)
        cur = kept
    return best


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("length,beam", [(1, 5), (2, 3), (3, 5)])
def test_beam_search_equals_the_pixel_brute_force(seed, length, beam):
    acts, planes, scalars, L = make_case(20 + seed, B=4, K=5, seg_size=(12, 12))
    T = exact_thresholds_inmemory(acts, [0.15])[0]
    counts = set_counts_of(acts, planes, scalars, T, L)
    index = SetIndex(counts, L)
    M = unit_masks(acts, T, (12, 12))
    labels = present_labels(planes, scalars)
    allowed = np.ones(L, bool)
    for k in range(acts.shape[1]):
        got = search_unit(index, k, allowed, length, beam)
        want = brute_search(M[:, k], planes, scalars, labels, length, beam, (12, 12))
        assert len(got.by_length) == length
        for n in range(length):
            g, w = got.by_length[n], want[n]
            assert (g is None) == (w is None), (k, n, g, w)
            if g is None:
                continue
            assert g.iou == w[2], (k, n, g.formula, w[0])
            assert g.formula == w[0], (k, n, g.formula, w[0])
            F = formula_mask(g.formula, planes, scalars, (12, 12))
            assert (g.intersect, g.pixels) == brute_iou(M[:, k], F)[:2]
        if got.best is not None:
            assert got.best.iou == max(s.iou for s in got.by_length if s is not None)
    assert search_unit(index, 0, allowed, length, beam).best is None    # never fires


def test_atoms_are_limited_to_the_allowed_labels():
    acts, planes, scalars, L = make_case(5)
    T = exact_thresholds_inmemory(acts, [0.1])[0]
    index = SetIndex(set_counts_of(acts, planes, scalars, T, L), L)
    labels = present_labels(planes, scalars)
    allowed = np.zeros(L, bool)
    allowed[labels[::2]] = True
    for k in range(2, acts.shape[1]):
        got = search_unit(index, k, allowed, 3, 5)
        for s in got.by_length:
            assert s is None or all(allowed[c] for c in s.formula.atoms)


# ----------------------------------------------------------------- known answers
def _known_case():
    """Labels at segmentation resolution (maps = segmentations, so S = A): colours 1, 2,
    3 in plane 0 (stripes), an object 300 in plane 1 (a square), a scene scalar 7 on
    image 1. Unit 0 fires on colour 1 or 2; unit 1 on the object except where colour 2
    is; unit 2 on the scene's image only."""
    N, n = 4, 12
    planes, scalars = [], []
    for x in range(N):
        colour = np.zeros((n, n), np.int64)
        colour[:, 0:3], colour[:, 3:6], colour[:, 6:9] = 1, 2, 3
        colour = np.roll(colour, x, axis=1)
        obj = np.zeros((n, n), np.int64)
        obj[2 + x:8 + x, 1:10] = 300
        planes.append(np.stack([colour, obj]))
        scalars.append(np.array([7]) if x == 1 else np.zeros(0, np.int64))
    acts = np.zeros((N, 3, n, n), np.float32)
    for x, (pl, sc) in enumerate(zip(planes, scalars)):
        acts[x, 0] = np.isin(pl[0], [1, 2])
        acts[x, 1] = (pl[1] == 300) & (pl[0] != 2)
        acts[x, 2] = 1.0 if 7 in sc else 0.0
    return acts, planes, scalars


def test_known_answer_union_intersection_and_scene():
    acts, planes, scalars = _known_case()
    L = 301
    T = np.zeros(3)                     # S > 0: exactly the built masks
    index = SetIndex(set_counts_of(acts, planes, scalars, T, L), L)
    allowed = np.ones(L, bool)
    union = search_unit(index, 0, allowed, 3, 5)
    assert union.best.formula.text() in ("1 OR 2", "2 OR 1")
    assert union.best.iou == 1.0 and len(union.best.formula) == 2
    assert union.single.iou < 0.6
    carve = search_unit(index, 1, allowed, 3, 5)
    assert carve.best.formula == Formula((300, 2), ("AND NOT",))
    assert carve.best.iou == 1.0 and carve.single.iou < 0.8
    scene = search_unit(index, 2, allowed, 3, 5)
    assert scene.best.formula == Formula((7,)) and scene.best.iou == 1.0   # covers its image


# ----------------------------------------------------------------- the stage
@pytest.fixture(scope="module")
def explained(tiny_data, tmp_path_factory):
    import scoring_fixtures as sf
    from pipeline.compositional import compositional
    tmp = tmp_path_factory.mktemp("comp")
    run = sf.make_run(tiny_data, tmp / "run")
    labels = sf.make_labels(tiny_data, tmp / "labels.zarr")
    logs: list[str] = []
    res = compositional(run, "features.3", quantile=0.02, length=3, beam=3,
                        label_cache=labels.path, log=logs.append)
    return run, labels, res, logs


def test_stage_counts_equal_the_caches_brute_force(explained):
    """The best formula of every unit, recounted from the activation cache and the
    label cache with the reference upsampling: same intersection, size and IoU."""
    from cache import store
    run, labels, res, _ = explained
    acts = np.asarray(store.activations(store.open_run(run), "features.3")[:])
    T = np.asarray(json.loads(res.json_path.read_text())["thresholds"]["T"])
    T_ref = exact_thresholds_inmemory(acts, [0.02])[0]
    np.testing.assert_array_equal(T, T_ref)
    M = unit_masks(acts, T, labels.seg_size)
    t = labels.read(0, labels.num_images)
    planes = [p for p in t.planes.astype(np.int64)]
    scalars = [s[s != 0] for s in t.scalars]
    assert len(res.units) == acts.shape[1]
    found = 0
    for u in res.units:
        assert u.unit_pixels == int(M[:, u.unit].sum())
        for s in u.by_length:
            if s is None:
                continue
            F = formula_mask(s.formula, planes, scalars, labels.seg_size)
            inter, pix, iou = brute_iou(M[:, u.unit], F)
            assert (s.intersect, s.pixels) == (inter, pix) and s.iou == iou
            found += 1
    assert found > acts.shape[1]        # more than the single labels


def test_stage_writes_csv_and_json_and_reuses_the_counts(explained):
    from pipeline.compositional import compositional
    run, labels, res, logs = explained
    assert res.csv_path.name == "features.3.formulas.beam3.csv"
    assert res.csv_path.parent.name == "q0.02"
    rows = res.csv_path.read_text().splitlines()
    assert rows[0].startswith("unit,formula,formula_labels,length,iou")
    assert len(rows) == 1 + len(res.units)
    doc = json.loads(res.json_path.read_text())
    assert doc["schema"] == "netdissect-zarr/formulas" and doc["config"]["beam"] == 3
    assert not res.stats["set_counts_reused"]
    again = compositional(run, "features.3", quantile=0.02, length=2, beam=3, units="2-4",
                          label_cache=labels.path, log=logs.append)
    assert again.stats["set_counts_reused"]
    assert [u.unit for u in again.units] == [1, 2, 3]
    for u in again.units:                       # the same length-2 results for these units
        first = res.units[u.unit]
        assert u.by_length[0].formula == first.by_length[0].formula
        assert u.by_length[1].iou == first.by_length[1].iou
    assert again.csv_path.name == "features.3.formulas.len2-beam3-units2-4.csv"


def test_cli_explains_and_names_bad_arguments(explained, capsys):
    from pipeline.commandline.compositional import main
    run, labels, _, _ = explained
    assert main([str(run), "--layer", "features.3", "--quantile", "0.02", "--units", "1-2",
                 "--label-cache", str(labels.path), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "unit" in out and "formulas" in out
    assert main([str(run), "--layer", "features.3", "--units", "0-3",
                 "--label-cache", str(labels.path), "--quiet"]) == 2
    assert "--units" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([str(run), "--layer", "features.3", "--beam", "0"])


@pytest.mark.slow
def test_known_answer_colour_union_through_extraction(tmp_path):
    """A unit of a hand-built model that fires on red or yellow pixels of the synthetic
    Broden (tests/compositional_model.py) is explained as red-c OR yellow-c with IoU
    near 1, far above its best single colour; the red unit stays red-c. At q = 0.2 both
    supports (about 9% and 5% of the pixels) are below the quantile, so T = 0 and the
    masks are the supports themselves."""
    from pathlib import Path
    from pipeline.compositional import compositional
    from pipeline.extract import extract
    from pipeline.extract_config import ExtractConfig
    from pipeline.synthetic.writer import write_dataset
    import scoring_fixtures as sf
    data = write_dataset(tmp_path / "data", num_images=200, image_size=64, seg_size=32,
                         seed=5, workers=1, progress=False)
    model = f"{Path(__file__).with_name('compositional_model.py')}:build"
    extract(ExtractConfig(dataset=data, model=model, layers=["units"], out=tmp_path / "run",
                          mean=(0, 0, 0), std=(1, 1, 1), workers=0, progress=False),
            log=lambda m: None)
    labels = sf.make_labels(data, tmp_path / "labels.zarr")
    res = compositional(tmp_path / "run", "units", quantile=0.2, label_cache=labels.path,
                        log=lambda m: None)
    union, red = res.units
    assert {labels.label_names[c] for c in union.best.formula.atoms} == {"red-c", "yellow-c"}
    assert union.best.formula.ops == ("OR",)
    assert union.best.iou > 0.85 and union.single.iou < 0.7, (union.best, union.single)
    assert labels.label_names[red.single.formula.atoms[0]] == "red-c"
    assert red.single.iou > 0.85


def test_single_label_counts_equal_the_cube(explained):
    """From the set counts, I(k, c) and |L_c| of every label are the IoU cube's counts at
    the same quantile (two implementations of the same replay), and |M_k| is the cube's
    activation over a category every image has."""
    from pipeline.layer_stages import ScoreConfig, layer_cube
    from cache import store
    from cache.set_counts import read_set_counts
    run, labels, res, _ = explained
    cube = layer_cube(run, "features.3", labels,
                      ScoreConfig(levels=(0.02,), quantile=0.02, progress=False),
                      log=lambda m: None)
    g = store.layer_group(store.open_run(run), "features.3")
    counts = read_set_counts(g, 0.02, g["set_counts/q0.02"].attrs["source"])
    index = SetIndex(counts, labels.num_labels)
    np.testing.assert_array_equal(index.label_pixels, cube.label_pixels)
    for k in range(counts.num_units):
        sets, act = counts.unit(k)
        np.testing.assert_array_equal(index._label_sums(sets, act), cube.intersect[0, k])
    everywhere = labels.read(0, labels.num_images).present.all(axis=0)
    assert everywhere.any()                    # colour: every synthetic image has one
    g0 = int(np.flatnonzero(everywhere)[0])
    np.testing.assert_array_equal(counts.unit_pixels(), cube.activation[0, :, g0])


def test_edited_or_stale_set_counts_are_recomputed(explained, tmp_path):
    import shutil
    import zarr
    from pipeline.compositional import compositional
    run, labels, res, _ = explained
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    node = zarr.open_group(str(copy / "layers" / "features.3" / "set_counts" / "q0.02"),
                           mode="r+")
    node.attrs["num_images"] = 1                # an edit: the digest no longer matches
    logs: list[str] = []
    again = compositional(copy, "features.3", quantile=0.02, beam=3,
                          label_cache=labels.path, log=logs.append)
    assert not again.stats["set_counts_reused"]
    assert any("set_counts/q0.02" in m and "recomputing" in m for m in logs), logs
    assert [u.best.iou if u.best else 0 for u in again.units] == \
        [u.best.iou if u.best else 0 for u in res.units]
    # another quantile is another node; the first is kept
    other = compositional(copy, "features.3", quantile=0.05, beam=3,
                          label_cache=labels.path, log=logs.append)
    assert not other.stats["set_counts_reused"]
    assert compositional(copy, "features.3", quantile=0.02, beam=3, label_cache=labels.path,
                         log=logs.append).stats["set_counts_reused"]


def test_verify_names_damaged_and_stale_set_counts_and_the_repair_works(explained,
                                                                         tmp_path):
    """scripts/verify.py checks the stored set counts: a clean run has no finding; a
    damaged chunk, an edited node and counts made at other thresholds are each named with
    the command that recomputes them, and that command clears the finding."""
    import shlex
    import shutil
    import zarr
    from pipeline.compositional import compositional
    from pipeline.verify import verify_run
    run, labels, res, _ = explained
    copy = tmp_path / "run"
    shutil.copytree(run, copy)

    def found():
        return [f for f in verify_run(copy, str(labels.path))[0] if "set_counts" in f.what]

    assert found() == []
    node = copy / "layers" / "features.3" / "set_counts" / "q0.02"
    chunk = next(p for p in sorted((node / "active").rglob("*")) if p.is_file()
                 and p.name != "zarr.json")
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0xFF
    chunk.write_bytes(bytes(data))
    (f,) = found()
    assert f.state == "damaged" and "active" in f.what, f
    assert f.fix.startswith(f"scripts/compositional.py {shlex.quote(str(copy))} --layer "
                            f"features.3 --quantile 0.02"), f.fix

    def repair():
        argv = shlex.split(f.fix.split(" (")[0])
        assert argv[:2] == ["scripts/compositional.py", str(copy)]
        compositional(copy, "features.3", quantile=float(argv[argv.index("--quantile") + 1]),
                      beam=3, label_cache=labels.path, log=lambda *a: None)

    repair()
    assert found() == []
    g = zarr.open_group(str(node), mode="r+")
    g.attrs["num_images"] = 1               # an edit after writing
    (f,) = found()
    assert f.state == "damaged" and f.what.endswith("q0.02/zarr.json"), f
    repair()
    assert found() == []
    src = dict(g.attrs["source"])           # counts of other thresholds, sealed as if current
    src["thresholds"] = "0" * 64
    from cache.set_counts import read_set_counts, write_set_counts
    from cache import store
    layer = store.layer_group(store.open_run(copy, mode="r+"), "features.3")
    counts = read_set_counts(layer, 0.02, g.attrs["source"])
    write_set_counts(layer, counts, src)
    (f,) = found()
    assert f.state == "stale" and "thresholds" in f.problem, f
    repair()
    assert found() == []


def test_the_layer_page_shows_the_formulas_beside_the_labels(tiny_data, tiny_labels,
                                                             tiny_run, tmp_path):
    """A default search written beside the default scoring's results document rewrites
    the layer's page with a formula column; a later scoring keeps it."""
    import html as html_lib
    import scoring_fixtures as sf
    from pipeline.compositional import compositional
    run = sf.copy_fresh(tiny_run, tmp_path / "run")
    cube = sf.score_library(run, tiny_labels, "features.3")
    page = run / "results" / "features.3.html"
    assert "formula (IoU)" not in page.read_text()
    logs: list[str] = []
    res = compositional(run, "features.3", label_cache=tiny_labels.path, log=logs.append)
    assert any("updated with the analyses" in m for m in logs), logs
    text = page.read_text()
    assert "formula (IoU)" in text
    doc = json.loads((run / "results" / "features.3.json").read_text())
    assert doc["schema_version"] == 2
    block = doc["analyses"]["formulas"]
    assert block["file"] == "features.3.formulas.json" and block["config"]["length"] == 3
    assert doc["analyses"]["concept_vectors"] is None
    by_unit = {u.unit + 1: u for u in res.units}
    for rec in doc["units"]:
        u = by_unit[rec["unit"]]
        if u.best is None:
            assert "formula" not in rec
        else:
            assert rec["formula"]["formula"] == u.best.formula.text(tiny_labels.label_names)
            assert rec["formula"]["iou"] == u.best.iou
            assert rec["formula"]["single_iou"] == (u.single.iou if u.single else 0.0)
    assert "href='features.3.formulas.csv'" in (run / "results" / "index.html").read_text()
    for u in res.units:
        if u.best is not None:
            name = u.best.formula.text(tiny_labels.label_names)
            assert f"{html_lib.escape(name)} {u.best.iou:.3f}</td>" in text
    from pipeline.layer_stages import ScoreConfig, layer_results
    layer_results(run, "features.3", cube, tiny_labels, ScoreConfig(progress=False),
                  log=lambda *a: None)
    assert "formula (IoU)" in page.read_text()
    again = json.loads((run / "results" / "features.3.json").read_text())
    assert [u.get("formula") for u in again["units"]] == [u.get("formula") for u in doc["units"]]
    index = (run / "results" / "index.html").read_text()
    assert "href='features.3.formulas.csv'" in index
