"""Which task a stage runs on, and how its prompts are made: one set of typed fields that every
config which evaluates, samples or verifies inherits (test-time evaluation, reward-model training,
post-training), so that `--task FILE` and its options mean the same thing on every verb.

    class TesttimeConfig(TaskOptions): ...
    task = cfg.load_task(tokenizer)          # TestbedTask or FileTask, both `Task`s

`task = "testbed"` (the default) is the embedded arithmetic testbed and ignores the other fields;
anything else is a task file read by `scalelab.tasks.files.load_task`. `task_key()` is what a run
id hashes: nothing for the testbed (so testbed run ids are the ones written before task files
existed) and the file's content hash plus the prompting fields for a file (so editing the file or
the prompt gives new runs instead of resuming stale ones).
"""
from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path
from typing import Any, Optional

from pydantic import Field, field_validator

from scalelab.config import Config
from scalelab.errors import InputError

TESTBED = "testbed"
TASK_FIELDS = ("task", "task_format", "task_fields", "task_regex", "chat", "system", "fewshot", "shots",
               "template", "max_new_tokens", "stop", "step_split")


class TaskOptions(Config):
    task: str = Field(TESTBED, description="testbed, or a task file (.jsonl, .json, .csv, .tsv, .parquet; optionally .gz)")
    task_format: str = Field("auto", description="auto | gsm8k | math | choice | number | exact | regex")
    task_fields: list[str] = Field(default_factory=list, description="ROLE=COLUMN mappings")
    task_regex: Optional[str] = Field(None, description="regex format: the first group is the answer")
    chat: str = Field("auto", description="auto | on | off: the tokenizer's chat template")
    system: Optional[str] = Field(None, description="system text before the question")
    fewshot: Optional[str] = Field(None, description="few-shot examples: a file in the task's format")
    shots: int = Field(0, ge=0, le=64, description="few-shot examples in each prompt")
    template: str = Field("Question: {prompt}\nAnswer:", description="plain prompt; {prompt} is the question")
    max_new_tokens: int = Field(256, ge=1, le=100_000, description="task file: generation budget per completion")
    stop: Optional[list[str]] = Field(None, description="stop strings (default: the template's next question)")
    step_split: str = Field("lines", description="lines | paragraphs | regex:PATTERN (process reward models)")

    @field_validator("stop")
    @classmethod
    def _stops(cls, v: Optional[list[str]]) -> Optional[list[str]]:
        if v is not None and any(not s for s in v):
            raise ValueError("stop strings must not be empty")
        return v

    @property
    def on_testbed(self) -> bool:
        return self.task == TESTBED

    def task_key(self) -> dict[str, Any]:
        if self.on_testbed:
            return {}
        key = {k: getattr(self, k) for k in TASK_FIELDS if k != "task"}
        key.update(task_sha=file_sha(self.task), fewshot_sha=file_sha(self.fewshot) if self.fewshot else None)
        return key

    def task_name(self) -> str:
        return TESTBED if self.on_testbed else Path(self.task).name

    def task_for(self, engine: Any, name: str) -> Any:
        """The task for a policy engine: the testbed (its tokenizer checked: strategies write testbed
        text) or the task file prompted with the policy's tokenizer (its chat template, its BOS)."""
        if self.on_testbed:
            from scalelab.tasks.testbed import check_testbed_tokenizer

            check_testbed_tokenizer(engine, name)
        return self.load_task(engine.tokenizer)

    def load_task(self, tokenizer: Any = None, **testbed: Any) -> Any:
        """The task these options name: the testbed (its own keyword arguments) or a `FileTask`."""
        if self.on_testbed:
            from scalelab.tasks.testbed import TestbedTask

            return TestbedTask(**testbed)
        from scalelab.tasks.files import load_task

        return load_task(self.task, self.task_format, self.task_fields, self.task_regex, fewshot=self.fewshot,
                         shots=self.shots, system=self.system, chat=self.chat, tokenizer=tokenizer,
                         template=self.template, max_new_tokens=self.max_new_tokens, stop=self.stop,
                         steps=self.step_split)


def task_overrides(task: Optional[str], task_format: str = "auto", task_fields: Optional[list[str]] = None,
                   task_regex: Optional[str] = None, chat: str = "auto", system: Optional[str] = None,
                   fewshot: Optional[str] = None, shots: int = 0, max_new_tokens: Optional[int] = None,
                   stop: Optional[list[str]] = None, step_split: str = "lines") -> dict[str, Any]:
    """The command-line task options as config fields; prompting options without `--task FILE` are refused
    (they would be silently ignored on the testbed)."""
    on_file = task is not None and task != TESTBED
    given = [flag for flag, v, default in (
        ("--task-format", task_format, "auto"), ("--task-field", task_fields or [], []), ("--task-regex", task_regex, None),
        ("--chat", chat, "auto"), ("--system", system, None), ("--fewshot", fewshot, None), ("--shots", shots, 0),
        ("--max-new-tokens", max_new_tokens, None), ("--stop", stop or [], []), ("--step-split", step_split, "lines"))
        if v != default]
    if given and not on_file:
        from scalelab.errors import ConfigError

        raise ConfigError(f"{given[0]} applies to a task file: add --task FILE (the testbed has its own prompts)")
    if not on_file:
        return {}
    out: dict[str, Any] = dict(task=task, task_format=task_format, task_fields=list(task_fields or []),
                               task_regex=task_regex, chat=chat, system=system, fewshot=fewshot, shots=shots,
                               stop=list(stop) if stop else None, step_split=step_split)
    if max_new_tokens is not None:
        out["max_new_tokens"] = max_new_tokens
    return out


@lru_cache(maxsize=64)
def _sha(path: str, size: int, mtime: float) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def file_sha(path: str) -> str:
    p = Path(path)
    if not p.is_file():
        raise InputError(f"--task {path}: " + ("a folder, not a task file" if p.is_dir() else "no such file"))
    st = p.stat()
    return _sha(str(p), st.st_size, st.st_mtime)
