"""Write files atomically: text, CSV and JSON through a temp file and ``os.replace``.

Each writer writes a uniquely named ``<name>...tmp`` file beside the target (UTF-8) and
renames it over the target once complete, so a crash or a full disk never leaves half a
file under the final name; a temp file whose writing failed is removed. Every report file
of a run (results document, CSVs, HTML page) and every CSV table of a generated dataset
goes through here; charts are written by matplotlib (:mod:`pipeline.reports.charts`).
"""
from __future__ import annotations

import csv
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterable, Iterator, Sequence

import numpy as np


@contextmanager
def _atomic(path: Path, newline: str | None = None) -> Iterator[IO[str]]:
    """A UTF-8 text file open for writing beside ``path``, renamed over ``path`` when the
    block ends without an error and removed when it ends with one."""
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", newline=newline, encoding="utf-8") as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` atomically; returns the path."""
    path = Path(path)
    with _atomic(path) as f:
        f.write(text)
    return path


def write_csv(path: str | os.PathLike, header: Sequence, rows: Iterable[Sequence],
              lineterminator: str = "\r\n") -> Path:
    """Write a CSV (``csv.writer``'s dialect: comma, ``\\r\\n`` line ends unless
    ``lineterminator`` says otherwise) atomically: the header, then the rows; returns the
    path."""
    path = Path(path)
    with _atomic(path, newline="") as f:
        w = csv.writer(f, lineterminator=lineterminator)
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
