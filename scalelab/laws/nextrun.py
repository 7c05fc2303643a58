"""The next run to make: which (N, D) most narrows the prediction at a target compute.

The fitted law's parameters θ (Hoffmann form: log L̂ = LSE(a - alpha·log N, b - beta·log D, e))
have, to first order, covariance sigma²·(JᵀJ)⁻¹, where J is the Jacobian of log L̂ over the runs
and sigma the scatter of their log residuals (`noise_`). The variance of the log prediction at a
target (N*, D*) is gᵀ·Cov·g with g its gradient (the delta method; Seber & Wild 2003, Sec. 5.1).
A new run at (N, D) adds one row j to J; its effect on the target's variance is known before it
is trained, whatever its loss turns out to be. Runs are chosen greedily: each spends budget/K
FLOPs (C = 6ND) at the tokens-per-parameter ratio, from 2 to 1,000, that most shrinks the
variance given the runs chosen before it.

The target is the compute-optimal model at `at` FLOPs (default 10x the largest run). The
interval of the mean shrinks with new runs; the prediction interval for one run at the target
keeps the residual scatter (sigma) however many runs are added, and the report shows both.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from scipy.stats import norm

from scalelab.errors import InputError

Z95 = float(norm.ppf(0.975))
RATIOS = np.geomspace(2.0, 1000.0, 40)   # tokens per parameter searched for each new run


def _jacobian(p: dict[str, float], N: np.ndarray, D: np.ndarray, form: str, fixed_e: bool) -> np.ndarray:
    uN = p["A"] * N ** -p["alpha"]
    uD = p["B"] * D ** -p["beta"]
    S = p["E"] + uN + uD
    wN, wD, wE = uN / S, uD / S, p["E"] / S
    cols = [wN, wD] + ([] if fixed_e else [wE])
    if form == "tied":
        cols.append(-wN * np.log(N) - wD * np.log(D))
    else:
        cols += [-wN * np.log(N), -wD * np.log(D)]
    return np.column_stack(cols)


def _var(J: np.ndarray, g: np.ndarray, sigma: float) -> float:
    scale = np.linalg.norm(J, axis=0)
    scale[scale == 0] = 1.0
    Js, gs = J / scale, g / scale
    cov = np.linalg.pinv(Js.T @ Js, rcond=1e-13)
    return float(sigma ** 2 * gs @ cov @ gs)


def next_runs(law: Any, X: np.ndarray, *, budget: float, k: int = 1, at: float | None = None) -> dict[str, Any]:
    """Greedy choice of `k` runs of budget/k FLOPs each (module docstring)."""
    if law.name != "chinchilla":
        raise InputError(f"next: needs a chinchilla fit, not '{law.name}'")
    if not (np.isfinite(budget) and budget > 0):
        raise InputError("--budget must be a finite number of FLOPs > 0")
    if k < 1 or k > 20:
        raise InputError("--k must be between 1 and 20")
    N, D = np.asarray(X, float).T
    at = float(at if at is not None else 10 * np.max(6 * N * D))
    if not (np.isfinite(at) and at > 0):
        raise InputError("--at must be a finite number of FLOPs > 0")
    p, form, fixed_e = law.params_, getattr(law, "form", "free"), getattr(law, "E_fixed", None) is not None
    sigma = float(law.noise_["sigma_log"])
    target = law.compute_optimal(at)
    g = _jacobian(p, np.array([target.N]), np.array([target.D]), form, fixed_e)[0]
    J = _jacobian(p, N, D, form, fixed_e)
    before = _var(J, g, sigma)
    c = budget / k
    cand_N = np.sqrt(c / (6 * RATIOS))
    cand = _jacobian(p, cand_N, cand_N * RATIOS, form, fixed_e)
    chosen = []
    for _ in range(k):
        vs = np.array([_var(np.vstack([J, row]), g, sigma) for row in cand])
        i = int(np.argmin(vs))
        J = np.vstack([J, cand[i]])
        chosen.append({"N": float(cand_N[i]), "D": float(cand_N[i] * RATIOS[i]), "tokens_per_param": float(RATIOS[i]),
                       "compute": float(c), "loss": float(law.predict([[cand_N[i], cand_N[i] * RATIOS[i]]])[0]),
                       "sd_log_after": float(np.sqrt(vs[i]))})
    after = _var(J, g, sigma)

    def band(var_mean: float, with_noise: bool) -> list[float]:
        s = np.sqrt(var_mean + (sigma ** 2 if with_noise else 0.0))
        return [float(target.loss * np.exp(-Z95 * s)), float(target.loss * np.exp(Z95 * s))]

    return {"target": {"compute": at, "N": target.N, "D": target.D, "loss": target.loss},
            "runs": chosen, "sigma_log": sigma,
            "before": {"ci95_mean": band(before, False), "pi95_new_run": band(before, True)},
            "after": {"ci95_mean": band(after, False), "pi95_new_run": band(after, True)},
            "method": "delta method (first-order covariance sigma²·(JᵀJ)⁻¹), greedy over tokens per parameter"}
