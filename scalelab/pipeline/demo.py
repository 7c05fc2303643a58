"""`scalelab demo`: the three scaling laws measured end to end on the embedded testbed, in FLOPs.

    from scalelab.pipeline.demo import DemoConfig, run_demo
    summary = run_demo(DemoConfig.preset("quick"), "demo")     # or: scalelab demo --quick --out demo

Six stages; each reuses what an earlier run finished (run ids are config hashes, so the same config
finds its complete record; fits, exchange rates and the report are remade only when the records
under them changed):

  pretrain   an IsoFLOP sweep (`sweep.plan_isoflop`) on a testbed that small CPU models learn to
             middling accuracy (at most 4 steps, moduli up to 10); lr and batch from `train.RULE`
  fits       Chinchilla with E held at the testbed's entropy floor, and IsoFLOP: OUT/fits/*.json, *.png
  testtime   the compute-optimal member of every budget (best loss) sampled with cot, majority and
             coverage at n = 1..16 (`testtime.evaluate`)
  posttrain  the compute-optimal run of the second-largest budget: sft, then rlvr on the sft child;
             distilled from the largest budget's; Wanda-pruned; int8-quantized (`posttrain.run`)
  exchange   exchange rates between the laws (OUT/fits/exchange.json, `laws.exchange_tables`) and the
             planner's answer (`plan.make_plan`) to the report's default question
  report     OUT/report.html (`report.build_report`)

Layout: OUT/runs/{pretrain,testtime,posttrain}/, OUT/fits/, OUT/report.html, OUT/summary.json.
`scalelab.pipeline.bundled.fit_bundled` is the demo of earlier versions: fit the bundled sweep table (`scalelab demo --bundled`).
"""
from __future__ import annotations

import json
import math
import os
import time
import warnings
from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from scalelab import model as M
from scalelab.config import Config
from scalelab.errors import ConfigError, ScalelabError
from scalelab.pipeline.demo_presets import PRESETS
from scalelab.records import atomic_write_json, config_hash, read_record
from scalelab.tables import load_runs

STAGES = ("pretrain", "fits", "testtime", "posttrain", "exchange", "report")
TECHNIQUES = ("sft", "rlvr", "distill", "prune", "quantize")


class DemoError(ScalelabError):
    """A stage could not make what the next one needs (one line, exit code 2)."""


class DemoConfig(Config):
    """What the demo measures: `DemoConfig.preset("quick" | "default")`, any field changeable."""

    name: str = "default"
    smoke_test: bool = Field(False, description="numbers too small to mean anything: the output says so")
    budgets: list[float] = Field(..., min_length=2, description="IsoFLOP budgets, exact training FLOPs")
    points: int = Field(3, ge=3, description="model sizes per budget (a parabola needs 3)")
    tokens_per_param: float | list[float] = Field(
        150.0, description="centre of each budget's sizes: one ratio, or one per budget (docs/LOG.md)")
    seeds: int | list[int] = Field(
        1, description="runs of each size at a budget, seeds seed, seed+1, ...: one count, or one per budget; "
                       "a budget's optimum is the size of least mean loss (docs/LOG.md: small budgets are seed noise)")
    min_depth: int = Field(1, ge=1)
    sizes: list[str] | None = Field(None, description="ladder to sample (e.g. d2,d3w32); default: depths >= min_depth")
    max_tokens_per_param: float | None = Field(5000.0, gt=0)
    train: dict[str, Any] = Field(default_factory=dict, description="TrainConfig fields of every sweep member")
    strategies: list[str] = Field(default_factory=lambda: ["cot", "majority", "coverage"])
    n: list[int] = Field(default_factory=lambda: [1, 2, 4, 8, 16])
    difficulties: list[int] = Field(default_factory=lambda: [1, 2, 3, 4])
    problems: int = Field(100, ge=1, description="test-time problems per difficulty")
    eval_problems: int = Field(100, ge=1, description="post-training evaluation problems per difficulty")
    posttrain: dict[str, dict[str, Any]] = Field(default_factory=dict, description="technique -> its config fields")
    bootstrap: int = Field(200, ge=0, description="resamples for the 95% intervals of fits and exchange rates")
    queries: float = Field(1e6, ge=0, description="queries the planner's default question serves")

    @model_validator(mode="after")
    def _known(self) -> "DemoConfig":
        from scalelab.posttrain import get_technique

        bad = sorted(set(self.posttrain) - set(TECHNIQUES))
        if bad:
            raise ValueError(f"posttrain: unknown technique {bad[0]!r}; the demo runs {', '.join(TECHNIQUES)}")
        for name, fields in self.posttrain.items():  # a misspelt field fails now, not after the sweep
            stub = {"parent": "-", **({"teacher": "-"} if name == "distill" else {})}
            get_technique(name).config.build({**stub, **fields})
        ratios = self.tokens_per_param if isinstance(self.tokens_per_param, list) else [self.tokens_per_param]
        if any(not r > 0 for r in ratios) or len(ratios) not in (1, len(self.budgets)):
            raise ValueError(f"tokens_per_param: give one ratio > 0, or one per budget ({len(self.budgets)})")
        counts = self.seeds if isinstance(self.seeds, list) else [self.seeds]
        if any(k < 1 for k in counts) or len(counts) not in (1, len(self.budgets)):
            raise ValueError(f"seeds: give one count >= 1, or one per budget ({len(self.budgets)})")
        for size in self.sizes or []:  # a misspelt size too
            try:
                M.check_preset(size)
            except ConfigError as e:
                raise ValueError(f"sizes: {e}") from None
        return self

    @classmethod
    def preset(cls, name: str) -> "DemoConfig":
        if name not in PRESETS:
            raise DemoError(f"demo preset {name!r}: expected one of {', '.join(PRESETS)}")
        return cls.build(PRESETS[name])


def compute_optimal(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per budget, the size of least mean loss over its seeds, represented by its lowest-seed run
    (which test-time and post-training then use); `mean_loss` and `seeds` say what was averaged."""
    ladder = []
    for b in sorted({r["budget"] for r in rows}):
        sizes: dict[str, list[dict[str, Any]]] = {}
        for r in rows:
            if r["budget"] == b:
                sizes.setdefault(r["model"], []).append(r)
        mean = {m: sum(r["loss"] for r in rs) / len(rs) for m, rs in sizes.items()}
        best = min(mean, key=mean.get)
        ladder.append({**min(sizes[best], key=lambda r: r["seed"]), "mean_loss": mean[best], "seeds": len(sizes[best])})
    return ladder


# ---- progress: the command line passes a display (`cli.progress.StageDisplay`) ------------------
class Quiet:
    """The display of a demo run in-process (tests, scripts): every hook does nothing."""

    def __enter__(self) -> "Quiet":
        return self

    def __exit__(self, *exc: Any) -> None:
        pass

    def begin(self, stage: str, total: float, what: str = "") -> None:
        pass

    def update(self, stage: str, completed: float | None = None, what: str | None = None) -> None:
        pass

    def end(self, stage: str, line: str) -> None:
        pass


def _clock() -> tuple[float, float]:
    """(wall, CPU of this process and its finished children) in seconds."""
    t = os.times()
    return time.perf_counter(), t.user + t.system + t.children_user + t.children_system


def run_demo(cfg: DemoConfig, out: str | Path = "demo", *, workers: int = 1, threads: int = 1,
             display: Any = None) -> dict[str, Any]:
    """Run (or finish, or reuse) every stage; write OUT/summary.json and return the summary."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DemoError(f"--out {out}: is a file; give a folder")
    (out / "runs").mkdir(parents=True, exist_ok=True)
    pipe = _Pipeline(cfg, out, workers, threads, display or Quiet())
    s = pipe.s
    with pipe.disp:
        for stage in STAGES:
            w0, c0 = _clock()
            line = getattr(pipe, stage)()
            w1, c1 = _clock()
            s["stages"][stage] = {"wall_s": round(w1 - w0, 2), "cpu_s": round(c1 - c0, 2), "line": line}
            pipe.disp.end(stage, f"{line} ({w1 - w0:.0f} s)")
    for k in ("wall_s", "cpu_s"):
        s[f"total_{k}"] = round(sum(v[k] for v in s["stages"].values()), 2)
    s["paths"] = {"runs": str(out / "runs"), "fits": str(out / "fits"), "report": str(out / "report.html"),
                  "summary": str(out / "summary.json")}
    atomic_write_json(out / "summary.json", s)
    return s


class _Pipeline:
    """The stages, in order; each fills its part of the summary `s` and returns its one-line result."""

    def __init__(self, cfg: DemoConfig, out: Path, workers: int, threads: int, disp: Any):
        self.cfg, self.out, self.workers, self.threads, self.disp = cfg, out, workers, threads, disp
        self.runs, self.fits_dir = out / "runs", out / "fits"
        try:
            self.prev = json.loads((out / "summary.json").read_text())
        except (OSError, ValueError):
            self.prev = {}
        self.s: dict[str, Any] = {"preset": cfg.name, "smoke_test": cfg.smoke_test, "out": str(out),
                                  "config": cfg.model_dump(), "workers": workers, "stages": {}, "failures": [],
                                  "cache": {}}

    def _cached(self, stage: str, inputs: dict[str, Any], outputs: list[Path]) -> dict[str, Any] | None:
        """The previous run's summary of `stage` when its inputs are unchanged and its files exist."""
        key = self.s["cache"][stage] = config_hash({**inputs, "bootstrap": self.cfg.bootstrap})
        if self.prev.get("cache", {}).get(stage) == key and stage in self.prev and all(p.exists() for p in outputs):
            return self.prev[stage]
        return None

    def _ids(self) -> list[str]:
        return sorted(r.run_id for r in load_runs(self.runs).records)

    # ---- 1. the IsoFLOP sweep ------------------------------------------------------------------
    def pretrain(self) -> str:
        from scalelab.pretrain.sweep import InProcessExecutor, plan_isoflop, run_sweep
        from scalelab.pretrain.train import TrainConfig, plan_run, resolve_source, run_id_for, source_options

        cfg, runs = self.cfg, self.runs / "pretrain"
        base = TrainConfig.build({**cfg.train, "model": "d2"})
        vocab = resolve_source(base.source, source_options(base)).vocab_size
        configs = plan_isoflop(base, cfg.budgets, cfg.points, vocab_size=vocab, tokens_per_param=cfg.tokens_per_param,
                               min_depth=cfg.min_depth, max_tokens_per_param=cfg.max_tokens_per_param,
                               sizes=cfg.sizes, seeds=cfg.seeds)
        total = {run_id_for(c): c.tokens * plan_run(c, vocab)["flops_per_token"] for c in configs}
        budget = {rid: min(cfg.budgets, key=lambda b: abs(math.log(f / b))) for rid, f in total.items()}
        done = {rid: total[rid] if _complete(runs / rid) else 0.0 for rid in total}
        reused = sum(1 for v in done.values() if v)
        self.disp.begin("pretrain", sum(total.values()), f"{len(configs)} runs, {reused} reused")

        def on_event(ev: dict[str, Any]) -> None:  # FLOPs done, as the sweep's own bar counts them
            rid = ev["run_id"]
            done[rid] = total.get(rid, 0.0) if ev["kind"] == "done" else min(ev.get("flops", 0.0), total.get(rid, 0.0))
            finished = sum(v >= total[k] for k, v in done.items())
            self.disp.update("pretrain", sum(done.values()), f"{finished}/{len(total)} runs")

        executor = InProcessExecutor(threads=self.threads) if self.workers == 1 else None
        outcomes = run_sweep(configs, runs, workers=self.workers, executor=executor, vocab_size=vocab,
                             on_event=on_event, plan={"demo": cfg.name, "budgets": cfg.budgets, "points": cfg.points})
        bad = [o for o in outcomes if o.status not in ("complete", "skipped")]
        if bad:
            raise DemoError(f"pretraining: {len(bad)} of {len(outcomes)} runs did not finish ({bad[0].run_id}: "
                            f"{bad[0].status}, {bad[0].error}); re-run the same command to retry them")
        recs = [read_record(runs / o.run_id) for o in outcomes]
        rows = [{"run": r.run_id, "model": r.config["model"], "seed": r.config["seed"], "budget": budget[r.run_id],
                 "N": r.n_params_nonembedding, "D": r.tokens, "C": r.flops["pretrain"], "loss": r.metrics["loss"],
                 "wall_s": r.wall_s} for r in recs]
        ladder = compute_optimal(rows)
        self.s["pretrain"] = {"runs": rows, "reused": reused, "flops": sum(total.values()), "ladder": ladder,
                              "entropy_floor": recs[0].metrics["entropy_floor"]}
        return f"{len(outcomes)} runs ({reused} reused), {sum(total.values()):.3g} FLOPs"

    # ---- 2. the pretraining laws ---------------------------------------------------------------
    def fits(self) -> str:
        from scalelab.laws import fit_table, make_law, plot_fit, write_fit
        from scalelab.laws.predict import optimal_point, predict_point
        from scalelab.pipeline.report_laws import FRONTIER_WEIGHT, own_backtest

        pre, names = self.s["pretrain"], ("chinchilla", "isoflop")
        self.disp.begin("fits", len(names), ", ".join(names))
        got = self._cached("fits", {"runs": sorted(r["run"] for r in pre["runs"]), "frontier_weight": FRONTIER_WEIGHT,
                                    "summary": 2},  # 2: with the identification verdict
                           [self.fits_dir / f"{n}.{x}" for n in names for x in ("json", "png")])
        if got is None:
            got, laws = {}, {}
            for i, name in enumerate(names):
                hyper = {"E_fixed": pre["entropy_floor"], "frontier_weight": FRONTIER_WEIGHT} if name == "chinchilla" else {}
                law, prep = fit_table(self.runs / "pretrain", make_law(name, bootstrap=self.cfg.bootstrap, **hyper))
                write_fit(self.fits_dir / f"{name}.json", law, source="runs/pretrain", notices=prep.notices)
                plot_fit(law, prep.X, prep.y, self.fits_dir / f"{name}.png")
                laws[name] = law
                got[name] = {"params": law.params_, "ci95": law.ci_, "converged": bool(law.converged_),
                             "n_points": int(len(prep.y))}
                self.disp.update("fits", i + 1)
            ch = laws["chinchilla"]
            got["chinchilla"].update(exponents=ch.optimal_exponents(), frontier_weight=FRONTIER_WEIGHT,
                                     identification=ch.identification_doc())
            got["isoflop"]["budgets"] = laws["isoflop"].budgets_
            nxt = {"C_6ND": 10 * max(r["C"] for r in pre["runs"])}
            if all(ch.params_[k] > 0 for k in ("alpha", "beta")):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    opt = optimal_point(ch, compute=nxt["C_6ND"])["allocation"]
                nxt.update(N=opt["N"], D=opt["D"], tokens_per_param=opt["tokens_per_param"],
                           predicted_loss=predict_point(ch, N=opt["N"], D=opt["D"])["loss"])
            else:  # loss does not fall with both N and D: no compute-optimal allocation
                nxt["error"] = (f"no compute-optimal allocation (alpha {ch.params_['alpha']:.3g}, "
                                f"beta {ch.params_['beta']:.3g})")
            got["next_budget"] = nxt
            # the fit's own check, as the demo fits it:
            # `scalelab backtest runs/pretrain --law fixed-e --floor auto --frontier-weight 1`
            got["backtest"] = own_backtest(load_runs(self.runs / "pretrain").records)
        self.s["fits"] = got
        p, a = got["chinchilla"]["params"], got["isoflop"]["params"]["a"]
        ident = got["chinchilla"].get("identification")
        verdict = "" if ident is None else " (identified)" if ident["identified"] else (
            f" (not identified: 95% intervals {float(ident['hi_lo']['alpha']):.3g}x, "
            f"{float(ident['hi_lo']['beta']):.3g}x wide)")
        return f"Chinchilla alpha {p['alpha']:.3g}, beta {p['beta']:.3g}{verdict}; IsoFLOP N_opt ~ C^{a:.3g}"

    # ---- 3. test-time compute on the compute-optimal ladder --------------------------------------
    def testtime(self) -> str:
        from scalelab.testtime.evaluate import TesttimeConfig, evaluate
        from scalelab.testtime.strategies import get_strategy

        cfg, ladder = self.cfg, self.s["pretrain"]["ladder"]
        per_model = len(cfg.difficulties) * sum(1 if get_strategy(s).kind == "single" else len(cfg.n)
                                                for s in cfg.strategies)
        self.disp.begin("testtime", per_model * len(ladder), f"{len(ladder)} models")
        count, rows = [0], []

        def on_record(_: Any) -> None:
            count[0] += 1
            self.disp.update("testtime", count[0])

        for m in ladder:
            self.disp.update("testtime", what=m["run"])
            tc = TesttimeConfig.build(model=str(self.runs / "pretrain" / m["run"]), strategies=cfg.strategies, n=cfg.n,
                                      difficulties=cfg.difficulties, problems=cfg.problems, threads=self.threads)
            recs = evaluate(tc, self.runs / "testtime", on_record=on_record)
            for key in sorted({(r.technique, r.metrics["n"]) for r in recs}):
                acc = [r.metrics["accuracy"] for r in recs if (r.technique, r.metrics["n"]) == key]
                rows.append({"model": m["run"], "strategy": key[0], "n": key[1], "accuracy": sum(acc) / len(acc)})
        self.s["testtime"] = {"points": count[0], "mean_accuracy": rows}
        greedy = [r["accuracy"] for r in rows if r["strategy"] == "cot"] or [math.nan]
        return f"{count[0]} points; greedy accuracy {min(greedy):.2f}-{max(greedy):.2f} along the ladder"

    # ---- 4. post-training the compute-optimal model ----------------------------------------------
    def posttrain(self) -> str:
        from scalelab.posttrain import run

        cfg, pre = self.cfg, self.runs / "pretrain"
        # The base is the compute-optimal run of the second-largest budget: the ladder above it says what
        # its post-training is worth in pretraining FLOPs (a child beyond the ladder's top gets only a
        # bound, docs/planning.md). The largest budget's run teaches it by distillation.
        base, teacher = self.s["pretrain"]["ladder"][-2:]
        rows: dict[str, Any] = {}
        self.disp.begin("posttrain", len(TECHNIQUES), f"from {base['run']}")
        furthest = [0.0]
        for i, name in enumerate(TECHNIQUES):
            parent = rows.get("sft", {}).get("dir") if name == "rlvr" else str(pre / base["run"])
            if parent is None:
                rows[name] = {"error": "not run: its parent (the sft child) failed"}
                continue
            fields = {"eval_problems": cfg.eval_problems, "threads": self.threads, **cfg.posttrain.get(name, {}),
                      "parent": parent, **({"teacher": str(pre / teacher["run"])} if name == "distill" else {})}
            self.disp.update("posttrain", i, name)

            def progress(part: str, d: int, t: int, i: int = i, name: str = name) -> None:
                # a stage reports several parts (training, curve points, evaluation), each from 0 to 1:
                # the bar shows the furthest point reached, so it never runs backwards
                furthest[0] = max(furthest[0], i + (d / t if t else 0.0))
                self.disp.update("posttrain", furthest[0], f"{name}: {part}")

            try:
                rec = run(name, fields, self.runs / "posttrain", progress=progress)
            except Exception as e:  # noqa: BLE001 - one technique failing leaves the others and the report
                rows[name] = {"error": f"{type(e).__name__}: {' '.join(str(e).split())[:300]}"}
                self.s["failures"].append(f"posttrain {name}: {rows[name]['error']}")
                continue
            m = rec.metrics
            rows[name] = {"run": rec.run_id, "dir": str(self.runs / "posttrain" / rec.run_id),
                          "technique": rec.technique, "parent": rec.parent_id, "accuracy": m.get("accuracy"),
                          "parent_accuracy": m.get("parent_accuracy"),
                          "posttrain_flops": sum((getattr(rec, "posttrain_ledger", None) or {}).values()),
                          "n_params": rec.n_params, "wall_s": rec.wall_s,
                          **{k: m[k] for k in ("weights_bytes", "parent_weights_bytes", "matrix_sparsity") if k in m}}
        self.s["posttrain"] = {"base": base["run"], "teacher": teacher["run"], "children": rows}
        self.s["posttrain_laws"] = self._posttrain_laws([n for n in TECHNIQUES if "run" in rows[n]])
        ok = [n for n in TECHNIQUES if "run" in rows[n]]
        laws = [f"{n} {v['law']} (last point {v['extrapolation_error']:.3f} off)"
                for n, v in self.s["posttrain_laws"].items() if v.get("extrapolation_error") is not None]
        return f"{len(ok)}/{len(TECHNIQUES)} children of {base['run']}" + (f"; laws: {', '.join(laws)}" if laws else "") + (
            "" if len(ok) == len(TECHNIQUES) else f" (failed: {', '.join(n for n in TECHNIQUES if n not in ok)})")

    def _posttrain_laws(self, names: list[str]) -> dict[str, Any]:
        """Accuracy against post-training FLOPs along each child's curve, fitted without its last
        point and checked there (`scalelab posttrain fit runs/posttrain --technique T`)."""
        from scalelab.laws.posttrain_fit import fit_posttrain_law

        out: dict[str, Any] = {}
        for name in names:
            try:
                f = fit_posttrain_law(self.runs / "posttrain", name, bootstrap=self.cfg.bootstrap)
            except ScalelabError as e:  # no curve (quantize, prune), or too few points on it
                out[name] = {"error": str(e)}
                continue
            # where the planner reads it (`scalelab plan --fits`): it may then spend more or less
            # post-training compute on the technique than the one measured child (pipeline.plan_posttrain)
            atomic_write_json(self.fits_dir / f"posttrain-{name}.json", f)
            main = f["laws"][f["law"]]
            out[name] = {"law": f["law"], "params": main["params"], "ci95": main["ci95"], "R0": f.get("R0"),
                         "asymptote": f["asymptote"], "efficiency": f["efficiency"], "n_points": f["n_points"],
                         "extrapolation_error": f["extrapolation_error"], "extrapolation": main["extrapolation"],
                         "other_forms": {k: (v["extrapolation"] or {}).get("error") for k, v in f["laws"].items()
                                         if k != f["law"]}}
        return out

    # ---- 5. exchange rates and the planner -------------------------------------------------------
    def exchange(self) -> str:
        from scalelab.laws.exchange_plot import plot_frontier
        from scalelab.laws.exchange_tables import headlines, measure_exchange, testtime_table
        from scalelab.pipeline.plan import default_config, explain, load_fits, make_plan

        self.disp.begin("exchange", 2, "exchange rates")
        inputs = {"runs": self._ids(), "queries": self.cfg.queries, "fits": self.s["cache"]["fits"]}
        got = self._cached("exchange", inputs, [self.fits_dir / "exchange.json", self.fits_dir / "exchange.png"])
        if got is None:
            try:
                doc = measure_exchange(self.runs, bootstrap=self.cfg.bootstrap)
            except ScalelabError as e:  # a measurement, not a failure: e.g. one model on the compute frontier
                self.s["exchange"] = {"error": str(e)}
                return f"not measured: {e}"
            atomic_write_json(self.fits_dir / "exchange.json", doc)
            plot_frontier(testtime_table(self.runs)[0], doc, self.fits_dir / "exchange.png")
            pooled = {k: v["pooled"] for k, v in doc["strategies"].items() if k != "cot"}
            heads = headlines(doc)
            got = {"ladder": [{"model": m["model"], "C_train": m["C_train"]} for m in doc["ladder"]],
                   "strategies": {k: {"multiplier": p.get("params", {}).get("multiplier"), "error": p.get("error"),
                                      "ci95": p.get("ci95", {}).get("multiplier"), "replaces": p.get("replaces"),
                                      "oracle": doc["strategies"][k]["oracle"], **heads.get(k, {})}
                                  for k, p in pooled.items()},
                   "replacement": {"cases": len(doc["replacement"]),
                                   "not_reached": sum(not r["replaced"] for r in doc["replacement"])},
                   "posttrain": [{k: r[k] for k in ("run", "technique", "parent_accuracy", "accuracy", "multiplier",
                                                    "ci95", "where", "posttrain_share")}
                                 for r in doc["posttrain"] if r["difficulty"] == "mean"],
                   "notices": doc["notices"]}
            self.disp.update("exchange", 1, "the planner")
            try:
                pc = default_config(doc, queries=self.cfg.queries)
                plan = make_plan(pc, load_fits(self.fits_dir, need_exchange=True))
                got["plan"] = {**plan.as_dict(), "explain": explain(plan),
                               "command": f"scalelab plan --budget {pc.budget:.4g} --queries {pc.queries:.3g} "
                                          f"--target-accuracy {pc.target_accuracy} --fits {self.fits_dir}"}
            except ScalelabError as e:  # a measurement too: e.g. a Chinchilla fit with alpha < 0
                got["plan"] = {"error": str(e)}
        self.s["exchange"] = got
        return "; ".join(v["text"] for v in got.get("strategies", {}).values() if v.get("text")) or "no rate"

    # ---- 6. the report ---------------------------------------------------------------------------
    def report(self) -> str:
        from scalelab.pipeline.report import build_report

        path = self.out / "report.html"
        self.disp.begin("report", 1, "fits and figures")
        # the page reads the fits folder too: remade when a fit was
        got = self._cached("report", {"runs": self._ids(), "fits": self.s["cache"].get("fits"),
                                      "exchange": self.s["cache"].get("exchange")}, [path])
        if got is None:
            build_report(self.runs, path, bootstrap=self.cfg.bootstrap, n_jobs=self.workers, fits_dir=self.fits_dir)
            got = {"path": str(path), "bytes": path.stat().st_size}
        self.s["report"] = got
        return f"{path} ({got['bytes'] / 1e6:.2f} MB)"


def _complete(run_dir: Path) -> bool:
    try:
        return read_record(run_dir).status == "complete"
    except ScalelabError:
        return False
