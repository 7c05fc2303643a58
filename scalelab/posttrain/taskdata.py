"""The task a post-training stage learns from and is scored on: the parent's arithmetic testbed (the
default, drawn exactly as before task files existed, so testbed run ids and numbers do not change)
or a user's task file (`--task FILE` and its prompting options, `scalelab.tasks.options.TaskOptions`).

    data = stage_data(cfg, parent)                  # TestbedData or FileData: the same methods
    data.bins(cfg.data_steps, "data_steps")         # difficulties of the training data (default: all)
    data.train_problems(n, bins, seed)              # training questions: SFT data, RL prompts, RFT, pairs
    data.heldout_problems(per, bins, seed)          # held-out questions for a stage's learning curve
    data.eval_groups(cfg)                           # (difficulty label, test problems) per bin
    data.example(tok, p) / data.make(tok, p, text)  # prompt + reference (or a sampled completion)
    data.corpus(), data.seq_len()                   # token rows for calibration and distillation
    data.params(problems, temperature=..., seed=...) # sampling limits: the task's max tokens and stops

A task file's difficulties are its `difficulty_bins()` (a file without difficulties is one bin,
"all"); a problem's label is its bin as text. Splits: training data from `train`; evaluation on
`eval_split` (default `test`); a learning curve on the file's `val` split, else on a seeded quarter
(at most `per` a bin) of `train` that the stage never trains on -- never on the test split, which
scores the child. A missing split is an `InputError` naming the splits the file has.

A completion follows the prompt as the task's own few-shot examples do (`tasks.prompting`): after a
space in a plain template, directly after a chat template's assistant header.
"""
from __future__ import annotations

import math
import random
from functools import cached_property
from typing import Any, Hashable, Sequence

import numpy as np

from scalelab.errors import ConfigError, InputError
from scalelab.posttrain.data import BOS, Example, make_example, testbed_examples, testbed_problems

EVAL_LOSS_PROBLEMS = 16  # problems per difficulty for the held-out loss


def stage_data(cfg: Any, parent: Any) -> "TestbedData | FileData":
    """The stage's data for its config (a `TaskOptions`) and parent run (`stage.RunRef`)."""
    if getattr(cfg, "on_testbed", True):
        return TestbedData(parent)
    return FileData(cfg.load_task(parent.tokenizer), parent, seed=cfg.seed,
                    curve_per=getattr(cfg, "curve_problems", 0))


class TestbedData:
    """The parent's testbed: difficulty = number of steps; every call as the stages made it before."""

    __test__ = False
    on_testbed = True
    name = "testbed"

    def __init__(self, parent: Any = None, src: Any = None):
        from scalelab.tasks.testbed import TestbedTask

        self.parent, self.task = parent, TestbedTask()
        self.src = src if src is not None else parent.testbed()

    @property
    def all_bins(self) -> list[int]:
        return list(range(1, self.src.config.max_steps + 1))

    def bins(self, chosen: Sequence[Any] | None, what: str) -> list[int]:
        steps = list(chosen) if chosen else self.all_bins
        if max(steps) > self.src.config.max_steps:
            raise ConfigError(f"{what} {steps}: the parent's testbed has 1..{self.src.config.max_steps} steps")
        return steps

    def eval_bins(self, chosen: Sequence[Any] | None) -> list[int]:
        ds = list(chosen) if chosen else self.all_bins
        bad = [d for d in ds if not isinstance(d, int) or not 1 <= d <= self.src.config.max_steps]
        if bad:
            raise ConfigError(f"eval difficulties {bad}: the parent's testbed has 1..{self.src.config.max_steps} steps")
        return sorted(set(ds))

    def label(self, p: Any) -> str:
        return str(p.steps)

    def train_problems(self, n: int, bins: Sequence[Any], seed: int, *, split: str = "train") -> list[Any]:
        return testbed_problems(self.src, n, split=split, steps=bins, seed=seed)

    def heldout_problems(self, per: int, bins: Sequence[Any], seed: int) -> list[Any]:
        return [p for k in bins for p in self.src.problems("val", per, steps=k, seed=seed)]

    def examples(self, tok: Any, n: int, bins: Sequence[Any], seed: int) -> list[Example]:
        return testbed_examples(self.src, tok, n, steps=bins, seed=seed)

    def eval_groups(self, cfg: Any) -> list[tuple[str, list[Any]]]:
        return [(str(d), self.src.problems(cfg.eval_split, cfg.eval_problems, steps=d, seed=cfg.seed))
                for d in self.eval_bins(cfg.eval_difficulties)]

    def loss_examples(self, tok: Any, seed: int) -> list[Example]:
        return testbed_examples(self.src, tok, EVAL_LOSS_PROBLEMS * self.src.config.max_steps, split="val",
                                steps=self.all_bins, seed=seed)

    def make(self, tok: Any, p: Any, completion: str) -> Example:
        return make_example(tok, self.task.prompt(p), completion, steps=p.steps)

    def example(self, tok: Any, p: Any) -> Example:
        return make_example(tok, BOS + p.question(), p.solution(), steps=p.steps)

    def params(self, probs: Sequence[Any], **kw: Any) -> Any:
        from scalelab.inference.engine import SamplingParams

        return SamplingParams(**kw, max_tokens=max(self.task.max_tokens(p) for p in probs))

    def corpus(self) -> Any:
        return self.parent.corpus()

    def seq_len(self) -> int:
        return self.parent.seq_len()

    def latency_prompts(self, n: int, seed: int) -> list[str]:
        steps = self.src.config.max_steps
        return [self.task.prompt(p) for p in self.src.problems("val", n, steps=steps, seed=seed)]


class FileData:
    """A user's task file, prompted with the parent's tokenizer (its chat template where it has one)."""

    on_testbed = False

    def __init__(self, task: Any, parent: Any, *, seed: int = 0, curve_per: int = 0):
        self.task, self.parent, self.seed, self.curve_per = task, parent, seed, curve_per
        self.name = task.name
        self._keys = {str(p.difficulty): p.difficulty for p in task.all_problems if p.difficulty is not None}

    @property
    def all_bins(self) -> list[Hashable]:
        return [self._keys[b] for b in self.task.difficulty_bins()] or [None]

    def _pick(self, chosen: Sequence[Any] | None, what: str) -> list[Hashable]:
        if not chosen:
            return self.all_bins
        if self.all_bins == [None]:
            raise ConfigError(f"{what} {list(chosen)}: {self.name} has no difficulty column")
        missing = [c for c in chosen if str(c) not in self._keys]
        if missing:
            raise ConfigError(f"{what} {missing}: not among {self.name}'s difficulties "
                              f"({', '.join(self.task.difficulty_bins())})")
        return [self._keys[str(c)] for c in dict.fromkeys(chosen)]

    def bins(self, chosen: Sequence[Any] | None, what: str) -> list[Hashable]:
        return self._pick(chosen, what)

    def eval_bins(self, chosen: Sequence[Any] | None) -> list[Hashable]:
        return self._pick(chosen, "eval difficulties")

    def label(self, p: Any) -> str:
        return "all" if p.difficulty is None else str(p.difficulty)

    def split(self, name: str) -> list[Any]:
        """Every problem of a split (an `InputError` naming the file's splits when it has none)."""
        return self.task.problems(name, 10**9)

    @cached_property
    def _heldout(self) -> list[Any]:
        """The curve's questions when the file has no val split: per bin, a seeded sample of at most
        a quarter of its training problems (at most `curve_per`)."""
        if "val" in self.task.splits() or not self.curve_per:
            return []
        train = self.split("train")
        out = []
        for b in self.all_bins:
            pool = [p for p in train if b is None or p.difficulty == b]
            k = min(self.curve_per, len(pool) // 4)
            out += random.Random(self.seed + 7).sample(pool, k) if k else []
        return out

    def _in(self, probs: list[Any], bins: Sequence[Any]) -> list[Any]:
        want = set(bins)
        return [p for p in probs if None in want or p.difficulty in want]

    def train_problems(self, n: int, bins: Sequence[Any], seed: int, *, split: str = "train") -> list[Any]:
        """Up to `n` training questions of the bins, a seeded sample in random order."""
        held = set(self._heldout)
        pool = [p for p in self._in(self.split(split), bins) if p not in held]
        if not pool:
            raise InputError(f"{self.name}: no {split} problems of difficulties {list(bins)} to train on")
        rng = random.Random(seed)
        return rng.sample(pool, min(n, len(pool)))

    def heldout_problems(self, per: int, bins: Sequence[Any], seed: int) -> list[Any]:
        if "val" in self.task.splits():
            return [p for b in bins for p in self.task.problems("val", per, difficulty=b, seed=seed)]
        if not self._heldout:
            raise InputError(f"{self.name}: too few training problems to hold some out for the learning curve "
                             "(add a val split)")
        return self._in(self._heldout, bins)

    def examples(self, tok: Any, n: int, bins: Sequence[Any], seed: int) -> list[Example]:
        return [self.example(tok, p) for p in self.train_problems(n, bins, seed)]

    def eval_groups(self, cfg: Any) -> list[tuple[str, list[Any]]]:
        return [("all" if b is None else str(b),
                 self.task.problems(cfg.eval_split, cfg.eval_problems, difficulty=b, seed=cfg.seed))
                for b in self.eval_bins(cfg.eval_difficulties)]

    def loss_examples(self, tok: Any, seed: int) -> list[Example]:
        """Reference solutions of evaluation-split problems: the loss SFT minimises, on questions
        it never trained on."""
        return [self.example(tok, p) for b in self.all_bins
                for p in self.task.problems("test", EVAL_LOSS_PROBLEMS, difficulty=b, seed=seed)]

    def _sep(self) -> str:
        return "" if self.task.prompter.uses_chat else " "

    def make(self, tok: Any, p: Any, completion: str) -> Example:
        return make_example(tok, self.task.prompt(p), completion, steps=_int(p.difficulty))

    def example(self, tok: Any, p: Any) -> Example:
        return self.make(tok, p, self._sep() + self.task.reference(p).strip())

    def params(self, probs: Sequence[Any], **kw: Any) -> Any:
        from scalelab.inference.engine import SamplingParams

        return SamplingParams(**kw, max_tokens=max(self.task.max_tokens(p) for p in probs), stop=tuple(self.task.stop))

    def corpus(self) -> "TaskCorpus":
        return TaskCorpus(self)

    def seq_len(self) -> int:
        """The parent's sequence length (256 for a bare checkpoint), within its position limit."""
        from transformers import AutoConfig

        conf = AutoConfig.from_pretrained(self.parent.checkpoint)
        limit = getattr(conf, "max_position_embeddings", None) or getattr(conf, "n_positions", None)
        return min(self.parent.seq_len(), limit) if limit else self.parent.seq_len()

    def latency_prompts(self, n: int, seed: int) -> list[str]:
        return [self.task.prompt(p) for p in self.task.problems("test", n, seed=seed)]


class TaskCorpus:
    """The train split's prompt + reference texts, each ending in EOS, packed back to back into one
    token stream (seeded order), read as rows of `seq_len + 1` like a pretraining source: what
    pruning calibrates on and recovers with, and what `distill --data corpus` distils on. Rows
    cycle through the split, so a large request sees each text several times."""

    def __init__(self, data: FileData):
        self.data = data

    @cached_property
    def _stream(self) -> np.ndarray:
        tok = self.data.parent.tokenizer
        probs = self.data.split("train")
        order = random.Random(self.data.seed).sample(range(len(probs)), len(probs))
        return np.array([t for i in order for t in self.data.example(tok, probs[i]).ids], dtype=np.int64)

    def train_batch(self, step: int, batch_size: int, seq_len: int, seed: int) -> np.ndarray:
        s = self._stream
        need = batch_size * (seq_len + 1)
        reps = math.ceil((need + (step * need) % len(s)) / len(s)) + 1
        start = (step * need) % len(s)
        return np.tile(s, reps)[start:start + need].reshape(batch_size, seq_len + 1).copy()


def _int(d: Any) -> int | None:
    return d if isinstance(d, int) else None
