"""Text summaries of fits, predictions and allocations for the command line (rich tables)."""
from __future__ import annotations

import math
from typing import Any

import numpy as np
from rich.table import Table

from scalelab.laws.base import Law


def fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    if isinstance(v, (int,)) and not isinstance(v, bool):
        return f"{v:,}"
    v = float(v)
    return f"{v:.4g}" if 1e-3 <= abs(v) < 1e5 or v == 0 else f"{v:.4e}"


def params_table(law: Law) -> Table:
    t = Table(show_edge=False)  # the caller prints law.title above: a title would wrap to the table's width
    t.add_column("parameter")
    t.add_column("value", justify="right")
    t.add_column("95% interval", justify="right")
    for k in law.param_names:
        lo_hi = (law.ci_ or {}).get(k)
        ci = f"[{fmt(lo_hi[0])}, {fmt(lo_hi[1])}]" if lo_hi else "-"
        if k == "E" and getattr(law, "E_fixed", None) is not None:
            ci = "fixed (--floor)"
        t.add_row(k, fmt(law.params_[k]), ci)
    opt = law.optimal_exponents()
    opt_ci = getattr(law, "optimal_ci_", {}) or {}
    if opt and law.name != "isoflop":
        for k, v in opt.items():
            lo_hi = opt_ci.get(k)
            label = "N*(C) ∝ C^a" if k == "a" else "D*(C) ∝ C^b"
            t.add_row(f"{k}  ({label})", fmt(v), f"[{fmt(lo_hi[0])}, {fmt(lo_hi[1])}]" if lo_hi else "-")
    return t


def fit_facts(law: Law) -> list[tuple[str, str]]:
    res = law.result_
    rows = [("form", {"tied": "tied: alpha = beta (Gadre et al. 2024)", "fixed-e": "fixed-e: E held at --floor"}
              .get(getattr(law, "form", "free"), "free"))] if hasattr(law, "form") else []
    if getattr(law, "method", None):
        rows.append(("method", "vpnls: variable projection, then the Huber polish" if law.method == "vpnls"
                     else "lbfgs: multi-start L-BFGS"))
    rows += [("n_points", fmt(law.n_points_)),
            ("objective", f"{res.fun:.10g}" if np.isfinite(getattr(res, "fun", np.nan)) else "-"),
            ("converged", "yes" if law.converged_ else "NO")]
    noise = getattr(law, "noise_", None)
    if noise and np.isfinite(noise.get("sigma_log", np.nan)):
        weighted = ", weighted as the fit" if "weighted" in noise.get("what", "") else ""
        rows.append(("scatter", f"{100 * noise['sigma_log']:.3g}% (sd of log residuals{weighted}, {noise['dof']} dof: "
                                "the noise in 95% prediction intervals for new runs)"))
    fw = getattr(law, "frontier_weight", 0)
    if fw:
        rows.append(("weights", f"runs weighted by (C/C_max)^{fw:g} (frontier weights)"))
    ident = law.identification() if hasattr(law, "identification") else None
    if ident is not None:
        rows.append(("identified", identification_line(ident)))
    starts = getattr(res, "n_starts", None)
    if starts:
        rows.append(("starts", f"{starts:,} ({res.n_starts_converged:,} met a stopping test)"))
    boot = getattr(law, "bootstrap", 0)
    if boot:
        failed = getattr(law, "bootstrap_failed_", 0)
        rows.append(("bootstrap", f"{boot:,} resamples" + (f", {failed} failed and left out" if failed else "")))
    timing = getattr(law, "timing_", {}) or {}
    if timing:
        rows.append(("time", ", ".join(f"{k.removesuffix('_s')} {v:.2f} s" for k, v in timing.items())))
    rows.append(("optimiser", str(getattr(res, "message", ""))))
    if getattr(res, "check", None):
        rows.append(("check", str(res.check).replace("scipy L-BFGS-B from here: ", "scipy L-BFGS-B from the optimum: ")))
    return rows


def identification_line(ident: dict[str, Any]) -> str:
    """'no: alpha 5.9x, beta 9.2x, A 2.5e5x, B 3.3e12x (hi/lo of the 95% intervals; bars 2.5x, ...)'."""
    parts = ", ".join(f"{k} {v:.3g}x" if np.isfinite(v) else f"{k} unbounded" for k, v in ident["hi_lo"].items())
    bars = ", ".join(f"{v:g}x" for v in ident["bars"].values())
    return f"{'yes' if ident['identified'] else 'no'}: {parts} (hi/lo of the 95% intervals; bars {bars})"


def budgets_table(law: Law) -> Table | None:
    budgets = getattr(law, "budgets_", None)
    if not budgets:
        return None
    t = Table(title="budgets (approach 2 parabolas)", title_justify="left", show_edge=False)
    for col in ("C", "runs", "N_opt", "D_opt", "loss at min", "note"):
        t.add_column(col, justify="right" if col != "note" else "left")
    for b in budgets:
        note = "" if b.get("used") else "skipped: <3 sizes or no minimum"
        if not b.get("used") and b.get("spread_dex", 0) > 0.3:
            note = f"skipped: C spans {b['spread_dex']:.2f} dex, not one budget"
        if b.get("used") and not b.get("inside"):
            note = "minimum outside the sampled sizes"
        t.add_row(fmt(b["C"]), str(b["n_points"]), fmt(b.get("N_opt")), fmt(b.get("D_opt")),
                  fmt(b.get("loss_min")), note)
    return t


def allocation_rows(alloc: dict[str, Any]) -> list[tuple[str, str]]:
    rows = [("compute C", fmt(alloc["compute"])), ("N* (parameters)", fmt(alloc["N"])),
            ("D* (tokens)", fmt(alloc["D"])), ("tokens per parameter", fmt(alloc["tokens_per_param"]))]
    if alloc.get("loss") is not None:
        rows.append(("predicted loss", fmt(alloc["loss"])))
    return rows


def inference_rows(opt: dict[str, Any]) -> list[tuple[str, str, str]]:
    cN, cD = opt["chinchilla_N"], opt["chinchilla_D"]
    return [
        ("target loss", fmt(opt["target_loss"]), fmt(opt["target_loss"])),
        ("parameters N", fmt(opt["N"]), fmt(cN)),
        ("training tokens D", fmt(opt["D_train"]), fmt(cD)),
        ("tokens per parameter", fmt(opt["tokens_per_param"]), fmt(cD / cN)),
        ("training FLOPs 6ND", fmt(opt["train_flops"]), fmt(6 * cN * cD)),
        ("inference FLOPs 2N·T", fmt(opt["inference_flops"]), fmt(2 * cN * opt["inference_tokens"])),
        ("total FLOPs", fmt(opt["total_flops"]), fmt(opt["chinchilla_total_flops"])),
    ]


def two_columns(rows: list[tuple[str, ...]], headers: tuple[str, ...], justify: str = "right") -> Table:
    t = Table(show_edge=False, show_header=any(headers))
    for i, h in enumerate(headers):
        t.add_column(h, justify="left" if i == 0 else justify)
    for r in rows:
        t.add_row(*r)
    return t


def backtest_table(bt: dict[str, Any]) -> Table:
    """One row per candidate: the primary split, then the rolling backtest where there is one."""
    t = Table(show_edge=False)
    for col in ("law", "held out", "fit on", "mean |err|", "max |err|", "bias", "rolling mean", "rolling max",
                "rolling bias"):
        t.add_column(col, justify="left" if col in ("law", "held out") else "right")
    pct = lambda v, sign=False: "-" if v is None else (f"{100 * v:+.2f}%" if sign else f"{100 * v:.2f}%")  # noqa: E731
    for r in bt["candidates"]:
        if r.get("mean_abs_err") is None:
            t.add_row(r["law"], "not fitted: " + str(r.get("error", "")), "", "", "", "", "", "", "")
            continue
        ro = r.get("rolling") or {}
        t.add_row(r["law"], f"{r['held_out']} ({r['n_test']} runs)", f"{r['n_train']} runs", pct(r["mean_abs_err"]),
                  pct(r["max_abs_err"]), pct(r["bias"], True),
                  pct(ro.get("mean_abs_err")) + (f" ({ro['folds']} splits)" if ro else ""),
                  pct(ro.get("max_abs_err")), pct(ro.get("bias"), True))
    return t


def batch_table(result: dict[str, Any]) -> Table:
    """`predict --table`: one row per run."""
    t = Table(show_edge=False)
    rows = result["rows"]
    inputs = list(rows[0]["inputs"]) if rows else []
    has_obs = bool(rows) and "observed" in rows[0]
    for col in ["row", *inputs, "predicted", "95% CI (mean)", "95% PI (new run)"] + (["observed", "error"] if has_obs else []):
        t.add_column(col, justify="left" if col == "row" else "right")
    span = lambda v: "-" if not v else f"[{fmt(v[0])}, {fmt(v[1])}]"  # noqa: E731
    for r in rows:
        cells = [str(r["row"]), *(fmt(r["inputs"][k]) for k in inputs), fmt(r["loss"]), span(r["ci95_mean"]),
                 span(r["pi95_new_run"])]
        if has_obs:
            cells += [fmt(r["observed"]), f"{100 * r['error']:+.2f}%" + ("" if r.get("in_pi", True) else " (outside PI)")]
        t.add_row(*cells)
    return t


def batch_summary(result: dict[str, Any]) -> str:
    s = result["summary"]
    line = (f"{s['n']} runs: mean |error| {100 * s['mean_abs_err']:.2f}%, max {100 * s['max_abs_err']:.2f}%, "
            f"bias {100 * s['bias']:+.2f}%")
    if "inside_pi95" in s:
        line += f"; {100 * s['inside_pi95']:.0f}% of observed losses inside their 95% prediction interval"
    return line
