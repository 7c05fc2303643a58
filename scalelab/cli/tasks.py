"""`scalelab tasks show / score / export / generate`: look at a task file, score completions against
it, write the testbed or generated word problems as task files. Parsing and printing only; the
work is in `scalelab.tasks.files` and `scalelab.tasks.wordproblems`."""
from __future__ import annotations

import sys
from typing import Optional

import typer

from scalelab.cli.app import app
from scalelab.records import dumps_json
from scalelab.errors import InputError

tk = typer.Typer(help="Task files: show one, score completions, export the testbed, generate word problems.",
                 no_args_is_help=True, context_settings={"help_option_names": ["-h", "--help"]})
app.add_typer(tk, name="tasks")
_FORMAT = typer.Option("auto", "--format", help="auto, gsm8k, math, choice, number, exact or regex")
_FIELD = typer.Option([], "--field", help="ROLE=COLUMN (roles: prompt answer solution choices difficulty id split)")
_REGEX = typer.Option(None, "--regex", help="regex format: the first capture group is the answer")


@tk.command("show")
def show_cmd(
    file: str = typer.Argument(..., help="task file: .jsonl, .json, .csv, .tsv or .parquet (also .gz, .bz2, .xz)"),
    fmt: str = _FORMAT, field: list[str] = _FIELD, regex: Optional[str] = _REGEX,
    model: Optional[str] = typer.Option(None, "--model", help="render with this model's tokenizer (chat template)"),
    chat: str = typer.Option("auto", "--chat", help="auto, on or off: use the tokenizer's chat template"),
    system: Optional[str] = typer.Option(None, "--system", help="system text before the question"),
    fewshot: Optional[str] = typer.Option(None, "--fewshot", help="few-shot examples: a file in the same format"),
    shots: int = typer.Option(0, "--shots", help="how many few-shot examples to show the model"),
    template: str = typer.Option("Question: {prompt}\nAnswer:", "--template", help="plain prompt; {prompt} is the question"),
    split: Optional[str] = typer.Option(None, "--split", help="show examples of this split (it must exist)"),
    examples: int = typer.Option(2, "--examples", help="problems to print as the model sees them"),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
) -> None:
    """Detected format, problem count, splits and difficulty bins, and the first prompts."""
    from scalelab.tasks.files import load_task, summary
    from scalelab.tasks.prompting import load_tokenizer

    if examples < 0:
        raise InputError(f"--examples {examples}: expected 0 or more")
    tok = load_tokenizer(model) if model else None
    task = load_task(file, fmt, field, regex, fewshot=fewshot, shots=shots, system=system, chat=chat, tokenizer=tok,
                     template=template)
    out = summary(task, examples, split=split)
    print(f"note: detected {task.detected}" if fmt == "auto" else f"note: format {task.detected}", file=sys.stderr)
    if as_json:
        print(dumps_json(out, ensure_ascii=False))
        return
    print(f"format      {out['format']}\nproblems    {out['n_problems']}")
    print("splits      " + ", ".join(f"{k}: {v}" for k, v in out["splits"].items()))
    print("difficulty  " + (", ".join(f"{k}: {v}" for k, v in out["difficulties"].items()) or "none"))
    print(f"prompts     {'chat template' if out['chat_template'] else 'plain template'}; stop {out['stop']}")
    for ex in out["examples"]:
        print(f"\n--- problem {ex['id']} (answer {ex['answer']!r}) ---\n{ex['prompt']}")


@tk.command("score")
def score_cmd(
    file: str = typer.Argument(..., help="task file"),
    completions: str = typer.Option(..., "--completions", help="JSONL: one {\"completion\": ...} a line (with \"id\" or in order)"),
    fmt: str = _FORMAT, field: list[str] = _FIELD, regex: Optional[str] = _REGEX,
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
) -> None:
    """Score completions against the task file's answers."""
    from scalelab.tasks.files import load_task, score

    result = score(load_task(file, fmt, field, regex), completions)
    if as_json:
        print(dumps_json({"accuracy": result["accuracy"], "correct": result["correct"]}))
        return
    for pid, ok, ans in zip(result["ids"], result["correct"], result["answers"]):
        print(f"{pid}\t{'correct' if ok else 'wrong'}\t{ans}")
    print(f"accuracy {result['accuracy']:.4f} ({sum(result['correct'])}/{result['n']})")


@tk.command("export")
def export_cmd(
    source: str = typer.Argument(..., help="what to export: testbed"),
    difficulties: str = typer.Option("1-8", "--difficulties", help="steps per problem, e.g. 1-4"),
    problems: int = typer.Option(50, "--problems", help="problems per difficulty (as scalelab testtime --problems)"),
    fmt: str = typer.Option("gsm8k", "--format", help="gsm8k"),
    seed: int = typer.Option(0, "--seed", help="as scalelab testtime --seed"),
    out: str = typer.Option(..., "--out", help="FILE.jsonl to write"),
    force: bool = typer.Option(False, "--force", help="overwrite an existing file"),
) -> None:
    """Write the testbed's test problems (the ones `scalelab testtime` evaluates) as a GSM8K-format file."""
    from scalelab.tasks.wordproblems import testbed_rows, write_jsonl

    _check_written(out, seed)
    if source != "testbed":
        raise InputError(f"tasks export {source!r}: only 'testbed' can be exported")
    if fmt != "gsm8k":
        raise InputError(f"--format {fmt!r}: the testbed is exported as gsm8k")
    if problems < 1:
        raise InputError("--problems must be at least 1")
    from scalelab.cli.testtime import _ints

    rows = testbed_rows(_ints(difficulties, "--difficulties"), problems, seed=seed)
    print(f"wrote {write_jsonl(out, rows, force=force)} ({len(rows)} problems)")


@tk.command("generate")
def generate_cmd(
    fmt: str = typer.Option("gsm8k", "--format", help="gsm8k, math or choice"),
    problems: int = typer.Option(..., "--problems", help="how many problems (train and test together)"),
    max_ops: int = typer.Option(4, "--max-ops", help="difficulty dial: problems have 1..MAX_OPS operations"),
    seed: int = typer.Option(0, "--seed"),
    out: str = typer.Option(..., "--out", help="FILE.jsonl to write"),
    force: bool = typer.Option(False, "--force", help="overwrite an existing file"),
) -> None:
    """Generate seeded word problems (train/test splits) as a task file."""
    from scalelab.tasks.wordproblems import generate, write_jsonl

    _check_written(out, seed)
    rows = generate(fmt, problems, seed=seed, max_ops=max_ops)
    print(f"wrote {write_jsonl(out, rows, force=force)} ({len(rows)} problems)")


def _check_written(out: str, seed: int) -> None:
    """What export and generate write is a plain JSONL task file that every verb can read back, drawn
    from a seed that `scalelab testtime --seed` also accepts."""
    from scalelab.cli.fit import check_outputs

    check_outputs(("--out", out))
    if not out.endswith(".jsonl"):
        raise InputError(f"--out {out}: a task file is written as JSONL; end the name in .jsonl")
    if seed < 0:
        raise InputError(f"--seed {seed}: expected 0 or more")
