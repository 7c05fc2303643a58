"""Confidence intervals of the mean, prediction intervals for a new run, and the fitted range.

Two different questions (OLMo-core's ladder analysis keeps them apart the same way):

* **CI of the mean** — where the law's curve itself lies: the 2.5-97.5 percentiles of the
  prediction over the bootstrap refits (`draws_`, up to `MAX_DRAWS` of them kept in FIT.json).
* **prediction interval (PI)** — where the loss of one new run at those (N, D) will land: the
  curve's uncertainty plus the scatter of single runs around it. The scatter is the standard
  deviation of the fit's log residuals with n - p degrees of freedom (`noise_`); each bootstrap
  prediction is combined with normal quantiles of that noise and the percentiles taken over
  all pairs. Without bootstrap draws the PI is the noise alone (and says so).

`range_` keeps the smallest and largest N, D and C fitted; `far_outside` warns when an input lies
more than `FAR_FACTOR` beyond it (the law is then extrapolated far beyond any run it has seen).
"""
from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
from scipy.stats import norm

MAX_DRAWS = 200          # bootstrap refits kept in FIT.json for intervals of new predictions
FAR_FACTOR = 100.0       # two decades beyond the fitted range
_Z = norm.ppf((np.arange(64) + 0.5) / 64)   # deterministic noise quantiles


def record_fit_data(law: Any, X: np.ndarray, y: np.ndarray, columns: tuple[str, ...],
                    weights: np.ndarray | None = None) -> None:
    """Set `range_` (per input column, plus C = 6ND when N and D are given) and `noise_`. With the
    fit's point weights (mean 1) the scatter is the weighted one: that of the runs the fit follows."""
    X = np.asarray(X, float).reshape(len(y), -1)
    rng = {c: [float(X[:, j].min()), float(X[:, j].max())] for j, c in enumerate(columns) if c in ("N", "D", "C", "U")}
    if "N" in columns and "D" in columns:
        C = 6.0 * X[:, columns.index("N")] * X[:, columns.index("D")]
        rng["C"] = [float(C.min()), float(C.max())]
    law.range_ = rng
    with np.errstate(all="ignore"):
        r = np.log(law.predict(X)) - np.log(y)
    dof = max(len(y) - len(law.param_names), 1)
    w = np.ones_like(r) if weights is None else np.asarray(weights, float)
    law.noise_ = {"sigma_log": float(np.sqrt(np.sum(w * r * r) / dof)), "dof": int(dof),
                  "what": "standard deviation of log residuals (n - p degrees of freedom)"
                          + ("" if weights is None else ", weighted as the fit")}


def keep_draws(law: Any, params: np.ndarray) -> None:
    """Keep up to MAX_DRAWS bootstrap parameter rows (columns in `law.param_names` order)."""
    params = np.asarray(params, float)
    if params.size == 0:
        return
    idx = np.unique(np.linspace(0, len(params) - 1, min(MAX_DRAWS, len(params))).round().astype(int))
    law.draws_ = params[idx]


def _with(law: Any, row: np.ndarray) -> Any:
    twin = copy.copy(law)
    twin.params_ = dict(zip(law.param_names, map(float, row)))
    return twin


def predict_intervals(law: Any, X: Any, level: float = 0.95) -> dict[str, np.ndarray | None | str]:
    """{"loss", "ci" [n, 2] or None, "pi" [n, 2] or None, "pi_kind"} for the rows of X."""
    mean = np.asarray(law.predict(X), float)
    lo_q, hi_q = 50 * (1 - level), 50 * (1 + level)
    draws = getattr(law, "draws_", None)
    noise = getattr(law, "noise_", None)
    ci = pi = None
    kind = "none (no residuals recorded)"
    logp = None
    if draws is not None and len(draws) >= 20:
        with np.errstate(all="ignore"):
            preds = np.array([_with(law, d).predict(X) for d in draws])       # [k, n]
        preds = np.where(np.isfinite(preds) & (preds > 0), preds, np.nan)
        ci = np.nanpercentile(preds, [lo_q, hi_q], axis=0).T
        logp = np.log(preds)
    if noise is not None and math.isfinite(noise.get("sigma_log", math.nan)):
        s = noise["sigma_log"]
        if logp is not None:
            samples = logp[:, None, :] + s * _Z[None, :, None]                  # [k, 64, n]
            pi = np.exp(np.nanpercentile(samples.reshape(-1, samples.shape[-1]), [lo_q, hi_q], axis=0)).T
            kind = "bootstrap curve + residual noise"
        else:
            z = norm.ppf(0.5 + level / 2)
            pi = np.column_stack([mean * np.exp(-z * s), mean * np.exp(z * s)])
            kind = "residual noise only (no bootstrap draws)"
    return {"loss": mean, "ci": ci, "pi": pi, "pi_kind": kind}


def far_outside(law: Any, inputs: dict[str, float]) -> list[str]:
    """Warnings for inputs more than FAR_FACTOR beyond the fitted range (one line each)."""
    out = []
    for k, v in inputs.items():
        lo_hi = (getattr(law, "range_", None) or {}).get(k)
        if not lo_hi or not (v and math.isfinite(v)):
            continue
        lo, hi = lo_hi
        if v > hi * FAR_FACTOR:
            out.append(f"{k} = {v:.4g} is 10^{math.log10(v / hi):.1f} times the largest {k} fitted ({hi:.4g}): "
                       "far outside the data, the number is the law's form extrapolated, not a measurement's")
        elif v < lo / FAR_FACTOR:
            out.append(f"{k} = {v:.4g} is 10^{math.log10(lo / v):.1f} times below the smallest {k} fitted ({lo:.4g}): "
                       "far outside the data")
    return out


def to_doc(law: Any) -> dict[str, Any]:
    """FIT.json blocks: range, noise, draws."""
    out: dict[str, Any] = {}
    if getattr(law, "range_", None):
        out["range"] = law.range_
    if getattr(law, "noise_", None):
        out["noise"] = law.noise_
    if getattr(law, "draws_", None) is not None:
        out["draws"] = {"params": list(law.param_names), "values": np.asarray(law.draws_).tolist()}
    return out


def from_doc(law: Any, d: dict[str, Any]) -> None:
    if d.get("range"):
        law.range_ = {k: list(v) for k, v in d["range"].items()}
    if d.get("noise"):
        law.noise_ = dict(d["noise"])
    dr = d.get("draws")
    if isinstance(dr, dict) and dr.get("values") and list(dr.get("params", [])) == list(law.param_names):
        law.draws_ = np.asarray(dr["values"], float)
