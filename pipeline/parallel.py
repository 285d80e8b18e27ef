"""Worker processes: a bounded parallel map, and what every worker does when it starts.

``bounded_map`` submits work to an executor with a fixed number in flight, wherever tiles
or chunks go to worker threads or processes (label decoding, the replay), so memory stays
bounded by ``depth`` results whatever the number of items. ``worker_start`` is called first
in every worker process the project starts (label decoding, the replay, extraction's
image decoders, the synthetic dataset's renderers, the benchmark's stage processes): the
worker closes the run and label-cache locks it inherited, and dies with its parent
(``end_with_parent``, also used for the command steps of pipeline/commands.py), so a
killed command leaves neither a lock nor orphans behind.
"""
from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Executor, wait
from typing import Callable, Iterable, Iterator

_PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def worker_start(*_) -> None:
    """Close the inherited lock files and end with the parent (:func:`end_with_parent`).
    Takes and ignores any arguments, so it can be a DataLoader worker_init_fn."""
    from cache.store import close_inherited_locks    # here: pipeline.commands needs no zarr
    close_inherited_locks()
    parent = multiprocessing.parent_process()
    end_with_parent(parent.pid if parent is not None else os.getppid())


def end_with_parent(parent: int, poll_seconds: float = 0.5) -> None:
    """End this process when its parent, process ``parent``, dies: on Linux the kernel
    sends SIGTERM (:func:`kernel_ends_with_parent`); elsewhere a daemon thread polls
    ``os.getppid()`` (:func:`watch_parent`). A parent that died already, before this call
    (a kill during the worker's start), ends it at once."""
    if not kernel_ends_with_parent():
        watch_parent(parent, poll_seconds)
    if os.getppid() != parent:
        os._exit(1)


def kernel_ends_with_parent() -> bool:
    """Ask the kernel to send this process SIGTERM when its parent thread dies (Linux
    ``prctl(PR_SET_PDEATHSIG)``, kept across exec; safe between fork and exec, as a
    ``preexec_fn``); False where there is no such call."""
    if _LIBC is None:
        return False
    try:
        return _LIBC.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) == 0
    except AttributeError:
        return False


def watch_parent(parent: int, poll_seconds: float = 0.5) -> None:
    """The portable fallback: a daemon thread that ends this process (exit status 1) once
    its parent is no longer process ``parent`` (it died; the orphan was re-parented)."""
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_seconds)
        os._exit(1)
    threading.Thread(target=watch, name="watch-parent", daemon=True).start()


def bounded_map(pool: Executor, fn: Callable, items: Iterable[tuple], depth: int
                ) -> Iterator:
    """fn(*item) for item in items, at most ``depth`` in flight, yielded as they finish
    (not in order); the tasks not started yet are cancelled when the caller stops."""
    items = iter(items)
    pending = set()
    try:
        for it in items:
            pending.add(pool.submit(fn, *it))
            if len(pending) >= depth:
                break
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for f in done:
                yield f.result()
                nxt = next(items, None)
                if nxt is not None:
                    pending.add(pool.submit(fn, *nxt))
    finally:
        for f in pending:
            f.cancel()
