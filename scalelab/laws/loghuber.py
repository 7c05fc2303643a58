"""The Huber-on-log-residuals objective of Hoffmann et al. (2022) and its multi-start fit.

Shared by the Chinchilla law L(N, D), the one-variable power law L(x) and the first stage of the
data-constrained law. `fit_multistart` runs L-BFGS from every start of a grid at once (see
`optimize.lbfgs_batch`), then checks the best distinct end points with scipy's L-BFGS-B
(`optimize.finish`); `bootstrap_refits` refits percentile-bootstrap resamples as weighted rows.
"""
from __future__ import annotations

import itertools
import multiprocessing as mp
from concurrent.futures import ProcessPoolExecutor
from typing import Callable

import numpy as np
from scipy.optimize import OptimizeResult

from scalelab.laws.optimize import HUBER_DELTA, _run_chunk, finish, multistart, usable_cpus

class LogHuberObjective:
    """Sum of Huber losses of log-residuals for a sum of power laws, in log-sum-exp form.

        log L̂_i = LSE(c_1 - γ_1·log x_{i,v1}, ..., c_T - γ_T·log x_{i,vT} [, e])
        objective = Σ_i w_i · Huber_δ(log L̂_i - log L_i)

    This is the Hoffmann et al. (2022, Sec. D.2, Eq. 5) parameterisation A = exp(c), E = exp(e),
    which Besiroglu et al. (2024) reuse; with T = 2 and vars (N, D) the parameter vector is
    [a, b, e, alpha, beta], their order. With T = 1 it is Kaplan's L(x) = E + A·x^(-alpha), and
    without `const` a pure power law. `weights` [k, n] give each batch row its own point weights
    (bootstrap resamples); rows index them.

    Internally log x is centred on its mean m, and c_k stands for c_k - γ_k·m: the same model
    and optimum, but a and alpha no longer move together (log N ~ 20 makes them nearly
    collinear), which cut the median L-BFGS iterations from the Hoffmann grid from 63 to 22.
    The optimiser works in these internal coordinates; `to_internal` / `to_external` convert
    starts and results, so callers see the published parameterisation.
    """

    def __init__(self, logx, logy, term_vars=(0, 1), const=True, weights=None, delta=HUBER_DELTA, shift=None):
        logx = np.asarray(logx, float).reshape(len(logy), -1)
        if shift is None:   # centred where the weight is (1-D point weights), else on the plain mean
            w1 = weights is not None and np.ndim(weights) == 1
            shift = np.average(logx, axis=0, weights=np.asarray(weights, float) if w1 else None)
        self.shift = np.asarray(shift, float)
        self.logx = logx - self.shift
        self.logy = np.asarray(logy, float)
        self.term_vars = tuple(term_vars)
        self.const = bool(const)
        self.weights = None if weights is None else np.asarray(weights, float)
        self.delta = float(delta)
        T = len(self.term_vars)
        self.n_params = 2 * T + int(self.const)
        # d(log L̂)/dγ_k needs Σ_i v_i·u_ik·log x_i: one matmul against [1, log x].
        self._design = [np.stack([np.ones_like(self.logy), self.logx[:, v]], 1) for v in self.term_vars]

    def subset(self, rows: np.ndarray) -> "LogHuberObjective":
        w = None if self.weights is None or self.weights.ndim == 1 else self.weights[rows]
        return self.with_weights(self.weights if w is None else w)

    def with_weights(self, weights: np.ndarray | None) -> "LogHuberObjective":
        return LogHuberObjective(self.logx + self.shift, self.logy, self.term_vars, self.const, weights,
                                 self.delta, self.shift)

    def _moved(self, thetas: np.ndarray, sign: float) -> np.ndarray:
        out = np.array(np.atleast_2d(thetas), float, copy=True)
        T = len(self.term_vars)
        for k, v in enumerate(self.term_vars):
            out[:, k] += sign * out[:, T + int(self.const) + k] * self.shift[v]
        return out

    def to_internal(self, thetas: np.ndarray) -> np.ndarray:
        return self._moved(thetas, -1.0)

    def to_external(self, thetas: np.ndarray) -> np.ndarray:
        return self._moved(thetas, +1.0)

    def split(self, X: np.ndarray):
        T = len(self.term_vars)
        c = X[:, :T]
        e = X[:, T] if self.const else None
        g = X[:, T + int(self.const):]
        return c, e, g

    def __call__(self, X: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        c, e, gam = self.split(X)
        T = len(self.term_vars)
        # Shift the exponents by a reference so exp() cannot overflow: the constant e when the
        # law has one (then u_k = A·x^-γ / E), else the first term itself (then u_1 = 1).
        shift = e if self.const else np.zeros(X.shape[0])
        ts = []
        for k, v in enumerate(self.term_vars):
            t = np.multiply.outer(gam[:, k], self.logx[:, v])
            np.subtract((c[:, k] - shift)[:, None], t, out=t)
            ts.append(t)
        ref = None if self.const else ts[0].copy()
        s = None
        us = []
        for t in ts:
            if ref is not None:
                t -= ref
            np.minimum(t, 700.0, out=t)
            u = np.exp(t, out=t)
            s = u + 1.0 if (s is None and self.const) else (u.copy() if s is None else s.__iadd__(u))
            us.append(u)
        r = np.log(s)
        if self.const:
            r += (e[:, None] - self.logy)
        else:
            r += ref
            r -= self.logy
        dh = np.clip(r, -self.delta, self.delta)
        r -= 0.5 * dh
        r *= dh                      # Huber value: dh·(r - dh/2) equals both branches
        v = dh / s                   # dHuber/dlog L̂ times the softmax denominator
        if self.weights is not None:
            w = self.weights if self.weights.ndim == 1 else self.weights[rows]
            r *= w
            v *= w
        f = r.sum(axis=1)
        g = np.empty((X.shape[0], self.n_params))
        for k, u in enumerate(us):
            u *= v                   # softmax weight of term k times dHuber
            gk = u @ self._design[k]
            g[:, k] = gk[:, 0]
            g[:, T + int(self.const) + k] = -gk[:, 1]
        if self.const:
            g[:, T] = v.sum(axis=1)
        return f, g

    def single(self, x: np.ndarray, row: int = 0) -> tuple[float, np.ndarray]:
        f, g = self(np.asarray(x, float)[None, :], np.array([row]))
        return float(f[0]), g[0]

    def predict_log(self, X: np.ndarray, logx: np.ndarray) -> np.ndarray:
        """log L̂ for parameter rows X [k, p] at points logx [n, q] -> [k, n]."""
        c, e, gam = self.split(np.atleast_2d(X))
        terms = [c[:, k, None] - np.multiply.outer(gam[:, k], logx[:, v]) for k, v in enumerate(self.term_vars)]
        if self.const:
            terms.append(np.broadcast_to(e[:, None], terms[0].shape))
        return np.logaddexp.reduce(np.stack(terms), axis=0)


    def point_losses(self, X: np.ndarray) -> np.ndarray:
        """Unweighted Huber loss of every point for parameter rows X -> [k, n]."""
        r = self.predict_log(X, self.logx) - self.logy
        dh = np.clip(r, -self.delta, self.delta)
        return dh * (r - 0.5 * dh)


class FixedConstObjective:
    """A LogHuberObjective whose constant e = log E is known, not fitted: the same objective over
    the remaining parameters [c_1..c_T, γ_1..γ_T] (e is left out of parameter vectors, and put
    back before every call). Used when the irreducible loss is known in closed form, as the
    testbed's entropy floor is."""

    def __init__(self, inner: LogHuberObjective, e: float):
        if not inner.const:
            raise ValueError("a fixed constant needs an objective with a constant term")
        self.inner, self.e = inner, float(e)
        self.T = len(inner.term_vars)
        self.n_params = inner.n_params - 1

    def __getattr__(self, name: str):  # logy, logx, delta, shift, term_vars ...
        return getattr(self.inner, name)

    def full(self, X: np.ndarray) -> np.ndarray:
        """Parameter rows with e inserted at its place (internal and external e coincide)."""
        X = np.atleast_2d(np.asarray(X, float))
        return np.insert(X, self.T, self.e, axis=1)

    def _drop(self, X: np.ndarray) -> np.ndarray:
        return np.delete(X, self.T, axis=1)

    def __call__(self, X: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        f, g = self.inner(self.full(X), rows)
        return f, self._drop(g)

    def single(self, x: np.ndarray, row: int = 0) -> tuple[float, np.ndarray]:
        f, g = self(np.asarray(x, float)[None, :], np.array([row]))
        return float(f[0]), g[0]

    def to_internal(self, thetas: np.ndarray) -> np.ndarray:
        return self._drop(self.inner.to_internal(self.full(thetas)))

    def to_external(self, thetas: np.ndarray) -> np.ndarray:
        return self._drop(self.inner.to_external(self.full(thetas)))

    def predict_log(self, X: np.ndarray, logx: np.ndarray) -> np.ndarray:
        return self.inner.predict_log(self.full(X), logx)

    def point_losses(self, X: np.ndarray) -> np.ndarray:
        return self.inner.point_losses(self.full(X))

    def with_weights(self, weights: np.ndarray | None) -> "FixedConstObjective":
        return FixedConstObjective(self.inner.with_weights(weights), self.e)

    def subset(self, rows: np.ndarray) -> "FixedConstObjective":
        return FixedConstObjective(self.inner.subset(rows), self.e)


def frontier_weights(x: np.ndarray, power: float) -> np.ndarray | None:
    """Point weights (x / max x)^power with mean 1 (None when power is 0): runs near the
    largest x (compute, for L(N, D) C = 6·N·D) count more.

    A law is fitted to be used beyond its largest runs. When the form is only an approximation
    of the true curve (a misspecified model, which a scaling law fitted over several decades
    is), the unweighted fit is the best approximation over where the runs happen to lie, most of
    them small. Shimodaira (2000, "Improving predictive inference under covariate shift by
    weighting the log-likelihood function") shows that weighting each point by the density
    ratio of where predictions will be asked to where the data are removes that bias, and that
    a flattened ratio (the ratio to a power between 0 and 1) trades it against variance. Beyond
    the frontier that ratio grows with x; a power of x is its scale-free stand-in: with power
    1, runs a decade below the largest count a tenth as much (local regression, Cleveland 1979,
    weights the same way by distance).
    """
    if not power:
        return None
    x = np.asarray(x, float)
    w = np.exp(power * (np.log(x) - np.log(x).max()))
    return w / w.mean()


def hoffmann_grid(n_terms: int = 2, const: bool = True) -> np.ndarray:
    """The initialisation grid of Hoffmann et al. (2022, App. D.2): a, b in {0, 5, ..., 25},
    e in {-1, -0.5, ..., 1}, alpha, beta in {0, 0.5, ..., 2}; 6·6·5·5·5 = 4,500 starts for
    L(N, D). Columns follow the objective's order [c_1..c_T, (e), γ_1..γ_T]."""
    c_vals = np.arange(0.0, 30.0, 5.0)
    e_vals = np.arange(-1.0, 1.5, 0.5)
    g_vals = np.arange(0.0, 2.5, 0.5)
    axes = [c_vals] * n_terms + ([e_vals] if const else []) + [g_vals] * n_terms
    return np.array(list(itertools.product(*axes)), dtype=float)


# Stopping tests for the batched multi-start pass: gtol a tenth of scipy L-BFGS-B's default pgtol;
# ftol relative to |f| (scipy divides by max(|f|, 1), which for Huber sums of ~1e-3 would stop
# far from the optimum). The best end points then go to scipy with much tighter tolerances.
MULTISTART_TOL = dict(gtol=1e-6, ftol=1e-9, max_iter=1000)
BOOTSTRAP_TOL = dict(gtol=1e-8, ftol=1e-12, max_iter=1000)


def select_starts(obj: LogHuberObjective, grid: np.ndarray, n_init: int | None, seed: int = 0) -> np.ndarray:
    """All grid points, or the `n_init` with the lowest initial objective (more than the grid:
    the grid plus uniform random starts inside its bounding box)."""
    if n_init is None or n_init == len(grid):
        return grid
    if n_init < 1:
        raise ValueError("n_init must be at least 1")
    if n_init < len(grid):
        f0 = obj.point_losses(obj.to_internal(grid)).sum(axis=1)
        f0 = np.where(np.isfinite(f0), f0, np.inf)
        return grid[np.argsort(f0, kind="stable")[:n_init]]
    rng = np.random.default_rng(seed)
    extra = rng.uniform(grid.min(0), grid.max(0), size=(n_init - len(grid), grid.shape[1]))
    return np.vstack([grid, extra])


def fit_multistart(obj, starts: np.ndarray, *, n_jobs: int | None = None, polish_top: int = 10,
                   tol: dict | None = None) -> OptimizeResult:
    """Best optimum over all starts (see `optimize.finish`), with `n_starts`,
    `n_starts_converged` and `batch` (the per-start results) attached. `tol`: the batch's
    stopping tests (default MULTISTART_TOL; a handful of good starts can afford BOOTSTRAP_TOL)."""
    batch = multistart(obj, obj.to_internal(starts), n_jobs=n_jobs, **(tol or MULTISTART_TOL))
    res = finish(obj.single, batch, scale=1.0 / obj.delta, top=polish_top)
    res.x = obj.to_external(res.x)[0]
    res.n_starts = int(len(starts))
    res.n_starts_converged = int(batch.converged.sum())
    res.batch = batch
    return res


def bootstrap_refits(obj, theta: np.ndarray, grid: np.ndarray, *, n_boot: int, seed: int,
                     weights: np.ndarray | None = None, top: int = 3, chunk: int | None = None,
                     n_jobs: int | None = 1,
                     progress: Callable[[int, int], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Refit `n_boot` resamples (drawn with replacement, as point weights); returns the
    parameters [n_boot, p] and whether each refit converged [n_boot].

    Each resample starts from the full-data optimum and from the `top` grid points that score
    best on that resample (scoring the grid is one matrix product for all resamples).
    `theta`, `grid` and the returned parameters are in the published parameterisation.
    Chunks of resamples run in `n_jobs` processes (None: all CPUs); the resamples and their
    starts are drawn here first, so the result does not depend on the number of processes.
    """
    theta = obj.to_internal(theta)[0]
    grid = obj.to_internal(grid)
    n = obj.logy.size
    if weights is None:
        rng = np.random.default_rng(seed)
        W = rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(float)
    else:
        W = np.asarray(weights, float)
    base = getattr(obj, "weights", None)
    if base is not None and base.ndim == 1:   # the fit's own point weights stay under each resample
        W = W * base[None, :]
    H = obj.point_losses(grid)
    H = np.where(np.isfinite(H), H, 1e300)
    thetas = np.full((n_boot, obj.n_params), np.nan)
    ok = np.zeros(n_boot, dtype=bool)
    k = top + 1
    jobs = usable_cpus() if n_jobs in (None, -1) else max(1, int(n_jobs))
    if chunk is None:
        # As many resamples per batch as keep its [rows, points] arrays near 250k entries (2 MB):
        # the per-iteration overhead of a batch is paid once per chunk, and the slowest refit sets
        # a chunk's iterations (1,000 Epoch resamples: 5.3 s in one chunk against 12.8 s in ten);
        # at least one chunk per process when the table is large enough to be worth splitting.
        chunk = int(np.clip(250_000 // (n * k), 100, max(n_boot, 100)))
        if n * k * n_boot >= 250_000:
            chunk = min(chunk, -(-n_boot // jobs))
    bounds = [(lo, min(n_boot, lo + chunk)) for lo in range(0, n_boot, chunk)]
    tasks = []
    for lo, hi in bounds:
        Wc = W[lo:hi]
        best = np.argsort(H @ Wc.T, axis=0, kind="stable")[:top].T   # [resamples, top] of [grid, resamples]
        starts = np.concatenate([np.repeat(theta[None, :], hi - lo, 0)[:, None, :], grid[best]], axis=1)
        tasks.append((obj.with_weights(np.repeat(Wc, k, axis=0)), starts.reshape(-1, obj.n_params), BOOTSTRAP_TOL))
    jobs = min(jobs, len(tasks))
    if jobs > 1:
        ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else None
        with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as ex:
            results = ex.map(_run_chunk, tasks)
            _collect(obj, results, bounds, k, thetas, ok, n_boot, progress)
    else:
        _collect(obj, map(_run_chunk, tasks), bounds, k, thetas, ok, n_boot, progress)
    return thetas, ok


def _collect(obj, results, bounds, k, thetas, ok, n_boot, progress) -> None:
    """Each resample's best end point among its k starts, as chunks finish."""
    for (lo, hi), res in zip(bounds, results):
        fun = np.where(np.isfinite(res.fun), res.fun, np.inf).reshape(hi - lo, k)
        idx = np.arange(hi - lo) * k + np.argmin(fun, axis=1)
        thetas[lo:hi] = obj.to_external(res.x[idx])
        ok[lo:hi] = res.converged[idx] & np.isfinite(res.fun[idx])
        if progress is not None:
            progress(hi, n_boot)
