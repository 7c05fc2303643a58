"""Post-training laws: accuracy against post-training compute C (FLOPs, or examples, steps,
samples), saturating towards an asymptote.

    scalerl          R(C) = R0 + (A - R0) / (1 + (C_mid / C)^B)
    posttrain-power  acc(C) = A - K·C^(-gamma)

`scalerl` is the sigmoid that ScaleRL fits to RL curves (Khatri et al. 2025, "The Art of Scaling
Reinforcement Learning Compute for LLMs", eq. 1): R0 the accuracy before post-training, A the
asymptote it tends to, B the efficiency exponent (how sharply the gain arrives), C_mid the compute
at which half of the gain A - R0 is reached. ScaleRL fits it on the early part of a run and
extrapolates to the rest; `scalelab.laws.posttrain_fit` does the same with the largest budget held
out. `posttrain-power` is the saturating power law of fine-tuning curves (the test-time law's form,
`scalelab.laws.sampling`, fitted the same way), the one to compare for SFT and distillation.

Fitting `scalerl`: least squares on accuracy. For fixed (B, C_mid) the model is linear in (R0, A)
(R(C) = R0·(1 - s) + A·s with s = 1 / (1 + (C_mid/C)^B)), so R0 and A are solved exactly
(variable projection; both kept in [0, 1]) and only (log C_mid, log B) are searched: a grid, then
L-BFGS-B from its best point, whose success flag is `result_.success`. R0 is fixed when known
(`R0=`, the parent's accuracy), which leaves three parameters to the points after C = 0. C is
divided by its geometric mean inside the fit; C_mid is reported in the units of C.

    ScaleRLLaw(R0=0.12).fit(C, acc).predict([1e15])
"""
from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
from scipy.optimize import OptimizeResult, minimize

from scalelab.errors import InputError
from scalelab.laws.base import Law, Timer, percentile_ci
from scalelab.laws.sampling import _fit_saturating, check_xy

X_FLOPS = ("stage_flops", "posttrain_flops", "flops.posttrain", "flops", "C")
LOG_B = np.linspace(np.log(0.1), np.log(8.0), 25)      # efficiency exponents searched (ScaleRL reports B ~ 1-3)
LOG_MID = np.linspace(np.log(1e-4), np.log(1e4), 49)   # C_mid / geometric mean of C


def _solve(s: np.ndarray, y: np.ndarray, R0: float | None) -> tuple[float, float, float]:
    """Least squares (R0, A) of y = R0 (1 - s) + A s, both in [0, 1]; returns (R0, A, SSE)."""
    r0, A, sse = _solve_rows(s[None, :], y, R0)
    return float(r0[0]), float(A[0]), float(sse[0])


def _solve_rows(S: np.ndarray, y: np.ndarray, R0: float | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`_solve` for every row of S [G, n] at once. Unconstrained, (R0, A) are the 2 x 2 normal
    equations' solution; when that leaves the box [0, 1]^2, the optimum of the convex quadratic lies
    on an edge, and each edge (one coordinate at 0 or 1, the other solved and clipped) is tried."""
    U = 1 - S

    def fit(w: np.ndarray, d: np.ndarray) -> np.ndarray:  # c in [0, 1] minimising |d - c w|^2, per row
        return np.clip((w * d).sum(1) / np.maximum((w * w).sum(1), 1e-300), 0.0, 1.0)

    def sse(r0: np.ndarray, A: np.ndarray) -> np.ndarray:
        return ((y[None, :] - r0[:, None] * U - A[:, None] * S) ** 2).sum(1)

    if R0 is not None:
        r0 = np.full(S.shape[0], float(R0))
        A = np.clip(R0 + (S * (y - R0)).sum(1) / np.maximum((S * S).sum(1), 1e-300), 0.0, 1.0)
        return r0, A, sse(r0, A)
    a11, a12, a22 = (U * U).sum(1), (U * S).sum(1), (S * S).sum(1)
    b1, b2 = (U * y).sum(1), (S * y).sum(1)
    det = a11 * a22 - a12 ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        r0, A = (a22 * b1 - a12 * b2) / det, (a11 * b2 - a12 * b1) / det
        best = sse(r0, A)
    inside = (r0 >= 0) & (r0 <= 1) & (A >= 0) & (A <= 1) & np.isfinite(best) & (np.abs(det) > 1e-12 * a11 * a22)
    best = np.where(inside, best, np.inf)
    for edge in (0.0, 1.0):
        e = np.full(S.shape[0], edge)
        for cr0, cA in ((e, fit(S, y[None, :] - edge * U)), (fit(U, y[None, :] - edge * S), e)):
            f = sse(cr0, cA)
            better = f < best
            r0, A, best = np.where(better, cr0, r0), np.where(better, cA, A), np.where(better, f, best)
    return r0, A, best


def _sig(x: np.ndarray, log_mid: float, log_b: float) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(np.exp(log_b) * (log_mid - np.log(x))))


def fit_sigmoid(x: np.ndarray, y: np.ndarray, R0: float | None) -> OptimizeResult:
    """(R0, A, B, C_mid) by variable projection over (log C_mid, log B); x already normalised."""
    sse = lambda p: _solve(_sig(x, p[0], p[1]), y, R0)[2]  # noqa: E731
    m0, b0, f0 = _grid(x, y, R0)
    bounds = [(LOG_MID[0] - 2, LOG_MID[-1] + 2), (LOG_B[0], LOG_B[-1])]
    res = minimize(sse, [m0, b0], method="L-BFGS-B", bounds=bounds)
    p = res.x if res.fun <= f0 else np.array([m0, b0])
    r0, A, f = _solve(_sig(x, p[0], p[1]), y, R0)
    at_edge = bool(np.isclose(p[1], bounds[1][0]) or np.isclose(p[1], bounds[1][1]))
    msg = str(res.message) + ("; B at the edge of its range [0.1, 8]" if at_edge else "")
    return OptimizeResult(x=np.array([A, math.exp(p[1]), math.exp(p[0]), r0]), fun=f, success=bool(res.success),
                          message=msg, nit=int(res.nit), at_edge=at_edge)


def _grid(x: np.ndarray, y: np.ndarray, R0: float | None) -> tuple[float, float, float]:
    """The best (log C_mid, log B) of the grid and its SSE, every grid point solved at once."""
    M, LB = (a.ravel() for a in np.meshgrid(LOG_MID, LOG_B, indexing="ij"))
    S = 1.0 / (1.0 + np.exp(np.exp(LB)[:, None] * (M[:, None] - np.log(x)[None, :])))  # [G, n]
    sse = _solve_rows(S, y, R0)[2]
    i = int(np.argmin(sse))
    return float(M[i]), float(LB[i]), float(sse[i])


class _PosttrainLaw(Law):
    """What the two forms share: one column x (> 0), accuracy in [0, 1], point-bootstrap intervals."""

    columns = ("x",)
    verbs = frozenset({"predict"})
    min_points = 3
    min_distinct = {"x": 3}

    def _fit_once(self, x: np.ndarray, y: np.ndarray) -> OptimizeResult:  # pragma: no cover - abstract
        raise NotImplementedError

    def _params(self, r: OptimizeResult) -> dict[str, float]:  # pragma: no cover - abstract
        raise NotImplementedError

    def fit(self, X: Any, y: Any, *, progress: Callable[[int, int], None] | None = None) -> "_PosttrainLaw":
        x, yy = check_xy(X, y, "C")
        if np.unique(x).size < self.min_distinct["x"]:
            raise InputError(f"law '{self.name}' needs at least {self.min_distinct['x']} distinct budgets; got {np.unique(x).size}")
        timer = Timer()
        self.x0_ = float(np.exp(np.log(x).mean()))
        self.result_ = self._fit_once(x / self.x0_, yy)
        self.params_ = self._params(self.result_)
        self.n_points_ = int(x.size)
        self.ci_: dict[str, tuple[float, float]] = {}
        self.bootstrap_failed_ = 0
        if self.bootstrap and self.bootstrap > 0:
            rng, rows = np.random.default_rng(self.seed), []
            for b in range(int(self.bootstrap)):
                idx = rng.integers(0, x.size, x.size)
                if np.unique(x[idx]).size < self.min_distinct["x"]:
                    self.bootstrap_failed_ += 1
                    continue
                p = self._params(self._fit_once(x[idx] / self.x0_, yy[idx]))
                rows.append([p[k] for k in self.param_names])
                if progress is not None:
                    progress(b + 1, int(self.bootstrap))
            if rows:
                arr = np.array(rows)
                self.ci_ = {k: percentile_ci(arr[:, j]) for j, k in enumerate(self.param_names)}
        self.timing_ = {"fit_s": timer()}
        return self

    def extra_summary(self) -> dict[str, Any]:
        return {"x0": getattr(self, "x0_", None), "timing": getattr(self, "timing_", {})}

    def prepare_table(self, frame: Any, col_map: dict[str, str] | None = None) -> Any:
        """`scalelab fit TABLE --law NAME`: one curve of accuracy (or --col loss=NAME) against
        post-training FLOPs (or --col C=NAME); `scalelab posttrain fit` selects techniques."""
        import pandas as pd

        from scalelab.laws.table import Prepared

        col_map = col_map or {}
        if "phase" in frame.columns and (frame["phase"] == "posttrain").any():
            frame = frame[frame["phase"] == "posttrain"]
        if "technique" in frame.columns and frame["technique"].nunique() > 1:
            raise InputError(f"the table holds {frame['technique'].nunique()} techniques; fit one with "
                             "`scalelab posttrain fit TABLE --technique NAME`")
        xcol = col_map.get("C") or next((c for c in X_FLOPS if c in frame.columns), None)
        ycol = col_map.get("loss") or next((c for c in ("accuracy", "metrics.accuracy") if c in frame.columns), None)
        if xcol not in frame.columns or ycol not in frame.columns:
            raise InputError(f"law '{self.name}' reads post-training FLOPs ({', '.join(X_FLOPS)}, or --col C=NAME) and "
                             f"accuracy (or --col loss=NAME); columns: {', '.join(map(str, frame.columns[:20]))}")
        X, y = check_xy(pd.to_numeric(frame[xcol], errors="coerce").to_numpy(float),
                        pd.to_numeric(frame[ycol], errors="coerce").to_numpy(float), xcol)
        return Prepared(X=X[:, None], y=y, frame=pd.DataFrame({xcol: X, ycol: y}),
                        notices=[f"post-training curve: {ycol} against {xcol} ({X.size} points)"])


class ScaleRLLaw(_PosttrainLaw):
    name = "scalerl"
    title = "ScaleRL R(C) = R0 + (A - R0) / (1 + (C_mid/C)^B)"
    param_names = ("A", "B", "C_mid", "R0")

    def __init__(self, *, R0: float | None = None, bootstrap: int = 200, seed: int = 0):
        self.R0 = R0                  # accuracy before post-training (the parent's); None: fitted
        self.bootstrap = bootstrap
        self.seed = seed

    def _fit_once(self, x: np.ndarray, y: np.ndarray) -> OptimizeResult:
        if self.R0 is not None and not 0 <= self.R0 <= 1:
            raise InputError(f"R0={self.R0}: the accuracy before post-training must be in [0, 1]")
        return fit_sigmoid(x, y, self.R0)

    def _params(self, r: OptimizeResult) -> dict[str, float]:
        A, B, mid, r0 = r.x
        return {"A": float(A), "B": float(B), "C_mid": float(mid * self.x0_), "R0": float(r0)}

    def predict(self, X: Any) -> np.ndarray:
        self._check_fitted()
        p = self.params_
        x = np.asarray(X, float).reshape(-1)
        with np.errstate(divide="ignore"):
            return p["R0"] + (p["A"] - p["R0"]) / (1.0 + (p["C_mid"] / x) ** p["B"])


class PosttrainPowerLaw(_PosttrainLaw):
    name = "posttrain-power"
    title = "post-training power law acc(C) = A - K·C^(-gamma)"
    param_names = ("A", "K", "gamma")

    def __init__(self, *, bootstrap: int = 200, seed: int = 0):
        self.bootstrap = bootstrap
        self.seed = seed

    def _fit_once(self, x: np.ndarray, y: np.ndarray) -> OptimizeResult:
        return _fit_saturating(x, y)

    def _params(self, r: OptimizeResult) -> dict[str, float]:
        A, K, g = r.x
        return {"A": float(A), "K": float(K * self.x0_ ** g), "gamma": float(g)}

    def predict(self, X: Any) -> np.ndarray:
        self._check_fitted()
        p = self.params_
        return p["A"] - p["K"] * np.asarray(X, float).reshape(-1) ** -p["gamma"]
