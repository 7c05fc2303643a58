"""The HTML report of a runs directory: one self-contained file, figures embedded, no network.

    build_report("runs/sweep", "report.html")          # or: scalelab report runs/sweep --out report.html

It searches RUNSDIR recursively for run records (`ledger.load_runs`) and writes one section per
phase that has the records it needs:

- pretraining (complete `pretrain` records with a final loss): the Chinchilla fit with 95%
  bootstrap intervals (E held at the entropy floor when every record states the same one, the
  free fit beside it), the IsoFLOP fit with its budgets, and the learning curves with their frontier;
- post-training (`posttrain` records with an accuracy): accuracy against post-training FLOPs and a
  table of the child runs;
- test-time (`testtime` records with an accuracy per difficulty): accuracy against FLOPs per
  question and a table per strategy and n;
- exchange rates (test-time records of 2+ pretrained models, `scalelab.laws.exchange`): test-time
  FLOPs worth 10x pretraining with intervals, where test time cannot replace pretraining, what
  post-training is worth in pretraining FLOPs, the iso-accuracy figure; and the planner's answer
  (`scalelab.pipeline.plan`) to a default question, when a Chinchilla fit of pretraining records allows one.

Every number on the page is read from a record or a fit made here; a section that is missing says
which command makes its records. Figures are the library's own (`laws.plot_fit`, `pretrain.curves`,
`posttrain.plots`, `testtime.plots`, `laws.exchange_plot`), inlined as base64 PNG data URIs.
"""
from __future__ import annotations

import base64
import json
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable

from scalelab import __version__
from scalelab.errors import InputError
from scalelab.pipeline.htmlparts import esc as _e, fmt, note as _note, table as _table
from scalelab.pipeline.report_laws import (FRONTIER_WEIGHT, backtest_section, entropy_floor, posttrain_laws_section,
                                           posttrain_section)
from scalelab.records import RunRecord, atomic_write_text
from scalelab.tables import load_runs, records_to_frame

# What makes each section's records when a runs dir lacks them (shown on the page).
MAKE = {
    "pretraining": "scalelab sweep --preset quick --runs-dir DIR",
    "post-training": "scalelab posttrain sft --from DIR/RUN --runs-dir DIR",  # or distill, prune, quantize, synth
    "test-time": "scalelab testtime --model DIR/RUN --strategies cot,majority --runs-dir DIR",
    "exchange": "scalelab testtime --model DIR/RUN --strategies cot,majority --n 1,2,4,8,16 --runs-dir DIR, "
                "on 2+ pretrained models",
}

CSS = """
body{font:15px/1.5 system-ui,-apple-system,"Segoe UI",sans-serif;color:#1d1d1f;background:#fafafa;margin:0}
main{max-width:1100px;margin:0 auto;padding:1.2rem 1.5rem 3rem;background:#fff;box-sizing:border-box}
h1{font-size:1.6rem;margin:.2rem 0 .4rem}h2{border-bottom:2px solid #ddd;padding-bottom:.2rem;margin-top:2.2rem}
h3{margin:1.4rem 0 .4rem}code,pre{font:13px/1.4 ui-monospace,SFMono-Regular,Menlo,monospace;background:#f3f3f3}
code{padding:0 .25em;border-radius:3px;overflow-wrap:anywhere}pre{padding:.6rem;overflow-x:auto;border-radius:4px}
img{max-width:100%;height:auto;display:block;margin:.6rem 0;border:1px solid #eee}
.scroll{overflow-x:auto;max-width:100%;margin:.5rem 0}table{border-collapse:collapse;font-size:13px}
th,td{padding:.25rem .6rem;border-bottom:1px solid #e4e4e4;text-align:right;vertical-align:top}
td{white-space:nowrap}td.w{white-space:normal;overflow-wrap:anywhere;min-width:7em}thead th{background:#f5f5f5}
th:first-child,td:first-child{text-align:left}
h1,p,li{overflow-wrap:anywhere}.note{color:#555;font-size:13px}.warn{color:#a33}.found{color:#176b2c}.missing{color:#a33}
"""


# ---- small HTML helpers (the primitives are in htmlparts, shared with report_laws) ---------------
def _ci(law: Any, k: str) -> str:
    lo_hi = (getattr(law, "ci_", None) or {}).get(k)
    return f"[{fmt(lo_hi[0])}, {fmt(lo_hi[1])}]" if lo_hi else "-"


class _Figures:
    """Renders figures with the library's plotters into a temporary folder and inlines them."""

    def __init__(self, tmp: Path):
        self.tmp, self.count = tmp, 0

    def img(self, draw: Callable[[Path], Any], alt: str) -> str:
        self.count += 1
        path = self.tmp / f"fig{self.count}.png"
        draw(path)
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        return f'<img alt="{_e(alt)}" src="data:image/png;base64,{data}">'

    def img_or_note(self, draw: Callable[[Path], Any], alt: str) -> str:
        """The figure, or a note with the plotter's one-line reason when the records cannot make it."""
        try:
            return self.img(draw, alt)
        except InputError as e:
            return _note(f"Figure not drawn: {e}", "warn")


def _saved_fit(fits_dir: Path | None, name: str, **expect: Any) -> Any:
    """The law a pipeline already fitted to these runs (FITS_DIR/NAME.json), or None when there is
    none or it was fitted with other settings or to another number of runs: the report then fits."""
    from scalelab.laws.fitfile import load_law, read_fit

    path = fits_dir / f"{name}.json" if fits_dir is not None else None
    if path is None or not path.is_file():
        return None
    try:
        doc = read_fit(path)
    except InputError:
        return None
    settings = doc.get("settings") or {}
    if any(settings.get(k, doc.get(k)) != v for k, v in expect.items()):
        return None
    return load_law(path)


# ---- sections --------------------------------------------------------------------------------
def _identified(law: Any) -> tuple[str, str]:
    """('no', 'alpha 5.4x, beta 10x, A 3.8e5x, B 2.4e12x (bars 2.5x, 2.5x, 100x, 100x)') or ('-', '')."""
    from scalelab.laws.render import identification_line

    ident = law.identification()
    if ident is None:
        return "-", ""
    return ("yes" if ident["identified"] else "no"), identification_line(ident).split(": ", 1)[1]


def _chinchilla(recs: list[RunRecord], figs: _Figures, *, bootstrap: int, n_jobs: int | None,
                fits_dir: Path | None = None) -> str:
    from scalelab.laws import make_law, plot_fit
    from scalelab.laws.predict import optimal_point, predict_point
    from scalelab.laws.table import prepare

    frame = records_to_frame(recs)
    floor = entropy_floor(recs)
    fits: list[tuple[str, Any, Any]] = []  # (column title, law, prepared)
    errors: list[str] = []
    read_from: list[str] = []
    fitted_here: list[str] = []
    for title, hyper in ((f"E held at the entropy floor ({fmt(floor)})", {"E_fixed": floor}),
                         ("E fitted freely", {})):
        if title.startswith("E held") and floor is None:
            continue
        try:
            est = make_law("chinchilla", bootstrap=bootstrap, n_jobs=n_jobs, frontier_weight=FRONTIER_WEIGHT, **hyper)
            prep = prepare(frame, est)
            saved = _saved_fit(fits_dir, "chinchilla", E_fixed=hyper.get("E_fixed"), n_points=len(prep.y),
                               frontier_weight=FRONTIER_WEIGHT)
            if saved is not None:
                fits.append((title, saved, prep))
                read_from.append(f"{title}: read from {fits_dir / 'chinchilla.json'}")
            else:
                fits.append((title, est.fit(prep.X, prep.y), prep))
                fitted_here.append(title)
        except InputError as e:
            errors.append(_note(f"Chinchilla fit ({title}) not made: {e}", "warn"))
    title = "<h3>Chinchilla: L(N, D) = E + A/N^alpha + B/D^beta</h3>"
    if not fits:
        return title + "".join(errors)
    law0, prep0 = fits[0][1], fits[0][2]
    head = ["parameter"] + [h for t, _, _ in fits for h in (t, "95% interval")]
    rows = []
    for k in law0.param_names:
        row: list[Any] = [k]
        for _, law, _ in fits:
            fixed = k == "E" and law.E_fixed is not None
            row += [fmt(law.params_[k]), "fixed" if fixed else _ci(law, k)]
        rows.append(row)
    for k, label in (("a", "a  (N* ∝ C^a)"), ("b", "b  (D* ∝ C^b)")):
        row = [label]
        for _, law, _ in fits:
            lo_hi = (getattr(law, "optimal_ci_", None) or {}).get(k)
            row += [fmt(law.optimal_exponents()[k]), f"[{fmt(lo_hi[0])}, {fmt(lo_hi[1])}]" if lo_hi else "-"]
        rows.append(row)
    rows.append(["optimiser converged"] + [v for _, law, _ in fits for v in (str(bool(law.converged_)), "")])
    rows.append(["runs fitted"] + [v for _, _, p in fits for v in (str(len(p.y)), "")])
    rows.append(["identified"] + [v for _, law, _ in fits for v in _identified(law)])
    origin = "; ".join(read_from + ([f"fitted here ({bootstrap} bootstrap resamples for the 95% intervals): "
                                     + ", ".join(fitted_here)] if fitted_here else []))
    out = [title, *errors,
           _note(f"{origin}. N is non-embedding parameters, D training tokens, loss the final held-out loss in "
                 f"nats per token. Each run is weighted by (C/C_max)^{FRONTIER_WEIGHT:g}, as `scalelab fit --law auto` "
                 "weights them: the fit is read at 10x the largest budget below."),
           _table(head, rows)]
    notices = [n for _, _, p in fits for n in p.notices]
    out += [_note(n) for n in dict.fromkeys(notices)]
    c_next = 10 * float(frame["C"].max())
    bad = [f"{k} = {fmt(law0.params_[k])}" for k in ("alpha", "beta") if not law0.params_[k] > 0]
    if bad:  # loss does not fall with both N and D: no allocation to state
        out.append(_note(f"This fit ({fits[0][0]}) has {' and '.join(bad)}, so it has no compute-optimal allocation "
                         "to extrapolate to 10x the largest budget.", "warn"))
    else:
        opt = optimal_point(law0, compute=c_next)["allocation"]
        pred = predict_point(law0, N=opt["N"], D=opt["D"])
        out.append(_note(f"With 10x the largest budget (C = 6ND = {fmt(c_next)} FLOPs) this fit ({fits[0][0]}) "
                         f"trains N = {fmt(opt['N'])} parameters on D = {fmt(opt['D'])} tokens "
                         f"({fmt(opt['tokens_per_param'])} tokens per parameter) to a predicted loss of "
                         f"{fmt(pred['loss'])}{_intervals(pred)}."))
    out.append(figs.img(lambda p: plot_fit(law0, prep0.X, prep0.y, p), "Chinchilla fit"))
    return "\n".join(out)


def _intervals(pred: dict[str, Any]) -> str:
    """The two intervals a prediction carries, named: where the law's mean lies (bootstrap of the fit)
    and where one new run's loss would land (that plus the residual noise)."""
    parts = []
    if pred.get("ci95_mean"):
        parts.append(f"95% interval of the mean [{fmt(pred['ci95_mean'][0])}, {fmt(pred['ci95_mean'][1])}]")
    if pred.get("pi95_new_run"):
        parts.append(f"95% prediction interval of one new run [{fmt(pred['pi95_new_run'][0])}, "
                     f"{fmt(pred['pi95_new_run'][1])}]")
    return f" ({'; '.join(parts)})" if parts else ""


def _isoflop(recs: list[RunRecord], figs: _Figures, *, bootstrap: int) -> str:
    from scalelab.laws import make_law, plot_fit
    from scalelab.laws.table import prepare

    try:
        est = make_law("isoflop", bootstrap=bootstrap)
        prep = prepare(records_to_frame(recs), est)
        est.fit(prep.X, prep.y)
    except InputError as e:
        return "<h3>IsoFLOP profiles</h3>" + _note(f"IsoFLOP fit not made: {e}", "warn")
    labels = {"a": "a  (N_opt ∝ C^a)", "b": "b  (D_opt ∝ C^b)", "coef_N": "coef_N", "coef_D": "coef_D"}
    rows = [[labels.get(k, k), fmt(est.params_[k]), _ci(est, k)] for k in est.param_names]
    budgets = [[fmt(b["C"]), b["n_points"], "yes" if b["used"] else "no", fmt(b.get("N_opt")), fmt(b.get("D_opt")),
                fmt(b.get("loss_min")), {True: "yes", False: "no"}.get(b.get("inside"), "-")] for b in est.budgets_]
    return "\n".join([
        "<h3>IsoFLOP profiles (Chinchilla approach 2)</h3>",
        _note(f"A parabola in log N per compute budget; its minima against C give the exponents. "
              f"{bootstrap} bootstrap resamples within each budget. {est.result_.message}."),
        _table(["parameter", "value", "95% interval"], rows),
        _table(["budget C (FLOPs)", "runs", "used", "N_opt", "D_opt", "loss at minimum", "minimum inside sizes"], budgets),
        figs.img(lambda p: plot_fit(est, prep.X, prep.y, p), "IsoFLOP fit")])


def _learning_curves(root: Path, recs: list[RunRecord], figs: _Figures) -> str:
    from scalelab.pretrain.curves import plot_curves

    out = ["<h3>Learning curves and the compute frontier</h3>"]
    holder: dict[str, Any] = {}
    try:
        img = figs.img(lambda p: holder.setdefault("front", plot_curves(root, p)[1]), "learning curves")
    except InputError as e:
        return out[0] + _note(f"Learning curves not drawn: {e}", "warn")
    out += [_note("Left: every run's training loss (running mean) and held-out evaluations against exact training "
                  "FLOPs; the dashed line is a power law through the best final loss per budget (stars)."),
            f"<pre>{_e(chr(10).join(holder['front'].lines()))}</pre>", img]
    return "\n".join(out)


def _testtime(root: Path, recs: list[RunRecord], figs: _Figures) -> str:
    from scalelab.testtime.plots import plot_accuracy_vs_flops

    out = [figs.img_or_note(lambda p: plot_accuracy_vs_flops(root, p), "test-time accuracy against FLOPs")]

    def key(r: RunRecord):
        return (r.flops.get("pretrain") or 0.0, r.parent_id or "", int(r.metrics.get("steps", 0)), r.technique,
                r.metrics.get("n") or 0, r.run_id)

    rows = [[r.parent_id or "-", r.technique, r.metrics.get("steps", "-"), r.metrics.get("n", "-"),
             fmt(r.metrics["accuracy"]), fmt(r.metrics.get("accuracy_se")), fmt(r.metrics["flops_per_question"]),
             r.metrics.get("problems", "-")]
            for r in sorted(recs, key=key)]
    out.append(_table(["model", "strategy", "difficulty (steps)", "n", "accuracy", "std. error", "FLOPs per question",
                       "problems"], rows))
    return "\n".join(out)


def _exchange(root: Path, figs: _Figures, *, bootstrap: int,
              fits_dir: Path | None = None) -> tuple[str, dict[str, Any] | None]:
    """Exchange rates (scalelab.laws.exchange): the table, where test time cannot replace
    pretraining, what post-training is worth, the iso-accuracy figure. (html, document or None)."""
    from scalelab.laws.exchange_plot import plot_frontier
    from scalelab.laws.exchange_tables import GREEDY, measure_exchange, show, testtime_table

    saved = fits_dir / "exchange.json" if fits_dir is not None else None
    if saved is not None and saved.is_file():
        doc, origin = json.loads(saved.read_text()), f"Read from {saved}. "
    else:
        try:
            doc = measure_exchange(root, bootstrap=bootstrap)
        except InputError:
            return "", None
        origin = f"Measured here, {bootstrap} bootstrap resamples of the problems. "
    rows = []
    for s, e in doc["strategies"].items():
        if s == GREEDY:
            continue
        for d, f in [("all", e["pooled"])] + list(e["by_difficulty"].items()):
            if "error" in f:
                rows.append([s, d, "-", f"not fitted: {f['error']}", "-", "-", "-"])
                continue
            ci = f["ci95"].get("multiplier", [None, None])
            rows.append([s + (" (oracle)" if e["oracle"] else ""), d, show(f["params"]["multiplier"]),
                         f"[{show(ci[0])}, {show(ci[1])}]", fmt(f["params"]["b"]), fmt(f["params"]["c"]),
                         {True: "yes", False: "no", None: "-"}[f.get("replaces")]])
    out = [_note(origin + f"{len(doc['ladder'])} pretrained models with test-time records, pretraining FLOPs "
                 + ", ".join(fmt(m["C_train"]) for m in doc["ladder"]) + ". Per strategy: logit((acc - chance)/"
                 "(1 - chance)) = a_d + b·log10 C_train + c·log10 C_test (Jones 2021's straight iso-accuracy lines); "
                 "10x pretraining FLOPs is worth 10^(b/c) x test-time FLOPs per question; 'replaces' means c > 0 in "
                 "at least 97.5% of the problem resamples."),
           _table(["strategy", "difficulty (steps)", "test-time multiplier per 10x pretraining", "95% interval",
                   "b", "c", "replaces"], rows)]
    rep = [[r["difficulty"],
            f"{r['small']} ({fmt(r['small_best_accuracy'])}, {r['small_best_strategy']} n={r['small_best_n']})",
            f"{r['large']} ({fmt(r['large_accuracy'])})",
            ("already as accurate greedily" if r["already"] else
             f"yes: x{fmt(r['test_multiplier'])} test FLOPs ({fmt(r['per_10x'])}x per 10x)" if r["replaced"] else
             "no" + (" (within 2 se)" if -r["gap"] < r["two_se"] else ""))] for r in doc["replacement"]]
    out += [_note("Can test-time compute replace pretraining? For each difficulty and each pair of neighbouring "
                  "models: the smaller model's best accuracy over every strategy and n (oracles left out) against "
                  "the larger one's greedy accuracy."),
            _table(["steps", "smaller model (best)", "larger model (greedy)", "reached"], rep)]
    post = [[r["run"], r["technique"], f"{fmt(r['parent_accuracy'])} -> {fmt(r['accuracy'])}",
             fmt(r["multiplier"]) + {"above": " (at least)", "below": " (at most)"}.get(r["where"], ""),
             f"[{fmt(r['ci95'][0])}, {fmt(r['ci95'][1])}]", f"{fmt(100 * r['posttrain_share'])}%"]
            for r in doc["posttrain"] if r["difficulty"] == "mean"]
    if post:
        out += [_note("Post-training against pretraining: the pretraining FLOPs multiplier a child's greedy accuracy "
                      "(mean over difficulties) is worth on the ladder, anchored at its parent."),
                _table(["child run", "technique", "parent -> child accuracy", "pretraining multiplier", "95% interval",
                        "cost (of the parent's pretraining)"], post)]
    out += [_note(n) for n in doc["notices"]]
    table = testtime_table(root)[0]
    out.append(figs.img_or_note(lambda p: plot_frontier(table, doc, p), "iso-accuracy frontier"))
    return "\n".join(out), doc


def _plan(recs: list[RunRecord], doc: dict[str, Any], *, n_jobs: int | None) -> str:
    """The planner's answer (scalelab.pipeline.plan) for the default question of `plan.default_config`."""
    from scalelab.laws import make_law
    from scalelab.laws.table import prepare
    from scalelab.pipeline.plan import Fits, default_config, explain, make_plan

    if not recs:
        return _note("The planner needs a Chinchilla fit of pretraining records; make them with "
                     f"`{MAKE['pretraining']}`.", "warn")
    floor = entropy_floor(recs)
    try:
        law = make_law("chinchilla", bootstrap=0, n_jobs=n_jobs, E_fixed=floor, frontier_weight=FRONTIER_WEIGHT)
        prep = prepare(records_to_frame(recs), law)
        law.fit(prep.X, prep.y)
        bad = [k for k in ("alpha", "beta") if not law.params_[k] > 0]
        if bad:
            raise InputError(f"the Chinchilla fit has {' and '.join(f'{k} = {law.params_[k]:.4g}' for k in bad)}: "
                             "no compute-optimal allocation to plan with")
        cfg = default_config(doc)
        plan = make_plan(cfg, Fits("(this report)", law, doc))
    except InputError as e:
        return _note(f"No plan: {e}", "warn")
    cmd = (f"scalelab plan --budget {cfg.budget:.3g} --queries {cfg.queries:.3g} --target-accuracy "
           f"{cfg.target_accuracy} --fits FITS")
    return "\n".join([
        _note("The question: reach the ladder's best greedy accuracy (mean over difficulties) while serving "
              f"{fmt(cfg.queries)} testbed questions, with 10x the FLOPs of training and serving that model. "
              "Chinchilla fit of the pretraining records" + (f" (E held at {fmt(floor)})" if floor else "")
              + " for the allocation, the exchange fit above for accuracy."),
        f"<pre>{_e(chr(10).join(explain(plan)))}</pre>",
        _note("The same from the command line, with the fits written by `scalelab fit RUNS --law chinchilla --floor "
              f"auto --out FITS/chinchilla.json` and `scalelab exchange RUNS --out FITS/exchange.json`: `{cmd}`.")])


# ---- the page --------------------------------------------------------------------------------
def build_report(runs_dir: str | Path, out_path: str | Path, *, bootstrap: int = 200,
                 n_jobs: int | None = None, fits_dir: str | Path | None = None) -> Path:
    """Write the report of `runs_dir` (searched recursively) to `out_path`; return its path.
    `n_jobs`: processes for the Chinchilla multi-start (None: all CPUs). `fits_dir`: fits already
    made on these runs (`scalelab demo` writes OUT/fits/): the report renders them instead of fitting
    again, fits only what is missing there, and says which is which."""
    fits_dir = Path(fits_dir) if fits_dir is not None else None
    root = Path(runs_dir)
    runs = load_runs(root)  # raises InputError for a missing path or a file
    if not runs.records:
        why = f" ({len(runs.problems)} unreadable or failed)" if runs.problems else ""
        raise InputError(f"{root}: no complete run records found (expected */record.json){why}")
    if bootstrap < 0:
        raise InputError("bootstrap must be 0 or more")
    by_phase = {
        "pretraining": [r for r in runs.records if r.phase == "pretrain" and r.metrics.get("loss") is not None],
        "post-training": [r for r in runs.records if r.phase == "posttrain" and r.metrics.get("accuracy") is not None],
        "test-time": [r for r in runs.records if r.phase == "testtime" and r.metrics.get("kind") != "adaptive"
                      and r.metrics.get("accuracy") is not None and "flops_per_question" in r.metrics],
    }
    with tempfile.TemporaryDirectory(prefix="scalelab-report-") as tmp:
        figs = _Figures(Path(tmp))
        body = []
        if by_phase["pretraining"]:
            recs = by_phase["pretraining"]
            body += [f'<h2 id="pretraining">Pretraining: {len(recs)} runs</h2>',
                     _chinchilla(recs, figs, bootstrap=bootstrap, n_jobs=n_jobs, fits_dir=fits_dir),
                     backtest_section(recs), _isoflop(recs, figs, bootstrap=bootstrap), _learning_curves(root, recs, figs)]
        if by_phase["post-training"]:
            recs = by_phase["post-training"]
            body += [f'<h2 id="post-training">Post-training: {len(recs)} child runs</h2>',
                     posttrain_section(root, recs, figs), posttrain_laws_section(root, recs, bootstrap=min(bootstrap, 100))]
        if by_phase["test-time"]:
            recs = by_phase["test-time"]
            body += [f'<h2 id="test-time">Test-time: {len(recs)} evaluations</h2>', _testtime(root, recs, figs)]
        ex_html, ex_doc = _exchange(root, figs, bootstrap=bootstrap, fits_dir=fits_dir) if by_phase["test-time"] else ("", None)
        if ex_doc is not None:
            body += ['<h2 id="exchange">Exchange rates between the laws</h2>', ex_html,
                     '<h2 id="plan">The planner</h2>', _plan(by_phase["pretraining"], ex_doc, n_jobs=n_jobs)]
    counts = Counter(r.phase for r in runs.records)
    summary = ["<ul>"]
    for name, recs in by_phase.items():
        if recs:
            summary.append(f'<li class="found"><a href="#{name}">{_e(name)}</a>: found ({len(recs)} records)</li>')
        else:
            summary.append(f'<li class="missing">{_e(name)}: not found; make it with <code>{_e(MAKE[name])}</code></li>')
    if ex_doc is not None:
        summary.append(f'<li class="found"><a href="#exchange">exchange rates</a> and <a href="#plan">the planner</a>: '
                       f'{len(ex_doc["ladder"])} pretrained models with test-time records</li>')
    else:
        summary.append(f'<li class="missing">exchange rates and the planner: not made (they need test-time records '
                       f'of 2+ pretrained models); make them with <code>{_e(MAKE["exchange"])}</code></li>')
    summary.append("</ul>")
    head = [f"<h1>scalelab report: {_e(root)}</h1>",
            _note(f"{len(runs.records)} complete run records ("
                  + ", ".join(f"{n} {p}" for p, n in sorted(counts.items()))
                  + f") found under {root}, searched recursively. scalelab {__version__}, "
                  + time.strftime("%Y-%m-%d %H:%M %Z") + "."),
            "<p>Sections:</p>", *summary]
    if runs.problems:
        head.append(_note(f"{len(runs.problems)} runs left out:", "warn"))
        head.append("<pre>" + _e("\n".join(str(p) for p in runs.problems)) + "</pre>")
    page = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>scalelab report: {_e(root.name)}</title><style>{CSS}</style></head>\n"
            "<body><main>\n" + "\n".join(head + body) + "\n</main></body></html>\n")
    out = Path(out_path)
    atomic_write_text(out, page)
    return out
