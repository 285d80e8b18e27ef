"""What a dataset's files were when something was computed from them: one record per
image row, so that a changed image or label PNG makes what came from it stale.

The dataset fingerprint (``BrodenDataset.fingerprint``) hashes the CSV files only: it
names the dataset's description. The files themselves are covered by records, written
where their content is read anyway: the label-cache build records each row's label PNGs
(``label_files`` in the cache), extraction each row's image (``image_files`` in the run).

A record is 32 uint8: a 16-byte *stamp* (BLAKE2b of each file's dataset-relative name,
size and mtime in ns) then a 16-byte *digest* (BLAKE2b of the files' bytes, in order).
The check done before every scoring stats each file and compares stamps; only rows whose
stamp differs are hashed, and a row is stale only when its digest differs (a copy or a
``touch`` that keeps the bytes is no change; its stamp is refreshed). ``full=True``
hashes every file whatever its stamp (``scripts/verify.py --full``), which also catches
a file rewritten with its old size and mtime. A file that is gone is stale.

    image_files(ds, i) / label_files(ds, i)     the paths of row i's image / label PNGs
    records(ds, rows, files)                    (n, 32) uint8 records of rows
    find_changes(ds, stored, files, full)       Changes: stale rows, restamped records
    content_key(stored)                         hex digest of the digest column
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from pipeline.broden import BrodenDataset

RECORD_BYTES = 32
Files = Callable[[BrodenDataset, int], list[str]]


def image_files(ds: BrodenDataset, i: int) -> list[str]:
    """Row i's image file, relative to ``images/``."""
    return [ds.rows[i].image]


def label_files(ds: BrodenDataset, i: int) -> list[str]:
    """Row i's label PNGs in index.csv order (categories, then entries), relative to
    ``images/``; scalar labels are in index.csv, which the fingerprint covers."""
    r = ds.rows[i]
    return [e for cat in ds.all_categories for e in r.cells.get(cat, ()) if isinstance(e, str)]


def _root(ds: BrodenDataset) -> str:
    return f"{ds.directory / 'images'}{os.sep}"


def _stamp(root: str, names: Sequence[str]) -> bytes:
    """(plain string paths: pathlib's joins cost more than the stat itself)"""
    h = hashlib.blake2b(digest_size=16)
    for name in names:
        try:
            st = os.stat(root + name)
            h.update(f"{name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{name}\0missing\n".encode())
    return h.digest()


def _digest(root: str, names: Sequence[str]) -> bytes:
    h = hashlib.blake2b(digest_size=16)
    for name in names:
        h.update(f"{name}\0".encode())
        try:
            with open(root + name, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
        except OSError:
            h.update(b"\0missing")
    return h.digest()


def records(ds: BrodenDataset, rows: Sequence[int], files: Files) -> np.ndarray:
    """(len(rows), 32) uint8: stamp then digest of ``files(ds, i)`` for each row i."""
    root = _root(ds)
    out = np.zeros((len(rows), RECORD_BYTES), dtype=np.uint8)
    for j, i in enumerate(rows):
        names = files(ds, int(i))
        out[j] = np.frombuffer(_stamp(root, names) + _digest(root, names), dtype=np.uint8)
    return out


@dataclass
class Changes:
    """What differs between stored records and the files on disk now.

    stale: row numbers whose content changed (or whose file is gone), ascending;
    first: the files of the first stale row (for messages); restamped: {row: record}
    of rows whose stamp changed but whose content did not (store them to skip the
    hashing next time); checked: rows compared."""
    stale: list[int] = field(default_factory=list)
    first: list[str] = field(default_factory=list)
    restamped: dict[int, np.ndarray] = field(default_factory=dict)
    checked: int = 0

    def units(self, size: int) -> list[int]:
        """The units of ``size`` rows (run blocks, label-cache chunks) holding a stale row."""
        return sorted({i // size for i in self.stale})

    def restamp(self, arr) -> None:
        """Write the refreshed records of :attr:`restamped` into ``arr`` ((n, 32) zarr
        array of the records, opened writable)."""
        stored = np.asarray(arr[:])
        for i, rec in self.restamped.items():
            stored[i] = rec
        arr[:] = stored

    def describe(self, what: str) -> str:
        """'3 image file(s) changed since ... (first: images/x.jpg, row 7)'."""
        if not self.stale:
            return ""
        first = ", ".join(f"images/{n}" for n in self.first[:3]) or "(no files)"
        return (f"{len(self.stale)} of {self.checked} rows have {what} that changed "
                f"since (first: row {self.stale[0] + 1} of index.csv, {first})")


def find_changes(ds: BrodenDataset, stored: np.ndarray, files: Files,
                 full: bool = False, rows: Sequence[int] | None = None) -> Changes:
    """Compare ``stored`` (n, 32) records of ``rows`` (default [0, n)) with the files
    now: stat every file; hash the rows whose stamp differs (every row with ``full``)."""
    root = _root(ds)
    rows = range(stored.shape[0]) if rows is None else rows
    out = Changes(checked=int(stored.shape[0]))
    for j, i in enumerate(rows):
        names = files(ds, int(i))
        stamp = _stamp(root, names)
        if not full and stamp == stored[j, :16].tobytes():
            continue
        digest = _digest(root, names)
        if digest != stored[j, 16:].tobytes():
            out.stale.append(int(i))
            if len(out.stale) == 1:
                out.first = names
        elif stamp != stored[j, :16].tobytes():
            out.restamped[int(i)] = np.frombuffer(stamp + digest, dtype=np.uint8)
    return out


def content_key(stored: np.ndarray) -> str:
    """sha256 (hex) of the digest column of (n, 32) records: what derived data is keyed
    to (it changes when any recorded file's content does, not on a touch)."""
    return hashlib.sha256(np.ascontiguousarray(stored[:, 16:]).tobytes()).hexdigest()
