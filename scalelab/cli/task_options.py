"""The `--task FILE` options, shared by every verb that evaluates, samples or verifies on a task
(`testtime`, `testtime train-verifier`, `posttrain ...`): one spelling and one help text each. The
fields they fill are `scalelab.tasks.options.TaskOptions`."""
from __future__ import annotations

from typing import Any, Optional

import typer

TASK = typer.Option(None, "--task", help="testbed (default) or a task file: .jsonl, .json, .csv, .tsv or .parquet (also .gz, .bz2, .xz) "
                    "(see `scalelab tasks show FILE`)")
TASK_FORMAT = typer.Option("auto", "--task-format", help="auto, gsm8k, math, choice, number, exact or regex")
TASK_FIELD = typer.Option([], "--task-field", help="ROLE=COLUMN (roles: prompt answer solution choices difficulty "
                          "id split); repeatable")
TASK_REGEX = typer.Option(None, "--task-regex", help="regex format: the first capture group is the answer")
CHAT = typer.Option("auto", "--chat", help="auto, on or off: prompt with the tokenizer's chat template")
SYSTEM = typer.Option(None, "--system", help="system text before the question")
FEWSHOT = typer.Option(None, "--fewshot", help="few-shot examples: a file in the task's format")
SHOTS = typer.Option(0, "--shots", help="few-shot examples per prompt")
MAX_NEW = typer.Option(None, "--max-new-tokens", help="task file: tokens one completion may take (default 256)")
STOP = typer.Option([], "--stop", help="stop string (repeatable; default: the plain template's next 'Question:')")
STEP_SPLIT = typer.Option("lines", "--step-split", help="how a PRM cuts free text into steps: lines, paragraphs "
                          "or regex:PATTERN")


def task_fields(task: Optional[str], task_format: str, task_field: list[str], task_regex: Optional[str], chat: str,
                system: Optional[str], fewshot: Optional[str], shots: int, max_new_tokens: Optional[int],
                stop: list[str], step_split: str) -> dict[str, Any]:
    """Config fields for the task options given on the command line (none for the testbed)."""
    from scalelab.tasks.options import task_overrides

    return task_overrides(task, task_format, task_field, task_regex, chat, system, fewshot, shots, max_new_tokens,
                          stop, step_split)


def difficulty_labels(text: Optional[str], ints: Any, what: str = "--difficulties") -> Optional[list[Any]]:
    """'1-8' -> [1..8] (steps or numeric bins); 'easy,hard' -> ['easy', 'hard'] (a task file's text bins)."""
    if text is None:
        return None
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if all(p.lstrip("-").replace("-", "").isdigit() for p in parts):
        return ints(text, what)
    return parts


# (parameter, type, option): what `with_task_options` adds to a command
_PARAMS = (("task", Optional[str], TASK), ("task_format", str, TASK_FORMAT), ("task_field", list[str], TASK_FIELD),
           ("task_regex", Optional[str], TASK_REGEX), ("chat", str, CHAT), ("system", Optional[str], SYSTEM),
           ("fewshot", Optional[str], FEWSHOT), ("shots", int, SHOTS), ("max_new_tokens", Optional[int], MAX_NEW),
           ("stop", list[str], STOP), ("step_split", str, STEP_SPLIT))


def with_task_options(fn: Any) -> Any:
    """A command with every task option added to its signature (typer reads the signature); the
    command receives them as one `task_options` argument, the config fields of `task_fields`. Twelve
    post-training verbs share the options this way instead of repeating eleven parameters each."""
    import functools
    import inspect

    sig = inspect.signature(fn, eval_str=True)
    own = [p for p in sig.parameters.values() if p.name != "task_options"]
    added = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=opt, annotation=ann)
             for name, ann, opt in _PARAMS]

    @functools.wraps(fn)
    def command(**kw: Any) -> Any:
        given = [kw.pop(name) for name, _, _ in _PARAMS]
        return fn(**kw, task_options=task_fields(*given))

    command.__signature__ = sig.replace(parameters=[p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own]
                                        + added)
    command.__annotations__ = {p.name: p.annotation for p in own + added}
    return command
