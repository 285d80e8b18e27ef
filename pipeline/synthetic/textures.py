"""Renderers of the ``materials`` source (like OpenSurfaces: textured material
regions) and the ``textures`` source (like DTD: one whole-image pattern)."""
from __future__ import annotations

import math

import numpy as np

from pipeline.synthetic.canvas import Canvas, Region, clutter
from pipeline.synthetic.canvas import uniform as _u
from pipeline.synthetic.catalogue import LABELS as _L
from pipeline.synthetic.catalogue import COLOR_NAMES, MATERIAL_NAMES

_MATERIAL_COLORS = {
    "asphalt": ["grey", "black"], "brick": ["red", "orange", "brown"],
    "carpet": list(COLOR_NAMES), "fabric": list(COLOR_NAMES), "glass": ["blue", "grey", "white"],
    "grass": ["green"], "metal": ["grey", "white", "black", "blue", "red", "yellow"],
    "painted": list(COLOR_NAMES), "rock": ["grey", "brown"], "sand": ["yellow", "white", "orange"],
    "skin": ["pink", "orange", "brown"], "snow": ["white"], "tile": ["white", "blue", "grey",
                                                                     "green", "red"],
    "water": ["blue", "green"], "wood": ["brown", "orange"]}
assert set(_MATERIAL_COLORS) == set(MATERIAL_NAMES)


def random_shape(cv: Canvas) -> Region | None:
    """A random rectangle, ellipse or convex polygon of 0.3-0.8 image heights across."""
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


def render_materials(cv: Canvas) -> None:
    """The ``materials`` source: a material or clutter background and one to three
    random shapes of random materials."""
    r, W = cv.rng, cv.W
    names = list(MATERIAL_NAMES)
    if r.random() < 0.7:
        m = names[int(r.integers(len(names)))]
        cv.paint(cv.rect(0, 0, W, 1), cv.material(m, cv.paint_color(_MATERIAL_COLORS[m])), None,
                 _L[m])
    else:
        cv.paint(cv.rect(0, 0, W, 1), clutter(cv))
    for _ in range(int(r.integers(1, 4))):
        m = names[int(r.integers(len(names)))]
        cv.paint(random_shape(cv), cv.material(m, cv.paint_color(_MATERIAL_COLORS[m])), None,
                 _L[m])


def texture_pattern(cv: Canvas, kind: str) -> np.ndarray:
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


def render_texture(cv: Canvas, kind: str) -> None:
    """The ``textures`` source: the whole image in texture ``kind``, two contrasting
    paint colours mixed by :func:`texture_pattern`."""
    c1 = cv.paint_color()
    c2 = cv.paint_color()
    while np.abs(c1 - c2).sum() < 120:
        c2 = cv.paint_color()
    t = np.asarray(texture_pattern(cv, kind), dtype=np.float32)[:, :, None]
    img = c1 * t + c2 * (1 - t) + (6 * cv.noise)[:, :, None]
    cv.paint(cv.rect(0, 0, cv.W, 1), lambda sy, sx: img[sy, sx])
