"""Exact quantiles: bit-for-bit equal to numpy.quantile(unit values, 1 - q)."""
from __future__ import annotations

import dask.array as da
import numpy as np
import pytest

from pipeline.quantiles import (check_levels, exact_thresholds, exact_thresholds_inmemory,
                                tail_count, tail_index, thresholds_from_top)

LEVELS = [0.001, 0.0025, 0.005, 0.01, 0.02, 0.05]


def numpy_thresholds(acts, levels):
    return np.array([[np.quantile(acts[:, k].astype(np.float64).ravel(), 1 - q)
                      for k in range(acts.shape[1])] for q in levels])


def both(acts, levels, chunks=None):
    """Thresholds by the dask path (with the given chunks) and the in-memory path."""
    x = da.from_array(acts, chunks=chunks or (max(1, acts.shape[0] // 3), 2, -1, -1))
    return exact_thresholds(x, levels), exact_thresholds_inmemory(acts, levels)


def check(acts, levels, chunks=None):
    ref = numpy_thresholds(acts, levels)
    for T in both(acts, levels, chunks):
        assert T.dtype == np.float64 and T.shape == ref.shape
        np.testing.assert_array_equal(T, ref)


@pytest.mark.parametrize("seed", range(4))
def test_random_float16(seed):
    rng = np.random.default_rng(seed)
    acts = (rng.standard_normal((37, 5, 7, 7)) * 3).astype(np.float16)
    check(acts, LEVELS + [0.3, 0.5, 0.9, 0.999])


@pytest.mark.parametrize("seed", range(3))
def test_relu_float32(seed):
    rng = np.random.default_rng(10 + seed)
    acts = np.maximum(rng.standard_normal((50, 3, 6, 5)), 0).astype(np.float32)
    check(acts, LEVELS)


def test_many_ties():
    rng = np.random.default_rng(1)
    vals = np.array([0, 0.5, 1, 1.5, 2], dtype=np.float16)
    acts = rng.choice(vals, size=(41, 4, 3, 3))
    check(acts, LEVELS + [0.2, 0.5, 0.77])


def test_all_equal_and_mostly_zero_units():
    rng = np.random.default_rng(2)
    acts = np.zeros((30, 4, 4, 4), dtype=np.float16)
    acts[:, 1] = np.float16(2.5)                            # constant unit
    acts[3, 2, 1, 1] = 7                                    # zero except a few values
    acts[9, 2, 0, 3] = 3
    acts[:, 3] = rng.standard_normal((30, 4, 4)).astype(np.float16)
    check(acts, LEVELS)
    T = exact_thresholds_inmemory(acts, LEVELS)
    assert (T[:, 0] == 0).all() and (T[:, 1] == 2.5).all()


@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (1, 2, 1, 1), (2, 1, 1, 3), (3, 2, 13, 13),
                                   (5, 3, 2, 7), (1, 1, 7, 7)])
def test_tiny_and_odd_shapes(shape):
    rng = np.random.default_rng(3)
    acts = rng.standard_normal(shape).astype(np.float16)
    check(acts, LEVELS + [0.5], chunks=(1, 1, -1, -1))


def test_m_equals_one():
    # q so small that 1 - q == 1.0: numpy returns the maximum, one value is needed
    assert 1.0 - 1e-20 == 1.0
    assert tail_count(1000, 1e-20) == 1
    assert tail_count(1, 0.5) == 1                          # a single value
    rng = np.random.default_rng(4)
    acts = rng.standard_normal((8, 3, 2, 2)).astype(np.float16)
    check(acts, [1e-20, 0.001])
    np.testing.assert_array_equal(exact_thresholds_inmemory(acts, [1e-20])[0],
                                  acts.max(axis=(0, 2, 3)).astype(np.float64))


def test_tail_count_uses_numpy_index():
    # numpy reads sorted[floor((n-1)(1-q))] and the next value: m = n - floor(...)
    for n in [1, 2, 3, 10, 49, 200, 999, 1000, 1001, 12345, 980_000, 3_101_945]:
        for q in LEVELS + [0.1, 0.5, 0.9]:
            ti = tail_index(n, q)
            vi = (n - 1) * np.float64(1 - q)
            if vi >= n - 1:
                assert ti.m == 1
            else:
                assert ti.m == n - int(np.floor(vi))
                assert ti.hi == ti.lo - 1 and 0 <= ti.t < 1
    # the naive ceil(q * n) can be one too many or too few: ours is what numpy reads
    v = np.arange(200_000, dtype=np.float64)[::-1].copy()
    for q in LEVELS:
        m = tail_count(v.size, q)
        top = np.sort(v)[::-1][:m]
        np.testing.assert_array_equal(thresholds_from_top(top[None], v.size, [q])[0],
                                      [np.quantile(v, 1 - q)])


@pytest.mark.parametrize("seed", range(3))
def test_many_n_and_q(seed):
    rng = np.random.default_rng(100 + seed)
    for N in [1, 2, 3, 5, 11, 64]:
        acts = rng.standard_normal((N, 2, 3, 3)).astype(np.float16)
        qs = list(rng.uniform(1e-4, 0.999, size=5)) + LEVELS
        check(acts, qs, chunks=(max(1, N // 2), 1, -1, -1))


def test_split_chunks_on_space_and_units():
    rng = np.random.default_rng(5)
    acts = rng.standard_normal((20, 6, 5, 5)).astype(np.float16)
    ref = numpy_thresholds(acts, LEVELS)
    x = da.from_array(acts, chunks=(3, 4, 2, 3))            # spatial chunks get merged
    np.testing.assert_array_equal(exact_thresholds(x, LEVELS), ref)
    # tiny memory budget: units processed a few at a time
    np.testing.assert_array_equal(exact_thresholds(x, LEVELS, memory_budget=1, split_every=2),
                                  ref)


def test_lazy_and_compute_kwargs():
    rng = np.random.default_rng(6)
    acts = rng.standard_normal((10, 3, 4, 4)).astype(np.float16)
    ref = numpy_thresholds(acts, LEVELS)
    lazy = exact_thresholds(da.from_array(acts, chunks=(2, 3, 4, 4)), LEVELS, compute=False)
    assert isinstance(lazy, da.Array) and lazy.shape == (len(LEVELS), 3)
    np.testing.assert_array_equal(lazy.compute(scheduler="synchronous"), ref)
    T = exact_thresholds(acts, LEVELS, compute_kwargs={"scheduler": "synchronous"})
    np.testing.assert_array_equal(T, ref)


def test_zarr_input(tmp_path):
    zarr = pytest.importorskip("zarr")
    rng = np.random.default_rng(7)
    acts = np.maximum(rng.standard_normal((24, 5, 7, 7)), 0).astype(np.float16)
    z = zarr.create_array(store=str(tmp_path / "a.zarr"), shape=acts.shape, dtype="float16",
                          chunks=(5, 2, 7, 7))
    z[:] = acts
    np.testing.assert_array_equal(exact_thresholds(zarr.open_array(str(tmp_path / "a.zarr")),
                                                   LEVELS), numpy_thresholds(acts, LEVELS))


def test_memory_independent_of_n():
    # the topk graph only ever holds per-chunk tails: each task output is (K, <= m)
    acts = da.zeros((4000, 8, 7, 7), dtype=np.float16, chunks=(100, 8, 7, 7))
    T = exact_thresholds(acts, [0.005], compute=False)
    m = tail_count(4000 * 49, 0.005)
    from pipeline.quantiles import top_values
    top = top_values(acts, m)
    assert top.shape == (8, m) and top.chunks[1] == (m,)
    assert T.shape == (1, 8)


@pytest.mark.parametrize("bad", [0, 1, -0.1, 1.5, float("nan")])
def test_rejects_levels_outside_open_interval(bad):
    with pytest.raises(ValueError, match=str(bad)[:3]):
        check_levels([0.01, bad])
    with pytest.raises(ValueError):
        exact_thresholds_inmemory(np.zeros((2, 1, 2, 2), np.float16), [bad])


def test_nan_rejected():
    acts = np.zeros((3, 2, 2, 2), np.float32)
    acts[1, 1, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        exact_thresholds(acts, [0.01])
    with pytest.raises(ValueError, match="NaN"):
        exact_thresholds_inmemory(acts, [0.01])
