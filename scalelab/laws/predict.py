"""Point predictions and allocations from a fitted law, as plain dicts (the CLI's `predict` and
`optimal` print these; `--json` prints them as they are). Each carries the 95% interval of the
mean (`ci95_mean`), the 95% prediction interval for one new run (`pi95_new_run`) and `warnings`
for inputs far outside the fitted range."""
from __future__ import annotations

import contextlib
import math
from typing import Any, Iterator

import numpy as np

from scalelab.errors import InputError
from scalelab.laws.base import Law


def _positive(name: str, v: float | None) -> float:
    if v is None:
        raise InputError(f"{name} is required")
    if not (math.isfinite(v) and v > 0):
        raise InputError(f"{name} must be a finite number > 0, got {v}")
    return float(v)


@contextlib.contextmanager
def _no_value(law: Law) -> Iterator[None]:
    """Parameters read from a FIT.json that no fit would give (a zero exponent, a negative
    coefficient) make the arithmetic fail: that is the file's fault, said in one line."""
    try:
        yield
    except (ZeroDivisionError, OverflowError, TypeError) as e:  # TypeError: complex results of negative bases
        params = ", ".join(f"{k} = {v:.4g}" for k, v in law.params_.items())
        raise InputError(f"the {law.name} fit ({params}) gives no value here ({e}); refit it") from None


def predict_point(law: Law, *, N: float | None, D: float | None, U: float | None = None) -> dict[str, Any]:
    """The loss at (N, D[, U]) with its 95% CI of the mean and prediction interval for a new run
    (`intervals.predict_intervals`), and warnings for inputs far outside the fitted range."""
    from scalelab.laws.intervals import far_outside, predict_intervals

    name = law.name
    if U is not None and name != "datacon":
        raise InputError(f"--unique-tokens applies to a datacon fit only; this is a '{name}' fit, which has no "
                         "notion of repeated data")
    if name == "power":
        x = law.x
        if x == "N":
            inputs = {"N": _positive("--params", N)}
        elif x == "D":
            inputs = {"D": _positive("--tokens", D)}
        elif x == "C":
            inputs = {"C": 6.0 * _positive("--params", N) * _positive("--tokens", D)}
        else:
            raise InputError(f"this power law is in {x!r}; predict takes --params (N) and --tokens (D) only")
        X = [[list(inputs.values())[0]]]
    elif name == "datacon":
        N, D = _positive("--params", N), _positive("--tokens", D)
        U = D if U is None else _positive("--unique-tokens", U)
        inputs = {"N": N, "D": D, "U": U}
        X = [[N, D, U]]
    else:
        inputs = {"N": _positive("--params", N), "D": _positive("--tokens", D)}
        X = [[inputs["N"], inputs["D"]]]
    with np.errstate(all="ignore"), _no_value(law):
        iv = predict_intervals(law, X)
    checked = dict(inputs)
    if "N" in inputs and "D" in inputs:
        checked["C"] = 6.0 * inputs["N"] * inputs["D"]
    out: dict[str, Any] = {"law": name, "inputs": inputs, "loss": float(iv["loss"][0])}
    out["ci95_mean"] = None if iv["ci"] is None else [float(v) for v in iv["ci"][0]]
    out["pi95_new_run"] = None if iv["pi"] is None else [float(v) for v in iv["pi"][0]]
    out["pi_kind"] = iv["pi_kind"]
    out["warnings"] = far_outside(law, checked)
    return out


def optimal_point(law: Law, *, compute: float, inference_tokens: float | None = None,
                  U: float | None = None) -> dict[str, Any]:
    compute = _positive("--compute", compute)
    out: dict[str, Any] = {"law": law.name, "compute": compute}
    if inference_tokens is not None:
        from scalelab.laws.inference import inference_optimal

        if not (math.isfinite(inference_tokens) and inference_tokens >= 0):
            raise InputError("--inference-tokens must be a finite number >= 0")
        opt = inference_optimal(law, inference_tokens=inference_tokens, compute=compute)
        out["inference"] = {k: (float(v) if isinstance(v, (float, np.floating)) else v) for k, v in opt.as_dict().items()}
        return out
    kw = {"U": _positive("--unique-tokens", U)} if (law.name == "datacon" and U is not None) else {}
    if U is not None and law.name != "datacon":
        raise InputError("--unique-tokens applies to a datacon fit only")
    with _no_value(law):
        alloc = law.compute_optimal(compute, **kw)
        out["allocation"] = {k: float(v) if isinstance(v, (float, np.floating, complex)) else v
                             for k, v in alloc.as_dict().items()}
    from scalelab.laws.intervals import far_outside, predict_intervals

    out["warnings"] = far_outside(law, {"C": compute, "N": alloc.N, "D": alloc.D})
    if getattr(law, "frontier_weight", 0):
        out["warnings"].append(f"this fit weights runs by (C/C_max)^{law.frontier_weight:g} (as --law auto does): its "
                               "exponents describe the largest runs and pin the allocation loosely; for N* and D* "
                               "refit with --frontier-weight 0")
    if alloc.loss is not None and "predict" in law.verbs and law.name == "chinchilla":
        with np.errstate(all="ignore"):
            iv = predict_intervals(law, [[alloc.N, alloc.D]])
        out["ci95_mean"] = None if iv["ci"] is None else [float(v) for v in iv["ci"][0]]
        out["pi95_new_run"] = None if iv["pi"] is None else [float(v) for v in iv["pi"][0]]
        out["pi_kind"] = iv["pi_kind"]
    if law.optimal_exponents():
        out["exponents"] = law.optimal_exponents()
    return out
