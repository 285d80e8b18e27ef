"""Synthetic Broden: procedurally rendered images in the exact Broden on-disk format.

Real Broden (63,305 images, 1,197 concepts) cannot be downloaded everywhere, so the
demo, tests and benchmarks use this generator. Like Broden, images come from
*sources* that label different categories (:data:`SOURCES`):

- ``scenes``    (like ADE20K): composed scenes; object, part (two planes: parts and
  parts of parts), material, scene (scalar) and color.
- ``objects``   (like Pascal-Part): one or two large objects on clutter; object, part, color.
- ``materials`` (like OpenSurfaces): textured material regions; material, color.
- ``textures``  (like DTD): one whole-image pattern; texture (scalar), color.

The catalogue (:data:`CONCEPTS`) is fixed whatever the dataset size: label numbers
1..L are grouped by intended primary category in category.csv order. Some labels
occur in two categories (:data:`MULTI_CATEGORY`): ``grass``, ``water`` and ``sand``
are objects in scene images and materials everywhere (the material plane always
carries them where the object plane does, so material wins on coverage), ``door`` is
an object (the room door, never occluded) and a part of cabinets (always smaller
than the room door in the same image, so object wins). ``c_<category>.csv`` lists
every label of its intended primary category (frequency 0 if absent) and a label of
another category only where it occurs, so primary categories are as intended for any
dataset size.

Geometry is continuous (units of image height, y down); masks are rendered at image
resolution and label planes sample them at the image pixel nearest to each
segmentation pixel's centre. Colour labels name the colour of the rendered image
box-downsampled to segmentation resolution (nearest prototype in CIELAB).

Every image depends on ``(seed, index)`` alone, so output is byte-identical for any
number of workers.
"""
from __future__ import annotations

import csv
import functools
import math
import multiprocessing
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
from PIL import Image

# ----------------------------------------------------------------------------- catalogue

CATEGORIES: tuple[str, ...] = ("color", "object", "part", "material", "scene", "texture")

COLOR_NAMES = ("black", "blue", "brown", "grey", "green", "orange", "pink", "purple",
               "red", "white", "yellow")
OBJECT_NAMES = ("sky", "road", "house", "car", "person", "tree", "bench", "umbrella",
                "mountain", "wall", "floor", "cabinet", "table", "door", "bed", "lamp",
                "sofa", "painting")
PART_NAMES = ("roof", "window", "chimney", "wheel", "headlight", "head", "hair", "torso",
              "arm", "leg", "trunk", "foliage", "drawer", "tabletop", "headboard", "pillow",
              "cushion", "lampshade")
MATERIAL_NAMES = ("asphalt", "brick", "carpet", "fabric", "glass", "grass", "metal",
                  "painted", "rock", "sand", "skin", "snow", "tile", "water", "wood")
SCENE_NAMES = ("street", "park", "beach", "kitchen", "bedroom", "living_room", "forest",
               "highway", "mountain", "parking_lot")
TEXTURE_NAMES = ("banded", "blotchy", "chequered", "crosshatched", "dotted", "grid",
                 "honeycombed", "spiralled", "zigzagged")

#: Labels that also occur in a second category (name -> other categories).
MULTI_CATEGORY: dict[str, tuple[str, ...]] = {
    "grass": ("object",), "water": ("object",), "sand": ("object",), "door": ("part",)}


@dataclass(frozen=True)
class SyntheticConcept:
    """A catalogue label: global ``number``, ``name`` as in label.csv, intended
    primary ``category`` and the ``also`` categories it can occur in as well."""
    number: int
    name: str
    category: str
    also: tuple[str, ...] = ()

    @property
    def categories(self) -> tuple[str, ...]:
        """All categories the label can occur in, in category.csv order."""
        return tuple(c for c in CATEGORIES if c == self.category or c in self.also)


def _build_catalogue() -> tuple[SyntheticConcept, ...]:
    groups = [("color", [f"{n}-c" for n in COLOR_NAMES]),
              ("object", list(OBJECT_NAMES)),
              ("part", list(PART_NAMES)),
              ("material", list(MATERIAL_NAMES)),
              ("scene", [f"{n}-s" for n in SCENE_NAMES]),
              ("texture", list(TEXTURE_NAMES))]
    out, number = [], 1
    for cat, names in groups:
        for name in names:
            out.append(SyntheticConcept(number, name, cat, MULTI_CATEGORY.get(name, ())))
            number += 1
    assert len({c.name for c in out}) == len(out), "label names must be unique"
    return tuple(out)


#: Every label, in label-number order (number = position + 1).
CONCEPTS: tuple[SyntheticConcept, ...] = _build_catalogue()
#: Label name -> global label number.
LABELS: dict[str, int] = {c.name: c.number for c in CONCEPTS}
#: Scene label names (``street-s`` ...), in label-number order.
SCENES: tuple[str, ...] = tuple(f"{n}-s" for n in SCENE_NAMES)
#: Texture label names, in label-number order.
TEXTURES: tuple[str, ...] = TEXTURE_NAMES
#: Colour label names (``black-c`` ...), in label-number order.
COLORS: tuple[str, ...] = tuple(f"{n}-c" for n in COLOR_NAMES)
#: Source folder -> the categories its images can carry.
SOURCES: dict[str, tuple[str, ...]] = {
    "scenes": ("color", "object", "part", "material", "scene"),
    "objects": ("color", "object", "part"),
    "materials": ("color", "material"),
    "textures": ("color", "texture"),
}
# Source of each of 20 consecutive images (permuted per block of 20): 45% scenes,
# 15% objects, 25% materials, 15% textures. Every block holds every source.
_SOURCE_BLOCK = ("scenes",) * 9 + ("objects",) * 3 + ("materials",) * 5 + ("textures",) * 3
VAL_FRACTION = 0.1

_L = LABELS

# ----------------------------------------------------------------------------- colours

# Paint colours: name -> RGB variants (objects pick a name, a variant and a jitter).
_PAINT = {
    "black": [(28, 28, 30), (50, 47, 45)],
    "blue": [(35, 65, 175), (65, 115, 210), (30, 45, 115)],
    "brown": [(112, 70, 36), (140, 96, 56), (86, 56, 32)],
    "grey": [(128, 128, 128), (100, 101, 106), (165, 165, 160)],
    "green": [(45, 135, 48), (92, 160, 62), (32, 92, 38)],
    "orange": [(236, 132, 32), (214, 104, 36)],
    "pink": [(236, 152, 182), (214, 118, 158)],
    "purple": [(116, 48, 136), (152, 98, 182)],
    "red": [(192, 32, 32), (152, 26, 28)],
    "white": [(240, 240, 238), (224, 228, 232)],
    "yellow": [(236, 210, 48), (226, 196, 92)],
}

# Colour-naming prototypes (sRGB). Like the colour-naming model behind Broden's colour
# labels (van de Weijer et al., a table over 32 x 32 x 32 RGB bins), names are looked up
# per 5-bit RGB bin: a bin gets the name of the prototype nearest to its centre in
# CIELAB, or 0 (no clear colour) when the nearest prototypes of the two closest names
# are less than _COLOR_MARGIN (Delta E 1976) apart.
_PROTOTYPES = {
    "black": [(0, 0, 0), (38, 38, 40)],
    "blue": [(25, 45, 180), (60, 110, 220), (130, 175, 235), (30, 55, 110), (60, 190, 235)],
    "brown": [(110, 66, 32), (150, 102, 62), (80, 52, 30)],
    "grey": [(128, 128, 128), (92, 92, 94), (172, 172, 170)],
    "green": [(35, 140, 45), (100, 170, 60), (30, 82, 32), (150, 200, 105), (30, 150, 120)],
    "orange": [(240, 140, 30), (220, 108, 40)],
    "pink": [(240, 160, 190), (220, 120, 160)],
    "purple": [(120, 42, 140), (160, 102, 190)],
    "red": [(200, 30, 30), (150, 22, 24)],
    "white": [(246, 246, 246), (222, 222, 226)],
    "yellow": [(240, 220, 40), (232, 206, 104)],
}
_COLOR_MARGIN = 2.0
_COLOR_BITS = 5

_LIN_LUT = np.where(np.arange(256) / 255.0 <= 0.04045, np.arange(256) / 255.0 / 12.92,
                    ((np.arange(256) / 255.0 + 0.055) / 1.055) ** 2.4)
_RGB2XYZ = np.array([[0.4124564, 0.3575761, 0.1804375],
                     [0.2126729, 0.7151522, 0.0721750],
                     [0.0193339, 0.1191920, 0.9503041]]) / np.array([[0.95047], [1.0], [1.08883]])


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """CIELAB (D65) of sRGB colours: (..., 3) float in [0, 255] -> (..., 3) float64."""
    c = np.asarray(rgb, dtype=np.float64) / 255.0
    lin = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    xyz = lin @ _RGB2XYZ.T
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16.0 / 116.0)
    return np.stack([116.0 * f[..., 1] - 16.0, 500.0 * (f[..., 0] - f[..., 1]),
                     200.0 * (f[..., 1] - f[..., 2])], axis=-1)


def name_colors(rgb: np.ndarray) -> np.ndarray:
    """Exact nearest-prototype colour naming.

    rgb: (n, 3) float sRGB in [0, 255]; returns (n,) int32 label numbers (0 = unclear).
    """
    lab = srgb_to_lab(rgb)
    names = [n for n in COLOR_NAMES for _ in _PROTOTYPES[n]]
    protos = srgb_to_lab(np.array([p for n in COLOR_NAMES for p in _PROTOTYPES[n]], float))
    d = np.sqrt(((lab[:, None, :] - protos[None, :, :]) ** 2).sum(-1))     # (n, P)
    dn = np.stack([d[:, [i for i, m in enumerate(names) if m == n]].min(1)
                   for n in COLOR_NAMES], axis=1)                           # (n, 11)
    order = np.argsort(dn, axis=1, kind="stable")
    rows = np.arange(len(dn))
    out = np.array([_L[f"{n}-c"] for n in COLOR_NAMES], dtype=np.int32)[order[:, 0]]
    out[dn[rows, order[:, 1]] - dn[rows, order[:, 0]] < _COLOR_MARGIN] = 0
    return out


@functools.lru_cache(maxsize=1)
def _color_lut() -> np.ndarray:
    """(2**(3*_COLOR_BITS),) int32 colour label of each RGB bin (named at its centre)."""
    q = 1 << _COLOR_BITS
    step = 256 / q
    centre = (np.arange(q) + 0.5) * step - 0.5
    r, g, b = np.meshgrid(centre, centre, centre, indexing="ij")
    return name_colors(np.stack([r, g, b], axis=-1).reshape(-1, 3))


def color_labels(rgb: np.ndarray) -> np.ndarray:
    """Colour label numbers of pixels: (h, w, 3) uint8 -> (h, w) int32 (0 = no clear
    colour): the name of each pixel's RGB bin (see :func:`name_colors`)."""
    s = 8 - _COLOR_BITS
    q = np.asarray(rgb, dtype=np.uint8) >> s
    idx = (q[..., 0].astype(np.int32) << (2 * _COLOR_BITS)) | \
        (q[..., 1].astype(np.int32) << _COLOR_BITS) | q[..., 2]
    return _color_lut()[idx]


def downsample_rgb(image: np.ndarray, sh: int, sw: int) -> np.ndarray:
    """Box-filtered image at segmentation size: (ih, iw, 3) uint8 -> (sh, sw, 3) uint8."""
    if image.shape[:2] == (sh, sw):
        return image.copy()
    return np.asarray(Image.fromarray(image).resize((sw, sh), Image.BOX))


def sample_rows(n_image: int, n_seg: int) -> np.ndarray:
    """Image pixel index sampled for each segmentation pixel (its centre): (n_seg,) int64."""
    return np.minimum(((np.arange(n_seg) + 0.5) * n_image / n_seg).astype(np.int64), n_image - 1)


# ----------------------------------------------------------------------------- canvas

Region = tuple[slice, slice, np.ndarray]          # rows, cols, (h, w) bool mask
Texture = Callable[[slice, slice], np.ndarray]    # rows, cols -> (h, w, 3) float32


class _Canvas:
    """Painter's canvas at image resolution: RGB plus object, material and two part maps.

    Coordinates are in units of image height: y in [0, 1] (down), x in [0, W], W = iw/ih.
    """

    def __init__(self, ih: int, iw: int, rng: np.random.Generator,
                 noise_rng: np.random.Generator):
        self.ih, self.iw, self.rng = ih, iw, rng
        self.W = iw / ih
        self.rgb = np.zeros((ih, iw, 3), dtype=np.float32)
        self.obj = np.zeros((ih, iw), dtype=np.int32)
        self.mat = np.zeros((ih, iw), dtype=np.int32)
        self.part1 = np.zeros((ih, iw), dtype=np.int32)
        self.part2 = np.zeros((ih, iw), dtype=np.int32)
        self.y = ((np.arange(ih, dtype=np.float32) + 0.5) / ih)
        self.x = ((np.arange(iw, dtype=np.float32) + 0.5) / ih)
        # Pixel noise has its own generator so that the geometry (drawn from ``rng``)
        # is the same at every resolution.
        self.noise = noise_rng.standard_normal((ih, iw), dtype=np.float32)
        self.lf1 = self._smooth_noise(rng, 5)
        self.lf2 = self._smooth_noise(rng, 14)

    def _smooth_noise(self, rng: np.random.Generator, g: int) -> np.ndarray:
        small = rng.standard_normal((g, g), dtype=np.float32)
        return np.asarray(Image.fromarray(small, "F").resize((self.iw, self.ih), Image.BILINEAR))

    # --- regions (pixel centres inside the shape)
    def _span(self, a: float, b: float, n: int) -> slice:
        i0 = max(0, math.ceil(a * self.ih - 0.5))
        i1 = min(n, math.floor(b * self.ih - 0.5) + 1)
        return slice(i0, max(i0, i1))

    def rect(self, x0: float, y0: float, x1: float, y1: float) -> Region | None:
        sy, sx = self._span(y0, y1, self.ih), self._span(x0, x1, self.iw)
        if sy.stop <= sy.start or sx.stop <= sx.start:
            return None
        return sy, sx, np.ones((sy.stop - sy.start, sx.stop - sx.start), dtype=bool)

    def ellipse(self, cx: float, cy: float, rx: float, ry: float,
                ymax: float | None = None) -> Region | None:
        """Ellipse; with ``ymax`` only its pixels above y = ymax (a cap)."""
        sy = self._span(cy - ry, cy + ry if ymax is None else min(cy + ry, ymax), self.ih)
        sx = self._span(cx - rx, cx + rx, self.iw)
        if sy.stop <= sy.start or sx.stop <= sx.start:
            return None
        dy = ((self.y[sy] - cy) / ry) ** 2
        dx = ((self.x[sx] - cx) / rx) ** 2
        m = dy[:, None] + dx[None, :] <= 1.0
        return (sy, sx, m) if m.any() else None

    def polygon(self, pts: Sequence[tuple[float, float]]) -> Region | None:
        """Convex polygon given by its vertices (x, y) in order (either orientation)."""
        p = np.asarray(pts, dtype=np.float64)
        sy = self._span(p[:, 1].min(), p[:, 1].max(), self.ih)
        sx = self._span(p[:, 0].min(), p[:, 0].max(), self.iw)
        if sy.stop <= sy.start or sx.stop <= sx.start:
            return None
        Y = self.y[sy][:, None].astype(np.float64)
        X = self.x[sx][None, :].astype(np.float64)
        area = np.sum(p[:, 0] * np.roll(p[:, 1], -1) - np.roll(p[:, 0], -1) * p[:, 1])
        sgn = 1.0 if area >= 0 else -1.0
        m = np.ones((Y.shape[0], X.shape[1]), dtype=bool)
        for (ax, ay), (bx, by) in zip(p, np.roll(p, -1, axis=0)):
            m &= sgn * ((bx - ax) * (Y - ay) - (by - ay) * (X - ax)) >= 0
        return (sy, sx, m) if m.any() else None

    # --- painting
    def paint(self, region: Region | None, tex: Texture, obj: int | None = None,
              mat: int = 0, part: int = 0, level: int = 1) -> None:
        """Paint ``tex`` on ``region``. ``obj`` set: the object map takes it and, at
        level 1, the part maps take ``part`` (0 = none) and 0; level 2 sets part2 only."""
        if region is None:
            return
        sy, sx, m = region
        np.copyto(self.rgb[sy, sx], tex(sy, sx), where=m[:, :, None])
        if obj is not None:
            self.obj[sy, sx][m] = obj
        self.mat[sy, sx][m] = mat
        if level == 1:
            self.part1[sy, sx][m] = part
            self.part2[sy, sx][m] = 0
        else:
            self.part2[sy, sx][m] = part

    # --- textures (closures over random parameters)
    def flat(self, rgb, amp: float = 4.0) -> Texture:
        c = np.asarray(rgb, dtype=np.float32)
        return lambda sy, sx: c + (amp * self.noise[sy, sx])[:, :, None]

    def gradient(self, top, bottom, y0: float, y1: float, amp: float = 2.0) -> Texture:
        a, b = np.asarray(top, np.float32), np.asarray(bottom, np.float32)

        def f(sy, sx):
            t = np.clip((self.y[sy] - y0) / max(y1 - y0, 1e-3), 0, 1)[:, None, None]
            return (a * (1 - t) + b * t) + (amp * self.noise[sy, sx])[:, :, None]
        return f

    def material(self, kind: str, rgb) -> Texture:
        """Procedural texture of material ``kind`` around base colour ``rgb``."""
        c = np.asarray(rgb, dtype=np.float32)
        r = self.rng
        n, lf1, lf2, Yv, Xv = self.noise, self.lf1, self.lf2, self.y, self.x
        if kind in ("painted", "skin"):
            return self.flat(c, 3.0)
        if kind == "snow":
            return lambda sy, sx: c + (4 * n[sy, sx] + 6 * lf2[sy, sx])[:, :, None]
        if kind == "asphalt":
            return lambda sy, sx: c + (9 * n[sy, sx] + 7 * lf2[sy, sx])[:, :, None]
        if kind in ("carpet", "grass"):
            a = 12.0 if kind == "carpet" else 16.0
            return lambda sy, sx: c * (1 + 0.12 * lf2[sy, sx])[:, :, None] \
                + (a * n[sy, sx])[:, :, None]
        if kind == "rock":
            return lambda sy, sx: c * (1 + 0.18 * lf2[sy, sx] + 0.1 * lf1[sy, sx])[:, :, None] \
                + (9 * n[sy, sx])[:, :, None]
        if kind == "sand":
            k, ph = r.uniform(40, 70), r.uniform(0, 6.3)
            return lambda sy, sx: c + (8 * n[sy, sx] + 7 * np.sin(
                Yv[sy][:, None] * k + 2 * lf1[sy, sx] + ph))[:, :, None]
        if kind == "water":
            k, kx, ph = r.uniform(60, 110), r.uniform(8, 20), r.uniform(0, 6.3)
            return lambda sy, sx: c + (22 * np.sin(
                Yv[sy][:, None] * k + 3 * np.sin(Xv[sx][None, :] * kx + ph) + 2 * lf1[sy, sx])
                + 4 * n[sy, sx])[:, :, None]
        if kind == "wood":
            k, vertical = r.uniform(35, 70), r.random() < 0.5

            def wood(sy, sx):
                g = (Xv[sx][None, :] if vertical else Yv[sy][:, None]) * k + 1.5 * lf2[sy, sx]
                return c * (1 + 0.13 * np.sin(g) + 0.05 * np.sin(3.1 * g))[:, :, None] \
                    + (4 * n[sy, sx])[:, :, None]
            return wood
        if kind == "fabric":
            k = r.uniform(120, 220)
            stripes = r.random() < 0.3
            c2 = np.asarray(self.paint_color(), np.float32)

            def fabric(sy, sx):
                Y, X = Yv[sy][:, None], Xv[sx][None, :]
                out = c * (1 + 0.07 * np.sin(X * k) * np.sin(Y * k))[:, :, None]
                if stripes:
                    out = np.where((np.mod(X * 12, 1.0) < 0.3)[:, :, None], c2, out)
                return out + (4 * n[sy, sx])[:, :, None]
            return fabric
        if kind == "glass":
            k = r.uniform(6, 14)
            return lambda sy, sx: c + (45 * (np.mod((Xv[sx][None, :] + 0.6 * Yv[sy][:, None])
                                                    * k, 1.0) < 0.18) + 3 * n[sy, sx])[:, :, None]
        if kind == "metal":
            k, ph = r.uniform(8, 20), r.uniform(0, 6.3)
            return lambda sy, sx: c * (1 + 0.15 * np.sin(Yv[sy][:, None] * k + ph))[:, :, None] \
                + (3 * n[sy, sx])[:, :, None]
        if kind in ("brick", "tile"):
            if kind == "brick":
                bh = r.uniform(0.025, 0.045)
                bw, gap_y, gap_x, offset = bh * r.uniform(2.0, 2.6), 0.16, 0.07, 0.5
                grout = np.asarray((r.uniform(150, 200),) * 3, np.float32)
            else:
                bh = r.uniform(0.05, 0.1)
                bw, gap_y, gap_x, offset = bh, 0.08, 0.08, 0.0
                grout = np.asarray((r.uniform(90, 150),) * 3, np.float32)
            ph = r.uniform(0, 1, size=2)

            def bricks(sy, sx):
                Y, X = Yv[sy][:, None] / bh + ph[0], Xv[sx][None, :] / bw + ph[1]
                row = np.floor(Y)
                Xo = X + offset * np.mod(row, 2)
                col = np.floor(Xo)
                shade = np.mod(np.sin(row * 12.9898 + col * 78.233) * 43758.5453, 1.0) - 0.5
                joint = (Y - row < gap_y) | (Xo - col < gap_x)
                out = c * (1 + 0.16 * shade)[:, :, None]
                out = np.where(joint[:, :, None], grout, out)
                return out + (5 * n[sy, sx])[:, :, None]
            return bricks
        raise ValueError(f"unknown material kind {kind!r}")

    def paint_color(self, names: Sequence[str] | None = None, jitter: float = 14.0) -> np.ndarray:
        """A random paint colour (3,) float32 among colour ``names`` (default: any)."""
        names = COLOR_NAMES if names is None else names
        name = names[self.rng.integers(len(names))]
        variants = _PAINT[name]
        base = np.asarray(variants[self.rng.integers(len(variants))], np.float32)
        return np.clip(base + self.rng.uniform(-jitter, jitter, 3).astype(np.float32), 0, 255)

    def finish(self) -> np.ndarray:
        """Lighting, noise and quantisation: (ih, iw, 3) uint8."""
        r = self.rng
        gain = (np.float32(r.uniform(0.85, 1.12))
                * (1 + r.uniform(-0.05, 0.05, 3)).astype(np.float32))
        shade = 1 + np.float32(r.uniform(0.0, 0.12)) * self.lf1[:, :, None]
        img = self.rgb * gain * shade + 2.0 * np.roll(self.noise, 7, axis=1)[:, :, None]
        return np.clip(np.rint(img), 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------- objects

def _u(cv: _Canvas, a: float, b: float) -> float:
    return float(cv.rng.uniform(a, b))


def _draw_house(cv: _Canvas, x: float, yb: float, s: float) -> None:
    r, o = cv.rng, _L["house"]
    w = s * _u(cv, 1.0, 1.6)
    if r.random() < 0.55:
        wall_mat = "brick"
        wall_tex = cv.material("brick", cv.paint_color(["red", "orange", "brown"]))
    else:
        wall_tex, wall_mat = cv.material("painted", cv.paint_color(
            ["white", "yellow", "pink", "blue", "grey", "green"])), "painted"
    cv.paint(cv.rect(x - w / 2, yb - s, x + w / 2, yb), wall_tex, o, _L[wall_mat])
    rh = s * _u(cv, 0.35, 0.6)
    ov = w * 0.06
    if r.random() < 0.5:
        cw = w * 0.1
        cx = x + w * _u(cv, 0.15, 0.3) * (1 if r.random() < 0.5 else -1)
        cv.paint(cv.rect(cx - cw / 2, yb - s - rh * 0.95, cx + cw / 2, yb - s - rh * 0.2),
                 cv.material("brick", cv.paint_color(["red", "brown"])), o, _L["brick"],
                 _L["chimney"])
    cv.paint(cv.polygon([(x - w / 2 - ov, yb - s), (x + w / 2 + ov, yb - s), (x, yb - s - rh)]),
             cv.material("tile", cv.paint_color(["red", "brown", "grey", "black"])), o,
             _L["tile"], _L["roof"])
    rows, cols = int(r.integers(1, 3)), int(r.integers(2, 4))
    glass = cv.material("glass", cv.paint_color(["blue", "grey", "white"]))
    ww, wh = w / cols * 0.45, s / rows * 0.35
    for i in range(rows):
        for j in range(cols):
            cx = x - w / 2 + (j + 0.5) * w / cols
            cy = yb - s + (i + 0.4) * s / rows
            cv.paint(cv.rect(cx - ww / 2, cy - wh / 2, cx + ww / 2, cy + wh / 2), glass, o,
                     _L["glass"], _L["window"])


def _draw_car(cv: _Canvas, x: float, yb: float, length: float) -> None:
    r, o = cv.rng, _L["car"]
    d = 1.0 if r.random() < 0.5 else -1.0
    H = length * _u(cv, 0.34, 0.44)
    body = cv.material("metal", cv.paint_color(
        ["red", "blue", "white", "black", "yellow", "grey", "green", "orange"]))
    cv.paint(cv.rect(x - length / 2, yb - 0.62 * H, x + length / 2, yb - 0.16 * H), body, o,
             _L["metal"])
    xs = lambda t: x + d * t * length  # noqa: E731  (position along the car, front = +)
    cabin = [(xs(-0.38), yb - 0.6 * H), (xs(0.28), yb - 0.6 * H), (xs(0.14), yb - H),
             (xs(-0.28), yb - H)]
    cv.paint(cv.polygon(cabin), body, o, _L["metal"])
    glass = cv.material("glass", cv.paint_color(["blue", "grey", "black"]))
    cv.paint(cv.polygon([(xs(-0.33), yb - 0.64 * H), (xs(-0.07), yb - 0.64 * H),
                         (xs(-0.07), yb - 0.94 * H), (xs(-0.25), yb - 0.94 * H)]),
             glass, o, _L["glass"], _L["window"])
    cv.paint(cv.polygon([(xs(-0.02), yb - 0.64 * H), (xs(0.22), yb - 0.64 * H),
                         (xs(0.11), yb - 0.94 * H), (xs(-0.02), yb - 0.94 * H)]),
             glass, o, _L["glass"], _L["window"])
    rw = 0.19 * H
    tyre = cv.flat(cv.paint_color(["black"], 6), 3)
    for t in (-0.3, 0.3):
        cv.paint(cv.ellipse(xs(t), yb - rw, rw, rw), tyre, o, 0, _L["wheel"])
    cv.paint(cv.ellipse(xs(0.47), yb - 0.45 * H, 0.035 * length, 0.05 * H),
             cv.flat(cv.paint_color(["yellow", "white"]), 2), o, _L["glass"], _L["headlight"])


def _draw_person(cv: _Canvas, x: float, yb: float, P: float) -> None:
    r, o = cv.rng, _L["person"]
    rh = 0.09 * P
    skin_c = np.clip(np.array(cv.rng.choice([(232, 190, 160), (198, 140, 100), (140, 90, 60),
                                              (90, 60, 40)])) + r.uniform(-10, 10, 3), 0, 255)
    skin = cv.material("skin", skin_c)
    shirt = cv.material("fabric", cv.paint_color())
    pants = cv.material("fabric", cv.paint_color(["blue", "black", "brown", "grey"]))
    top, waist = yb - P + 2 * rh, yb - 0.47 * P
    cv.paint(cv.rect(x - 0.13 * P, top, x + 0.13 * P, waist), shirt, o, _L["fabric"], _L["torso"])
    sleeves = r.random() < 0.5
    for s in (-1, 1):
        cv.paint(cv.rect(min(x + s * 0.13 * P, x + s * 0.19 * P), top + 0.1 * rh,
                         max(x + s * 0.13 * P, x + s * 0.19 * P), waist - 0.02 * P),
                 shirt if sleeves else skin, o, _L["fabric" if sleeves else "skin"], _L["arm"])
    gap = 0.015 * P
    cv.paint(cv.rect(x - 0.11 * P, waist, x - gap, yb), pants, o, _L["fabric"], _L["leg"])
    cv.paint(cv.rect(x + gap, waist, x + 0.11 * P, yb), pants, o, _L["fabric"], _L["leg"])
    cy = yb - P + rh
    cv.paint(cv.ellipse(x, cy, 0.85 * rh, rh), skin, o, _L["skin"], _L["head"])
    if r.random() < 0.9:
        hair = cv.flat(cv.paint_color(["black", "brown", "yellow", "orange", "grey"]), 5)
        cv.paint(cv.ellipse(x, cy, 0.85 * rh, rh, ymax=cy - _u(cv, 0.1, 0.45) * rh), hair,
                 o, 0, _L["hair"], level=2)


def _draw_tree(cv: _Canvas, x: float, yb: float, T: float, palette=("green",)) -> None:
    r, o = cv.rng, _L["tree"]
    tw = T * _u(cv, 0.07, 0.12)
    cv.paint(cv.rect(x - tw / 2, yb - 0.5 * T, x + tw / 2, yb),
             cv.material("wood", cv.paint_color(["brown", "black"])), o, _L["wood"], _L["trunk"])
    leaves_c = cv.paint_color(palette)
    leaves = lambda sy, sx: leaves_c * (1 + 0.2 * cv.lf2[sy, sx])[:, :, None] \
        + (14 * cv.noise[sy, sx])[:, :, None]  # noqa: E731
    if r.random() < 0.3:   # conifer
        hw = T * _u(cv, 0.2, 0.3)
        cv.paint(cv.polygon([(x - hw, yb - 0.3 * T), (x + hw, yb - 0.3 * T), (x, yb - T)]),
                 leaves, o, 0, _L["foliage"])
    else:
        for _ in range(int(r.integers(1, 4))):
            cx, cy = x + T * _u(cv, -0.12, 0.12), yb - T * _u(cv, 0.62, 0.72)
            cv.paint(cv.ellipse(cx, cy, T * _u(cv, 0.2, 0.32), T * _u(cv, 0.22, 0.3)),
                     leaves, o, 0, _L["foliage"])


def _draw_bench(cv: _Canvas, x: float, yb: float, w: float) -> None:
    o = _L["bench"]
    kind = "wood" if cv.rng.random() < 0.6 else "metal"
    tex = cv.material(kind, cv.paint_color(["brown"] if kind == "wood" else ["grey", "green",
                                                                             "black"]))
    h = w * 0.45
    for t in (-0.4, 0.35):
        cv.paint(cv.rect(x + t * w, yb - 0.5 * h, x + (t + 0.05) * w, yb), tex, o, _L[kind])
    cv.paint(cv.rect(x - w / 2, yb - 0.58 * h, x + w / 2, yb - 0.45 * h), tex, o, _L[kind])
    cv.paint(cv.rect(x - w / 2, yb - h, x + w / 2, yb - 0.8 * h), tex, o, _L[kind])


def _draw_umbrella(cv: _Canvas, x: float, yb: float, h: float) -> None:
    o = _L["umbrella"]
    pole = cv.material("metal", cv.paint_color(["white", "grey"]))
    cv.paint(cv.rect(x - 0.015 * h, yb - 0.85 * h, x + 0.015 * h, yb), pole, o, _L["metal"])
    canopy = cv.material("fabric", cv.paint_color(["red", "yellow", "orange", "blue", "white",
                                                   "pink", "green"]))
    cy = yb - 0.8 * h
    cv.paint(cv.ellipse(x, cy, 0.5 * h, 0.25 * h, ymax=cy), canopy, o, _L["fabric"])


def _draw_mountain(cv: _Canvas, x: float, yb: float, Hm: float, Wm: float) -> None:
    o = _L["mountain"]
    apex = (x, yb - Hm)
    cv.paint(cv.polygon([(x - Wm / 2, yb), (x + Wm / 2, yb), apex]),
             cv.material("rock", cv.paint_color(["grey", "brown", "purple"])), o, _L["rock"])
    if cv.rng.random() < 0.6:
        f = _u(cv, 0.2, 0.4)
        cv.paint(cv.polygon([(x - f * Wm / 2, yb - (1 - f) * Hm), (x + f * Wm / 2,
                                                                   yb - (1 - f) * Hm), apex]),
                 cv.material("snow", cv.paint_color(["white"], 6)), o, _L["snow"])


def _draw_cabinet(cv: _Canvas, x: float, yb: float, w: float, h: float) -> None:
    r, o = cv.rng, _L["cabinet"]
    kind = "wood" if r.random() < 0.6 else "painted"
    col = cv.paint_color(["brown", "orange"] if kind == "wood" else ["white", "grey", "blue",
                                                                      "green", "yellow"])
    tex = cv.material(kind, col)
    cv.paint(cv.rect(x - w / 2, yb - h, x + w / 2, yb), tex, o, _L[kind])
    front = cv.material(kind, np.clip(col * 0.85 + 10, 0, 255))
    nd = int(r.integers(1, 3))
    m = 0.06 * w
    for j in range(nd):                       # drawers in the top quarter
        x0 = x - w / 2 + m + j * (w - m) / nd
        cv.paint(cv.rect(x0, yb - h + m, x0 + (w - m) / nd - m, yb - 0.75 * h), front, o,
                 _L[kind], _L["drawer"])
    nd = int(r.integers(1, 3))
    for j in range(nd):                       # doors below
        x0 = x - w / 2 + m + j * (w - m) / nd
        cv.paint(cv.rect(x0, yb - 0.72 * h, x0 + (w - m) / nd - m, yb - m), front, o,
                 _L[kind], _L["door"])


def _draw_table(cv: _Canvas, x: float, yb: float, w: float) -> None:
    o = _L["table"]
    tex = cv.material("wood", cv.paint_color(["brown", "orange", "white"]))
    h = w * _u(cv, 0.45, 0.6)
    lw = 0.06 * w
    for t in (-0.45, 0.45 - 0.06):
        cv.paint(cv.rect(x + t * w, yb - h, x + t * w + lw, yb), tex, o, _L["wood"], _L["leg"])
    cv.paint(cv.rect(x - w / 2, yb - h, x + w / 2, yb - h + 0.12 * h), tex, o, _L["wood"],
             _L["tabletop"])


def _draw_bed(cv: _Canvas, x: float, yb: float, w: float) -> None:
    r, o = cv.rng, _L["bed"]
    h = w * _u(cv, 0.28, 0.38)
    cv.paint(cv.rect(x - w / 2, yb - h, x + w / 2, yb),
             cv.material("fabric", cv.paint_color()), o, _L["fabric"])
    side = 1.0 if r.random() < 0.5 else -1.0
    hx = x + side * w / 2
    cv.paint(cv.rect(min(hx, hx - side * 0.08 * w), yb - 1.8 * h, max(hx, hx - side * 0.08 * w),
                     yb), cv.material("wood", cv.paint_color(["brown", "black", "white"])), o,
             _L["wood"], _L["headboard"])
    px = hx - side * 0.2 * w
    cv.paint(cv.ellipse(px, yb - h, 0.1 * w, 0.25 * h),
             cv.material("fabric", cv.paint_color(["white", "pink", "yellow", "blue"])), o,
             _L["fabric"], _L["pillow"])


def _draw_lamp(cv: _Canvas, x: float, yb: float, h: float) -> None:
    o = _L["lamp"]
    stand = cv.material("metal", cv.paint_color(["black", "grey", "yellow"]))
    cv.paint(cv.rect(x - 0.1 * h, yb - 0.05 * h, x + 0.1 * h, yb), stand, o, _L["metal"])
    cv.paint(cv.rect(x - 0.02 * h, yb - 0.75 * h, x + 0.02 * h, yb), stand, o, _L["metal"])
    cv.paint(cv.polygon([(x - 0.2 * h, yb - 0.65 * h), (x + 0.2 * h, yb - 0.65 * h),
                         (x + 0.12 * h, yb - h), (x - 0.12 * h, yb - h)]),
             cv.material("fabric", cv.paint_color(["white", "yellow", "orange", "pink"])), o,
             _L["fabric"], _L["lampshade"])


def _draw_sofa(cv: _Canvas, x: float, yb: float, w: float) -> None:
    r, o = cv.rng, _L["sofa"]
    col = cv.paint_color(["red", "green", "blue", "grey", "brown", "purple", "orange"])
    tex = cv.material("fabric", col)
    h = w * _u(cv, 0.38, 0.48)
    cv.paint(cv.rect(x - w / 2, yb - h, x + w / 2, yb - 0.1 * h), tex, o, _L["fabric"])
    leg = cv.material("wood", cv.paint_color(["brown", "black"]))
    for t in (-0.45, 0.4):
        cv.paint(cv.rect(x + t * w, yb - 0.1 * h, x + (t + 0.05) * w, yb), leg, o, _L["wood"])
    for s in (-1, 1):
        cv.paint(cv.rect(min(x + s * w / 2, x + s * 0.42 * w), yb - 0.65 * h,
                         max(x + s * w / 2, x + s * 0.42 * w), yb - 0.1 * h), tex, o, _L["fabric"])
    n = int(r.integers(2, 4))
    cush = cv.material("fabric", np.clip(col * 1.15 + 10, 0, 255))
    span = 0.8 * w
    for j in range(n):
        x0 = x - span / 2 + j * span / n
        cv.paint(cv.rect(x0 + 0.01 * w, yb - 0.95 * h, x0 + span / n - 0.01 * w, yb - 0.55 * h),
                 cush, o, _L["fabric"], _L["cushion"])


def _draw_painting(cv: _Canvas, x: float, y: float, w: float, h: float) -> None:
    r, o = cv.rng, _L["painting"]
    cv.paint(cv.rect(x - w / 2, y - h / 2, x + w / 2, y + h / 2),
             cv.material("wood", cv.paint_color(["brown", "yellow", "black"])), o, _L["wood"])
    fw = 0.08 * min(w, h)
    cv.paint(cv.rect(x - w / 2 + fw, y - h / 2 + fw, x + w / 2 - fw, y + h / 2 - fw),
             cv.flat(cv.paint_color(), 4), o, _L["painted"])
    for _ in range(int(r.integers(2, 5))):
        cv.paint(cv.ellipse(x + _u(cv, -0.3, 0.3) * w, y + _u(cv, -0.3, 0.3) * h,
                            _u(cv, 0.08, 0.2) * w, _u(cv, 0.08, 0.2) * h),
                 cv.flat(cv.paint_color(), 4), o, _L["painted"])
    # repaint the frame over blobs that spilled onto it
    for reg in (cv.rect(x - w / 2, y - h / 2, x + w / 2, y - h / 2 + fw),
                cv.rect(x - w / 2, y + h / 2 - fw, x + w / 2, y + h / 2),
                cv.rect(x - w / 2, y - h / 2, x - w / 2 + fw, y + h / 2),
                cv.rect(x + w / 2 - fw, y - h / 2, x + w / 2, y + h / 2)):
        cv.paint(reg, cv.flat(cv.paint_color(["brown"]), 3), o, _L["wood"])


def _draw_door(cv: _Canvas, x: float, yb: float, w: float, h: float) -> None:
    o = _L["door"]
    kind = "wood" if cv.rng.random() < 0.6 else "painted"
    cv.paint(cv.rect(x - w / 2, yb - h, x + w / 2, yb),
             cv.material(kind, cv.paint_color(["brown", "orange"] if kind == "wood"
                                              else ["white", "grey", "blue", "green", "red"])),
             o, _L[kind])
    kx = x + 0.32 * w * (1 if cv.rng.random() < 0.5 else -1)
    cv.paint(cv.ellipse(kx, yb - 0.48 * h, 0.05 * w, 0.05 * w),
             cv.material("metal", cv.paint_color(["yellow", "grey"])), o, _L["metal"])


# ----------------------------------------------------------------------------- scenes

def _sky(cv: _Canvas, h: float) -> None:
    r = cv.rng
    k = r.random()
    if k < 0.68:
        top = np.array([r.uniform(30, 80), r.uniform(80, 130), r.uniform(190, 240)])
        bottom = np.array([r.uniform(140, 180), r.uniform(180, 210), r.uniform(225, 250)])
    elif k < 0.88:
        g = r.uniform(140, 190)
        top, bottom = np.array([g, g, g + 8]), np.array([g + 25, g + 25, g + 28])
    else:
        top = np.array([r.uniform(70, 120), r.uniform(50, 90), r.uniform(130, 170)])
        bottom = np.array([r.uniform(230, 250), r.uniform(120, 170), r.uniform(50, 90)])
    cv.paint(cv.rect(0, 0, cv.W, h), cv.gradient(top, bottom, 0, h), _L["sky"])
    for _ in range(int(r.integers(0, 4))):
        cv.paint(cv.ellipse(_u(cv, 0, cv.W), _u(cv, 0.02, max(0.03, h * 0.7)), _u(cv, 0.06, 0.2),
                            _u(cv, 0.02, 0.06)), cv.flat(cv.paint_color(["white"], 8), 5),
                 _L["sky"])


def _ground(cv: _Canvas, y0: float, name: str, mat: str, rgb, y1: float = 1.0) -> None:
    cv.paint(cv.rect(0, y0, cv.W, y1), cv.material(mat, rgb), _L[name], _L[mat])


def _grass_color(cv: _Canvas, dark: bool = False):
    return cv.paint_color(["green"]) * (0.75 if dark else 1.0)


def _scene_street(cv: _Canvas) -> None:
    r, W = cv.rng, cv.W
    h = _u(cv, 0.3, 0.5)
    _sky(cv, h)
    _ground(cv, h, "road", "asphalt", cv.paint_color(["grey", "black"]))
    for _ in range(int(r.integers(2, 6))):     # lane markings
        lx, ly = _u(cv, 0, W), _u(cv, h + 0.15, 0.95)
        cv.paint(cv.rect(lx, ly, lx + _u(cv, 0.06, 0.14), ly + 0.012),
                 cv.flat(cv.paint_color(["white", "yellow"]), 3), _L["road"], _L["asphalt"])
    items = []
    for _ in range(int(r.integers(2, 5))):
        yb = _u(cv, h + 0.02, h + 0.1)
        items.append((yb, _draw_house, (_u(cv, 0, W), yb, _u(cv, 0.18, 0.3))))
    for _ in range(int(r.integers(0, 2))):
        yb = _u(cv, h + 0.03, h + 0.12)
        items.append((yb, _draw_tree, (_u(cv, 0, W), yb, _u(cv, 0.3, 0.45))))
    for _ in range(int(r.integers(1, 4))):
        yb = _u(cv, h + 0.15, 0.99)
        items.append((yb, _draw_car, (_u(cv, 0, W), yb, _u(cv, 0.25, 0.42) * (0.6 + yb - h))))
    for _ in range(int(r.integers(0, 3))):
        yb = _u(cv, h + 0.08, 0.98)
        items.append((yb, _draw_person, (_u(cv, 0, W), yb, _u(cv, 0.22, 0.36) * (0.6 + yb - h))))
    _draw_items(cv, items)


def _draw_items(cv: _Canvas, items) -> None:
    """Draw (depth, function, args) back to front (smaller depth first; stable)."""
    for _, fn, args in sorted(items, key=lambda t: t[0]):
        fn(cv, *args)


def _scene_park(cv: _Canvas) -> None:
    r, W = cv.rng, cv.W
    h = _u(cv, 0.3, 0.5)
    _sky(cv, h)
    _ground(cv, h, "grass", "grass", _grass_color(cv))
    items = []
    for _ in range(int(r.integers(2, 5))):
        yb = _u(cv, h + 0.05, h + 0.3)
        items.append((yb, _draw_tree, (_u(cv, 0, W), yb, _u(cv, 0.3, 0.55))))
    for _ in range(int(r.integers(1, 4))):
        yb = _u(cv, h + 0.15, 0.99)
        items.append((yb, _draw_person, (_u(cv, 0, W), yb, _u(cv, 0.2, 0.4))))
    if r.random() < 0.5:
        yb = _u(cv, h + 0.1, 0.95)
        items.append((yb, _draw_bench, (_u(cv, 0.1, W - 0.1), yb, _u(cv, 0.2, 0.3))))
    _draw_items(cv, items)


def _scene_beach(cv: _Canvas) -> None:
    r, W = cv.rng, cv.W
    h = _u(cv, 0.3, 0.45)
    h2 = h + _u(cv, 0.12, 0.25)
    _sky(cv, h)
    _ground(cv, h, "water", "water", cv.paint_color(["blue"]), y1=h2)
    _ground(cv, h2, "sand", "sand", cv.paint_color(["yellow", "white", "orange"], 10) * 0.95)
    items = []
    for _ in range(int(r.integers(1, 4))):
        yb = _u(cv, h2 + 0.1, 0.99)
        items.append((yb, _draw_person, (_u(cv, 0, W), yb, _u(cv, 0.2, 0.38))))
    for _ in range(int(r.integers(1, 3))):
        yb = _u(cv, h2 + 0.12, 0.99)
        items.append((yb, _draw_umbrella, (_u(cv, 0, W), yb, _u(cv, 0.25, 0.4))))
    _draw_items(cv, items)


def _indoor(cv: _Canvas, wall: tuple[str, list[str]], floor: tuple[str, list[str]]) -> float:
    f = _u(cv, 0.6, 0.75)
    cv.paint(cv.rect(0, 0, cv.W, f), cv.material(wall[0], cv.paint_color(wall[1])), _L["wall"],
             _L[wall[0]])
    cv.paint(cv.rect(0, f, cv.W, 1), cv.material(floor[0], cv.paint_color(floor[1])),
             _L["floor"], _L[floor[0]])
    return f


def _room_door(cv: _Canvas, f: float) -> tuple:
    """Arguments of :func:`_draw_door` for the room door. Drawn last (never occluded),
    its area is >= 0.08 of the image, more than the door parts of at most two cabinets
    (< 0.05 in all: cabinets are at most 0.18 x 0.18, their doors < 3/4 of that)."""
    w, h = _u(cv, 0.16, 0.22), _u(cv, 0.5, 0.6)
    yb = f + _u(cv, 0.0, 0.03)
    return _u(cv, w / 2, cv.W - w / 2), yb, w, h


def _beside(cv: _Canvas, w: float, door: tuple) -> float:
    """Centre x of a w-wide item not behind the door (random x if there is no room)."""
    d0, d1 = door[0] - door[2] / 2, door[0] + door[2] / 2
    left = max(0.0, d0 - w)                     # room left of the door: [w/2, d0 - w/2]
    right = max(0.0, cv.W - d1 - w)             # right of it: [d1 + w/2, W - w/2]
    if left + right <= 0:
        return _u(cv, w / 2, max(w / 2, cv.W - w / 2))
    t = _u(cv, 0, left + right)
    return w / 2 + t if t < left else d1 + w / 2 + (t - left)


def _scene_kitchen(cv: _Canvas) -> None:
    r, W = cv.rng, cv.W
    f = _indoor(cv, ("tile", ["white", "blue", "green", "yellow"]),
                ("tile" if r.random() < 0.6 else "wood", ["grey", "brown", "white", "black"]))
    door = _room_door(cv, f)
    items = []
    for _ in range(int(r.integers(1, 3))):
        w = _u(cv, 0.1, 0.18)
        if r.random() < 0.5:
            yb = _u(cv, f + 0.05, 0.97)
        else:                                   # wall cabinet
            yb = _u(cv, 0.25, f - 0.1)
        items.append((yb, _draw_cabinet, (_beside(cv, w, door), yb, w, _u(cv, 0.1, 0.18))))
    if r.random() < 0.5:
        yb = _u(cv, f + 0.1, 0.98)
        items.append((yb, _draw_table, (_u(cv, 0.15, W - 0.15), yb, _u(cv, 0.25, 0.4))))
    _draw_items(cv, items)
    _draw_door(cv, *door)


def _scene_bedroom(cv: _Canvas) -> None:
    r, W = cv.rng, cv.W
    f = _indoor(cv, ("painted", ["pink", "purple", "blue", "yellow", "white", "green"]),
                ("carpet", ["brown", "grey", "red", "blue", "purple"]))
    door = _room_door(cv, f)
    items = []
    yb = _u(cv, f + 0.15, 0.97)
    items.append((yb, _draw_bed, (_u(cv, 0.3, W - 0.3), yb, _u(cv, 0.45, 0.65))))
    if r.random() < 0.6:
        yb = _u(cv, f + 0.02, f + 0.12)
        items.append((yb, _draw_lamp, (_u(cv, 0.05, W - 0.05), yb, _u(cv, 0.2, 0.3))))
    if r.random() < 0.5:
        items.append((0, _draw_painting, (_u(cv, 0.15, W - 0.15), _u(cv, 0.2, 0.35),
                                          _u(cv, 0.15, 0.25), _u(cv, 0.12, 0.2))))
    if r.random() < 0.4:
        w = _u(cv, 0.1, 0.18)
        yb = _u(cv, f + 0.03, f + 0.1)
        items.append((yb, _draw_cabinet, (_beside(cv, w, door), yb, w, _u(cv, 0.1, 0.18))))
    _draw_items(cv, items)
    _draw_door(cv, *door)


def _scene_living_room(cv: _Canvas) -> None:
    r, W = cv.rng, cv.W
    f = _indoor(cv, ("painted", ["white", "yellow", "grey", "green", "orange", "blue"]),
                ("wood", ["brown", "orange"]))
    items = []
    yb = _u(cv, f + 0.08, 0.9)
    items.append((yb, _draw_sofa, (_u(cv, 0.3, W - 0.3), yb, _u(cv, 0.4, 0.6))))
    if r.random() < 0.6:
        yb = _u(cv, 0.9, 0.99)
        items.append((yb, _draw_table, (_u(cv, 0.2, W - 0.2), yb, _u(cv, 0.25, 0.4))))
    if r.random() < 0.6:
        yb = _u(cv, f + 0.05, 0.95)
        items.append((yb, _draw_lamp, (_u(cv, 0.05, W - 0.05), yb, _u(cv, 0.35, 0.55))))
    for _ in range(int(r.integers(1, 3))):
        items.append((0, _draw_painting, (_u(cv, 0.15, W - 0.15), _u(cv, 0.15, 0.35),
                                          _u(cv, 0.15, 0.3), _u(cv, 0.12, 0.22))))
    _draw_items(cv, items)
    if r.random() < 0.6:
        _draw_door(cv, *_room_door(cv, f))


def _scene_forest(cv: _Canvas) -> None:
    r, W = cv.rng, cv.W
    hg = _u(cv, 0.65, 0.85)
    _sky(cv, hg)
    _ground(cv, hg, "grass", "grass", _grass_color(cv, dark=True))
    palette = ("green",) if r.random() < 0.8 else ("green", "orange", "yellow", "red", "brown")
    items = []
    for _ in range(int(r.integers(5, 10))):
        yb = _u(cv, hg, 1.02)
        items.append((yb, _draw_tree, (_u(cv, 0, W), yb, _u(cv, 0.55, 0.95), palette)))
    _draw_items(cv, items)


def _scene_highway(cv: _Canvas) -> None:
    r, W = cv.rng, cv.W
    h = _u(cv, 0.3, 0.45)
    _sky(cv, h)
    _ground(cv, h, "grass", "grass", _grass_color(cv))
    vx = _u(cv, 0.35, 0.65) * W
    cv.paint(cv.polygon([(vx - 0.04, h), (vx + 0.04, h), (W * 1.1, 1.0), (-0.1 * W, 1.0)]),
             cv.material("asphalt", cv.paint_color(["grey", "black"])), _L["road"], _L["asphalt"])
    for t in np.linspace(0.1, 0.9, 5):          # dashed centre line in perspective
        y0, y1 = h + (1 - h) * t, h + (1 - h) * (t + 0.06)
        dw = 0.004 + 0.012 * t
        cv.paint(cv.polygon([(vx - dw, y0), (vx + dw, y0), (vx + dw * 1.3, y1),
                             (vx - dw * 1.3, y1)]),
                 cv.flat(cv.paint_color(["white", "yellow"]), 3), _L["road"], _L["asphalt"])
    items = []
    for _ in range(int(r.integers(2, 6))):
        yb = _u(cv, h + 0.1, 0.99)
        t = (yb - h) / (1 - h)
        x = vx + (_u(cv, -0.5, 0.5) * W * 1.1) * t
        items.append((yb, _draw_car, (x, yb, (0.08 + 0.4 * t) * _u(cv, 0.8, 1.1))))
    for _ in range(int(r.integers(0, 3))):
        yb = _u(cv, h + 0.01, h + 0.05)
        items.append((yb, _draw_tree, (_u(cv, 0, W), yb, _u(cv, 0.1, 0.2))))
    _draw_items(cv, items)


def _scene_mountain(cv: _Canvas) -> None:
    r, W = cv.rng, cv.W
    h = _u(cv, 0.5, 0.68)
    _sky(cv, h)
    for _ in range(int(r.integers(1, 4))):
        _draw_mountain(cv, _u(cv, 0, W), h + 0.001, _u(cv, 0.22, 0.45), _u(cv, 0.5, 1.0))
    lake = r.random() < 0.4
    if lake:
        _ground(cv, h, "water", "water", cv.paint_color(["blue"]))
    else:
        _ground(cv, h, "grass", "grass", _grass_color(cv))
    items = []
    for _ in range(int(r.integers(1, 5))):
        yb = _u(cv, h + 0.02, h + 0.06) if lake else _u(cv, h + 0.05, 1.0)
        T = _u(cv, 0.1, 0.18) if lake else _u(cv, 0.15, 0.35)
        items.append((yb, _draw_tree, (_u(cv, 0, W), yb, T)))
    _draw_items(cv, items)


def _scene_parking_lot(cv: _Canvas) -> None:
    r, W = cv.rng, cv.W
    h = _u(cv, 0.0, 0.3)
    if h > 0.03:
        _sky(cv, h)
    _ground(cv, h, "road", "asphalt", cv.paint_color(["grey", "black"]))
    line = cv.flat(cv.paint_color(["white", "yellow"]), 3)
    rows = int(r.integers(1, 3))
    row_y = ([h + (1 - h) * _u(cv, 0.6, 0.95)] if rows == 1
             else [h + (1 - h) * _u(cv, 0.42, 0.55), h + (1 - h) * _u(cv, 0.9, 0.98)])
    items = []
    for yb in row_y:
        sp = _u(cv, 0.3, 0.42) * (0.75 if rows > 1 and yb < 0.8 else 1.0)
        x0 = _u(cv, -sp, 0)
        for k in range(int(W / sp) + 2):        # bay lines
            lx = x0 + k * sp
            cv.paint(cv.rect(lx, yb - 0.6 * sp, lx + 0.01, yb + 0.01), line, _L["road"],
                     _L["asphalt"])
            centre = abs(lx + sp / 2 - W / 2) <= sp / 2 and yb == row_y[-1]
            if centre or r.random() < 0.8:
                items.append((yb, _draw_car, (lx + sp / 2, yb - 0.01, sp * 0.85)))
    if r.random() < 0.3:
        yb = _u(cv, h + 0.2, 0.99)
        items.append((yb, _draw_person, (_u(cv, 0, W), yb, _u(cv, 0.2, 0.35))))
    _draw_items(cv, items)


_SCENE_RENDERERS: dict[str, Callable[[_Canvas], None]] = {
    "street": _scene_street, "park": _scene_park, "beach": _scene_beach,
    "kitchen": _scene_kitchen, "bedroom": _scene_bedroom, "living_room": _scene_living_room,
    "forest": _scene_forest, "highway": _scene_highway, "mountain": _scene_mountain,
    "parking_lot": _scene_parking_lot}
assert tuple(_SCENE_RENDERERS) == SCENE_NAMES


# ----------------------------------------------------------------------------- other sources

def _clutter(cv: _Canvas) -> Texture:
    """Unlabelled multi-colour background blotches."""
    c1, c2, c3 = cv.paint_color(), cv.paint_color(), cv.paint_color()
    t1 = np.clip(cv.lf1 * 0.7 + 0.5, 0, 1)[:, :, None]
    t2 = np.clip(cv.lf2 * 0.5 + 0.5, 0, 1)[:, :, None]
    base = (c1 * t1 + c2 * (1 - t1)) * 0.7 + c3 * 0.3 * t2 + 5 * cv.noise[:, :, None]
    return lambda sy, sx: base[sy, sx]


def _render_objects(cv: _Canvas) -> None:
    r, W = cv.rng, cv.W
    cv.paint(cv.rect(0, 0, W, 1), _clutter(cv))
    kinds = ["car", "person", "house", "tree", "table", "lamp"]
    n = 1 if r.random() < 0.6 else 2
    xs = [W / 2] if n == 1 else [W * 0.3, W * 0.7]
    for x in xs:
        kind = kinds[int(r.integers(len(kinds)))]
        x += _u(cv, -0.08, 0.08)
        yb = _u(cv, 0.85, 0.98)
        if kind == "car":
            _draw_car(cv, x, yb, _u(cv, 0.6, 0.9) if n == 1 else _u(cv, 0.45, 0.6))
        elif kind == "person":
            _draw_person(cv, x, yb, _u(cv, 0.6, 0.8))
        elif kind == "house":
            _draw_house(cv, x, yb, _u(cv, 0.4, 0.52) if n == 1 else _u(cv, 0.3, 0.42))
        elif kind == "tree":
            _draw_tree(cv, x, yb, _u(cv, 0.6, 0.8))
        elif kind == "table":
            _draw_table(cv, x, yb, _u(cv, 0.5, 0.8) if n == 1 else _u(cv, 0.4, 0.5))
        else:
            _draw_lamp(cv, x, yb, _u(cv, 0.5, 0.8))


_MATERIAL_COLORS = {
    "asphalt": ["grey", "black"], "brick": ["red", "orange", "brown"],
    "carpet": list(COLOR_NAMES), "fabric": list(COLOR_NAMES), "glass": ["blue", "grey", "white"],
    "grass": ["green"], "metal": ["grey", "white", "black", "blue", "red", "yellow"],
    "painted": list(COLOR_NAMES), "rock": ["grey", "brown"], "sand": ["yellow", "white", "orange"],
    "skin": ["pink", "orange", "brown"], "snow": ["white"], "tile": ["white", "blue", "grey",
                                                                     "green", "red"],
    "water": ["blue", "green"], "wood": ["brown", "orange"]}
assert set(_MATERIAL_COLORS) == set(MATERIAL_NAMES)


def _random_shape(cv: _Canvas) -> Region | None:
    r, W = cv.rng, cv.W
    cx, cy = _u(cv, 0.15, W - 0.15), _u(cv, 0.15, 0.85)
    a, b = _u(cv, 0.15, 0.4), _u(cv, 0.15, 0.4)
    k = r.random()
    if k < 0.35:
        return cv.rect(cx - a, cy - b, cx + a, cy + b)
    if k < 0.65:
        return cv.ellipse(cx, cy, a, b)
    nv = int(r.integers(3, 7))
    ang = np.sort(r.uniform(0, 2 * np.pi, nv))
    return cv.polygon([(cx + a * math.cos(t), cy + b * math.sin(t)) for t in ang])


def _render_materials(cv: _Canvas) -> None:
    r, W = cv.rng, cv.W
    names = list(MATERIAL_NAMES)
    if r.random() < 0.7:
        m = names[int(r.integers(len(names)))]
        cv.paint(cv.rect(0, 0, W, 1), cv.material(m, cv.paint_color(_MATERIAL_COLORS[m])), None,
                 _L[m])
    else:
        cv.paint(cv.rect(0, 0, W, 1), _clutter(cv))
    for _ in range(int(r.integers(1, 4))):
        m = names[int(r.integers(len(names)))]
        cv.paint(_random_shape(cv), cv.material(m, cv.paint_color(_MATERIAL_COLORS[m])), None,
                 _L[m])


def _texture_pattern(cv: _Canvas, kind: str) -> np.ndarray:
    """(ih, iw) float in [0, 1]: the mix between the two colours of a texture image."""
    r = cv.rng
    Y, X = cv.y[:, None].astype(np.float64), cv.x[None, :].astype(np.float64)
    th = r.uniform(0, np.pi)
    if kind == "grid":
        th = r.uniform(-0.15, 0.15)
    elif kind == "crosshatched":
        th = np.pi / 4 + r.uniform(-0.25, 0.25)
    U = X * math.cos(th) + Y * math.sin(th) + r.uniform(0, 1)
    V = -X * math.sin(th) + Y * math.cos(th) + r.uniform(0, 1)
    if kind == "banded":
        p = r.uniform(0.12, 0.3)
        return np.mod(U / p, 1.0) < r.uniform(0.35, 0.65)
    if kind == "blotchy":
        return (cv.lf2 + 0.5 * cv.lf1 > r.uniform(-0.3, 0.3)).astype(np.float64)
    if kind == "chequered":
        p = r.uniform(0.08, 0.2)
        return np.mod(np.floor(U / p) + np.floor(V / p), 2)
    if kind == "crosshatched":
        p = r.uniform(0.04, 0.07)
        return ((np.mod(U / p, 1.0) < 0.22) | (np.mod(V / p, 1.0) < 0.22)).astype(np.float64)
    if kind == "dotted":
        p = r.uniform(0.07, 0.15)
        rr = r.uniform(0.18, 0.32)
        return ((np.mod(U / p, 1.0) - 0.5) ** 2 + (np.mod(V / p, 1.0) - 0.5) ** 2 < rr * rr)
    if kind == "grid":
        p = r.uniform(0.1, 0.2)
        t = r.uniform(0.08, 0.14)
        return ((np.mod(U / p, 1.0) < t) | (np.mod(V / p, 1.0) < t)).astype(np.float64)
    if kind == "honeycombed":
        R = r.uniform(0.05, 0.1)
        q = (math.sqrt(3) / 3 * U - V / 3) / R
        s_ = (2 / 3 * V) / R
        cx_, cz_ = q, s_
        cy_ = -cx_ - cz_
        rx, ry, rz = np.rint(cx_), np.rint(cy_), np.rint(cz_)
        dx, dy, dz = np.abs(rx - cx_), np.abs(ry - cy_), np.abs(rz - cz_)
        fx = (dx > dy) & (dx > dz)
        fy = ~fx & (dy > dz)
        rx = np.where(fx, -ry - rz, rx)
        ry = np.where(fy, -rx - rz, ry)
        rz = -rx - ry
        ox, oy, oz = cx_ - rx, cy_ - ry, cz_ - rz    # offset from the cell centre (cube)
        dist = np.maximum(np.maximum(np.abs(ox), np.abs(oy)), np.abs(oz))   # 0.5 at edges
        return (dist > r.uniform(0.36, 0.42)).astype(np.float64)
    if kind == "spiralled":
        cx, cy = r.uniform(0.2, cv.W - 0.2), r.uniform(0.2, 0.8)
        ang = np.arctan2(Y - cy, X - cx)
        rad = np.hypot(Y - cy, X - cx)
        arms, p = int(r.integers(1, 4)), r.uniform(0.08, 0.15)
        return np.mod(rad / p + arms * ang / (2 * np.pi), 1.0) < 0.5
    if kind == "zigzagged":
        p, pz, amp = r.uniform(0.1, 0.2), r.uniform(0.08, 0.16), r.uniform(0.04, 0.09)
        tri = 2 * np.abs(V / pz - np.floor(V / pz + 0.5))
        return np.mod((U + amp * tri) / p, 1.0) < 0.5
    raise ValueError(f"unknown texture {kind!r}")


def _render_texture(cv: _Canvas, kind: str) -> None:
    c1 = cv.paint_color()
    c2 = cv.paint_color()
    while np.abs(c1 - c2).sum() < 120:
        c2 = cv.paint_color()
    t = np.asarray(_texture_pattern(cv, kind), dtype=np.float32)[:, :, None]
    img = c1 * t + c2 * (1 - t) + (6 * cv.noise)[:, :, None]
    cv.paint(cv.rect(0, 0, cv.W, 1), lambda sy, sx: img[sy, sx])


# ----------------------------------------------------------------------------- rendering API

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


def _sizes(size: int | Sequence[int]) -> tuple[int, int]:
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


def render_image(index: int, seed: int = 0, image_size: int | Sequence[int] = 224,
                 seg_size: int | Sequence[int] = 112) -> SyntheticImage:
    """Render image ``index`` of the dataset of ``seed`` with its ground truth.

    image_size / seg_size: int (square) or (h, w).
    """
    if index < 0 or seed < 0:
        raise ValueError(f"index and seed must be >= 0, got index={index}, seed={seed}")
    ih, iw = _sizes(image_size)
    sh, sw = _sizes(seg_size)
    if min(ih, iw, sh, sw) < 8 or sh > ih or sw > iw:
        raise ValueError(f"need image_size >= seg_size >= 8, got image {ih}x{iw}, "
                         f"segmentation {sh}x{sw}")
    source = image_source(index, seed)
    rng = np.random.default_rng([seed, 0, index])
    cv = _Canvas(ih, iw, rng, np.random.default_rng([seed, 3, index]))
    scene = texture = None
    if source == "scenes":
        scene = SCENE_NAMES[int(rng.integers(len(SCENE_NAMES)))]
        _SCENE_RENDERERS[scene](cv)
    elif source == "objects":
        _render_objects(cv)
    elif source == "materials":
        _render_materials(cv)
    else:
        texture = TEXTURE_NAMES[int(rng.integers(len(TEXTURE_NAMES)))]
        _render_texture(cv, texture)
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


# ----------------------------------------------------------------------------- writing

def _stem(index: int, num_images: int) -> str:
    return f"{index:0{max(6, len(str(num_images - 1)))}d}"


def _encode_plane(plane: np.ndarray) -> Image.Image:
    rgb = np.zeros(plane.shape + (3,), dtype=np.uint8)
    rgb[:, :, 0] = plane & 255
    rgb[:, :, 1] = plane >> 8
    return Image.fromarray(rgb, "RGB")


def _pixel_counts(planes: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Labels and their pixel counts over the union of ``planes`` (a pixel counts once)."""
    st = np.sort(np.stack(planes).reshape(len(planes), -1), axis=0)
    if len(planes) > 1:
        st[1:][st[1:] == st[:-1]] = 0
    v = st[st != 0]
    labels, counts = np.unique(v, return_counts=True)
    return labels.astype(np.int64), counts.astype(np.int64)


@dataclass
class _Record:
    index: int
    row: dict[str, str]
    counts: dict[str, tuple[np.ndarray, np.ndarray]]   # category -> (labels, pixel counts)


def _write_one(out: Path, index: int, num_images: int, seed: int, ih: int, iw: int,
               sh: int, sw: int) -> _Record:
    g = render_image(index, seed, (ih, iw), (sh, sw))
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
            _encode_plane(plane).save(img_dir / name, "PNG", compress_level=1)
            entries.append(name)
        entries.extend(str(v) for v in g.scalars[cat])
        row[cat] = ";".join(entries)
        if g.planes[cat]:
            counts[cat] = _pixel_counts(g.planes[cat])
        elif g.scalars[cat]:
            s = np.unique(np.array(g.scalars[cat], dtype=np.int64))
            counts[cat] = (s, np.full(s.shape, sh * sw, dtype=np.int64))
    return _Record(index, row, counts)


def _write_chunk(args) -> list[_Record]:
    out, lo, hi, num_images, seed, ih, iw, sh, sw = args
    return [_write_one(Path(out), i, num_images, seed, ih, iw, sh, sw) for i in range(lo, hi)]


def _write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence]) -> None:
    """Write a CSV atomically (temporary file, then rename)."""
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(header)
            w.writerows(rows)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _fmt(x: float) -> str:
    return repr(float(x))        # shortest exact repr: distinct counts stay distinct


def write_dataset(out_dir: str | os.PathLike, num_images: int = 2000,
                  image_size: int | Sequence[int] = 224, seg_size: int | Sequence[int] = 112,
                  seed: int = 0, workers: int | None = None, progress: bool = True) -> Path:
    """Write a complete synthetic Broden directory and return its path.

    Files (overwritten on rerun): category.csv, label.csv, c_<category>.csv, index.csv,
    images/<source>/<index>.jpg and <index>_<category>[_k].png. ``workers``: processes
    (None = all cores, 1 = in this process); the output does not depend on it.
    """
    if num_images < 1:
        raise ValueError(f"num_images must be >= 1, got {num_images}")
    ih, iw = _sizes(image_size)
    sh, sw = _sizes(seg_size)
    render_image(0, seed, (ih, iw), (sh, sw))          # validate arguments early
    out = Path(out_dir)
    for s in SOURCES:
        (out / "images" / s).mkdir(parents=True, exist_ok=True)
    workers = (os.cpu_count() or 1) if workers is None else max(1, int(workers))
    chunk = max(1, min(64, num_images // (workers * 8) or 1))
    jobs = [(str(out), lo, min(lo + chunk, num_images), num_images, seed, ih, iw, sh, sw)
            for lo in range(0, num_images, chunk)]

    G, L = len(CATEGORIES), len(CONCEPTS) + 1
    freq = np.zeros((G, L), dtype=np.int64)       # images with label l in category g
    pix = np.zeros((G, L), dtype=np.int64)        # labelled pixels (scalar: sh*sw per image)
    cat_freq = np.zeros(G, dtype=np.int64)        # images with category g
    rows: list[list[str]] = []
    header = ["image", "split", "ih", "iw", "sh", "sw", *CATEGORIES]

    bar = None
    if progress:
        from tqdm import tqdm
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
            with multiprocessing.get_context("fork").Pool(workers) as pool:
                for recs in pool.imap(_write_chunk, jobs):
                    consume(recs)
    finally:
        if bar is not None:
            bar.close()

    # Category maps: every label of its intended primary category, plus the other
    # categories where it occurred in this dataset.
    npx = sh * sw
    members: list[list[SyntheticConcept]] = []
    for g, cat in enumerate(CATEGORIES):
        members.append([c for c in CONCEPTS
                        if c.category == cat or (cat in c.also and freq[g, c.number] > 0)])
        _write_csv(out / f"c_{cat}.csv", ["code", "number", "name", "frequency", "coverage"],
                   [[code, c.number, c.name, int(freq[g, c.number]),
                     _fmt(pix[g, c.number] / npx)]
                    for code, c in enumerate(members[g], start=1)])
    _write_csv(out / "category.csv", ["name", "first", "last", "count", "frequency"],
               [[cat, min(c.number for c in members[g]), max(c.number for c in members[g]),
                 len(members[g]), int(cat_freq[g])] for g, cat in enumerate(CATEGORIES)])
    label_rows = []
    for c in CONCEPTS:
        gs = [g for g, cat in enumerate(CATEGORIES) if any(m is c for m in members[g])]
        label_rows.append([c.number, c.name,
                           ";".join(f"{CATEGORIES[g]}({int(freq[g, c.number])})" for g in gs),
                           int(sum(freq[g, c.number] for g in gs)),
                           _fmt(sum(pix[g, c.number] for g in gs) / npx), ""])
    _write_csv(out / "label.csv", ["number", "name", "category", "frequency", "coverage", "syns"],
               label_rows)
    _write_csv(out / "index.csv", header, rows)
    return out
