"""Scene renderers of the ``scenes`` source (like ADE20K): sky, ground and objects
composed into one of the ten scene types (:data:`SCENE_RENDERERS`)."""
from __future__ import annotations

from typing import Callable

import numpy as np

from pipeline.synthetic.canvas import Canvas
from pipeline.synthetic.canvas import uniform as _u
from pipeline.synthetic.catalogue import LABELS as _L
from pipeline.synthetic.catalogue import SCENE_NAMES
from pipeline.synthetic.objects import (draw_bed, draw_bench, draw_cabinet, draw_car,
                                        draw_door, draw_house, draw_lamp, draw_mountain,
                                        draw_painting, draw_person, draw_sofa, draw_table,
                                        draw_tree, draw_umbrella)


def _sky(cv: Canvas, h: float) -> None:
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


def _ground(cv: Canvas, y0: float, name: str, mat: str, rgb, y1: float = 1.0) -> None:
    cv.paint(cv.rect(0, y0, cv.W, y1), cv.material(mat, rgb), _L[name], _L[mat])


def _grass_color(cv: Canvas, dark: bool = False):
    return cv.paint_color(["green"]) * (0.75 if dark else 1.0)


def _scene_street(cv: Canvas) -> None:
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
        items.append((yb, draw_house, (_u(cv, 0, W), yb, _u(cv, 0.18, 0.3))))
    for _ in range(int(r.integers(0, 2))):
        yb = _u(cv, h + 0.03, h + 0.12)
        items.append((yb, draw_tree, (_u(cv, 0, W), yb, _u(cv, 0.3, 0.45))))
    for _ in range(int(r.integers(1, 4))):
        yb = _u(cv, h + 0.15, 0.99)
        items.append((yb, draw_car, (_u(cv, 0, W), yb, _u(cv, 0.25, 0.42) * (0.6 + yb - h))))
    for _ in range(int(r.integers(0, 3))):
        yb = _u(cv, h + 0.08, 0.98)
        items.append((yb, draw_person, (_u(cv, 0, W), yb, _u(cv, 0.22, 0.36) * (0.6 + yb - h))))
    _draw_items(cv, items)


def _draw_items(cv: Canvas, items) -> None:
    """Draw (depth, function, args) back to front (smaller depth first; stable)."""
    for _, fn, args in sorted(items, key=lambda t: t[0]):
        fn(cv, *args)


def _scene_park(cv: Canvas) -> None:
    r, W = cv.rng, cv.W
    h = _u(cv, 0.3, 0.5)
    _sky(cv, h)
    _ground(cv, h, "grass", "grass", _grass_color(cv))
    items = []
    for _ in range(int(r.integers(2, 5))):
        yb = _u(cv, h + 0.05, h + 0.3)
        items.append((yb, draw_tree, (_u(cv, 0, W), yb, _u(cv, 0.3, 0.55))))
    for _ in range(int(r.integers(1, 4))):
        yb = _u(cv, h + 0.15, 0.99)
        items.append((yb, draw_person, (_u(cv, 0, W), yb, _u(cv, 0.2, 0.4))))
    if r.random() < 0.5:
        yb = _u(cv, h + 0.1, 0.95)
        items.append((yb, draw_bench, (_u(cv, 0.1, W - 0.1), yb, _u(cv, 0.2, 0.3))))
    _draw_items(cv, items)


def _scene_beach(cv: Canvas) -> None:
    r, W = cv.rng, cv.W
    h = _u(cv, 0.3, 0.45)
    h2 = h + _u(cv, 0.12, 0.25)
    _sky(cv, h)
    _ground(cv, h, "water", "water", cv.paint_color(["blue"]), y1=h2)
    _ground(cv, h2, "sand", "sand", cv.paint_color(["yellow", "white", "orange"], 10) * 0.95)
    items = []
    for _ in range(int(r.integers(1, 4))):
        yb = _u(cv, h2 + 0.1, 0.99)
        items.append((yb, draw_person, (_u(cv, 0, W), yb, _u(cv, 0.2, 0.38))))
    for _ in range(int(r.integers(1, 3))):
        yb = _u(cv, h2 + 0.12, 0.99)
        items.append((yb, draw_umbrella, (_u(cv, 0, W), yb, _u(cv, 0.25, 0.4))))
    _draw_items(cv, items)


def _indoor(cv: Canvas, wall: tuple[str, list[str]], floor: tuple[str, list[str]]) -> float:
    f = _u(cv, 0.6, 0.75)
    cv.paint(cv.rect(0, 0, cv.W, f), cv.material(wall[0], cv.paint_color(wall[1])), _L["wall"],
             _L[wall[0]])
    cv.paint(cv.rect(0, f, cv.W, 1), cv.material(floor[0], cv.paint_color(floor[1])),
             _L["floor"], _L[floor[0]])
    return f


def _room_door(cv: Canvas, f: float) -> tuple:
    """Arguments of :func:`draw_door` for the room door. Drawn last (never occluded),
    its area is >= 0.08 of the image, more than the door parts of at most two cabinets
    (< 0.05 in all: cabinets are at most 0.18 x 0.18, their doors < 3/4 of that)."""
    w, h = _u(cv, 0.16, 0.22), _u(cv, 0.5, 0.6)
    yb = f + _u(cv, 0.0, 0.03)
    return _u(cv, w / 2, cv.W - w / 2), yb, w, h


def _beside(cv: Canvas, w: float, door: tuple) -> float:
    """Centre x of a w-wide item not behind the door (random x if there is no room)."""
    d0, d1 = door[0] - door[2] / 2, door[0] + door[2] / 2
    left = max(0.0, d0 - w)                     # room left of the door: [w/2, d0 - w/2]
    right = max(0.0, cv.W - d1 - w)             # right of it: [d1 + w/2, W - w/2]
    if left + right <= 0:
        return _u(cv, w / 2, max(w / 2, cv.W - w / 2))
    t = _u(cv, 0, left + right)
    return w / 2 + t if t < left else d1 + w / 2 + (t - left)


def _scene_kitchen(cv: Canvas) -> None:
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
        items.append((yb, draw_cabinet, (_beside(cv, w, door), yb, w, _u(cv, 0.1, 0.18))))
    if r.random() < 0.5:
        yb = _u(cv, f + 0.1, 0.98)
        items.append((yb, draw_table, (_u(cv, 0.15, W - 0.15), yb, _u(cv, 0.25, 0.4))))
    _draw_items(cv, items)
    draw_door(cv, *door)


def _scene_bedroom(cv: Canvas) -> None:
    r, W = cv.rng, cv.W
    f = _indoor(cv, ("painted", ["pink", "purple", "blue", "yellow", "white", "green"]),
                ("carpet", ["brown", "grey", "red", "blue", "purple"]))
    door = _room_door(cv, f)
    items = []
    yb = _u(cv, f + 0.15, 0.97)
    items.append((yb, draw_bed, (_u(cv, 0.3, W - 0.3), yb, _u(cv, 0.45, 0.65))))
    if r.random() < 0.6:
        yb = _u(cv, f + 0.02, f + 0.12)
        items.append((yb, draw_lamp, (_u(cv, 0.05, W - 0.05), yb, _u(cv, 0.2, 0.3))))
    if r.random() < 0.5:
        items.append((0, draw_painting, (_u(cv, 0.15, W - 0.15), _u(cv, 0.2, 0.35),
                                         _u(cv, 0.15, 0.25), _u(cv, 0.12, 0.2))))
    if r.random() < 0.4:
        w = _u(cv, 0.1, 0.18)
        yb = _u(cv, f + 0.03, f + 0.1)
        items.append((yb, draw_cabinet, (_beside(cv, w, door), yb, w, _u(cv, 0.1, 0.18))))
    _draw_items(cv, items)
    draw_door(cv, *door)


def _scene_living_room(cv: Canvas) -> None:
    r, W = cv.rng, cv.W
    f = _indoor(cv, ("painted", ["white", "yellow", "grey", "green", "orange", "blue"]),
                ("wood", ["brown", "orange"]))
    items = []
    yb = _u(cv, f + 0.08, 0.9)
    items.append((yb, draw_sofa, (_u(cv, 0.3, W - 0.3), yb, _u(cv, 0.4, 0.6))))
    if r.random() < 0.6:
        yb = _u(cv, 0.9, 0.99)
        items.append((yb, draw_table, (_u(cv, 0.2, W - 0.2), yb, _u(cv, 0.25, 0.4))))
    if r.random() < 0.6:
        yb = _u(cv, f + 0.05, 0.95)
        items.append((yb, draw_lamp, (_u(cv, 0.05, W - 0.05), yb, _u(cv, 0.35, 0.55))))
    for _ in range(int(r.integers(1, 3))):
        items.append((0, draw_painting, (_u(cv, 0.15, W - 0.15), _u(cv, 0.15, 0.35),
                                         _u(cv, 0.15, 0.3), _u(cv, 0.12, 0.22))))
    _draw_items(cv, items)
    if r.random() < 0.6:
        draw_door(cv, *_room_door(cv, f))


def _scene_forest(cv: Canvas) -> None:
    r, W = cv.rng, cv.W
    hg = _u(cv, 0.65, 0.85)
    _sky(cv, hg)
    _ground(cv, hg, "grass", "grass", _grass_color(cv, dark=True))
    palette = ("green",) if r.random() < 0.8 else ("green", "orange", "yellow", "red", "brown")
    items = []
    for _ in range(int(r.integers(5, 10))):
        yb = _u(cv, hg, 1.02)
        items.append((yb, draw_tree, (_u(cv, 0, W), yb, _u(cv, 0.55, 0.95), palette)))
    _draw_items(cv, items)


def _scene_highway(cv: Canvas) -> None:
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
        items.append((yb, draw_car, (x, yb, (0.08 + 0.4 * t) * _u(cv, 0.8, 1.1))))
    for _ in range(int(r.integers(0, 3))):
        yb = _u(cv, h + 0.01, h + 0.05)
        items.append((yb, draw_tree, (_u(cv, 0, W), yb, _u(cv, 0.1, 0.2))))
    _draw_items(cv, items)


def _scene_mountain(cv: Canvas) -> None:
    r, W = cv.rng, cv.W
    h = _u(cv, 0.5, 0.68)
    _sky(cv, h)
    for _ in range(int(r.integers(1, 4))):
        draw_mountain(cv, _u(cv, 0, W), h + 0.001, _u(cv, 0.22, 0.45), _u(cv, 0.5, 1.0))
    lake = r.random() < 0.4
    if lake:
        _ground(cv, h, "water", "water", cv.paint_color(["blue"]))
    else:
        _ground(cv, h, "grass", "grass", _grass_color(cv))
    items = []
    for _ in range(int(r.integers(1, 5))):
        yb = _u(cv, h + 0.02, h + 0.06) if lake else _u(cv, h + 0.05, 1.0)
        T = _u(cv, 0.1, 0.18) if lake else _u(cv, 0.15, 0.35)
        items.append((yb, draw_tree, (_u(cv, 0, W), yb, T)))
    _draw_items(cv, items)


def _scene_parking_lot(cv: Canvas) -> None:
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
                items.append((yb, draw_car, (lx + sp / 2, yb - 0.01, sp * 0.85)))
    if r.random() < 0.3:
        yb = _u(cv, h + 0.2, 0.99)
        items.append((yb, draw_person, (_u(cv, 0, W), yb, _u(cv, 0.2, 0.35))))
    _draw_items(cv, items)


#: Scene name (without ``-s``) -> its renderer, in :data:`SCENE_NAMES` order.
SCENE_RENDERERS: dict[str, Callable[[Canvas], None]] = {
    "street": _scene_street, "park": _scene_park, "beach": _scene_beach,
    "kitchen": _scene_kitchen, "bedroom": _scene_bedroom, "living_room": _scene_living_room,
    "forest": _scene_forest, "highway": _scene_highway, "mountain": _scene_mountain,
    "parking_lot": _scene_parking_lot}
assert tuple(SCENE_RENDERERS) == SCENE_NAMES
