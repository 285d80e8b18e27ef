"""Write one Broden directory from one or more converter sources (base.py's interface).

:func:`convert` merges its sources the way NetDissect's builder (joinseg.py) merges
ADE20K, Pascal, OpenSurfaces and DTD: every image keeps its source's labels; a concept
is identified by its *name*, so the same name in the same category from two sources (or
two ids of one class list) is one label. An image file named by several sources is one
row with all their labels (e.g. COCO objects and a CSV of scene labels for the same
photos), under the first source's folder and split. It runs in two passes over the
images:

1. every image is checked (present, readable, of the size its masks say), resized
   bilinearly to ``image_size`` and written as JPEG; its labels are decoded, sampled to
   ``seg_size`` by nearest neighbour and counted: per category g and label l, images
   holding l in g (frequency), pixels of l in g (a pixel once; a scalar label covers
   the image) and images holding g. Counting happens at segmentation size, so the
   tables agree with what the label cache counts.
2. labels are numbered 1..L densely: ``numbering="frequency"`` (Broden's order: total
   frequency descending, then total coverage descending, then name) or ``"name"``
   (sorted by name: a label keeps its number when images are added); codes in
   c_<category>.csv run by frequency, coverage, then number within the category;
   categories are listed by their lowest label number (as joinseg.py does), ties by
   name. Label planes are written per category: a pixel carrying k labels of one
   category appears in planes 1..k (larger regions first), so planes hold every label.
   ``min_frequency`` / ``min_coverage`` first leave out rare concepts (and list them),
   as joinseg.py did for Broden (10 images, 0.5 images' worth of pixels).

Refused before anything is written under ``out`` (:class:`ConvertError`): a name given
to classes of two categories (ambiguous; ``shared_names=True`` makes it one label listed
in both categories, with its primary category by coverage as in Broden), a class
without a pixel at ``seg_size`` (all listed; ``drop_empty=True`` drops them), a
missing or unreadable image or mask. The directory is built beside ``out`` and renamed
into place when complete (one a killed conversion left, ``<out>.converting-<pid>``, is
removed by the next, listed).
"""
from __future__ import annotations

import os
import shutil
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image

from pipeline.broden_tables import MAX_LABEL, encode_plane, write_broden_csv, write_tables
from pipeline.converters.base import (ClassSpec, ConvertError, Labels, Source, SourceImage,
                                      check_name)

NUMBERINGS = ("frequency", "name")


@dataclass(frozen=True)
class ConvertOptions:
    """What every conversion shares. ``image_size``, ``seg_size``: (h, w) of the written
    images and label planes; ``numbering``: ``frequency`` or ``name`` (module
    docstring); ``drop_empty``: drop classes with no pixel instead of refusing;
    ``shared_names``: let one name label classes of several categories; ``overwrite``:
    replace an existing Broden directory at ``out``; ``min_frequency``,
    ``min_coverage``: leave out (and list) concepts on fewer images or covering less
    in all (in images' worth, summed over categories), as Broden did with 10 and 0.5."""
    image_size: tuple[int, int] = (224, 224)
    seg_size: tuple[int, int] = (112, 112)
    numbering: str = "frequency"
    drop_empty: bool = False
    shared_names: bool = False
    overwrite: bool = False
    min_frequency: int | None = None
    min_coverage: float | None = None

    def __post_init__(self):
        for what, hw in (("--image-size", self.image_size), ("--seg-size", self.seg_size)):
            if len(hw) != 2 or min(hw) < 1:
                raise ConvertError(f"{what} {hw}: needs a positive height and width")
        if self.numbering not in NUMBERINGS:
            raise ConvertError(f"--numbering {self.numbering!r}: choose one of {NUMBERINGS}")


@dataclass
class _Counts:
    """Per (category, name): images and pixels; per category: images holding it (of
    the labels kept)."""
    freq: dict[tuple[str, str], int]
    pix: dict[tuple[str, str], int]
    cat_images: dict[str, int]
    npx: int                                    # sh * sw

    def coverage(self, key: tuple[str, str]) -> float:
        """Images' worth of pixels: the sum over images of the fraction covered."""
        return self.pix[key] / self.npx


def convert(out: str | os.PathLike, sources: Sequence[Source],
            options: ConvertOptions = ConvertOptions(), progress: bool = True,
            log: Callable[[str], None] = print) -> Path:
    """Write the Broden directory ``out`` from ``sources`` and return its path
    (module docstring). ``out`` must not exist or be empty, unless ``options.overwrite``
    and it holds an index.csv (a dataset written before)."""
    out = Path(out)
    if not sources:
        raise ConvertError("no source given: name at least one source to convert")
    _check_out(out, options.overwrite)
    _check_sources(sources)
    declared = _declared_classes(sources, options.shared_names)
    for stale in sorted(out.parent.glob(f"{out.name}.converting-*")):
        log(f"removing {stale}: left by a conversion that did not finish")
        shutil.rmtree(stale, ignore_errors=True)
    work = out.with_name(f"{out.name}.converting-{os.getpid()}")
    try:
        rows = _write_images(work, sources, options, progress)
        counts = _count(sources, rows, options)
        keep = _non_empty(declared, counts, options.drop_empty, log)
        keep = _frequent(keep, counts, options.min_frequency, options.min_coverage, log)
        numbers = _number(keep, counts, options.numbering)
        if len(numbers) > MAX_LABEL:
            raise ConvertError(f"{len(numbers)} labels: a Broden PNG holds at most "
                               f"{MAX_LABEL} (R + 256*G)")
        categories = _category_order(numbers, counts)
        index_rows = _write_planes(work, sources, rows, numbers, categories, options,
                                   progress)
        counts.cat_images = {c: sum(1 for r in index_rows if r[6 + g])
                             for g, c in enumerate(categories)}
        _write_all_tables(work, numbers, categories, counts, options)
        write_broden_csv(work / "index.csv",
                         ["image", "split", "ih", "iw", "sh", "sw", *categories], index_rows)
        if out.exists() and any(out.iterdir()):
            shutil.rmtree(out)                  # a dataset, replaced (checked above)
        elif out.exists():
            out.rmdir()
        os.replace(work, out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return out


def _check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if not (overwrite and out.is_dir() and (out / "index.csv").is_file()):
            raise ConvertError(f"{out}: exists and is not empty; choose a new --out folder"
                               + ("" if not out.is_dir() or not (out / "index.csv").is_file()
                                  else " or pass --overwrite to replace that dataset"))


def _check_sources(sources: Sequence[Source]) -> None:
    seen: dict[str, int] = {}
    for k, s in enumerate(sources):
        check_name(s.name, f"source {k + 1}: name")
        if s.name in seen:
            raise ConvertError(f"sources {seen[s.name] + 1} and {k + 1} are both named "
                               f"{s.name!r}; give each source its own name (its images go "
                               f"to images/<name>/)")
        seen[s.name] = k


def _declared_classes(sources: Sequence[Source], shared_names: bool
                      ) -> dict[tuple[str, str], list[str]]:
    """{(category, name): where declared}; a name in several categories is refused
    unless ``shared_names``."""
    declared: dict[tuple[str, str], list[str]] = defaultdict(list)
    by_name: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for s in sources:
        for c in s.classes():
            check_name(c.category, f"{c.where}: category")
            declared[(c.category, c.name)].append(c.where)
            by_name[c.name][c.category].append(c.where)
    clashes = {n: cats for n, cats in by_name.items() if len(cats) > 1}
    if clashes and not shared_names:
        lines = [f"  {n!r}: " + "; ".join(f"{cat} ({wheres[0]})" for cat, wheres in
                                          sorted(cats.items()))
                 for n, cats in sorted(clashes.items())]
        raise ConvertError(
            f"{len(clashes)} class name(s) are given to classes of different categories, "
            f"which is ambiguous (one concept or two?):\n" + "\n".join(lines) +
            "\nrename one of each (e.g. a per-class category or a suffix such as '-s'), or "
            "pass --shared-names to make each one label listed in both categories (its "
            "primary category then goes by coverage, as in Broden)")
    return declared


@dataclass
class _Row:
    """An image written in pass 1: the first source naming it (its split is the row's),
    every source's item for it (one file named by several sources is one row), its
    path under images/ and size."""
    source: int
    items: list[SourceImage]
    image: str
    ih: int
    iw: int

    def load(self, sh: int, sw: int) -> Labels:
        """The labels of all its items together."""
        out = Labels()
        for item in self.items:
            labels = item.load(sh, sw)
            out.regions += labels.regions
            out.scalars += labels.scalars
        return out


def _bar(total: int | None, desc: str, progress: bool):
    if not progress:
        return None
    from tqdm.auto import tqdm
    return tqdm(total=total, unit="img", desc=desc)


def _write_images(work: Path, sources: Sequence[Source], options: ConvertOptions,
                  progress: bool) -> list[_Row]:
    """Pass 1, images: check, resize bilinearly and write every source image as JPEG
    (once per file, whatever the number of sources naming it)."""
    ih, iw = options.image_size
    rows: list[_Row] = []
    by_file: dict[Path, tuple[_Row, str]] = {}
    bar = _bar(None, "images", progress)
    for k, s in enumerate(sources):
        keys: dict[str, str] = {}
        for item in s.images():
            if item.key in keys:
                raise ConvertError(f"{item.where}: image {item.key!r} of source {s.name!r} "
                                   f"is also {keys[item.key]}; each image once per source")
            keys[item.key] = item.where
            resized = _resized_image(item, ih, iw)         # checks it in any case
            same = by_file.get(item.image.resolve())
            if same is not None:
                row, where = same
                if row.source == k or any(i.where == item.where for i in row.items):
                    raise ConvertError(f"{item.where}: names the file {item.image} again "
                                       f"({where}); each image once per source")
                row.items.append(item)
                by_file[item.image.resolve()] = (row, item.where)
                continue
            rel = f"{s.name}/{item.key}.jpg"
            dest = work / "images" / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            resized.save(dest, "JPEG", quality=95, subsampling=0)
            rows.append(_Row(k, [item], rel, ih, iw))
            by_file[item.image.resolve()] = (rows[-1], item.where)
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    if not rows:
        raise ConvertError("the sources hold no image; check their paths")
    return rows


def _resized_image(item, ih: int, iw: int) -> Image.Image:
    if not item.image.is_file():
        raise ConvertError(f"{item.where}: image {item.image} not found; add it or remove "
                           f"the image from the annotations")
    try:
        with Image.open(item.image) as im:
            im.load()
            if item.size is not None and (im.height, im.width) != tuple(item.size):
                raise ConvertError(
                    f"{item.where}: image {item.image} is {im.height} x {im.width} but its "
                    f"masks are {item.size[0]} x {item.size[1]}; the labels would not "
                    f"line up (use the image the annotations were made on)")
            return im.convert("RGB").resize((iw, ih), Image.BILINEAR)
    except (OSError, SyntaxError, ValueError) as e:
        if isinstance(e, ConvertError):
            raise
        raise ConvertError(f"{item.where}: image {item.image} is unreadable or truncated "
                           f"({e}); replace it or remove the image") from e


def _merged(labels: Labels, sh: int, sw: int) -> tuple[dict[tuple[str, str], np.ndarray],
                                                        set[tuple[str, str]]]:
    """Per (category, name): the union of its regions ((sh, sw) bool), and the set of
    scalar labels."""
    masks: dict[tuple[str, str], np.ndarray] = {}
    for spec, mask in labels.regions:
        if mask.shape != (sh, sw):
            raise AssertionError(f"{spec.where}: a region of {mask.shape}, not {(sh, sw)}")
        key = (spec.category, spec.name)
        masks[key] = masks[key] | mask if key in masks else mask.astype(bool)
    scalars = {(c.category, c.name) for c in labels.scalars}
    return {k: m for k, m in masks.items() if m.any()}, scalars


def _count(sources: Sequence[Source], rows: list[_Row], options: ConvertOptions) -> _Counts:
    """Pass 1, labels: frequency and pixels per (category, name)."""
    sh, sw = options.seg_size
    freq: dict[tuple[str, str], int] = defaultdict(int)
    pix: dict[tuple[str, str], int] = defaultdict(int)
    for r in rows:
        masks, scalars = _merged(r.load(sh, sw), sh, sw)
        for key in set(masks) | scalars:
            freq[key] += 1
            pix[key] += sh * sw if key in scalars else int(masks[key].sum())
    return _Counts(dict(freq), dict(pix), {}, sh * sw)


def _non_empty(declared: dict[tuple[str, str], list[str]], counts: _Counts,
               drop_empty: bool, log: Callable[[str], None]) -> list[tuple[str, str]]:
    """The declared (category, name) pairs with a pixel; the others refused (all named)
    or, with ``drop_empty``, dropped and listed."""
    empty = sorted(k for k in declared if counts.freq.get(k, 0) == 0)
    if empty:
        lines = "\n".join(f"  {name!r} ({cat}; {declared[(cat, name)][0]})"
                          for cat, name in empty)
        if not drop_empty:
            raise ConvertError(
                f"{len(empty)} class(es) have no pixel in any image at the segmentation "
                f"size:\n{lines}\nremove them from the class list, pass a larger "
                f"--seg-size if they are tiny, or pass --drop-empty to leave them out")
        log(f"dropped {len(empty)} class(es) without a pixel:\n{lines}")
    keep = [k for k in declared if counts.freq.get(k, 0) > 0]
    if not keep:
        raise ConvertError("no class has a pixel in any image: nothing to dissect against")
    return keep


def _frequent(keep: list[tuple[str, str]], counts: _Counts, min_frequency: int | None,
              min_coverage: float | None, log: Callable[[str], None]) -> list[tuple[str, str]]:
    """``keep`` less the concept names below ``min_frequency`` images or ``min_coverage``
    (images' worth of pixels), totals over categories as joinseg.py's assign_labels."""
    if min_frequency is None and min_coverage is None:
        return keep
    total_f: dict[str, int] = defaultdict(int)
    total_c: dict[str, float] = defaultdict(float)
    for key in keep:
        total_f[key[1]] += counts.freq[key]
        total_c[key[1]] += counts.coverage(key)
    rare = sorted(n for n in total_f if total_f[n] < (min_frequency or 0)
                  or total_c[n] < (min_coverage or 0.0))
    if rare:
        log(f"left out {len(rare)} concept(s) below --min-frequency {min_frequency} or "
            f"--min-coverage {min_coverage}: {', '.join(rare)}")
    left = [k for k in keep if k[1] not in rare]
    if not left:
        raise ConvertError(f"every concept is below --min-frequency {min_frequency} or "
                           f"--min-coverage {min_coverage}; lower them")
    return left


def _number(keep: list[tuple[str, str]], counts: _Counts, numbering: str) -> dict[str, int]:
    """Label number of each concept name, 1..L (module docstring)."""
    total_f: dict[str, int] = defaultdict(int)
    total_p: dict[str, int] = defaultdict(int)
    for key in keep:
        total_f[key[1]] += counts.freq[key]
        total_p[key[1]] += counts.pix[key]
    if numbering == "name":
        order = sorted(total_f)
    else:
        order = sorted(total_f, key=lambda n: (-total_f[n], -total_p[n], n))
    return {name: i for i, name in enumerate(order, start=1)}


def _category_order(numbers: dict[str, int], counts: _Counts) -> list[str]:
    """Categories by their lowest label number (joinseg.py's order), ties by name."""
    first: dict[str, int] = {}
    for (cat, name) in counts.freq:
        if name in numbers:
            first[cat] = min(first.get(cat, numbers[name]), numbers[name])
    return sorted(first, key=lambda c: (first[c], c))


def _planes(masks: dict[str, np.ndarray], numbers: dict[str, int], sh: int, sw: int
            ) -> list[np.ndarray]:
    """Label planes ((sh, sw) int32) of one category from {name: mask}: a pixel with k
    labels carries them in planes 1..k; larger regions first, ties by label number."""
    order = sorted(masks, key=lambda n: (-int(masks[n].sum()), numbers[n]))
    depth = np.zeros((sh, sw), dtype=np.int64)
    planes: list[np.ndarray] = []
    for name in order:
        mask = masks[name]
        for level in np.unique(depth[mask]):
            if level == len(planes):
                planes.append(np.zeros((sh, sw), dtype=np.int32))
            planes[level][mask & (depth == level)] = numbers[name]
        depth += mask
    return planes


def _write_planes(work: Path, sources: Sequence[Source], rows: list[_Row],
                  numbers: dict[str, int], categories: list[str], options: ConvertOptions,
                  progress: bool) -> list[list]:
    """Pass 2: every image's label PNGs and its index.csv row."""
    sh, sw = options.seg_size
    index_rows = []
    bar = _bar(len(rows), "labels", progress)
    for r in rows:
        masks, scalars = _merged(r.load(sh, sw), sh, sw)
        stem = r.image[:-len(".jpg")]
        cells = []
        for cat in categories:
            entries = []
            planes = _planes({n: m for (c, n), m in masks.items()
                              if c == cat and n in numbers}, numbers, sh, sw)
            for k, plane in enumerate(planes):
                rel = f"{stem}_{cat}.png" if len(planes) == 1 else f"{stem}_{cat}_{k + 1}.png"
                encode_plane(plane).save(work / "images" / rel, "PNG", compress_level=1)
                entries.append(rel)
            entries += [str(numbers[n]) for n in sorted({n for c, n in scalars if c == cat
                                                         and n in numbers}, key=numbers.get)]
            cells.append(";".join(entries))
        index_rows.append([r.image, sources[r.source].split, r.ih, r.iw, sh, sw, *cells])
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return index_rows


def _write_all_tables(work: Path, numbers: dict[str, int], categories: list[str],
                      counts: _Counts, options: ConvertOptions) -> None:
    L = len(numbers) + 1
    G = len(categories)
    freq = np.zeros((G, L), dtype=np.int64)
    pix = np.zeros((G, L), dtype=np.int64)
    members: list[list[int]] = [[] for _ in categories]
    for (cat, name), f in counts.freq.items():
        if name in numbers:
            g, n = categories.index(cat), numbers[name]
            freq[g, n], pix[g, n] = f, counts.pix[(cat, name)]
            members[g].append(n)
    for g in range(G):
        members[g].sort(key=lambda n: (-freq[g, n], -pix[g, n], n))
    cat_freq = np.array([counts.cat_images[c] for c in categories], dtype=np.int64)
    labels = sorted(((n, name) for name, n in numbers.items()))
    write_tables(work, categories, labels, members, freq, pix, cat_freq,
                 options.seg_size[0] * options.seg_size[1])


__all__ = ["ConvertOptions", "ConvertError", "convert", "ClassSpec", "NUMBERINGS"]
