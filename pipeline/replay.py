"""Replay an activation cache and the label cache through the tally kernel: the IoU cube.

Never touches the network or a PNG. Tiles run over images (aligned with the
caches' chunks); within a tile the kernel sub-batches units, so memory stays
bounded whatever N is. On CPU, ``workers`` tiles are counted at once, each with one
torch thread: in worker processes (the default for large caches on disk: the kernel's
Python glue holds the GIL, so threads scale less well) or in threads (one worker, small
caches, in-process ``memory://`` stores, or ``processes=False``). At most
workers + 1 tiles are in flight. The replay is a reduction over tiles
(:mod:`pipeline.tally`): each tile's :class:`~pipeline.tally.Tally` (from a worker
process only its state, the int64 counts) is merged into one, whose result is the cube;
integer sums do not depend on the order tiles finish in. :mod:`pipeline.distributed`
runs the same reduction as a Dask graph.
"""
from __future__ import annotations

import functools
import multiprocessing
import os
import signal
import threading
from concurrent.futures import Executor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool, ProcessPoolExecutor
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from cache.cube import Cube
from cache.labels import LabelCache
from cache.store import store_location
from pipeline.devices import resolve_device
from pipeline.parallel import bounded_map, worker_start
from pipeline.tally import Tally


# Worker processes take about 3 s to start (importing torch); below this many activation
# values (about 5,000 images of 512 x 7 x 7) threads finish first (measured: 2,000 images of
# 256 x 7 x 7, 6.2 s in threads, 8.2 s in processes; 10,000 of 512 x 7 x 7, 51.8 s vs 46.3 s)
PROCESS_MIN_VALUES = 1 << 27

# Images per tile (the unit of work handed to a worker, merged and checkpointed) and per
# block (what a worker holds in memory at once). A tile's counts travel back to the parent
# as (V + 1) x K x L int64 (34 MiB at 512 units and 1,198 labels), so tiles of several
# blocks keep that transfer and the parent's merge small next to the counting (measured,
# 63,305 images of 512 x 7 x 7: tiles of 256 images spent ~40% of the CPU time outside
# the kernel).
TILE_IMAGES = 1024
BLOCK_IMAGES = 256
MIN_TILES = 16


def tile_size(act_chunk: int, label_chunk: int, target: int = 256) -> int:
    """Images per tile: a multiple of both caches' image chunks when one divides the
    other (each chunk decoded once), close to ``target``."""
    big, small = max(act_chunk, label_chunk), min(act_chunk, label_chunk)
    base = big if big % small == 0 else label_chunk
    return base * max(1, target // base)


def default_workers(device: torch.device) -> int:
    """Tiles counted at once: one per core on CPU (each with one torch thread), 1 on CUDA."""
    return 1 if device.type == "cuda" else max(1, min(os.cpu_count() or 1, 8))


def shareable(*arrays) -> bool:
    """Whether other processes can open these zarr arrays (local paths or URLs other
    than the in-process memory://)."""
    for a in arrays:
        where = store_location(a.store)
        if not isinstance(where, Path) and (not isinstance(where, str) or "://" not in where
                                            or where.startswith("memory://")):
            return False
    return True


def tile_ranges(acts, labels: LabelCache, tile_images: int | None = None
                ) -> list[tuple[int, int]]:
    """Image ranges [start, stop) of the replay's tiles over the N images of ``acts``
    (default: :func:`tile_size` near TILE_IMAGES, or N / MIN_TILES when that is smaller,
    but not under BLOCK_IMAGES); ValueError when the label cache has fewer."""
    N = acts.shape[0]
    if N > labels.num_images:
        raise ValueError(f"activation cache has {N} images but the label cache only "
                         f"{labels.num_images}: they come from different datasets")
    # at least MIN_TILES tiles while they hold a block or more, so workers share the work
    target = min(TILE_IMAGES, max(BLOCK_IMAGES, N // MIN_TILES))
    step = tile_images or tile_size(acts.chunks[0], labels.chunk_images, target)
    return [(s, min(s + step, N)) for s in range(0, N, step)]


def count_tile(acts, maxima, labels: LabelCache, thr: torch.Tensor, start: int, stop: int
               ) -> Tally:
    """The Tally of images [start, stop), counted on ``thr.device`` in blocks of about
    BLOCK_IMAGES images (what is in memory at once): the chunk step of the replay's
    reduction (threads, worker processes and Dask tasks all merge these)."""
    dev = thr.device
    total = Tally(thr, labels.num_labels, len(labels.categories), tuple(acts.shape[2:]),
                  tuple(labels.seg_size), device=dev)
    step = tile_size(acts.chunks[0], labels.chunk_images, BLOCK_IMAGES)
    for s in range(start, stop, step):
        e = min(s + step, stop)
        t = labels.read(s, e)
        # on CPU the label slots stay the cache's uint16 (read as they are by the
        # compiled pass; the array code converts them)
        planes = t.planes if dev.type == "cpu" else torch.from_numpy(
            t.planes.astype(np.int32)).to(dev)
        total.add(torch.from_numpy(acts[s:e]).to(dev), planes,
                  torch.from_numpy(t.scalars).to(dev), torch.from_numpy(t.present).to(dev),
                  torch.from_numpy(maxima[s:e]).to(dev))
    return total


def tally_cube(total: Tally, levels, labels: LabelCache) -> Cube:
    """The aggregate step: the Cube of a Tally that counted images [0, total.images)."""
    inter, act = (x.cpu().numpy() for x in total.result())
    return Cube(np.asarray(levels, dtype=np.float64), total.T.cpu().numpy(), inter, act,
                labels.label_pixels_upto(total.images), labels.categories)


class WorkerDied(ValueError):
    """A worker process of the replay died (killed, e.g. out of memory)."""


_WORKER: dict = {}      # in a worker process: the arrays and thresholds of its replay


def _worker_init(acts, maxima, labels: LabelCache, thresholds: np.ndarray) -> None:
    worker_start()
    signal.signal(signal.SIGINT, signal.SIG_IGN)       # Ctrl-C is the parent's to handle
    torch.set_num_threads(1)
    _WORKER.update(acts=acts, maxima=maxima, labels=labels,
                   thr=torch.as_tensor(thresholds, dtype=torch.float64))


def _worker_count(start: int, stop: int) -> Tally:
    w = _WORKER
    return count_tile(w["acts"], w["maxima"], w["labels"], w["thr"], start, stop)


def replay_cube(acts, maxima, labels: LabelCache, levels, thresholds: np.ndarray, *,
                device: str | torch.device = "auto", tile_images: int | None = None,
                workers: int | None = None, processes: bool | None = None,
                progress: bool = True, desc: str = "tally", checkpoint=None,
                log=print) -> Cube:
    """Count I, activation per category and |L_c| for every level.

    acts: (N, K, h, w) zarr array; maxima: (N, K) zarr array; thresholds (V, K) float64
    for ``levels`` (V,). N may be less than the label cache's images (a --limit run).
    ``workers``: tiles counted at once (default one per core on CPU, 1 on CUDA);
    ``processes``: count them in worker processes. Default: on CPU, for caches other
    processes can open, when ``workers`` > 1 was asked for, or by default for caches of at
    least PROCESS_MIN_VALUES values with two tiles per worker. ``checkpoint``
    (a :class:`cache.cube.TallyCheckpoint` or None): the counts of the tiles finished
    before are loaded from it and those tiles skipped; the counts so far are saved to it
    when it is due and on Ctrl-C or an error. Same Cube, bit for bit, whether resumed or not.
    """
    dev = resolve_device(device) if isinstance(device, str) else device
    ranges = tile_ranges(acts, labels, tile_images)
    thresholds = np.asarray(thresholds, dtype=np.float64)
    if workers is not None and workers < 1:
        raise ValueError(f"--workers must be at least 1, got {workers}")
    asked = workers is not None                     # --workers N: processes whatever the size
    workers = workers or default_workers(dev)
    if processes is None:
        big = (int(np.prod(acts.shape)) >= PROCESS_MIN_VALUES
               and len(ranges) >= 2 * workers)
        processes = (dev.type == "cpu" and workers > 1 and len(ranges) > 1 and (asked or big)
                     and shareable(acts, maxima, labels.planes))
    if processes and dev.type != "cpu":
        raise ValueError("worker processes count on CPU only; use one process per GPU")
    total = Tally(thresholds, labels.num_labels, len(labels.categories),
                  tuple(acts.shape[2:]), tuple(labels.seg_size), device=dev)
    total, done = _resume(total, checkpoint, ranges, desc, log)
    todo = [r for r in ranges if r[0] not in done]
    saved = len(done)                   # tiles in the newest checkpoint
    threads = torch.get_num_threads()
    pool, fn = _pool(acts, maxima, labels, thresholds, dev, workers, processes)
    if not processes and workers > 1:
        torch.set_num_threads(1)        # one torch thread per tile counted at once
    try:
        if processes:
            _start_workers(pool, workers)
        with tqdm(total=acts.shape[0], initial=total.images, unit="img", desc=desc,
                  disable=not progress, dynamic_ncols=True) as bar:
            for start, part in bounded_map(pool, _tagged(fn), todo, depth=workers + 1):
                total.merge(part)
                done.add(start)
                bar.update(part.images)
                if checkpoint is not None and checkpoint.due() and len(done) < len(ranges):
                    checkpoint.save(total.state_dict(), done)
                    saved = len(done)
    except BaseException as e:          # Ctrl-C or an error: stop the workers at once
        _terminate(pool)
        if checkpoint is not None and saved < len(done) < len(ranges):
            checkpoint.save(total.state_dict(), done)       # the finished tiles are kept
        if isinstance(e, BrokenProcessPool):
            raise WorkerDied(f"a tally worker process died ({e}). If it ran out of memory, "
                             f"score with fewer --workers or a smaller --tile-images; a script "
                             f"calling replay_cube needs `if __name__ == '__main__':` (worker "
                             f"processes import it); workers=1 counts in this process"
                             ) from None
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        torch.set_num_threads(threads)
    return tally_cube(total, levels, labels)


def _resume(total: Tally, checkpoint, ranges: list[tuple[int, int]], desc: str, log
            ) -> tuple[Tally, set[int]]:
    """(``total`` holding the counts ``checkpoint`` stored, the start images of the
    tiles they count); (``total``, empty) without a stored checkpoint."""
    saved = None if checkpoint is None else checkpoint.load()
    if saved is None:
        return total, set()
    counts, done = saved
    total = Tally.from_state({**total.state_dict(), **counts}, device=total.device)
    log(f"{desc}: resuming from a checkpoint: {len(done)} of {len(ranges)} tiles "
        f"({total.images} images) were counted before the interruption")
    return total, set(done)


def _tagged(fn: Callable[[int, int], Tally]) -> Callable[[int, int], tuple[int, Tally]]:
    """fn(start, stop) -> (start, its Tally): which tile a finished part counted."""
    return functools.partial(_start_and, fn)


def _start_and(fn, start: int, stop: int) -> tuple[int, Tally]:
    return start, fn(start, stop)


def _pool(acts, maxima, labels: LabelCache, thresholds: np.ndarray, dev: torch.device,
          workers: int, processes: bool) -> tuple[Executor, Callable[[int, int], Tally]]:
    """The pool that counts tiles and its task fn(start, stop) -> Tally: ``workers``
    worker processes (spawned; started by :func:`_start_workers`) or threads."""
    if processes:
        pool = ProcessPoolExecutor(
            workers, mp_context=multiprocessing.get_context("spawn"),
            initializer=_worker_init, initargs=(acts, maxima, labels, thresholds))
        return pool, _worker_count
    thr = torch.as_tensor(thresholds, device=dev)
    return ThreadPoolExecutor(workers), lambda s, e: count_tile(acts, maxima, labels, thr, s, e)


def _terminate(pool: Executor) -> None:
    """Kill a process pool's workers (their tiles are lost; nothing was stored yet)."""
    for proc in list((getattr(pool, "_processes", None) or {}).values()):
        proc.terminate()


def _start_workers(pool: ProcessPoolExecutor, workers: int) -> None:
    """Start the pool's processes with SIGINT blocked in this thread (children inherit the
    signal mask across exec, so a Ctrl-C in the terminal interrupts only this process,
    which stops the pool) and Python's SIGINT handler deferred: the kernel may deliver a
    Ctrl-C to any other thread of this process (zarr's, Dask's, tqdm's), and Python would
    then raise KeyboardInterrupt here, possibly between starting a child and handing it its
    start-up data (the child then dies with a traceback). A Ctrl-C meanwhile is raised
    once every process has been started."""
    main = threading.current_thread() is threading.main_thread()
    block = main and hasattr(signal, "pthread_sigmask")
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT}) if block else None
    caught: list[int] = []
    handler = signal.signal(signal.SIGINT, lambda sig, frame: caught.append(sig)) \
        if main else None
    try:
        for _ in range(workers):
            pool.submit(int)                            # each submit starts one process
    finally:
        if main:
            signal.signal(signal.SIGINT, handler)
        if block:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
    if caught and callable(handler):
        handler(signal.SIGINT, None)            # Python's default: KeyboardInterrupt
    elif caught and handler == signal.SIG_DFL:
        raise KeyboardInterrupt
