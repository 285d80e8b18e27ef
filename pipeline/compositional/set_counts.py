"""One replay of a layer's activation cache that counts, per unit, the active pixels in
each *global* label set, and the pixels of each set (cache/set_counts.py): the
sufficient statistics of every formula's IoU (pipeline/compositional/search.py).

It is the IoU tally (pipeline/tally.py) with its last step replaced: the kernel's
steps 1-3 are reused as they are (maps, cells and pieces that cannot pass T_k skipped;
uniform pieces binned without upsampling; label sets per tile from
pipeline/label_sets.py; the strict test S > T_k on the float64 lerp-form upsampling),
at one level, T (K,) at the asked quantile. Instead of expanding each (unit, tile set)
count to labels, :class:`_SetKernel` keeps it; a tile's sets are then keyed by their
label tuple (plane slots + the image's scalar labels, sorted descending, zero padded to
W = plane slots + scalar slots of the label cache), so the same set in two images or
two tiles is one global set.

:class:`SetTally` is the mergeable accumulator of those counts (``add`` a tile,
``merge`` another, ``result``), as :class:`pipeline.tally.Tally` is for the cube; sets
are numbered in lexicographic order of their rows at the end, so the result does not
depend on tiling or on the order tiles finish in.
"""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from tqdm import tqdm

from cache.labels import LabelCache
from cache.set_counts import SetCounts
from pipeline.parallel import bounded_map
from pipeline.tally import _Kernel

__all__ = ["SetTally", "count_tile_sets", "replay_set_counts"]

# pending (unit, set, count) entries summed into the compact ones past this many
_COMPACT_ENTRIES = 1 << 22


class _SetKernel(_Kernel):
    """The tally kernel at one level whose expansion step keeps the (unit, tile set)
    histogram: after :meth:`count`, ``entries`` holds (unit, tile set, count) int64
    arrays and ``sets`` the tile's :class:`pipeline.label_sets.LabelSets`."""

    def __init__(self, thresholds: torch.Tensor, num_labels: int, num_categories: int,
                 map_size, seg_size):
        super().__init__(thresholds[None, :], num_labels, num_categories, map_size, seg_size,
                         chunk_values=None, max_maps=1 << 14, hist_entries=None,
                         numpy_on_cpu=True, label_set_method="auto", pixel_kernel="arrays")
        self.entries: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.sets = None

    def _expand(self, H, sets, s0, s1, present, hist, cat) -> None:
        ns = s1 - s0
        nz = torch.from_numpy(np.flatnonzero(H.numpy())) if H.device.type == "cpu" \
            else H.nonzero().squeeze(1)
        self.sets = sets
        if nz.numel():
            cnt = H[nz]
            ck = nz // ns                                   # c * K + k, c = 1 (one level)
            s = nz - ck * ns + s0
            self.entries.append(((ck - self.K).cpu().numpy(), s.cpu().numpy(),
                                 cnt.cpu().numpy()))
            H[nz] = 0


def _canonical_rows(labels: np.ndarray, width: int) -> np.ndarray:
    """(n, width) int32: each row's labels sorted descending, zero padded."""
    rows = -np.sort(-np.asarray(labels, dtype=np.int64), axis=1)
    out = np.zeros((rows.shape[0], width), dtype=np.int32)
    out[:, :min(width, rows.shape[1])] = rows[:, :width]
    if rows.shape[1] > width and rows[:, width:].any():
        raise ValueError(f"a pixel carries more than {width} labels: the set width is too small")
    return out


def count_tile_sets(acts, maxima, planes, scalars, thresholds, num_labels: int,
                    width: int) -> "SetTally":
    """The SetTally of one tile.

    acts:       (B, K, h, w) float16/float32 array or tensor
    maxima:     (B, K) exact per-map maxima of acts, or None
    planes:     (B, P, sh, sw) canonical label slots (cache/labelsets.py)
    scalars:    (B, S) distinct scalar labels, zero padded
    thresholds: (K,) float64 T_k (a pixel is active when S_k > T_k)
    num_labels: L; width: W, the set rows' width (P + S of the label cache)
    """
    acts = torch.as_tensor(np.asarray(acts))
    B, K = acts.shape[:2]
    planes = torch.as_tensor(np.asarray(planes).astype(np.int32))
    scalars = torch.as_tensor(np.asarray(scalars, dtype=np.int64)).reshape(B, -1)
    T = torch.as_tensor(np.asarray(thresholds, dtype=np.float64))
    mx = acts.amax(dim=(2, 3)) if maxima is None else torch.as_tensor(np.asarray(maxima))
    kernel = _SetKernel(T, num_labels, 1, tuple(acts.shape[2:]), tuple(planes.shape[2:]))
    present = torch.ones((B, 1), dtype=torch.bool)
    none = torch.zeros(0, dtype=torch.int64)
    kernel.count(acts, planes, scalars, present, mx, none, none)
    sets = kernel.sets
    rows = _canonical_rows(sets.labels.numpy(), width)
    pixels = np.bincount(sets.sid.reshape(-1).numpy(), minlength=rows.shape[0])
    out = SetTally(K, width)
    if kernel.entries:
        k, s, c = (np.concatenate(x) for x in zip(*kernel.entries))
    else:
        k = s = c = np.zeros(0, np.int64)
    out._add_rows(rows, pixels.astype(np.int64), k, s, c, B)
    return out


class SetTally:
    """Active pixels per (unit, global label set) and pixels per set, summed over tiles:
    a mergeable accumulator (:meth:`merge`), whose :meth:`result` is a
    :class:`cache.set_counts.SetCounts`. Counts are int64 sums: any order or grouping of
    tiles gives the same result.

    num_units: K; width: W, the set rows' width (labels per set at most)
    """

    def __init__(self, num_units: int, width: int):
        self.K, self.W = int(num_units), int(width)
        self._ids: dict[bytes, int] = {}            # set row -> global id (first seen)
        self._rows: list[np.ndarray] = []           # (W,) int32 rows by id
        self._pixels = np.zeros(0, np.int64)
        self._done = np.zeros((0, 3), np.int64)     # compact (unit, set id, count), sorted
        self._pending: list[np.ndarray] = []
        self._npending = 0
        self.images = 0

    def _add_rows(self, rows: np.ndarray, pixels: np.ndarray, unit: np.ndarray,
                  row_of: np.ndarray, count: np.ndarray, images: int) -> None:
        """Add sets ``rows`` (n, W) with ``pixels`` (n,) and entries (unit, row index,
        count) to the totals."""
        gid = np.empty(rows.shape[0], np.int64)
        for i, r in enumerate(rows):
            key = r.tobytes()
            g = self._ids.get(key)
            if g is None:
                g = self._ids[key] = len(self._rows)
                self._rows.append(r.copy())
            gid[i] = g
        if len(self._rows) > self._pixels.shape[0]:
            self._pixels = np.concatenate(
                [self._pixels, np.zeros(len(self._rows) - self._pixels.shape[0], np.int64)])
        np.add.at(self._pixels, gid, pixels)
        if unit.size:
            self._pending.append(np.stack([unit.astype(np.int64), gid[row_of],
                                           count.astype(np.int64)], axis=1))
            self._npending += unit.size
            if self._npending > max(_COMPACT_ENTRIES, self._done.shape[0]):
                self._compact()
        self.images += int(images)

    def _compact(self) -> None:
        """Sum the pending entries into the compact, (unit, set id)-sorted ones."""
        if not self._pending:
            return
        e = np.concatenate([self._done, *self._pending])
        key = e[:, 0] * max(1, len(self._rows)) + e[:, 1]
        uniq, inv = np.unique(key, return_inverse=True)
        total = np.zeros(uniq.shape[0], np.int64)
        np.add.at(total, inv, e[:, 2])
        n = max(1, len(self._rows))
        self._done = np.stack([uniq // n, uniq % n, total], axis=1)
        self._pending, self._npending = [], 0

    def merge(self, other: "SetTally") -> "SetTally":
        """Add ``other``'s counts (same K and W) to this one's; returns self."""
        if (other.K, other.W) != (self.K, self.W):
            raise ValueError(f"cannot merge a SetTally of {other.K} units and width {other.W} "
                             f"into one of {self.K} units and width {self.W}")
        other._compact()
        rows = np.array(other._rows, dtype=np.int32).reshape(-1, self.W)
        e = other._done
        self._add_rows(rows, other._pixels, e[:, 0], e[:, 1], e[:, 2], other.images)
        return self

    def result(self, quantile: float, thresholds: np.ndarray) -> SetCounts:
        """The counts, sets in lexicographic order of their rows (descending labels)."""
        self._compact()
        rows = np.array(self._rows, dtype=np.int32).reshape(-1, self.W)
        order = np.lexsort(rows.T[::-1]) if rows.shape[0] else np.zeros(0, np.int64)
        new_id = np.empty(rows.shape[0], np.int64)
        new_id[order] = np.arange(rows.shape[0])
        e = self._done
        unit, sid, cnt = e[:, 0], new_id[e[:, 1]], e[:, 2]
        by = np.lexsort((sid, unit))
        unit, sid, cnt = unit[by], sid[by], cnt[by]
        offsets = np.concatenate([[0], np.cumsum(np.bincount(unit, minlength=self.K))])
        return SetCounts(float(quantile), np.asarray(thresholds, np.float64).reshape(-1),
                         rows[order], self._pixels[order], offsets.astype(np.int64),
                         sid.astype(np.int64), cnt.astype(np.int64), self.images)


def replay_set_counts(acts, maxima, labels: LabelCache, quantile: float,
                      thresholds: np.ndarray, *, tile_images: int | None = None,
                      workers: int | None = None, progress: bool = False,
                      desc: str = "set counts") -> tuple[SetCounts, dict]:
    """Replay the caches once at ``thresholds`` (K,) (of ``quantile``): (SetCounts,
    stats {seconds, images, sets, entries}).

    acts: (N, K, h, w) zarr array; maxima: (N, K) zarr array. Tiles of images (aligned
    with the caches' chunks, pipeline/replay.py) are counted in ``workers`` threads
    (default one per core, each with one torch thread)."""
    from pipeline.replay import default_workers, tile_ranges
    t0 = time.perf_counter()
    ranges = tile_ranges(acts, labels, tile_images)
    workers = workers or default_workers(torch.device("cpu"))
    if workers < 1:
        raise ValueError(f"--workers must be at least 1, got {workers}")
    width = int(labels.planes.shape[1]) + int(labels.scalars.shape[1])
    total = SetTally(acts.shape[1], width)
    thr = np.asarray(thresholds, dtype=np.float64).reshape(-1)

    def tile(start: int, stop: int) -> SetTally:
        t = labels.read(start, stop)
        return count_tile_sets(acts[start:stop], maxima[start:stop], t.planes, t.scalars,
                               thr, labels.num_labels, width)

    threads = torch.get_num_threads()
    if workers > 1:
        torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(workers) as pool, \
                tqdm(total=acts.shape[0], unit="img", desc=desc, disable=not progress,
                     dynamic_ncols=True) as bar:
            for part in bounded_map(pool, tile, ranges, depth=workers + 1):
                total.merge(part)
                bar.update(part.images)
    finally:
        torch.set_num_threads(threads)
    counts = total.result(quantile, thr)
    stats = {"seconds": time.perf_counter() - t0, "images": int(counts.num_images),
             "sets": counts.num_sets, "entries": int(counts.active.shape[0])}
    return counts, stats
