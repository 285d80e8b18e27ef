"""Derived runs: a run whose one layer holds r = M f(x), a (K, K) matrix M applied to the
unit axis of a cached layer at every spatial position, written from the activation cache
(never the network). The shared writer of experiments that transform a representation.

The representation r = M f(x) is applied to the unit axis at every spatial position:
r[n, i, y, x] = sum_j M[i, j] f[n, j, y, x].

Derived run layout: the same as an extraction's (cache/store.py) with one layer (the
source layer's name), plus root attrs ``source`` {run, layer, model_fingerprint,
dtype} and ``transform`` {kind: "rotation" | "combination" | "matrix", alpha, seed,
matrix_sha256, compute_dtype}. Its ``model.fingerprint`` is a hash of the source's model
fingerprint, the layer and the transform, so the thresholds and cubes that scoring
stores in the derived run (keyed by the model fingerprint, pipeline/layer_stages.py) can
never be confused with the source's or another transform's.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import zarr

from cache import activations as cache_acts
from cache import metadata, store
from cache.integrity import repair_run
from cache.store import RunError, RunLock


def matrix_sha256(M: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(M, dtype=np.float64).tobytes()).hexdigest()


def transform_record(transform: dict | None, M: np.ndarray, dtype: str = "float32",
                     compute_dtype: str = "float64") -> dict:
    """The ``transform`` attrs of a derived run: ``transform`` (kind, alpha, seed...)
    plus the matrix's sha256 and the stored and compute dtypes (all in the fingerprint)."""
    rec = cache_acts.plain_json(dict(transform or {"kind": "matrix"}))
    rec.update({"matrix_sha256": matrix_sha256(M), "compute_dtype": str(np.dtype(compute_dtype)),
                "dtype": str(np.dtype(dtype))})
    return rec


def source_identity(run, layer: str) -> dict:
    """What the source layer's activations are made of: the model's and the dataset's
    fingerprints, the images, the shape and dtype (as stored thresholds are keyed) and the
    preprocessing. A re-extraction that changes any of it makes derived runs stale."""
    from pipeline.layer_stages import layer_source
    return {**layer_source(run, layer),
            "preprocessing": store.read_run_attrs(run).get("preprocessing", {})}


def derived_fingerprint(source: dict, layer: str, transform: dict) -> str:
    """Model fingerprint of a derived run: sha256 of the source's identity
    (:func:`source_identity`), the layer and the transform record (which includes the
    matrix's hash)."""
    text = json.dumps({"source": source, "layer": layer, "transform": transform},
                      sort_keys=True)
    return "rotated-" + hashlib.sha256(text.encode()).hexdigest()


def derived_is_complete(out: str | os.PathLike, fingerprint: str) -> bool:
    """True if ``out`` is a finished derived run with this model fingerprint."""
    try:
        return _resumable(Path(out), fingerprint) and store.is_complete(out)
    except Exception:
        return False


def write_transformed_run(run, layer: str, M: np.ndarray, out: str | os.PathLike, *,
                          transform: dict | None = None, dtype: str = "float32",
                          compute_dtype: str = "float64", compression: str = "lz4",
                          progress: bool = True, repair: bool = False, log=print) -> Path:
    """Write (or finish, or reuse) a derived run at ``out`` whose single layer ``layer``
    holds r = M f(x) at every spatial position, for every image of ``run``'s ``layer``.

    run: source run (path or group), extraction complete; M: (K, K) matrix;
    transform: what M is (kind, alpha, seed...; recorded in the attrs and hashed into
    the fingerprint with M's sha256); dtype: stored dtype (float32 by default: rotated
    values are signed and float16 would round them; float16 sources are exact in
    float32, so M = I reproduces the source bit for bit); compute_dtype: the matmul's.

    Blocks are the source's ``block_images`` blocks: block b reads (B, K, h, w) from the
    source, multiplies in ``compute_dtype``, stores ``dtype`` and the per-image maxima of
    the stored values (B, K) float32, then marks the block done. A run at ``out`` with
    the same fingerprint is resumed (finished blocks kept; complete -> nothing written);
    a run with another fingerprint, or whose metadata is damaged, is cleared and
    rewritten. ``repair``: first check every chunk of the finished blocks and rewrite
    the blocks holding damaged ones (cache/integrity.repair_run). Returns ``out``.
    """
    src = store.as_group(run)
    store.check_layer(src, layer)
    attrs = store.read_run_attrs(src)
    acts = store.activations(src, layer)
    N, K, h, w = (int(s) for s in acts.shape)
    M = np.asarray(M, dtype=np.float64)
    if M.shape != (K, K):
        raise ValueError(f"the transform matrix is {M.shape}; layer {layer!r} has K = {K} "
                         f"units, so it must be ({K}, {K})")
    if np.dtype(dtype) not in (np.float16, np.float32, np.float64):
        raise ValueError(f"dtype must be float16, float32 or float64, got {dtype!r}")
    transform = transform_record(transform, M, dtype, compute_dtype)
    fp = derived_fingerprint(source_identity(src, layer), layer, transform)
    block = int(attrs.get("block_images") or 256)
    if store.is_url(out):
        raise RunError(f"--out {out}: derived runs are written to local directories only")
    out = Path(store.location(out))
    with RunLock(out, "rotation"):
        if _resumable(out, fp):
            group = zarr.open_group(out, mode="r+")
            if repair:
                repair_run(group, [layer], log)
        else:
            group = cache_acts.create_run(
                out, _derived_attrs(src, attrs, acts, layer, transform, fp, dtype), block,
                compression)
        _transform_blocks(group, acts, layer, M.astype(compute_dtype), dtype, block, progress)
    return out


def _resumable(out: Path, fingerprint: str) -> bool:
    """True if ``out`` holds a derived run of this model fingerprint whose layout is
    complete and whose metadata is intact (its finished blocks are kept and the rest
    written)."""
    if not store.is_run_dir(out) or metadata.find_damage(metadata.open_store(out))[0]:
        return False
    g = zarr.open_group(out, mode="r")
    return (g.attrs.get("model", {}).get("fingerprint") == fingerprint
            and bool(g.attrs.get("layout_complete")))


def _derived_attrs(src, attrs: dict, acts, layer: str, transform: dict, fingerprint: str,
                   dtype: str) -> dict:
    """Root attrs of a new derived run (module docstring; cache.activations.run_attrs).
    src/attrs: the source run and its root attrs; acts: its (N, K, h, w) layer array."""
    return cache_acts.run_attrs(
        dataset=attrs["dataset"],
        model={"spec": f"derived: {transform.get('kind')} of "
                       f"{attrs['model'].get('spec')} {layer}",
               "weights": None, "fingerprint": fingerprint},
        layer_shapes={layer: tuple(int(s) for s in acts.shape[1:])},
        dtype=str(np.dtype(dtype)), preprocessing=attrs.get("preprocessing", {}),
        versions=attrs.get("versions", {}),
        source={"run": str(store.run_path(src)), "layer": layer,
                "model_fingerprint": attrs["model"]["fingerprint"],
                "dtype": str(acts.dtype)},
        transform=transform)


def _transform_blocks(group, acts, layer: str, Mc: np.ndarray, dtype: str, block: int,
                      progress: bool) -> None:
    """Write r = Mc f(x) (stored as ``dtype``) and its per-image maxima (B, K) float32 for
    every block of ``group`` not yet marked done; acts: the source's (N, K, h, w) array,
    Mc: (K, K) in the compute dtype."""
    N, K, h, w = (int(s) for s in acts.shape)
    done = store.read_progress(group)
    writer = cache_acts.BlockWriter(group, [layer])
    from tqdm.auto import tqdm
    todo = [b for b in range(cache_acts.num_blocks(N, block)) if not done[b]]
    with tqdm(total=len(todo), unit="block", desc=f"transform {layer}",
              disable=not progress or not todo, dynamic_ncols=True) as bar:
        for b in todo:
            s, e = cache_acts.block_range(b, block, N)
            f = np.asarray(acts[s:e]).astype(Mc.dtype, copy=False)
            r = np.matmul(Mc, f.reshape(e - s, K, h * w)).reshape(e - s, K, h, w)
            r = r.astype(dtype)
            m = r.reshape(e - s, K, -1).max(axis=2).astype(np.float32)
            writer.write(b, {layer: r}, {layer: m})
            bar.update(1)
