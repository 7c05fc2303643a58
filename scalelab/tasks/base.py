"""The Task protocol: what a model is asked and how its answer is judged.

A task gives problems (hashable, with a split and an optional difficulty), renders a problem as
the prompt the model reads, extracts and verifies the answer of a completion, says how likely a
guess is to pass, how many tokens a solution may need, and how free text splits into steps for
process reward models. Strategies, verifiers, evaluation and post-training call only these
methods, so a new task (the testbed, a user's task file) needs no change outside `scalelab.tasks`.

Model output is untrusted text: `verify` parses it with bounded work and never evaluates it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Hashable, Protocol, Sequence, runtime_checkable


@dataclass(frozen=True)
class Verdict:
    """One completion judged against one problem."""

    correct: bool                 # the unit of accuracy (a testbed worked solution: every step and the answer)
    answer: Hashable | None       # the extracted, normalised final answer; None when none was found
    answer_correct: bool          # the final answer alone
    steps_correct: tuple[bool, ...] = ()   # per step, where the task can check steps
    well_formed: bool = True      # the completion follows the task's format


@runtime_checkable
class Task(Protocol):
    """Problems, prompts, answers and verdicts (see the module docstring)."""

    name: str

    def problems(self, split: str, n: int, *, difficulty: Hashable | None = None, seed: int = 0) -> list[Any]:
        """Up to n distinct problems of a split (and of one difficulty, where the task has them)."""
        ...

    def difficulty(self, problem: Any) -> Hashable | None: ...

    def prompt(self, problem: Any) -> str:
        """The text the model reads before its completion."""
        ...

    def reference(self, problem: Any) -> str:
        """A reference completion (worked solution) for supervised fine-tuning."""
        ...

    def verify(self, problem: Any, completion: str) -> Verdict: ...

    def chance(self, problem: Any) -> float:
        """Probability that a uniform guess is counted correct (the accuracy floor)."""
        ...

    def max_tokens(self, problem: Any) -> int:
        """Generation budget for one completion."""
        ...

    def split_steps(self, text: str) -> list[str]:
        """A completion cut into steps for process reward models (concatenation gives the text back)."""
        ...

    def is_answer_line(self, step: str) -> bool:
        """Whether a step states the final answer (a search stops expanding a beam there)."""
        ...


def split_lines(text: str) -> list[str]:
    """Lines with their newline kept; a last line without one is kept too."""
    out, start = [], 0
    for i, ch in enumerate(text):
        if ch == "\n":
            out.append(text[start:i + 1])
            start = i + 1
    if start < len(text):
        out.append(text[start:])
    return out


def max_tokens_of(task: Task, problems: Sequence[Any]) -> int:
    return max(task.max_tokens(p) for p in problems)
