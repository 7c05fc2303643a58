"""`scalelab posttrain reward-model | rlvr | rlhf | rlaif | dpo | rft`: the feedback and RL
techniques, on the same `posttrain` group as the others. Parsing and printing only; the work is in
`scalelab.posttrain` (rewardmodel.py, rl.py, dpo.py, rft.py)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from scalelab.cli.app import JSON_RECORD, TRACKER
from scalelab.cli.posttrain import DIFFS, FROM, LR, PROBLEMS, RUNS, SET, THREADS, _go, _summary, locals_of, pt
from scalelab.cli.task_options import with_task_options
from scalelab.errors import InputError

DATA_STEPS = typer.Option(None, "--data-steps", help="difficulties of the training questions, e.g. 2-3")
DATA = typer.Option(None, "--data", help="testbed | FILE.jsonl (prompt/chosen/rejected or prompt/completion/label)")
STEPS = typer.Option(None, "--steps", help="policy-update batches (default 200)")
KL = typer.Option(None, "--kl-coef", help="weight of KL(policy || reference)")
ALGO = typer.Option(None, "--algorithm", help="grpo | rloo")
GROUP = typer.Option(None, "--group-size", help="samples per question (default 8)")
PROMPTS = typer.Option(None, "--prompts-per-step", help="questions per batch (default 16)")
REF = typer.Option(None, "--reference", help="reference policy for the KL term (default: the parent)")
NEG = typer.Option(None, "--negative-weight", help="scale of negative advantages (1: GRPO; 0: reinforce only the better samples)")


def _run(name: str, fields: dict[str, Any], sets: list[str], runs_dir: Path, threads: Optional[int]) -> Any:
    return _go(name, fields, sets, runs_dir, threads, show=False)


def _curve(rec: Any) -> None:
    """The curve points of an RL or RFT run: FLOPs, reward, sampled and greedy accuracy."""
    curve = rec.metrics.get("curve") or []
    if not curve:
        return
    key = "round" if "round" in curve[0] else "step"
    print(f"{key:>6}{'post FLOPs':>12}{'reward':>9}{'sampled':>9}{'greedy':>9}{'greedy rwd':>11}{'KL':>8}  (held-out val)")
    for c in curve:
        f = lambda k, w, p=3: f"{c[k]:>{w}.{p}f}" if c.get(k) is not None else f"{'-':>{w}}"  # noqa: E731
        print(f"{c[key]:>6}{c['posttrain_flops']:>12.3g}{f('reward', 9)}{f('sample_accuracy', 9)}"
              f"{f('greedy_accuracy', 9)}{f('greedy_reward', 11)}{f('kl', 8, 2)}")


@pt.command("reward-model")
@with_task_options
def reward_model_cmd(parent: str = FROM, data: Optional[str] = DATA,
                     feedback: Optional[str] = typer.Option(None, "--feedback", help="testbed: pairs | thumbs"),
                     problems: Optional[int] = typer.Option(None, "--problems", help="testbed: questions sampled"),
                     samples: Optional[int] = typer.Option(None, "--samples", help="testbed: samples per question"),
                     init: Optional[str] = typer.Option(None, "--init", help="parent | RUN (same tokenizer)"),
                     epochs: Optional[int] = typer.Option(None, "--epochs"), lr: Optional[float] = LR,
                     data_steps: Optional[str] = DATA_STEPS, threads: Optional[int] = THREADS,
                     sets: list[str] = SET, runs_dir: Path = RUNS, tracker: Optional[str] = TRACKER, as_json: bool = JSON_RECORD,
                     task_options: Optional[dict] = None) -> None:
    """A reward model from preference pairs (Bradley-Terry) or thumbs labels; held-out pairwise accuracy."""
    rec = _run("reward-model", locals_of(locals()), sets, runs_dir, threads)
    m = rec.metrics
    print(f"{rec.run_id} (reward model, parent {rec.parent_id}, init {m['init']}; {m['feedback']})")
    for split in ("train", "heldout"):
        if f"{split}_pairwise_accuracy" in m:
            why = ", ".join(f"{k} {v:.3f}" for k, v in m[f"{split}_pairwise_accuracy_by_reason"].items())
            print(f"  {split:<8} pairwise accuracy {m[f'{split}_pairwise_accuracy']:.3f} on {m[f'{split}_pairs']} pairs ({why})")
        if f"{split}_label_accuracy" in m:
            print(f"  {split:<8} label accuracy {m[f'{split}_label_accuracy']:.3f}, AUC {m[f'{split}_label_auc']:.3f} "
                  f"on {m[f'{split}_labels']} labels")
    parts = ", ".join(f"{k} {v:.3g}" for k, v in rec.posttrain_ledger.items())
    print(f"post-training FLOPs {sum(rec.posttrain_ledger.values()):.3g} ({parts}) -> {runs_dir / rec.run_id}")


def _rl(name: str, fields: dict[str, Any], sets: list[str], runs_dir: Path, threads: Optional[int]) -> None:
    rec = _run(name, fields, sets, runs_dir, threads)
    _curve(rec)
    _summary(rec, runs_dir)
    if rec.metrics.get("reward_failures"):
        print(f"reward failed on {rec.metrics['reward_failures']} of {rec.metrics['samples']} samples (left out of the "
              f"updates); first: {rec.metrics['reward_errors'][0]}")


@pt.command("rlvr")
@with_task_options
def rlvr_cmd(parent: str = FROM, steps: Optional[int] = STEPS, algorithm: Optional[str] = ALGO,
             group_size: Optional[int] = GROUP, prompts_per_step: Optional[int] = PROMPTS,
             kl_coef: Optional[float] = KL, negative_weight: Optional[float] = NEG, lr: Optional[float] = LR,
             data_steps: Optional[str] = DATA_STEPS,
             reference: Optional[str] = REF, eval_problems: Optional[int] = PROBLEMS,
             eval_difficulties: Optional[str] = DIFFS, threads: Optional[int] = THREADS,
             sets: list[str] = SET, runs_dir: Path = RUNS, tracker: Optional[str] = TRACKER, as_json: bool = JSON_RECORD,
             task_options: Optional[dict] = None) -> None:
    """RL with verifiable rewards: GRPO (or RLOO) with the exact verifier as the reward."""
    _rl("rlvr", locals_of(locals()), sets, runs_dir, threads)


@pt.command("rlhf")
@with_task_options
def rlhf_cmd(parent: str = FROM, reward_model: str = typer.Option(..., "--reward-model", help="reward-model run"),
             steps: Optional[int] = STEPS, algorithm: Optional[str] = ALGO, group_size: Optional[int] = GROUP,
             prompts_per_step: Optional[int] = PROMPTS, kl_coef: Optional[float] = KL,
             negative_weight: Optional[float] = NEG, lr: Optional[float] = LR,
             data_steps: Optional[str] = DATA_STEPS, reference: Optional[str] = REF,
             eval_problems: Optional[int] = PROBLEMS, eval_difficulties: Optional[str] = DIFFS,
             threads: Optional[int] = THREADS, sets: list[str] = SET, runs_dir: Path = RUNS,
             tracker: Optional[str] = TRACKER, as_json: bool = JSON_RECORD,
             task_options: Optional[dict] = None) -> None:
    """RLHF: GRPO (or RLOO) against a learned reward model, with a KL penalty to the reference."""
    _rl("rlhf", locals_of(locals()), sets, runs_dir, threads)


@pt.command("rlaif")
@with_task_options
def rlaif_cmd(parent: str = FROM, judge: str = typer.Option(..., "--judge", help="larger model run, or a reward model on it"),
              judge_mode: Optional[str] = typer.Option(None, "--judge-mode", help="likelihood judge: min | mean"),
              steps: Optional[int] = STEPS, algorithm: Optional[str] = ALGO, group_size: Optional[int] = GROUP,
              prompts_per_step: Optional[int] = PROMPTS, kl_coef: Optional[float] = KL,
             negative_weight: Optional[float] = NEG, lr: Optional[float] = LR,
              data_steps: Optional[str] = DATA_STEPS, reference: Optional[str] = REF,
              eval_problems: Optional[int] = PROBLEMS, eval_difficulties: Optional[str] = DIFFS,
              threads: Optional[int] = THREADS, sets: list[str] = SET, runs_dir: Path = RUNS,
              tracker: Optional[str] = TRACKER, as_json: bool = JSON_RECORD,
              task_options: Optional[dict] = None) -> None:
    """RLAIF: GRPO (or RLOO) against an AI judge (a larger model's judgement, not the verifier)."""
    _rl("rlaif", locals_of(locals()), sets, runs_dir, threads)


@pt.command("dpo")
@with_task_options
def dpo_cmd(parent: str = FROM, data: Optional[str] = DATA,
            beta: Optional[float] = typer.Option(None, "--beta", help="KL strength (default 0.1)"),
            epochs: Optional[int] = typer.Option(None, "--epochs"), lr: Optional[float] = LR,
            reference: Optional[str] = REF, data_steps: Optional[str] = DATA_STEPS,
            eval_problems: Optional[int] = PROBLEMS, eval_difficulties: Optional[str] = DIFFS,
            threads: Optional[int] = THREADS, sets: list[str] = SET, runs_dir: Path = RUNS,
            tracker: Optional[str] = TRACKER, as_json: bool = JSON_RECORD,
            task_options: Optional[dict] = None) -> None:
    """Direct preference optimisation on pairs (a JSONL file, or the parent's ranked testbed samples)."""
    rec = _run("dpo", locals_of(locals()), sets, runs_dir, threads)
    _summary(rec, runs_dir)


@pt.command("rft")
@with_task_options
def rft_cmd(parent: str = FROM, rounds: Optional[int] = typer.Option(None, "--rounds"),
            questions: Optional[int] = typer.Option(None, "--questions", help="training questions per round"),
            samples: Optional[int] = typer.Option(None, "--samples", help="n per question"),
            sampler: Optional[str] = typer.Option(None, "--sampler", help="sample | cot | beam_search | dvts | revision"),
            keep: Optional[str] = typer.Option(None, "--keep", help="verified | reward-best | all"),
            orm: Optional[str] = typer.Option(None, "--orm"), prm: Optional[str] = typer.Option(None, "--prm"),
            lora_rank: Optional[int] = typer.Option(None, "--lora-rank"), lr: Optional[float] = LR,
            data_steps: Optional[str] = DATA_STEPS, eval_problems: Optional[int] = PROBLEMS,
            eval_difficulties: Optional[str] = DIFFS, threads: Optional[int] = THREADS,
            sets: list[str] = SET, runs_dir: Path = RUNS, tracker: Optional[str] = TRACKER, as_json: bool = JSON_RECORD,
            task_options: Optional[dict] = None) -> None:
    """Rejection-sampling fine-tuning / expert iteration, best-of-n distillation, search as the sampler."""
    rec = _run("rft", locals_of(locals()), sets, runs_dir, threads)
    _curve(rec)
    _summary(rec, runs_dir)


@pt.command("plot-rl")
def plot_rl_cmd(runs: Path = typer.Argument(..., help="runs directory with rlvr/rlhf/rlaif/rft/dpo records"),
                out: Path = typer.Option(..., "--out", help="PNG: held-out accuracy against the stage's FLOPs"),
                overopt: Optional[Path] = typer.Option(None, "--overopt", help="PNG: rlhf proxy reward and verifier "
                                                       "accuracy against KL")) -> None:
    """Accuracy against RL FLOPs for every RL-family run, and the reward over-optimisation curve."""
    import sys

    from scalelab.cli.fit import check_figures
    from scalelab.posttrain.rlcurves import plot_overoptimisation, plot_rl, rl_table

    check_figures(("--out", out), ("--overopt", overopt))
    df = rl_table(runs)
    last = df.sort_values("flops").groupby("run_id").tail(1).sort_values(["label", "flops"])
    first = df.sort_values("flops").groupby("run_id").head(1).set_index("run_id")
    w = max(map(len, last.label)) + 2
    print(f"{'run':<34}{'technique':<{w}}{'stage FLOPs':>12}{'start':>8}{'end':>8}")
    for r in last.itertuples():
        print(f"{r.run_id[-33:]:<34}{r.label:<{w}}{r.flops:>12.3g}{first.greedy_accuracy[r.run_id]:>8.3f}"
              f"{r.greedy_accuracy:>8.3f}")
    print(f"wrote {plot_rl(runs, out)}", file=sys.stderr)
    if overopt is not None:
        print(f"wrote {plot_overoptimisation(runs, overopt)}", file=sys.stderr)


@pt.command("compare")
def compare_cmd(runs: list[str] = typer.Argument(..., help="the base run, then the runs to compare with it"),
                split: str = typer.Option("test", "--split", help="val | test | train"),
                problems: int = typer.Option(1000, "--problems", help="problems per difficulty"),
                difficulties: Optional[str] = typer.Option(None, "--difficulties", help="e.g. 2-4 (default: all)"),
                seed: int = typer.Option(0, "--seed"), threads: Optional[int] = THREADS,
                as_json: bool = typer.Option(False, "--json")) -> None:
    """Greedy accuracy of runs on the same problems, and each one's paired change against the first."""
    from scalelab.records import dumps_json

    from scalelab.cli.testtime import _ints, _progress, _setup
    from scalelab.posttrain.compare_runs import compare

    _setup(threads)
    if split not in ("val", "test", "train"):
        raise InputError(f"--split {split!r}: expected val, test or train")
    if problems < 1:
        raise InputError(f"--problems {problems}: expected >= 1")
    ds = _ints(difficulties, "--difficulties") if difficulties else None
    with _progress() as bar:
        task = bar.add_task("models", total=len(runs))
        cmp = compare(runs, split=split, problems=problems, difficulties=ds, seed=seed,
                      progress=lambda s, d, t: bar.update(task, completed=d))
    if as_json:
        print(dumps_json(cmp.as_dict()))
        return
    ds = cmp.difficulties
    n = "/".join(str(cmp.correct[(cmp.models[0], d)].size) for d in ds)
    print(f"greedy accuracy on {split} problems ({n} per difficulty {','.join(map(str, ds))}), change against "
          f"{cmp.models[0]} with paired standard errors")
    print(f"{'run':<46}" + "".join(f"{f'{d} steps':>18}" for d in ds) + f"{'pooled':>18}")
    for m in cmp.models:
        cells = []
        for d in ds:
            acc = cmp.accuracy(m, d)
            cells.append(f"{acc:.3f}" if m == cmp.models[0] else f"{acc:.3f} {cmp.delta(m, [d])[0]:+.3f}")
        pooled = "" if m == cmp.models[0] else "{:+.3f} +- {:.3f}".format(*cmp.delta(m, ds)[:2])
        print(f"{m[-45:]:<46}" + "".join(f"{c:>18}" for c in cells) + f"{pooled:>18}")
