"""What every converter source shares: the source interface, class lists and categories,
nearest-neighbour sampling of label masks, and reading index-PNG masks.

A *source* (one of coco.py, masks.py, scalars.py) names its ``name`` (the folder its
images go to under ``images/``), its ``split`` and its declared classes
(:class:`ClassSpec`: name, category, where it was declared), and yields
:class:`SourceImage` items; each decodes to :class:`Labels` at the segmentation size
the writer asks for. The writer (writer.py) does the rest.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable, Iterator, Mapping, Protocol

import numpy as np
from PIL import Image

from pipeline.broden import INDEX_FIELDS, read_csv_table

#: A category or source name: it becomes a file name (c_<category>.csv) or a folder.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


class ConvertError(ValueError):
    """A source cannot be converted: a missing or unreadable file, a bad row, a class
    that is empty or ambiguous; the message names the file, row or class and the fix."""


@dataclass(frozen=True)
class ClassSpec:
    """A class a source declares: its concept ``name``, ``category``, and ``where``
    (e.g. ``classes.csv, row 3``) for messages."""
    name: str
    category: str
    where: str


@dataclass
class Labels:
    """Labels of one image at segmentation size (sh, sw).

    regions: [(ClassSpec, (sh, sw) bool mask)]; several entries may carry one class
    scalars: [ClassSpec] whole-image labels
    """
    regions: list[tuple[ClassSpec, np.ndarray]] = field(default_factory=list)
    scalars: list[ClassSpec] = field(default_factory=list)


@dataclass(frozen=True)
class SourceImage:
    """One image of a source: ``key`` (its relative output stem, posix, unique in the
    source), the ``image`` file, ``where`` it is described (for messages), the
    ``size`` (h, w) its masks are drawn at when the source knows it (the image must
    have it), and ``load(sh, sw) -> Labels``."""
    key: str
    image: Path
    where: str
    load: Callable[[int, int], Labels]
    size: tuple[int, int] | None = None


class Source(Protocol):
    name: str
    split: str

    def classes(self) -> list[ClassSpec]: ...

    def images(self) -> Iterator[SourceImage]: ...


def check_name(value: str, what: str) -> str:
    """``value`` if it is a valid category or source name, else a ConvertError naming
    ``what`` (e.g. ``--category``)."""
    if not NAME_PATTERN.match(value or "") or value in INDEX_FIELDS:
        raise ConvertError(
            f"{what} {value!r}: must be letters, digits, '_' or '-' (starting with a letter "
            f"or digit) and not one of index.csv's columns {list(INDEX_FIELDS)}; it names "
            f"a file (c_<category>.csv) or a folder")
    return value


def concept_name(value: str, where: str) -> str:
    """A class name stripped of surrounding blanks; ConvertError naming ``where`` when it
    is empty or holds a line break."""
    name = (value or "").strip()
    if not name or "\n" in name or "\r" in name:
        raise ConvertError(f"{where}: class name {value!r} is empty or holds a line "
                           f"break; give every class a one-line name")
    return name


def class_category(name: str, default: str, overrides: Mapping[str, str] | None) -> str:
    """The category of class ``name``: ``overrides[name]`` when given, else ``default``."""
    return (overrides or {}).get(name, default)


def read_class_categories(path: str | Path) -> dict[str, str]:
    """A ``name,category`` CSV (header row) as {class name: category}: per-class
    categories overriding a source's ``--category``."""
    path = Path(path)
    rows = read_table(path, ("name", "category"))
    out: dict[str, str] = {}
    for i, r in rows:
        name = concept_name(r["name"], f"{path}, row {i}")
        if name in out:
            raise ConvertError(f"{path}, row {i}: class {name!r} listed twice; keep one row")
        out[name] = check_name(r["category"].strip(), f"{path}, row {i}: category")
    return out


def read_table(path: Path, required: tuple[str, ...]) -> list[tuple[int, dict[str, str]]]:
    """(row number from 1, row) of a CSV whose header holds ``required`` (ConvertError
    naming the file or row otherwise: pipeline/broden.py's reader)."""
    return list(enumerate(read_csv_table(path, required, ConvertError,
                                         "a conversion source needs it"), start=1))


def nearest_indices(n_in: int, n_out: int) -> np.ndarray:
    """(n_out,) int64 source index of each output pixel under nearest-neighbour
    sampling at pixel centres: floor((j + 0.5) * n_in / n_out), in integers."""
    j = np.arange(n_out, dtype=np.int64)
    return ((2 * j + 1) * n_in) // (2 * n_out)


def resize_nearest(array: np.ndarray, sh: int, sw: int) -> np.ndarray:
    """(H, W) array sampled to (sh, sw) by :func:`nearest_indices` on both axes."""
    if array.shape[:2] == (sh, sw):
        return array
    return array[np.ix_(nearest_indices(array.shape[0], sh),
                        nearest_indices(array.shape[1], sw))]


# Index masks hold class ids as pixel values: 8-bit grey (L), palette indices (P, as
# VOC stores them: the index, not the colour) or 16/32-bit grey (I;16, I).
MASK_MODES = ("L", "P", "I;16", "I;16B", "I;16L", "I")


def read_index_mask(path: Path, where: str) -> np.ndarray:
    """(H, W) int64 class ids of an index-PNG mask; ConvertError naming the file when
    it is missing, unreadable, truncated or colour-coded (RGB)."""
    if not path.is_file():
        raise ConvertError(f"{path} ({where}): mask file not found")
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode not in MASK_MODES:
                raise ConvertError(
                    f"{path} ({where}): a mask of mode {im.mode!r}; index masks hold one "
                    f"class id per pixel (8-bit grey, palette or 16-bit grey PNG), not "
                    f"colours; convert colour-coded masks to class ids first")
            return np.asarray(im).astype(np.int64)
    except (OSError, SyntaxError, ValueError) as e:
        if isinstance(e, ConvertError):
            raise
        raise ConvertError(f"{path} ({where}): unreadable or truncated mask ({e}); "
                           f"replace the file or remove the image") from e


def relative_key(path: PurePosixPath | str, where: str, strip_suffix: bool = True) -> str:
    """An image's output stem: a relative posix path (without its suffix when
    ``strip_suffix``); ConvertError naming
    ``where`` when it is absolute, climbs out with ``..`` or holds ';' (index.csv's
    separator)."""
    p = PurePosixPath(str(path).replace("\\", "/"))
    if p.is_absolute() or ".." in p.parts or not p.parts or ";" in str(p) or \
            (len(str(p)) > 1 and str(p)[1] == ":"):
        raise ConvertError(f"{where}: image name {str(path)!r} must be a relative path "
                           f"inside the images folder without '..' or ';'")
    return str(p.with_suffix("")) if strip_suffix else str(p)
