"""Variable projection for sums of power laws, and the tied-exponent view of an objective.

Variable projection (Golub & Pereyra 1973, "The differentiation of pseudo-inverses and nonlinear
least squares problems whose variables separate"): in L = E + A·N^-alpha + B·D^-beta the
coefficients E, A, B enter linearly. For given exponents they are a (non-negative) weighted
least-squares solution in closed form, so the search runs over the exponents only: a 2-D grid
for (alpha, beta), 1-D for a tied exponent or a one-variable law. The residuals are relative,
(L̂ - L)/L, the first-order form of the log residuals the Huber objective uses.

`vpnls_starts` returns the best points of that profile as starts in the Hoffmann
parameterisation [a, b, e, alpha, beta] (a = log A ...); `ChinchillaLaw(method="vpnls")` then
polishes them on the same Huber objective as the multi-start L-BFGS, so both methods answer the
same question and their optima compare (benchmarks/bench_fit_vpnls.py).

`TiedLast` is an objective whose last exponent equals the one before it (alpha = beta): the
over-training form of Gadre et al. (2024, "Language models scale reliably with over-training and
on downstream tasks", Eq. 4-5), L(N, M) = E + (a·M^eta + b·M^-eta)·C^-eta with M = D/N tokens
per parameter, is exactly Chinchilla's law with alpha = beta.
"""
from __future__ import annotations

import numpy as np
from scipy.optimize import nnls

# Exponent grid of the profile search: 0.02 .. 1.5 (published fits lie in 0.05 - 0.8).
EXPONENT_GRID = np.linspace(0.02, 1.5, 75)


def _solve(Phi: np.ndarray, t: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Non-negative least squares min_c sum ((Phi·c - t)/s)^2 for a batch of designs.

    Phi [k, n, m], t and s [n] -> coefficients [k, m], objective [k]. Normal equations for all
    rows at once; rows with a negative or non-finite coefficient go to scipy's NNLS.
    """
    W = Phi / s[None, :, None]
    b = t / s
    G = np.einsum("knm,knp->kmp", W, W)
    r = np.einsum("knm,n->km", W, b)
    with np.errstate(all="ignore"):
        try:
            ridge = 1e-14 * np.trace(G, axis1=1, axis2=2)[:, None, None] * np.eye(G.shape[1])
            coef = np.linalg.solve(G + ridge, r[..., None])[..., 0]
        except np.linalg.LinAlgError:
            coef = np.full(r.shape, -1.0)
    bad = ~(np.all(coef >= 0, axis=1) & np.all(np.isfinite(coef), axis=1))
    for i in np.flatnonzero(bad):
        coef[i] = nnls(W[i], b, maxiter=50 * W.shape[2])[0]
    fun = np.sum((np.einsum("knm,km->kn", W, coef) - b) ** 2, axis=1)
    return coef, fun


def profile(cols: list[np.ndarray], y: np.ndarray, exps: np.ndarray, E: float | None,
            tied: bool = False, weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Linear coefficients and objective at exponent rows `exps` [k, T] (T = 1 when tied).

    cols: the variables of the power-law terms (e.g. [N, D]); E: a fixed constant, or None to
    fit it; weights: point weights of the squared residuals. Returns (coef [k, 1 + T or T],
    fun [k]); with E free the constant comes first.
    """
    exps = np.atleast_2d(exps)
    k = exps.shape[0]
    terms = [np.power(c[None, :], -exps[:, 0 if tied else j, None]) for j, c in enumerate(cols)]
    parts = ([np.ones((k, len(y)))] if E is None else []) + terms
    # Residuals are relative to the loss itself (also when E is fixed and subtracted).
    scale = y if weights is None else y / np.sqrt(weights)
    return _solve(np.stack(parts, axis=2), y if E is None else y - E, scale)


def vpnls_starts(N: np.ndarray, D: np.ndarray, y: np.ndarray, *, E: float | None = None, tied: bool = False,
                 top: int = 5, weights: np.ndarray | None = None) -> tuple[np.ndarray, dict]:
    """Best distinct minima of the projected objective, as Hoffmann-form starts.

    Returns (starts [top, 5] as [a, b, e, alpha, beta] with the tie and the fixed E kept in the
    columns, info with the best exponents and profile objective).
    """
    g = EXPONENT_GRID
    exps = g[:, None] if tied else np.array([(a, b) for a in g for b in g])
    coef, fun = profile([N, D], y, exps, E, tied, weights)
    fun = np.where(np.isfinite(fun), fun, np.inf)
    order = np.argsort(fun, kind="stable")
    picked: list[int] = []
    for i in order:
        if len(picked) >= top or not np.isfinite(fun[i]):
            break
        if all(np.max(np.abs(exps[i] - exps[j])) > 0.1 for j in picked):
            picked.append(int(i))
    floor = 1e-6 * float(np.min(y))  # NNLS may put a coefficient at 0: log needs a positive value
    rows = []
    for i in picked:
        c = np.maximum(coef[i], floor)
        e_val = float(np.log(E)) if E is not None else float(np.log(c[0]))
        A, B = (c[1], c[2]) if E is None else (c[0], c[1])
        al = exps[i, 0]
        be = exps[i, 0] if tied else exps[i, 1]
        rows.append([np.log(A), np.log(B), e_val, al, be])
    info = {"exponents": exps[order[0]].tolist(), "profile_objective": float(fun[order[0]]),
            "grid_points": int(len(exps))}
    return np.array(rows, float), info


class TiedLast:
    """An objective with its last parameter (beta) tied to the one before (alpha): rows carry
    one parameter less; values, gradients and conversions go through the full objective."""

    def __init__(self, inner):
        self.inner = inner
        self.n_params = inner.n_params - 1
        self.delta, self.logy = inner.delta, inner.logy

    @property
    def weights(self):
        return getattr(self.inner, "weights", None)

    @staticmethod
    def expand(X: np.ndarray) -> np.ndarray:
        X = np.atleast_2d(np.asarray(X, float))
        return np.column_stack([X, X[:, -1]])

    def __call__(self, X, rows):
        f, g = self.inner(self.expand(X), rows)
        return f, np.column_stack([g[:, :-2], g[:, -2] + g[:, -1]])

    def single(self, x, row=0):
        f, g = self(np.asarray(x, float)[None, :], np.array([row]))
        return float(f[0]), g[0]

    def to_internal(self, X):
        return self.inner.to_internal(self.expand(X))[:, :-1]

    def to_external(self, X):
        return self.inner.to_external(self.expand(X))[:, :-1]

    def point_losses(self, X):
        return self.inner.point_losses(self.expand(X))

    def predict_log(self, X, logx):
        return self.inner.predict_log(self.expand(X), logx)

    def with_weights(self, weights):
        return TiedLast(self.inner.with_weights(weights))

    def subset(self, rows):
        return TiedLast(self.inner.subset(rows))
