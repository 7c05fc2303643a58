"""The data-constrained scaling law of Muennighoff et al. (2023, "Scaling Data-Constrained
Language Models", Eqs. 5-7; the huggingface/datablations README gives the same law as code).

Repeated tokens and excess parameters are worth less than fresh ones, decaying exponentially:

    U_D = min(U, D)                    unique tokens seen       R_D = D/U_D - 1   (repeats)
    D'  = U_D + U_D·R_D*·(1 - exp(-R_D/R_D*))
    U_N = min(N, N_opt(U_D))           N_opt(D) = G·(G·D)^(beta/alpha): the compute-optimal size
                                       for D tokens (Hoffmann Eq. 4 solved for N given D)
    R_N = N/U_N - 1                    N'  = U_N + U_N·R_N*·(1 - exp(-R_N/R_N*))
    L(N, D, U) = E + A/N'^alpha + B/D'^beta,   G = (alpha·A/(beta·B))^(1/(alpha+beta))

Fitting follows the paper's two stages: the Chinchilla part (E, A, B, alpha, beta) on runs that
saw each token at most once, with the Hoffmann grid and objective (optionally alpha = beta, as
the published C4 constants were fitted), then R_D* and R_N* on all runs with the first stage
held fixed, again Huber (delta = 1e-3) on log-loss residuals. `base=` skips the first stage
(e.g. to reuse constants fitted on other data, as the paper did with Chinchilla's C4 runs).
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
from scipy.optimize import OptimizeResult, minimize_scalar

from scalelab.errors import InputError
from scalelab.laws.base import Allocation, Law, Timer, as_columns, as_target, percentile_ci
from scalelab.laws.loghuber import (BOOTSTRAP_TOL, LogHuberObjective, bootstrap_refits, fit_multistart,
                                    hoffmann_grid)
from scalelab.laws.intervals import keep_draws, record_fit_data
from scalelab.laws.optimize import HUBER_DELTA, finish, lbfgs_batch

# Published C4 constants (datablations README, "Parametric Fit"): a, b, e are logs of A, B, E.
MUENNIGHOFF_2023 = {"E": float(np.exp(0.6254804)), "A": float(np.exp(6.255414)), "B": float(np.exp(7.3049974)),
                    "alpha": 0.3526596, "beta": 0.3526596, "R_D_star": 15.387756, "R_N_star": 5.309743}
BASE_KEYS = ("E", "A", "B", "alpha", "beta")


def effective_inputs(N, D, U, E, A, B, alpha, beta, rd_star, rn_star):
    """(N', D') of Muennighoff et al. Eq. 5-6 (broadcasts over arrays)."""
    U_D = np.minimum(U, D)
    R_D = np.maximum(D / U_D - 1.0, 0.0)
    G = (alpha * A / (beta * B)) ** (1.0 / (alpha + beta))
    U_N = np.minimum(N, G * (G * U_D) ** (beta / alpha))
    R_N = np.maximum(N / U_N - 1.0, 0.0)
    D_eff = U_D + U_D * rd_star * (1.0 - np.exp(-R_D / rd_star))
    N_eff = U_N + U_N * rn_star * (1.0 - np.exp(-R_N / rn_star))
    return N_eff, D_eff, U_N, U_D, R_N, R_D


def datacon_loss(N, D, U, p: dict[str, float]):
    N_eff, D_eff, *_ = effective_inputs(N, D, U, *(p[k] for k in BASE_KEYS), p["R_D_star"], p["R_N_star"])
    return p["E"] + p["A"] / N_eff ** p["alpha"] + p["B"] / D_eff ** p["beta"]


class TiedExponents:
    """A view of a L(N, D) objective with alpha = beta: rows [a, b, e, gamma]."""

    def __init__(self, obj: LogHuberObjective):
        self.obj, self.n_params, self.delta = obj, 4, obj.delta
        self.logy = obj.logy

    def expand(self, X):
        X = np.atleast_2d(X)
        return np.column_stack([X, X[:, 3]])

    def subset(self, rows):
        return TiedExponents(self.obj.subset(rows))

    def with_weights(self, weights):
        return TiedExponents(self.obj.with_weights(weights))

    def to_internal(self, X):
        return self.obj.to_internal(self.expand(X))[:, :4]

    def to_external(self, X):
        return self.obj.to_external(self.expand(X))[:, :4]

    def __call__(self, X, rows):
        f, g = self.obj(self.expand(X), rows)
        return f, np.column_stack([g[:, :3], g[:, 3] + g[:, 4]])

    def single(self, x, row=0):
        f, g = self(np.asarray(x, float)[None, :], np.array([row]))
        return float(f[0]), g[0]

    def point_losses(self, X):
        return self.obj.point_losses(self.expand(X))


class RepetitionObjective:
    """Stage 2: rows [log R_D*, log R_N*], each row with its own first-stage constants and point
    weights (bootstrap). Analytic gradient through D' and N' (module docstring)."""

    def __init__(self, N, D, U, logy, base: np.ndarray, weights: np.ndarray | None, delta: float):
        self.N, self.D, self.U, self.logy = N, D, U, logy
        self.base = np.atleast_2d(base)              # [k, 5]: E, A, B, alpha, beta per row
        self.weights, self.delta, self.n_params = weights, delta, 2
        E, A, B, al, be = (self.base[:, j, None] for j in range(5))
        shape = (self.base.shape[0], len(logy))
        self.U_N, self.U_D, self.R_N, self.R_D = (
            np.broadcast_to(v, shape) for v in effective_inputs(N, D, U, E, A, B, al, be, 1.0, 1.0)[2:])

    def __call__(self, X, rows):
        E, A, B, al, be = (self.base[rows, j, None] for j in range(5))
        rd, rn = np.exp(X[:, 0, None]), np.exp(X[:, 1, None])
        UD, UN, RD, RN = self.U_D[rows], self.U_N[rows], self.R_D[rows], self.R_N[rows]
        xd, xn = RD / rd, RN / rn
        ed, en = np.exp(-xd), np.exp(-xn)
        D_eff = UD * (1 + rd * (1 - ed))
        N_eff = UN * (1 + rn * (1 - en))
        tN = A * N_eff ** -al
        tD = B * D_eff ** -be
        Lh = E + tN + tD
        r = np.log(Lh) - self.logy
        dh = np.clip(r, -self.delta, self.delta)
        h = dh * (r - 0.5 * dh)
        if self.weights is not None:
            w = self.weights[rows]
            h, dh = h * w, dh * w
        # dlogL/drho_D = (tD/Lh)·(-beta/D')·dD'/drho_D,  dD'/drho_D = U_D·R_D*·[(1-e^-x) - x·e^-x]
        dD = UD * rd * ((1 - ed) - xd * ed)
        dN = UN * rn * ((1 - en) - xn * en)
        g = np.column_stack([(dh * (tD / Lh) * (-be / D_eff) * dD).sum(1),
                             (dh * (tN / Lh) * (-al / N_eff) * dN).sum(1)])
        return h.sum(1), g

    def single(self, x, row=0):
        f, g = self(np.asarray(x, float)[None, :], np.array([row]))
        return float(f[0]), g[0]


REPETITION_GRID = np.log(np.array([[d, n] for d in (1, 3, 10, 30, 100) for n in (1, 3, 10, 30, 100)], float))


class DataConstrainedLaw(Law):
    name = "datacon"
    title = "data-constrained L(N, D, U) (Muennighoff et al. 2023)"
    columns = ("N", "D", "U")
    param_names = BASE_KEYS + ("R_D_star", "R_N_star")
    verbs = frozenset({"predict", "optimal"})
    min_points = 9
    min_distinct = {"N": 3}

    def __init__(self, *, base: dict[str, float] | None = None, tie_exponents: bool = False,
                 fresh_epochs: float = 1.0, bootstrap: int = 1000, seed: int = 0, delta: float = HUBER_DELTA):
        self.base = base                  # fixed E, A, B, alpha, beta (skips the first stage)
        self.tie_exponents = tie_exponents
        self.fresh_epochs = fresh_epochs  # first stage uses runs with D/U <= this
        self.bootstrap = bootstrap
        self.seed = seed
        self.delta = delta

    @classmethod
    def published(cls) -> "DataConstrainedLaw":
        """The law with Muennighoff et al.'s published C4 constants (no data, no intervals)."""
        law = cls(bootstrap=0)
        law.params_ = dict(MUENNIGHOFF_2023)
        law.ci_, law.n_points_ = {}, 0
        law.result_ = OptimizeResult(fun=np.nan, success=True, message="published constants (datablations README)")
        return law

    def fit(self, X: Any, y: Any, *, progress: Callable[[int, int], None] | None = None) -> "DataConstrainedLaw":
        X = as_columns(X, 3, self.columns)
        y = as_target(y, X.shape[0])
        timer = Timer()
        N, D, U = X.T
        logy = np.log(y)
        fresh = D <= U * self.fresh_epochs * (1 + 1e-9)
        if not (D > U * (1 + 1e-9)).any():
            raise InputError("datacon: no run repeats data (D <= U everywhere), so R_D* cannot be identified")
        if self.base is None and fresh.sum() < 6:
            raise InputError(f"datacon: {int(fresh.sum())} runs with D/U <= {self.fresh_epochs}; "
                             "the first stage needs at least 6 (or pass base=)")
        stage1 = self._stage1_objective(N, D, logy, fresh) if self.base is None else None
        if stage1 is None:
            base = np.array([[self.base[k] for k in BASE_KEYS]], float)
            res1 = OptimizeResult(success=True, message="base constants given")
        else:
            res1 = fit_multistart(stage1, self._grid(), n_jobs=1)
            base = self._theta_to_base(np.atleast_2d(res1.x))
        stage2 = RepetitionObjective(N, D, U, logy, np.repeat(base, len(REPETITION_GRID), 0), None, self.delta)
        batch = lbfgs_batch(stage2, REPETITION_GRID, **BOOTSTRAP_TOL)
        res2 = finish(stage2.single, batch, scale=1.0 / self.delta, top=3)
        self.params_ = {**dict(zip(BASE_KEYS, map(float, base[0]))),
                        "R_D_star": float(np.exp(res2.x[0])), "R_N_star": float(np.exp(res2.x[1]))}
        self.result_ = OptimizeResult(
            x=np.r_[base[0], res2.x], fun=res2.fun, success=bool(res1.success and res2.success),
            message=f"stage 1: {res1.message}; stage 2: {res2.message}", stage1=res1, stage2=res2)
        self.n_points_, self.n_fresh_ = int(len(y)), int(fresh.sum())
        record_fit_data(self, X, y, self.columns)
        self.timing_ = {"fit_s": timer()}
        self.ci_, self.bootstrap_failed_ = {}, 0
        if self.bootstrap and self.bootstrap > 0:
            t2 = Timer()
            self._bootstrap(N, D, U, logy, fresh, stage1, res1, res2, progress)
            self.timing_["bootstrap_s"] = t2()
        return self

    def _stage1_objective(self, N, D, logy, fresh):
        obj = LogHuberObjective(np.log(np.c_[N, D])[fresh], logy[fresh], (0, 1), True, None, self.delta)
        return TiedExponents(obj) if self.tie_exponents else obj

    def _grid(self) -> np.ndarray:
        grid = hoffmann_grid(2, True)
        return np.unique(grid[:, :4], axis=0) if self.tie_exponents else grid

    def _theta_to_base(self, thetas: np.ndarray) -> np.ndarray:
        if self.tie_exponents:
            thetas = np.column_stack([thetas, thetas[:, 3]])
        a, b, e, al, be = thetas.T
        return np.column_stack([np.exp(e), np.exp(a), np.exp(b), al, be])

    def _bootstrap(self, N, D, U, logy, fresh, stage1, res1, res2, progress) -> None:
        n, n_boot = len(logy), int(self.bootstrap)
        rng = np.random.default_rng(self.seed)
        W = rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(float)
        if stage1 is None:
            bases, ok1 = np.repeat(np.array([[self.base[k] for k in BASE_KEYS]]), n_boot, 0), np.ones(n_boot, bool)
        else:
            thetas, ok1 = bootstrap_refits(stage1, np.asarray(res1.x), self._grid(), n_boot=n_boot, seed=self.seed,
                                           weights=W[:, fresh], progress=None)
            bases = self._theta_to_base(thetas)
        stage2 = RepetitionObjective(N, D, U, logy, np.repeat(bases, 2, 0), np.repeat(W, 2, 0), self.delta)
        starts = np.vstack([res2.x, [np.log(15.0), np.log(5.0)]])
        res = lbfgs_batch(stage2, np.tile(starts, (n_boot, 1)), **BOOTSTRAP_TOL)
        fun = np.where(np.isfinite(res.fun), res.fun, np.inf).reshape(n_boot, 2)
        idx = np.arange(n_boot) * 2 + np.argmin(fun, 1)
        ok = ok1 & res.converged[idx] & np.isfinite(res.fun[idx])
        draws = np.column_stack([bases, np.exp(res.x[idx])])[ok]
        self.bootstrap_failed_ = int((~ok).sum())
        self.ci_ = {k: percentile_ci(draws[:, j]) for j, k in enumerate(self.param_names)}
        keep_draws(self, draws)
        if progress is not None:
            progress(n_boot, n_boot)

    # ---- using the law -----------------------------------------------------------------------
    def predict(self, X: Any) -> np.ndarray:
        """X columns N, D, U (U may be inf for unlimited data)."""
        self._check_fitted()
        X = np.asarray(X, float).reshape(-1, 3)
        if not (np.isfinite(X[:, :2]).all() and (X > 0).all()):
            raise InputError("N and D must be finite and > 0, U > 0")
        return datacon_loss(X[:, 0], X[:, 1], X[:, 2], self.params_)

    def optimal_exponents(self) -> dict[str, float]:
        """Without repetition the law is Chinchilla's, with its exponents a and b."""
        self._check_fitted()
        al, be = self.params_["alpha"], self.params_["beta"]
        return {"a": be / (al + be), "b": al / (al + be)}

    def compute_optimal(self, C: float, U: float | None = None, **_: Any) -> Allocation:
        """Minimise L(N, C/(6N), U) over N; the README does this by grid search, here a log-N
        scan then Brent's method on the best bracket."""
        self._check_fitted()
        U = np.inf if U is None else float(U)
        lo, hi = np.log(1e3), np.log(C / 6.0)   # at least 1 token per run
        grid = np.linspace(lo, hi, 400)
        Ls = self.predict(np.column_stack([np.exp(grid), C / (6 * np.exp(grid)), np.full_like(grid, U)]))
        j = int(np.argmin(Ls))
        a, b = grid[max(j - 1, 0)], grid[min(j + 1, len(grid) - 1)]
        f = lambda u: float(self.predict([[np.exp(u), C / (6 * np.exp(u)), U]])[0])  # noqa: E731
        r = minimize_scalar(f, bounds=(a, b), method="bounded", options={"xatol": 1e-10})
        N = float(np.exp(r.x))
        return Allocation(compute=float(C), N=N, D=float(C / (6 * N)), loss=float(r.fun))

    def extra_summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"n_fresh": getattr(self, "n_fresh_", None), "timing": getattr(self, "timing_", {})}
        if self.bootstrap:
            out["bootstrap"] = {"n": int(self.bootstrap), "failed": int(getattr(self, "bootstrap_failed_", 0)),
                                "seed": self.seed}
        return out
