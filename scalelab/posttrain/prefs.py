"""Feedback data for reward models and preference optimisation: pairs and thumbs.

Two kinds of user feedback, one JSONL file, one object per line (kinds may mix):

    {"prompt": "...", "chosen": "...", "rejected": "..."}      a preference pair
    {"prompt": "...", "completion": "...", "label": "up"}       unpaired thumbs-up / thumbs-down

`label` is true/false, 1/0, "up"/"down", "good"/"bad" or "+"/"-". A line with a missing, empty or
mistyped field is refused with its line number; nothing is trained on a half-read file.

Without a file the pairs are made from the policy's own samples on the task's training questions
(`testbed_pairs`, on the testbed or a task file): `samples` solutions per question at a
temperature, judged by the task's verifier plus one stated preference, so that a learned reward has
something besides correctness to learn:

    correct  >  incorrect                                  ("correct")
    correct and shorter  >  correct and longer             ("shorter": fewer lines, i.e. no
                                                            correction lines; InstructGPT-style
                                                            raters prefer the more concise answer)

Held-out evaluation splits by prompt (`split_by_prompt`), so no held-out pair shares a question
with a training pair.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from scalelab.errors import InputError

UP = {True, 1, "1", "up", "good", "+", "true", "thumbs_up"}
DOWN = {False, 0, "0", "down", "bad", "-", "false", "thumbs_down"}


@dataclass(frozen=True)
class Pair:
    prompt: str
    chosen: str
    rejected: str
    why: str = "user"          # user | correct | shorter
    steps: int | None = None   # testbed difficulty, when known


@dataclass(frozen=True)
class Thumb:
    prompt: str
    completion: str
    label: float               # 1.0 thumbs-up, 0.0 thumbs-down


@dataclass
class Feedback:
    pairs: list[Pair]
    thumbs: list[Thumb]
    source: str

    def __len__(self) -> int:
        return len(self.pairs) + len(self.thumbs)


def _label(v: Any) -> float | None:
    key = v.strip().lower() if isinstance(v, str) else v
    if isinstance(key, (str, bool, int, float)):  # a list or an object is no label (and unhashable)
        if key in UP:
            return 1.0
        if key in DOWN:
            return 0.0
    return None


def read_feedback(path: str | Path) -> Feedback:
    """Pairs and thumbs from a JSONL file (module docstring); one-line errors name the line."""
    from scalelab.posttrain.data import require_strings
    from scalelab.tables import jsonl_objects

    pairs, thumbs = [], []
    what = "feedback file (JSONL of prompt/chosen/rejected or prompt/completion/label)"
    for i, obj in jsonl_objects(path, what=what):
        if "chosen" in obj or "rejected" in obj:
            require_strings(path, i, obj, ("prompt", "chosen", "rejected"))
            if obj["chosen"] == obj["rejected"]:
                raise InputError(f"{path} line {i}: \"chosen\" and \"rejected\" are the same text")
            pairs.append(Pair(obj["prompt"], obj["chosen"], obj["rejected"]))
            continue
        require_strings(path, i, obj, ("prompt", "completion"))
        if "label" not in obj:
            raise InputError(f"{path} line {i}: missing field \"label\" (or \"chosen\"/\"rejected\" for a pair)")
        lab = _label(obj["label"])
        if lab is None:
            raise InputError(f"{path} line {i}: label {obj['label']!r} is not a thumbs-up or thumbs-down "
                             "(true/false, 1/0, up/down, good/bad, +/-)")
        thumbs.append(Thumb(obj["prompt"], obj["completion"], lab))
    if not pairs and not thumbs:
        raise InputError(f"{path}: no feedback (the file is empty)")
    return Feedback(pairs, thumbs, Path(path).name)


def n_lines(text: str) -> int:
    return sum(1 for ln in text.split("\n") if ln.strip())


def testbed_pairs(problems: Sequence[Any], texts: Sequence[Sequence[str]], *, max_pairs: int = 4,
                  seed: int = 0, shorter: bool = True, task: Any = None) -> list[Pair]:
    """Pairs from `texts[i]` (samples for problems[i]): correct > incorrect, and correct-and-
    shorter > correct-and-longer; at most `max_pairs` per problem, distinct texts only. `task`
    judges and prompts (default: the testbed)."""
    from scalelab.tasks.testbed import TestbedTask

    task = task if task is not None else TestbedTask()
    rng = np.random.default_rng(seed)
    out = []
    for p, row in zip(problems, texts):
        uniq = list(dict.fromkeys(t for t in row if t.strip()))
        good = [t for t in uniq if task.verify(p, t).correct]
        bad = [t for t in uniq if t not in good]
        cands = [(g, b, "correct") for g in good for b in bad]
        if shorter:
            cands += [(a, b, "shorter") for a in good for b in good if n_lines(a) < n_lines(b)]
        for j in rng.permutation(len(cands))[:max_pairs]:
            c, r, why = cands[j]
            d = task.difficulty(p)
            out.append(Pair(task.prompt(p), c, r, why, d if isinstance(d, int) else None))
    return out


def split_by_prompt(items: Sequence[Any], heldout: float, seed: int) -> tuple[list[Any], list[Any]]:
    """(train, held-out) with every prompt on one side only; about `heldout` of the prompts held out."""
    prompts = sorted({x.prompt for x in items})
    rng = np.random.default_rng(seed)
    k = int(round(heldout * len(prompts)))
    if heldout > 0 and len(prompts) > 1:
        k = min(max(k, 1), len(prompts) - 1)
    held = {prompts[i] for i in rng.permutation(len(prompts))[:k]}
    return [x for x in items if x.prompt not in held], [x for x in items if x.prompt in held]
