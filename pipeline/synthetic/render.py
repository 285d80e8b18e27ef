"""Render one synthetic image and its ground truth (:class:`SyntheticImage`).

Every image depends on ``(seed, index)`` alone: its source (:func:`image_source`), its
split (:func:`image_split`) and its geometry, so output is the same for any number of
workers. Label planes sample the image-resolution maps at the image pixel nearest to
each segmentation pixel's centre (:func:`sample_rows`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from pipeline.synthetic.canvas import Canvas
from pipeline.synthetic.catalogue import LABELS as _L
from pipeline.synthetic.catalogue import CATEGORIES, SCENE_NAMES, SOURCES, TEXTURE_NAMES
from pipeline.synthetic.colors import color_labels, downsample_rgb
from pipeline.synthetic.objects import render_objects
from pipeline.synthetic.scenes import SCENE_RENDERERS
from pipeline.synthetic.textures import render_materials, render_texture

# Source of each of 20 consecutive images (permuted per block of 20): 45% scenes,
# 15% objects, 25% materials, 15% textures. Every block holds every source.
_SOURCE_BLOCK = ("scenes",) * 9 + ("objects",) * 3 + ("materials",) * 5 + ("textures",) * 3
#: Expected fraction of ``val`` images (:func:`image_split`).
VAL_FRACTION = 0.1


def sample_rows(n_image: int, n_seg: int) -> np.ndarray:
    """Image pixel index sampled for each segmentation pixel (its centre): (n_seg,) int64."""
    return np.minimum(((np.arange(n_seg) + 0.5) * n_image / n_seg).astype(np.int64), n_image - 1)


@dataclass
class SyntheticImage:
    """Ground truth of one generated image.

    image:   (ih, iw, 3) uint8 RGB as rendered (the JPEG on disk is its lossy encoding)
    planes:  category -> list of (sh, sw) int32 label planes (global label numbers,
             0 = unlabelled), in the order of the PNGs of the index.csv cell
    scalars: category -> list of whole-image label numbers
    """
    index: int
    source: str
    split: str
    image: np.ndarray
    planes: dict[str, list[np.ndarray]]
    scalars: dict[str, list[int]]
    scene: str | None = None          # scene label name (scenes source)
    texture: str | None = None        # texture label name (textures source)

    @property
    def categories(self) -> tuple[str, ...]:
        """Categories carrying at least one label in this image, in category order."""
        return tuple(c for c in CATEGORIES
                     if self.scalars[c] or any((p != 0).any() for p in self.planes[c]))


def size_hw(size: int | Sequence[int]) -> tuple[int, int]:
    """``(h, w)`` of an image or segmentation size given as an int (square) or (h, w)."""
    if isinstance(size, (int, np.integer)):
        return int(size), int(size)
    h, w = size
    return int(h), int(w)


def image_source(index: int, seed: int) -> str:
    """Source folder of image ``index`` (each block of 20 images holds every source)."""
    block, pos = divmod(index, len(_SOURCE_BLOCK))
    perm = np.random.default_rng([seed, 1, block]).permutation(len(_SOURCE_BLOCK))
    return _SOURCE_BLOCK[perm[pos]]


def image_split(index: int, seed: int) -> str:
    """``train`` or ``val`` (about :data:`VAL_FRACTION` of the images), from (seed, index)."""
    return "val" if np.random.default_rng([seed, 2, index]).random() < VAL_FRACTION else "train"


def check_request(index: int, seed: int, image_size: int | Sequence[int],
                  seg_size: int | Sequence[int]) -> tuple[tuple[int, int], tuple[int, int]]:
    """``((ih, iw), (sh, sw))`` of a render request; ValueError for a negative index or
    seed, or sizes that are not image >= segmentation >= 8."""
    if index < 0 or seed < 0:
        raise ValueError(f"index and seed must be >= 0, got index={index}, seed={seed}")
    ih, iw = size_hw(image_size)
    sh, sw = size_hw(seg_size)
    if min(ih, iw, sh, sw) < 8 or sh > ih or sw > iw:
        raise ValueError(f"need image_size >= seg_size >= 8, got image {ih}x{iw}, "
                         f"segmentation {sh}x{sw}")
    return (ih, iw), (sh, sw)


def render_image(index: int, seed: int = 0, image_size: int | Sequence[int] = 224,
                 seg_size: int | Sequence[int] = 112) -> SyntheticImage:
    """Render image ``index`` of the dataset of ``seed`` with its ground truth.

    image_size / seg_size: int (square) or (h, w).
    """
    (ih, iw), (sh, sw) = check_request(index, seed, image_size, seg_size)
    source = image_source(index, seed)
    rng = np.random.default_rng([seed, 0, index])
    cv = Canvas(ih, iw, rng, np.random.default_rng([seed, 3, index]))
    scene = texture = None
    if source == "scenes":
        scene = SCENE_NAMES[int(rng.integers(len(SCENE_NAMES)))]
        SCENE_RENDERERS[scene](cv)
    elif source == "objects":
        render_objects(cv)
    elif source == "materials":
        render_materials(cv)
    else:
        texture = TEXTURE_NAMES[int(rng.integers(len(TEXTURE_NAMES)))]
        render_texture(cv, texture)
    image = cv.finish()

    ry, rx = sample_rows(ih, sh), sample_rows(iw, sw)
    sub = lambda a: np.ascontiguousarray(a[ry][:, rx])  # noqa: E731
    planes: dict[str, list[np.ndarray]] = {c: [] for c in CATEGORIES}
    scalars: dict[str, list[int]] = {c: [] for c in CATEGORIES}
    cats = SOURCES[source]
    planes["color"] = [color_labels(downsample_rgb(image, sh, sw))]
    if "object" in cats:
        planes["object"] = [sub(cv.obj)]
        planes["part"] = [p for p in (sub(cv.part1), sub(cv.part2)) if p.any()]
    if "material" in cats:
        planes["material"] = [sub(cv.mat)]
    for c in ("color", "object", "material"):
        planes[c] = [p for p in planes[c] if p.any()]
    if scene is not None:
        scalars["scene"] = [_L[f"{scene}-s"]]
        scene = f"{scene}-s"
    if texture is not None:
        scalars["texture"] = [_L[texture]]
    return SyntheticImage(index=index, source=source, split=image_split(index, seed),
                          image=image, planes=planes, scalars=scalars, scene=scene,
                          texture=texture)
