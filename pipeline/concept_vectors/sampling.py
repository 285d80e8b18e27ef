"""The bounded, seeded pixel sample of each concept on the training images.

Split: a seeded uniform permutation of the N images; the first round(f * N) are the
training images, the rest the held-out ones (one split for every concept).

For concept c of primary category g, on the training images:

- positives: the pixels of L_c(x) (every pixel of x when c is a scalar label of x);
- negatives: the other pixels of the training images in X_g (images holding a label of
  category g), the images the scoring's union counts a unit's mask over.

Up to ``n // 2`` positives are drawn uniformly without replacement from all of them and
the negatives fill the rest (up to n in all), so a concept's sample never exceeds n
pixels whatever N is. Draws are ranks among the candidates (images in index order,
pixels in raster order): the counts of pass one (:func:`label_counts`) place each rank
in an image, and :func:`sample_features` finds the pixels when that image is read.
Each concept's draws come from its own generator (seed, c), so they do not depend on
which other concepts are asked for. Only the sampled pixels are upsampled
(:func:`pixel_features`, the scoring's lerp arithmetic at those pixels).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.upsample import bilinear_weights


def split_images(num_images: int, train_fraction: float, seed: int) -> np.ndarray:
    """(N,) bool, True for training images: a seeded permutation's first round(f * N)
    (at least 1, and at least one image held out). ValueError naming train_fraction."""
    if not 0.0 < train_fraction < 1.0:
        raise ValueError(f"--train-fraction must be in (0, 1), got {train_fraction}")
    if num_images < 2:
        raise ValueError(f"a train/held-out split needs at least 2 images, got {num_images}")
    n = min(num_images - 1, max(1, int(round(train_fraction * num_images))))
    perm = np.random.default_rng([seed, 0]).permutation(num_images)
    train = np.zeros(num_images, dtype=bool)
    train[perm[:n]] = True
    return train


def label_counts(planes: np.ndarray, scalars: np.ndarray, num_labels: int) -> np.ndarray:
    """(B, L) int64 |L_c(x)| per image of a tile: canonical planes (B, P, sh, sw) (each
    pixel's labels distinct) and scalars (B, S) (a scalar label covers all sh * sw)."""
    B = planes.shape[0]
    S = planes.shape[2] * planes.shape[3]
    L = num_labels
    base = (np.arange(B, dtype=np.int64) * L)
    out = np.bincount((planes.reshape(B, -1).astype(np.int64) + base[:, None]).ravel(),
                      minlength=B * L).reshape(B, L)
    sc = scalars.reshape(B, -1).astype(np.int64)
    out += np.bincount((sc + base[:, None]).ravel(), minlength=B * L).reshape(B, L) * S
    out[:, 0] = 0
    return out


@dataclass
class ConceptSample:
    """Where one concept's sampled pixels are, before they are read.

    image:  (n,) int64 image index, ascending
    pos:    (n,) bool, True for a positive (a pixel of L_c), False for a negative
    rank:   (n,) int64 rank of the pixel among the image's positives (or negatives) in
            raster order
    candidates: (positives, negatives) on the training images, all of them
    """
    label: int
    image: np.ndarray
    pos: np.ndarray
    rank: np.ndarray
    candidates: tuple[int, int]

    @property
    def size(self) -> int:
        return int(self.image.size)


def _draw(rng, images: np.ndarray, counts: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    """m ranks drawn uniformly without replacement among sum(counts) candidates laid
    out image after image: (image (m,), rank within its image (m,)), sorted."""
    total = int(counts.sum())
    if m <= 0 or total == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    r = np.sort(rng.choice(total, size=m, replace=False)).astype(np.int64)
    ends = np.cumsum(counts)
    at = np.searchsorted(ends, r, side="right")
    return images[at], r - (ends[at] - counts[at])


def plan_sample(label: int, counts_images: np.ndarray, counts: np.ndarray,
                category_images: np.ndarray, pixels_per_image: int, n: int, seed: int
                ) -> ConceptSample:
    """The sample of concept ``label``: counts_images (m,) the training images holding it
    and counts (m,) its pixels there; category_images (M,) the training images of its
    category, ascending; n the sample size (positives up to n // 2, negatives the rest)."""
    rng = np.random.default_rng([seed, 1, int(label)])
    P = int(counts.sum())
    pos_img, pos_rank = _draw(rng, counts_images, counts, min(P, n // 2))
    per = np.full(category_images.size, pixels_per_image, dtype=np.int64)
    where = np.searchsorted(category_images, counts_images)
    ok = (where < category_images.size)
    ok[ok] = category_images[where[ok]] == counts_images[ok]
    per[where[ok]] -= counts[ok]
    Nn = int(per.sum())
    neg_img, neg_rank = _draw(rng, category_images, per, min(Nn, n - pos_img.size))
    image = np.concatenate([pos_img, neg_img])
    pos = np.concatenate([np.ones(pos_img.size, bool), np.zeros(neg_img.size, bool)])
    rank = np.concatenate([pos_rank, neg_rank])
    order = np.lexsort((rank, ~pos, image))
    return ConceptSample(int(label), image[order], pos[order], rank[order], (P, Nn))


def concept_mask(planes: np.ndarray, scalars: np.ndarray, label: int) -> np.ndarray:
    """(sh, sw) bool L_c(x) of one image: canonical planes (P, sh, sw), scalars (S,)."""
    if label in scalars:
        return np.ones(planes.shape[1:], dtype=bool)
    return (planes == label).any(axis=0)


def pixel_features(maps: np.ndarray, pixels: np.ndarray, seg_size: tuple[int, int]
                   ) -> np.ndarray:
    """(m, K) float64 upsampled activations S_k(x) at flat pixels (m,) of one image:
    maps (K, h, w); the arithmetic of pipeline.upsample.upsample at those pixels only
    (bit for bit)."""
    K, h, w = maps.shape
    sh, sw = seg_size
    y0, y1, wy = bilinear_weights(h, sh)
    x0, x1, wx = bilinear_weights(w, sw)
    Y, X = np.divmod(np.asarray(pixels, dtype=np.int64), sw)
    a = maps.astype(np.float64)
    left0, left1 = a[:, y0[Y], x0[X]], a[:, y1[Y], x0[X]]
    top = left0 + wx[X] * (a[:, y0[Y], x1[X]] - left0)
    bot = left1 + wx[X] * (a[:, y1[Y], x1[X]] - left1)
    return (top + wy[Y] * (bot - top)).T


def image_features(maps: np.ndarray, planes: np.ndarray, scalars: np.ndarray,
                   samples: list[ConceptSample], starts: list[int], image: int,
                   seg_size: tuple[int, int]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per sample (in order), (rows (m,) into that concept's sample, features (m, K))
    of its pixels in ``image``: maps (K, h, w), planes (P, sh, sw), scalars (S,) of it;
    starts[i] the first row of ``image`` in samples[i] (its rows are contiguous)."""
    out = []
    for s, a in zip(samples, starts):
        b = a + int(np.searchsorted(s.image[a:], image, side="right"))
        mask = concept_mask(planes, scalars, s.label).ravel()
        pos = s.pos[a:b]
        flat = np.empty(b - a, dtype=np.int64)
        flat[pos] = np.flatnonzero(mask)[s.rank[a:b][pos]]
        flat[~pos] = np.flatnonzero(~mask)[s.rank[a:b][~pos]]
        out.append((np.arange(a, b), pixel_features(maps, flat, seg_size)))
    return out
