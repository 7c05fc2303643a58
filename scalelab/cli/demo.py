"""`scalelab demo`: what a new user runs first (`make demo`). Parsing and printing only; the
pipeline is `scalelab.pipeline.demo.run_demo`, the bundled-table fit `scalelab.pipeline.bundled.fit_bundled`."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Optional

import typer

from scalelab.cli.app import app
from scalelab.records import dumps_json


@app.command("demo")
def demo_cmd(
    quick: bool = typer.Option(False, "--quick", help="a smoke test of every stage (under 3 min on 2 cores)"),
    out: Path = typer.Option(Path("demo"), "--out", help="folder for runs/, fits/, report.html and summary.json"),
    workers: Optional[int] = typer.Option(None, "--workers",
                                          help="processes for the pretraining sweep, one torch thread each "
                                               "(default: one per CPU core this process may use)"),
    bootstrap: Optional[int] = typer.Option(None, "--bootstrap",
                                            help="resamples for the 95% intervals (default: the preset's)"),
    bundled: bool = typer.Option(False, "--bundled", help="only fit the bundled sweep table (no training, seconds)"),
    as_json: bool = typer.Option(False, "--json", help="print a machine-readable summary"),
) -> None:
    """Pretrain an IsoFLOP sweep, fit the laws, sample and post-train the compute-optimal models, measure
    the exchange rates, plan a budget and write OUT/report.html, on the embedded testbed."""
    # One thread per process, set before numpy and torch start theirs: the sweep's workers run one each,
    # every in-process stage is told threads=1, and with the default two BLAS threads on 2 shared cores
    # the exchange fit took 43 s of CPU instead of 2.2 s (docs/LOG.md, 2026-12-01).
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # FINDINGS.md: busy-waiting threads cost 10-16x
    from scalelab.cli.progress import StageDisplay
    from scalelab.pipeline.bundled import fit_bundled
    from scalelab.pipeline.demo import STAGES, DemoConfig, run_demo
    from scalelab.errors import InputError
    from scalelab.pretrain.train import quiet_import_noise

    from scalelab.records import check_output_dir

    check_output_dir(out, "--out")
    from scalelab.cli.fit import MAX_BOOTSTRAP, check_count

    check_count("--bootstrap", bootstrap, 0, MAX_BOOTSTRAP)
    if workers is not None:
        from scalelab.pretrain.launch import check_workers

        check_workers(workers)
    # One process per core: the members are independent and run one thread each, so on 2 cores the
    # quick demo's pretraining takes about half the wall time (docs/LOG.md, 2026-12-03).
    from scalelab.laws.optimize import usable_cpus

    workers = workers or usable_cpus()
    if bundled and quick:
        raise InputError("--bundled fits the bundled table, --quick runs the pipeline: give one of them")
    if bundled:
        s = fit_bundled(out, bootstrap=1000 if bootstrap is None else bootstrap)
        print(dumps_json(s) if as_json else "\n".join(bundled_lines(s)))
        return
    quiet_import_noise()
    cfg = DemoConfig.preset("quick" if quick else "default")
    if bootstrap is not None:
        cfg = cfg.override([f"bootstrap={bootstrap}"])
    s = run_demo(cfg, out, workers=workers, display=StageDisplay(STAGES))
    print(dumps_json(s) if as_json else "\n".join(summary_lines(s)))
    for f in s["failures"]:
        print(f"error: {f}", file=sys.stderr)
    if s["failures"]:
        raise typer.Exit(2)


def summary_lines(s: dict[str, Any]) -> list[str]:
    """The key numbers of every stage and where the files are."""
    from scalelab.laws.exchange_tables import show
    from scalelab.laws.render import fmt

    out = [f"scalelab demo ({s['preset']}) on the embedded testbed -> {s['out']}"]
    if s["smoke_test"]:
        out.append("note: --quick is a smoke test of every stage; its models are tiny and its numbers mean nothing")
    pre, f = s["pretrain"], s["fits"]
    out.append(f"pretraining  {len(pre['runs'])} runs, {fmt(pre['flops'])} FLOPs ({pre['reused']} reused); "
               "the compute-optimal run of each budget:")
    out += [f"  {fmt(m['budget']):>10}  {m['run']:<20} N {m['N']:>7,}  D {m['D']:>10,}  loss {m['loss']:.4f}"
            + (f" (mean of {m['seeds']} seeds {m['mean_loss']:.4f})" if m.get("seeds", 1) > 1 else "")
            for m in pre["ladder"]]
    p, ci = f["chinchilla"]["params"], f["chinchilla"]["ci95"] or {}
    iv = {k: f" [{fmt(ci[k][0])}, {fmt(ci[k][1])}]" if ci.get(k) else "" for k in p}
    fw = f["chinchilla"].get("frontier_weight", 0)
    out.append(f"fits         Chinchilla, E held at the entropy floor {fmt(p['E'])}"
               + (f", runs weighted by (C/C_max)^{fw:g}" if fw else "") + ": "
               + ", ".join(f"{k} {fmt(p[k])}{iv[k]}" for k in ("A", "B", "alpha", "beta")))
    ident = f["chinchilla"].get("identification")
    if ident is not None:  # the summary's strict JSON writes an unbounded ratio as "inf"
        from scalelab.laws.render import identification_line

        hi_lo = {k: float(v) for k, v in ident["hi_lo"].items()}
        out.append(f"             identified {identification_line({**ident, 'hi_lo': hi_lo})}")
    e, ip, nb = f["chinchilla"]["exponents"], f["isoflop"]["params"], f["next_budget"]
    out.append(f"             N* ~ C^{fmt(e['a'])}, D* ~ C^{fmt(e['b'])}; IsoFLOP N_opt ~ C^{fmt(ip['a'])}, "
               f"D_opt ~ C^{fmt(ip['b'])}")
    out.append(f"             10x the largest budget (6ND = {fmt(nb['C_6ND'])}): " + (nb["error"] if "error" in nb else
               f"N = {fmt(nb['N'])}, D = {fmt(nb['D'])}, predicted loss {fmt(nb['predicted_loss'])}"))
    tt = s["testtime"]["mean_accuracy"]
    top = max(r["n"] for r in tt)
    out.append(f"test time    accuracy (mean over {len(s['config']['difficulties'])} difficulties) of greedy "
               f"decoding (cot) and at n = {top}:")
    for m in pre["ladder"]:
        acc = [(r["strategy"], r["accuracy"]) for r in tt
               if r["model"] == m["run"] and r["n"] == (1 if r["strategy"] == "cot" else top)]
        out.append(f"  {m['run']:<20} " + "  ".join(f"{k} {v:.3f}" for k, v in acc))
    ex = s["exchange"]
    if "error" in ex:
        out.append(f"exchange     not measured: {ex['error']}")
    else:
        # the headline says the true thing (exchange_tables.headlines); the fitted numbers stay in the JSON
        heads = [v.get("text") or f"{k} x{show(v['multiplier'])}" for k, v in ex["strategies"].items()
                 if v.get("text") or v.get("multiplier") is not None]
        out += [f"{'exchange' if i == 0 else '':<13}{h}" for i, h in enumerate(heads or ["no rate"])]
        r = ex["replacement"]
        out.append(f"             the smaller model's best stayed below the next one's greedy accuracy in "
                   f"{r['not_reached']} of {r['cases']} (difficulty, neighbouring pair) cases")
        out += [f"             {w['technique']:<21} worth x{fmt(w['multiplier'])} [{fmt(w['ci95'][0])}, "
                f"{fmt(w['ci95'][1])}] its parent's pretraining FLOPs, for {fmt(100 * w['posttrain_share'])}% of them"
                for w in ex["posttrain"]]
    post = s["posttrain"]
    out.append(f"post-train   {post['base']} (distillation teacher {post['teacher']}), "
               "greedy accuracy parent -> child:")
    for name, c in post["children"].items():
        if "error" in c:
            out.append(f"  {name:<9} failed: {c['error']}")
            continue
        size = (f", weights {c['weights_bytes']:,} bytes (parent {c['parent_weights_bytes']:,})"
                if "weights_bytes" in c else "")
        out.append(f"  {c['technique']:<21} {fmt(c['parent_accuracy'])} -> {fmt(c['accuracy'])}, "
                   f"{fmt(c['posttrain_flops'])} post-training FLOPs{size}")
    out += _posttrain_law_lines(s.get("posttrain_laws") or {}, fmt)
    plan = ex.get("plan", {})
    if "explain" in plan:
        out += [f"plan         {plan['explain'][0]}"] + [f"           {ln}" for ln in plan["explain"][1:]]
        out.append(f"             the same from the command line: {plan['command']}")
    elif "error" in plan:
        out.append(f"plan         not made: {plan['error']}")
    out.append("stages       " + "; ".join(f"{k} {v['wall_s']:.0f} s" for k, v in s["stages"].items())
               + f"; total {s['total_wall_s']:.0f} s wall, {s['total_cpu_s']:.0f} s CPU")
    return out + [f"wrote {s['paths']['report']}, {s['paths']['fits']}/ and {s['paths']['summary']}"]


def bundled_lines(s: dict[str, Any]) -> list[str]:
    ch, iso, nxt = s["fits"]["chinchilla"], s["fits"]["isoflop"], s["next_budget"]
    p, ci = ch["params"], ch["ci95"] or {}
    out = [f"bundled sweep: {ch['n_points']} runs on the embedded testbed ({s['table']})",
           "Chinchilla fit L(N, D) = E + A/N^alpha + B/D^beta, 95% bootstrap intervals:"]
    for k in ("E", "A", "B", "alpha", "beta"):
        lo, hi = ci.get(k, (float("nan"), float("nan")))
        what = "held at the testbed's entropy floor" if k == "E" and s["entropy_floor"] else f"[{lo:.4g}, {hi:.4g}]"
        out.append(f"  {k:<6}{p[k]:>10.4g}   {what}")
    out.append(f"IsoFLOP fit: N_opt ~ C^{iso['params']['a']:.3f}, D_opt ~ C^{iso['params']['b']:.3f}")
    out.append(f"with 10x the largest budget (C = 6ND = {nxt['C']:.3g} FLOPs): train N = {nxt['N']:.3g} parameters on "
               f"D = {nxt['D']:.3g} tokens ({nxt['tokens_per_param']:.0f} tokens/parameter); predicted loss "
               f"{nxt['predicted_loss']:.4f} nats/token")
    return out + [f"wrote {s['fits'][n]['json']} and {s['fits'][n]['figure']}" for n in ("chinchilla", "isoflop")]


def _posttrain_law_lines(laws: dict[str, Any], fmt: Any) -> list[str]:
    """One line per post-training law fitted on a child's curve: asymptote, efficiency, the check."""
    out = []
    for name, v in laws.items():
        if "law" not in v:
            continue
        ext = v.get("extrapolation") or {}
        check = (f"last point predicted {fmt(ext['predicted'])}, measured {fmt(ext['actual'])}" if ext
                 else "too few points to check")
        out.append(f"  law of {name:<8} {v['law']}: accuracy {fmt(v['R0'])} -> asymptote {fmt(v['asymptote'])}, "
                   f"efficiency {fmt(v['efficiency'])} along its run; {check}")
    return out
