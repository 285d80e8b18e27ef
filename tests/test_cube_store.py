"""Thresholds and IoU cubes stored in a layer group: merging levels, stale sources."""
from __future__ import annotations

import numpy as np
import zarr

from cache.cube import Cube, read_cube, read_thresholds, write_cube, write_thresholds


def make_cube(levels, K=3, L=5, G=2, seed=0):
    rng = np.random.default_rng(seed)
    V = len(levels)
    return Cube(np.array(levels, float), rng.random((V, K)),
                rng.integers(0, 9, (V, K, L)), rng.integers(0, 9, (V, K, G)),
                rng.integers(0, 9, L), ["a", "b"])


def test_thresholds_merge_and_staleness(tmp_path):
    g = zarr.open_group(tmp_path / "layer", mode="w")
    src = {"model": "m1", "n": 10}
    assert read_thresholds(g, src) is None
    write_thresholds(g, [0.05, 0.005], np.array([[1.0, 2.0], [3.0, 4.0]]), src)
    lv, t = read_thresholds(g, src)
    assert lv.tolist() == [0.005, 0.05] and t.tolist() == [[3.0, 4.0], [1.0, 2.0]]
    write_thresholds(g, [0.01, 0.005], np.array([[5.0, 6.0], [3.0, 4.0]]), src)
    lv, t = read_thresholds(g, src)
    assert lv.tolist() == [0.005, 0.01, 0.05]
    assert t.tolist() == [[3.0, 4.0], [5.0, 6.0], [1.0, 2.0]]
    assert read_thresholds(g, {"model": "m2", "n": 10}) is None


def test_cube_merge_and_staleness(tmp_path):
    g = zarr.open_group(tmp_path / "layer", mode="w")
    src = {"model": "m1"}
    a = make_cube([0.005, 0.05], seed=1)
    write_cube(g, a, src)
    b = make_cube([0.01], seed=2)
    merged = write_cube(g, b, src)
    got = read_cube(g, src)
    assert got.levels.tolist() == [0.005, 0.01, 0.05]
    np.testing.assert_array_equal(got.intersect[0], a.intersect[0])
    np.testing.assert_array_equal(got.intersect[1], b.intersect[0])
    np.testing.assert_array_equal(got.activation[2], a.activation[1])
    np.testing.assert_array_equal(merged.thresholds, got.thresholds)
    assert got.select([0.05]).intersect.shape == (1, 3, 5)
    assert read_cube(g, {"model": "other"}) is None
    g["cube"].attrs["complete"] = False          # a write interrupted half way
    assert read_cube(g, src) is None


def test_all_zero_thresholds_and_cube_are_stored(tmp_path):
    """Units that are zero on more than 1 - q of their values have T = 0; an all-zero
    thresholds array (and a dead layer's all-zero cube) must be written, not left as
    absent chunks that read as damage."""
    g = zarr.open_group(tmp_path / "layer", mode="w")
    src = {"model": "m1"}
    write_thresholds(g, [0.2], np.zeros((1, 3)), src)
    lv, t = read_thresholds(g, src)
    assert lv.tolist() == [0.2] and t.tolist() == [[0.0, 0.0, 0.0]]
    zero = Cube(np.array([0.2]), np.zeros((1, 3)), np.zeros((1, 3, 5), np.int64),
                np.zeros((1, 3, 2), np.int64), np.zeros(5, np.int64), ["a", "b"])
    write_cube(g, zero, src)
    got = read_cube(g, src)
    assert got is not None and not got.intersect.any() and got.intersect.shape == (1, 3, 5)
