"""One-variable power laws L(x) = E + A·x^(-alpha), and the pure form L(x) = A·x^(-alpha).

Kaplan et al. (2020, Eqs. 1.1-1.3) write L(N), L(D) and L(C_min) as pure power laws; the
irreducible term E (Henighan et al. 2020; Hoffmann et al. 2022) makes them bend towards a floor.
Fitted the same way as the Chinchilla law (Huber, delta = 1e-3, on log-loss residuals, in the
log-sum-exp parameterisation, L-BFGS from Hoffmann's grid restricted to one term), so the two
fits of one data set are comparable.

    >>> PowerLaw(x="C").fit(C, loss).predict([1e22])
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from scalelab.laws.base import Law, Timer, as_columns, as_target, percentile_ci
from scalelab.errors import InputError
from scalelab.laws.loghuber import (LogHuberObjective, bootstrap_refits, fit_multistart, frontier_weights,
                                    hoffmann_grid, select_starts)
from scalelab.laws.intervals import keep_draws, record_fit_data
from scalelab.laws.optimize import HUBER_DELTA


class PowerLaw(Law):
    name = "power"
    title = "power law L(x) = E + A·x^(-alpha)"
    columns = ("x",)
    param_names = ("E", "A", "alpha")
    verbs = frozenset({"predict"})
    min_points = 4
    min_distinct = {"x": 3}

    def __init__(self, *, x: str = "N", irreducible: bool = True, n_init: int | None = None,
                 bootstrap: int = 1000, seed: int = 0, delta: float = HUBER_DELTA, frontier_weight: float = 0.0):
        self.x = x                        # which quantity the law is of: N, D, C or any column
        self.irreducible = irreducible    # False: pure power law (E = 0)
        self.n_init = n_init
        self.bootstrap = bootstrap
        self.seed = seed
        self.delta = delta
        self.frontier_weight = frontier_weight   # runs weighted by (x/x_max)^this (loghuber.frontier_weights)

    def fit(self, X: Any, y: Any, *, progress: Callable[[int, int], None] | None = None) -> "PowerLaw":
        X = as_columns(X, 1, (self.x,))
        y = as_target(y, X.shape[0])
        timer = Timer()
        if not (np.isfinite(self.frontier_weight) and self.frontier_weight >= 0):
            raise InputError(f"power: frontier_weight must be a number >= 0, got {self.frontier_weight!r}")
        obj = LogHuberObjective(np.log(X), np.log(y), (0,), bool(self.irreducible),
                                frontier_weights(X[:, 0], self.frontier_weight), self.delta)
        grid = hoffmann_grid(1, bool(self.irreducible))
        starts = select_starts(obj, grid, self.n_init, self.seed)
        self.result_ = fit_multistart(obj, starts, n_jobs=1)
        self.theta_ = np.asarray(self.result_.x, float)
        self.params_ = self._params(self.theta_[None, :])
        self.params_ = {k: float(v[0]) for k, v in self.params_.items()}
        self.n_points_ = int(X.shape[0])
        record_fit_data(self, X, y, (self.x,), frontier_weights(X[:, 0], self.frontier_weight))
        self.timing_ = {"fit_s": timer()}
        self.ci_ = {}
        self.bootstrap_failed_ = 0
        if self.bootstrap and self.bootstrap > 0:
            t2 = Timer()
            thetas, ok = bootstrap_refits(obj, self.theta_, starts, n_boot=int(self.bootstrap),
                                          seed=self.seed, progress=progress)
            self.bootstrap_failed_ = int((~ok).sum())
            cols = self._params(thetas[ok])
            self.ci_ = {k: percentile_ci(v) for k, v in cols.items() if k != "E" or self.irreducible}
            with np.errstate(over="ignore"):
                keep_draws(self, np.column_stack([cols[k] for k in self.param_names]))
            self.timing_["bootstrap_s"] = t2()
        return self

    def _params(self, thetas: np.ndarray) -> dict[str, np.ndarray]:
        if self.irreducible:
            a, e, alpha = thetas.T
            return {"E": np.exp(e), "A": np.exp(a), "alpha": alpha}
        a, alpha = thetas.T
        return {"E": np.zeros_like(a), "A": np.exp(a), "alpha": alpha}

    def predict(self, X: Any) -> np.ndarray:
        self._check_fitted()
        x = as_columns(X, 1, (self.x,))[:, 0]
        p = self.params_
        return p["E"] + p["A"] * x ** -p["alpha"]

    def extra_summary(self) -> dict[str, Any]:
        res = self.result_
        out: dict[str, Any] = {"x": self.x, "timing": getattr(self, "timing_", {}),
                               "starts": {"n": getattr(res, "n_starts", None),
                                          "converged": getattr(res, "n_starts_converged", None)}}
        if self.bootstrap:
            out["bootstrap"] = {"n": int(self.bootstrap), "failed": int(getattr(self, "bootstrap_failed_", 0)),
                                "seed": self.seed}
        return out
