"""The fixed label catalogue of synthetic Broden: categories, concepts and label numbers.

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

Like Broden, images come from *sources* that label different categories (:data:`SOURCES`).
"""
from __future__ import annotations

from dataclasses import dataclass

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
