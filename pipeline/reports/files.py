"""Write report files atomically: text, CSV and JSON through a temp file and ``os.replace``.

Each writer writes ``<path>.tmp`` beside the target (``x.csv`` -> ``x.csv.tmp``) and renames
it over the target once complete, so a crash or a full disk never leaves half a file under
the final name (the temp file is left behind when writing fails). Every report file of a run
(results document, CSVs, HTML page) goes through here; charts are written by matplotlib
(:mod:`pipeline.reports.charts`).
"""
from __future__ import annotations

import csv
import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator, Sequence

import numpy as np


@contextmanager
def _atomic(path: Path, newline: str | None = None) -> Iterator[IO[str]]:
    """A text file open for writing at ``<path>.tmp``, renamed over ``path`` when the block
    ends without an error."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", newline=newline) as f:
        yield f
    os.replace(tmp, path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` atomically; returns the path."""
    path = Path(path)
    with _atomic(path) as f:
        f.write(text)
    return path


def write_csv(path: str | os.PathLike, header: Sequence, rows: Sequence[Sequence]) -> Path:
    """Write a CSV (``csv.writer``'s dialect: comma, ``\\r\\n`` line ends) atomically: the
    header, then the rows; returns the path."""
    path = Path(path)
    with _atomic(path, newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def write_json(path: str | os.PathLike, obj: dict) -> Path:
    """Write ``obj`` as JSON (indent 2, a final newline) atomically, numpy scalars and
    arrays and paths converted to plain JSON; returns the path."""
    path = Path(path)
    with _atomic(path) as f:
        json.dump(obj, f, indent=2, default=_plain)
        f.write("\n")
    return path


def _plain(o):
    """json.dump's ``default``: numpy scalars and arrays, and paths, as plain JSON."""
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")
