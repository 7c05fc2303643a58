"""IsoFLOP profiles: Chinchilla approaches 2 and 1 (Hoffmann et al. 2022, Sec. 3.1-3.2).

Approach 2: runs are grouped by compute budget; within a budget the final loss is fitted with a
parabola in log N (and, separately, in log D); the vertex is that budget's optimum N_opt(C)
(D_opt(C)). A power law through the optima, N_opt = coef_N·C^a and D_opt = coef_D·C^b, is a
straight line in log-log space, fitted by least squares. Hoffmann et al. report a = 0.49,
b = 0.51 this way (Table 2).

Approach 1 (`envelope_`): the lowest loss reached at each budget and the (N, D) that reached it,
with the same power-law fit. Hoffmann et al. take the envelope of whole training curves; with
one final loss per run (a table of runs) it is the best run of each budget.

Budgets are clusters of log10 C: sorted values start a new budget where the gap exceeds
`budget_tol_dex` (default 0.1, i.e. 26%), which keeps the noise of digitised plots inside one
budget and separates Chinchilla's 6e18 / 1e19 / 3e19 ... grid.

Intervals: the points of each budget are resampled with replacement and everything refitted.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
from scipy.optimize import OptimizeResult

from scalelab.errors import InputError
from scalelab.laws.base import Allocation, Law, Timer, as_columns, as_target, percentile_ci


def budget_groups(C: np.ndarray, tol_dex: float) -> np.ndarray:
    """Label each run with its budget cluster (0, 1, ... in increasing compute)."""
    lc = np.log10(C)
    order = np.argsort(lc, kind="stable")
    labels = np.empty(len(C), dtype=int)
    g = 0
    for j, i in enumerate(order):
        if j > 0 and lc[i] - lc[order[j - 1]] > tol_dex:
            g += 1
        labels[i] = g
    return labels


def _vertex(logx: np.ndarray, y: np.ndarray, w: np.ndarray | None = None):
    """Least-squares parabola y = c2·u² + c1·u + c0 in u = log x; vertex (log x*, y*) or None
    when the parabola opens downwards (no minimum)."""
    if len(np.unique(logx)) < 3:
        return None
    u0 = logx.mean()  # centre for conditioning
    coef = np.polyfit(logx - u0, y, 2, w=None if w is None else np.sqrt(w))
    c2, c1, c0 = coef
    if not c2 > 0:
        return None
    u = -c1 / (2 * c2)
    sse = float(np.sum((np.polyval(coef, logx - u0) - y) ** 2 * (1 if w is None else w)))
    return u + u0, c0 - c1 * c1 / (4 * c2), c2, sse


def _line(logc: np.ndarray, logy: np.ndarray) -> tuple[float, float]:
    slope, icpt = np.polyfit(logc, logy, 1)
    with np.errstate(over="ignore"):
        return float(slope), float(np.exp(icpt))


class IsoFlopLaw(Law):
    name = "isoflop"
    title = "IsoFLOP profiles (Chinchilla approach 2; approach 1 as the envelope)"
    columns = ("N", "D", "C")
    param_names = ("a", "b", "coef_N", "coef_D")
    verbs = frozenset({"optimal"})
    min_points = 6
    min_distinct = {"N": 3}

    def __init__(self, *, budget_tol_dex: float = 0.1, bootstrap: int = 1000, seed: int = 0):
        self.budget_tol_dex = budget_tol_dex
        self.bootstrap = bootstrap
        self.seed = seed

    def fit(self, X: Any, y: Any, *, progress: Callable[[int, int], None] | None = None) -> "IsoFlopLaw":
        X = as_columns(X, 3, self.columns)
        y = as_target(y, X.shape[0])
        timer = Timer()
        N, D, C = X.T
        self.labels_ = budget_groups(C, self.budget_tol_dex)
        fit = self._fit_once(N, D, C, y, self.labels_, None)
        if fit is None:
            raise InputError(
                "isoflop: need at least two compute budgets, each with three or more model sizes "
                "whose losses curve upwards (an IsoFLOP design); found "
                f"{self.labels_.max() + 1} cluster(s) of compute at {self.budget_tol_dex} dex tolerance")
        self.params_, self.budgets_, sse = fit["params"], fit["budgets"], fit["sse"]
        self.envelope_ = self._envelope(N, D, C, y, self.labels_)
        self.n_points_ = int(len(y))
        used = [b for b in self.budgets_ if b["used"]]
        dropped = [b for b in self.budgets_ if not b["used"]]
        in_used = sum(b["n_points"] for b in used)
        if in_used < 0.5 * len(y):
            # Runs spread over a continuum of compute fall into accidental clusters of 3; a
            # parabola through 3 runs fits exactly and would report a law no data checks.
            raise InputError(
                f"isoflop: not an IsoFLOP design: only {in_used} of {len(y)} runs share a compute budget "
                f"(within {self.budget_tol_dex} dex) with enough sizes for a parabola; fit this table with "
                "--law chinchilla, or --law auto")
        self.warnings_ = []
        if all(b["n_points"] == 3 for b in used):
            self.warnings_.append("every budget holds exactly 3 sizes, so each parabola passes through its runs "
                                  "exactly: nothing checks the vertices (objective ~0 by construction)")
        msg = f"{len(used)} budgets with a parabola minimum"
        if dropped:
            msg += f"; {len(dropped)} skipped (fewer than 3 sizes, no minimum, or not one budget)"
        if len(used) == 2:
            msg += "; two budgets fix the power law exactly: no check of its fit"
        if self.warnings_:
            msg += "; " + self.warnings_[0]
        self.result_ = OptimizeResult(x=np.array([self.params_["a"], self.params_["b"]]), fun=sse,
                                      success=len(used) >= 2, message=msg, nit=0)
        self.timing_ = {"fit_s": timer()}
        self.ci_, self.bootstrap_failed_ = {}, 0
        if self.bootstrap and self.bootstrap > 0:
            t2 = Timer()
            self._bootstrap(N, D, C, y, progress)
            self.timing_["bootstrap_s"] = t2()
        return self

    def _fit_once(self, N, D, C, y, labels, w):
        budgets, sse = [], 0.0
        for g in range(labels.max() + 1):
            m = labels == g
            if w is not None:
                m = m & (w > 0)
            lc = np.log10(C[labels == g])
            info: dict[str, Any] = {"C": float(10 ** lc.mean()), "n_points": int((labels == g).sum()),
                                    "used": False, "spread_dex": float(lc.max() - lc.min())}
            # A cluster much wider than the tolerance is a continuum of compute, not one budget.
            one_budget = info["spread_dex"] <= 3 * self.budget_tol_dex
            ok = one_budget and m.sum() >= 3
            vn = _vertex(np.log(N[m]), y[m], None if w is None else w[m]) if ok else None
            vd = _vertex(np.log(D[m]), y[m], None if w is None else w[m]) if ok else None
            if vn is not None and vd is not None:
                lo, hi = np.log(N[m]).min(), np.log(N[m]).max()
                info.update(used=True, N_opt=float(np.exp(vn[0])), D_opt=float(np.exp(vd[0])),
                            loss_min=float(vn[1]), inside=bool(lo <= vn[0] <= hi))
                sse += vn[3]
            budgets.append(info)
        used = [b for b in budgets if b["used"]]
        if len(used) < 2:
            return None
        lc = np.log([b["C"] for b in used])
        a, cN = _line(lc, np.log([b["N_opt"] for b in used]))
        b_, cD = _line(lc, np.log([b["D_opt"] for b in used]))
        return {"params": {"a": a, "b": b_, "coef_N": cN, "coef_D": cD}, "budgets": budgets, "sse": sse}

    @staticmethod
    def _envelope(N, D, C, y, labels) -> dict[str, Any]:
        best = [np.flatnonzero(labels == g)[np.argmin(y[labels == g])] for g in range(labels.max() + 1)]
        if len(best) < 2:
            return {}
        lc = np.log(C[best])
        a, cN = _line(lc, np.log(N[best]))
        b, cD = _line(lc, np.log(D[best]))
        return {"a": a, "b": b, "coef_N": cN, "coef_D": cD, "n_budgets": len(best)}

    def _bootstrap(self, N, D, C, y, progress) -> None:
        rng = np.random.default_rng(self.seed)
        groups = [np.flatnonzero(self.labels_ == g) for g in range(self.labels_.max() + 1)]
        draws = []
        for i in range(int(self.bootstrap)):
            w = np.zeros(len(y))
            for idx in groups:  # resample within each budget: budgets are the design, not random
                np.add.at(w, rng.choice(idx, size=len(idx), replace=True), 1.0)
            f = self._fit_once(N, D, C, y, self.labels_, w)
            if f is not None:
                draws.append([f["params"][k] for k in self.param_names])
            if progress is not None and (i + 1) % 100 == 0:
                progress(i + 1, int(self.bootstrap))
        draws = np.array(draws).reshape(-1, len(self.param_names))
        self.bootstrap_failed_ = int(self.bootstrap) - len(draws)
        self.ci_ = {k: percentile_ci(draws[:, j]) for j, k in enumerate(self.param_names)}

    # ---- using the law -----------------------------------------------------------------------
    def optimal_exponents(self) -> dict[str, float]:
        self._check_fitted()
        return {"a": self.params_["a"], "b": self.params_["b"]}

    def compute_optimal(self, C: float, **_: Any) -> Allocation:
        self._check_fitted()
        p = self.params_
        return Allocation(compute=float(C), N=float(p["coef_N"] * C ** p["a"]), D=float(p["coef_D"] * C ** p["b"]))

    def extra_summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"budgets": getattr(self, "budgets_", []), "envelope": getattr(self, "envelope_", {}),
                               "timing": getattr(self, "timing_", {})}
        if self.bootstrap:
            out["bootstrap"] = {"n": int(self.bootstrap), "failed": int(getattr(self, "bootstrap_failed_", 0)),
                                "seed": self.seed}
        return out

    def _restore_extra(self, d: dict[str, Any]) -> None:
        self.budgets_ = d.get("budgets", [])
        self.envelope_ = d.get("envelope", {})
