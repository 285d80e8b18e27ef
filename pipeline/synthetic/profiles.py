"""The dataset profiles the writer can produce (:func:`get_profile`): their labels,
source folders, image renderer and how their category maps are listed.

- ``demo``   (the default): 81 concepts, four sources (pipeline/synthetic/catalogue.py,
  render.py); small, realistic-looking, fast to score.
- ``broden`` Broden's statistics: 1,197 labels in Broden's category sizes, its four
  sources in its proportions, heavy-tailed frequencies, 5-7 labels per pixel in scene
  images (pipeline/synthetic/broden_catalogue.py, broden_render.py).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable

from pipeline.synthetic.catalogue import SyntheticConcept
from pipeline.synthetic.render import SyntheticImage

#: Profile names, the default first, with a line of help each.
PROFILES: dict[str, str] = {
    "demo": "81 concepts, four sources, realistic-looking scenes (default)",
    "broden": "Broden's statistics: 1,197 labels (object 584, part 234, scene 468, "
              "material 32, texture 47, color 11), ADE20K/Pascal/OpenSurfaces/DTD "
              "sources in Broden's proportions, Zipf-like frequencies, label numbers "
              "above 1,024, 5-7 labels per pixel",
}


@dataclass(frozen=True)
class Profile:
    """A dataset profile.

    render(index, seed, num_images, image_size, seg_size) -> SyntheticImage;
    ``list_all``: c_<category>.csv lists every label that belongs to the category
    (Broden's category sizes at any N); otherwise a label's second category lists it
    only where it occurred (the demo's rule).
    """
    name: str
    concepts: tuple[SyntheticConcept, ...]
    sources: tuple[str, ...]
    render: Callable[..., SyntheticImage]
    list_all: bool


def _render_demo(index: int, seed: int, num_images: int, image_size, seg_size
                 ) -> SyntheticImage:
    from pipeline.synthetic.render import render_image
    return render_image(index, seed, image_size, seg_size)


@functools.lru_cache(maxsize=None)
def get_profile(name: str) -> Profile:
    """The profile called ``name`` (one of :data:`PROFILES`); ValueError otherwise."""
    if name == "demo":
        from pipeline.synthetic.catalogue import CONCEPTS, SOURCES
        return Profile("demo", CONCEPTS, tuple(SOURCES), _render_demo, False)
    if name == "broden":
        from pipeline.synthetic.broden_catalogue import broden_catalogue
        from pipeline.synthetic.broden_render import render_broden_image
        from pipeline.synthetic.broden_sources import SOURCES
        return Profile("broden", broden_catalogue().concepts, SOURCES, render_broden_image,
                       True)
    raise ValueError(f"profile must be one of {', '.join(PROFILES)}; got {name!r}")
