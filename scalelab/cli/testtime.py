"""`scalelab testtime ...`: evaluate strategies, train reward models, fit and predict test-time
curves, allocate compute by difficulty, draw the accuracy-vs-FLOPs figure. Parsing and printing
only; the work is in `scalelab.testtime`."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

import typer

from scalelab.cli import task_options as T
from scalelab.cli.app import JSON_RECORD, TRACKER, app
from scalelab.errors import ConfigError, InputError

tt = typer.Typer(help="Test-time scaling: strategies, reward models, laws and allocation, in FLOPs.",
                 context_settings={"help_option_names": ["-h", "--help"]})
app.add_typer(tt, name="testtime")
_SET = typer.Option([], "--set", help="any other config field: key=value (repeatable)")


MAX_LIST = 10_000  # items one comma list or range may expand to (a typo such as 1-100000000 otherwise fills memory)


def _ints(text: str, what: str) -> list[int]:
    """'1,2,4' or '1-8' or '1,2,8-10' -> ints; an empty item, a range from high to low or a list of more
    than MAX_LIST items is refused, naming the option."""
    out: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            raise InputError(f"{what} {text!r}: an empty item between commas")
        cut = part.find("-", 1)  # a range 'a-b'; a leading '-' is a sign
        try:
            if cut > 0:
                a, b = int(part[:cut]), int(part[cut + 1:])
                if b < a:
                    raise InputError(f"{what} {text!r}: the range {part} runs backwards; write {b}-{a}")
                if b - a >= MAX_LIST:
                    raise InputError(f"{what} {text!r}: the range {part} has more than {MAX_LIST:,} values")
                out += list(range(a, b + 1))
            else:
                out.append(int(part))
        except ValueError:
            raise InputError(f"{what} {text!r}: expected integers like 1,2,4 or a range like 1-8") from None
        if len(out) > MAX_LIST:
            raise InputError(f"{what} {text!r}: more than {MAX_LIST:,} values")
    return out


def _names(text: str, what: str) -> list[str]:
    """'cot,majority' -> names; an empty item between commas is refused, as in a number list."""
    names = [s.strip() for s in text.split(",")]
    if "" in names and text.strip():
        raise InputError(f"{what} {text!r}: an empty item between commas")
    return [s for s in names if s]


def _setup(threads: Optional[int]) -> None:
    if threads is not None and not 1 <= threads <= 1024:
        raise InputError(f"--threads {threads}: expected 1 to 1024 torch threads")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch starts its threads
    from scalelab.pretrain.train import quiet_import_noise

    quiet_import_noise()
    if threads:
        import torch

        torch.set_num_threads(threads)


def _progress():
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn

    from scalelab.progress import progress_bars

    err = Console(stderr=True)
    return progress_bars(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                         console=err, transient=True, disable=not err.is_terminal)


def _evaluator(kind: str, address: Optional[str], shards: Optional[int]):
    """(`testtime.evaluate` or `ray_executor.evaluate_on_ray`, which writes the same records; where it
    samples), the options checked before any work."""
    if kind == "local":
        if address is not None or shards is not None:
            raise ConfigError("--address and --shards need --executor ray")
        from scalelab.testtime.evaluate import evaluate

        return evaluate, None
    if kind != "ray":
        raise ConfigError(f"--executor {kind!r}: expected local or ray")
    from functools import partial

    from scalelab.cluster import require_ray
    from scalelab.testtime.ray_eval import evaluate_on_ray

    require_ray()  # the install hint, before anything is loaded
    k = 2 if shards is None else shards
    if k < 1:
        raise ConfigError(f"--shards {k}: expected >= 1")
    return partial(evaluate_on_ray, address=address, workers=k), f"{k} Ray actor(s), {address or 'local instance'}"


def _fmt(v: float) -> str:
    return f"{v:.3g}" if v == v else "-"


@tt.callback(invoke_without_command=True)
def testtime_cmd(
    ctx: typer.Context,
    model: Optional[str] = typer.Option(None, "--model", help="policy run directory (or HF checkpoint dir)"),
    strategies: str = typer.Option("cot,majority", "--strategies", help="comma-separated; see `scalelab testtime strategies`"),
    n: str = typer.Option("1,2,4,8,16,32,64", "--n", help="budgets: samples / beams / revisions"),
    difficulties: Optional[str] = typer.Option(None, "--difficulties", help="testbed: steps per problem, e.g. 3-6 "
                                               "or 2,4,6 (default 1-8); task file: its difficulty bins (default all)"),
    problems: int = typer.Option(50, "--problems", help="problems per difficulty"),
    split: str = typer.Option("test", "--split", help="testbed: val or test; task file: any split it has"),
    task: Optional[str] = T.TASK, task_format: str = T.TASK_FORMAT, task_field: list[str] = T.TASK_FIELD,
    task_regex: Optional[str] = T.TASK_REGEX, chat: str = T.CHAT, system: Optional[str] = T.SYSTEM,
    fewshot: Optional[str] = T.FEWSHOT, shots: int = T.SHOTS, max_new_tokens: Optional[int] = T.MAX_NEW,
    stop: list[str] = T.STOP, step_split: str = T.STEP_SPLIT,
    orm: Optional[str] = typer.Option(None, "--orm", help="outcome reward model: a run of train-verifier, or a "
                                      "Hugging Face *ForSequenceClassification directory"),
    prm: Optional[str] = typer.Option(None, "--prm", help="process reward model run"),
    judge: Optional[str] = typer.Option(None, "--judge", help="an LLM judge as the ORM: a causal LM directory asked "
                                        "whether each solution is right (its FLOPs count as verifier FLOPs)"),
    temperature: float = typer.Option(0.8, "--temperature"),
    seed: int = typer.Option(0, "--seed"),
    threads: Optional[int] = typer.Option(None, "--threads", help="torch threads (default: all cores); "
                                          "ray: also the CPUs and threads of each shard (default 1)"),
    executor: str = typer.Option("local", "--executor", help="local (this process) | ray (sampling sharded over Ray actors)"),
    address: Optional[str] = typer.Option(None, "--address", help="ray: the cluster's HOST:PORT (default: start Ray here)"),
    shards: Optional[int] = typer.Option(None, "--shards", help="ray: actors that sample, each holding the policy (default 2)"),
    sets: list[str] = _SET,
    runs_dir: Path = typer.Option(Path("runs"), "--runs-dir", help="where records go"),
    tracker: Optional[str] = TRACKER,
    as_json: bool = typer.Option(False, "--json", help="print one strict-JSON list of the points (no table)"),
) -> None:
    """Evaluate strategies on the testbed or a task file: one record per (strategy, n, difficulty)."""
    if ctx.invoked_subcommand is not None:
        return
    if model is None:
        raise InputError("--model RUN is required (or use a subcommand: see `scalelab testtime --help`)")
    _setup(threads)
    evaluate, where = _evaluator(executor, address, shards)
    from scalelab.testtime.evaluate import TesttimeConfig

    fields = T.task_fields(task, task_format, task_field, task_regex, chat, system, fewshot, shots, max_new_tokens,
                           stop, step_split)
    cfg = TesttimeConfig.build(model=model, strategies=_names(strategies, "--strategies"),
                               n=_ints(n, "--n"), difficulties=T.difficulty_labels(difficulties, _ints),
                               problems=problems, split=split, orm=orm, prm=prm, judge=judge,
                               temperature=temperature, seed=seed,
                               threads=threads, **fields).override(sets)
    if where:
        print(f"testtime: sampling on {where}", file=sys.stderr)
    from scalelab import trackers

    with trackers.use(tracker), _progress() as bar:
        task = bar.add_task("loading", total=None)

        def tick(stage: str, done: int, total: int) -> None:
            bar.update(task, description=stage, completed=done, total=total)

        shown = []

        def show(rec) -> None:
            if as_json:
                return
            if not shown:  # the header with the first row: bad input leaves stdout empty
                shown.append(True)
                print(f"{'strategy':<24}{'steps':>6}{'n':>5}{'accuracy':>10}{'± se':>8}{'95% interval':>15}"
                      f"{'chance':>8}{'FLOPs/question':>16}", flush=True)
            m = rec.metrics
            lo, hi = m.get("accuracy_ci95") or (float("nan"), float("nan"))
            ci = f"[{lo:.3f}, {hi:.3f}]" if lo == lo else "-"
            print(f"{rec.technique:<24}{m['steps']:>6}{m['n']:>5}{m['accuracy']:>10.3f}{_fmt(m['accuracy_se']):>8}"
                  f"{ci:>15}{m['chance']:>8.2g}{m['flops_per_question']:>16.4g}", flush=True)  # results: stdout
            bar.update(task, description=f"d{m['steps']} {rec.technique} n={m['n']}")

        recs = evaluate(cfg, runs_dir, progress=tick, on_record=show)
    if as_json:
        from scalelab.records import dumps_json

        keys = ("steps", "difficulty", "n", "accuracy", "accuracy_se", "accuracy_ci95", "chance", "problems",
                "flops_per_question", "tokens_per_question")
        print(dumps_json([{"run_id": r.run_id, "strategy": r.technique, "parent_id": r.parent_id,
                           **{k: r.metrics.get(k) for k in keys}, "flops": r.flops} for r in recs]))
    print(f"{len(recs)} records under {runs_dir}", file=sys.stderr)


@tt.command("strategies")
def strategies_cmd() -> None:
    """List the registered strategies."""
    from scalelab.testtime.strategies import STRATEGIES

    for s in STRATEGIES.values():
        needs = f" [needs {', '.join(s.needs)}]" if s.needs else ""
        print(f"{s.name:<24}{s.kind:<9}{s.summary}{needs}")


@tt.command("train-verifier")
def train_verifier_cmd(
    policy: str = typer.Option(..., "--policy", help="policy run directory"),
    kind: str = typer.Option(..., "--kind", help="orm | prm"),
    head: str = typer.Option("likelihood", "--head", help="likelihood (a logistic head on the model's token "
                             "log-probabilities) | label (fine-tune the model to predict a +/- tag)"),
    problems: int = typer.Option(512, "--problems", help="training problems"),
    samples: int = typer.Option(8, "--samples", help="policy samples per problem"),
    rollouts: int = typer.Option(8, "--rollouts", help="PRM: Monte-Carlo rollouts per step prefix"),
    label: str = typer.Option("hard", "--label", help="PRM labels: hard (any rollout right) | soft (share right)"),
    epochs: int = typer.Option(3, "--epochs", help="label head: passes over the samples"),
    judge: Optional[str] = typer.Option(None, "--judge", help="build the reward model from this run (same tokenizer; "
                                        "e.g. a larger or longer-trained model) instead of the policy; samples still "
                                        "come from the policy"),
    init: str = typer.Option("policy", "--init", help="label head: policy (fine-tune a copy of the policy or judge) "
                             "| a ladder preset"),
    task: Optional[str] = T.TASK, task_format: str = T.TASK_FORMAT, task_field: list[str] = T.TASK_FIELD,
    task_regex: Optional[str] = T.TASK_REGEX, chat: str = T.CHAT, system: Optional[str] = T.SYSTEM,
    fewshot: Optional[str] = T.FEWSHOT, shots: int = T.SHOTS, max_new_tokens: Optional[int] = T.MAX_NEW,
    stop: list[str] = T.STOP, step_split: str = T.STEP_SPLIT,
    threads: Optional[int] = typer.Option(None, "--threads"),
    sets: list[str] = _SET,
    runs_dir: Path = typer.Option(Path("runs"), "--runs-dir"),
    as_json: bool = JSON_RECORD,
) -> None:
    """Train an outcome or process reward model on the policy's own samples (of the testbed, or of a task
    file's train split, labelled by its verifier); writes a run."""
    _setup(threads)
    from scalelab.rewards.trainer import VerifierConfig, train_verifier

    if kind not in ("orm", "prm"):
        raise InputError(f"--kind {kind!r}: choose orm or prm")
    if head not in ("likelihood", "label"):
        raise InputError(f"--head {head!r}: choose likelihood or label")
    cfg = VerifierConfig.build(policy=policy, kind=kind, head=head, problems=problems, samples=samples, rollouts=rollouts,
                               label=label, epochs=epochs, init=init, judge=judge, threads=threads,
                               **T.task_fields(task, task_format, task_field, task_regex, chat, system, fewshot, shots,
                                               max_new_tokens, stop, step_split)).override(sets)
    with _progress() as bar:
        task = bar.add_task("loading", total=None)
        rec = train_verifier(cfg, runs_dir, progress=lambda s, d, t: bar.update(task, description=s, completed=d, total=t))
    if as_json:
        from scalelab.records import dumps_json

        print(dumps_json(rec.model_dump()))
        return
    m = rec.metrics
    agree = f", MC labels agree with true step correctness {m['label_agreement']:.3f}" if m.get("label_agreement") is not None else ""
    within = m.get("val_auc_within_problem")
    within = _fmt(within) if within is not None else "-"
    judged = f" (judge {m['judge']})" if m.get("judge") else ""
    print(f"{rec.run_id}{judged}: val AUC {_fmt(m['val_auc'])} (within problems {within}), best of {m['val_best_of']} by score "
          f"{m['val_accuracy_best_of_samples']:.3f} vs random pick {m['val_accuracy_random_pick']:.3f}{agree}; "
          f"FLOPs inference {rec.flops.get('inference', 0):.3g}, posttrain {rec.flops.get('posttrain', 0):.3g} "
          f"-> {runs_dir / rec.run_id}")


@tt.command("predict")
def predict_cmd(
    runs: Path = typer.Argument(..., help="runs directory written by `scalelab testtime` (the small budgets)"),
    against: Optional[Path] = typer.Option(None, "--against", help="records of the large budget, sampled separately "
                                           "(default: RUNS itself)"),
    law: str = typer.Option("testtime", "--law", help="testtime | coverage | selection (best-of-n = rho x coverage)"),
    x: str = typer.Option("n", "--x", help="testtime law: n | flops"),
    fit_max_n: int = typer.Option(8, "--fit-max-n", help="fit on budgets n <= this"),
    at: int = typer.Option(64, "--at", help="predict accuracy at this n and compare with the record"),
    strategies: Optional[str] = typer.Option(None, "--strategies", help="only these (default: every curve)"),
    difficulties: Optional[str] = typer.Option(None, "--difficulties", help="only these steps, e.g. 3-6"),
    pooled: bool = typer.Option(False, "--pooled", help="one curve per strategy: the mean over the difficulties"),
    shared_alpha: bool = typer.Option(False, "--shared-alpha", help="coverage / selection: one beta-binomial alpha "
                                      "for all the difficulties, a beta per difficulty"),
    bootstrap: int = typer.Option(0, "--bootstrap", help="standard error of each error over this many resamples of "
                                  "the problems"),
    as_json: bool = typer.Option(False, "--json", help="print the rows as JSON"),
) -> None:
    """Fit each curve on small budgets and predict a large one: predicted, observed, error."""
    from scalelab.testtime.extrapolate import predict_curves, summary

    rows = predict_curves(runs, against=against, law=law, x=x, fit_max_n=fit_max_n, at=at,
                          strategies=_names(strategies, "--strategies") if strategies else None, pooled=pooled,
                          difficulties=_ints(difficulties, "--difficulties") if difficulties else None,
                          shared_alpha=shared_alpha, bootstrap=bootstrap)
    if as_json:
        from scalelab.records import dumps_json

        print(dumps_json(rows))
        return
    se_head = f"{'± se':>6}" if bootstrap else ""
    print(f"{'strategy':<24}{'steps':>6}{'points':>7}{'predicted':>11}{'observed':>10}{'error':>8}{se_head}  fit")
    for r in rows:
        err = f"{100 * r['error']:+.1f}pt" if r["error"] is not None else "-"
        se = (f"{100 * r['error_se']:>6.1f}" if r.get("error_se") is not None else f"{'-':>6}") if bootstrap else ""
        obs = f"{r['observed']:.3f}" if r["observed"] is not None else "-"
        print(f"{r['strategy']:<24}{r['steps']:>6}{r['points']:>7}{r['predicted']:>11.3f}{obs:>10}{err:>8}{se}"
              f"  {r['fit']}")
    print(summary(rows), file=sys.stderr)


@tt.command("plot")
def plot_cmd(
    runs: Path = typer.Argument(..., help="runs directory written by `scalelab testtime`"),
    out: Path = typer.Option(..., "--out", help="PNG file"),
    difficulties: Optional[str] = typer.Option(None, "--difficulties", help="panels (default: all)"),
) -> None:
    """Accuracy against FLOPs per question, every strategy on one axis, chance drawn."""
    from scalelab.cli.fit import check_figures
    from scalelab.testtime.plots import plot_accuracy_vs_flops

    check_figures(("--out", out))
    path = plot_accuracy_vs_flops(runs, out, difficulties=_ints(difficulties, "--difficulties") if difficulties else None)
    print(f"wrote {path}")


@tt.command("allocate")
def allocate_cmd(
    model: str = typer.Option(..., "--model", help="policy run directory"),
    orm: Optional[str] = typer.Option(None, "--orm", help="ORM run (weighted vote; else majority vote)"),
    difficulties: str = typer.Option("1-8", "--difficulties"),
    problems: int = typer.Option(50, "--problems"),
    n_max: int = typer.Option(64, "--n-max", help="largest samples per question"),
    probe: int = typer.Option(4, "--probe", help="samples per question that predict its difficulty"),
    step: int = typer.Option(1, "--step", help="adaptive: samples added per round"),
    threads: Optional[int] = typer.Option(None, "--threads"),
    sets: list[str] = _SET,
    out_dir: Path = typer.Option(Path("runs"), "--runs-dir", help="where the adaptive records go"),
    as_json: bool = typer.Option(False, "--json", help="print the report's lines and the adaptive allocators' "
                                 "records (compact) as strict JSON"),
) -> None:
    """Difficulty predicted from the probe (answer agreement or best ORM score), compute-optimal
    strategy per bin, and adaptive allocators (stop rules, per-bin caps, marginal-gain stopping)
    against uniform best-of-n at equal accuracy."""
    _setup(threads)
    from scalelab.testtime.allocate import AllocateConfig, run_allocation

    cfg = AllocateConfig.build(model=model, orm=orm, difficulties=_ints(difficulties, "--difficulties"),
                               problems=problems, n_max=n_max, probe=probe, step=step, threads=threads).override(sets)
    with _progress() as bar:
        task = bar.add_task("loading", total=None)
        report = run_allocation(cfg, out_dir,
                                progress=lambda s, d, t: bar.update(task, description=s, completed=d, total=t))
    if as_json:
        from scalelab.records import dumps_json
        from scalelab.tables import load_runs

        keys = ("stop", "threshold", "cap", "n", "accuracy", "accuracy_se", "flops_per_question",
                "uniform_flops_same_accuracy", "problems")
        recs = [r for r in load_runs(out_dir).records
                if r.metrics.get("kind") == "adaptive" and r.config.get("model") == cfg.model]
        print(dumps_json({"report": report, "allocators": [{"run_id": r.run_id, "rule": r.technique,
                                                            **{k: r.metrics.get(k) for k in keys}} for r in recs]}))
        return
    for line in report:
        print(line)


@tt.command("compare")
def compare_cmd(
    runs: Path = typer.Argument(..., help="runs directory written by `scalelab testtime`"),
    baseline: str = typer.Option("cot", "--baseline", help="the strategy to beat (its n = 1 point)"),
    budget: str = typer.Option("majority:16", "--budget", help="STRATEGY:N whose FLOPs per question are the most "
                               "each strategy may spend"),
    difficulties: Optional[str] = typer.Option(None, "--difficulties", help="e.g. 3-6 (default: all)"),
    strategies: Optional[str] = typer.Option(None, "--strategies", help="only these (default: every one)"),
    as_json: bool = typer.Option(False, "--json", help="print the rows as JSON"),
) -> None:
    """Each strategy at its largest n within a FLOPs budget against a baseline, with paired errors."""
    from scalelab.testtime.compare_strategies import compare_at_budget

    name, _, k = budget.partition(":")
    if not name or not k.isdigit():
        raise InputError(f"--budget {budget!r}: expected STRATEGY:N, e.g. majority:16")
    rows = compare_at_budget(runs, baseline=baseline, budget=(name, int(k)),
                             difficulties=_ints(difficulties, "--difficulties") if difficulties else None,
                             strategies=_names(strategies, "--strategies") if strategies else None)
    if as_json:
        from scalelab.records import dumps_json

        print(dumps_json(rows))
        return
    print(f"{'strategy':<24}{'steps':>7}{'n':>4}{'FLOPs/q':>10}{'budget':>10}{'accuracy':>10}{'± se':>7}"
          f"{baseline:>9}{'gap':>8}{'± se':>7}")
    for r in rows:
        n = "" if r["n"] is None else r["n"]
        print(f"{r['strategy']:<24}{r['steps']:>7}{n:>4}{_fmt(r['flops']):>10}{_fmt(r['budget_flops']):>10}"
              f"{r['accuracy']:>10.3f}{r['accuracy_se']:>7.3f}{r['baseline']:>9.3f}{100 * r['gap']:>+7.1f}pt"
              f"{100 * r['gap_se']:>5.1f}")
