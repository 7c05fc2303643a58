"""Scaling-law fitters as scikit-learn-style estimators, and the registry the command line uses.

    from scalelab.laws import ChinchillaLaw, fit_table
    law = ChinchillaLaw().fit(np.column_stack([N, D]), loss)     # arrays
    law, prepared = fit_table("runs.csv", "chinchilla")            # a CSV or a runs directory

Adding a law is one class (see `base.Law`) and one entry in `REGISTRY`; `scalelab fit --law NAME`,
FIT.json, `predict`/`optimal` and the figures pick it up from there. Classes are imported on
first use, so `import scalelab.laws` (and the command line's start-up) stays cheap.
"""
from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Callable

# name -> "module:Class". The one place a law is registered.
REGISTRY: dict[str, str] = {
    "power": "scalelab.laws.power:PowerLaw",
    "chinchilla": "scalelab.laws.chinchilla:ChinchillaLaw",
    "isoflop": "scalelab.laws.isoflop:IsoFlopLaw",
    "datacon": "scalelab.laws.datacon:DataConstrainedLaw",
    "coverage": "scalelab.laws.coverage:CoverageLaw",
    "testtime": "scalelab.laws.sampling:TesttimeLaw",
    "scalerl": "scalelab.laws.posttrain:ScaleRLLaw",
    "posttrain-power": "scalelab.laws.posttrain:PosttrainPowerLaw",
}


class _Laws(Mapping):
    """Read-only name -> class mapping over REGISTRY that imports a class when first asked."""

    def __getitem__(self, name: str):
        if name not in REGISTRY:
            raise KeyError(name)
        module, cls = REGISTRY[name].split(":")
        return getattr(importlib.import_module(module), cls)

    def __iter__(self) -> Iterator[str]:
        return iter(REGISTRY)

    def __len__(self) -> int:
        return len(REGISTRY)


LAWS = _Laws()

_EXPORTS = {
    "Law": "scalelab.laws.base", "Allocation": "scalelab.laws.base", "NotFittedError": "scalelab.laws.base",
    "PowerLaw": "scalelab.laws.power", "ChinchillaLaw": "scalelab.laws.chinchilla",
    "IsoFlopLaw": "scalelab.laws.isoflop", "DataConstrainedLaw": "scalelab.laws.datacon",
    "inference_optimal": "scalelab.laws.inference", "InferenceOptimum": "scalelab.laws.inference",
    "prepare": "scalelab.laws.table", "parse_col_map": "scalelab.laws.table", "Prepared": "scalelab.laws.table",
    "write_fit": "scalelab.laws.fitfile", "load_law": "scalelab.laws.fitfile", "plot_fit": "scalelab.laws.plot",
    "backtest": "scalelab.laws.backtest", "runs_frame": "scalelab.laws.backtest", "fit_auto": "scalelab.laws.select",
    "predict_intervals": "scalelab.laws.intervals", "predict_table": "scalelab.laws.batch",
    "TwoStepLaw": "scalelab.laws.downstream", "AccuracySigmoid": "scalelab.laws.downstream",
    "next_runs": "scalelab.laws.nextrun",
    "ScaleRLLaw": "scalelab.laws.posttrain", "PosttrainPowerLaw": "scalelab.laws.posttrain",
    "fit_posttrain_law": "scalelab.laws.posttrain_fit",
}


def __getattr__(name: str) -> Any:  # PEP 562: lazy exports
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'scalelab.laws' has no attribute {name!r}")


def make_law(name: str, **hyper: Any):
    """A law by registry name, with only the hyper-parameters it accepts (None means default)."""
    from scalelab.errors import InputError

    if name not in REGISTRY:
        raise InputError(f"unknown law {name!r}; choose one of: {', '.join(REGISTRY)}")
    cls = LAWS[name]
    accepted = cls._hyper_names()
    return cls(**{k: v for k, v in hyper.items() if k in accepted and v is not None})


def fit_table(table: str | Path, law: Any, *, col_map: dict[str, str] | None = None, x: str | None = None,
              progress: Callable[[int, int], None] | None = None, **hyper: Any):
    """Read a CSV or runs directory, check it, and fit `law` (a registry name or an unfitted
    estimator). Returns (fitted law, `table.Prepared` with X, y and the notices)."""
    from scalelab.laws.table import prepare
    from scalelab.laws.tables_io import load_runs_table

    est = make_law(law, x=x, **hyper) if isinstance(law, str) else law
    loaded = load_runs_table(table)
    own = getattr(est, "prepare_table", None)  # test-time laws select one curve of their own columns
    frame, kept = loaded.frame, []
    if own is None and "phase" in frame.columns and (frame["phase"] == "pretrain").any():
        # A runs dir of a whole pipeline (scalelab demo) also holds post-training and test-time
        # records; a pretraining law reads the pretraining runs only, and says so.
        other = frame["phase"] != "pretrain"
        if other.any():
            kept = [f"read the {int((~other).sum())} pretraining runs; left out {int(other.sum())} post-training "
                    "and test-time records"]
            frame = frame[~other]
    prepared = own(frame, col_map=col_map) if own else prepare(frame, est, col_map=col_map, x=getattr(est, "x", x))
    # Runs the loader could not use (failed, corrupt) are reported, never dropped silently.
    prepared.notices[:0] = [f"run left out: {p}" for p in loaded.problems] + kept
    est.fit(prepared.X, prepared.y, progress=progress)
    return est, prepared


__all__ = ["LAWS", "REGISTRY", "fit_table", "make_law", *_EXPORTS]
