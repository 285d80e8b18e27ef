"""A null model for "detector": permutation p-values of each unit's IoU.

For unit k and its stored threshold T_k, the mask M_k(x) = S_k(x) > T_k (the scoring's
upsampling, bit for bit) is compared with the labels of a seeded random subsample of n
images (all images when n >= N). Two nulls, each with R replicates shared by all units:

``image`` (image shuffle)
    Replicate r pairs the mask of image j with the labels of image sigma_r(j), sigma_r a
    uniform random permutation of the n images: masks are kept whole, only which image
    they are compared with is random. This destroys any relation between where the unit
    fires and what the image contains. Per replicate
    I_r(c) = sum_j |M(j) ∩ L_c(sigma_r(j))|, A_r(g) = sum_j |M(j)| [sigma_r(j) in X_g].
``spatial`` (rigid motion of the mask on the image torus)
    Replicate r moves the mask of every image j by its own random symmetry of the torus:
    an optional transposition (square masks only), optional vertical and horizontal flips,
    then a cyclic shift (dy, dx) uniform over (sh, sw). Each image's mask keeps its shape,
    its pixel count (so A is unchanged) and its image; only *where* in the image it lies is
    random. Whole-image labels (scenes, textures) cannot notice: their overlap is the same
    under every motion, so a unit whose best concept is one gets p_spatial = 1 (the null
    cannot test it).

The statistic is the unit's score, the best IoU over the scored concepts, computed the same
way on the observed and on every permuted mask (IoU(c) = I / (A(g(c)) + |L_c| - I) over the
n images, by :func:`pipeline.scoring.iou_matrix`):
p = (1 + #{r: best_r >= best_obs}) / (1 + R). Taking the best concept again in every
replicate accounts for having picked the best of many concepts (a noise unit's best IoU is
the largest of many chance overlaps). ``p_concept`` is the same test for the unit's label
alone (its IoU with the concept it was labelled with on all images), which is not
corrected for that choice and is small for noise units on small datasets. Ties count
against the unit; a unit with an empty mask gets p = 1. Nothing is corrected for testing
many units.

Cost: activations (n, K, h, w) are read in unit groups and labels (n, P, sh, sw) once;
per unit and replicate the work is a gather of the P label slots at each active pixel and
a bincount, so about R x (active pixels) x P operations in total.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import NamedTuple, Sequence

import numpy as np
import torch

from pipeline.scoring import iou_matrix
from pipeline.upsample import upsample

KINDS = ("image", "spatial")


class NullLabels:
    """The labels of a null model's image subsample, kept for the next layer: the layers
    of a run draw the same subsample (same seed and number of images), so their null
    models build its labels once. A :class:`NullConfig` holds one (``sample``), and a run
    makes one NullConfig for all its layers (scripts/score.py)."""

    def __init__(self):
        self._key: tuple | None = None
        self._labels: _Labels | None = None

    def get(self, labels, idx: np.ndarray, full: bool) -> "_Labels":
        """The :class:`_Labels` of images ``idx`` (all of them when ``full``) of the label
        cache ``labels``, built unless they are the ones kept."""
        key = (str(labels.path), labels.fingerprint, idx.tobytes())
        if self._key != key:
            self._labels, self._key = _Labels(labels, idx, full), key
        return self._labels


@dataclass
class NullConfig:
    """kinds: subset of KINDS; permutations: R; images: subsample size n (None: all);
    seed: of the subsample, the permutations and the motions; group_bytes and
    chunk_elements are memory knobs (elements per vectorised step), torch_threads the
    threads used for the upsampling; sample: the subsample's labels kept across the
    layers scored with this config (:class:`NullLabels`; not compared or printed)."""
    kinds: Sequence[str] = KINDS
    permutations: int = 100
    images: int | None = 500
    seed: int = 0
    group_bytes: int = 64 << 20
    chunk_elements: int = 1 << 22
    torch_threads: int | None = 1
    sample: NullLabels = field(default_factory=NullLabels, repr=False, compare=False)

    def check(self) -> None:
        bad = [k for k in self.kinds if k not in KINDS]
        if bad or not self.kinds:
            raise ValueError(f"--null: unknown kind(s) {bad or list(self.kinds)}; "
                             f"choose from {list(KINDS)} or 'both'")
        if int(self.permutations) < 1:
            raise ValueError(f"--null-permutations must be >= 1, got {self.permutations}")
        if self.images is not None and int(self.images) < 1:
            raise ValueError(f"--null-images must be >= 1 (or 'all'), got {self.images}")


@dataclass
class NullResult:
    """Per unit (K,) arrays. iou_sample: best IoU over the scored concepts on the n images;
    concept: the unit's label (label number, 0 = none) and concept_iou_sample its IoU there;
    p / p_concept / null_mean / null_max: per kind. images: (n,) image indices used."""
    kinds: list[str]
    permutations: int
    seed: int
    images: np.ndarray
    concept: np.ndarray
    iou_sample: np.ndarray
    concept_iou_sample: np.ndarray
    p: dict[str, np.ndarray] = field(default_factory=dict)
    p_concept: dict[str, np.ndarray] = field(default_factory=dict)
    null_mean: dict[str, np.ndarray] = field(default_factory=dict)
    null_max: dict[str, np.ndarray] = field(default_factory=dict)
    seconds: float = 0.0


def p_value(null: np.ndarray, observed) -> np.ndarray | float:
    """(1 + #{null >= observed}) / (1 + R); null (R,) or (R, X) with observed (X,)."""
    null = np.asarray(null)
    hits = np.count_nonzero(null >= np.asarray(observed), axis=0)
    out = (1.0 + hits) / (1.0 + null.shape[0])
    return float(out) if np.ndim(out) == 0 else out


def _motions(rng, R: int, n: int, sh: int, sw: int) -> np.ndarray:
    """(5, R, n) int64: transpose, flip y, flip x, dy, dx per replicate and image."""
    tr = rng.integers(0, 2, (R, n)) if sh == sw else np.zeros((R, n), dtype=np.int64)
    return np.stack([tr, rng.integers(0, 2, (R, n)), rng.integers(0, 2, (R, n)),
                     rng.integers(0, sh, (R, n)), rng.integers(0, sw, (R, n))])


class _Labels:
    """Labels of the subsample as the null needs them.

    sid: (n * sh * sw,) int64, each pixel's label-set id (its distinct plane labels);
    sets: (n_sets, L) scipy CSR 0/1 matrix, the labels of each set; scalars: (n, S) int64;
    present: (n, G) bool; label_pixels: (L,) int64 |L_c| over the subsample."""

    def __init__(self, labels, idx: np.ndarray, full: bool):
        from scipy import sparse
        get = (lambda a: a[:]) if full else (lambda a: a.oindex[idx])
        planes = np.asarray(get(labels.planes))                    # (n, P, sh, sw)
        n, P, sh, sw = planes.shape
        L = labels.num_labels
        used = [s for s in range(P) if planes[:, s].any()]
        rows = planes[:, used].reshape(n, len(used), sh * sw).transpose(0, 2, 1)
        rows = rows.reshape(n * sh * sw, len(used))
        self.sid, slots = _set_ids(rows, L)
        r, c = np.nonzero(slots)
        self.sets = sparse.csr_matrix((np.ones(r.size), (r, slots[r, c].astype(np.int64))),
                                      shape=(slots.shape[0], L))
        self.sets.data[:] = 1.0                                    # duplicates: a set
        self.scalars = np.asarray(get(labels.scalars)).astype(np.int64)
        self.present = np.asarray(get(labels.present), dtype=bool)
        lp = np.bincount(self.sid, minlength=slots.shape[0]) @ self.sets
        lp = np.asarray(lp).ravel().astype(np.int64)
        lp += np.bincount(self.scalars.reshape(-1), minlength=L)[:L] * (sh * sw)
        lp[0] = 0
        self.label_pixels = lp
        self.n, self.S, self.L = n, sh * sw, L


def _set_ids(rows: np.ndarray, L: int) -> tuple[np.ndarray, np.ndarray]:
    """Label-set ids of rows (M, P) of label slots: (ids (M,) int64, slots (n_sets, P) of
    each set). Slots are packed into int64 keys (re-numbered when they would overflow)."""
    M, P = rows.shape
    ids = np.zeros(M, dtype=np.int64)
    nk = 1
    for s in range(P):
        if nk * L >= 2 ** 62:
            uniq, ids = np.unique(ids, return_inverse=True)
            ids, nk = ids.reshape(-1).astype(np.int64), uniq.size
        ids = ids * L + rows[:, s]
        nk *= L
    uniq, ids = np.unique(ids, return_inverse=True)
    ids = ids.reshape(-1).astype(np.int64)
    first = np.empty(uniq.size, dtype=np.int64)
    first[ids] = np.arange(M)                           # a row of each set
    return ids, rows[first].astype(np.int64).reshape(uniq.size, P)


class _Scorer:
    """IoU of counts over the subsample (:func:`pipeline.scoring.iou_matrix`): I (R, L),
    A (R, G) -> (best over kept (R,), IoU with one concept (R,))."""

    def __init__(self, lab: _Labels, primary: np.ndarray, keep: np.ndarray):
        self.primary = primary
        self.keep = keep & (primary >= 0)
        self.keep[0] = False
        self.lp = lab.label_pixels

    def __call__(self, I: np.ndarray, A: np.ndarray, c: int) -> tuple[np.ndarray, np.ndarray]:
        iou = iou_matrix(I, A, self.lp, self.primary)
        best = np.where(self.keep[None, :], iou, 0.0).max(axis=1)
        return best, (iou[:, c] if c > 0 else np.zeros(I.shape[0]))


def _count(lab: _Labels, flat: np.ndarray) -> np.ndarray:
    """(Rc, L) float64 plane-label counts of the pixels flat (Rc, m)."""
    Rc = flat.shape[0]
    ns = lab.sets.shape[0]
    keys = lab.sid[flat]
    keys += (np.arange(Rc, dtype=np.int64) * ns)[:, None]
    per_set = np.bincount(keys.reshape(-1), minlength=Rc * ns).reshape(Rc, ns)
    return np.asarray((lab.sets.T @ per_set.T.astype(np.float64)).T)


def _scalar_count(scalars: np.ndarray, img: np.ndarray, cnt: np.ndarray, L: int
                  ) -> np.ndarray:
    """(Rc, L) float64: sum over images i of cnt_i at each scalar label of image img[r, i]."""
    Rc = img.shape[0]
    sc = scalars[img]                                               # (Rc, nJ, S)
    keys = sc + (np.arange(Rc, dtype=np.int64) * L)[:, None, None]
    wts = np.broadcast_to(cnt[None, :, None], sc.shape)
    return np.bincount(keys.reshape(-1), weights=wts.reshape(-1),
                       minlength=Rc * L).reshape(Rc, L)


def _active_pixels(maps: np.ndarray, T: float, seg: tuple[int, int], chunk: int
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Active pixels of M = upsample(maps) > T: (image j (m,), flat pixel p (m,)) int64,
    sorted by j. maps: (n, h, w) of one unit; maps whose maximum does not exceed T are
    skipped (bilinear values never exceed their inputs)."""
    live = np.flatnonzero(maps.reshape(maps.shape[0], -1).max(axis=1).astype(np.float64) > T)
    js, ps = [], []
    S = seg[0] * seg[1]
    step = max(1, chunk // S)
    for s in range(0, live.size, step):
        j = live[s:s + step]
        up = upsample(torch.from_numpy(np.ascontiguousarray(maps[j])), seg)
        jj, pp = np.nonzero((up > T).reshape(j.size, S).numpy())
        js.append(j[jj])
        ps.append(pp)
    if not js:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(js).astype(np.int64), np.concatenate(ps).astype(np.int64)


class _Mask(NamedTuple):
    """A unit's mask over the subsample: its active pixels (image j (m,), flat pixel
    p (m,)) sorted by j, the images J (nJ,) holding one and their active pixels cnt (nJ,)
    int64 and cntf (nJ,) float64."""
    j: np.ndarray
    p: np.ndarray
    J: np.ndarray
    cnt: np.ndarray
    cntf: np.ndarray


def _unit_null(j, p, lab: _Labels, score: _Scorer, c: int, kinds, sigma, motions, seg,
               chunk: int) -> tuple[float, float, dict]:
    """Observed (best IoU, IoU with c) and per kind the (R,) null best and null IoU(c)."""
    S, L = lab.S, lab.L
    J, cnt = np.unique(j, return_counts=True)
    m = _Mask(j, p, J, cnt, cnt.astype(np.float64))
    I_sc = _scalar_count(lab.scalars, J[None, :], m.cntf, L)       # (1, L)
    A_obs = (lab.present[J] * m.cntf[:, None]).sum(axis=0)[None, :]  # (1, G)
    I_obs = _count(lab, (j * S + p)[None, :]) + I_sc
    best_obs, conc_obs = score(I_obs, A_obs, c)
    out = {}
    per = max(1, chunk // max(1, j.size))
    if "image" in kinds:
        out["image"] = _image_null(m, lab, score, c, sigma, per)
    if "spatial" in kinds:
        out["spatial"] = _spatial_null(m, lab, score, c, motions, seg, per, I_sc, A_obs)
    return float(best_obs[0]), float(conc_obs[0]), out


def _image_null(m: _Mask, lab: _Labels, score: _Scorer, c: int, sigma: np.ndarray,
                per: int) -> tuple[np.ndarray, np.ndarray]:
    """(R,) null best and IoU(c) of the image shuffle: replicate r compares the mask of
    image j with the labels of image sigma[r, j]; ``per`` replicates at a time."""
    S, L = lab.S, lab.L
    R = sigma.shape[0]
    nb, nc = np.empty(R), np.empty(R)
    for r0 in range(0, R, per):
        img = sigma[r0:r0 + per][:, m.J]                            # (Rc, nJ) label image
        flat = np.repeat(img * S, m.cnt, axis=1)
        flat += m.p
        I = _count(lab, flat) + _scalar_count(lab.scalars, img, m.cntf, L)
        A = np.einsum("rjg,j->rg", lab.present[img], m.cntf)
        nb[r0:r0 + per], nc[r0:r0 + per] = score(I, A, c)
    return nb, nc


def _spatial_null(m: _Mask, lab: _Labels, score: _Scorer, c: int, motions: np.ndarray,
                  seg, per: int, I_sc: np.ndarray, A_obs: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(R,) null best and IoU(c) of the rigid motions: replicate r moves the mask of image
    j by motions[:, r, j]; the scalar-label counts I_sc (1, L) and A_obs (1, G) do not
    change. ``per`` replicates at a time."""
    S = lab.S
    j, p, J, cnt = m.j, m.p, m.J, m.cnt
    sh, sw = seg
    R = motions.shape[1]
    y0, x0 = p // sw, p % sw
    # the 8 (transpose, flip y, flip x) variants of every pixel, in the 2sh x 2sw
    # unrolled torus (a shift then needs no modulo): tor maps back to (sh, sw)
    base = np.empty((8, j.size), dtype=np.int64)
    for d in range(8):
        t, fy, fx = d >> 2, (d >> 1) & 1, d & 1
        y, x = (x0, y0) if t else (y0, x0)
        base[d] = (sh - 1 - y if fy else y) * (2 * sw) + (sw - 1 - x if fx else x)
    base = base.reshape(-1)
    yy, xx = np.divmod(np.arange(4 * S), 2 * sw)
    tor = (yy % sh) * sw + (xx % sw)
    tr, fy, fx, dy, dx = motions[:, :, J]                           # (R, nJ) each
    dsel = (tr * 4 + fy * 2 + fx) * j.size
    off = dy * (2 * sw) + dx
    ar = np.arange(j.size, dtype=np.int64)
    jS = j * S
    nb, nc = np.empty(R), np.empty(R)
    for r0 in range(0, R, per):
        r1 = min(R, r0 + per)
        q = np.repeat(dsel[r0:r1], cnt, axis=1)
        q += ar
        q = base[q]
        q += np.repeat(off[r0:r1], cnt, axis=1)
        flat = tor[q]
        flat += jS
        I = _count(lab, flat) + I_sc
        nb[r0:r1], nc[r0:r1] = score(I, np.broadcast_to(A_obs, (r1 - r0, A_obs.shape[1])),
                                     c)
    return nb, nc


def null_p_values(acts, labels, thresholds: np.ndarray, concepts: Sequence[int],
                  primary: np.ndarray, keep: np.ndarray | None = None,
                  config: NullConfig | None = None, *, progress=None) -> NullResult:
    """Permutation p-values of every unit's best IoU (module docstring).

    acts: (N, K, h, w) zarr array (or ndarray); labels: the dataset's LabelCache;
    thresholds: (K,) float64 T_k; concepts: (K,) each unit's label number (0 = none), for
    ``p_concept``; primary: (L,) primary category per label (-1 = none); keep: (L,) bool,
    the scored concepts (default all); config: default NullConfig(). The labels of the
    subsample are kept in ``config.sample`` for the next call with the same subsample.
    ``progress(units_done)`` is called per unit group.
    """
    config = NullConfig() if config is None else config
    config.check()
    threads = torch.get_num_threads()
    if config.torch_threads:              # small per-unit tensors: on a busy 2-core CPU
        torch.set_num_threads(int(config.torch_threads))   # one thread was 5x faster
    try:
        return _null_p_values(acts, labels, thresholds, concepts, primary, keep, config,
                              progress)
    finally:
        torch.set_num_threads(threads)


def _null_p_values(acts, labels, thresholds, concepts, primary, keep, config, progress
                   ) -> NullResult:
    t0 = time.perf_counter()
    N, K, h, w = acts.shape
    R = int(config.permutations)
    rng = np.random.default_rng(config.seed)
    n = N if config.images is None else min(int(config.images), N)
    full = n == N
    idx = np.arange(N) if full else np.sort(rng.choice(N, size=n, replace=False))
    lab = config.sample.get(labels, idx, full)     # the layers of a run share it
    primary = np.asarray(primary, dtype=np.int64)
    keep = np.ones(len(primary), bool) if keep is None else np.asarray(keep, bool).copy()
    score = _Scorer(lab, primary, keep)
    seg = tuple(labels.seg_size)
    kinds = [k for k in KINDS if k in config.kinds]
    sigma = np.stack([rng.permutation(n) for _ in range(R)]) if "image" in kinds else None
    motions = _motions(rng, R, n, *seg) if "spatial" in kinds else None
    thresholds = np.asarray(thresholds, dtype=np.float64)
    concepts = np.asarray(concepts, dtype=np.int64)
    res = NullResult(kinds, R, int(config.seed), idx, concepts.copy(), np.zeros(K),
                     np.zeros(K))
    for kind in kinds:
        for d in (res.p, res.p_concept):
            d[kind] = np.ones(K)
        res.null_mean[kind] = np.zeros(K)
        res.null_max[kind] = np.zeros(K)
    kg = max(1, int(config.group_bytes // max(1, n * h * w * 4)))
    for k0 in range(0, K, kg):
        k1 = min(K, k0 + kg)
        block = np.asarray(acts[:, k0:k1] if full else acts.oindex[idx, k0:k1])
        for k in range(k0, k1):
            j, p = _active_pixels(block[:, k - k0], float(thresholds[k]), seg,
                                  config.chunk_elements)
            if j.size == 0:
                continue                                  # empty mask: IoU 0, p = 1
            best, conc, nulls = _unit_null(j, p, lab, score, int(concepts[k]), kinds, sigma,
                                           motions, seg, config.chunk_elements)
            res.iou_sample[k], res.concept_iou_sample[k] = best, conc
            for kind, (nb, nc) in nulls.items():
                res.p[kind][k] = p_value(nb, best)
                res.p_concept[kind][k] = p_value(nc, conc) if concepts[k] > 0 else 1.0
                res.null_mean[kind][k] = float(nb.mean())
                res.null_max[kind][k] = float(nb.max())
        if progress is not None:
            progress(k1 - k0)
    res.seconds = time.perf_counter() - t0
    return res
