"""Bounded parallel map: submit work to an executor with a fixed number in flight.

Used wherever tiles or chunks go to worker threads or processes (label decoding, the
replay), so memory stays bounded by ``depth`` results whatever the number of items.
"""
from __future__ import annotations

from concurrent.futures import FIRST_COMPLETED, Executor, wait
from typing import Callable, Iterable, Iterator


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
