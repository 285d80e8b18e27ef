"""Worker processes: a bounded parallel map, and what every worker does when it starts.

``bounded_map`` submits work to an executor with a fixed number in flight, wherever tiles
or chunks go to worker threads or processes (label decoding, the replay), so memory stays
bounded by ``depth`` results whatever the number of items. ``worker_start`` is called first
in every worker process the project starts (label decoding, the replay, extraction's
image decoders): the worker closes the run and label-cache locks it inherited, and dies
with its parent, so a killed command leaves neither a lock nor orphans behind.
"""
from __future__ import annotations

import ctypes
import signal
import sys
from concurrent.futures import FIRST_COMPLETED, Executor, wait
from typing import Callable, Iterable, Iterator

from cache.store import close_inherited_locks

_PR_SET_PDEATHSIG = 1


def worker_start(*_) -> None:
    """Close the inherited lock files and ask to be sent SIGTERM when the parent dies
    (Linux ``prctl(PR_SET_PDEATHSIG)``; elsewhere a worker ends once its parent's pipes
    close). Takes and ignores any arguments, so it can be a DataLoader worker_init_fn."""
    close_inherited_locks()
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM))
        except (OSError, AttributeError):
            pass


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
