"""Which source each image of the ``broden`` profile comes from, and which labels it draws.

:func:`source_counts` splits N images over Broden's four sources in Broden's proportions
(exactly 22,210 / 10,103 / 25,352 / 5,640 at N = 63,305; largest remainders otherwise);
:func:`image_sources` orders them by a permutation of the seed, so any image's source
depends on (seed, N, index) only. :func:`draw` draws one image's labels of one role
(pipeline/synthetic/broden_catalogue.py :class:`Role`).
"""
from __future__ import annotations

import functools

import numpy as np

from pipeline.synthetic.broden_catalogue import SOURCE_IMAGES, Role

#: Source folders in index order of :func:`image_sources`.
SOURCES: tuple[str, ...] = tuple(SOURCE_IMAGES)


def source_counts(num_images: int) -> dict[str, int]:
    """Images per source for a dataset of ``num_images``: Broden's counts scaled, floors
    plus one for the largest remainders (ties: source order); they add up to N."""
    if num_images < 1:
        raise ValueError(f"num_images must be >= 1, got {num_images}")
    total = sum(SOURCE_IMAGES.values())
    quota = [num_images * n / total for n in SOURCE_IMAGES.values()]
    counts = [int(q) for q in quota]
    by_remainder = sorted(range(len(quota)), key=lambda k: (-(quota[k] - counts[k]), k))
    for k in by_remainder[:num_images - sum(counts)]:
        counts[k] += 1
    return dict(zip(SOURCE_IMAGES, counts))


@functools.lru_cache(maxsize=4)
def image_sources(num_images: int, seed: int) -> np.ndarray:
    """(num_images,) int8 index into :data:`SOURCES` of every image: the counts of
    :func:`source_counts` in an order drawn from ``seed``."""
    counts = source_counts(num_images)
    ids = np.repeat(np.arange(len(SOURCES), dtype=np.int8), list(counts.values()))
    perm = np.random.default_rng([seed, 21, num_images]).permutation(num_images)
    out = ids[perm]
    out.flags.writeable = False
    return out


def draw(role: Role, rng: np.random.Generator) -> np.ndarray:
    """Label numbers one image holds in ``role``: (k,) int64, distinct, the ``first``
    label (kind ``first_extra``) leading, the rest in catalogue order."""
    hit = rng.random(role.labels.size) < role.p
    if role.kind == "bernoulli":
        return role.labels[hit]
    k = int(np.searchsorted(np.cumsum(role.first), rng.random() * role.first.sum(),
                            side="right"))
    k = min(k, role.labels.size - 1)
    hit[k] = False
    return np.concatenate([role.labels[k:k + 1], role.labels[hit]])
