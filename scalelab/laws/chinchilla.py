"""The Chinchilla parametric law L(N, D) = E + A/N^alpha + B/D^beta (approach 3).

Fitted as Hoffmann et al. (2022, App. D.2) describe and Besiroglu et al. (2024, "Chinchilla
Scaling: A replication attempt") reproduce: parameters a = log A, b = log B, e = log E, alpha,
beta; the model's log-loss is LSE(a - alpha·log N, b - beta·log D, e); the objective is the sum
of Huber losses (delta = 1e-3) of log-loss residuals; L-BFGS from every start of a 4,500-point
grid; the best optimum wins. Intervals are percentile bootstrap intervals (Besiroglu et al.
use 4,000 resamples; the default here is 1,000).

Compute-optimal allocation for C = 6·N·D (Hoffmann et al. 2022, Eq. 4):
    N*(C) = G·(C/6)^a,  D*(C) = G^-1·(C/6)^b,  G = (alpha·A / (beta·B))^(1/(alpha+beta)),
    a = beta/(alpha+beta),  b = alpha/(alpha+beta).

    >>> law = ChinchillaLaw(bootstrap=0).fit(np.column_stack([N, D]), loss)
    >>> law.params_, law.compute_optimal(1e23).N
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from scalelab.errors import InputError
from scalelab.laws.base import Allocation, Law, Timer, as_columns, as_target, percentile_ci
from scalelab.laws.loghuber import (BOOTSTRAP_TOL, FixedConstObjective, LogHuberObjective, bootstrap_refits, fit_multistart,
                                    frontier_weights, hoffmann_grid, select_starts)
from scalelab.laws.intervals import keep_draws, record_fit_data
from scalelab.laws.optimize import HUBER_DELTA
from scalelab.laws.vpnls import TiedLast, vpnls_starts

FORMS = ("free", "tied", "fixed-e")
METHODS = ("lbfgs", "vpnls")
# When the fit counts as identified: each 95% interval's hi/lo within these factors. An exponent
# known within 2.5x still orders the compute-optimal split; a coefficient within 100x (two decades)
# is what an exponent that uncertain leaves of it over a decade of N or D. A bound <= 0 fails.
IDENTIFIED_BARS = {"alpha": 2.5, "beta": 2.5, "A": 100.0, "B": 100.0}


class ChinchillaLaw(Law):
    name = "chinchilla"
    title = "Chinchilla L(N, D) = E + A/N^alpha + B/D^beta"
    columns = ("N", "D")
    param_names = ("E", "A", "B", "alpha", "beta")
    verbs = frozenset({"predict", "optimal"})
    min_points = 6                      # 5 free parameters
    min_distinct = {"N": 3, "D": 3}     # a curvature in each variable needs three values

    def __init__(self, *, form: str = "free", method: str = "lbfgs", n_init: int | None = None,
                 bootstrap: int = 1000, seed: int = 0, delta: float = HUBER_DELTA, n_jobs: int | None = None,
                 E_fixed: float | None = None, frontier_weight: float = 0.0):
        self.form = form              # free | tied (alpha = beta, Gadre et al. 2024) | fixed-e (needs E_fixed)
        self.method = method          # lbfgs: Hoffmann-grid multi-start; vpnls: variable projection, then polish
        self.E_fixed = E_fixed        # a known irreducible loss (e.g. the testbed's entropy floor): not fitted
        self.n_init = n_init          # None: the full Hoffmann grid (4,500 starts)
        self.bootstrap = bootstrap    # resamples for the 95% intervals (0: none)
        self.seed = seed
        self.delta = delta
        self.n_jobs = n_jobs          # processes for the multi-start pass (None: all CPUs)
        self.frontier_weight = frontier_weight  # runs weighted by (C/C_max)^this (loghuber.frontier_weights)

    # ---- fitting -----------------------------------------------------------------------------
    def fit(self, X: Any, y: Any, *, progress: Callable[[int, int], None] | None = None) -> "ChinchillaLaw":
        X = as_columns(X, 2, self.columns)
        y = as_target(y, X.shape[0])
        timer = Timer()
        obj, grid, full = self._objective(X, y)
        if self.method == "vpnls":
            E = None if self.E_fixed is None else float(self.E_fixed)
            starts5, self.vpnls_ = vpnls_starts(X[:, 0], X[:, 1], y, E=E, tied=self.form == "tied",
                                                weights=frontier_weights(X[:, 0] * X[:, 1], self.frontier_weight))
            starts = self._reduce(starts5)
            # few starts, all near the optimum: the batch can run to the tight tolerances
            self.result_ = fit_multistart(obj, starts, n_jobs=1, polish_top=3, tol=BOOTSTRAP_TOL)
        else:
            starts = select_starts(obj, grid, self.n_init, self.seed)
            self.result_ = fit_multistart(obj, starts, n_jobs=self.n_jobs)
        self.result_.x = full(self.result_.x)[0]
        self.theta_ = np.asarray(self.result_.x, float)
        self.params_ = self._params_from_theta(self.theta_)
        self.n_points_ = int(X.shape[0])
        record_fit_data(self, X, y, self.columns, frontier_weights(X[:, 0] * X[:, 1], self.frontier_weight))
        self.timing_ = {"fit_s": timer()}
        self.ci_, self.optimal_ci_ = {}, {}
        self.bootstrap_failed_ = 0
        if self.bootstrap and self.bootstrap > 0:
            t2 = Timer()
            # vpnls: each resample starts from the full-data optimum and its best grid point (the
            # multi-start method keeps its three best starts per resample, as before)
            grid_b, top = (grid, 1) if self.method == "vpnls" else (starts, 3)
            thetas, ok = bootstrap_refits(obj, self._reduce(self.theta_), grid_b, n_boot=int(self.bootstrap),
                                          seed=self.seed, top=top, n_jobs=self.n_jobs, progress=progress)
            thetas = full(thetas)
            self.bootstrap_failed_ = int((~ok).sum())
            self.bootstrap_params_ = thetas[ok]
            self._set_intervals(self.bootstrap_params_)
            a, b, e, al, be = self.bootstrap_params_.T
            with np.errstate(over="ignore"):
                keep_draws(self, np.column_stack([np.exp(e), np.exp(a), np.exp(b), al, be]))
            self.timing_["bootstrap_s"] = t2()
        return self

    def _objective(self, X: np.ndarray, y: np.ndarray):
        """The Huber objective of this form, its start grid, and the map back to [a, b, e, alpha, beta]."""
        if self.form not in FORMS:
            raise InputError(f"chinchilla: form {self.form!r} is not one of {', '.join(FORMS)}")
        if not (np.isfinite(self.frontier_weight) and self.frontier_weight >= 0):
            raise InputError(f"chinchilla: frontier_weight must be a number >= 0, got {self.frontier_weight!r}")
        if self.method not in METHODS:
            raise InputError(f"chinchilla: method {self.method!r} is not one of {', '.join(METHODS)}")
        if self.form == "fixed-e" and self.E_fixed is None:
            raise InputError("chinchilla: form 'fixed-e' needs a known irreducible loss (--floor)")
        w = frontier_weights(X[:, 0] * X[:, 1], self.frontier_weight)   # C = 6·N·D, up to the factor
        obj = LogHuberObjective(np.log(X), np.log(y), (0, 1), True, w, self.delta)
        grid = hoffmann_grid(2, True)
        steps = []
        if self.E_fixed is not None:
            if not (np.isfinite(self.E_fixed) and 0 < self.E_fixed < y.min()):
                raise InputError(f"fixed E = {self.E_fixed:g}: must be > 0 and below every loss "
                                 f"(the lowest is {y.min():.6g})")
            obj = FixedConstObjective(obj, float(np.log(self.E_fixed)))
            grid = np.unique(np.delete(grid, 2, axis=1), axis=0)  # the 900 (a, b, alpha, beta) starts
            steps.append(obj.full)
        if self.form == "tied":
            obj = TiedLast(obj)
            grid = np.unique(grid[:, :-1], axis=0)
            steps.append(TiedLast.expand)

        def full(X):
            X = np.atleast_2d(X)
            for f in reversed(steps):
                X = f(X)
            return X
        return obj, grid, full

    def _reduce(self, thetas: np.ndarray) -> np.ndarray:
        """[a, b, e, alpha, beta] rows -> the rows this form optimises (inverse of `full`)."""
        X = np.atleast_2d(np.asarray(thetas, float))
        if self.E_fixed is not None:
            X = np.delete(X, 2, axis=1)
        return X[:, :-1] if self.form == "tied" else X

    @staticmethod
    def _params_from_theta(theta: np.ndarray) -> dict[str, float]:
        a, b, e, alpha, beta = (float(v) for v in theta)
        return {"E": np.exp(e), "A": np.exp(a), "B": np.exp(b), "alpha": alpha, "beta": beta}

    def _set_intervals(self, thetas: np.ndarray) -> None:
        a, b, e, al, be = thetas.T
        with np.errstate(over="ignore"):  # a resample can run A or B off to inf: it widens the interval
            cols = {"E": np.exp(e), "A": np.exp(a), "B": np.exp(b), "alpha": al, "beta": be}
        self.ci_ = {k: percentile_ci(v) for k, v in cols.items()}
        with np.errstate(divide="ignore", invalid="ignore"):
            self.optimal_ci_ = {"a": percentile_ci(be / (al + be)), "b": percentile_ci(al / (al + be))}

    # ---- using the law -----------------------------------------------------------------------
    def predict(self, X: Any) -> np.ndarray:
        self._check_fitted()
        X = as_columns(X, 2, self.columns)
        p = self.params_
        return p["E"] + p["A"] * X[:, 0] ** -p["alpha"] + p["B"] * X[:, 1] ** -p["beta"]

    def optimal_exponents(self) -> dict[str, float]:
        self._check_fitted()
        al, be = self.params_["alpha"], self.params_["beta"]
        return {"a": be / (al + be), "b": al / (al + be)}

    def compute_optimal(self, C: float, **_: Any) -> Allocation:
        """N*, D* minimising L(N, D) subject to 6·N·D = C (Hoffmann et al. 2022, Eq. 4)."""
        self._check_fitted()
        if not (np.isfinite(C) and C > 0):
            raise ValueError("compute must be a positive number of FLOPs")
        p = self.params_
        if not (p["alpha"] > 0 and p["beta"] > 0):  # loss does not fall with both N and D: no optimum
            raise InputError(f"alpha = {p['alpha']:.4g}, beta = {p['beta']:.4g}: the fit has no compute-optimal allocation")
        ex = self.optimal_exponents()
        G = (p["alpha"] * p["A"] / (p["beta"] * p["B"])) ** (1.0 / (p["alpha"] + p["beta"]))
        N = G * (C / 6.0) ** ex["a"]
        D = (C / 6.0) ** ex["b"] / G
        return Allocation(compute=float(C), N=float(N), D=float(D), loss=float(self.predict([[N, D]])[0]))

    def identification(self) -> dict[str, Any] | None:
        """Each interval's hi/lo against IDENTIFIED_BARS, and whether all are within (None without
        intervals). A noisy or narrow sweep fits a curve yet pins neither exponent: say so."""
        ci = self.ci_ or {}
        if not all(k in ci for k in IDENTIFIED_BARS):
            return None
        ratio = {k: (ci[k][1] / ci[k][0] if ci[k][0] > 0 and np.isfinite(ci[k][1]) else float("inf"))
                 for k in IDENTIFIED_BARS}
        return {"identified": all(ratio[k] <= bar for k, bar in IDENTIFIED_BARS.items()),
                "hi_lo": ratio, "bars": dict(IDENTIFIED_BARS)}

    def extra_summary(self) -> dict[str, Any]:
        res = self.result_
        out: dict[str, Any] = {
            "optimal_ci95": {k: list(v) for k, v in getattr(self, "optimal_ci_", {}).items()},
            "starts": {"n": getattr(res, "n_starts", None), "converged": getattr(res, "n_starts_converged", None)},
        }
        if self.bootstrap:
            out["bootstrap"] = {"n": int(self.bootstrap), "failed": int(getattr(self, "bootstrap_failed_", 0)),
                                "seed": self.seed}
        if hasattr(self, "timing_"):
            out["timing"] = self.timing_
        ident = self.identification_doc()
        if ident is not None:
            out["identification"] = ident
        return out

    def identification_doc(self) -> dict[str, Any] | None:
        """`identification()` as strict JSON: an unbounded ratio is the string "inf"."""
        ident = self.identification()
        if ident is None:
            return None
        return {**ident, "hi_lo": {k: (float(v) if np.isfinite(v) else "inf") for k, v in ident["hi_lo"].items()}}

    def _restore_extra(self, d: dict[str, Any]) -> None:
        self.optimal_ci_ = {k: tuple(v) for k, v in (d.get("optimal_ci95") or {}).items()}
