"""Write a synthetic Broden directory in the exact Broden on-disk format.

:func:`write_dataset` writes category.csv, label.csv, c_<category>.csv, index.csv and
the images and label PNGs of a profile (pipeline/synthetic/profiles.py: ``demo`` or
``broden``). Images are rendered by the profile's renderer in worker processes (chunks
of consecutive indices); the tables are written from the pixel counts the workers return.
"""
from __future__ import annotations

import multiprocessing
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from pipeline.broden_tables import (encode_plane, union_pixel_counts, write_broden_csv,
                                    write_tables)
from pipeline.parallel import worker_start
from pipeline.synthetic.catalogue import CATEGORIES
from pipeline.synthetic.profiles import Profile, get_profile
from pipeline.synthetic.render import size_hw


def _stem(index: int, num_images: int) -> str:
    return f"{index:0{max(6, len(str(num_images - 1)))}d}"


@dataclass
class _Record:
    index: int
    row: dict[str, str]
    counts: dict[str, tuple[np.ndarray, np.ndarray]]   # category -> (labels, pixel counts)


def _write_one(out: Path, index: int, num_images: int, seed: int, ih: int, iw: int,
               sh: int, sw: int, profile: str) -> _Record:
    g = get_profile(profile).render(index, seed, num_images, (ih, iw), (sh, sw))
    stem = f"{g.source}/{_stem(index, num_images)}"
    img_dir = out / "images"
    Image.fromarray(g.image).save(img_dir / f"{stem}.jpg", "JPEG", quality=95, subsampling=0)
    row = {"image": f"{stem}.jpg", "split": g.split, "ih": str(ih), "iw": str(iw),
           "sh": str(sh), "sw": str(sw)}
    counts = {}
    for cat in CATEGORIES:
        entries: list[str] = []
        for k, plane in enumerate(g.planes[cat]):
            name = f"{stem}_{cat}.png" if len(g.planes[cat]) == 1 and cat != "part" \
                else f"{stem}_{cat}_{k + 1}.png"
            encode_plane(plane).save(img_dir / name, "PNG", compress_level=1)
            entries.append(name)
        entries.extend(str(v) for v in g.scalars[cat])
        row[cat] = ";".join(entries)
        if g.planes[cat]:
            counts[cat] = union_pixel_counts(g.planes[cat])
        elif g.scalars[cat]:
            s = np.unique(np.array(g.scalars[cat], dtype=np.int64))
            counts[cat] = (s, np.full(s.shape, sh * sw, dtype=np.int64))
    return _Record(index, row, counts)


def _write_chunk(args) -> list[_Record]:
    out, lo, hi, num_images, seed, ih, iw, sh, sw, profile = args
    return [_write_one(Path(out), i, num_images, seed, ih, iw, sh, sw, profile)
            for i in range(lo, hi)]


def write_dataset(out_dir: str | os.PathLike, num_images: int = 2000,
                  image_size: int | Sequence[int] = 224, seg_size: int | Sequence[int] = 112,
                  seed: int = 0, workers: int | None = None, progress: bool = True,
                  profile: str = "demo") -> Path:
    """Write a complete synthetic Broden directory of ``profile`` (``demo`` or
    ``broden``, pipeline/synthetic/profiles.py) and return its path.

    Files (overwritten on rerun): category.csv, label.csv, c_<category>.csv, index.csv,
    images/<source>/<index>.jpg and <index>_<category>[_k].png. ``workers``: processes
    (None = all cores, 1 = in this process); the output does not depend on it.
    """
    if num_images < 1:
        raise ValueError(f"num_images must be >= 1, got {num_images}")
    prof = get_profile(profile)
    ih, iw = size_hw(image_size)
    sh, sw = size_hw(seg_size)
    prof.render(0, seed, num_images, (ih, iw), (sh, sw))     # validate arguments early
    out = Path(out_dir)
    for s in prof.sources:
        (out / "images" / s).mkdir(parents=True, exist_ok=True)
    workers = (os.cpu_count() or 1) if workers is None else max(1, int(workers))
    chunk = max(1, min(64, num_images // (workers * 8) or 1))
    jobs = [(str(out), lo, min(lo + chunk, num_images), num_images, seed, ih, iw, sh, sw,
             profile) for lo in range(0, num_images, chunk)]
    header = ["image", "split", "ih", "iw", "sh", "sw", *CATEGORIES]
    rows, freq, pix, cat_freq = _write_images(jobs, workers, num_images, header,
                                              len(prof.concepts) + 1, progress)
    _write_tables(out, prof, freq, pix, cat_freq, sh * sw)
    write_broden_csv(out / "index.csv", header, rows)
    return out


def _write_images(jobs: list[tuple], workers: int, num_images: int, header: Sequence[str],
                  L: int, progress: bool
                  ) -> tuple[list[list[str]], np.ndarray, np.ndarray, np.ndarray]:
    """Run the image-writing ``jobs`` (:func:`_write_chunk` arguments) in ``workers``
    processes and gather what the tables need.

    Returns the index.csv rows (``header`` columns) in image order, and over categories
    g and labels l: ``freq`` (G, L) int64 images with label l in category g, ``pix``
    (G, L) int64 labelled pixels (scalar labels: sh*sw per image) and ``cat_freq`` (G,)
    int64 images with category g (G = len(CATEGORIES), L = label numbers + 1).
    """
    G = len(CATEGORIES)
    freq = np.zeros((G, L), dtype=np.int64)       # images with label l in category g
    pix = np.zeros((G, L), dtype=np.int64)        # labelled pixels (scalar: sh*sw per image)
    cat_freq = np.zeros(G, dtype=np.int64)        # images with category g
    rows: list[list[str]] = []

    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=num_images, unit="img", desc="synthetic broden", smoothing=0.05)

    def consume(records: list[_Record]) -> None:
        for rec in records:
            rows.append([rec.row[h] for h in header])
            for g, cat in enumerate(CATEGORIES):
                if cat in rec.counts:
                    labels, counts = rec.counts[cat]
                    freq[g, labels] += 1
                    pix[g, labels] += counts
                    cat_freq[g] += 1
        if bar is not None:
            bar.update(len(records))

    try:
        if workers == 1 or len(jobs) == 1:
            for job in jobs:
                consume(_write_chunk(job))
        else:
            with multiprocessing.get_context("fork").Pool(workers, worker_start) as pool:
                for recs in pool.imap(_write_chunk, jobs):
                    consume(recs)
    finally:
        if bar is not None:
            bar.close()
    return rows, freq, pix, cat_freq


def _write_tables(out: Path, prof: Profile, freq: np.ndarray, pix: np.ndarray,
                  cat_freq: np.ndarray, npx: int) -> None:
    """Write c_<category>.csv, category.csv and label.csv of profile ``prof`` from the
    counts of :func:`_write_images` (pipeline/broden_tables.py); ``npx`` = sh * sw."""
    # Category maps: every label of its intended primary category, plus the other
    # categories: always (prof.list_all) or where it occurred in this dataset.
    members = [[c.number for c in prof.concepts if c.category == cat or (
        cat in c.also and (prof.list_all or freq[g, c.number] > 0))]
        for g, cat in enumerate(CATEGORIES)]
    write_tables(out, CATEGORIES, [(c.number, c.name) for c in prof.concepts], members,
                 freq, pix, cat_freq, npx)
