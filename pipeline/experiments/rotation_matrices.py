"""Random rotations and combinations of a layer's unit basis: the matrices of the rotation
experiment (the paper's Section 3.2 / Figure 4), and alpha's directory-name form.

    random_rotation(K, seed)          Q (K, K) float64, uniform on SO(K)
    fractional_rotation(Q, alpha)     Q^alpha along the minimal geodesic from I to Q
    random_combination(K, seed)       baseline: rows = random unit-norm combinations

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
"""
from __future__ import annotations

import numpy as np

ORTHOGONALITY_TOL = 1e-8


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


def alpha_name(alpha: float) -> str:
    """Directory-name form of alpha: 0 -> "0", 0.2 -> "0.2", 1 -> "1"."""
    return f"{float(alpha):.6g}"
