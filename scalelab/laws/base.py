"""What every fitter shares: the estimator contract and its FIT.json form.

Fitters follow scikit-learn's conventions (developer guide, "Rolling your own estimator"):
hyper-parameters are set in `__init__` and only stored there; `fit(X, y)` learns and returns
self; learned values end in an underscore (`params_`, `ci_`, `result_`, `n_points_`); `predict`
refuses to run before `fit`. `result_` is the optimiser's own result (a
`scipy.optimize.OptimizeResult` or one built the same way) so its `success` flag is never hidden.

A law is registered by name in `scalelab.laws.LAWS`; the command line, FIT.json and the figures
all go through the class attributes below, so adding a law is one class plus one registry entry.
"""
from __future__ import annotations

import inspect
import math
import time
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from scipy.optimize import OptimizeResult

from scalelab.errors import InputError, ScalelabError


class NotFittedError(ScalelabError, AttributeError):
    """`predict` or `compute_optimal` called on a law that has not been fitted."""


@dataclass
class Allocation:
    """A compute-optimal (or inference-aware) choice of model size and training tokens."""

    compute: float
    N: float
    D: float
    loss: float | None = None

    @property
    def tokens_per_param(self) -> float:
        return self.D / self.N

    def as_dict(self) -> dict[str, float | None]:
        return {"compute": self.compute, "N": self.N, "D": self.D,
                "tokens_per_param": self.tokens_per_param, "loss": self.loss}


class Law:
    """Base class of the scaling-law estimators (see module docstring)."""

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    # Standard table columns the law reads, in the order `fit` expects them in X (then y = loss).
    columns: ClassVar[tuple[str, ...]] = ()
    param_names: ClassVar[tuple[str, ...]] = ()
    verbs: ClassVar[frozenset[str]] = frozenset()   # which of "predict", "optimal" make sense
    min_points: ClassVar[int] = 3
    min_distinct: ClassVar[dict[str, int]] = {}      # column -> distinct values needed
    default_bootstrap: ClassVar[int] = 1000

    # ---- scikit-learn style parameter access ------------------------------------------------
    @classmethod
    def _hyper_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return [p for p in sig.parameters if p != "self"]

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self._hyper_names()}

    def set_params(self, **params: Any) -> "Law":
        names = self._hyper_names()
        for k, v in params.items():
            if k not in names:
                raise InputError(f"{type(self).__name__}: no hyper-parameter {k!r} (known: {', '.join(names)})")
            setattr(self, k, v)
        return self

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    # ---- fitted state --------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "params_"):
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet: call fit() first")

    @property
    def converged_(self) -> bool:
        """The optimiser's success flag (`result_.success`), unchanged."""
        self._check_fitted()
        return bool(getattr(self.result_, "success", False))

    def fit(self, X: Any, y: Any, **fit_params: Any) -> "Law":  # pragma: no cover - abstract
        raise NotImplementedError

    def predict(self, X: Any) -> np.ndarray:
        raise InputError(f"law '{self.name}' cannot predict a loss from (N, D)")

    def compute_optimal(self, C: float, **kw: Any) -> Allocation:
        raise InputError(f"law '{self.name}' has no compute-optimal allocation")

    def optimal_exponents(self) -> dict[str, float]:
        """Exponents of N*(C) ∝ C^a and D*(C) ∝ C^b where the law defines them."""
        return {}

    def extra_summary(self) -> dict[str, Any]:
        """Law-specific facts for FIT.json and the printed summary (e.g. IsoFLOP budgets)."""
        return {}

    # ---- FIT.json --------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The FIT.json form (keys fixed since the first release: law, params, ci95, n_points, objective,
        converged, optimal), plus the settings and optimiser message that produced it."""
        self._check_fitted()
        res = self.result_
        out: dict[str, Any] = {
            "law": self.name,
            "params": {k: float(v) for k, v in self.params_.items()},
            "ci95": {k: [float(lo), float(hi)] for k, (lo, hi) in (self.ci_ or {}).items()},
            "n_points": int(self.n_points_),
            "objective": float(res.fun) if res is not None and np.isfinite(res.fun) else None,
            "converged": self.converged_,
            "optimal": {k: float(v) for k, v in self.optimal_exponents().items()},
            "message": str(getattr(res, "message", "")),
            "check": str(getattr(res, "check", "") or ""),
            "settings": _jsonable(self.get_params()),
        }
        out.update(_jsonable(self.extra_summary()))
        from scalelab.laws.intervals import to_doc

        out.update(_jsonable(to_doc(self)))
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Law":
        """Rebuild a fitted law from its FIT.json form (params and intervals, not the data)."""
        settings = {k: v for k, v in (d.get("settings") or {}).items() if k in cls._hyper_names()}
        law = cls(**settings)
        missing = [k for k in cls.param_names if k not in (d.get("params") or {})]
        if missing:
            raise InputError(f"FIT.json for law '{cls.name}' lacks params: {', '.join(missing)}")
        # strict JSON: no value is null, infinity the string "inf" (scalelab.records.dumps_json)
        num = lambda v: math.nan if v is None else float(v)  # noqa: E731
        law.params_ = {k: num(v) for k, v in d["params"].items()}
        law.ci_ = {k: tuple(num(x) for x in v) for k, v in (d.get("ci95") or {}).items()}
        law.n_points_ = int(d.get("n_points") or 0)
        law.result_ = OptimizeResult(
            fun=d.get("objective") if d.get("objective") is not None else math.nan,
            success=bool(d.get("converged")), message=d.get("message", "read from FIT.json"),
        )
        law._restore_extra(d)
        from scalelab.laws.intervals import from_doc

        from_doc(law, d)
        return law

    def _restore_extra(self, d: dict[str, Any]) -> None:
        """Hook for laws that keep more than params in FIT.json."""


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, (np.floating, float)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (str, int, bool)) or obj is None:
        return obj
    return str(obj)


def percentile_ci(samples: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval (Efron & Tibshirani 1993, ch. 13) of the finite samples."""
    s = np.asarray(samples, float)
    s = s[np.isfinite(s)]
    if s.size < 2:
        return (math.nan, math.nan)
    lo, hi = np.percentile(s, [50 * (1 - level), 50 * (1 + level)])
    return (float(lo), float(hi))


def as_columns(X: Any, n_cols: int, names: tuple[str, ...]) -> np.ndarray:
    """X as a float array [n, n_cols]; a 1-D input is one column. Values must be finite and > 0."""
    arr = np.asarray(X, dtype=float)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or arr.shape[1] != n_cols:
        raise InputError(f"expected X with {n_cols} column(s) ({', '.join(names)}), got shape {arr.shape}")
    for j, nm in enumerate(names):
        _check_positive(arr[:, j], nm)
    return arr


def as_target(y: Any, n: int) -> np.ndarray:
    arr = np.asarray(y, dtype=float).reshape(-1)
    if arr.shape[0] != n:
        raise InputError(f"y has {arr.shape[0]} values but X has {n} rows")
    _check_positive(arr, "loss")
    return arr


def _check_positive(v: np.ndarray, name: str) -> None:
    bad = np.flatnonzero(~np.isfinite(v) | (v <= 0))
    if bad.size:
        shown = ", ".join(str(i) for i in bad[:10]) + (f" (+{bad.size - 10} more)" if bad.size > 10 else "")
        raise InputError(f"{name}: values must be finite and > 0; bad at index {shown}")


class Timer:
    def __init__(self) -> None:
        self.t0 = time.perf_counter()

    def __call__(self) -> float:
        return time.perf_counter() - self.t0
