"""Loss -> downstream accuracy in two steps (Bhagia et al. 2024, "Establishing Task Scaling Laws
via Compute-Efficient Model Ladders", Sec. 3; Llama 3, Dubey et al. 2024, Sec. 3.2.1).

Step 1: the task loss (bits per byte of the correct answer) as a Chinchilla law of the model,
        L_task(N, D) = E + A/N^alpha + B/D^beta, fitted on the ladder's final checkpoints.
Step 2: accuracy as a sigmoid of that loss,
        Acc(L) = floor + (ceiling - floor) / (1 + exp(k·(L - L0))),
        fitted on every (loss, accuracy) checkpoint of the ladder runs (intermediate ones too, as
        the paper does: the sigmoid needs the whole range of losses).
The paper's sigmoid has four free parameters (floor, scale, k, L0); `chance=` holds the floor at
the task's chance accuracy, which small ladders (near chance on hard tasks) cannot pin down, and
`ceiling=` holds the top (1.0: a model that predicts every answer right). Both are least-squares
fits with bounds (scipy `least_squares`, trust region reflective) from a grid of starts; the
result's `success` flag is scipy's. `frontier_weight=P` weights step 1's runs by (C/C_max)^P, the
frontier weights of `fit --law auto` (`loghuber.frontier_weights`, through `ChinchillaLaw`); on the
OLMo ladder it did not make the 7B and 13B predictions better (docs/fitting.md), so it is off by
default.

    >>> two = TwoStepLaw(chance=0.25).fit(runs_ND, task_loss, ckpt_loss, ckpt_acc)
    >>> two.predict([[7e9, 4e12]])          # {"task_loss": [...], "accuracy": [...]}
"""
from __future__ import annotations

from typing import Any

import numpy as np
from scipy.optimize import OptimizeResult, least_squares

from scalelab.errors import InputError


def sigmoid(L: np.ndarray, floor: float, ceiling: float, k: float, L0: float) -> np.ndarray:
    with np.errstate(over="ignore"):
        return floor + (ceiling - floor) / (1.0 + np.exp(k * (np.asarray(L, float) - L0)))


class AccuracySigmoid:
    """Step 2 as an estimator: X = task loss [n], y = accuracy in [0, 1]."""

    param_names = ("floor", "ceiling", "k", "L0")

    def __init__(self, *, chance: float | None = None, ceiling: float | None = None):
        self.chance = chance      # hold the floor at chance accuracy (None: fitted, as in the paper)
        self.ceiling = ceiling    # hold the top (None: fitted, at most 1)

    def fit(self, X: Any, y: Any) -> "AccuracySigmoid":
        L = np.asarray(X, float).reshape(-1)
        acc = np.asarray(y, float).reshape(-1)
        ok = np.isfinite(L) & np.isfinite(acc)
        L, acc = L[ok], acc[ok]
        if len(L) < 5:
            raise InputError(f"accuracy sigmoid: needs at least 5 (loss, accuracy) points, got {len(L)}")
        if not (np.all(acc >= 0) and np.all(acc <= 1)):
            raise InputError("accuracy sigmoid: accuracies must lie in [0, 1] (fractions, not percent)")
        for name, v in (("chance", self.chance), ("ceiling", self.ceiling)):
            if v is not None and not (0 <= v <= 1):
                raise InputError(f"accuracy sigmoid: {name} must lie in [0, 1], got {v}")
        if self.chance is not None and self.ceiling is not None and not self.chance < self.ceiling:
            raise InputError(f"accuracy sigmoid: ceiling {self.ceiling} must lie above chance {self.chance}")
        free = [n for n, v in (("floor", self.chance), ("ceiling", self.ceiling)) if v is None] + ["k", "L0"]
        lo = {"floor": 0.0, "ceiling": 0.0, "k": 1e-3, "L0": L.min() - 5 * np.ptp(L) - 1}
        hi = {"floor": 1.0, "ceiling": 1.0, "k": 1e3, "L0": L.max() + 5 * np.ptp(L) + 1}

        def full(x):
            p = dict(zip(free, x))
            return (p.get("floor", self.chance), p.get("ceiling", self.ceiling), p["k"], p["L0"])

        def resid(x):
            return sigmoid(L, *full(x)) - acc

        best = None
        for k0 in (1.0, 4.0, 16.0):
            for q in (0.1, 0.5, 0.9):
                start = {"floor": max(acc.min() - 0.02, 0.0), "ceiling": min(acc.max() + 0.1, 1.0), "k": k0,
                         "L0": float(np.quantile(L, q))}
                x0 = np.clip([start[n] for n in free], [lo[n] + 1e-9 for n in free], [hi[n] - 1e-9 for n in free])
                r = least_squares(resid, x0, bounds=([lo[n] for n in free], [hi[n] for n in free]), method="trf",
                                  x_scale="jac", max_nfev=2000)
                if best is None or r.cost < best.cost:
                    best = r
        floor, ceiling, k, L0 = full(best.x)
        self.params_ = {"floor": float(floor), "ceiling": float(ceiling), "k": float(k), "L0": float(L0)}
        self.result_ = OptimizeResult(x=best.x, fun=float(2 * best.cost), success=bool(best.success),
                                      message=str(best.message), free=free)
        self.n_points_ = int(len(L))
        self.range_ = [float(L.min()), float(L.max())]
        return self

    @property
    def converged_(self) -> bool:
        return bool(self.result_.success)

    def predict(self, X: Any) -> np.ndarray:
        if not hasattr(self, "params_"):
            from scalelab.laws.base import NotFittedError

            raise NotFittedError("this AccuracySigmoid is not fitted yet: call fit() first")
        return sigmoid(np.asarray(X, float).reshape(-1), **self.params_)


class TwoStepLaw:
    """(N, D) -> task loss -> accuracy. Hyper-parameters: step 1's form, method and frontier
    weight, step 2's chance and ceiling."""

    def __init__(self, *, form: str = "free", method: str = "vpnls", chance: float | None = None,
                 ceiling: float | None = None, bootstrap: int = 0, seed: int = 0, frontier_weight: float = 0.0):
        self.form = form
        self.method = method
        self.chance = chance
        self.ceiling = ceiling
        self.bootstrap = bootstrap
        self.seed = seed
        self.frontier_weight = frontier_weight  # step 1's runs weighted by (C/C_max)^this (ChinchillaLaw's)

    def fit(self, X: Any, task_loss: Any, ckpt_loss: Any = None, ckpt_acc: Any = None) -> "TwoStepLaw":
        """X [n, 2] = N, D of the final checkpoints with their task losses; (ckpt_loss, ckpt_acc)
        the checkpoints for step 2 (without them, step 2 needs `acc=` rows: pass them here)."""
        from scalelab.laws.chinchilla import ChinchillaLaw

        if ckpt_loss is None or ckpt_acc is None:
            raise InputError("two-step fit: step 2 needs (loss, accuracy) points")
        self.step1_ = ChinchillaLaw(form=self.form, method=self.method, bootstrap=self.bootstrap, seed=self.seed,
                                    frontier_weight=self.frontier_weight).fit(X, task_loss)
        self.step2_ = AccuracySigmoid(chance=self.chance, ceiling=self.ceiling).fit(ckpt_loss, ckpt_acc)
        return self

    @property
    def converged_(self) -> bool:
        return self.step1_.converged_ and self.step2_.converged_

    def predict(self, X: Any) -> dict[str, np.ndarray]:
        L = self.step1_.predict(X)
        return {"task_loss": L, "accuracy": self.step2_.predict(L)}

    def to_dict(self) -> dict[str, Any]:
        return {"law": "two-step", "step1": self.step1_.to_dict(),
                "step2": {"params": self.step2_.params_, "n_points": self.step2_.n_points_,
                          "objective": self.step2_.result_.fun, "converged": self.step2_.converged_,
                          "message": self.step2_.result_.message, "loss_range": self.step2_.range_,
                          "fixed": {"floor": self.chance, "ceiling": self.ceiling}}}


def plot_two_step(law: TwoStepLaw, X: np.ndarray, task_loss: np.ndarray, ckpt_loss: np.ndarray,
                  ckpt_acc: np.ndarray, path: Any, *, targets: np.ndarray | None = None) -> Any:
    """Left: task loss against compute 6ND per model size, with step 1's curves. Right: accuracy
    against task loss, every checkpoint, step 2's sigmoid, and the predicted targets (N, D rows)."""
    from scalelab.laws.plot import _pyplot, save_figure

    plt = _pyplot()
    X = np.asarray(X, float)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    C = 6 * X[:, 0] * X[:, 1]
    for n in np.unique(X[:, 0]):
        m = X[:, 0] == n
        a1.scatter(C[m], np.asarray(task_loss)[m], s=18, label=f"N = {n:.3g}")
        d = np.geomspace(X[m, 1].min() / 2, X[:, 1].max() * 20, 50)
        a1.plot(6 * n * d, law.step1_.predict(np.column_stack([np.full_like(d, n), d])), lw=0.8)
    a1.set(xscale="log", xlabel="training compute 6ND (FLOPs)", ylabel="task loss", title="step 1: (N, D) → task loss")
    a1.legend(fontsize=7)
    a2.scatter(ckpt_loss, ckpt_acc, s=4, alpha=0.3, color="grey", label="ladder checkpoints")
    lo = min(np.min(ckpt_loss), np.min(law.predict(targets)["task_loss"]) if targets is not None else np.inf)
    grid = np.linspace(lo * 0.9, np.max(ckpt_loss) * 1.05, 200)
    a2.plot(grid, law.step2_.predict(grid), color="k", lw=1, label="sigmoid")
    if targets is not None:
        p = law.predict(targets)
        a2.scatter(p["task_loss"], p["accuracy"], marker="*", s=120, color="C3", label="predicted targets")
    a2.set(xlabel="task loss", ylabel="accuracy", title="step 2: task loss → accuracy")
    a2.legend(fontsize=7)
    return save_figure(plt, fig, path)
