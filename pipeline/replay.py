"""Replay an activation cache and the label cache through the tally kernel: the IoU cube.

Never touches the network or a PNG. Tiles run over images (aligned with the
caches' chunks); within a tile the kernel sub-batches units, so memory stays
bounded whatever N is. A reader thread prefetches the next tiles (Zarr chunk
decompression releases the GIL) while the kernel counts the current one.
"""
from __future__ import annotations

import queue
import threading
from typing import Iterator

import numpy as np
import torch
from tqdm import tqdm

from cache.cube import Cube
from cache.labels import LabelCache
from pipeline.tally import tally_tile


def resolve_device(device: str = "auto") -> torch.device:
    """'auto' -> cuda when available, else cpu; errors name the argument."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: CUDA is not available on this machine; "
                         f"use --device cpu or auto")
    try:
        return torch.device(device)
    except RuntimeError as e:
        raise ValueError(f"--device {device!r}: {e}") from None


def tile_size(act_chunk: int, label_chunk: int, target: int = 256) -> int:
    """Images per tile: a multiple of both caches' image chunks when one divides the
    other (each chunk decoded once), close to ``target``."""
    big, small = max(act_chunk, label_chunk), min(act_chunk, label_chunk)
    base = big if big % small == 0 else label_chunk
    return base * max(1, target // base)


def _prefetch(fn, ranges, depth: int = 2) -> Iterator:
    """Yield fn(r) for r in ranges, computed ``depth`` ahead in a thread."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def work():
        try:
            for r in ranges:
                if stop.is_set():
                    return
                q.put((r, fn(*r), None))
        except BaseException as e:                # hand errors to the consumer
            q.put((None, None, e))
            return
        q.put(None)

    t = threading.Thread(target=work, daemon=True)
    t.start()
    try:
        while True:
            item = q.get()
            if item is None:
                return
            r, val, err = item
            if err is not None:
                raise err
            yield r, val
    finally:
        stop.set()
        while t.is_alive():                        # unblock a producer waiting on put
            try:
                q.get_nowait()
            except queue.Empty:
                t.join(0.05)


def replay_cube(acts, maxima, labels: LabelCache, levels, thresholds: np.ndarray, *,
                device: str | torch.device = "auto", tile_images: int | None = None,
                progress: bool = True, desc: str = "tally") -> Cube:
    """Count I, activation per category and |L_c| for every level.

    acts: (N, K, h, w) zarr array; maxima: (N, K) zarr array; thresholds (V, K) float64
    for ``levels`` (V,). N may be less than the label cache's images (a --limit run).
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

    def load(start, stop):
        t = labels.read(start, stop)
        return (acts[start:stop], maxima[start:stop], t.planes.astype(np.int32), t.scalars,
                t.present)

    with tqdm(total=N, unit="img", desc=desc, disable=not progress, dynamic_ncols=True) as bar:
        for (start, stop), (a, m, planes, scalars, present) in _prefetch(load, ranges):
            i, c = tally_tile(torch.from_numpy(a).to(dev), torch.from_numpy(m).to(dev), thr,
                              torch.from_numpy(planes).to(dev),
                              torch.from_numpy(scalars).to(dev),
                              torch.from_numpy(present).to(dev), L)
            inter += i
            act += c
            bar.update(stop - start)
    return Cube(np.asarray(levels, dtype=np.float64), np.asarray(thresholds, np.float64),
                inter.cpu().numpy(), act.cpu().numpy(), labels.label_pixels_upto(N),
                labels.categories)
