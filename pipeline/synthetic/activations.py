"""Write a run of synthetic ReLU-like activations with real layer shapes (no network).

For measuring the stages after extraction at real scale (e.g. 63,305 x 512 x 7 x 7)
without a big model. Per unit k and image x the map is

    A_k(x) = relu(s_k * g_x * (blur(z) + m_k)),   z ~ N(0, 1) on (h, w)

with a 3 x 3 box blur for spatial smoothness, a per-unit offset m_k ~ N(-0.8, 0.5) and
scale s_k ~ logN(0, 0.5) (so units differ in sparsity and range), a per-image gain g_x ~
logN(0, 0.3), and about 3% dead units (all zero). Deterministic per (seed, block).
The run's attributes look like an extraction's (model spec "synthetic-activations").
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from cache import activations as cache_acts
from pipeline.broden import BrodenDataset

DEAD_FRACTION = 0.03


def _unit_params(K: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng([seed, 0])
    offset = rng.normal(-0.8, 0.5, K).astype(np.float32)
    scale = rng.lognormal(0.0, 0.5, K).astype(np.float32)
    dead = rng.random(K) < DEAD_FRACTION
    return offset, scale, dead


def synthetic_block(start: int, stop: int, shape: tuple[int, int, int], seed: int
                    ) -> np.ndarray:
    """(stop - start, K, h, w) float32 activations of images [start, stop)."""
    K, h, w = shape
    offset, scale, dead = _unit_params(K, seed)
    rng = np.random.default_rng([seed, 1, start])
    z = rng.standard_normal((stop - start, K, h + 2, w + 2), dtype=np.float32)
    blur = sum(z[:, :, dy:dy + h, dx:dx + w] for dy in range(3) for dx in range(3)) / 3.0
    gain = rng.lognormal(0.0, 0.3, (stop - start, 1, 1, 1)).astype(np.float32)
    a = np.maximum(scale[None, :, None, None] * gain * (blur + offset[None, :, None, None]), 0)
    a[:, dead] = 0
    return a


def write_synthetic_run(out: str | Path, dataset: str | Path, shape: tuple[int, int, int], *,
                        num_images: int | None = None, seed: int = 0, dtype: str = "float16",
                        block: int = 256, layer: str = "synthetic", progress: bool = True
                        ) -> Path:
    """Write a complete run at ``out`` with one layer of synthetic activations for the
    first ``num_images`` images of ``dataset`` (default all). Returns ``out``."""
    out = Path(out)
    ds = BrodenDataset(dataset)
    n = len(ds) if num_images is None else min(num_images, len(ds))
    K, h, w = shape
    attrs = cache_acts.run_attrs(
        dataset={"path": str(Path(dataset).resolve()), "fingerprint": ds.fingerprint(),
                 "num_images": n, "image_size": list(ds.image_size()),
                 "seg_size": list(ds.segmentation_size())},
        model={"spec": "synthetic-activations", "weights": None,
               "fingerprint": f"synthetic-activations-seed{seed}-{K}x{h}x{w}"},
        layer_shapes={layer: (K, h, w)}, dtype=dtype)
    group = cache_acts.create_run(out, attrs, block)
    writer = cache_acts.BlockWriter(group, [layer])
    with tqdm(total=n, unit="img", desc="synthetic activations", disable=not progress) as bar:
        for b in range(cache_acts.num_blocks(n, block)):
            s, e = cache_acts.block_range(b, block, n)
            a = synthetic_block(s, e, (K, h, w), seed).astype(dtype)
            m = a.reshape(e - s, K, -1).max(axis=2).astype(np.float32)
            writer.write(b, {layer: a}, {layer: m})
            bar.update(e - s)
    return out
