"""Tally kernel: exact equality with the slow NumPy reference on raw labels."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

import reference as R
from cache.labelsets import canonical_planes, canonical_scalars
import pipeline.label_sets
from pipeline.label_sets import label_sets
from pipeline.quantiles import exact_thresholds_inmemory
from pipeline.tally import Tally, merged, tally_tile

# "cpu": the compiled pixel stage (numba); "cpu-numpy": the array code on numpy views;
# "cpu-torch": the array code on torch tensors, the code CUDA runs
DEVICES = ["cpu", "cpu-numpy", "cpu-torch"] + (["cuda"] if torch.cuda.is_available() else [])


def real(device: str) -> str:
    return "cpu" if device.startswith("cpu") else device


def pixel_stage(device: str) -> dict:
    """Tally knobs of each pixel stage ("cpu" asks for the compiled one explicitly, so a
    missing numba fails the test rather than testing the array code twice)."""
    return {"cpu": {"pixel_kernel": "numba"},
            "cpu-numpy": {"pixel_kernel": "arrays"},
            "cpu-torch": {"pixel_kernel": "arrays", "numpy_on_cpu": False}}.get(device, {})


LEVELS = [0.001, 0.0025, 0.005, 0.01, 0.02, 0.05]
SMALL = dict(chunk_values=300, max_maps=3, hist_entries=50)   # exercise every chunking loop


def make_case(seed, B=3, K=5, map_size=(7, 7), seg_size=(32, 32), L=12, G=3, ties=True,
              max_planes=4, max_scalars=3):
    """Random activations and RAW labels (duplicates, scalars repeated in planes, zeros)."""
    rng = np.random.default_rng(seed)
    h, w = map_size
    sh, sw = seg_size
    if ties:   # a few distinct float16 values: many pixels tie exactly at T
        acts = rng.choice(np.array([0, 0, 0, 0.25, 0.5, 1, 1.5, 2], np.float16), (B, K, h, w))
    else:
        z = rng.standard_normal((B, K, h + 2, w + 2))
        z = sum(z[:, :, i:i + h, j:j + w] for i in range(3) for j in range(3)) / 3
        acts = np.maximum(z - 0.3, 0).astype(np.float16)
    if K > 1:
        acts[:, 0] = 0                                   # a unit that never fires
    if K > 2:
        acts[:, 1] = np.float16(0.5)                     # a constant unit
    cat = rng.integers(0, G, size=L)                     # primary category, any plane
    planes, scalars = [], []
    for b in range(B):
        P = int(rng.integers(0, max_planes + 1))
        pl = np.zeros((P, sh, sw), np.int64)
        for p in range(P):
            for _ in range(4):
                y, x = rng.integers(0, sh), rng.integers(0, sw)
                pl[p, y:y + rng.integers(1, sh), x:x + rng.integers(1, sw)] = rng.integers(0, L)
        if P >= 2:
            pl[1, : sh // 2] = pl[0, : sh // 2]          # the same label twice at a pixel
        sc = rng.integers(0, L, size=int(rng.integers(0, max_scalars + 1)))
        if P and sc.size:
            pl[0, :2, :2] = sc[0]                        # a scalar label also in a plane
        planes.append(pl)
        scalars.append(sc)
    return acts, cat, planes, scalars


def canonical(planes, scalars, seg_size, S=4, P=None):
    P = P or max(1, max(p.shape[0] for p in planes))
    cp = np.stack([canonical_planes(p, s, P) for p, s in zip(planes, scalars)])
    cs = np.stack([canonical_scalars(s, S) for s in scalars])
    return cp, cs


def run_and_compare(acts, cat, planes, scalars, T, seg_size, device="cpu", G=3, **kw):
    kw.update(pixel_stage(device))
    device = real(device)
    L = len(cat)
    cp, cs = canonical(planes, scalars, seg_size)
    present = np.stack([R.image_categories(p, s, cat, G) for p, s in zip(planes, scalars)])
    I, A = tally_tile(torch.as_tensor(acts, device=device), None, T, torch.as_tensor(cp),
                      torch.as_tensor(cs), torch.as_tensor(present), L, **kw).result()
    assert I.dtype == torch.int64 and A.dtype == torch.int64
    assert I.device.type == torch.device(device).type
    Ir, Ar, lab = R.counts_ref(acts, T, planes, scalars, cat, G, seg_size)
    np.testing.assert_array_equal(I.cpu().numpy(), Ir)
    np.testing.assert_array_equal(A.cpu().numpy(), Ar)
    np.testing.assert_array_equal(R.label_pixels_canonical(cp, cs, L), lab)
    return I.cpu().numpy(), A.cpu().numpy(), lab


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("seed", range(4))
def test_random_ties_several_levels(seed, device):
    acts, cat, planes, scalars = make_case(seed)
    T = exact_thresholds_inmemory(acts, LEVELS + [0.3])
    run_and_compare(acts, cat, planes, scalars, T, (32, 32), device)
    run_and_compare(acts, cat, planes, scalars, T, (32, 32), device, **SMALL)


def test_label_cache_integers_are_read_as_they_are():
    """Planes as the label cache stores them (numpy uint16, labels above 255) give the
    compiled pass the counts of int32 tensors, and a label past num_labels is refused."""
    acts, cat, planes, scalars = make_case(21, B=3, L=300, ties=False)
    planes[0][:, 3:9, 3:9] = 299                         # the largest label, above 255
    T = exact_thresholds_inmemory(acts, [0.02, 0.1])
    cp, cs = canonical(planes, scalars, (32, 32))
    present = np.ones((3, 3), bool)
    assert cp.max() == 299
    counts = []
    for p in (torch.as_tensor(cp.astype(np.int32)), cp.astype(np.uint16), cp.astype(np.int16)):
        counts.append([c.numpy() for c in tally_tile(acts, None, T, p, cs, present, 300,
                                                     pixel_kernel="numba").result()])
    for other in counts[1:]:
        for a, b in zip(counts[0], other):
            np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="planes hold labels in 0..299, outside 0..298"):
        tally_tile(acts, None, T, cp.astype(np.uint16), cs, present, 299)


@pytest.mark.parametrize("kernel", ["numba", "arrays"])
def test_label_numbers_that_are_not_integers_are_refused(kernel):
    """Float label planes or scalars (numpy or torch) are refused by name on every pixel
    stage, never truncated to integers; empty scalars of any dtype are nothing to read."""
    acts, cat, planes, scalars = make_case(22, B=2, L=40, ties=False)
    T = exact_thresholds_inmemory(acts, [0.02])
    cp, cs = canonical(planes, scalars, (32, 32))
    present = np.ones((2, 3), bool)
    for bad in (cp.astype(np.float32) + 0.5, torch.as_tensor(cp, dtype=torch.float64)):
        with pytest.raises(ValueError, match=r"planes hold .*float.* values: label numbers "
                                             r"must be integers"):
            tally_tile(acts, None, T, bad, cs, present, 40, pixel_kernel=kernel)
    with pytest.raises(ValueError, match=r"scalars hold float64 values"):
        tally_tile(acts, None, T, cp, cs.astype(np.float64), present, 40,
                   pixel_kernel=kernel)
    empty = tally_tile(acts, None, T, cp, np.zeros((2, 0)), present, 40, pixel_kernel=kernel)
    assert empty.images == 2


@pytest.mark.parametrize("levels", [1, 8, 9, 17])
def test_compiled_pass_level_counts(levels):
    """The compiled pass counts up to 8 levels at once and more in groups of 8 sorted
    levels: 1, 8, 9 and 17 levels (with ties among the levels) against the reference."""
    acts, cat, planes, scalars = make_case(40 + levels, B=4, ties=False)
    q = np.linspace(0.002, 0.4, levels)
    if levels > 2:
        q[1] = q[2]                                      # two equal levels
    T = exact_thresholds_inmemory(acts, list(q))
    run_and_compare(acts, cat, planes, scalars, T, (32, 32), "cpu")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("seed", range(3))
def test_smooth_relu(seed, device):
    acts, cat, planes, scalars = make_case(10 + seed, ties=False)
    T = exact_thresholds_inmemory(acts, [0.01, 0.05, 0.2])
    run_and_compare(acts, cat, planes, scalars, T, (32, 32), device, **SMALL)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("map_size,seg_size", [((13, 13), (112, 112)), ((7, 7), (112, 112)),
                                               ((3, 5), (17, 23)), ((7, 7), (113, 113)),
                                               ((1, 1), (8, 8)), ((5, 4), (5, 4))])
def test_odd_sizes(map_size, seg_size, device):
    big = seg_size[0] > 100
    acts, cat, planes, scalars = make_case(20, B=2 if big else 3, K=3 if big else 4,
                                           map_size=map_size, seg_size=seg_size,
                                           max_planes=2 if big else 4)
    T = exact_thresholds_inmemory(acts, [0.005, 0.05] if big else LEVELS)
    run_and_compare(acts, cat, planes, scalars, T, seg_size, device)


@pytest.mark.parametrize("device", DEVICES)
def test_single_image_single_unit(device):
    acts, cat, planes, scalars = make_case(30, B=1, K=1, ties=False)
    T = exact_thresholds_inmemory(acts, LEVELS)
    run_and_compare(acts, cat, planes, scalars, T, (32, 32), device)


@pytest.mark.parametrize("device", DEVICES)
def test_thresholds_in_any_order_and_equal_levels(device):
    """Levels need not be sorted nor monotone across units; equal levels are allowed."""
    acts, cat, planes, scalars = make_case(40)
    rng = np.random.default_rng(40)
    T = exact_thresholds_inmemory(acts, [0.05, 0.001, 0.02, 0.02, 0.3])
    T[:, 3] = rng.permutation(T[:, 3])                   # per-unit order differs
    T[2, 4] = T[0, 4]
    T[1, 2] = 0.5                                        # exactly a value of the data
    T[4, 2] = -1.0                                       # every pixel fires
    run_and_compare(acts, cat, planes, scalars, T, (32, 32), device)
    run_and_compare(acts, cat, planes, scalars, T[:1], (32, 32), device)   # V = 1


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("seed", range(2))
def test_thresholds_at_exact_upsampled_values(seed, device):
    """T equal to upsampled values of some pixels: any rounding difference from the
    lerp form flips those pixels, so this pins down the arithmetic, not just geometry."""
    acts, cat, planes, scalars = make_case(100 + seed, ties=False, map_size=(5, 6),
                                           seg_size=(37, 29))
    rng = np.random.default_rng(seed)
    S = R.upsample_ref(acts, 37, 29).reshape(acts.shape[0], acts.shape[1], -1)
    T = np.empty((10, acts.shape[1]))
    for k in range(acts.shape[1]):
        vals = S[:, k].ravel()
        vals = np.unique(vals[vals > 0]) if (vals > 0).any() else np.zeros(1)
        T[:, k] = rng.choice(vals, 10)
    T[:, 1] = 0.5                                        # the constant unit, exactly at T
    run_and_compare(acts, cat, planes, scalars, T, (37, 29), device, **SMALL)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("seed", range(2))
def test_signed_wide_range_maps_at_exact_values(seed, device):
    """Skips by cell and by piece bound S with a rounding slack: float32 maps of both
    signs over eight decades, thresholds at upsampled values (piece corners among them),
    and 7 -> 112 where a cell's 16 pixels form two pieces."""
    rng = np.random.default_rng(200 + seed)
    B, K = 2, 4
    mag = 10.0 ** rng.uniform(-4, 4, (B, K, 7, 7))
    acts = (rng.choice([-1.0, 1.0], (B, K, 7, 7)) * mag).astype(np.float32)
    acts[:, 0, 2:5, 2:5] = acts[:, 0, 3, 3][:, None, None]      # a flat patch at one value
    _, cat, planes, scalars = make_case(200 + seed, B=B, K=K, seg_size=(112, 112), max_planes=2)
    S = R.upsample_ref(acts, 112, 112).reshape(B, K, -1)
    T = np.empty((8, K))
    for k in range(K):
        vals = np.unique(S[:, k])
        T[:, k] = rng.choice(vals[-len(vals) // 4:], 8)          # among the larger values
    T[0, 0] = acts[0, 0, 3, 3]                                   # exactly the flat patch
    run_and_compare(acts, cat, planes, scalars, T, (112, 112), device)


@pytest.mark.parametrize("device", DEVICES)
def test_images_without_labels_or_categories(device):
    acts, cat, planes, scalars = make_case(50, B=4)
    planes[0] = np.zeros((0, 32, 32), np.int64)          # no plane, no scalar at all
    scalars[0] = np.zeros(0, np.int64)
    planes[1] = np.zeros((2, 32, 32), np.int64)          # empty planes, scalars only
    scalars[1] = np.array([3, 3, 0, 5])
    T = exact_thresholds_inmemory(acts, [0.01, 0.2])
    run_and_compare(acts, cat, planes, scalars, T, (32, 32), device)


def sets_ref(planes, scalars):
    """(rows (NS, 1 + P + S), inv (B, n)): the distinct (image, slots, scalars) rows of a
    tile's pixels in lexicographic order and each pixel's row (np.unique over rows)."""
    B, P, n = planes.shape
    rows = np.concatenate([np.repeat(np.arange(B), n)[:, None],
                           planes.transpose(0, 2, 1).reshape(B * n, P),
                           np.repeat(scalars, n, axis=0)], axis=1)
    uniq, first, inv = np.unique(rows, axis=0, return_index=True, return_inverse=True)
    return uniq, first, inv.reshape(B, n)


def check_label_sets(planes, scalars, method, device="cpu"):
    """label_sets(method) against sets_ref: the same partition of the pixels, each set's
    image and labels, sets by image (offsets), in lexicographic order (torch) or in
    order of first occurrence (numba)."""
    B, P, n = planes.shape
    uniq, first, inv = sets_ref(planes, scalars)
    s = label_sets(torch.as_tensor(planes, device=device), torch.as_tensor(scalars, device=device),
                   int(max(planes.max(initial=0), scalars.max(initial=0))) + 1, method)
    sid = s.sid.cpu().numpy()
    if method == "torch":
        want = inv
    else:                                # sets renumbered by their first pixel
        rank = np.empty(len(first), np.int64)
        rank[np.argsort(first)] = np.arange(len(first))
        want = rank[inv]
    np.testing.assert_array_equal(sid, want)
    rows = uniq if method == "torch" else uniq[np.argsort(first)]
    np.testing.assert_array_equal(s.image.cpu().numpy(), rows[:, 0])
    np.testing.assert_array_equal(s.labels.cpu().numpy(), rows[:, 1:])
    assert s.labels.dtype == torch.int64 and s.sid.dtype == torch.int64
    assert s.offsets == [0] + np.cumsum(np.bincount(rows[:, 0], minlength=B)).tolist()


def noisy_planes(rng, B, P, n, L):
    """(B, P, n) canonical-like slots: distinct labels per pixel, descending, zeros last."""
    raw = rng.integers(0, L, (B, P, n))
    raw[:, :, : n // 3] = raw[:, :, :1]                  # runs of equal pixels
    raw[rng.random((B, P, n)) < 0.3] = 0
    planes = np.stack([canonical_planes(r.reshape(P, 1, n), np.zeros(0), P)[:, 0]
                       for r in raw]).astype(np.int64)
    return planes


@pytest.mark.parametrize("device", [d for d in DEVICES if d not in ("cpu-numpy", "cpu-torch")])
@pytest.mark.parametrize("method", ["numba", "torch"])
def test_label_sets_match_unique_rows(method, device):
    """Label sets with 1..7 labels per pixel, label numbers up to 1,197 and up to
    2^16 - 1 (several packing rounds), one slot, no slot, one pixel, one image,
    int32 and strided planes."""
    if method == "numba" and device != "cpu":
        pytest.skip("numba runs on CPU only")
    rng = np.random.default_rng(5)
    for B, P, n, L in [(6, 7, 300, 1198), (4, 7, 50, 2 ** 16), (3, 1, 40, 1198), (2, 0, 10, 5),
                       (1, 5, 1, 1198), (1, 7, 200, 1198), (5, 3, 64, 300)]:
        planes = noisy_planes(rng, B, P, n, L)
        scalars = np.sort(rng.integers(0, L, (B, 2)), axis=1)[:, ::-1].copy()
        check_label_sets(planes, scalars, method, real(device))
        check_label_sets(planes.astype(np.int32), scalars, method, real(device))
    wide = noisy_planes(rng, 4, 7, 99, 1198)
    strided = torch.as_tensor(wide, device=real(device))[:, :5]     # as the kernel slices
    s = label_sets(strided, torch.zeros(4, 0, dtype=torch.int64, device=real(device)), 1198,
                   method)
    uniq, first, inv = sets_ref(wide[:, :5], np.zeros((4, 0), np.int64))
    assert s.image.numel() == len(uniq)
    np.testing.assert_array_equal(s.labels.cpu().numpy()[s.sid.cpu().numpy()],
                                  uniq[inv][:, :, 1:])


def test_label_set_method_errors(monkeypatch):
    planes = torch.tensor([[[0, 1, 1, 0]]], dtype=torch.int32)
    none = torch.zeros(1, 0, dtype=torch.int64)
    with pytest.raises(ValueError, match="method must be"):
        label_sets(planes, none, 2, "sort")
    assert pipeline.label_sets.numba_available()          # a dependency
    monkeypatch.setattr(pipeline.label_sets, "_NUMBA", [None])   # as if numba were missing
    with pytest.raises(ValueError, match="needs numba"):
        label_sets(planes, none, 2, "numba")
    s = label_sets(planes, none, 2)                        # auto: torch
    assert s.sid.tolist() == [[0, 1, 1, 0]] and s.labels.tolist() == [[0], [1]]
    with pytest.raises(ValueError, match="label_set_method"):
        Tally(np.zeros((1, 1)), 2, 1, (1, 1), (1, 1), label_set_method="sort")
    with pytest.raises(ValueError, match="num_labels must be"):
        Tally(np.zeros((1, 1)), 0, 1, (1, 1), (1, 1))


def test_pixel_kernel_choice_and_errors(monkeypatch):
    """auto: the compiled pixel stage on CPU, the array code when numba is missing or the
    torch stage is asked for; a bad name and 'numba' without numba are refused."""
    import pipeline.tally as tally_module
    acts, cat, planes, scalars = make_case(3, B=2, K=3)
    T = exact_thresholds_inmemory(acts, [0.05, 0.2])
    cp, cs = canonical(planes, scalars, (32, 32))
    present = np.ones((2, 3), bool)

    def kernel_of(**knobs):
        t = Tally(T, len(cat), 3, (7, 7), (32, 32), **knobs)
        t.add(acts, cp, cs, present)
        return t._kernel.pixel_kernel, [c.numpy() for c in t.result()]

    chosen, counts = kernel_of()
    assert chosen == "numba"
    assert kernel_of(numpy_on_cpu=False)[0] == "arrays"
    with pytest.raises(ValueError, match="pixel_kernel must be"):
        Tally(T, len(cat), 3, (7, 7), (32, 32), pixel_kernel="fast")
    monkeypatch.setattr(tally_module, "_NUMBA", [None])       # as if numba were missing
    with pytest.raises(ValueError, match="needs numba"):
        kernel_of(pixel_kernel="numba")
    chosen, fallback = kernel_of()
    assert chosen == "arrays"
    for a, b in zip(counts, fallback):
        np.testing.assert_array_equal(a, b)


def many_label_case(seed, B=4, K=4, L=15, seg_size=(32, 32)):
    """make_case with seven planes on every image but one, a block of pixels with seven
    distinct labels (and six and five), an image whose labels are all of category 0 and
    one without any label."""
    acts, cat, planes, scalars = make_case(seed, B=B, K=K, L=L, seg_size=seg_size)
    rng = np.random.default_rng(seed)
    sh, sw = seg_size
    for b in range(B - 2):
        pl = np.zeros((7, sh, sw), np.int64)
        for p in range(7):
            for _ in range(3):
                y, x = rng.integers(0, sh), rng.integers(0, sw)
                pl[p, y:y + rng.integers(4, sh), x:x + rng.integers(4, sw)] = rng.integers(1, L)
        seven = rng.permutation(np.setdiff1d(np.arange(1, L), scalars[b]))[:7]
        pl[:, :6, :6] = seven[:, None, None]                                # 7 labels
        pl[6, 3:6, :6] = pl[5, 3:6, :6]                                     # 6
        pl[5, 5:6, :6] = pl[4, 5:6, :6]                                     # 5
        planes[b] = pl
    only0 = np.flatnonzero(cat[1:] == 0) + 1
    assert len(only0)
    planes[B - 2] = only0[rng.integers(0, len(only0), (3, sh, sw))] * \
        (rng.random((3, sh, sw)) < 0.7)
    scalars[B - 2] = only0[:1]
    planes[B - 1] = np.zeros((0, sh, sw), np.int64)
    scalars[B - 1] = np.zeros(0, np.int64)
    return acts, cat, planes, scalars


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("method", ["auto", "torch"])
@pytest.mark.parametrize("L_big", [1198, 2 ** 16])
def test_many_labels_per_pixel_and_large_label_numbers(L_big, method, device):
    """Pixels with 5-7 labels, label numbers above 255, 1,024 (up to L - 1), ties at T,
    images without labels of a category: the counts at L = 1,198 (and 2^16, the uint16
    label cache's limit) are those of the reference at the small L, moved to the big
    label numbers; every path (numba or torch label sets, numpy or torch pixel stage)."""
    acts, cat, planes, scalars = many_label_case(300 + L_big % 7)
    L = len(cat)
    remap = np.zeros(L, np.int64)                        # label 0 stays 0
    rng = np.random.default_rng(L_big)
    remap[1:] = np.sort(np.concatenate([rng.choice(np.arange(256, 1024), 6, replace=False),
                                        rng.choice(np.arange(1025, L_big - 1), L - 8,
                                                   replace=False), [L_big - 1]]))
    cp, cs = canonical([remap[p] for p in planes], [remap[s] for s in scalars], (32, 32), P=7)
    assert ((cp != 0).sum(axis=1) == 7).any()
    T = exact_thresholds_inmemory(acts, [0.01, 0.1, 0.3])
    present = np.stack([R.image_categories(p, s, cat, 3) for p, s in zip(planes, scalars)])
    assert not present[-2, 1:].any()
    knobs = dict(pixel_stage(device), label_set_method=method, **SMALL)
    I, A = tally_tile(torch.as_tensor(acts, device=real(device)), None, T, cp, cs, present,
                      L_big, **knobs).result()
    Ir, Ar, _ = R.counts_ref(acts, T, planes, scalars, cat, 3, (32, 32))
    np.testing.assert_array_equal(I.cpu().numpy()[:, :, remap], Ir)
    np.testing.assert_array_equal(A.cpu().numpy(), Ar)
    assert I.cpu().numpy().sum() == Ir.sum()             # nothing at other label numbers


@pytest.mark.parametrize("device", DEVICES)
def test_tiles_accumulate(device):
    """One Tally adding three tiles, three tile Tallies merged, and merged through their
    states and pickles, all equal the Tally of one tile of the five images."""
    knobs = pixel_stage(device)
    device = real(device)
    acts, cat, planes, scalars = make_case(70, B=5, ties=False)
    L, G = len(cat), 3
    T = exact_thresholds_inmemory(acts, LEVELS)
    cp, cs = canonical(planes, scalars, (32, 32))
    present = np.stack([R.image_categories(p, s, cat, G) for p, s in zip(planes, scalars)])
    maxima = acts.reshape(5, acts.shape[1], -1).max(-1).astype(np.float32)
    whole = tally_tile(torch.as_tensor(acts, device=device), torch.as_tensor(maxima), T, cp, cs,
                       present, L, **knobs).result()
    tiles = [(acts[s:e], cp[s:e], cs[s:e], present[s:e], maxima[s:e])
             for s, e in [(0, 2), (2, 3), (3, 5)]]
    one = Tally(T, L, G, (7, 7), (32, 32), device=device, chunk_values=500, **knobs)
    parts = []
    for a, p, s, x, m in tiles:
        one.add(a, p, s, x, m)
        parts.append(tally_tile(torch.as_tensor(a, device=device), torch.as_tensor(m), T, p, s,
                                x, L, chunk_values=500, **knobs))
    assert [t.images for t in parts] == [2, 1, 2] and one.images == 5
    first = [c.clone() for c in parts[0].result()]
    together = merged(*parts)
    via_state = Tally.from_state(parts[0].state_dict(), device=device)
    for t in parts[1:]:
        via_state.merge(pickle.loads(pickle.dumps(t)))
    for t in (one, together, via_state):
        I, A = t.result()
        assert t.images == 5 and I.device.type == torch.device(device).type
        np.testing.assert_array_equal(I.cpu().numpy(), whole[0].cpu().numpy())
        np.testing.assert_array_equal(A.cpu().numpy(), whole[1].cpu().numpy())
    for c, want in zip(parts[0].result(), first):         # merged left its parts alone
        np.testing.assert_array_equal(c.cpu().numpy(), want.cpu().numpy())
    with pytest.raises(ValueError, match="cannot merge"):
        one.merge(Tally(T[:1], L, G, (7, 7), (32, 32)))
    T2 = T.copy()
    T2[0, 0] += 1
    with pytest.raises(ValueError, match="cannot merge"):
        one.merge(Tally(T2, L, G, (7, 7), (32, 32)))


def test_count_interrupted_before_expansion_leaves_no_trace(monkeypatch):
    """The (c, k, set) histogram buffer is reused between image groups and tiles (each
    expansion zeroes what it read): a count stopped between binning and expansion must
    not leak its partial histogram into the next count. (The array code's buffer: the
    compiled kernel's histogram lives only inside one call, which Ctrl-C cannot split.)"""
    acts, cat, planes, scalars = make_case(85, B=4, ties=False)
    T = exact_thresholds_inmemory(acts, [0.05, 0.2])
    cp, cs = canonical(planes, scalars, (32, 32))
    present = np.stack([R.image_categories(p, s, cat, 3) for p, s in zip(planes, scalars)])
    t = Tally(T, len(cat), 3, (7, 7), (32, 32), pixel_kernel="arrays")
    t.add(acts, cp, cs, present)
    once = [c.clone() for c in t.result()]
    assert once[0].sum() > 0

    def stop(*args):
        raise KeyboardInterrupt
    monkeypatch.setattr(t._kernel, "_expand", stop)
    with pytest.raises(KeyboardInterrupt):
        t.add(acts, cp, cs, present)
    monkeypatch.undo()
    t.add(acts, cp, cs, present)
    assert t.images == 8
    for c, c1 in zip(t.result(), once):
        np.testing.assert_array_equal(c.numpy(), 2 * c1.numpy())


def test_iou_from_counts_matches_reference_matrix():
    acts, cat, planes, scalars = make_case(80, ties=False)
    T = exact_thresholds_inmemory(acts, [0.05])
    I, A, lab = run_and_compare(acts, cat, planes, scalars, T, (32, 32))
    iou = R.iou_ref(I[0], A[0], lab, cat)
    np.testing.assert_array_equal(
        iou, R.iou_matrix_ref(acts, T[0], planes, scalars, cat, 3, (32, 32)))


def test_bad_inputs():
    acts, cat, planes, scalars = make_case(90)
    cp, cs = canonical(planes, scalars, (32, 32))
    present = np.ones((3, 3), bool)
    T = exact_thresholds_inmemory(acts, [0.01])
    with pytest.raises(ValueError, match="num_labels"):
        tally_tile(torch.as_tensor(acts), None, T, cp, cs, present, int(cp.max()))
    with pytest.raises(ValueError, match="acts has shape"):
        tally_tile(torch.as_tensor(acts), None, T[:, :2], cp, cs, present, 12)
    with pytest.raises(ValueError, match="present"):
        t = Tally(T, 12, 4, (7, 7), (32, 32))
        t.add(acts, cp, cs, present)
