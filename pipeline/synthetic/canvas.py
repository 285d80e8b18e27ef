"""The painter's canvas one image is drawn on: RGB, label maps, regions and textures.

Geometry is continuous (units of image height, y down); masks are rendered at image
resolution (a pixel is inside a shape when its centre is). Textures are closures
``(rows, cols) -> (h, w, 3) float32`` over random parameters drawn when they are made.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
from PIL import Image

from pipeline.synthetic.catalogue import COLOR_NAMES

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

Region = tuple[slice, slice, np.ndarray]          # rows, cols, (h, w) bool mask
Texture = Callable[[slice, slice], np.ndarray]    # rows, cols -> (h, w, 3) float32


class Canvas:
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
        """Procedural texture of material ``kind`` around base colour ``rgb``.

        One branch per material, each drawing its random parameters from ``self.rng`` in
        the order written (the order fixes every image), hence the length.
        """
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


def uniform(cv: Canvas, a: float, b: float) -> float:
    """A uniform random float in [a, b) from the canvas' geometry generator ``cv.rng``."""
    return float(cv.rng.uniform(a, b))


def clutter(cv: Canvas) -> Texture:
    """Unlabelled multi-colour background blotches."""
    c1, c2, c3 = cv.paint_color(), cv.paint_color(), cv.paint_color()
    t1 = np.clip(cv.lf1 * 0.7 + 0.5, 0, 1)[:, :, None]
    t2 = np.clip(cv.lf2 * 0.5 + 0.5, 0, 1)[:, :, None]
    base = (c1 * t1 + c2 * (1 - t1)) * 0.7 + c3 * 0.3 * t2 + 5 * cv.noise[:, :, None]
    return lambda sy, sx: base[sy, sx]
