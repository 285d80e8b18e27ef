"""Concept vectors (Net2Vec, Fong & Vedaldi, CVPR 2018) of one layer of a run, from its
caches: per concept, weights over the layer's units learned by per-pixel logistic
regression on the training images, and the held-out IoU of the vector's mask against the
best single unit's (DESIGN.md, "Beyond single units").

    split   = split_images(N, train_fraction, seed)                 sampling.py
    pass 1  over the tiles: single-unit Tallies at T_k on each split, |L_c(x)| per
            training image (where each concept's pixels are)
    plan    per concept: n seeded pixel draws (positives, negatives of X_g)
    pass 2  per group of concepts (memory bound): the sampled pixels' features
    fit     per concept: weighted logistic regression (L-BFGS)          training.py
    pass 3  over the held-out images: exact counts of each vector's mask  evaluation.py

The best single unit of a concept is the unit of highest IoU on the *training* images
(ties: lowest unit), at T_k of the scoring's quantile; its IoU is then counted on the
held-out images, as the vector's is. ``oracle_unit_iou`` is the best held-out IoU of any
unit (chosen on the held-out images themselves; an upper bound for single units).
Memory: the label counts of the training images (a few int64 per image and label it
holds), one tile of activations, and at most ``memory_bytes`` of sampled features.
"""
from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from cache import store
from cache.cube import read_thresholds
from cache.labels import LabelCache
from pipeline.concept_vectors.evaluation import iou, unit_tally, vector_counts
from pipeline.concept_vectors.sampling import (ConceptSample, image_features, label_counts,
                                               plan_sample, split_images)
from pipeline.concept_vectors.training import TrainConfig, fit_concept, units_carrying
from pipeline.devices import resolve_device
from pipeline.replay import tile_size
from pipeline.scoring import iou_matrix

COLUMNS = ["concept", "label", "category", "vector_iou", "unit", "unit_iou",
           "unit_train_iou", "oracle_unit", "oracle_unit_iou", "units_50", "units_90",
           "vector_intersection", "vector_union", "unit_intersection", "unit_union",
           "train_positives", "train_negatives", "sampled_positives", "sampled_negatives",
           "heldout_pixels", "bias", "loss"]


@dataclass(frozen=True)
class VectorConfig:
    """What the experiment is run with (see :func:`concept_vectors`)."""
    quantile: float = 0.005
    train_fraction: float = 0.5
    pixels_per_concept: int = 10000
    seed: int = 0
    threshold: float = 0.5
    train: TrainConfig = TrainConfig()
    memory_bytes: int = 512 << 20
    tile_images: int | None = None

    def check(self) -> None:
        if not 0.0 < self.quantile < 1.0:
            raise ValueError(f"--quantile must be in (0, 1), got {self.quantile}")
        if not 0.0 < self.train_fraction < 1.0:
            raise ValueError(f"--train-fraction must be in (0, 1), got {self.train_fraction}")
        if self.pixels_per_concept < 2:
            raise ValueError(f"--pixels must be >= 2, got {self.pixels_per_concept}")
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"--threshold must be in (0, 1), got {self.threshold}")
        if self.tile_images is not None and self.tile_images < 1:
            raise ValueError(f"--tile-images must be >= 1, got {self.tile_images}")
        self.train.check()


def concept_numbers(labels, concepts: Sequence[str | int] | None) -> list[int] | None:
    """Label numbers of ``concepts`` (names or numbers); None for all. ValueError naming
    --concepts for an unknown name or a label without a category."""
    if concepts is None:
        return None
    names = labels.label_names
    index = {n: i for i, n in enumerate(names)}
    primary = labels.primary_category
    out = []
    for c in concepts:
        num = c if isinstance(c, (int, np.integer)) else index.get(str(c).strip())
        if num is None and str(c).strip().isdigit():
            num = int(str(c).strip())
        if num is None or not 0 < int(num) < len(names):
            raise ValueError(f"--concepts: unknown concept {c!r}; the label cache names "
                             f"{len(names) - 1} labels (e.g. {names[1:4]})")
        if primary[int(num)] < 0:
            raise ValueError(f"--concepts: {c!r} has no primary category")
        out.append(int(num))
    return sorted(set(out))


def layer_threshold(run, layer: str, quantile: float, log) -> np.ndarray:
    """(K,) float64 T_k at ``quantile``: stored by the scoring, else computed and stored
    (under the run's lock)."""
    from pipeline.layer_stages import layer_source, layer_thresholds
    from pipeline.stages import scoring_lock
    stored = read_thresholds(store.layer_group(run, layer), layer_source(run, layer))
    have = stored is not None and np.any(np.abs(stored[0] - quantile) <= 1e-12)
    with contextlib.nullcontext() if have else scoring_lock(run, log):
        return layer_thresholds(run, layer, [quantile], log=log)[1][0]


def _tiles(n: int, acts, labels, tile_images) -> list[tuple[int, int]]:
    chunk = getattr(acts, "chunks", None)
    step = tile_images or (tile_size(chunk[0], labels.chunk_images) if chunk else 256)
    return [(s, min(s + step, n)) for s in range(0, n, step)]


def _tensor(a, dev) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a)).to(dev)


class _Pass1:
    """Single-unit Tallies of both splits and the training images' label counts."""

    def __init__(self, T, labels, map_size, dev):
        L, G = labels.num_labels, len(labels.categories)
        self.tally = {s: unit_tally(T, L, G, map_size, labels.seg_size, dev)
                      for s in ("train", "held")}
        self.held_pixels = np.zeros(L, dtype=np.int64)
        self.pairs: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.L, self.dev = L, dev

    def add(self, start, a, mx, lt, tr) -> None:
        for sel, name in ((tr, "train"), (~tr, "held")):
            if sel.any():
                self.tally[name].add(_tensor(a[sel], self.dev), _tensor(
                    lt.planes[sel].astype(np.int32), self.dev), _tensor(lt.scalars[sel],
                    self.dev), _tensor(lt.present[sel], self.dev), _tensor(mx[sel], self.dev))
        cnt = label_counts(lt.planes, lt.scalars, self.L)
        self.held_pixels += cnt[~tr].sum(axis=0)
        i, c = np.nonzero(cnt[tr])
        self.pairs.append((start + np.flatnonzero(tr)[i], c, cnt[tr][i, c]))

    def counts(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(image, label, pixels) of every training image and label it holds, by label."""
        img, lab, n = (np.concatenate([p[j] for p in self.pairs]) for j in range(3))
        order = np.lexsort((img, lab))
        return img[order], lab[order], n[order]

    def unit_iou(self, name: str, label_pixels, primary) -> tuple[np.ndarray, ...]:
        """(IoU (K, L), I (K, L), U (K, L)) of the single units on one split."""
        I, A = (x[0].cpu().numpy() for x in self.tally[name].result())
        io = iou_matrix(I, A, label_pixels, primary)
        has = primary >= 0
        act = np.zeros_like(I)
        act[:, has] = A[:, primary[has]]
        return io, I, act + label_pixels[None, :] - I


def _features(acts, labels, samples: list[ConceptSample], tiles, K, progress
              ) -> list[np.ndarray]:
    """(n_c, K) float32 features of each sample's pixels, read tile by tile."""
    feats = [np.zeros((s.size, K), dtype=np.float32) for s in samples]
    needed = np.unique(np.concatenate([s.image for s in samples]))
    seg = labels.seg_size
    for s0, e0 in tqdm(tiles, desc="sample", unit="tile", disable=not progress):
        imgs = needed[(needed >= s0) & (needed < e0)]
        if imgs.size == 0:
            continue
        a = acts[s0:e0]
        lt = labels.read(s0, e0)
        for i in imgs:
            here, starts = [], []
            for j, s in enumerate(samples):
                p = int(np.searchsorted(s.image, i))
                if p < s.size and s.image[p] == i:
                    here.append(j)
                    starts.append(p)
            got = image_features(a[i - s0], lt.planes[i - s0], lt.scalars[i - s0],
                                 [samples[j] for j in here], starts, int(i), seg)
            for j, (rows, f) in zip(here, got):
                feats[j][rows] = f
    return feats


def concept_vectors(run, layer: str, concepts: Sequence[str | int] | None = None,
                    quantile: float = 0.005, train_fraction: float = 0.5,
                    pixels_per_concept: int = 10000, seed: int = 0, device: str = "cpu",
                    label_cache: "str | os.PathLike | LabelCache | None" = None,
                    progress: bool = False, *, steps: int = 100, l2: float = 1e-4,
                    weighting: str = "balanced", threshold: float = 0.5,
                    memory_bytes: int = 512 << 20, tile_images: int | None = None,
                    write: bool = True, results_dir=None, dataset=None, log=None
                    ) -> tuple[pd.DataFrame, np.ndarray]:
    """Concept vectors of ``layer`` (module docstring): (frame, weights).

    frame: one row per concept (COLUMNS; units numbered from 0); weights: (C, K)
    float64, row i the vector of frame row i (its bias is the ``bias`` column).
    concepts: names or label numbers (default every concept with pixels on both splits);
    pixels_per_concept: the sample size n per concept (positives up to n // 2);
    threshold: the mask is sigmoid(w . a + b) > threshold; steps, l2, weighting: the
    training (pipeline/concept_vectors/training.py); on CPU torch runs one thread (the
    weights are bit for bit the same for the same seed and thread count). With ``write``,
    the frame goes to RUN/results/[q<quantile>/]<layer>.concept_vectors.csv (units
    numbered from 1, as in every file; the frame's are 0-based), the weights to .npy
    beside it, the chart to .png and the versioned document to .json
    (pipeline/concept_vectors/document.py; ``frame.attrs`` holds their paths), under
    ``results_dir`` when given; a results document of the same quantile there is linked
    to it and its page shows the vectors (``dataset``: the unit images' dataset).
    """
    cfg = VectorConfig(quantile, train_fraction, int(pixels_per_concept), int(seed),
                       float(threshold), TrainConfig(int(steps), float(l2), weighting,
                                                     str(device)),
                       int(memory_bytes), tile_images)
    cfg.check()
    say = log or (print if progress else (lambda *a: None))
    dev = resolve_device(device)
    cfg = VectorConfig(**{**cfg.__dict__, "train": TrainConfig(
        cfg.train.steps, cfg.train.l2, cfg.train.weighting, str(dev))})
    path = getattr(run, "path", run)
    store.check_layer(path, layer)
    if isinstance(label_cache, LabelCache):
        labels = label_cache
    else:
        from pipeline.stages import run_label_cache
        labels = run_label_cache(path, dataset, label_cache, progress=progress, log=say)
    wanted = concept_numbers(labels, concepts)
    t0 = time.perf_counter()
    T = layer_threshold(path, layer, quantile, say)
    threads = torch.get_num_threads()
    if dev.type == "cpu":       # small per-concept problems: on a busy 2-core CPU one
        torch.set_num_threads(1)    # thread fit 10x faster than two (measured)
    try:
        frame, weights = compute(store.activations(path, layer), store.maxima(path, layer),
                                 labels, T, cfg, wanted, progress=progress)
    finally:
        torch.set_num_threads(threads)
    frame.attrs["seconds"] = time.perf_counter() - t0
    say(f"[{layer}] concept vectors of {len(frame)} concepts: "
        f"{frame.attrs['seconds']:.1f} s")
    if write:
        frame.attrs.update(write_outputs(path, layer, frame, weights, cfg, labels, T,
                                         results_dir, dataset, say))
    return frame, weights


def compute(acts, maxima, labels, T: np.ndarray, cfg: VectorConfig,
            wanted: list[int] | None = None, progress: bool = False
            ) -> tuple[pd.DataFrame, np.ndarray]:
    """The experiment on arrays: acts (N, K, h, w), maxima (N, K) (zarr or numpy),
    labels a LabelCache (or an object with its read/num_labels/seg_size/... interface),
    T (K,) float64. See :func:`concept_vectors`."""
    N, K, h, w = acts.shape
    dev = torch.device(cfg.train.device)
    sh, sw = labels.seg_size
    primary = np.asarray(labels.primary_category, dtype=np.int64)
    cats = labels.categories
    train = split_images(N, cfg.train_fraction, cfg.seed)
    present = np.asarray(labels.present[:N], dtype=bool)
    tiles = _tiles(N, acts, labels, cfg.tile_images)

    p1 = _Pass1(T, labels, (h, w), dev)
    for s, e in tqdm(tiles, desc="units", unit="tile", disable=not progress):
        p1.add(s, acts[s:e], maxima[s:e], labels.read(s, e), train[s:e])
    img, lab, npx = p1.counts()
    train_pixels = np.bincount(lab, weights=npx, minlength=labels.num_labels).astype(np.int64)
    iou_t, _, _ = p1.unit_iou("train", train_pixels, primary)
    iou_h, I_h, U_h = p1.unit_iou("held", p1.held_pixels, primary)

    ok = (primary >= 0) & (train_pixels > 0) & (p1.held_pixels > 0)
    ok[0] = False
    if wanted is None:
        chosen = np.flatnonzero(ok)
    else:
        bad = [labels.label_names[c] for c in wanted if not ok[c]]
        if bad:
            raise ValueError(f"--concepts: {bad} have no pixels on the training or the "
                             f"held-out images of this split; leave them out or change "
                             f"--train-fraction / --seed")
        chosen = np.asarray(wanted, dtype=np.int64)

    samples = []
    lo = np.searchsorted(lab, chosen, side="left")
    hi = np.searchsorted(lab, chosen, side="right")
    cat_images = {g: np.flatnonzero(train & present[:, g]) for g in range(len(cats))}
    for c, a, b in zip(chosen, lo, hi):
        samples.append(plan_sample(int(c), img[a:b], npx[a:b], cat_images[int(primary[c])],
                                   sh * sw, cfg.pixels_per_concept, cfg.seed))

    per = max(1, cfg.memory_bytes // max(1, cfg.pixels_per_concept * K * 4))
    fits = []
    for g0 in range(0, len(samples), per):
        group = samples[g0:g0 + per]
        feats = _features(acts, labels, group, tiles, K, progress)
        for s, f in zip(tqdm(group, desc="fit", unit="concept", disable=not progress),
                        feats):
            fits.append(fit_concept(f, s.pos, s.candidates, cfg.train))
        del feats
    W = np.stack([f.weights for f in fits]) if fits else np.zeros((0, K))
    bias = np.array([f.bias for f in fits], dtype=np.float64)

    inter = np.zeros(len(chosen), dtype=np.int64)
    act = np.zeros(len(chosen), dtype=np.int64)
    cc = max(1, (256 << 20) // max(1, (tiles[0][1] - tiles[0][0]) * h * w * 8))
    for s, e in tqdm(tiles, desc="held-out", unit="tile", disable=not progress):
        held = ~train[s:e]
        if not held.any() or not len(chosen):
            continue
        a = acts[s:e][held]
        lt = labels.read(s, e)
        pl, sc, pr = lt.planes[held], lt.scalars[held], lt.present[held]
        for c0 in range(0, len(chosen), cc):
            sl = slice(c0, c0 + cc)
            i_, a_ = vector_counts(a, pl, sc, pr, W[sl], bias[sl], chosen[sl],
                                   primary[chosen[sl]], cfg.threshold, str(dev))
            inter[sl] += i_
            act[sl] += a_
    union = act + p1.held_pixels[chosen] - inter
    viou = iou(inter, union)

    rows = []
    for i, (c, s, f) in enumerate(zip(chosen, samples, fits)):
        k = int(np.argmax(iou_t[:, c]))
        ko = int(np.argmax(iou_h[:, c]))
        npos = int(s.pos.sum())
        rows.append([labels.label_names[c], int(c), cats[primary[c]], float(viou[i]), k,
                     float(iou_h[k, c]), float(iou_t[k, c]), ko, float(iou_h[ko, c]),
                     units_carrying(f.weights, 0.5), units_carrying(f.weights, 0.9),
                     int(inter[i]), int(union[i]), int(I_h[k, c]), int(U_h[k, c]),
                     s.candidates[0], s.candidates[1], npos, s.size - npos,
                     int(p1.held_pixels[c]), f.bias, f.loss])
    frame = pd.DataFrame(rows, columns=COLUMNS)
    frame.attrs.update(train_images=int(train.sum()), heldout_images=int((~train).sum()),
                       quantile=cfg.quantile, threshold=cfg.threshold)
    return frame, W


def write_outputs(run, layer: str, frame: pd.DataFrame, weights: np.ndarray,
                  cfg: VectorConfig, labels, T: np.ndarray, results_dir=None, dataset=None,
                  log=print) -> dict:
    """RUN/results/[q<quantile>/]<layer>.concept_vectors.csv/.npy/.png/.json (under
    ``results_dir`` when given), then the results document there linked to them;
    returns the files' final paths."""
    import io
    from pipeline.concept_vectors.document import numbered_from_one, vectors_document
    from pipeline.files import write_bytes, write_csv, write_json
    from pipeline.reports.charts import concept_vector_chart
    from pipeline.reports.document import run_metadata, scoring_versions
    from pipeline.reports.analyses import analysis_folder, analysis_written
    name = store.layer_file_name(layer)
    base = f"{name}.concept_vectors"
    buf = io.BytesIO()
    np.save(buf, np.asarray(weights, dtype=np.float64))
    acts = store.activations(run, layer)
    config = {"quantile": cfg.quantile, "train_fraction": cfg.train_fraction,
              "pixels_per_concept": cfg.pixels_per_concept, "seed": cfg.seed,
              "threshold": cfg.threshold, "steps": cfg.train.steps, "l2": cfg.train.l2,
              "weighting": cfg.train.weighting, "device": cfg.train.device}
    files = numbered_from_one(frame)
    doc = vectors_document(files, weights, f"{base}.npy", buf.getvalue(),
                           run_metadata(store.read_run_attrs(run), layer, store.run_path(run),
                                        acts.shape, acts.dtype, labels.path,
                                        labels.fingerprint),
                           scoring_versions(), config, T)
    folder = analysis_folder(cfg.quantile)
    with store.results_output(run, results_dir, folder) as (local, final):
        write_csv(local / f"{base}.csv", list(files.columns),
                  files.itertuples(index=False, name=None))
        write_bytes(local / f"{base}.npy", buf.getvalue())
        concept_vector_chart(local / f"{base}.png", frame["unit_iou"], frame["vector_iou"],
                             frame["category"], frame["concept"],
                             title=f"{layer}: concept vectors vs best single unit "
                                   f"(held-out, q={cfg.quantile})")
        write_json(local / f"{base}.json", doc)
    analysis_written(run, layer, final, folder, dataset, log)
    sep = "/" if store.is_url(final) else os.sep
    return {k: f"{final}{sep}{base}.{k}" for k in ("csv", "npy", "png", "json")}
