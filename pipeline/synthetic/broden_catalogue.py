"""The 1,197-label catalogue of the ``broden`` profile: Broden's categories, sources and
label frequencies (:func:`broden_catalogue`).

Category sizes are Broden's (object 584, part 234, scene 468, material 32, texture 47,
color 11). They add up to 1,376 for 1,197 labels because 179 labels are in two
categories (:data:`DOUBLES`): 165 are a part and an object (``window``, ``door``,
``wheel``, ``roof`` ...: a part of buildings, cars, cabinets and now and then an object on
its own) and 14 a material and an object (``grass``, ``water``, ``sand``, ``snow``,
``rock`` ...: ground stuff in scene images). The intended primary category of a double is
the later one in category.csv order (part, material): it is the one a coverage tie at 0
gives, and the object role is drawn far less often (a part double's with
:data:`SECONDARY` times its part probability, a material double's with 3 x SECONDARY
times its first-material weight), so the primary role has the larger coverage except
for a few rare labels whose object role happened to occur more (13 of the 179 at
N = 3,000; the reader decides by coverage, as for Broden).

Each image source draws labels with fixed probabilities (:class:`Role`): a Bernoulli
draw per label (``bernoulli``), or one label by weight plus a Bernoulli draw of the
others (``first_extra``). The expected number of images of each label at full size
(63,305 images, :data:`SOURCE_IMAGES`) follows from them, heavy-tailed (Zipf-like):
wall on 78% of scene images, person on most object images, the median label on a few
dozen images. Label numbers 1..1197 are in the order of that expected frequency, as
Broden's are; colour labels are named from rendered pixels, so their expected frequency
is an estimate (:data:`COLOR_SHARE`, measured on the renderer).

Each label also has a fixed look (:class:`Looks`): a base colour, a material texture
kind and a shape, the same in every dataset, so the labels can be learnt from pixels.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from pipeline.synthetic.catalogue import (CATEGORIES, COLOR_NAMES, MATERIAL_NAMES,
                                          SCENE_NAMES, SyntheticConcept)

CATEGORY_SIZES: dict[str, int] = {"color": 11, "object": 584, "part": 234, "material": 32,
                                  "scene": 468, "texture": 47}
NUM_LABELS = 1197
#: Labels in two categories: (categories, how many).
DOUBLES: dict[tuple[str, str], int] = {("object", "part"): 165, ("object", "material"): 14}
#: Images per source in Broden (63,305 in all); folder name -> count.
SOURCE_IMAGES: dict[str, int] = {"ade20k": 22210, "pascal": 10103, "opensurfaces": 25352,
                                 "dtd": 5640}
#: Source folder -> the categories its images carry.
SOURCE_CATEGORIES: dict[str, tuple[str, ...]] = {
    "ade20k": ("color", "object", "part", "scene"), "pascal": ("color", "object", "part"),
    "opensurfaces": ("color", "material"), "dtd": ("color", "texture")}
#: A double's role in its secondary category (object) is drawn this often relative to
#: its primary role.
SECONDARY = 0.1

# Readable names, most frequent first; the rest are ``object_0026``-style (the number is
# the label's frequency rank within its category's single-category labels).
_OBJECTS = ("wall", "sky", "floor", "tree", "ceiling", "person", "building", "road", "car",
            "table", "chair", "plant", "cabinet", "mountain", "house", "bed", "lamp", "sofa",
            "painting", "bench", "umbrella", "shelf", "curtain", "fence", "rug")
_STUFF = {"wall", "sky", "floor", "ceiling", "building", "road", "mountain", "grass", "water",
          "sand", "snow", "rock"}
#: Named parts, most frequent first, and whether each is also an object.
_PARTS = (("window", True), ("door", True), ("head", False), ("wheel", True), ("leg", False),
          ("arm", False), ("torso", False), ("roof", True), ("hair", False),
          ("drawer", True), ("headlight", True), ("pillow", True), ("cushion", True),
          ("trunk", False), ("foliage", False), ("chimney", True), ("tabletop", False),
          ("headboard", True), ("lampshade", True))
#: Named materials, most frequent first, and whether each is also an object.
_MATERIALS = (("painted", False), ("wood", False), ("fabric", False), ("glass", False),
              ("grass", True), ("metal", False), ("tile", False), ("water", True),
              ("carpet", False), ("brick", False), ("rock", True), ("skin", False),
              ("sand", True), ("asphalt", False), ("snow", True))
_TEXTURES = ("banded", "blotchy", "braided", "bubbly", "bumpy", "chequered", "cobwebbed",
             "cracked", "crosshatched", "crystalline", "dotted", "fibrous", "flecked",
             "freckled", "frilly", "gauzy", "grid", "grooved", "honeycombed", "interlaced",
             "knitted", "lacelike", "lined", "marbled", "matted", "meshed", "paisley",
             "perforated", "pitted", "pleated", "polka-dotted", "porous", "potholed", "scaly",
             "smeared", "spiralled", "sprinkled", "stained", "stratified", "striped",
             "studded", "swirly", "veined", "waffled", "woven", "wrinkled", "zigzagged")
#: The nine patterns the renderer draws (pipeline/synthetic/textures.py); texture label
#: k uses pattern k mod 9 with its own two colours.
PATTERNS = ("banded", "blotchy", "chequered", "crosshatched", "dotted", "grid",
            "honeycombed", "spiralled", "zigzagged")
#: Share of images holding each colour label, measured on 800 images of the renderer
#: (seed 1, full size); it only places the colour labels among the others.
COLOR_SHARE: dict[str, float] = {
    "black": 0.57, "blue": 0.48, "brown": 0.78, "grey": 0.79, "green": 0.38,
    "orange": 0.37, "pink": 0.46, "purple": 0.20, "red": 0.22, "white": 0.52,
    "yellow": 0.18}


#: Colours of the named stuff (the others get a random paint colour).
_STUFF_RGB = {"sky": (110, 160, 225), "grass": (70, 140, 50), "water": (40, 90, 170),
              "snow": (238, 238, 240), "sand": (222, 196, 120), "road": (105, 105, 108),
              "floor": (140, 96, 56), "wall": (215, 210, 195), "ceiling": (235, 235, 230)}


@dataclass(frozen=True)
class Role:
    """How one source draws the labels of one category.

    labels: (n,) int64 label numbers; kind ``bernoulli``: each label independently with
    probability ``p`` (n,) float64; kind ``first_extra``: one label with weights
    ``first`` (n,) (summing to 1), then each other label independently with ``p``.
    """
    kind: str
    labels: np.ndarray
    p: np.ndarray
    first: np.ndarray | None = None

    def share(self) -> np.ndarray:
        """(n,) float64: probability that an image of the source holds each label."""
        if self.kind == "bernoulli":
            return self.p.copy()
        return self.first + (1 - self.first) * self.p


@dataclass(frozen=True)
class Looks:
    """Fixed appearance of every label, indexed by label number (row 0 unused).

    rgb (L, 3) float32 base colour; kind (L,) int64 index into
    :data:`pipeline.synthetic.catalogue.MATERIAL_NAMES` (the fill texture); shape (L,)
    int64 0 rect, 1 ellipse, 2 diamond; aspect (L,) float64 width / height; box (L, 4)
    float64 a part's box (y0, x0, y1, x1) in its parent's box, in [0, 1]; stuff (L,)
    bool drawn as a horizontal band; depth (L,) float64 a band's vertical order.
    """
    rgb: np.ndarray
    kind: np.ndarray
    shape: np.ndarray
    aspect: np.ndarray
    box: np.ndarray
    stuff: np.ndarray
    depth: np.ndarray


@dataclass(frozen=True)
class BrodenCatalogue:
    """Every label (:attr:`concepts`, label-number order), the roles of each source
    (``roles[source][category]``), the expected image count of each label at full size
    (``expected`` (L,) float64, index = label number) and the labels' looks."""
    concepts: tuple[SyntheticConcept, ...]
    roles: dict[str, dict[str, Role]]
    expected: np.ndarray
    looks: Looks
    color_numbers: np.ndarray     # (12,) int64: demo colour number (0..11) -> label number

    def number(self, name: str) -> int:
        """Label number of ``name`` (KeyError if unknown)."""
        return _index(self.concepts)[name]


@functools.lru_cache(maxsize=None)
def _index(concepts: tuple[SyntheticConcept, ...]) -> dict[str, int]:
    return {c.name: c.number for c in concepts}


def _zipf(n: int, top: float, s: float, start: int = 1) -> np.ndarray:
    """(n,) ``top * (r / start) ** -s`` for ranks r = start .. start + n - 1."""
    r = np.arange(start, start + n, dtype=np.float64)
    return top * (r / start) ** -s


def _spread(n: int, k: int) -> np.ndarray:
    """(n,) bool with exactly k True, evenly spread (True at i when floor((i+1)k/n)
    steps)."""
    i = np.arange(1, n + 1)
    return (i * k) // n != ((i - 1) * k) // n


def _names(named: tuple, prefix: str, n: int, doubles: int) -> list[tuple[str, bool]]:
    """(name, is_double) for n labels: ``named`` ((name, double) pairs) first, then
    ``<prefix>_NNNN`` with the remaining doubles evenly spread."""
    out = list(named)
    rest = n - len(out)
    flags = _spread(rest, doubles - sum(d for _, d in out))
    out += [(f"{prefix}_{len(named) + i + 1:04d}", bool(f)) for i, f in enumerate(flags)]
    return out


@dataclass
class _Draft:
    """A label before numbering: name, primary and other categories, expected image
    count at full size, whether scene images draw it as a band."""
    name: str
    category: str
    also: tuple[str, ...] = ()
    expected: float = 0.0
    stuff: bool = False


def _drafts() -> tuple[list[_Draft], dict[str, dict[str, tuple[str, list[int], dict]]]]:
    """Every label as a :class:`_Draft` and, per source and category, the role's kind,
    the draft indices it draws and its probability arrays (see :func:`_roles`)."""
    drafts: list[_Draft] = []

    def add(names: list[str], cat: str, also=(), stuff=()) -> list[int]:
        first = len(drafts)
        drafts.extend(_Draft(n, cat, also, stuff=n in stuff) for n in names)
        return list(range(first, len(drafts)))

    colors = add([f"{n}-c" for n in COLOR_NAMES], "color")
    n_op, n_om = DOUBLES[("object", "part")], DOUBLES[("object", "material")]
    n_obj = CATEGORY_SIZES["object"] - n_op - n_om
    objects = add(list(_OBJECTS) + [f"object_{i:04d}" for i in range(len(_OBJECTS) + 1,
                                                                        n_obj + 1)],
                  "object", stuff=_STUFF)
    parts = _names(_PARTS, "part", CATEGORY_SIZES["part"], n_op)
    part_ix = [add([n], "part", ("object",) if d else ())[0] for n, d in parts]
    mats = _names(_MATERIALS, "material", CATEGORY_SIZES["material"], n_om)
    mat_ix = [add([n], "material", ("object",) if d else (), stuff=_STUFF)[0]
              for n, d in mats]
    scenes = add([f"{n}-s" for n in SCENE_NAMES] + [
        f"scene_{i:04d}-s" for i in range(len(SCENE_NAMES) + 1, CATEGORY_SIZES["scene"] + 1)],
        "scene")
    textures = add(list(_TEXTURES), "texture")
    assert len(drafts) == NUM_LABELS and len({d.name for d in drafts}) == NUM_LABELS
    for k, name in zip(colors, COLOR_NAMES):
        drafts[k].expected = COLOR_SHARE[name] * sum(SOURCE_IMAGES.values())
    return drafts, _roles(drafts, objects, part_ix, mat_ix, scenes, textures)


def _roles(drafts, objects, parts, mats, scenes, textures):
    """Per source and category: (kind, draft indices, {"p": ..., "first": ...}).

    The parameters (tuned by hand) give Broden-like figures at full size: about 7
    objects and 3 parts per scene image, the median label on ~40 images, the rarest
    on ~16.
    """
    # ADE objects: a few labels on most images, then a Zipf tail.
    p_obj = np.concatenate([[0.78, 0.58, 0.55, 0.45, 0.42, 0.40],
                            _zipf(len(objects) - 6, 0.3, 1.5, start=7)])
    p_part_ade = _zipf(len(parts), 0.9, 1.3)
    p_part_pas = _zipf(len(parts), 0.7, 1.35)
    dbl_parts = [k for k in parts if drafts[k].also]
    dbl_mats = [k for k in mats if drafts[k].also]
    p_mat_first = _zipf(len(mats), 1.0, 1.0)
    p_mat_first /= p_mat_first.sum()
    ade_objects = objects + dbl_parts + dbl_mats
    p_ade_objects = np.concatenate([
        p_obj, SECONDARY * p_part_ade[[parts.index(k) for k in dbl_parts]],
        3 * SECONDARY * p_mat_first[[mats.index(k) for k in dbl_mats]]])
    # Pascal: one main thing (person on 60% of them), context objects as extras.
    things = [k for k in objects if not drafts[k].stuff]
    w_pas = _zipf(len(things), 1.0, 1.3)
    w_pas[things.index(objects[_OBJECTS.index("person")])] = 1.5 * w_pas.sum()
    w_pas /= w_pas.sum()
    first_pas = np.zeros(len(ade_objects))
    first_pas[[ade_objects.index(k) for k in things]] = w_pas
    w_scene = _zipf(len(scenes), 1.0, 0.6)
    w_tex = _zipf(len(textures), 1.0, 0.25)
    return {
        "ade20k": {"object": ("bernoulli", ade_objects, {"p": p_ade_objects}),
                   "part": ("bernoulli", parts, {"p": p_part_ade}),
                   "scene": ("first_extra", scenes, {"first": w_scene / w_scene.sum(),
                                                     "p": np.zeros(len(scenes))})},
        "pascal": {"object": ("first_extra", ade_objects, {"first": first_pas,
                                                          "p": 0.4 * p_ade_objects}),
                   "part": ("bernoulli", parts, {"p": p_part_pas})},
        "opensurfaces": {"material": ("first_extra", mats, {
            "first": p_mat_first, "p": np.minimum(0.5, 1.3 * p_mat_first)})},
        "dtd": {"texture": ("first_extra", textures, {
            "first": w_tex / w_tex.sum(), "p": np.full(len(textures), 0.45 / len(textures))})},
    }


def _looks(drafts: list[_Draft], order: np.ndarray) -> Looks:
    """Fixed looks of the labels, drawn per label in catalogue order from a generator of
    their own (so a label looks the same whatever its number and in every dataset), then
    indexed by label number (drafts[order[i]] is label i + 1)."""
    from pipeline.synthetic.canvas import _PAINT
    n = NUM_LABELS
    rng = np.random.default_rng(1197)
    paint = [np.asarray(v, np.float32) for c in COLOR_NAMES for v in _PAINT[c]]
    rgb = np.stack([paint[i] for i in rng.integers(len(paint), size=n)])
    kind = rng.integers(len(MATERIAL_NAMES), size=n)
    shape = rng.integers(3, size=n)
    aspect = np.exp(rng.uniform(-0.6, 0.6, size=n))
    bh, bw = rng.uniform(0.6, 0.8, size=n), rng.uniform(0.6, 0.8, size=n)
    y0, x0 = rng.uniform(0, 1, size=n) * (1 - bh), rng.uniform(0, 1, size=n) * (1 - bw)
    box = np.stack([y0, x0, y0 + bh, x0 + bw], axis=1)
    depth = rng.uniform(0, 1, size=n)
    for k, d in enumerate(drafts):
        if d.category == "material":          # materials: their own texture kind
            kind[k] = (MATERIAL_NAMES.index(d.name) if d.name in MATERIAL_NAMES
                       else k % len(MATERIAL_NAMES))
        if d.name in _STUFF_RGB:
            rgb[k] = _STUFF_RGB[d.name]
        if d.name in ("sky", "ceiling"):
            depth[k] = -1.0                      # bands on top
        elif d.name in ("floor", "road", "grass", "water", "sand", "snow"):
            depth[k] = 2.0                       # bands at the bottom
    stuff = np.array([d.stuff for d in drafts])

    def by_number(a: np.ndarray) -> np.ndarray:
        return np.concatenate([np.zeros_like(a[:1]), a[order]])
    return Looks(*(by_number(a) for a in (rgb, kind, shape, aspect, box, stuff, depth)))


@functools.lru_cache(maxsize=1)
def broden_catalogue() -> BrodenCatalogue:
    """The catalogue (built once per process; the same every time)."""
    drafts, spec = _drafts()
    for src, cats in spec.items():
        for kind, ix, arrays in cats.values():
            share = Role(kind, np.asarray(ix), arrays["p"], arrays.get("first")).share()
            for k, s in zip(ix, share):
                drafts[k].expected += SOURCE_IMAGES[src] * s
    # numbers by expected frequency, ties by catalogue order
    order = np.lexsort((np.arange(NUM_LABELS), -np.array([d.expected for d in drafts])))
    number = np.empty(NUM_LABELS, np.int64)
    number[order] = np.arange(1, NUM_LABELS + 1)
    concepts = tuple(SyntheticConcept(i, drafts[k].name, drafts[k].category, drafts[k].also)
                     for i, k in enumerate(order, start=1))
    roles = {src: {cat: Role(kind, number[np.asarray(ix)], arrays["p"], arrays.get("first"))
                   for cat, (kind, ix, arrays) in cats.items()} for src, cats in spec.items()}
    expected = np.concatenate([[0.0], [drafts[k].expected for k in order]])
    color_numbers = np.zeros(len(COLOR_NAMES) + 1, np.int64)
    color_numbers[1:] = number[:len(COLOR_NAMES)]         # colours are drafts 0..10
    assert tuple(CATEGORIES) == tuple(CATEGORY_SIZES)
    return BrodenCatalogue(concepts, roles, expected, _looks(drafts, order), color_numbers)
