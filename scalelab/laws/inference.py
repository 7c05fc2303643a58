"""Inference-aware optimum (Sardana et al. 2024, "Beyond Chinchilla-Optimal: Accounting for
Inference in Language Model Scaling Laws", Sec. 2, Eq. 3-4).

A model that will serve D_inf tokens costs 6·N·D_train to train and about 2·N·D_inf to serve.
For a target loss l, the cheapest model minimises

    total(N) = 6·N·D_train(N) + 2·N·D_inf   subject to   L(N, D_train(N)) = l.

For the Chinchilla law the constraint solves in closed form,
    D_train(N) = (B / (l - E - A·N^-alpha))^(1/beta),   defined for N > (A/(l - E))^(1/alpha),
so the search is over one variable. total(N) grows without bound at both ends of that range;
we scan log N and finish with Brent's method on the best bracket. The default target is the
loss of the Chinchilla-optimal model at the given compute; with D_inf = 0 the answer is that
model (a check used in the tests).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar

from scalelab.errors import InputError


@dataclass
class InferenceOptimum:
    target_loss: float
    inference_tokens: float
    N: float
    D_train: float
    train_flops: float
    inference_flops: float
    # The Chinchilla-optimal model reaching the same loss, for comparison.
    chinchilla_N: float
    chinchilla_D: float
    chinchilla_total_flops: float

    @property
    def total_flops(self) -> float:
        return self.train_flops + self.inference_flops

    @property
    def tokens_per_param(self) -> float:
        return self.D_train / self.N

    @property
    def saving(self) -> float:
        """Fraction of total (train + inference) FLOPs saved against the Chinchilla-optimal model."""
        return 1.0 - self.total_flops / self.chinchilla_total_flops

    def as_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d.update(total_flops=self.total_flops, tokens_per_param=self.tokens_per_param, saving=self.saving)
        return d


def _d_train(N: np.ndarray, target: float, p: dict[str, float]) -> np.ndarray:
    gap = target - p["E"] - p["A"] * N ** -p["alpha"]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(gap > 0, (p["B"] / gap) ** (1.0 / p["beta"]), np.inf)


def inference_optimal(law: Any, *, inference_tokens: float, compute: float | None = None,
                      target_loss: float | None = None) -> InferenceOptimum:
    """Sardana et al.'s optimum for a fitted Chinchilla law (see module docstring)."""
    law._check_fitted()
    if getattr(law, "name", "") != "chinchilla":
        raise InputError(f"--inference-tokens needs a chinchilla fit, not '{getattr(law, 'name', law)}'")
    if not (np.isfinite(inference_tokens) and inference_tokens >= 0):
        raise InputError("inference tokens must be a finite number >= 0")
    p = law.params_
    if target_loss is None:
        if compute is None:
            raise InputError("give a compute budget or a target loss")
        target_loss = law.compute_optimal(compute).loss
    if not target_loss > p["E"]:
        raise InputError(f"target loss {target_loss:.4g} is not above the irreducible loss E = {p['E']:.4g}")
    n_min = (p["A"] / (target_loss - p["E"])) ** (1.0 / p["alpha"])

    def total(logn: np.ndarray) -> np.ndarray:
        N = np.exp(logn)
        return 6.0 * N * _d_train(N, target_loss, p) + 2.0 * N * inference_tokens

    def train_only(logn: np.ndarray) -> np.ndarray:
        N = np.exp(logn)
        return 6.0 * N * _d_train(N, target_loss, p)

    def argmin(f) -> float:
        grid = np.log(n_min) + np.geomspace(1e-6, 40.0, 2000)
        vals = f(grid)
        j = int(np.argmin(vals))
        lo, hi = grid[max(j - 1, 0)], grid[min(j + 1, len(grid) - 1)]
        r = minimize_scalar(lambda u: float(f(np.array([u]))[0]), bounds=(lo, hi), method="bounded",
                            options={"xatol": 1e-12})
        return float(r.x)

    u = argmin(total)
    N = float(np.exp(u))
    D = float(_d_train(np.array([N]), target_loss, p)[0])
    uc = argmin(train_only)
    Nc = float(np.exp(uc))
    Dc = float(_d_train(np.array([Nc]), target_loss, p)[0])
    return InferenceOptimum(
        target_loss=float(target_loss), inference_tokens=float(inference_tokens), N=N, D_train=D,
        train_flops=6.0 * N * D, inference_flops=2.0 * N * inference_tokens,
        chinchilla_N=Nc, chinchilla_D=Dc, chinchilla_total_flops=6.0 * Nc * Dc + 2.0 * Nc * inference_tokens,
    )
