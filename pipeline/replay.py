"""Replay an activation cache and the label cache through the tally kernel: the IoU cube.

Never touches the network or a PNG. Tiles run over images (aligned with the
caches' chunks); within a tile the kernel sub-batches units, so memory stays
bounded whatever N is. Worker threads each read a tile (Zarr decompression
releases the GIL) and count it; at most workers + 1 tiles are in memory.
"""
from __future__ import annotations

import os
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from typing import Iterator

import numpy as np
import torch
from tqdm import tqdm

from cache.cube import Cube
from cache.labels import LabelCache
from pipeline.devices import resolve_device
from pipeline.tally import tally_tile


def tile_size(act_chunk: int, label_chunk: int, target: int = 256) -> int:
    """Images per tile: a multiple of both caches' image chunks when one divides the
    other (each chunk decoded once), close to ``target``."""
    big, small = max(act_chunk, label_chunk), min(act_chunk, label_chunk)
    base = big if big % small == 0 else label_chunk
    return base * max(1, target // base)


def default_workers(device: torch.device) -> int:
    """Tiles counted at once: one per core on CPU (each with one torch thread), 1 on CUDA."""
    return 1 if device.type == "cuda" else max(1, min(os.cpu_count() or 1, 8))


def replay_cube(acts, maxima, labels: LabelCache, levels, thresholds: np.ndarray, *,
                device: str | torch.device = "auto", tile_images: int | None = None,
                workers: int | None = None, progress: bool = True, desc: str = "tally"
                ) -> Cube:
    """Count I, activation per category and |L_c| for every level.

    acts: (N, K, h, w) zarr array; maxima: (N, K) zarr array; thresholds (V, K) float64
    for ``levels`` (V,). N may be less than the label cache's images (a --limit run).
    On CPU ``workers`` threads each read and count whole tiles with one torch thread
    apiece (integer sums do not depend on the order tiles finish in).
    """
    dev = resolve_device(device) if isinstance(device, str) else device
    N, K = acts.shape[:2]
    if N > labels.num_images:
        raise ValueError(f"activation cache has {N} images but the label cache only "
                         f"{labels.num_images}: they come from different datasets")
    L, G = labels.num_labels, len(labels.categories)
    V = len(levels)
    thr = torch.as_tensor(np.asarray(thresholds, dtype=np.float64), device=dev)
    inter = torch.zeros((V, K, L), dtype=torch.int64, device=dev)
    act = torch.zeros((V, K, G), dtype=torch.int64, device=dev)
    step = tile_images or tile_size(acts.chunks[0], labels.chunk_images)
    ranges = [(s, min(s + step, N)) for s in range(0, N, step)]
    workers = workers or default_workers(dev)

    def load(start, stop):
        t = labels.read(start, stop)
        return (acts[start:stop], maxima[start:stop], t.planes.astype(np.int32), t.scalars,
                t.present)

    def count(start, stop):
        a, m, planes, scalars, present = load(start, stop)
        return stop - start, tally_tile(
            torch.from_numpy(a).to(dev), torch.from_numpy(m).to(dev), thr,
            torch.from_numpy(planes).to(dev), torch.from_numpy(scalars).to(dev),
            torch.from_numpy(present).to(dev), L)

    threads = torch.get_num_threads()
    if workers > 1:
        torch.set_num_threads(1)
    try:
        with tqdm(total=N, unit="img", desc=desc, disable=not progress,
                  dynamic_ncols=True) as bar, ThreadPoolExecutor(workers) as pool:
            for n, (i, c) in _bounded(pool, count, ranges, depth=workers + 1):
                inter += i
                act += c
                bar.update(n)
    finally:
        torch.set_num_threads(threads)
    return Cube(np.asarray(levels, dtype=np.float64), np.asarray(thresholds, np.float64),
                inter.cpu().numpy(), act.cpu().numpy(), labels.label_pixels_upto(N),
                labels.categories)


def _bounded(pool: ThreadPoolExecutor, fn, ranges, depth: int) -> Iterator:
    """fn(*r) for r in ranges, at most ``depth`` in flight, yielded as they finish."""
    ranges = iter(ranges)
    pending = set()
    try:
        for r in ranges:
            pending.add(pool.submit(fn, *r))
            if len(pending) >= depth:
                break
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for f in done:
                yield f.result()
                nxt = next(ranges, None)
                if nxt is not None:
                    pending.add(pool.submit(fn, *nxt))
    finally:
        for f in pending:
            f.cancel()
