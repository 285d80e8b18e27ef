"""Read a Broden-format dataset directory (real broden1_224 / broden1_227 or synthetic).

On-disk format (what this module reads, exactly as released by NetDissect):

- ``category.csv``: one row per category, column ``name`` (others such as
  ``first,last,count,frequency`` are accepted and ignored). Row order is the
  category order (ties in primary category go to the category listed later).
- ``label.csv``: ``number,name,category,frequency,coverage,syns``; only ``number``
  and ``name`` are required. Label numbers are global, 1-based.
- ``c_<category>.csv``: ``code,number,name,frequency,coverage``: the category's
  code map (category-local code -> global label number) and each label's
  coverage in that category, which decides the label's primary category.
- ``index.csv``: ``image,split,ih,iw,sh,sw`` then one column per category. A
  category cell holds ``;``-separated entries: a PNG path (a label plane: label
  number = R + 256*G in int32, 0 = unlabelled) or an integer (a scalar label
  covering the whole image; 0 means no label and is ignored). Empty = none.
- ``images/``: every path in index.csv is relative to this folder.

Errors name the file, the row and what to do (:class:`BrodenError`).
"""
from __future__ import annotations

import csv
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

INDEX_FIELDS = ("image", "ih", "iw", "sh", "sw")


class BrodenError(ValueError):
    """A Broden directory is missing something or holds a bad file/row."""


@dataclass(frozen=True)
class Concept:
    """One label: global ``number``, ``name`` and its ``category`` (primary)."""
    number: int
    name: str
    category: str


@dataclass(frozen=True)
class IndexRow:
    """One row of index.csv. ``cells[cat]`` lists PNG paths (str) and scalar labels (int)."""
    row: int            # 1-based data row number in index.csv (header is row 0)
    image: str
    split: str
    ih: int
    iw: int
    sh: int
    sw: int
    cells: dict[str, tuple[str | int, ...]]


@dataclass
class ImageLabels:
    """Decoded labels of one image.

    planes:  (P, sh, sw) int32, one plane per PNG entry (0 = unlabelled)
    plane_categories: (P,) category name of each plane
    scalars: (S,) int32 whole-image labels (never 0)
    scalar_categories: (S,) category name of each scalar label
    """
    planes: np.ndarray
    plane_categories: list[str]
    scalars: np.ndarray
    scalar_categories: list[str]

    def label_set(self) -> set[int]:
        """All label numbers present anywhere in the image."""
        present = set(int(v) for v in np.unique(self.planes) if v != 0)
        present.update(int(v) for v in self.scalars)
        return present


def read_csv_table(path: Path, required: Sequence[str], error: type[Exception] = BrodenError,
                   purpose: str = "a Broden directory needs it (check --dataset points at "
                                  "e.g. broden1_224/)") -> list[dict[str, str]]:
    """The rows of a UTF-8 CSV with a header holding the ``required`` columns; ``error``
    (naming the file, the row or the columns; ``purpose`` says why a missing file
    matters) for a missing file, a missing column or a row with the wrong number of
    fields."""
    if not path.is_file():
        raise error(f"{path}: file not found; {purpose}")
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            header = reader.fieldnames or []
            missing = [c for c in required if c not in header]
            if missing:
                raise error(f"{path}: missing column(s) {', '.join(missing)} "
                            f"in header {header}; the file must have {list(required)}")
            rows = []
            for i, r in enumerate(reader, start=1):
                if None in r or any(v is None for v in r.values()):
                    raise error(f"{path}, row {i}: expected {len(header)} fields, "
                                f"got a different number; fix or remove the row")
                rows.append(r)
            return rows
    except UnicodeDecodeError as e:
        raise error(f"{path}: not a UTF-8 CSV file ({e})") from e


def _int(path: Path, row: int, col: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise BrodenError(f"{path}, row {row}, column {col!r}: expected an integer, "
                          f"got {value!r}") from None


def _float(path: Path, row: int, col: str, value: str) -> float:
    try:
        return float(value) if value.strip() else 0.0
    except ValueError:
        raise BrodenError(f"{path}, row {row}, column {col!r}: expected a number, "
                          f"got {value!r}") from None


def decode_segmentation(rgb: np.ndarray) -> np.ndarray:
    """Label numbers of a segmentation image: (H, W, 3+) uint8 -> (H, W) int32 = R + 256*G."""
    return rgb[:, :, 0].astype(np.int32) + 256 * rgb[:, :, 1].astype(np.int32)


class BrodenDataset:
    """A Broden directory: concepts, category code maps and per-image labels.

    ``categories`` selects a subset (in category.csv order); primary categories
    are always decided over *all* categories, so a concept keeps its category
    whatever subset is selected; concepts of unselected categories are dropped
    from :attr:`concepts` and cells of unselected categories are not decoded.
    """

    def __init__(self, directory: str | os.PathLike, categories: Sequence[str] | None = None):
        self.directory = Path(directory)
        if not self.directory.is_dir():
            raise BrodenError(f"{self.directory}: not a directory; pass the Broden folder "
                              f"(the one holding index.csv) as --dataset")
        self.all_categories: list[str] = [
            r["name"] for r in read_csv_table(self.directory / "category.csv", ["name"])]
        if not self.all_categories:
            raise BrodenError(f"{self.directory / 'category.csv'}: lists no category")
        if categories is None:
            self.categories = list(self.all_categories)
        else:
            unknown = [c for c in categories if c not in self.all_categories]
            if unknown:
                raise BrodenError(f"unknown categor{'y' if len(unknown) == 1 else 'ies'} "
                                  f"{unknown}; {self.directory / 'category.csv'} has "
                                  f"{self.all_categories}")
            self.categories = [c for c in self.all_categories if c in categories]
        self._read_labels()
        self._read_category_maps()
        self._read_index()

    # ----------------------------------------------------------------- metadata
    def _read_labels(self) -> None:
        path = self.directory / "label.csv"
        rows = read_csv_table(path, ["number", "name"])
        names: dict[int, str] = {}
        for i, r in enumerate(rows, start=1):
            n = _int(path, i, "number", r["number"])
            if n < 0:
                raise BrodenError(f"{path}, row {i}: negative label number {n}")
            if n in names:
                raise BrodenError(f"{path}, row {i}: label number {n} listed twice")
            names[n] = r["name"]
        names.pop(0, None)  # label 0 means unlabelled, never a concept
        if not names:
            raise BrodenError(f"{path}: lists no label")
        self.num_labels = max(names) + 1          # L: label numbers are 0..L-1
        self.label_names = [""] * self.num_labels
        for n, name in names.items():
            self.label_names[n] = name
        self._known = np.zeros(self.num_labels, dtype=bool)
        self._known[list(names)] = True

    def _read_category_maps(self) -> None:
        L = self.num_labels
        G = len(self.all_categories)
        coverage = np.zeros((G, L), dtype=np.float64)
        in_cat = np.zeros((G, L), dtype=bool)
        self.category_codes: dict[str, np.ndarray] = {}
        for g, cat in enumerate(self.all_categories):
            path = self.directory / f"c_{cat}.csv"
            rows = read_csv_table(path, ["code", "number"])
            codes = {}
            for i, r in enumerate(rows, start=1):
                code = _int(path, i, "code", r["code"])
                num = _int(path, i, "number", r["number"])
                if num != 0 and (num >= L or not self._known[num]):
                    raise BrodenError(f"{path}, row {i}: label number {num} is not in "
                                      f"label.csv; regenerate the category file")
                codes[code] = num
                if num != 0:
                    in_cat[g, num] = True
                    coverage[g, num] = _float(path, i, "coverage", r.get("coverage", "") or "")
            cmap = np.zeros(max(codes, default=0) + 1, dtype=np.int32)
            for code, num in codes.items():
                cmap[code] = num
            self.category_codes[cat] = cmap
        # Primary category: largest coverage; ties -> category listed later
        # (max over (coverage, category index) as NetDissect does).
        primary = np.full(L, -1, dtype=np.int64)
        for n in range(1, L):
            cands = [(coverage[g, n], g) for g in range(G) if in_cat[g, n]]
            if cands:
                primary[n] = max(cands)[1]
        self.primary_category = primary   # (L,) index into all_categories, -1 = none
        sel = {self.all_categories.index(c) for c in self.categories}
        self.concepts: list[Concept] = [
            Concept(n, self.label_names[n], self.all_categories[primary[n]])
            for n in range(1, L) if primary[n] in sel]

    def _read_index(self) -> None:
        path = self.directory / "index.csv"
        rows = read_csv_table(path, list(INDEX_FIELDS) + self.all_categories)
        self.rows: list[IndexRow] = []
        for i, r in enumerate(rows, start=1):
            cells: dict[str, tuple[str | int, ...]] = {}
            for cat in self.categories:
                entries: list[str | int] = []
                for tok in r[cat].split(";"):
                    tok = tok.strip()
                    if not tok:
                        continue
                    if tok.lstrip("-").isdigit():
                        v = int(tok)
                        if v == 0:
                            continue  # real Broden uses scalar 0 for "no label"
                        if v < 0 or v >= self.num_labels or not self._known[v]:
                            raise BrodenError(
                                f"{path}, row {i}, column {cat!r}: scalar label {v} is not "
                                f"in label.csv; fix the row or label.csv")
                        entries.append(v)
                    else:
                        entries.append(_inside(path, i, cat, tok))
                cells[cat] = tuple(entries)
            sizes = {k: _int(path, i, k, r[k]) for k in ("ih", "iw", "sh", "sw")}
            if min(sizes.values()) <= 0:
                raise BrodenError(f"{path}, row {i}: image and segmentation sizes must be "
                                  f"positive, got {sizes}")
            self.rows.append(IndexRow(row=i, image=_inside(path, i, "image", r["image"]), split=r.get("split", "") or "",
                                      cells=cells, **sizes))

    # ---------------------------------------------------------------- accessors
    def __len__(self) -> int:
        return len(self.rows)

    @property
    def category_index(self) -> dict[str, int]:
        """Category name -> index in :attr:`all_categories`."""
        return {c: g for g, c in enumerate(self.all_categories)}

    def concept_categories(self) -> np.ndarray:
        """(L,) int64 primary category index per label number (-1: none or not selected)."""
        sel = np.array([c in self.categories for c in self.all_categories])
        out = self.primary_category.copy()
        out[(out >= 0) & ~sel[np.maximum(out, 0)]] = -1
        return out

    def image_path(self, i: int) -> Path:
        return self.directory / "images" / self.rows[i].image

    def segmentation_size(self) -> tuple[int, int]:
        """The (sh, sw) shared by every row; an error names the first row that differs."""
        return self._uniform("sh", "sw")

    def image_size(self) -> tuple[int, int]:
        """The (ih, iw) shared by every row; an error names the first row that differs."""
        return self._uniform("ih", "iw")

    def _uniform(self, a: str, b: str) -> tuple[int, int]:
        if not self.rows:
            raise BrodenError(f"{self.directory / 'index.csv'}: has no image rows")
        first = (getattr(self.rows[0], a), getattr(self.rows[0], b))
        for r in self.rows:
            if (getattr(r, a), getattr(r, b)) != first:
                raise BrodenError(
                    f"{self.directory / 'index.csv'}, row {r.row}: {a} x {b} = "
                    f"{getattr(r, a)} x {getattr(r, b)} differs from row 1's {first[0]} x "
                    f"{first[1]}; this tool needs one size per dataset")
        return first

    def load_image(self, i: int) -> np.ndarray:
        """(ih, iw, 3) uint8 RGB pixels of image ``i`` (0-based)."""
        r = self.rows[i]
        path = self.image_path(i)
        img = _open_image(path, f"{self.directory / 'index.csv'}, row {r.row}", "RGB")
        if img.shape[:2] != (r.ih, r.iw):
            raise BrodenError(f"{path} (index.csv row {r.row}): image is {img.shape[0]} x "
                              f"{img.shape[1]} but the row says ih x iw = {r.ih} x {r.iw}")
        return img

    def load_labels(self, i: int) -> ImageLabels:
        """Decode the selected categories' cells of image ``i`` (0-based)."""
        r = self.rows[i]
        where = f"{self.directory / 'index.csv'}, row {r.row}"
        planes, pcats, scalars, scats = [], [], [], []
        for cat in self.categories:
            for e in r.cells[cat]:
                if isinstance(e, int):
                    scalars.append(e)
                    scats.append(cat)
                    continue
                path = self.directory / "images" / e
                rgb = _open_image(path, f"{where}, column {cat!r}", None)
                if rgb.ndim != 3 or rgb.shape[2] < 3:
                    raise BrodenError(f"{path} ({where}, column {cat!r}): a segmentation "
                                      f"PNG must be RGB(A); got shape {rgb.shape}")
                if rgb.shape[:2] != (r.sh, r.sw):
                    raise BrodenError(f"{path} ({where}, column {cat!r}): segmentation is "
                                      f"{rgb.shape[0]} x {rgb.shape[1]} but the row says "
                                      f"sh x sw = {r.sh} x {r.sw}")
                seg = decode_segmentation(rgb)
                bad = np.unique(seg[(seg >= self.num_labels) | ~self._known[
                    np.minimum(seg, self.num_labels - 1)] & (seg != 0)])
                if bad.size:
                    raise BrodenError(f"{path} ({where}, column {cat!r}): label number(s) "
                                      f"{bad[:5].tolist()} not in label.csv")
                planes.append(seg)
                pcats.append(cat)
        p = (np.stack(planes) if planes
             else np.zeros((0, r.sh, r.sw), dtype=np.int32))
        return ImageLabels(p, pcats, np.array(scalars, dtype=np.int32), scats)

    def categories_present(self, labels: ImageLabels) -> np.ndarray:
        """(G,) bool over :attr:`all_categories`: does the image hold a label whose
        primary category is g (any plane or scalar)."""
        present = np.zeros(len(self.all_categories), dtype=bool)
        nums = np.array(sorted(labels.label_set()), dtype=np.int64)
        if nums.size:
            cats = self.primary_category[nums]
            present[cats[cats >= 0]] = True
        return present

    def fingerprint(self) -> str:
        """sha256 over the CSV files (index, category, label, c_*): changes when the
        dataset's description changes. Image files are not hashed."""
        h = hashlib.sha256()
        names = ["index.csv", "category.csv", "label.csv"] + [
            f"c_{c}.csv" for c in self.all_categories]
        for name in names:
            h.update(name.encode())
            with open(self.directory / name, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
        return h.hexdigest()


def _inside(path: Path, row: int, col: str, name: str) -> str:
    """``name`` if it is a relative path inside ``images/`` (no absolute path, drive or
    ``..`` part), else a BrodenError: a dataset row never names a file outside the
    dataset folder."""
    parts = name.replace("\\", "/").split("/")
    if name.startswith(("/", "\\")) or ".." in parts or (len(name) > 1 and name[1] == ":"):
        raise BrodenError(f"{path}, row {row}, column {col!r}: {name!r} names a file outside "
                          f"the dataset's images/ folder; entries must be relative paths "
                          f"inside it")
    return name


# Broden's segmentation PNGs are 8-bit RGB; RGBA and palette (P) images carry the same
# 8-bit colours exactly and are read too. Grayscale (L, LA), 16-bit (I;16, I) and the
# other modes hold no R and G channels: their "label numbers" would be garbage.
SEGMENTATION_MODES = ("RGB", "RGBA", "P")


def _open_image(path: Path, where: str, mode: str | None) -> np.ndarray:
    """Decode an image fully (converted to ``mode``; None: a segmentation PNG, in one
    of SEGMENTATION_MODES, as RGB(A)); any failure becomes a BrodenError naming file
    and row."""
    if not path.is_file():
        raise BrodenError(f"{path} ({where}): file not found")
    try:
        with Image.open(path) as im:
            im.load()
            if mode is None and im.mode not in SEGMENTATION_MODES:
                raise BrodenError(
                    f"{path} ({where}): a segmentation image of mode {im.mode!r}; Broden "
                    f"segmentation PNGs are 8-bit RGB: label = R + 256*G (RGBA and "
                    f"palette images are read as RGB too); re-save it as 8-bit RGB")
            if mode is not None:
                im = im.convert(mode)
            elif im.mode == "P":
                im = im.convert("RGB")
            return np.asarray(im)
    except (OSError, SyntaxError, ValueError) as e:
        raise BrodenError(f"{path} ({where}): unreadable or truncated image ({e}); "
                          f"replace the file or remove the row") from e
