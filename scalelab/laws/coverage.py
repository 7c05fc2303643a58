"""Coverage law: pass@k (the share of problems solved by at least one of k samples) against k.

Two forms, fitted together and both reported:

  exp      coverage(k) = exp(a·k^b), a < 0, b < 0: Brown et al. 2024 ("Large Language Monkeys",
           sec. 3, Eq. 2) model the log of coverage as a power law in k. Fitted, as they do, by
           least squares on log coverage (rows with zero coverage carry no information in that
           space and are left out).
  beta     each problem has its own success rate p ~ Beta(alpha, beta); then
           pass@k = E[1 - (1-p)^k] = 1 - B(alpha, beta + k) / B(alpha, beta).
           A per-problem beta-binomial model: the aggregate curve is a power law in k exactly when
           the density of hard problems near p = 0 is a power law (Schaeffer et al. 2025, "How Do
           Large Language Monkeys Get Their Power (Laws)?"). Fitted by least squares on coverage
           from a table of (k, pass@k), or by maximum likelihood from per-problem counts (c of N
           samples right: `fit(..., counts=(c, N))`), which uses every problem instead of the
           averaged curve (Kazdan et al. 2025 fit pass@k the same way).

`form` chooses which one `predict` uses (default beta). Tables: `technique == "coverage"` records
of `scalelab testtime` (metrics.n, metrics.accuracy) or a CSV with columns n (or k) and accuracy.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import pandas as pd
from scipy.optimize import OptimizeResult, minimize, minimize_scalar
from scipy.special import betaln, gammaln

from scalelab.errors import InputError
from scalelab.laws.base import Law, Timer, percentile_ci
from scalelab.laws.sampling import check_xy, select_curve

B_GRID = -np.logspace(-3, np.log10(3.0), 100)  # exponent b of the exp form


def beta_coverage(k: np.ndarray, alpha: float, beta: float) -> np.ndarray:
    """1 - B(alpha, beta + k) / B(alpha, beta), in logs for large k."""
    k = np.asarray(k, float)
    return 1.0 - np.exp(betaln(alpha, beta + k) - betaln(alpha, beta))


class CoverageLaw(Law):
    name = "coverage"
    title = "coverage pass@k: beta-binomial per problem, and exp(a·k^b)"
    columns = ("x",)
    param_names = ("alpha", "beta", "a", "b")
    verbs = frozenset()
    min_points = 3
    min_distinct = {"x": 3}

    def __init__(self, *, form: str = "beta", strategy: str | None = "coverage", difficulty: int | None = None,
                 max_n: int | None = None, bootstrap: int = 200, seed: int = 0):
        self.form = form              # beta | exp: the form `predict` uses
        self.strategy = strategy      # table selection
        self.difficulty = difficulty
        self.max_n = max_n
        self.bootstrap = bootstrap
        self.seed = seed

    def prepare_table(self, frame: pd.DataFrame, col_map: dict[str, str] | None = None) -> Any:
        from scalelab.laws.table import Prepared

        if "k" in frame.columns and "n" not in frame.columns:
            frame = frame.rename(columns={"k": "n"})
        df, xcol, notices = select_curve(frame, x="n", strategy=self.strategy if "technique" in frame.columns else None,
                                         difficulty=self.difficulty, max_n=self.max_n, law=self.name)
        ycol = "metrics.accuracy" if "metrics.accuracy" in df.columns else "accuracy"
        X, y = check_xy(df[xcol].to_numpy(float), df[ycol].to_numpy(float), "k")
        return Prepared(X=X[:, None], y=y, frame=pd.DataFrame({"k": X, "coverage": y}), notices=notices)

    def fit(self, X: Any, y: Any, *, counts: tuple[Any, int] | None = None,
            progress: Callable[[int, int], None] | None = None) -> "CoverageLaw":
        if self.form not in ("beta", "exp"):
            raise InputError(f"form={self.form!r}: choose beta or exp")
        k, cov = check_xy(X, y, "k")
        if np.unique(k).size < 3:
            raise InputError(f"law '{self.name}' needs at least 3 distinct k; got {np.unique(k).size}")
        c = None
        if counts is not None:
            c, N = np.asarray(counts[0], float), int(counts[1])
            if c.ndim != 1 or c.size < 2 or (c < 0).any() or (c > N).any():
                raise InputError(f"counts: expected per-problem correct counts in [0, {N}] for at least 2 problems")
        timer = Timer()
        self._fit_once(k, cov, c, None if c is None else N)
        self.n_points_ = int(k.size)
        self.ci_, self.bootstrap_failed_ = {}, 0
        self.timing_ = {"fit_s": timer()}
        if self.bootstrap and self.bootstrap > 0:
            rng = np.random.default_rng(self.seed)
            rows = []
            for b in range(int(self.bootstrap)):
                twin = CoverageLaw(form=self.form, bootstrap=0)
                try:
                    if c is not None:  # resample problems: the curve follows from their counts
                        cc = c[rng.integers(0, c.size, c.size)]
                        yy = np.array([_pass_mean(cc, N, int(kk)) for kk in k])
                        twin._fit_once(k, yy, cc, N)
                    else:
                        idx = rng.integers(0, k.size, k.size)
                        if np.unique(k[idx]).size < 3:
                            raise ValueError
                        twin._fit_once(k[idx], cov[idx], None, None)
                    rows.append([twin.params_[p] for p in self.param_names])
                except (ValueError, FloatingPointError):
                    self.bootstrap_failed_ += 1
                if progress is not None:
                    progress(b + 1, int(self.bootstrap))
            if rows:
                arr = np.array(rows)
                self.ci_ = {p: percentile_ci(arr[:, j]) for j, p in enumerate(self.param_names)}
        return self

    def _fit_once(self, k: np.ndarray, cov: np.ndarray, c: np.ndarray | None, N: int | None) -> None:
        rb = _fit_beta(k, cov, c, N)
        re = _fit_exp(k, cov)
        self.params_ = {"alpha": float(rb.x[0]), "beta": float(rb.x[1]), "a": float(re.x[0]), "b": float(re.x[1])}
        chosen = rb if self.form == "beta" else re
        self.result_ = OptimizeResult(
            x=np.array(list(self.params_.values())), fun=float(chosen.fun), success=bool(rb.success and re.success),
            message=f"beta ({'likelihood' if c is not None else 'least squares'}): {rb.message}; exp: {re.message}",
            sse_beta=float(np.sum((cov - beta_coverage(k, *rb.x)) ** 2)),
            sse_exp=float(np.sum((cov - np.exp(re.x[0] * k ** re.x[1])) ** 2)))

    def predict(self, X: Any) -> np.ndarray:
        self._check_fitted()
        k = np.asarray(X, float).reshape(-1)
        p = self.params_
        if self.form == "exp":
            return np.exp(p["a"] * k ** p["b"])
        return beta_coverage(k, p["alpha"], p["beta"])

    def extra_summary(self) -> dict[str, Any]:
        r = self.result_
        return {"form": self.form, "sse_beta": getattr(r, "sse_beta", None), "sse_exp": getattr(r, "sse_exp", None),
                "timing": getattr(self, "timing_", {})}


def _pass_mean(c: np.ndarray, N: int, k: int) -> float:
    """Mean over problems of the unbiased pass@k (Chen et al. 2021) from c of N right."""
    c = np.asarray(c, float)
    out = np.ones_like(c)
    m = N - c >= k
    # C(N-c, k) / C(N, k) in logs
    out[m] = 1.0 - np.exp(gammaln(N - c[m] + 1) - gammaln(N - c[m] - k + 1) - gammaln(N + 1) + gammaln(N - k + 1))
    return float(out.mean())


def _fit_beta(k: np.ndarray, cov: np.ndarray, c: np.ndarray | None, N: int | None) -> OptimizeResult:
    if c is not None:
        def nll(t: np.ndarray) -> float:  # beta-binomial negative log-likelihood (constant dropped)
            a, b = np.exp(t)
            return float(-(betaln(c + a, N - c + b) - betaln(a, b)).sum())
    else:
        def nll(t: np.ndarray) -> float:
            a, b = np.exp(t)
            r = cov - beta_coverage(k, a, b)
            return float((r * r).sum())
    grid = [(np.log(a), np.log(b)) for a in np.logspace(-2, 1.5, 12) for b in np.logspace(-2, 3, 16)]
    start = min(grid, key=lambda t: nll(np.array(t)))
    res = minimize(nll, np.array(start), method="L-BFGS-B", bounds=[(-9.0, 9.0), (-9.0, 12.0)])
    return OptimizeResult(x=np.exp(res.x), fun=res.fun, success=bool(res.success), message=str(res.message))


def _fit_exp(k: np.ndarray, cov: np.ndarray) -> OptimizeResult:
    keep = cov > 0
    if keep.sum() < 2:
        return OptimizeResult(x=np.array([np.nan, np.nan]), fun=np.nan, success=False,
                              message="fewer than 2 points with coverage > 0")
    kk, ly = k[keep], np.log(np.minimum(cov[keep], 1.0))

    def solve(b: float) -> tuple[float, float]:
        z = kk ** b
        a = min(float((ly * z).sum() / (z * z).sum()), 0.0)  # log coverage <= 0
        r = ly - a * z
        return a, float((r * r).sum())

    sse = np.array([solve(b)[1] for b in B_GRID])
    i = int(np.argmin(sse))
    lo, hi = sorted((B_GRID[max(i - 1, 0)], B_GRID[min(i + 1, B_GRID.size - 1)]))
    res = minimize_scalar(lambda b: solve(b)[1], bounds=(lo, hi), method="bounded", options={"xatol": 1e-12})
    b = float(res.x) if res.fun <= sse[i] else float(B_GRID[i])
    a, f = solve(b)
    return OptimizeResult(x=np.array([a, b]), fun=f, success=bool(res.success), message=str(res.message))


class SharedTailCoverage:
    """Beta-binomial coverage of several groups of problems (e.g. the difficulties of one policy)
    with one alpha and a beta per group, fitted by maximum likelihood from per-problem counts.

    Why one alpha: pass@k at large k is set by the density of success rates near p = 0, which a
    Beta(alpha, beta) makes ~ p^(alpha - 1) (Schaeffer et al. 2025), and 8 samples of 100 problems
    say little about it: per-group fits over- and under-shoot pass@56 by 5-8 points on
    development questions (docs/LOG.md, 2026-12-01). Sharing the exponent across groups pools
    every problem's counts for the tail while each group keeps its own mean success rate.

        SharedTailCoverage().fit([c_1, c_2, ...], N).predict([64], group=0)
    """

    def __init__(self, *, max_iter: int = 500):
        self.max_iter = max_iter

    def fit(self, counts: list[Any], N: int) -> "SharedTailCoverage":
        cs = [np.asarray(c, float) for c in counts]
        if not cs or any(c.ndim != 1 or c.size < 2 or (c < 0).any() or (c > N).any() for c in cs):
            raise InputError(f"counts: expected, per group, correct counts in [0, {N}] for at least 2 problems")

        def nll(t: np.ndarray) -> float:
            a = np.exp(t[0])
            return float(-sum((betaln(c + a, N - c + np.exp(tb)) - betaln(a, np.exp(tb))).sum()
                              for c, tb in zip(cs, t[1:])))

        starts = []
        for a0 in (0.1, 0.3, 1.0):  # each group's beta from its mean success rate at this alpha
            m = [min(max(c.mean() / N, 1e-3), 1 - 1e-3) for c in cs]
            starts.append(np.r_[np.log(a0), [np.log(a0 * (1 - mi) / mi) for mi in m]])
        bounds = [(-9.0, 9.0)] + [(-9.0, 12.0)] * len(cs)
        res = min((minimize(nll, s, method="L-BFGS-B", bounds=bounds, options={"maxiter": self.max_iter})
                   for s in starts), key=lambda r: r.fun)
        self.alpha_ = float(np.exp(res.x[0]))
        self.betas_ = [float(b) for b in np.exp(res.x[1:])]
        self.result_ = OptimizeResult(x=res.x, fun=float(res.fun), success=bool(res.success), message=str(res.message))
        self.converged_ = bool(res.success)
        return self

    def predict(self, X: Any, group: int) -> np.ndarray:
        return beta_coverage(np.asarray(X, float).reshape(-1), self.alpha_, self.betas_[group])
