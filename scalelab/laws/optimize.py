"""Batched multi-start L-BFGS and the robust objectives the fitters share.

Scaling-law fits are small (5-7 parameters, tens to hundreds of points) but are run from many
starts (Hoffmann et al. 2022 use a 4,500-point grid) and refitted for every bootstrap resample.
One scipy call per start spends its time in Python overhead, not arithmetic. Here every start is
a row of one array: the objective and its analytic gradient are evaluated for all rows at once,
and the L-BFGS two-loop recursion and the Armijo backtracking run row-wise in NumPy. Each row
follows its own L-BFGS path (its own history, step and stopping test); rows only share the
vectorised arithmetic.

Bootstrap resamples are rows too: resampling n points with replacement is the same as weighting
each point by how many times it was drawn, so a row carries its own weight vector.

The best rows are then handed to scipy's L-BFGS-B (`finish`): the fitters expose an
`OptimizeResult` whose `success` flag is the stopping test actually met, and whose `check` says
what the reference optimiser made of the point.
"""
from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Callable
import multiprocessing as mp

import numpy as np
from scipy import optimize as sciopt

# fg(X[k, p], rows[k]) -> (f[k], g[k, p]); `rows` index the batch (e.g. pick per-row weights).
BatchObjective = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]

HUBER_DELTA = 1e-3  # Hoffmann et al. 2022, Sec. D.2; Besiroglu et al. 2024 keep it.


def huber(r: np.ndarray, delta: float = HUBER_DELTA) -> tuple[np.ndarray, np.ndarray]:
    """Huber loss of residuals and its derivative (quadratic inside |r| <= delta, linear outside)."""
    a = np.abs(r)
    inside = a <= delta
    value = np.where(inside, 0.5 * r * r, delta * (a - 0.5 * delta))
    slope = np.where(inside, r, delta * np.sign(r))
    return value, slope


@dataclass
class BatchResult:
    x: np.ndarray          # [k, p] final points
    fun: np.ndarray        # [k] final objective
    grad_norm: np.ndarray  # [k] max |gradient| at the end
    nit: np.ndarray        # [k] iterations taken
    converged: np.ndarray  # [k] bool: met a stopping test (not max_iter, not a failed line search)
    reason: np.ndarray     # [k] int: index into STOP_REASONS


STOP_REASONS = (
    "running",
    "CONVERGENCE: max |gradient| <= gtol",
    "CONVERGENCE: relative reduction of f <= ftol",
    "CONVERGENCE: no decrease along the search direction, gradient already small",
    "ABNORMAL: line search found no decrease",
    "STOP: iteration limit reached",
    "ABNORMAL: objective not finite at the start",
)


def lbfgs_batch(
    fg: BatchObjective,
    x0: np.ndarray,
    *,
    m: int = 10,
    max_iter: int = 1000,
    gtol: float = 1e-9,
    ftol: float = 1e-12,
    max_backtracks: int = 40,
) -> BatchResult:
    """Minimise every row of `x0` independently with L-BFGS (Nocedal & Wright 2006, Alg. 7.4/7.5).

    Stopping tests per row, as in scipy's L-BFGS-B: max |g| <= gtol, or a relative decrease
    (f_old - f_new) <= ftol * max(|f_old|, |f_new|, tiny). Rows whose line search cannot find
    a decrease stop there and count as converged only if their gradient is already small.
    """
    # Trial points far from the data overflow exp(); the line search treats non-finite values
    # as "step too long", so those warnings carry no information here.
    with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
        return _lbfgs_batch(fg, x0, m=m, max_iter=max_iter, gtol=gtol, ftol=ftol, max_backtracks=max_backtracks)


def _lbfgs_batch(fg, x0, *, m, max_iter, gtol, ftol, max_backtracks) -> BatchResult:
    x = np.array(x0, dtype=float, copy=True)
    k, p = x.shape
    all_rows = np.arange(k)
    f, g = fg(x, all_rows)
    S = np.zeros((k, m, p))
    Y = np.zeros((k, m, p))
    rho = np.zeros((k, m))
    n_hist = np.zeros(k, dtype=int)   # how many history slots are filled
    head = np.zeros(k, dtype=int)     # next slot to write (ring buffer)
    nit = np.zeros(k, dtype=int)
    done = ~np.isfinite(f) | (np.abs(g).max(axis=1) <= gtol)
    converged = np.isfinite(f) & (np.abs(g).max(axis=1) <= gtol)
    reason = np.where(~np.isfinite(f), 6, np.where(converged, 1, 0))

    for _ in range(max_iter):
        act = np.flatnonzero(~done)
        if act.size == 0:
            break
        xa, fa, ga = x[act], f[act], g[act]
        d = -_two_loop(ga, S[act], Y[act], rho[act], n_hist[act], head[act], m)
        slope = np.einsum("kp,kp->k", d, ga)
        bad = ~(slope < 0) | ~np.isfinite(slope)
        if bad.any():  # not a descent direction: forget the history, go down the gradient
            d[bad] = -ga[bad]
            n_hist[act[bad]] = 0
            slope[bad] = -np.einsum("kp,kp->k", ga[bad], ga[bad])
        # First step of a fresh history: unit length in the largest coordinate (scipy does alike).
        t = np.where(n_hist[act] == 0, 1.0 / np.maximum(np.abs(d).max(axis=1), 1e-300), 1.0)
        t = np.minimum(t, 1.0)
        x_new = xa + t[:, None] * d
        f_new, g_new = fg(x_new, act)
        ok = np.isfinite(f_new) & (f_new <= fa + 1e-4 * t * slope)
        for _bt in range(max_backtracks):
            redo = np.flatnonzero(~ok)
            if redo.size == 0:
                break
            t[redo] *= 0.5
            x_new[redo] = xa[redo] + t[redo, None] * d[redo]
            fr, gr = fg(x_new[redo], act[redo])
            f_new[redo], g_new[redo] = fr, gr
            ok[redo] = np.isfinite(fr) & (fr <= fa[redo] + 1e-4 * t[redo] * slope[redo])
        # Rows whose line search failed stop where they are.
        failed = act[~ok]
        gmax_fail = np.abs(g[failed]).max(axis=1) if failed.size else np.zeros(0)
        converged[failed] = np.isfinite(f[failed]) & (gmax_fail <= max(gtol * 1e3, 1e-7))
        reason[failed] = np.where(converged[failed], 3, 4)
        done[failed] = True

        moved = act[ok]
        if moved.size:
            s = x_new[ok] - xa[ok]
            y = g_new[ok] - ga[ok]
            sy = np.einsum("kp,kp->k", s, y)
            f_old = fa[ok]
            x[moved], f[moved], g[moved] = x_new[ok], f_new[ok], g_new[ok]
            nit[moved] += 1
            # Keep the pair only when curvature is positive (keeps the inverse-Hessian SPD).
            keep = sy > 1e-12 * np.einsum("kp,kp->k", y, y)
            rows = moved[keep]
            slot = head[rows]
            S[rows, slot] = s[keep]
            Y[rows, slot] = y[keep]
            rho[rows, slot] = 1.0 / sy[keep]
            head[rows] = (slot + 1) % m
            n_hist[rows] = np.minimum(n_hist[rows] + 1, m)
            gmax = np.abs(g[moved]).max(axis=1)
            scale = np.maximum(np.maximum(np.abs(f_old), np.abs(f[moved])), 1e-300)
            by_g = gmax <= gtol
            stop = by_g | ((f_old - f[moved]) <= ftol * scale)
            converged[moved[stop]] = True
            reason[moved[stop]] = np.where(by_g[stop], 1, 2)
            done[moved[stop]] = True

    reason[~done] = 5
    return BatchResult(x=x, fun=f, grad_norm=np.abs(g).max(axis=1), nit=nit, converged=converged, reason=reason)


def _two_loop(g, S, Y, rho, n_hist, head, m):
    """H·g for each row from its own (s, y) history, newest first (Nocedal & Wright Alg. 7.4)."""
    q = g.copy()
    k = g.shape[0]
    r_idx = np.arange(k)
    alpha = np.zeros((k, m))
    for j in range(m):
        slot = (head - 1 - j) % m
        use = j < n_hist
        s, y, r = S[r_idx, slot], Y[r_idx, slot], rho[r_idx, slot]
        a = np.where(use, r * np.einsum("kp,kp->k", s, q), 0.0)
        alpha[:, j] = a
        q -= a[:, None] * y
    # Initial Hessian gamma·I with gamma = s'y / y'y of the newest pair.
    newest = (head - 1) % m
    s_n, y_n = S[r_idx, newest], Y[r_idx, newest]
    yy = np.einsum("kp,kp->k", y_n, y_n)
    gamma = np.where((n_hist > 0) & (yy > 0), np.einsum("kp,kp->k", s_n, y_n) / np.where(yy > 0, yy, 1), 1.0)
    q *= gamma[:, None]
    for j in range(m - 1, -1, -1):
        slot = (head - 1 - j) % m
        use = j < n_hist
        s, y, r = S[r_idx, slot], Y[r_idx, slot], rho[r_idx, slot]
        b = np.where(use, r * np.einsum("kp,kp->k", y, q), 0.0)
        q += np.where(use, alpha[:, j] - b, 0.0)[:, None] * s
    return q


def polish(
    fg_single: Callable[[np.ndarray], tuple[float, np.ndarray]],
    x0: np.ndarray,
    *,
    scale: float = 1.0,
    maxiter: int = 15000,
) -> sciopt.OptimizeResult:
    """Finish one start with scipy's L-BFGS-B (analytic gradient) and return its OptimizeResult.

    The objective is multiplied by `scale` inside (Huber sums with delta = 1e-3 are ~1e-3, far
    below scipy's absolute default tolerances) and divided back in the returned `fun`.
    """
    def wrapped(x):
        f, g = fg_single(x)
        return f * scale, g * scale

    res = sciopt.minimize(
        wrapped, np.asarray(x0, float), jac=True, method="L-BFGS-B",
        options={"maxiter": maxiter, "maxfun": 4 * maxiter, "ftol": 1e-14, "gtol": 1e-10, "maxcor": 20},
    )
    res.fun = float(res.fun) / scale
    res.jac = np.asarray(res.jac) / scale
    return res


def finish(fg_single, batch: BatchResult, *, scale: float = 1.0, top: int = 10) -> sciopt.OptimizeResult:
    """The best row of a batch, checked by scipy's L-BFGS-B from the `top` best distinct rows.

    If scipy ends lower than every batch row (beyond round-off, 1e-12 relative), its own
    OptimizeResult is returned. Otherwise the batch row is returned as an OptimizeResult with
    its own stopping test as `success`/`message`, and scipy's verdict in `check` (scipy often
    reports ABNORMAL at a point it cannot improve: that is the optimum to working precision).
    """
    fun = np.where(np.isfinite(batch.fun), batch.fun, np.inf)
    order = np.argsort(fun, kind="stable")
    picked: list[int] = []
    for i in order:
        if not np.isfinite(fun[i]) or len(picked) >= top:
            break
        if all(np.max(np.abs(batch.x[i] - batch.x[j])) > 1e-6 for j in picked):
            picked.append(int(i))
    if not picked:
        return sciopt.OptimizeResult(x=batch.x[order[0]], fun=np.nan, success=False, nit=0, status=6,
                                     message=STOP_REASONS[6], check=None)
    checks = [polish(fg_single, batch.x[i], scale=scale) for i in picked]
    best_check = min(checks, key=lambda r: r.fun if np.isfinite(r.fun) else np.inf)
    i = picked[0]
    if np.isfinite(best_check.fun) and best_check.fun < fun[i] * (1 - 1e-12):
        best_check.check = "scipy L-BFGS-B improved on the batched optimum"
        return best_check
    return sciopt.OptimizeResult(
        x=batch.x[i].copy(), fun=float(fun[i]), jac=fg_single(batch.x[i])[1], nit=int(batch.nit[i]),
        success=bool(batch.converged[i]), status=int(batch.reason[i]), message=STOP_REASONS[batch.reason[i]],
        check=f"scipy L-BFGS-B from here: {best_check.message} (f = {best_check.fun:.12g})",
    )


def usable_cpus() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _run_chunk(args):
    objective, x0, kw = args
    return lbfgs_batch(objective, x0, **kw)


def multistart(objective, X0: np.ndarray, *, n_jobs: int | None = None, min_rows_per_job: int = 1000,
               **kw) -> BatchResult:
    """`lbfgs_batch` over the rows of X0, split across processes when the batch is large.

    Rows are independent, so splitting them changes nothing but the wall time. Processes, not
    threads: the per-row bookkeeping holds the GIL (measured: 2 threads gave no speed-up).
    """
    X0 = np.asarray(X0, float)
    jobs = usable_cpus() if n_jobs in (None, -1) else max(1, int(n_jobs))
    jobs = min(jobs, max(1, X0.shape[0] // min_rows_per_job))
    if jobs <= 1:
        return lbfgs_batch(objective, X0, **kw)
    chunks = np.array_split(np.arange(X0.shape[0]), jobs)
    tasks = [(objective.subset(idx), X0[idx], kw) for idx in chunks]
    ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else None
    with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as ex:
        parts = list(ex.map(_run_chunk, tasks))
    return BatchResult(*(np.concatenate([getattr(p, f) for p in parts])
                         for f in ("x", "fun", "grad_norm", "nit", "converged", "reason")))
