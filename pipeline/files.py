"""Write files atomically: text, CSV and JSON through a temp file and ``os.replace``.

Each writer writes a uniquely named ``<name>.<random>.<pid>.tmp`` file beside the target
(UTF-8) and renames it over the target once complete, so a crash or a full disk never
leaves half a file under the final name; a temp file whose writing failed is removed (one
a kill -9 left is removed by the next writer of that directory,
``cache.store.remove_stale_temp``), and a failed write names the target. Every report file
of a run (results document, CSVs, HTML page, charts, exported arrays) and every CSV table
of a generated dataset goes through here.
"""
from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterable, Iterator, Sequence

import numpy as np

from cache.store import is_url, temp_affixes, writing


@contextmanager
def _atomic(path: Path, newline: str | None = None, binary: bool = False
            ) -> Iterator[IO]:
    """A UTF-8 text (or ``binary``) file open for writing beside ``path``, renamed over
    ``path`` when the block ends without an error and removed when it ends with one."""
    prefix, suffix = temp_affixes(path.name)
    with writing(path):
        fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=path.parent)
    try:
        with writing(path), (os.fdopen(fd, "wb") if binary else
                             os.fdopen(fd, "w", newline=newline, encoding="utf-8")) as f:
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


def write_bytes(path: str | os.PathLike, data: bytes) -> Path | str:
    """Write ``data`` atomically (charts, exported .npy arrays); returns the path. An
    fsspec URL (``--export-iou s3://...``) is written with one fsspec put: an object
    store replaces an object whole, so it needs no temp file."""
    if is_url(path):
        import fsspec
        with writing(path), fsspec.open(str(path), "wb") as f:
            f.write(data)
        return str(path)
    path = Path(path)
    with _atomic(path, binary=True) as f:
        f.write(data)
    return path


def write_npy(path: str | os.PathLike, array: np.ndarray) -> Path | str:
    """``np.save`` to ``path`` (a local path, atomically, or an fsspec URL) with
    ``.npy`` appended when missing, as np.save does; returns the path written."""
    path = str(path) if is_url(path) else Path(path)
    if not str(path).endswith(".npy"):
        path = f"{path}.npy" if isinstance(path, str) else path.with_name(path.name + ".npy")
    buf = io.BytesIO()
    np.save(buf, array)
    return write_bytes(path, buf.getvalue())


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
