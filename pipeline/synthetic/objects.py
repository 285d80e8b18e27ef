"""Object drawers (house, car, person, ... door) and the ``objects`` source renderer.

Each ``draw_<object>(cv, x, yb, size...)`` paints one object with its parts and
materials on a :class:`~pipeline.synthetic.canvas.Canvas`, bottom centre at (x, yb).
:func:`render_objects` draws the ``objects`` source (like Pascal-Part): one or two
large objects on unlabelled clutter.
"""
from __future__ import annotations

import numpy as np

from pipeline.synthetic.canvas import Canvas, clutter
from pipeline.synthetic.canvas import uniform as _u
from pipeline.synthetic.catalogue import LABELS as _L


def draw_house(cv: Canvas, x: float, yb: float, s: float) -> None:
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


def draw_car(cv: Canvas, x: float, yb: float, length: float) -> None:
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


def draw_person(cv: Canvas, x: float, yb: float, P: float) -> None:
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


def draw_tree(cv: Canvas, x: float, yb: float, T: float, palette=("green",)) -> None:
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


def draw_bench(cv: Canvas, x: float, yb: float, w: float) -> None:
    o = _L["bench"]
    kind = "wood" if cv.rng.random() < 0.6 else "metal"
    tex = cv.material(kind, cv.paint_color(["brown"] if kind == "wood" else ["grey", "green",
                                                                             "black"]))
    h = w * 0.45
    for t in (-0.4, 0.35):
        cv.paint(cv.rect(x + t * w, yb - 0.5 * h, x + (t + 0.05) * w, yb), tex, o, _L[kind])
    cv.paint(cv.rect(x - w / 2, yb - 0.58 * h, x + w / 2, yb - 0.45 * h), tex, o, _L[kind])
    cv.paint(cv.rect(x - w / 2, yb - h, x + w / 2, yb - 0.8 * h), tex, o, _L[kind])


def draw_umbrella(cv: Canvas, x: float, yb: float, h: float) -> None:
    o = _L["umbrella"]
    pole = cv.material("metal", cv.paint_color(["white", "grey"]))
    cv.paint(cv.rect(x - 0.015 * h, yb - 0.85 * h, x + 0.015 * h, yb), pole, o, _L["metal"])
    canopy = cv.material("fabric", cv.paint_color(["red", "yellow", "orange", "blue", "white",
                                                   "pink", "green"]))
    cy = yb - 0.8 * h
    cv.paint(cv.ellipse(x, cy, 0.5 * h, 0.25 * h, ymax=cy), canopy, o, _L["fabric"])


def draw_mountain(cv: Canvas, x: float, yb: float, Hm: float, Wm: float) -> None:
    o = _L["mountain"]
    apex = (x, yb - Hm)
    cv.paint(cv.polygon([(x - Wm / 2, yb), (x + Wm / 2, yb), apex]),
             cv.material("rock", cv.paint_color(["grey", "brown", "purple"])), o, _L["rock"])
    if cv.rng.random() < 0.6:
        f = _u(cv, 0.2, 0.4)
        cv.paint(cv.polygon([(x - f * Wm / 2, yb - (1 - f) * Hm), (x + f * Wm / 2,
                                                                   yb - (1 - f) * Hm), apex]),
                 cv.material("snow", cv.paint_color(["white"], 6)), o, _L["snow"])


def draw_cabinet(cv: Canvas, x: float, yb: float, w: float, h: float) -> None:
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


def draw_table(cv: Canvas, x: float, yb: float, w: float) -> None:
    o = _L["table"]
    tex = cv.material("wood", cv.paint_color(["brown", "orange", "white"]))
    h = w * _u(cv, 0.45, 0.6)
    lw = 0.06 * w
    for t in (-0.45, 0.45 - 0.06):
        cv.paint(cv.rect(x + t * w, yb - h, x + t * w + lw, yb), tex, o, _L["wood"], _L["leg"])
    cv.paint(cv.rect(x - w / 2, yb - h, x + w / 2, yb - h + 0.12 * h), tex, o, _L["wood"],
             _L["tabletop"])


def draw_bed(cv: Canvas, x: float, yb: float, w: float) -> None:
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


def draw_lamp(cv: Canvas, x: float, yb: float, h: float) -> None:
    o = _L["lamp"]
    stand = cv.material("metal", cv.paint_color(["black", "grey", "yellow"]))
    cv.paint(cv.rect(x - 0.1 * h, yb - 0.05 * h, x + 0.1 * h, yb), stand, o, _L["metal"])
    cv.paint(cv.rect(x - 0.02 * h, yb - 0.75 * h, x + 0.02 * h, yb), stand, o, _L["metal"])
    cv.paint(cv.polygon([(x - 0.2 * h, yb - 0.65 * h), (x + 0.2 * h, yb - 0.65 * h),
                         (x + 0.12 * h, yb - h), (x - 0.12 * h, yb - h)]),
             cv.material("fabric", cv.paint_color(["white", "yellow", "orange", "pink"])), o,
             _L["fabric"], _L["lampshade"])


def draw_sofa(cv: Canvas, x: float, yb: float, w: float) -> None:
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


def draw_painting(cv: Canvas, x: float, y: float, w: float, h: float) -> None:
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


def draw_door(cv: Canvas, x: float, yb: float, w: float, h: float) -> None:
    o = _L["door"]
    kind = "wood" if cv.rng.random() < 0.6 else "painted"
    cv.paint(cv.rect(x - w / 2, yb - h, x + w / 2, yb),
             cv.material(kind, cv.paint_color(["brown", "orange"] if kind == "wood"
                                              else ["white", "grey", "blue", "green", "red"])),
             o, _L[kind])
    kx = x + 0.32 * w * (1 if cv.rng.random() < 0.5 else -1)
    cv.paint(cv.ellipse(kx, yb - 0.48 * h, 0.05 * w, 0.05 * w),
             cv.material("metal", cv.paint_color(["yellow", "grey"])), o, _L["metal"])


def render_objects(cv: Canvas) -> None:
    """The ``objects`` source: one or two large objects (car, person, house, tree,
    table, lamp) on unlabelled clutter."""
    r, W = cv.rng, cv.W
    cv.paint(cv.rect(0, 0, W, 1), clutter(cv))
    kinds = ["car", "person", "house", "tree", "table", "lamp"]
    n = 1 if r.random() < 0.6 else 2
    xs = [W / 2] if n == 1 else [W * 0.3, W * 0.7]
    for x in xs:
        kind = kinds[int(r.integers(len(kinds)))]
        x += _u(cv, -0.08, 0.08)
        yb = _u(cv, 0.85, 0.98)
        if kind == "car":
            draw_car(cv, x, yb, _u(cv, 0.6, 0.9) if n == 1 else _u(cv, 0.45, 0.6))
        elif kind == "person":
            draw_person(cv, x, yb, _u(cv, 0.6, 0.8))
        elif kind == "house":
            draw_house(cv, x, yb, _u(cv, 0.4, 0.52) if n == 1 else _u(cv, 0.3, 0.42))
        elif kind == "tree":
            draw_tree(cv, x, yb, _u(cv, 0.6, 0.8))
        elif kind == "table":
            draw_table(cv, x, yb, _u(cv, 0.5, 0.8) if n == 1 else _u(cv, 0.4, 0.5))
        else:
            draw_lamp(cv, x, yb, _u(cv, 0.5, 0.8))
