"""Exchange rates between the scaling laws: test-time FLOPs for pretraining FLOPs, and the
pretraining FLOPs a post-training technique is worth.

**Train <-> test.** Jones (2021, "Scaling Scaling Laws with Board Games", sec. 5 and fig. 8) found
on Hex that the frontiers of equal playing strength are straight lines in (log train compute,
log test compute): each 10x of train-time compute saved about 15x of test-time (MCTS) compute.
`ExchangeLaw` fits that shape to accuracy, between the verifier's chance level and a ceiling:

    acc = chance + (ceiling - chance) * sigmoid(a_d + b * log10 C_train + c * log10 C_test)

with one intercept a_d per difficulty and slopes b, c shared by the points it is given. Along a
line of equal accuracy b * dlog10 C_train + c * dlog10 C_test = 0, so 10x pretraining FLOPs is
worth `multiplier` = 10^(b/c) times the test-time FLOPs per question. The fit maximises a
binomial likelihood (each point weighted by its problems; accuracy may be fractional, as the
unbiased subsampling estimators give it), with L-BFGS-B; `result_` is scipy's own result.
Intervals: bootstrap over problems when the points carry their per-problem results (points of
one difficulty with as many problems share one resample, so a ladder evaluated on the same
questions is resampled jointly), else a binomial parametric bootstrap. When c <= 0 in a
resample, test-time compute buys nothing there and its multiplier counts as infinite.
`replaces_` says whether c is positive in at least 97.5% of the resamples: if not, the data do
not show that test-time compute can stand in for pretraining.

**Post-train <-> pretrain.** `LadderCurve` is greedy accuracy against pretraining FLOPs along a
ladder, made monotone (pool-adjacent-violators; larger models are not expected to be worse) and
linear in log10 C between points. `worth(...)` reads, at equal accuracy, the pretraining FLOPs a
child run's accuracy corresponds to, anchored at its parent (the ladder's accuracy at the
parent's C plus the child's measured gain, which cancels any difference between the problems
the two evaluations used), and divides by the parent's FLOPs.

    law = ExchangeLaw(bootstrap=200).fit(np.column_stack([C_train, C_test]), acc,
                                         difficulty=steps, weight=problems, chance=chance)
    law.params_["multiplier"], law.ci_["multiplier"], law.replaces_
"""
from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
from scipy.optimize import OptimizeResult, minimize
from scipy.special import expit

from scalelab.errors import InputError
from scalelab.laws.base import Law, NotFittedError, Timer, percentile_ci

EPS = 1e-9


def _nll(theta: np.ndarray, g: np.ndarray, u: np.ndarray, v: np.ndarray, y: np.ndarray, w: np.ndarray,
         ch: np.ndarray, top: float, n_groups: int, test_slope: bool) -> tuple[float, np.ndarray]:
    """Mean binomial negative log-likelihood and its gradient in (a_0..a_G-1, b[, c])."""
    a, b = theta[:n_groups], theta[n_groups]
    c = theta[n_groups + 1] if test_slope else 0.0
    s = expit(a[g] + b * u + c * v)
    p = np.clip(ch + (top - ch) * s, EPS, 1 - EPS)
    f = -(w * (y * np.log(p) + (1 - y) * np.log1p(-p))).sum()
    dz = w * (p - y) / (p * (1 - p)) * (top - ch) * s * (1 - s)
    grad = [np.bincount(g, dz, n_groups), [(dz * u).sum()]] + ([[(dz * v).sum()]] if test_slope else [])
    return float(f), np.concatenate(grad)


class ExchangeLaw(Law):
    name = "exchange"
    title = "exchange law acc = chance + (ceiling - chance)·σ(a_d + b·log10 C_train + c·log10 C_test)"
    columns = ("C_train", "C_test")
    param_names = ("b", "c", "multiplier")
    verbs = frozenset()

    def __init__(self, *, ceiling: float = 1.0, test_slope: bool = True, bootstrap: int = 200, seed: int = 0):
        self.ceiling = ceiling          # the accuracy the law saturates at (1: a perfect solver)
        self.test_slope = test_slope    # False: accuracy against C_train only (greedy decoding)
        self.bootstrap = bootstrap      # resamples for the 95% intervals (0: none)
        self.seed = seed

    # ---- fitting --------------------------------------------------------------------------------
    def fit(self, X: Any, y: Any, *, difficulty: Any = None, weight: Any = None, chance: Any = None,
            per_problem: list[Any] | None = None, progress: Callable[[int, int], None] | None = None) -> "ExchangeLaw":
        X = np.asarray(X, float)
        if X.ndim != 2 or X.shape[1] != 2:
            raise InputError(f"expected X with 2 columns (C_train, C_test), got shape {X.shape}")
        y = np.asarray(y, float).reshape(-1)
        n = X.shape[0]
        if y.shape[0] != n:
            raise InputError(f"y has {y.shape[0]} values but X has {n} rows")
        if not np.all(np.isfinite(X) & (X > 0)):
            raise InputError("C_train and C_test must be finite and > 0")
        if not np.all(np.isfinite(y) & (y >= 0) & (y <= 1)):
            raise InputError("accuracy must be in [0, 1]")
        if not 0 < self.ceiling <= 1:
            raise InputError(f"ceiling {self.ceiling}: must be in (0, 1]")
        diff = np.zeros(n, int) if difficulty is None else np.asarray(difficulty).reshape(-1)
        self.difficulties_ = sorted(set(diff.tolist()))
        g = np.searchsorted(np.array(self.difficulties_), diff)
        w = np.ones(n) if weight is None else np.asarray(weight, float).reshape(-1)
        ch = np.zeros(n) if chance is None else np.asarray(chance, float).reshape(-1)
        if np.any(ch >= self.ceiling):
            raise InputError(f"chance must be below the ceiling {self.ceiling}")
        u, v = np.log10(X[:, 0]), np.log10(X[:, 1])
        if np.unique(u).size < 2:
            raise InputError("the exchange law needs models of at least 2 pretraining budgets (C_train)")
        if self.test_slope and np.unique(v).size < 2:
            raise InputError("the exchange law needs at least 2 test-time budgets (C_test)")
        k = len(self.difficulties_) + 1 + int(self.test_slope)
        if n <= k:
            raise InputError(f"the exchange law has {k} parameters here and needs more points than that; got {n}")
        timer = Timer()
        # centred logs for conditioning; intercepts are reported in raw units
        self.u0_, self.v0_ = float(u.mean()), float(v.mean())
        data = (g, u - self.u0_, v - self.v0_, y, w / w.sum(), ch, float(self.ceiling), len(self.difficulties_),
                bool(self.test_slope))
        self.result_ = self._solve(np.zeros(k), data)
        theta = self.result_.x
        self.theta_ = theta
        self.chance_ = {d: float(ch[g == i].mean()) for i, d in enumerate(self.difficulties_)}
        self.params_ = self._params(theta)
        self.range_ = {"C_train": [float(X[:, 0].min()), float(X[:, 0].max())],
                       "C_test": [float(X[:, 1].min()), float(X[:, 1].max())]}
        self.n_points_ = n
        self.rmse_ = float(np.sqrt(np.mean((self.predict(X, difficulty=diff) - y) ** 2)))
        self.ci_, self.bootstrap_failed_, self.c_nonpositive_share_ = {}, 0, math.nan
        self.timing_ = {"fit_s": timer()}
        if self.bootstrap and self.bootstrap > 0:
            self._bootstrap(data, diff, y, w, per_problem, progress)
            self.timing_["bootstrap_s"] = timer() - self.timing_["fit_s"]
        return self

    @staticmethod
    def _solve(theta0: np.ndarray, data: tuple) -> OptimizeResult:
        return minimize(_nll, theta0, args=data, jac=True, method="L-BFGS-B",
                        options={"maxiter": 2000, "ftol": 1e-13, "gtol": 1e-9})

    def _slopes(self, theta: np.ndarray) -> tuple[float, float]:
        G = len(self.difficulties_)
        return float(theta[G]), (float(theta[G + 1]) if self.test_slope else 0.0)

    def _params(self, theta: np.ndarray) -> dict[str, float]:
        b, c = self._slopes(theta)
        out = {"b": b, "c": c}
        if not self.test_slope:  # accuracy against C_train only: no exchange rate
            out["log10_multiplier"] = out["multiplier"] = math.nan
        else:
            out["log10_multiplier"] = b / c if c > 0 else math.inf
            out["multiplier"] = _pow10(out["log10_multiplier"])
        for i, d in enumerate(self.difficulties_):  # intercepts in raw log10 units
            out[f"a[{d}]"] = float(theta[i] - b * self.u0_ - c * self.v0_)
        return out

    def _bootstrap(self, data: tuple, diff: np.ndarray, y: np.ndarray, w: np.ndarray,
                   per_problem: list[Any] | None, progress: Callable[[int, int], None] | None) -> None:
        rng = np.random.default_rng(self.seed)
        pp = None if per_problem is None else [np.asarray(p, float) for p in per_problem]
        if pp is not None and len(pp) != y.size:
            raise InputError(f"per_problem has {len(pp)} entries but there are {y.size} points")
        groups: dict[tuple, list[int]] = {}
        if pp is not None:
            for i, p in enumerate(pp):
                groups.setdefault((diff[i], p.size), []).append(i)
        rows = []
        for r in range(int(self.bootstrap)):
            yb = y.copy()
            if pp is None:  # binomial parametric bootstrap with the point's number of problems
                m = np.maximum(np.round(w).astype(int), 1)
                yb = rng.binomial(m, y) / m
            else:
                for (_, size), idx in groups.items():
                    draw = rng.integers(0, size, size)  # one draw per difficulty: same questions, jointly
                    for i in idx:
                        yb[i] = pp[i][draw].mean()
            res = self._solve(self.theta_, data[:3] + (yb,) + data[4:])
            if not res.success:
                self.bootstrap_failed_ += 1
            else:
                rows.append(self._slopes(res.x))
            if progress is not None:
                progress(r + 1, int(self.bootstrap))
        if not rows:
            return
        bc = np.array(rows)
        with np.errstate(divide="ignore", invalid="ignore"):
            logm = np.where(bc[:, 1] > 0, bc[:, 0] / bc[:, 1], np.inf)
        self.bootstrap_slopes_ = bc
        self.ci_ = {"b": percentile_ci(bc[:, 0]), "c": percentile_ci(bc[:, 1])}
        self.c_nonpositive_share_ = float((bc[:, 1] <= 0).mean())
        if self.test_slope:
            # order statistics, not interpolation: resamples with c <= 0 are +inf, and stay so
            lo, hi = (float(np.quantile(logm, q, method="inverted_cdf")) for q in (0.025, 0.975))
            self.ci_["log10_multiplier"] = (lo, hi)
            self.ci_["multiplier"] = (_pow10(lo), _pow10(hi))

    # ---- using the law --------------------------------------------------------------------------
    @property
    def replaces_(self) -> bool | None:
        """Whether test-time compute measurably stands in for pretraining (c > 0 in >= 97.5% of the
        resamples; without a bootstrap, c > 0). None for a law without a test-time slope."""
        self._check_fitted()
        if not self.test_slope:
            return None
        share = getattr(self, "c_nonpositive_share_", math.nan)
        return bool(share <= 0.025) if math.isfinite(share) else self.params_["c"] > 0

    def predict(self, X: Any, *, difficulty: Any = None) -> np.ndarray:
        """Accuracy at (C_train, C_test); `difficulty` picks the intercept (default: the mean over
        the fitted difficulties of the predicted accuracies)."""
        self._check_fitted()
        X = np.atleast_2d(np.asarray(X, float))
        u, v = np.log10(X[:, 0]), np.log10(X[:, 1])
        p = self.params_
        if difficulty is None:
            return np.mean([self.predict(X, difficulty=d) for d in self.difficulties_], axis=0)
        d = np.broadcast_to(np.asarray(difficulty), u.shape)
        unknown = set(d.tolist()) - set(self.difficulties_)
        if unknown:
            raise InputError(f"difficulty {sorted(unknown)}: the law was fitted at {self.difficulties_}")
        a = np.array([p[f"a[{k}]"] for k in d.tolist()])
        ch = np.array([self.chance_[k] for k in d.tolist()])
        return ch + (self.ceiling - ch) * expit(a + p["b"] * u + p["c"] * v)

    def iso_c_test(self, C_train: Any, accuracy: float, *, difficulty: Any) -> np.ndarray:
        """C_test on the line of equal `accuracy` at each C_train (NaN where the law cannot reach it)."""
        self._check_fitted()
        p, ch = self.params_, self.chance_[difficulty]
        if not (ch < accuracy < self.ceiling) or p["c"] <= 0:
            return np.full(np.shape(C_train), np.nan)
        z = math.log((accuracy - ch) / (self.ceiling - accuracy))
        logc = (z - p[f"a[{difficulty}]"] - p["b"] * np.log10(np.asarray(C_train, float))) / p["c"]
        return np.where(np.abs(logc) < 300, 10.0 ** np.clip(logc, -300, 300), np.nan)

    def extra_summary(self) -> dict[str, Any]:
        return {"difficulties": self.difficulties_, "chance": {str(k): v for k, v in self.chance_.items()},
                "range": self.range_, "rmse": self.rmse_, "replaces": self.replaces_,
                "c_nonpositive_share": self.c_nonpositive_share_,
                "bootstrap": {"n": int(self.bootstrap or 0), "failed": int(self.bootstrap_failed_), "seed": self.seed},
                "timing": getattr(self, "timing_", {})}

    def _restore_extra(self, d: dict[str, Any]) -> None:
        diffs = d.get("difficulties") or []
        self.difficulties_ = [int(k) if str(k).lstrip("-").isdigit() else k for k in diffs]
        self.chance_ = {k: float((d.get("chance") or {}).get(str(k), 0.0)) for k in self.difficulties_}
        self.range_ = d.get("range") or {}
        self.rmse_ = d.get("rmse")
        share = d.get("c_nonpositive_share")
        self.c_nonpositive_share_ = math.nan if share is None else float(share)

    # JSON has no infinity: an infinite multiplier (c <= 0) is written as "inf", NaN as null
    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out["params"] = {k: _to_json(v) for k, v in out["params"].items()}
        out["ci95"] = {k: [_to_json(x) for x in v] for k, v in out["ci95"].items()}
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ExchangeLaw":
        d = {**d, "params": {k: _from_json(v) for k, v in (d.get("params") or {}).items()},
             "ci95": {k: [_from_json(x) for x in v] for k, v in (d.get("ci95") or {}).items()}}
        return super().from_dict(d)


def _pow10(x: float) -> float:
    """10^x, infinite past the float range (a slope c near 0 sends b/c far out)."""
    return 10.0 ** x if x < 308 else math.inf


def _to_json(v: float) -> float | str | None:
    return v if math.isfinite(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else None


def _from_json(v: Any) -> float:
    return math.nan if v is None else float(v)  # float("inf") reads the string form


class LadderCurve:
    """Greedy accuracy against pretraining FLOPs along a ladder (see module docstring)."""

    def __init__(self, *, bootstrap: int = 200, seed: int = 0):
        self.bootstrap = bootstrap   # parametric (normal, from each point's standard error) resamples
        self.seed = seed

    def fit(self, C: Any, acc: Any, se: Any = None) -> "LadderCurve":
        C, acc = np.asarray(C, float).reshape(-1), np.asarray(acc, float).reshape(-1)
        if C.size < 2 or np.unique(C).size < 2:
            raise InputError("a ladder curve needs models of at least 2 pretraining budgets")
        if not np.all(np.isfinite(C) & (C > 0)) or not np.all(np.isfinite(acc)):
            raise InputError("ladder FLOPs must be > 0 and accuracies finite")
        order = np.argsort(C)
        self.C_, self.acc_raw_ = C[order], acc[order]
        self.se_ = np.zeros_like(self.C_) if se is None else np.nan_to_num(np.asarray(se, float).reshape(-1)[order])
        self.acc_ = _isotonic(self.acc_raw_)
        self.params_ = {"points": int(C.size)}
        return self

    def predict(self, C: Any) -> np.ndarray:
        if not hasattr(self, "acc_"):
            raise NotFittedError("this LadderCurve is not fitted yet: call fit() first")
        return np.interp(np.log10(np.asarray(C, float)), np.log10(self.C_), self.acc_)

    def equivalent_compute(self, acc: float, curve: np.ndarray | None = None) -> tuple[float, str]:
        """The least pretraining FLOPs at which the ladder reaches `acc`, and 'inside', 'above' (acc
        beyond the ladder's best: the value is the largest C, a lower bound) or 'below'."""
        a = self.acc_ if curve is None else curve
        if acc > a[-1]:
            return float(self.C_[-1]), "above"
        if acc < a[0]:
            return float(self.C_[0]), "below"
        j = int(np.argmax(a >= acc))
        if j == 0 or a[j] == a[j - 1]:
            return float(self.C_[j]), "inside"
        t = (acc - a[j - 1]) / (a[j] - a[j - 1])
        lc = np.log10(self.C_[j - 1]) + t * (np.log10(self.C_[j]) - np.log10(self.C_[j - 1]))
        return float(10 ** lc), "inside"

    def worth(self, parent_C: float, parent_acc: float, child_acc: float, *, parent_se: float = 0.0,
              child_se: float = 0.0) -> dict[str, Any]:
        """The child's pretraining-FLOPs multiplier at equal accuracy, with a 95% interval."""
        anchor = float(self.predict(parent_C))
        eq, where = self.equivalent_compute(anchor + child_acc - parent_acc)
        rng = np.random.default_rng(self.seed)
        draws = []
        # Independent normal errors on every point and on the gain: a conservative interval, since
        # a child and its parent are scored on the same problems (their errors are correlated).
        for _ in range(int(self.bootstrap)):
            curve = _isotonic(self.acc_raw_ + rng.normal(0, 1, self.C_.size) * self.se_)
            gain = child_acc - parent_acc + rng.normal() * math.hypot(child_se, parent_se)
            base = float(np.interp(np.log10(parent_C), np.log10(self.C_), curve))
            draws.append(self.equivalent_compute(base + gain, curve)[0] / parent_C)
        ci = percentile_ci(np.array(draws)) if draws else (math.nan, math.nan)
        return {"multiplier": eq / parent_C, "ci95": list(ci), "where": where, "equivalent_C": eq,
                "anchor_accuracy": anchor, "gain": child_acc - parent_acc}


def _isotonic(y: np.ndarray) -> np.ndarray:
    """Pool-adjacent-violators: the non-decreasing sequence closest to y in least squares."""
    blocks: list[list[float]] = []  # [mean, count]
    for v in np.asarray(y, float):
        blocks.append([float(v), 1.0])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            m2, n2 = blocks.pop()
            m1, n1 = blocks.pop()
            blocks.append([(m1 * n1 + m2 * n2) / (n1 + n2), n1 + n2])
    return np.concatenate([np.full(int(n), m) for m, n in blocks])
