"""Fitters as estimators: one conformance test over every registered law, recovery of known laws
from synthetic runs, the optimiser against scipy, and the inference-aware optimum."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import minimize

from scalelab.errors import InputError
from scalelab.laws import LAWS, REGISTRY, ChinchillaLaw, IsoFlopLaw, NotFittedError, PowerLaw, inference_optimal
from scalelab.laws.datacon import DataConstrainedLaw, datacon_loss
from scalelab.laws.loghuber import LogHuberObjective, hoffmann_grid
from scalelab.laws.optimize import lbfgs_batch

TRUE = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}  # Hoffmann et al. 2022, Eq. 10


def chinchilla_loss(N, D, p=TRUE):
    return p["E"] + p["A"] * N ** -p["alpha"] + p["B"] * D ** -p["beta"]


def true_law() -> ChinchillaLaw:
    law = ChinchillaLaw()
    law.params_ = dict(TRUE)
    return law


def noisy(y, rng, sd=0.002):
    return y * np.exp(rng.normal(0, sd, np.shape(y)))


def synthetic(name: str, seed: int = 0):
    """Runs drawn from a known law for each registered fitter (a new law needs an entry here)."""
    rng = np.random.default_rng(seed)
    if name == "power":
        x = np.logspace(6, 10, 12)
        return x[:, None], noisy(1.7 + 400 * x ** -0.3, rng)
    if name == "chinchilla":
        N, D = (a.ravel() for a in np.meshgrid(np.logspace(7, 10, 6), np.logspace(9, 12, 6)))
        return np.column_stack([N, D]), noisy(chinchilla_loss(N, D), rng)
    if name == "isoflop":
        rows = []
        for C in (1e18, 1e19, 1e20, 1e21):
            centre = true_law().compute_optimal(C).N
            for N in centre * np.logspace(-0.8, 0.8, 7):
                rows.append((N, C / (6 * N), C))
        X = np.array(rows)
        return X, noisy(chinchilla_loss(X[:, 0], X[:, 1]), rng, 0.0005)
    if name == "datacon":
        p = dict(TRUE, R_D_star=15.0, R_N_star=5.0)
        rows = []
        for N in (5e7, 1e8, 2e8, 5e8, 1e9):
            for D in (2e9, 1e10, 5e10):
                for U in (D, D / 4, D / 16, D / 64):
                    rows.append((N, D, U))
        X = np.array(rows)
        return X, noisy(datacon_loss(X[:, 0], X[:, 1], X[:, 2], p), rng, 0.001)
    if name == "coverage":  # pass@k of problems with Beta(0.3, 2) success rates
        from scalelab.laws.coverage import beta_coverage

        k = np.array([1, 2, 4, 8, 16, 32, 64], float)
        return k[:, None], np.minimum(noisy(beta_coverage(k, 0.3, 2.0), rng), 1.0)
    if name == "testtime":  # accuracy against samples, saturating at 0.8
        n = np.array([1, 2, 4, 8, 16, 32, 64], float)
        return n[:, None], noisy(0.8 - 0.5 * n ** -0.6, rng)
    if name == "scalerl":  # RL accuracy against FLOPs: ScaleRL's sigmoid from 0.1 to 0.7
        C = np.logspace(13, 16, 10)
        return C[:, None], noisy(0.1 + 0.6 / (1 + (5e14 / C) ** 1.5), rng)
    if name == "posttrain-power":  # fine-tuning accuracy against FLOPs, saturating at 0.75
        C = np.logspace(13, 16, 10)
        return C[:, None], noisy(0.75 - 4 * C ** -0.08, rng)
    raise KeyError(f"no synthetic data for law {name!r}: add a generator to tests/test_laws.py")


def small(name: str):
    """The law with settings that keep the conformance test quick."""
    hyper = {"bootstrap": 20, "seed": 1}
    if "n_init" in LAWS[name]._hyper_names():
        hyper["n_init"] = 200
    return LAWS[name](**hyper)


@pytest.mark.parametrize("name", list(REGISTRY))
def test_conformance(name):
    cls = LAWS[name]
    X, y = synthetic(name)
    est = small(name)
    # __init__ stores hyper-parameters and nothing else (scikit-learn's rule).
    assert type(est)(**est.get_params()).get_params() == est.get_params()
    assert not [k for k in vars(est) if k.endswith("_")], "learned attributes set before fit"
    if "predict" in cls.verbs:
        with pytest.raises(NotFittedError):
            est.predict(X)
    if "optimal" in cls.verbs:
        with pytest.raises(NotFittedError):
            est.compute_optimal(1e21)
    assert est.fit(X, y) is est
    assert set(est.params_) == set(cls.param_names)
    assert all(np.isfinite(v) for v in est.params_.values())
    assert hasattr(est.result_, "success") and est.converged_
    assert est.n_points_ == len(y)
    for k, (lo, hi) in est.ci_.items():
        assert k in cls.param_names and lo <= est.params_[k] * (1 + 1e-9) + 1e-12 and lo <= hi
    # FIT.json round trip gives the same answers.
    again = cls.from_dict(est.to_dict())
    if "predict" in cls.verbs:
        pred = est.predict(X)
        assert pred.shape == (len(y),) and np.all(np.isfinite(pred))
        assert np.allclose(again.predict(X), pred, rtol=1e-12)
        assert np.median(np.abs(pred / y - 1)) < 0.01
    if "optimal" in cls.verbs:
        a, b = est.compute_optimal(1e22), again.compute_optimal(1e22)
        assert a.N > 0 and a.D > 0 and np.isclose(a.N, b.N, rtol=1e-9)
    # Same seed, same answer.
    twin = small(name).fit(X, y)
    assert twin.params_ == est.params_ and twin.ci_ == est.ci_


def test_bad_arrays_are_refused():
    with pytest.raises(InputError, match="index 2"):
        ChinchillaLaw(bootstrap=0).fit([[1e8, 1e9], [2e8, 1e9], [3e8, -1]], [3.0, 2.9, 2.8])
    with pytest.raises(InputError, match="2 column"):
        ChinchillaLaw(bootstrap=0).fit(np.ones((8, 3)), np.ones(8))
    with pytest.raises(InputError, match="y has"):
        PowerLaw(bootstrap=0).fit(np.arange(1, 6), np.ones(4))


def test_chinchilla_recovers_a_known_law():
    X, y = synthetic("chinchilla", seed=3)
    law = ChinchillaLaw(n_init=None, bootstrap=0).fit(X, y)
    p = law.params_
    assert abs(p["alpha"] - TRUE["alpha"]) < 0.02 and abs(p["beta"] - TRUE["beta"]) < 0.02
    assert abs(p["E"] - TRUE["E"]) < 0.05
    ex = law.optimal_exponents()
    assert abs(ex["a"] - 0.28 / 0.62) < 0.03 and np.isclose(ex["a"] + ex["b"], 1.0)
    # The allocation spends exactly C = 6ND and beats its neighbours on the iso-FLOP line.
    opt = law.compute_optimal(1e23)
    assert np.isclose(6 * opt.N * opt.D, 1e23, rtol=1e-10)
    for f in (0.8, 1.25):
        assert law.predict([[opt.N * f, opt.D / f]])[0] > opt.loss


def test_isoflop_recovers_exponents():
    X, y = synthetic("isoflop")
    law = IsoFlopLaw(bootstrap=100).fit(X, y)
    a_true = TRUE["beta"] / (TRUE["alpha"] + TRUE["beta"])
    assert abs(law.params_["a"] - a_true) < 0.02
    assert abs(law.params_["b"] - (1 - a_true)) < 0.02
    assert len([b for b in law.budgets_ if b["used"]]) == 4
    lo, hi = law.ci_["a"]
    assert lo < law.params_["a"] < hi
    assert abs(law.envelope_["a"] - a_true) < 0.1  # the best of 7 sizes per budget: coarse


def test_power_law_recovers_and_pure_form():
    X, y = synthetic("power")
    law = PowerLaw(x="N", bootstrap=0).fit(X, y)
    assert abs(law.params_["alpha"] - 0.3) < 0.02 and abs(law.params_["E"] - 1.7) < 0.05
    x = np.logspace(6, 9, 8)
    pure = PowerLaw(irreducible=False, bootstrap=0).fit(x, 5.0 * x ** -0.07)
    assert pure.params_["E"] == 0 and np.isclose(pure.params_["alpha"], 0.07, atol=1e-6)
    assert np.isclose(pure.params_["A"], 5.0, rtol=1e-5)


def test_datacon_recovers_repetition_constants():
    X, y = synthetic("datacon")
    law = DataConstrainedLaw(bootstrap=0).fit(X, y)
    assert abs(np.log(law.params_["R_D_star"] / 15.0)) < 0.25
    assert abs(np.log(law.params_["R_N_star"] / 5.0)) < 0.5
    # With unlimited data the law is Chinchilla's and its optimum moves with U.
    free = law.compute_optimal(1e21)
    tight = law.compute_optimal(1e21, U=free.D / 50)
    assert tight.N > free.N and tight.loss > free.loss


def test_batched_lbfgs_matches_scipy_per_start():
    """The batched optimiser and scipy's L-BFGS-B, started at the same points, end at the same
    objective (to 1e-9 relative) on a Chinchilla problem."""
    X, y = synthetic("chinchilla", seed=5)
    obj = LogHuberObjective(np.log(X), np.log(y))
    starts = hoffmann_grid()[::450]
    res = lbfgs_batch(obj, starts, gtol=1e-10, ftol=1e-14)
    best_batch = res.fun.min()
    scipy_best = min(minimize(lambda t: obj.single(t)[0] * 1e3, s, jac=lambda t: obj.single(t)[1] * 1e3,
                              method="L-BFGS-B", options={"ftol": 1e-15, "gtol": 1e-12, "maxiter": 20000}).fun / 1e3
                     for s in starts)
    assert best_batch <= scipy_best * (1 + 1e-9)


def test_objective_gradient_is_exact():
    X, y = synthetic("chinchilla")
    obj = LogHuberObjective(np.log(X), np.log(y))
    rng = np.random.default_rng(0)
    for theta in rng.uniform([4, 4, 0, 0.2, 0.2], [8, 8, 1, 0.5, 0.5], size=(5, 5)):
        f, g = obj.single(theta)
        num = [(obj.single(theta + h)[0] - obj.single(theta - h)[0]) / 2e-7 for h in np.eye(5) * 1e-7]
        assert np.allclose(g, num, rtol=1e-4, atol=1e-9)


def test_inference_aware_optimum():
    law = true_law()
    C = 1e23
    chin = law.compute_optimal(C)
    none = inference_optimal(law, inference_tokens=0.0, compute=C)
    assert np.isclose(none.N, chin.N, rtol=1e-6) and np.isclose(none.D_train, chin.D, rtol=1e-6)
    heavy = inference_optimal(law, inference_tokens=1e13, compute=C)
    # Serving many tokens favours a smaller model trained on more data (Sardana et al. 2024).
    assert heavy.N < chin.N and heavy.D_train > chin.D and heavy.saving > 0
    assert np.isclose(law.predict([[heavy.N, heavy.D_train]])[0], chin.loss, rtol=1e-9)
    for f in (0.9, 1.1):  # a local minimum of total FLOPs along the iso-loss curve
        alt = inference_optimal(law, inference_tokens=1e13, target_loss=chin.loss)
        N2 = alt.N * f
        D2 = (TRUE["B"] / (chin.loss - TRUE["E"] - TRUE["A"] * N2 ** -TRUE["alpha"])) ** (1 / TRUE["beta"])
        assert 6 * N2 * D2 + 2 * N2 * 1e13 > alt.total_flops
    with pytest.raises(InputError, match="irreducible"):
        inference_optimal(law, inference_tokens=1e12, target_loss=1.5)

