"""Render one image of the ``broden`` profile and its ground truth (a
:class:`~pipeline.synthetic.render.SyntheticImage`), fast rather than realistic.

Per source (pipeline/synthetic/broden_sources.py draws the labels):

- ``ade20k``: "stuff" objects (wall, sky, floor ...) as horizontal bands, the other
  objects as shapes in a grid of cells, parts as nested boxes inside them in chains of
  two to four levels (one part plane per level, so pixels carry colour, object, up to
  four parts and the scene: 5-7 labels), a scene scalar that tints the image.
- ``pascal``: the same objects on unlabelled clutter, one level of parts.
- ``opensurfaces``: a material background and material shapes.
- ``dtd``: one to three texture scalars (more than two extra textures drawn: the first
  two kept): the first texture's pattern over the whole image, the others blended in.

Every label is painted with its own fixed look (colour, material texture, shape:
:class:`~pipeline.synthetic.broden_catalogue.Looks`), so a model could learn it. For
speed the canvas is at segmentation size (the label planes are its maps) and the image
is its bilinear upsampling to image size; the colour plane names the image's pixels
box-downsampled to segmentation size, as in the demo profile. Everything depends on
(seed, number of images, index) alone.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from pipeline.synthetic.broden_catalogue import PATTERNS, BrodenCatalogue, broden_catalogue
from pipeline.synthetic.broden_sources import SOURCES, draw, image_sources
from pipeline.synthetic.canvas import Canvas, Region, Texture, clutter
from pipeline.synthetic.catalogue import CATEGORIES, MATERIAL_NAMES
from pipeline.synthetic.colors import color_labels, downsample_rgb
from pipeline.synthetic.render import SyntheticImage, check_request, image_split
from pipeline.synthetic.textures import random_shape, texture_pattern

#: Part planes (part-of-part levels) at most.
MAX_PART_LEVELS = 4


class _PartCanvas(Canvas):
    """The canvas with :data:`MAX_PART_LEVELS` part maps (``levels``) instead of two,
    and a cheaper finish (speed matters more than realism here)."""

    def __init__(self, ih: int, iw: int, rng, noise_rng):
        super().__init__(ih, iw, rng, noise_rng)
        self.levels = [np.zeros((ih, iw), dtype=np.int32) for _ in range(MAX_PART_LEVELS)]
        self.used = 0                     # part levels painted so far

    def put(self, region: Region | None, tex: Texture, obj: int | None = None,
            mat: int | None = None, part: int = 0, level: int = 0) -> None:
        """Paint ``tex`` on ``region``; ``obj`` set: the object map takes it and the
        part maps are cleared there; ``mat`` set: the material map takes it; ``level``
        >= 1: part map ``level`` takes ``part`` and the deeper ones are cleared."""
        if region is None:
            return
        sy, sx, m = region
        if m.all():                                  # rectangles: no mask needed
            self.rgb[sy, sx] = tex(sy, sx)
            m = slice(None)
        else:
            np.copyto(self.rgb[sy, sx], tex(sy, sx), where=m[:, :, None])
        if obj is not None:
            self.obj[sy, sx][m] = obj
        if mat is not None:
            self.mat[sy, sx][m] = mat
        if level:
            self.levels[level - 1][sy, sx][m] = part
            self.used = max(self.used, level)
        if obj is not None or level:
            for k in range(level, self.used):
                self.levels[k][sy, sx][m] = 0

    def finish(self) -> np.ndarray:
        """A random gain and pixel noise, quantised: (ih, iw, 3) uint8."""
        gain = (np.float32(self.rng.uniform(0.85, 1.12))
                * (1 + self.rng.uniform(-0.05, 0.05, 3)).astype(np.float32))
        img = self.rgb                                  # finished in place
        img *= gain
        img += (2.0 * self.noise)[:, :, None]
        return np.clip(img, 0, 255, out=img).astype(np.uint8)


@dataclass
class _Host:
    """A painted region parts can go on: its box (x0, y0, x1, y1, canvas units) and
    region."""
    box: tuple[float, float, float, float]
    region: Region


def _look(cv: Canvas, cat: BrodenCatalogue, label: int) -> Texture:
    """The fill of ``label``: its material texture around its colour, jittered."""
    lk = cat.looks
    rgb = np.clip(lk.rgb[label] + cv.rng.uniform(-12, 12, 3).astype(np.float32), 0, 255)
    return cv.material(MATERIAL_NAMES[lk.kind[label]], rgb)


def _shape(cv: Canvas, kind: int, x0: float, y0: float, x1: float, y1: float
           ) -> Region | None:
    """Shape ``kind`` (0 rect, 1 ellipse, 2 diamond) filling the box."""
    if kind == 0:
        return cv.rect(x0, y0, x1, y1)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    if kind == 1:
        return cv.ellipse(cx, cy, (x1 - x0) / 2, (y1 - y0) / 2)
    return cv.polygon([(cx, y0), (x1, cy), (cx, y1), (x0, cy)])


def _inside(inner: Region | None, outer: Region) -> Region | None:
    """``inner`` cut to the pixels of ``outer`` (inner's slices lie within outer's)."""
    if inner is None:
        return None
    sy, sx, m = inner
    osy, osx, om = outer
    m = m & om[sy.start - osy.start:sy.stop - osy.start, sx.start - osx.start:sx.stop - osx.start]
    return (sy, sx, m) if m.any() else None


def _bands(cv: _PartCanvas, cat: BrodenCatalogue, stuff: np.ndarray) -> list[_Host]:
    """Stuff labels as full-width horizontal bands in their depth order (random
    heights); unlabelled clutter when there is none."""
    if stuff.size == 0:
        cv.put(cv.rect(0, 0, cv.W, 1), clutter(cv))
        return []
    stuff = stuff[np.argsort(cat.looks.depth[stuff], kind="stable")]
    edges = np.concatenate([[0.0], np.cumsum(cv.rng.uniform(0.5, 1.5, stuff.size))])
    edges /= edges[-1]
    hosts = []
    for label, y0, y1 in zip(stuff, edges[:-1], edges[1:]):
        region = cv.rect(0, y0, cv.W, y1)
        cv.put(region, _look(cv, cat, label), obj=int(label))
        if region is not None:
            hosts.append(_Host((0.0, y0, cv.W, y1), region))
    return hosts


def _things(cv: _PartCanvas, cat: BrodenCatalogue, things: np.ndarray) -> list[_Host]:
    """Object labels as shapes (their look) in a grid of cells, one per cell, in a
    random order of cells; returns the painted ones."""
    if things.size == 0:
        return []
    cols = math.ceil(math.sqrt(things.size * cv.W))
    rows = math.ceil(things.size / cols)
    cells = cv.rng.permutation(rows * cols)[:things.size]
    cw, ch = cv.W / cols, 1.0 / rows
    hosts = []
    lk = cat.looks
    for label, cell in zip(things, cells):
        r, c = divmod(int(cell), cols)
        f = cv.rng.uniform(0.65, 0.95)
        a = lk.aspect[label]
        w, h = (cw * f, cw * f / a) if a * ch > cw else (ch * f * a, ch * f)
        x = c * cw + cv.rng.uniform(0, cw - w)
        y = r * ch + cv.rng.uniform(0, ch - h)
        region = _shape(cv, int(lk.shape[label]), x, y, x + w, y + h)
        cv.put(region, _look(cv, cat, label), obj=int(label))
        if region is not None:
            hosts.append(_Host((x, y, x + w, y + h), region))
    return hosts


def _parts(cv: _PartCanvas, cat: BrodenCatalogue, hosts: list[_Host], parts: np.ndarray,
           max_levels: int) -> None:
    """Paint ``parts`` on ``hosts`` in chains of up to ``max_levels`` nested levels
    (chain lengths 2..max_levels while parts last); chains sharing a host sit in
    side-by-side strips of it."""
    if not hosts or parts.size == 0:
        return
    chains, rest = [], list(cv.rng.permutation(parts))
    while rest:
        n = int(cv.rng.integers(2, max_levels + 1)) if max_levels > 1 else 1
        chains.append(rest[:n])
        rest = rest[n:]
    per_host: dict[int, list[list[int]]] = {}
    for j, chain in enumerate(chains):
        per_host.setdefault(j % len(hosts), []).append(chain)
    for h, host_chains in per_host.items():
        x0, y0, x1, y1 = hosts[h].box
        sw = (x1 - x0) / len(host_chains)
        for s, chain in enumerate(host_chains):
            _chain(cv, cat, chain, (x0 + s * sw, y0, x0 + (s + 1) * sw, y1), hosts[h].region)


def _chain(cv: _PartCanvas, cat: BrodenCatalogue, chain: list[int],
           box: tuple[float, float, float, float], parent: Region) -> None:
    """One chain of parts: part k at level k + 1 in its look's box of the part above."""
    lk = cat.looks
    for level, label in enumerate(chain, start=1):
        x0, y0, x1, y1 = box
        by0, bx0, by1, bx1 = lk.box[label]
        box = (x0 + bx0 * (x1 - x0), y0 + by0 * (y1 - y0),
               x0 + bx1 * (x1 - x0), y0 + by1 * (y1 - y0))
        region = _inside(_shape(cv, int(lk.shape[label]), *box), parent)
        if region is None:
            return
        cv.put(region, _look(cv, cat, label), part=int(label), level=level)
        parent = region


def _objects_and_parts(cv: _PartCanvas, cat: BrodenCatalogue, objects: np.ndarray,
                       parts: np.ndarray, max_levels: int) -> None:
    stuff = objects[cat.looks.stuff[objects]]
    bands = _bands(cv, cat, stuff)
    things = _things(cv, cat, objects[~cat.looks.stuff[objects]])
    _parts(cv, cat, things or bands, parts, max_levels)


def _materials(cv: _PartCanvas, cat: BrodenCatalogue, mats: np.ndarray) -> None:
    """The first material over the whole image, the others as random shapes."""
    cv.put(cv.rect(0, 0, cv.W, 1), _look(cv, cat, mats[0]), mat=int(mats[0]))
    for m in mats[1:]:
        cv.put(random_shape(cv), _look(cv, cat, m), mat=int(m))


def _textures(cv: _PartCanvas, cat: BrodenCatalogue, textures: np.ndarray) -> None:
    """The first texture's pattern in its colour and the complementary one; each
    further texture's pattern blended in at 40% in its own colour."""
    img = None
    for label in textures:
        c1 = np.clip(cat.looks.rgb[label] + cv.rng.uniform(-12, 12, 3), 0, 255)
        t = np.asarray(texture_pattern(cv, PATTERNS[label % len(PATTERNS)]),
                       dtype=np.float32)[:, :, None]
        if img is None:
            img = c1 * t + (255 - c1) * (1 - t)
        else:
            img = img * (1 - 0.4 * t) + c1 * (0.4 * t)
    img = img + (6 * cv.noise)[:, :, None]
    cv.put(cv.rect(0, 0, cv.W, 1), lambda sy, sx: img[sy, sx])


def render_broden_image(index: int, seed: int, num_images: int, image_size=224,
                        seg_size=112) -> SyntheticImage:
    """Image ``index`` of the ``broden``-profile dataset of ``num_images`` images and
    ``seed``. image_size / seg_size: int (square) or (h, w)."""
    (ih, iw), (sh, sw) = check_request(index, seed, image_size, seg_size)
    if index >= num_images:
        raise ValueError(f"index {index} out of range for num_images={num_images}")
    cat = broden_catalogue()
    source = SOURCES[image_sources(num_images, seed)[index]]
    rng = np.random.default_rng([seed, 20, index])
    cv = _PartCanvas(sh, sw, rng, np.random.default_rng([seed, 23, index]))
    roles = cat.roles[source]
    scalars: dict[str, list[int]] = {c: [] for c in CATEGORIES}
    if source in ("ade20k", "pascal"):
        objects, parts = draw(roles["object"], rng), draw(roles["part"], rng)
        _objects_and_parts(cv, cat, objects, parts, MAX_PART_LEVELS if source == "ade20k"
                           else 1)
    if source == "ade20k":
        scalars["scene"] = [int(draw(roles["scene"], rng)[0])]
        cv.rgb *= 0.8 + 0.4 * cat.looks.rgb[scalars["scene"][0]] / 255   # the scene's tint
    elif source == "opensurfaces":
        _materials(cv, cat, draw(roles["material"], rng))
    elif source == "dtd":
        textures = draw(roles["texture"], rng)
        scalars["texture"] = [int(t) for t in textures[:3]]
        _textures(cv, cat, textures[:3])
    small = cv.finish()
    image = small if (sh, sw) == (ih, iw) else np.asarray(
        Image.fromarray(small).resize((iw, ih), Image.BILINEAR))
    return SyntheticImage(index=index, source=source, split=image_split(index, seed),
                          image=image, planes=_planes(cv, cat, image, source),
                          scalars=scalars, scene=_name(cat, scalars["scene"]),
                          texture=_name(cat, scalars["texture"]))


def _name(cat: BrodenCatalogue, labels: list[int]) -> str | None:
    return cat.concepts[labels[0] - 1].name if labels else None


def _planes(cv: _PartCanvas, cat: BrodenCatalogue, image: np.ndarray, source: str
            ) -> dict[str, list[np.ndarray]]:
    """The label planes of the source's categories (the canvas is at segmentation
    size): colour named from the image box-downsampled to it, object, the part levels
    in use, material; empty planes dropped."""
    planes: dict[str, list[np.ndarray]] = {c: [] for c in CATEGORIES}
    small = downsample_rgb(image, cv.ih, cv.iw)
    planes["color"] = [cat.color_numbers[color_labels(small)].astype(np.int32)]
    if source in ("ade20k", "pascal"):
        planes["object"] = [cv.obj]
        planes["part"] = list(cv.levels)
    if source == "opensurfaces":
        planes["material"] = [cv.mat]
    for c in planes:
        planes[c] = [p for p in planes[c] if p.any()]
    return planes
