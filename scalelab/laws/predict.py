"""Point predictions and allocations from a fitted law, as plain dicts (the CLI's `predict` and
`optimal` print these; `--json` prints them as they are)."""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from scalelab.errors import InputError
from scalelab.laws.base import Law


def _positive(name: str, v: float | None) -> float:
    if v is None:
        raise InputError(f"{name} is required")
    if not (math.isfinite(v) and v > 0):
        raise InputError(f"{name} must be a finite number > 0, got {v}")
    return float(v)


def predict_point(law: Law, *, N: float | None, D: float | None, U: float | None = None) -> dict[str, Any]:
    name = law.name
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
        loss = float(law.predict([list(inputs.values())[0]])[0])
    elif name == "datacon":
        N, D = _positive("--params", N), _positive("--tokens", D)
        U = D if U is None else _positive("--unique-tokens", U)
        inputs = {"N": N, "D": D, "U": U}
        loss = float(law.predict([[N, D, U]])[0])
    else:
        inputs = {"N": _positive("--params", N), "D": _positive("--tokens", D)}
        loss = float(law.predict([[inputs["N"], inputs["D"]]])[0])
    return {"law": name, "inputs": inputs, "loss": loss}


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
    alloc = law.compute_optimal(compute, **kw)
    out["allocation"] = alloc.as_dict()
    if law.optimal_exponents():
        out["exponents"] = law.optimal_exponents()
    return out
