"""`scalelab posttrain TECHNIQUE --from RUN ... --runs-dir DIR`: one subcommand per technique, plus
`plot`. Parsing and printing only; the work is in `scalelab.posttrain`. Options left unset keep the
technique's config defaults; any other config field goes through `--set key=value`."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Optional

import typer
from typer.core import TyperGroup

from scalelab.cli.app import JSON_RECORD, TRACKER, app
from scalelab.cli.task_options import difficulty_labels, with_task_options
from scalelab.cli.testtime import _ints, _progress, _setup
from scalelab.errors import InputError


class _Techniques(TyperGroup):
    """An unknown subcommand is a one-line error that lists the techniques (exit 2)."""

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        from scalelab.posttrain import TECHNIQUES

        if args and not args[0].startswith("-") and args[0] not in self.commands:
            raise InputError(f"unknown technique {args[0]!r}; known techniques: {', '.join(TECHNIQUES)}")
        return super().resolve_command(ctx, args)


pt = typer.Typer(cls=_Techniques, no_args_is_help=True, context_settings={"help_option_names": ["-h", "--help"]},
                 help="Post-training: fine-tune, distill, augment, prune, quantize; every child run with its FLOPs.")
app.add_typer(pt, name="posttrain")

FROM = typer.Option(..., "--from", help="parent run directory (a complete run with a checkpoint)")
RUNS = typer.Option(Path("runs"), "--runs-dir", help="where the child run goes (outside the parent)")
SET = typer.Option([], "--set", help="any other config field: key=value (repeatable)")
PROBLEMS = typer.Option(None, "--eval-problems", help="test problems per difficulty (default 50)")
DIFFS = typer.Option(None, "--eval-difficulties", help="testbed steps, e.g. 1-8, or a task file's difficulty bins "
                     "(default: all)")
THREADS = typer.Option(None, "--threads", help="torch threads (default: all cores)")
TEACHER = typer.Option(None, "--teacher", help="teacher run (same tokenizer)")
LR = typer.Option(None, "--lr", help="peak learning rate (default: from the parent's)")
EPOCHS = typer.Option(None, "--epochs")
EXAMPLES = typer.Option(None, "--examples", help="testbed examples (default 2000)")
DATA_STEPS = typer.Option(None, "--data-steps", help="testbed difficulties of the training data, e.g. 1-6")
LORA = typer.Option(None, "--lora-rank", help="LoRA rank (0 or unset: full fine-tuning)")


def _go(name: str, fields: dict[str, Any], sets: list[str], runs_dir: Path, threads: Optional[int], *,
        show: bool = True) -> Any:
    _setup(threads)
    from scalelab.posttrain import get_technique
    from scalelab.posttrain.stage import run_stage

    tech = get_technique(name)
    as_json = fields.pop("as_json", False)
    for key in ("data_steps", "target_steps"):
        if isinstance(fields.get(key), str):
            fields[key] = _ints(fields[key], "--" + key.replace("_", "-"))
    if isinstance(fields.get("eval_difficulties"), str):
        fields["eval_difficulties"] = difficulty_labels(fields["eval_difficulties"], _ints, "--eval-difficulties")
    cfg = tech.config.build({k: v for k, v in fields.items() if v is not None}).override(sets)
    with _progress() as bar:
        task = bar.add_task("loading", total=None)
        rec = run_stage(tech, cfg, runs_dir, progress=lambda s, d, t: bar.update(task, description=s, completed=d, total=t))
    if as_json:  # the record is the whole output: the command's tables are not printed
        from scalelab.records import dumps_json

        print(dumps_json(rec.model_dump()))
        raise typer.Exit(0)
    if show:
        _summary(rec, runs_dir)
    return rec


def _summary(rec: Any, runs_dir: Path) -> None:
    m = rec.metrics
    acc, par, ch = m["accuracy_by_difficulty"], m.get("parent_accuracy_by_difficulty") or {}, m["chance_by_difficulty"]
    print(f"{rec.run_id} ({rec.technique}, parent {rec.parent_id})")
    print(f"{'steps' if rec.task == 'testbed' else 'bin':>6}{'parent':>9}{'child':>9}{'chance':>10}")
    for d in acc:
        p = f"{par[d]:.3f}" if d in par else "-"
        print(f"{d:>6}{p:>9}{acc[d]:>9.3f}{ch[d]:>10.2g}")
    p = f"{m['parent_accuracy']:.3f}" if "parent_accuracy" in m else "-"
    print(f"{'mean':>6}{p:>9}{m['accuracy']:>9.3f}")
    parts = ", ".join(f"{k} {v:.3g}" for k, v in rec.posttrain_ledger.items()) or "no forward or backward passes"
    print(f"post-training FLOPs {sum(rec.posttrain_ledger.values()):.3g} ({parts})")
    loss = f"eval loss {m['eval_loss']:.4f}" + (f" (parent {m['parent_eval_loss']:.4f})" if "parent_eval_loss" in m else "")
    extra = [f"{k} {m[k]:.4g}" if isinstance(m[k], float) else f"{k} {m[k]}" for k in
             ("train_loss", "trainable_params", "sparsity", "size_ratio", "ms_per_generated_token",
              "parent_ms_per_generated_token", "synth_kept", "teacher_kept") if m.get(k) is not None]
    print("; ".join([loss] + extra) + f" -> {runs_dir / rec.run_id}")


@pt.command("sft")
@with_task_options
def sft_cmd(parent: str = FROM, lora_rank: Optional[int] = LORA,
            data: Optional[str] = typer.Option(None, "--data", help="testbed | FILE.jsonl (prompt, completion)"),
            examples: Optional[int] = EXAMPLES, data_steps: Optional[str] = DATA_STEPS, epochs: Optional[int] = EPOCHS,
            lr: Optional[float] = LR, trainer: Optional[str] = typer.Option(None, "--trainer", help="own | trl"),
            eval_problems: Optional[int] = PROBLEMS, eval_difficulties: Optional[str] = DIFFS,
            threads: Optional[int] = THREADS, sets: list[str] = SET, runs_dir: Path = RUNS,
            tracker: Optional[str] = TRACKER, as_json: bool = JSON_RECORD,
            task_options: Optional[dict] = None) -> None:
    """Supervised fine-tuning (full, or LoRA with --lora-rank) on worked solutions or a JSONL file."""
    _go("sft", dict(locals_of(locals())), sets, runs_dir, threads)


@pt.command("distill")
@with_task_options
def distill_cmd(parent: str = FROM, teacher: str = typer.Option(..., "--teacher", help="teacher run (same tokenizer)"),
                mode: Optional[str] = typer.Option(None, "--mode", help="logit | offline"),
                data: Optional[str] = typer.Option(None, "--data", help="logit: testbed | corpus | FILE.jsonl"),
                init: Optional[str] = typer.Option(None, "--init", help="parent | scratch (fresh weights)"),
                examples: Optional[int] = EXAMPLES, tokens: Optional[int] = typer.Option(None, "--tokens", help="corpus tokens"),
                samples: Optional[int] = typer.Option(None, "--samples", help="offline: solutions per question"),
                temperature: Optional[float] = typer.Option(None, "--temperature", help="offline: teacher sampling"),
                keep: Optional[str] = typer.Option(None, "--keep", help="offline: all | verified"),
                epochs: Optional[int] = EPOCHS, lr: Optional[float] = LR,
                eval_problems: Optional[int] = PROBLEMS, eval_difficulties: Optional[str] = DIFFS,
                threads: Optional[int] = THREADS, sets: list[str] = SET, runs_dir: Path = RUNS,
                tracker: Optional[str] = TRACKER, as_json: bool = JSON_RECORD,
                task_options: Optional[dict] = None) -> None:
    """Distil --teacher into the parent: logit-level KL, or offline on teacher-written solutions."""
    _go("distill", dict(locals_of(locals())), sets, runs_dir, threads)


@pt.command("synth")
@with_task_options
def synth_cmd(parent: str = FROM, teacher: Optional[str] = TEACHER,
              target_steps: Optional[str] = typer.Option(None, "--target-steps", help="scarce difficulties, e.g. 7-8"),
              data_steps: Optional[str] = DATA_STEPS, examples: Optional[int] = EXAMPLES,
              synth_problems: Optional[int] = typer.Option(None, "--synth-problems", help="questions the teacher answers"),
              samples: Optional[int] = typer.Option(None, "--samples", help="teacher samples per question"),
              temperature: Optional[float] = typer.Option(None, "--temperature"), lora_rank: Optional[int] = LORA,
              epochs: Optional[int] = EPOCHS, lr: Optional[float] = LR,
              eval_problems: Optional[int] = PROBLEMS, eval_difficulties: Optional[str] = DIFFS,
              threads: Optional[int] = THREADS, sets: list[str] = SET, runs_dir: Path = RUNS,
              tracker: Optional[str] = TRACKER, as_json: bool = JSON_RECORD,
              task_options: Optional[dict] = None) -> None:
    """Teacher-written, verifier-filtered solutions for scarce difficulties, mixed into fine-tuning."""
    _go("synth", dict(locals_of(locals())), sets, runs_dir, threads)


@pt.command("prune")
@with_task_options
def prune_cmd(parent: str = FROM,
              method: Optional[str] = typer.Option(None, "--method", help="magnitude | wanda | width | depth"),
              sparsity: Optional[float] = typer.Option(None, "--sparsity", help="share of non-embedding params removed"),
              target_params: Optional[int] = typer.Option(None, "--target-params", help="non-embedding params kept"),
              axes: Optional[str] = typer.Option(None, "--axes", help="width: heads,mlp,hidden"),
              recover_tokens: Optional[int] = typer.Option(None, "--recover-tokens", help="distillation tokens after"),
              lr: Optional[float] = LR, eval_problems: Optional[int] = PROBLEMS, eval_difficulties: Optional[str] = DIFFS,
              threads: Optional[int] = THREADS, sets: list[str] = SET, runs_dir: Path = RUNS,
              tracker: Optional[str] = TRACKER, as_json: bool = JSON_RECORD,
              task_options: Optional[dict] = None) -> None:
    """Unstructured (magnitude, Wanda) or structured (width, depth) pruning, then distillation."""
    fields = dict(locals_of(locals()))
    if axes is not None:
        fields["axes"] = [a.strip() for a in axes.split(",") if a.strip()]
    _go("prune", fields, sets, runs_dir, threads)


@pt.command("quantize")
@with_task_options
def quantize_cmd(parent: str = FROM,
                 method: Optional[str] = typer.Option(None, "--method", help="int8-weight | int8-dynamic | int4-weight"),
                 group_size: Optional[int] = typer.Option(None, "--group-size", help="int4: weights per scale"),
                 eval_problems: Optional[int] = PROBLEMS, eval_difficulties: Optional[str] = DIFFS,
                 threads: Optional[int] = THREADS, sets: list[str] = SET, runs_dir: Path = RUNS,
                 tracker: Optional[str] = TRACKER, as_json: bool = JSON_RECORD,
                 task_options: Optional[dict] = None) -> None:
    """torchao weight quantization: size on disk, latency and accuracy against the parent."""
    if group_size is not None and method != "int4-weight":
        raise InputError(f"--group-size applies to --method int4-weight, not {method or 'int8-weight (the default)'}")
    _go("quantize", dict(locals_of(locals())), sets, runs_dir, threads)


@pt.command("plot")
def plot_cmd(runs: Path = typer.Argument(..., help="runs directory with post-training records"),
             out: Path = typer.Option(..., "--out", help="PNG file")) -> None:
    """Accuracy against post-training FLOPs (one line per technique) and against pretraining FLOPs."""
    from scalelab.cli.fit import check_figures
    from scalelab.posttrain.plots import plot_posttrain
    from scalelab.tables import posttrain_table

    check_figures(("--out", out))
    df = posttrain_table(runs)
    mean = df[df.difficulty == "mean"].sort_values(["technique", "posttrain_flops"])
    print(f"{'technique':<24}{'post-training FLOPs':>20}{'accuracy':>10}{'parent':>8}  run")
    for r in mean.itertuples():
        print(f"{r.technique:<24}{r.posttrain_flops:>20.3g}{r.accuracy:>10.3f}{r.parent_accuracy:>8.3f}  {r.run_id}")
    print(f"wrote {plot_posttrain(runs, out)}", file=sys.stderr)


@pt.command("accept")
def accept_cmd(check: str = typer.Argument(..., help="sft | distill | prune | quantize | synth"),
               base: str = typer.Option(..., "--base", help="the base run the check starts from"),
               teacher: Optional[str] = typer.Option(None, "--teacher", help="distill (required), synth (optional)"),
               threads: Optional[int] = THREADS, sets: list[str] = SET, runs_dir: Path = RUNS) -> None:
    """One acceptance check of post-training (see docs/posttrain.md): runs its stages, prints the numbers and PASS or FAIL (exit 1)."""
    _setup(threads)
    import json

    from scalelab.posttrain.acceptance import check as run_check

    fields: dict[str, Any] = {"threads": threads} if threads else {}
    for item in sets:
        key, eq, raw = item.partition("=")
        if not eq:
            raise InputError(f"--set {item!r}: expected key=value")
        try:
            fields[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            fields[key.strip()] = raw
    if not run_check(check, base, str(runs_dir), teacher=teacher, sets=fields):
        raise typer.Exit(1)


def locals_of(values: dict[str, Any]) -> dict[str, Any]:
    """The command's config fields (its arguments, less the execution ones handled apart, with the
    task options spread out)."""
    out = {k: v for k, v in values.items() if k not in ("sets", "runs_dir", "task_options")}
    return {**out, **(values.get("task_options") or {})}
