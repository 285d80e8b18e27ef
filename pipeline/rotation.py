"""Random rotations of a layer's representation, applied to the activation cache.

The paper's Section 3.2 / Figure 4 experiment: replace the unit basis of a layer by a
rotated one and dissect again. Everything here works on cached activations (a derived
run), never on the network.

    random_rotation(K, seed)          Q (K, K) float64, uniform on SO(K)
    fractional_rotation(Q, alpha)     Q^alpha along the minimal geodesic from I to Q
    random_combination(K, seed)       baseline: rows = random unit-norm combinations
    write_rotated_run(run, layer, M, out, transform=...)
                                      derived run whose one layer holds r = M f(x)
    cube_summary(cube, labels, q)     detector counts of a derived run's cube (no reports)

The experiment's table, CSV rows and chart (unique detectors against alpha) are in
:mod:`pipeline.reports.tables` (rotation_rows, rotation_table) and
:mod:`pipeline.reports.charts` (rotation_chart).

Definitions (DESIGN.md, "Random rotation"):

- ``random_rotation``: G ~ N(0, 1)^(K x K), G = Q R (numpy QR), Q <- Q diag(sign(diag R))
  (a zero diagonal entry counts as +1), then the first column negated if det(Q) < 0. The
  sign fold makes Q Haar-distributed on O(K); negating one column maps O(K)'s det -1 half
  onto SO(K) measure-preservingly, so Q is uniform on SO(K).
- ``fractional_rotation``: real Schur form Q = Z T Z^T (``scipy.linalg.schur(Q,
  output="real")``; Z orthogonal, T block diagonal for an orthogonal Q): 2 x 2 blocks
  [[cos t, -sin t], [sin t, cos t]] with t in (-pi, pi], and 1 x 1 entries +1 or -1.
  Q^alpha = Z T^alpha Z^T where each 2 x 2 block is rotated by alpha * t, +1 stays 1, and
  the -1 entries (an even number when det Q = +1) are paired in the order they appear
  on T's diagonal: a pair (i, j) spans a plane in which Q is the rotation by pi, and
  Q^alpha rotates that plane by alpha * pi from Z[:, i] towards Z[:, j]. (Rotation by
  +pi or -pi in that plane are both minimal geodesics; we pick +pi. -1 eigenvalues have
  probability 0 for a random Q.) alpha = 0 returns the identity exactly (not
  Z Z^T, which is I only to rounding), so a rotation by Q^0 reproduces the unrotated
  dissection bit for bit. Every Q^alpha of one Q shares Z, so Q^a Q^b = Q^(a + b).
- The rotated representation r = M f(x) is applied to the unit axis at every spatial
  position: r[n, i, y, x] = sum_j M[i, j] f[n, j, y, x].

Derived run layout: the same as an extraction's (cache/store.py) with one layer (the
source layer's name), plus root attrs ``source`` {run, layer, model_fingerprint,
dtype} and ``transform`` {kind: "rotation" | "combination" | "matrix", alpha, seed,
matrix_sha256, compute_dtype}. Its ``model.fingerprint`` is a hash of the source's model
fingerprint, the layer and the transform, so the thresholds and cubes that scoring
stores in the derived run (keyed by the model fingerprint, pipeline/dissect.py) can
never be confused with the source's or another transform's.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import zarr

from cache import activations as cache_acts
from cache import store
from cache.store import RUN_FORMAT, RUN_VERSION, RunError, RunLock, clear_run_dir, layer_node

KINDS = ("rotation", "combination")
ORTHOGONALITY_TOL = 1e-8


# ----------------------------------------------------------------------- matrices
def random_rotation(K: int, seed: int) -> np.ndarray:
    """(K, K) float64 Q drawn uniformly from SO(K) (module docstring), deterministic
    per (K, seed)."""
    if K < 1:
        raise ValueError(f"K must be >= 1, got {K}")
    rng = np.random.default_rng([int(seed), 0x5A17])
    G = rng.standard_normal((K, K))
    Q, R = np.linalg.qr(G)
    s = np.sign(np.diag(R))
    s[s == 0] = 1.0
    Q = Q * s[None, :]
    if np.linalg.det(Q) < 0:
        Q[:, 0] = -Q[:, 0]
    return Q


def random_combination(K: int, seed: int) -> np.ndarray:
    """(K, K) float64 M whose rows are independent Gaussian vectors scaled to unit norm:
    each new unit is a random unit-norm linear combination of the old units (the
    baseline; not orthogonal)."""
    if K < 1:
        raise ValueError(f"K must be >= 1, got {K}")
    rng = np.random.default_rng([int(seed), 0xC0B1])
    M = rng.standard_normal((K, K))
    return M / np.linalg.norm(M, axis=1, keepdims=True)


def check_rotation(Q: np.ndarray, tol: float = ORTHOGONALITY_TOL) -> np.ndarray:
    """Q as a (K, K) float64 array; ValueError unless it is orthogonal with det +1."""
    Q = np.asarray(Q, dtype=np.float64)
    if Q.ndim != 2 or Q.shape[0] != Q.shape[1]:
        raise ValueError(f"a rotation must be a square matrix, got shape {Q.shape}")
    err = np.abs(Q.T @ Q - np.eye(Q.shape[0])).max() if Q.size else 0.0
    if err > tol:
        raise ValueError(f"not orthogonal: max |Q^T Q - I| = {err:.3g} > {tol}")
    if Q.size and np.linalg.det(Q) < 0:
        raise ValueError("det Q = -1: a reflection has no real fractional power on the "
                         "geodesic from I; use a rotation (det +1)")
    return Q


def rotation_angles(Q: np.ndarray) -> tuple[np.ndarray, list[tuple[int, int, float]]]:
    """The real Schur form of a rotation as (Z, planes): Q = Z R Z^T where R rotates
    each plane (i, j) of ``planes`` by its angle t in (-pi, pi] (from Z[:, i] towards
    Z[:, j]) and is the identity elsewhere. -1 eigenvalue pairs appear as planes with
    t = pi (module docstring)."""
    from scipy.linalg import schur
    Q = check_rotation(Q)
    K = Q.shape[0]
    T, Z = schur(Q, output="real")
    planes: list[tuple[int, int, float]] = []
    minus: list[int] = []
    i = 0
    while i < K:
        if i + 1 < K and T[i + 1, i] != 0.0:
            a, b, c, d = T[i, i], T[i, i + 1], T[i + 1, i], T[i + 1, i + 1]
            planes.append((i, i + 1, float(np.arctan2((c - b) / 2.0, (a + d) / 2.0))))
            i += 2
        else:
            if T[i, i] < 0:
                minus.append(i)
            i += 1
    if len(minus) % 2:
        raise ValueError("odd number of -1 eigenvalues: not a rotation (det -1)")
    for p in range(0, len(minus), 2):
        planes.append((minus[p], minus[p + 1], float(np.pi)))
    return Z, planes


def fractional_rotation(Q: np.ndarray, alpha: float) -> np.ndarray:
    """(K, K) float64 Q^alpha along the minimal geodesic from I (alpha = 0) to Q
    (alpha = 1) via the real Schur form (module docstring); alpha = 0 gives I exactly.
    Any real alpha is accepted (the geodesic continues); experiments use [0, 1]."""
    alpha = float(alpha)
    Q = check_rotation(Q)
    K = Q.shape[0]
    if alpha == 0.0:
        return np.eye(K)
    Z, planes = rotation_angles(Q)
    Ta = np.eye(K)
    for i, j, t in planes:
        c, s = np.cos(alpha * t), np.sin(alpha * t)
        Ta[i, i] = c
        Ta[j, j] = c
        Ta[i, j] = -s
        Ta[j, i] = s
    return Z @ Ta @ Z.T


def transform_matrix(kind: str, K: int, seed: int, alpha: float | None = None) -> np.ndarray:
    """The (K, K) matrix of a transform: ``rotation`` -> random_rotation(K, seed)^alpha,
    ``combination`` -> random_combination(K, seed) (alpha ignored)."""
    if kind == "rotation":
        return fractional_rotation(random_rotation(K, seed), 1.0 if alpha is None else alpha)
    if kind == "combination":
        return random_combination(K, seed)
    raise ValueError(f"transform kind must be one of {KINDS}, got {kind!r}")


# ----------------------------------------------------------------------- derived runs
def matrix_sha256(M: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(M, dtype=np.float64).tobytes()).hexdigest()


def transform_record(transform: dict | None, M: np.ndarray, dtype: str = "float32",
                     compute_dtype: str = "float64") -> dict:
    """The ``transform`` attrs of a derived run: ``transform`` (kind, alpha, seed...)
    plus the matrix's sha256 and the stored and compute dtypes (all in the fingerprint)."""
    rec = _plain(dict(transform or {"kind": "matrix"}))
    rec.update({"matrix_sha256": matrix_sha256(M), "compute_dtype": str(np.dtype(compute_dtype)),
                "dtype": str(np.dtype(dtype))})
    return rec


def derived_fingerprint(source_fingerprint: str, layer: str, transform: dict) -> str:
    """Model fingerprint of a derived run: sha256 of the source model's fingerprint, the
    layer and the transform record (which includes the matrix's hash)."""
    text = json.dumps({"source": source_fingerprint, "layer": layer,
                       "transform": transform}, sort_keys=True)
    return "rotated-" + hashlib.sha256(text.encode()).hexdigest()


def _plain(x):
    """JSON-plain copy (numpy scalars -> Python)."""
    return json.loads(json.dumps(x, default=lambda o: o.item() if hasattr(o, "item") else str(o)))


def derived_is_complete(out: str | os.PathLike, fingerprint: str) -> bool:
    """True if ``out`` is a finished derived run with this model fingerprint."""
    out = Path(out)
    if not store.is_run_dir(out):
        return False
    try:
        g = store.open_run(out)
        return (g.attrs.get("model", {}).get("fingerprint") == fingerprint
                and bool(g.attrs.get("layout_complete")) and store.is_complete(g))
    except Exception:
        return False


def write_rotated_run(run, layer: str, M: np.ndarray, out: str | os.PathLike, *,
                      transform: dict | None = None, dtype: str = "float32",
                      compute_dtype: str = "float64", compression: str = "lz4",
                      progress: bool = True) -> Path:
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
    a run with another fingerprint is cleared and rewritten. Returns ``out``.
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
    fp = derived_fingerprint(attrs["model"]["fingerprint"], layer, transform)
    block = int(attrs.get("block_images") or 256)
    out = Path(store.location(out))
    if store.is_url(out):
        raise RunError(f"--out {out}: derived runs are written to local directories only")
    with RunLock(out, "rotation"):
        if _resumable(out, fp):
            group = zarr.open_group(out, mode="r+")
        else:
            clear_run_dir(out)
            new_attrs = _derived_attrs(src, attrs, acts, layer, transform, fp, dtype, block,
                                       compression)
            group = zarr.open_group(out, mode="a", attributes=_plain(new_attrs))
            cache_acts.create_layer_arrays(group, layer, (K, h, w), N, block, str(np.dtype(dtype)),
                                           compression)
            cache_acts.create_progress(group, N, block)
            group.attrs["layout_complete"] = True
        _transform_blocks(group, acts, layer, M.astype(compute_dtype), dtype, block, progress)
    return out


def _resumable(out: Path, fingerprint: str) -> bool:
    """True if ``out`` holds a derived run of this model fingerprint whose layout is
    complete (its finished blocks are kept and the rest written)."""
    if not store.is_run_dir(out):
        return False
    g = zarr.open_group(out, mode="r")
    return (g.attrs.get("model", {}).get("fingerprint") == fingerprint
            and bool(g.attrs.get("layout_complete")))


def _derived_attrs(src, attrs: dict, acts, layer: str, transform: dict, fingerprint: str,
                   dtype: str, block: int, compression: str) -> dict:
    """Root attrs of a new derived run (module docstring), ``layout_complete`` False.
    src/attrs: the source run and its root attrs; acts: its (N, K, h, w) layer array."""
    K, h, w = (int(s) for s in acts.shape[1:])
    return {
        "format": RUN_FORMAT, "version": RUN_VERSION,
        "dataset": attrs["dataset"],
        "model": {"spec": f"derived: {transform.get('kind')} of "
                          f"{attrs['model'].get('spec')} {layer}",
                  "weights": None, "fingerprint": fingerprint},
        "preprocessing": attrs.get("preprocessing", {}),
        "layers": [layer], "dtype": str(np.dtype(dtype)),
        "layer_nodes": {layer: layer_node(layer)},
        "layer_shapes": {layer: [K, h, w]}, "block_images": block,
        "compression": compression, "versions": attrs.get("versions", {}),
        "source": {"run": str(store.run_path(src)), "layer": layer,
                   "model_fingerprint": attrs["model"]["fingerprint"],
                   "dtype": str(acts.dtype)},
        "transform": transform, "layout_complete": False,
    }


def _transform_blocks(group, acts, layer: str, Mc: np.ndarray, dtype: str, block: int,
                      progress: bool) -> None:
    """Write r = Mc f(x) (stored as ``dtype``) and its per-image maxima (B, K) float32 for
    every block of ``group`` not yet marked done; acts: the source's (N, K, h, w) array,
    Mc: (K, K) in the compute dtype."""
    N, K, h, w = (int(s) for s in acts.shape)
    done = store.read_progress(group)
    writer = cache_acts.BlockWriter(group, [layer])
    from tqdm import tqdm
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


# ------------------------------------------------------------- scoring a derived run
def cube_summary(cube, labels, quantile: float, iou_threshold: float = 0.04,
                 categories: Sequence[str] | None = None) -> dict:
    """Detector counts (pipeline.scoring.count_detectors, both conventions) of a cube
    (cache/cube.Cube) at ``quantile``: the summary layer_results writes, without its
    report files (those cost seconds per derived run; scripts/rotate.py --reports)."""
    from pipeline.scoring import dissect
    v = cube.level_index(quantile)
    d = dissect(cube.intersect[v], cube.activation[v], cube.label_pixels,
                labels.primary_category, cube.categories, selected=categories,
                iou_threshold=iou_threshold)
    return {**d.summary(), "quantile": float(quantile)}


# ------------------------------------------------------------ alpha on the command line
def alpha_name(alpha: float) -> str:
    """Directory-name form of alpha: 0 -> "0", 0.2 -> "0.2", 1 -> "1"."""
    return f"{float(alpha):.6g}"


def parse_alphas(spec: str) -> list[float]:
    """``0,0.2,...`` -> sorted distinct alphas in [0, 1]; ValueError names --alphas."""
    try:
        vals = [float(p) for p in spec.split(",") if p.strip()]
    except ValueError:
        raise ValueError(f"--alphas {spec!r}: expected comma-separated numbers "
                         f"(e.g. 0,0.2,0.4,0.6,0.8,1)") from None
    if not vals:
        raise ValueError(f"--alphas {spec!r}: no alpha")
    bad = [v for v in vals if not 0.0 <= v <= 1.0]
    if bad:
        raise ValueError(f"--alphas {spec!r}: alphas must be in [0, 1], got {bad}")
    return sorted(set(vals))
