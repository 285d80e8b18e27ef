"""Exact per-unit activation quantiles T_k (DESIGN.md, "Normative definitions").

T[v, k] is bit-for-bit ``numpy.quantile(acts[:, k].astype(np.float64).ravel(), 1 - q_v)``
(method 'linear'). Only the top ``m`` values of each unit are needed, where ``m``
follows from numpy's virtual index with integer arithmetic; they are found with
``dask.array.topk`` over a unit-first (K, N*h*w) view, so memory does not grow with N.

numpy's 'linear' arithmetic, replicated here (numpy/lib/_function_base_impl.py):
  p = 1 - q                          (float64)
  vi = (n - 1) * p                   (float64)
  if vi >= n - 1: T = max            (both neighbours are the last sorted value)
  lo = floor(vi); hi = lo + 1; t = vi - lo
  T = a + (b - a) * t                if t < 0.5, with a = sorted[lo], b = sorted[hi]
  T = b - (b - a) * (1 - t)          if t >= 0.5
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

__all__ = [
    "NonFiniteActivations",
    "TailIndex",
    "check_levels",
    "tail_index",
    "tail_count",
    "thresholds_from_top",
    "exact_thresholds",
    "exact_thresholds_inmemory",
    "top_values",
    "DEFAULT_MEMORY_BUDGET",
]

DEFAULT_MEMORY_BUDGET = 512 * 2**20  # bytes per (unit chunk) topk combine step


class NonFiniteActivations(ValueError):
    """Some units hold NaN or infinite activations, whose quantile means nothing.
    ``units``: their 0-based indices (all of them, the message shows the first 10)."""

    def __init__(self, units: Sequence[int], what: str = "NaN or infinite"):
        self.units = [int(u) for u in units]
        more = f" and {len(self.units) - 10} more" if len(self.units) > 10 else ""
        super().__init__(f"units {self.units[:10]}{more} (0-based) contain {what} "
                         f"activations")


def check_finite_top(top: np.ndarray) -> None:
    """Raise NonFiniteActivations if a unit's top values (K, m) hold NaN or +-inf.
    NaN sorts above every number in topk, and +inf is the largest value, so a unit
    holding either has it among its top values."""
    bad = np.flatnonzero(~np.isfinite(np.asarray(top, dtype=np.float64)).all(axis=1))
    if bad.size:
        raise NonFiniteActivations(bad)


@dataclass(frozen=True)
class TailIndex:
    """Where numpy's 'linear' quantile at 1 - q reads a sorted vector of n values.

    lo, hi: descending ranks (0 = largest) of the two order statistics that are
            interpolated; value = top[lo] + (top[hi] - top[lo]) * t, numpy-style.
            (``lo`` is the *lower* value, i.e. the larger descending rank.)
    t:      float64 interpolation weight (0 <= t < 1)
    m:      number of top values needed (= lo + 1)
    """
    lo: int
    hi: int
    t: float
    m: int


def check_levels(levels: Sequence[float]) -> list[float]:
    """Validate quantile levels q (0 < q < 1); returns them as Python floats."""
    if np.ndim(levels) == 0:
        levels = [levels]  # type: ignore[list-item]
    out = []
    for q in levels:
        qf = float(q)
        if not (0.0 < qf < 1.0):  # also rejects NaN
            raise ValueError(f"quantile level q={q!r} is outside (0, 1): pass the tail "
                             f"fraction, e.g. 0.005 for the top 0.5%")
        out.append(qf)
    if not out:
        raise ValueError("no quantile levels given: pass at least one q in (0, 1)")
    return out


def tail_index(num_values: int, q: float) -> TailIndex:
    """numpy's virtual index for ``np.quantile(v, 1 - q)`` with ``len(v) == num_values``,
    expressed as descending ranks into the sorted-descending top values."""
    n = int(num_values)
    if n < 1:
        raise ValueError(f"num_values={num_values} must be >= 1 (no activations to rank)")
    (qf,) = check_levels([q])
    if n - 1 >= 2**53:
        raise ValueError(f"num_values={n} too large for exact float64 virtual indices")
    p = np.float64(1.0 - qf)
    vi = np.float64(n - 1) * p                   # numpy: (n - 1) * quantiles
    if vi >= n - 1:                               # numpy takes the maximum
        return TailIndex(lo=0, hi=0, t=0.0, m=1)
    asc_lo = int(math.floor(vi))                  # 0 <= asc_lo <= n - 2 (vi >= 0 as p > 0)
    t = float(vi - np.float64(asc_lo))
    lo = n - 1 - asc_lo                           # descending rank of sorted[asc_lo]
    return TailIndex(lo=lo, hi=lo - 1, t=t, m=lo + 1)


def tail_count(num_values: int, q: float) -> int:
    """Number m of largest values that determine ``np.quantile(v, 1 - q)``, len(v) = num_values."""
    return tail_index(num_values, q).m


def _lerp(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    """numpy's _lerp for a scalar weight t, float64 arrays a, b (same rounding steps)."""
    diff = b - a
    if t >= 0.5:
        return b - diff * (1.0 - t)
    return a + diff * t


def thresholds_from_top(top: np.ndarray, num_values: int, levels: Sequence[float]) -> np.ndarray:
    """Thresholds from the sorted-descending top values of each unit.

    top:        (K, m') values of each unit, largest first, m' >= tail_count(num_values, max q)
    num_values: n, the number of values per unit (N*h*w)
    returns:    (V, K) float64, T[v, k] == np.quantile(all values of unit k, 1 - levels[v])
    """
    qs = check_levels(levels)
    top = np.asarray(top)
    out = np.empty((len(qs), top.shape[0]), dtype=np.float64)
    for v, q in enumerate(qs):
        ti = tail_index(num_values, q)
        if ti.m > top.shape[1]:
            raise ValueError(f"top holds {top.shape[1]} values per unit but q={q} needs "
                             f"{ti.m}: compute topk with m = tail_count(n, max q)")
        a = top[:, ti.lo].astype(np.float64)
        b = top[:, ti.hi].astype(np.float64)
        out[v] = _lerp(a, b, ti.t)
    return out


def _as_dask(acts: Any):
    import dask.array as da
    if isinstance(acts, da.Array):
        return acts
    if type(acts).__module__.startswith("zarr"):
        return da.from_zarr(acts)
    if isinstance(acts, np.ndarray):
        return da.from_array(acts, chunks=(max(1, 2**22 // max(1, int(np.prod(acts.shape[1:])))),
                                           -1, -1, -1))
    return da.asarray(acts)


def top_values(acts: Any, m: int, *, memory_budget: int = DEFAULT_MEMORY_BUDGET,
               split_every: int | None = None):
    """Lazy (K, m) dask array: the m largest values of each unit, largest first.

    acts: (N, K, h, w) float16/float32 dask array, zarr array or numpy array.
    Units are grouped in chunks of at most ``k_chunk`` so that one topk combine step
    (split_every * k_chunk * m values) stays near ``memory_budget`` bytes; spatial axes
    are made single-chunk so the unit-first reshape needs no rechunk along images.
    """
    import dask.array as da
    x = _as_dask(acts)
    if x.ndim != 4:
        raise ValueError(f"acts must be (N, K, h, w), got shape {x.shape}")
    N, K, h, w = x.shape
    n = N * h * w
    m = int(min(m, n))
    se = int(split_every or 4)
    item = x.dtype.itemsize
    per_unit = max(se * m, h * w * max(x.chunks[0])) * item
    k_chunk = int(max(1, min(K, memory_budget // max(1, per_unit))))
    cur_k = max(x.chunks[1])
    target_k = cur_k if cur_k <= k_chunk else k_chunk
    if (len(x.chunks[2]) > 1 or len(x.chunks[3]) > 1) or target_k != cur_k:
        x = x.rechunk({1: target_k, 2: -1, 3: -1})
    flat = x.transpose(1, 0, 2, 3).reshape(K, n)
    return da.topk(flat, m, axis=1, split_every=se)


def _tail_plan(shape: tuple, levels: Sequence[float]) -> tuple[list[float], int, int]:
    """(checked levels, n = values per unit, m = tail values to keep) for an (N, K, h, w)
    array; ValueError for another shape or no values."""
    qs = check_levels(levels)
    if len(shape) != 4:
        raise ValueError(f"acts must be (N, K, h, w), got shape {tuple(shape)}")
    N, K, h, w = shape
    n = N * h * w
    if n == 0:
        raise ValueError("acts holds no values (N*h*w == 0)")
    return qs, n, max(tail_count(n, q) for q in qs)     # largest q: the longest tail


def exact_thresholds(acts: Any, levels: Sequence[float], *, compute: bool = True,
                     compute_kwargs: dict | None = None,
                     memory_budget: int = DEFAULT_MEMORY_BUDGET,
                     split_every: int | None = None, progress: str | None = None):
    """Exact thresholds T (V, K) float64 of an activation cache.

    acts:   (N, K, h, w) float16/float32 dask array, zarr array or numpy array
    levels: V quantile levels q (0 < q < 1); T[v, k] = np.quantile(unit k, 1 - q_v)
    compute=False returns the lazy (V, K) dask array (compute it with any scheduler);
    otherwise it is computed with ``dask.compute(..., **compute_kwargs)``, with a tqdm
    bar over the graph's tasks named ``progress`` when given (local schedulers only).
    Raises NonFiniteActivations (a ValueError naming the units) if a unit holds NaN or
    +-inf among its top values (numpy would return NaN or inf).
    """
    import dask
    import dask.array as da
    x = _as_dask(acts)
    qs, n, m = _tail_plan(x.shape, levels)
    top = top_values(x, m, memory_budget=memory_budget, split_every=split_every)

    def finish(block: np.ndarray, block_info=None) -> np.ndarray:
        try:
            check_finite_top(block)
        except NonFiniteActivations as e:       # unit numbers of the whole array
            k0 = block_info[0]["array-location"][0][0] if block_info else 0
            raise NonFiniteActivations([k0 + u for u in e.units]) from None
        return thresholds_from_top(block, n, qs)

    T = da.map_blocks(finish, top, dtype=np.float64, chunks=((len(qs),), top.chunks[0]),
                      drop_axis=1, new_axis=0)
    if not compute:
        return T
    with _task_bar(progress):
        (res,) = dask.compute(T, **(compute_kwargs or {}))
    return np.asarray(res, dtype=np.float64)


@contextlib.contextmanager
def _task_bar(desc: str | None):
    """A tqdm bar (rate, ETA) advanced by every task dask's local schedulers finish
    inside the block (dask.callbacks.Callback; a distributed client ignores it); none
    when ``desc`` is None."""
    if desc is None:
        yield
        return
    from dask.callbacks import Callback
    from tqdm.auto import tqdm
    bar = tqdm(total=0, unit="task", desc=desc, dynamic_ncols=True)

    class Bar(Callback):
        def _start_state(self, dsk, state):
            bar.total = bar.n + len(state["ready"]) + len(state["waiting"])
            bar.refresh()

        def _posttask(self, key, result, dsk, state, worker_id):
            bar.update(1)
    try:
        with Bar():
            yield
    finally:
        bar.close()


def exact_thresholds_inmemory(acts: np.ndarray, levels: Sequence[float]) -> np.ndarray:
    """Same as :func:`exact_thresholds` for a small in-memory (N, K, h, w) numpy array,
    one unit at a time with np.partition. Returns (V, K) float64."""
    a = np.asarray(acts)
    qs, n, m = _tail_plan(a.shape, levels)
    K = a.shape[1]
    top = np.empty((K, m), dtype=a.dtype)
    for k in range(K):
        v = a[:, k].ravel()
        if not np.isfinite(v).all():
            raise NonFiniteActivations([k])
        part = np.partition(v, n - m)[n - m:] if m < n else v.copy()
        top[k] = np.sort(part)[::-1]
    return thresholds_from_top(top, n, qs)
