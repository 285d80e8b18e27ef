"""The label cache equals direct decoding; it resumes, and refuses another dataset."""
from __future__ import annotations

import numpy as np
import pytest

from cache.labels import LabelCache, LabelCacheError
from pipeline.label_decoding import build_label_cache
from pipeline.broden import BrodenDataset
import tiny_broden as tb


@pytest.fixture
def tiny(tmp_path):
    return tb.write_tiny_broden(tmp_path / "broden")


def pixel_sets(planes: np.ndarray, scalars: np.ndarray) -> list[list[set[int]]]:
    """(P, sh, sw) planes + (S,) scalars -> per-pixel label sets (the DESIGN.md L_c)."""
    sc = {int(v) for v in scalars if v != 0}
    P, sh, sw = planes.shape
    return [[{int(planes[p, y, x]) for p in range(P) if planes[p, y, x] != 0} | sc
             for x in range(sw)] for y in range(sh)]


def check_equals_decoding(cache: LabelCache, ds: BrodenDataset) -> None:
    L = ds.num_labels
    want_pixels = np.zeros(L, dtype=np.int64)
    tile = cache.read(0, len(ds))
    for i in range(len(ds)):
        lab = ds.load_labels(i)
        direct = pixel_sets(lab.planes, lab.scalars)
        cached = pixel_sets(tile.planes[i].astype(np.int64), tile.scalars[i])
        assert cached == direct, f"image {i}"
        np.testing.assert_array_equal(tile.present[i], ds.categories_present(lab))
        assert sorted(tile.scalars[i][tile.scalars[i] != 0]) == sorted(set(lab.scalars.tolist()))
        for row in direct:
            for s in row:
                for c in s:
                    want_pixels[c] += 1
    np.testing.assert_array_equal(cache.label_pixels, want_pixels)


def test_cache_equals_direct_decoding(tiny, tmp_path):
    ds = BrodenDataset(tiny)
    cache = build_label_cache(ds, tmp_path / "labels.zarr", chunk_images=3, workers=1,
                              progress=False)
    assert cache.num_images == 4 and cache.seg_size == (4, 4)
    assert cache.planes.shape[1] == 4          # row 1: color, object, two part PNGs
    assert cache.planes.dtype == np.uint16
    check_equals_decoding(cache, ds)
    # window in two planes at one pixel counts once; stripes painted under its scalar too
    assert cache.label_pixels[4] == 4 + 4 - 1 + 1       # rows 4 (7 px) and 1 (1 px)
    assert cache.label_pixels[8] == 2 * 16
    assert cache.categories == tb.CATEGORIES
    assert cache.primary_category[6] == tb.CATEGORIES.index("texture")
    for n in range(1, 5):       # prefixes (runs made with --limit), within and across chunks
        t = cache.read(0, n)
        want = sum(np.bincount(pixel_labels, minlength=301) for pixel_labels in
                   [np.array([c for row in pixel_sets(t.planes[i].astype(np.int64),
                                                      t.scalars[i]) for s in row for c in s],
                             dtype=np.int64) for i in range(n)])
        np.testing.assert_array_equal(cache.label_pixels_upto(n), want)
    reopened = LabelCache.open(tmp_path / "labels.zarr")
    np.testing.assert_array_equal(reopened.read(1, 3).planes, cache.read(1, 3).planes)


def test_parallel_build_is_identical(tiny, tmp_path):
    ds = BrodenDataset(tiny)
    a = build_label_cache(ds, tmp_path / "a.zarr", chunk_images=1, workers=1, progress=False)
    b = build_label_cache(ds, tmp_path / "b.zarr", chunk_images=1, workers=2, progress=False)
    for name in ["planes", "scalars", "present"]:
        np.testing.assert_array_equal(a.group[name][:], b.group[name][:])
    np.testing.assert_array_equal(a.label_pixels, b.label_pixels)


def test_resume_rewrites_only_unfinished_chunks(tiny, tmp_path):
    ds = BrodenDataset(tiny)
    path = tmp_path / "labels.zarr"
    full = build_label_cache(ds, path, chunk_images=1, workers=1, progress=False)
    want = full.group["planes"][:]
    # Simulate a build killed after chunk 0: chunks 1.. not done, one holds garbage.
    g = full.group
    g.attrs["complete"] = False
    g["done"][1:] = 0
    g["planes"][2] = 999
    resumed = build_label_cache(ds, path, chunk_images=1, workers=1, progress=False)
    np.testing.assert_array_equal(resumed.group["planes"][:], want)
    check_equals_decoding(resumed, ds)


def test_incomplete_cache_is_refused_for_reading(tiny, tmp_path):
    ds = BrodenDataset(tiny)
    c = build_label_cache(ds, tmp_path / "l.zarr", chunk_images=2, workers=1, progress=False)
    c.group.attrs["complete"] = False
    with pytest.raises(LabelCacheError, match="incomplete"):
        LabelCache.open(tmp_path / "l.zarr")


def test_changed_dataset_is_detected(tiny, tmp_path):
    ds = BrodenDataset(tiny)
    cache = build_label_cache(ds, tmp_path / "l.zarr", workers=1, progress=False)
    cache.check_dataset(ds)
    with open(tiny / "label.csv", "a") as f:
        f.write("9,extra,color(1),1,0.1,\n")
    changed = BrodenDataset(tiny)
    with pytest.raises(LabelCacheError, match="fingerprint"):
        cache.check_dataset(changed)
    with pytest.raises(LabelCacheError, match="another dataset"):
        build_label_cache(changed, tmp_path / "l.zarr", workers=1, progress=False)
    rebuilt = build_label_cache(changed, tmp_path / "l.zarr", workers=1, overwrite=True,
                                progress=False)
    assert rebuilt.num_labels == 301 and rebuilt.fingerprint == changed.fingerprint()


def test_default_path_uses_env(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("NETDISSECT_CACHE", str(tmp_path / "cachedir"))
    ds = BrodenDataset(tiny)
    cache = build_label_cache(ds, workers=1, progress=False)
    assert cache.path.startswith(str(tmp_path / "cachedir"))
    assert ds.fingerprint()[:16] in cache.path
