"""Per-pixel logistic regression of one concept on a layer's upsampled activations.

    p(x) = sigmoid(w . a(x) + b),  a(x) (K,) the upsampled activations at pixel x

fit by full-batch L-BFGS (torch, strong-Wolfe line search, a fixed number of
iterations, float64, zero start: deterministic for a seed on CPU) to the weighted binary
cross-entropy of the sample (pipeline/concept_vectors/sampling.py). Weighting:

- ``balanced`` (default, Net2Vec's): positives and negatives carry half the loss each,
  which is the paper's alpha = 1 - (positive fraction) on positives and 1 - alpha on
  negatives, summed over all candidate pixels;
- ``population``: each class weighted by its share of the candidate pixels, an unbiased
  estimate of the mean loss over all of them.

For conditioning, unit k is divided by its RMS s_k over the sample (1 when 0); the
optional L2 penalty ``l2 * |v|^2`` acts on those scaled weights v, and the returned
weights are on the raw activations, w_k = v_k / s_k. A dead unit keeps w_k = 0.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

WEIGHTINGS = ("balanced", "population")


@dataclass(frozen=True)
class TrainConfig:
    """steps: L-BFGS iterations; l2: penalty on the RMS-scaled weights; weighting: one
    of WEIGHTINGS; device: where torch runs."""
    steps: int = 100
    l2: float = 1e-4
    weighting: str = "balanced"
    device: str = "cpu"

    def check(self) -> None:
        if self.steps < 1:
            raise ValueError(f"--steps must be >= 1, got {self.steps}")
        if self.l2 < 0:
            raise ValueError(f"--l2 must be >= 0, got {self.l2}")
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"--weighting must be one of {list(WEIGHTINGS)}, got "
                             f"{self.weighting!r}")


@dataclass
class Fit:
    """weights (K,) float64 on raw activations, bias, the final training loss."""
    weights: np.ndarray
    bias: float
    loss: float


def sample_weights(pos: np.ndarray, candidates: tuple[int, int], weighting: str
                   ) -> np.ndarray:
    """(n,) float64 loss weight of each sampled pixel (summing to 1 over the classes
    present): pos (n,) bool, candidates (positives, negatives) on the training images."""
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    P, N = candidates
    if weighting == "balanced":
        share = (0.5, 0.5) if n_pos and n_neg else (1.0, 1.0)
    else:
        share = (P / (P + N), N / (P + N))
    return np.where(pos, share[0] / max(n_pos, 1), share[1] / max(n_neg, 1))


def fit_concept(features: np.ndarray, pos: np.ndarray, candidates: tuple[int, int],
                config: TrainConfig) -> Fit:
    """Fit one concept: features (n, K) of its sampled pixels, pos (n,) bool."""
    dev = torch.device(config.device)
    X = torch.as_tensor(np.asarray(features), dtype=torch.float64, device=dev)
    y = torch.as_tensor(pos, dtype=torch.float64, device=dev)
    wt = torch.as_tensor(sample_weights(pos, candidates, config.weighting), device=dev)
    s = X.pow(2).mean(dim=0).sqrt()
    s = torch.where(s > 0, s, torch.ones_like(s))
    Xs = X / s
    v = torch.zeros(X.shape[1], dtype=torch.float64, device=dev, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, device=dev, requires_grad=True)
    opt = torch.optim.LBFGS([v, b], lr=1.0, max_iter=config.steps,
                            max_eval=config.steps * 2, tolerance_grad=1e-10,
                            tolerance_change=1e-14, history_size=20,
                            line_search_fn="strong_wolfe")

    def loss_fn() -> torch.Tensor:
        z = Xs @ v + b
        loss = (wt * torch.nn.functional.binary_cross_entropy_with_logits(
            z, y, reduction="none")).sum()
        return loss + config.l2 * (v * v).sum()

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        final = float(loss_fn())
        w = (v / s).cpu().numpy().astype(np.float64)
    return Fit(w, float(b.detach().cpu()), final)


def units_carrying(weights: np.ndarray, fraction: float) -> int:
    """Fewest units whose |w| add up to at least ``fraction`` of sum |w| (0 for w = 0)."""
    a = np.sort(np.abs(np.asarray(weights, dtype=np.float64)))[::-1]
    total = a.sum()
    if total == 0:
        return 0
    return int(np.searchsorted(np.cumsum(a), fraction * total - 1e-12 * total) + 1)
