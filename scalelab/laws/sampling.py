"""Test-time law: accuracy of a sampling strategy against its budget, a saturating power law

    acc(x) = A - B·x^(-gamma),     x = n (samples, beams) or FLOPs per question

A is the accuracy the strategy tends to with unlimited budget; B > 0 is what it still has to gain
(B < 0 when more samples hurt, as majority vote does when the mode is wrong). Power laws in the
number of samples describe best-of-n and voting curves over their measured range (Brown et al.
2024, "Large Language Monkeys", sec. 3; Snell et al. 2024 plot the same curves against FLOPs);
the saturating form keeps the prediction below 1.

Fitting: least squares on accuracy. For a fixed gamma the model is linear in (A, B), so A and B
are solved exactly (variable projection; A kept in [0, 1]) and only gamma is searched, over a grid
and then with a bounded scalar minimiser whose success flag is `result_.success`. x is divided by
its geometric mean inside the fit for conditioning; B is reported in the units of x.

Tables: records written by `scalelab testtime` (columns `technique`, `metrics.n`,
`metrics.accuracy`, `metrics.flops_per_question`) or any CSV with columns n (or flops) and
accuracy. One curve per fit: one strategy at one difficulty of one model (`strategy`,
`difficulty` select it; a runs folder RUNS/<model>/<strategy>/d<steps> holds exactly one).

    TesttimeLaw(x="n").fit(n, acc).predict([64])
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import pandas as pd
from scipy.optimize import OptimizeResult, minimize_scalar

from scalelab.errors import InputError
from scalelab.laws.base import Law, Timer, percentile_ci

X_COLUMNS = {"n": ("metrics.n", "n"), "flops": ("metrics.flops_per_question", "flops")}
Y_COLUMNS = ("metrics.accuracy", "accuracy")
GAMMA_GRID = np.logspace(-3, np.log10(5.0), 120)


def check_xy(X: Any, y: Any, name: str, *, y_in_unit: bool = True) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(X, float)
    if x.ndim == 2:
        if x.shape[1] != 1:
            raise InputError(f"expected X with one column ({name}), got shape {x.shape}")
        x = x[:, 0]
    yy = np.asarray(y, float).reshape(-1)
    if x.shape[0] != yy.shape[0]:
        raise InputError(f"y has {yy.shape[0]} values but X has {x.shape[0]} rows")
    bad = np.flatnonzero(~np.isfinite(x) | (x <= 0))
    if bad.size:
        raise InputError(f"{name}: values must be finite and > 0; bad at index {', '.join(map(str, bad[:10]))}")
    bad = np.flatnonzero(~np.isfinite(yy) | (y_in_unit & ((yy < 0) | (yy > 1))))
    if bad.size:
        raise InputError(f"accuracy: values must be in [0, 1]; bad at index {', '.join(map(str, bad[:10]))}")
    return x, yy


def select_curve(frame: pd.DataFrame, *, x: str, strategy: str | None, difficulty: int | None,
                 max_n: int | None, law: str) -> tuple[pd.DataFrame, str, list[str]]:
    """The rows of one test-time curve; errors name the groups when the table holds several."""
    df = frame
    if "phase" in df.columns and (df["phase"] == "testtime").any():
        df = df[df["phase"] == "testtime"]
    xcol = next((c for c in X_COLUMNS[x] if c in df.columns), None)
    ycol = next((c for c in Y_COLUMNS if c in df.columns), None)
    if xcol is None or ycol is None:
        raise InputError(f"law '{law}' reads test-time records (scalelab testtime) or a table with columns "
                         f"{X_COLUMNS[x][1]} and accuracy; columns here: {', '.join(map(str, frame.columns[:20]))}")
    ncol = next((c for c in X_COLUMNS["n"] if c in df.columns), None)
    if strategy is not None and "technique" in df.columns:
        df = df[df["technique"] == strategy]
    if difficulty is not None and "metrics.steps" in df.columns:
        df = df[df["metrics.steps"] == difficulty]
    if max_n is not None and ncol is not None:
        df = df[df[ncol] <= max_n]
    if "metrics.kind" in df.columns:
        df = df[~df["metrics.kind"].isin(["single", "adaptive"])]
    keys = [c for c in ("parent_id", "technique", "metrics.steps") if c in df.columns]
    if keys and len(df):
        groups = df.groupby(keys, dropna=False).size()
        if len(groups) > 1:
            shown = "; ".join(_label(g, keys) for g in groups.index[:8])
            raise InputError(f"the table holds {len(groups)} test-time curves ({shown}{' ...' if len(groups) > 8 else ''}); "
                             "fit one: point at one folder RUNS/<model>/<strategy>/d<steps>, or use "
                             "`scalelab testtime predict RUNS` to fit every curve")
    if df.empty:
        raise InputError(f"no test-time rows to fit (strategy={strategy}, difficulty={difficulty}, max_n={max_n})")
    if ncol is not None and df[ncol].duplicated().any():
        dup = sorted(df.loc[df[ncol].duplicated(), ncol].unique().tolist())
        raise InputError(f"budgets n={dup} appear more than once (records from different settings in one folder?)")
    what = _label(tuple(df[k].iloc[0] for k in keys), keys) if keys else "the table"
    return df.sort_values(xcol), xcol, [f"curve: {what} ({len(df)} points)"]


def _label(group: Any, keys: list[str]) -> str:
    vals = group if isinstance(group, tuple) else (group,)
    def show(k: str, v: Any) -> str:
        if isinstance(v, float) and v.is_integer():
            v = int(v)  # pandas turns an integer column with gaps into floats
        return f"d{v}" if k == "metrics.steps" else str(v)
    return "/".join(show(k, v) for k, v in zip(keys, vals))


class TesttimeLaw(Law):
    __test__ = False  # not a pytest class despite the name
    name = "testtime"
    title = "test-time law acc(x) = A - B·x^(-gamma)"
    columns = ("x",)
    param_names = ("A", "B", "gamma")
    verbs = frozenset()
    min_points = 3
    min_distinct = {"x": 3}

    def __init__(self, *, x: str = "n", strategy: str | None = None, difficulty: int | None = None,
                 max_n: int | None = None, bootstrap: int = 200, seed: int = 0):
        self.x = x                    # "n" or "flops" (per question)
        self.strategy = strategy      # table selection: one curve
        self.difficulty = difficulty
        self.max_n = max_n            # fit only budgets n <= max_n (prediction checks)
        self.bootstrap = bootstrap
        self.seed = seed

    # ---- tables -------------------------------------------------------------------------------
    def prepare_table(self, frame: pd.DataFrame, col_map: dict[str, str] | None = None) -> Any:
        from scalelab.laws.table import Prepared

        if self.x not in X_COLUMNS:
            raise InputError(f"--x {self.x!r}: the testtime law takes x = n or flops")
        df, xcol, notices = select_curve(frame, x=self.x, strategy=self.strategy, difficulty=self.difficulty,
                                         max_n=self.max_n, law=self.name)
        ycol = next(c for c in Y_COLUMNS if c in df.columns)
        X, y = check_xy(df[xcol].to_numpy(float), df[ycol].to_numpy(float), self.x)
        if X.size < self.min_points or np.unique(X).size < self.min_distinct["x"]:
            raise InputError(f"law '{self.name}' needs at least {self.min_points} distinct budgets; the curve has {np.unique(X).size}")
        return Prepared(X=X[:, None], y=y, frame=pd.DataFrame({self.x: X, "accuracy": y}), notices=notices)

    # ---- fitting --------------------------------------------------------------------------------
    def fit(self, X: Any, y: Any, *, progress: Callable[[int, int], None] | None = None) -> "TesttimeLaw":
        x, yy = check_xy(X, y, self.x)
        if x.size < self.min_points or np.unique(x).size < 3:
            raise InputError(f"law '{self.name}' needs at least 3 distinct values of {self.x}; got {np.unique(x).size}")
        timer = Timer()
        self.x0_ = float(np.exp(np.log(x).mean()))
        self.result_ = _fit_saturating(x / self.x0_, yy)
        A, Bs, g = self.result_.x
        self.params_ = {"A": float(A), "B": float(Bs * self.x0_ ** g), "gamma": float(g)}
        self.n_points_ = int(x.size)
        self.ci_ = {}
        self.bootstrap_failed_ = 0
        self.timing_ = {"fit_s": timer()}
        if self.bootstrap and self.bootstrap > 0:
            rng = np.random.default_rng(self.seed)
            rows = []
            for b in range(int(self.bootstrap)):
                idx = rng.integers(0, x.size, x.size)
                if np.unique(x[idx]).size < 3:
                    self.bootstrap_failed_ += 1
                    continue
                r = _fit_saturating(x[idx] / self.x0_, yy[idx])
                rows.append((r.x[0], r.x[1] * self.x0_ ** r.x[2], r.x[2]))
                if progress is not None:
                    progress(b + 1, int(self.bootstrap))
            if rows:
                arr = np.array(rows)
                self.ci_ = {k: percentile_ci(arr[:, j]) for j, k in enumerate(self.param_names)}
        return self

    def predict(self, X: Any) -> np.ndarray:
        self._check_fitted()
        x = np.asarray(X, float).reshape(-1)
        p = self.params_
        return p["A"] - p["B"] * x ** -p["gamma"]

    def extra_summary(self) -> dict[str, Any]:
        return {"x": self.x, "x0": getattr(self, "x0_", None), "timing": getattr(self, "timing_", {})}


def _solve_ab(x: np.ndarray, y: np.ndarray, gamma: float) -> tuple[float, float, float]:
    """Least squares (A, B) for fixed gamma with A in [0, 1]; returns (A, B, SSE)."""
    z = x ** -gamma
    D = np.column_stack([np.ones_like(z), -z])
    (A, B), *_ = np.linalg.lstsq(D, y, rcond=None)
    if not 0.0 <= A <= 1.0:
        A = float(np.clip(A, 0.0, 1.0))
        B = float(((A - y) * z).sum() / max((z * z).sum(), 1e-300))
    r = y - (A - B * z)
    return float(A), float(B), float((r * r).sum())


def _fit_saturating(x: np.ndarray, y: np.ndarray) -> OptimizeResult:
    sse = np.array([_solve_ab(x, y, g)[2] for g in GAMMA_GRID])
    i = int(np.argmin(sse))
    lo, hi = np.log(GAMMA_GRID[max(i - 1, 0)]), np.log(GAMMA_GRID[min(i + 1, GAMMA_GRID.size - 1)])
    res = minimize_scalar(lambda lg: _solve_ab(x, y, float(np.exp(lg)))[2], bounds=(lo, hi), method="bounded",
                          options={"xatol": 1e-10})
    g = float(np.exp(res.x)) if res.fun <= sse[i] else float(GAMMA_GRID[i])
    A, B, f = _solve_ab(x, y, g)
    at_edge = i in (0, GAMMA_GRID.size - 1)
    msg = str(res.message) + ("; gamma at the edge of its range [1e-3, 5]" if at_edge else "")
    return OptimizeResult(x=np.array([A, B, g]), fun=f, success=bool(res.success), message=msg, nit=int(res.nfev),
                          at_edge=at_edge)
