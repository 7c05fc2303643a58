"""The types every test-time strategy shares: sampling options, one problem's outcome, a pool of
samples, and the context a strategy runs in (engine, reward models, task, cached pools). Kept in
their own module so that `strategies` (the registry) and `search` both import them and neither
imports the other back (search-and-learn keeps its shared config the same way).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from scalelab import passk as est
from scalelab.errors import ConfigError
from scalelab.rewards.models import PRM_AGGREGATES
from scalelab.tasks.base import Task
from scalelab.tasks.testbed import Problem, TestbedTask


@dataclass
class Options:
    temperature: float = 0.8      # FINDINGS.md probed voting at T = 0.8
    top_p: float = 1.0
    top_k: int = 0
    seed: int = 0
    prm_agg: str = "last"         # last | min | prod (verifiers.aggregate)
    beam_width: int = 4           # search-and-learn's default beam width
    final: str = "weighted"       # how a tree search picks among its finished solutions: weighted | best
    revision_threshold: float = 0.5   # reopen a step only if the model gave its written result < 1/2
    draws: int = 1000             # Monte Carlo k-subsets per problem for vote estimators

    def __post_init__(self) -> None:
        if self.prm_agg not in PRM_AGGREGATES:
            raise ConfigError(f"prm_agg={self.prm_agg!r}: choose one of {', '.join(PRM_AGGREGATES)}")
        if self.final not in ("weighted", "best"):
            raise ConfigError(f"final={self.final!r}: choose weighted or best")
        if self.beam_width < 1 or self.draws < 1:
            raise ConfigError("beam_width and draws must be >= 1")


@dataclass
class Outcome:
    correct: float             # expected correctness of the answer given, in [0, 1]
    answer_correct: float
    flops_inference: float     # policy FLOPs (expected, for parallel strategies)
    flops_verifier: float
    tokens: float              # generated tokens
    text: str | None = None


@dataclass
class Pool:
    """N samples of one problem, their verdicts and costs; reward scores filled in on demand."""

    texts: list[str]
    correct: np.ndarray         # [N] whole solution right
    answer_correct: np.ndarray  # [N]
    answers: np.ndarray         # [N] parsed answer, est.NO_ANSWER when none
    flops_prefill: float
    flops_decode: np.ndarray    # [N]
    tokens: np.ndarray          # [N]
    orm: np.ndarray | None = None       # [N]
    prm: list[list[float]] | None = None
    orm_flops: np.ndarray | None = None
    prm_flops: np.ndarray | None = None

    @property
    def N(self) -> int:
        return len(self.texts)


@dataclass
class Context:
    engine: Any
    orm: Any = None
    prm: Any = None
    options: Options = field(default_factory=Options)
    task: Task = field(default_factory=TestbedTask)
    progress: Callable[[str, int, int], None] | None = None
    pools: dict[tuple[Problem, ...], list[Pool]] = field(default_factory=dict)
    pool_size: int = 0  # draw at least this many samples per problem (the largest budget of a sweep)

    def sampling(self, max_tokens: int, **kw: Any) -> Any:
        from scalelab.inference.engine import SamplingParams

        o = self.options
        base = dict(temperature=o.temperature, top_p=o.top_p, top_k=o.top_k, seed=o.seed, max_tokens=max_tokens,
                    stop=tuple(getattr(self.task, "stop", ())))  # a task file's stop strings (the next question)
        return SamplingParams(**{**base, **kw})

    def pool(self, problems: Sequence[Problem], n: int) -> list[Pool]:
        """At least n samples per problem, drawn once and reused for every smaller budget."""
        key = tuple(problems)
        n = max(n, self.pool_size)
        have = self.pools.get(key)
        if have is not None and have[0].N >= n:
            return have
        task, eng = self.task, self.engine
        prompts = [task.prompt(p) for p in problems]
        max_tokens = max(task.max_tokens(p) for p in problems)
        tick = (lambda d, t: self.progress("sampling", d, t)) if self.progress else None
        gen = eng.generate(prompts, n, self.sampling(max_tokens), progress=tick)
        pools = []
        for i, p in enumerate(problems):
            texts = [c.text for c in gen.completions[i]]
            verdicts = [task.verify(p, t) for t in texts]
            pools.append(Pool(
                texts=texts,
                correct=np.array([v.correct for v in verdicts], float),
                answer_correct=np.array([v.answer_correct for v in verdicts], float),
                answers=answer_codes([v.answer for v in verdicts]),
                flops_prefill=gen.flops_prefill[i], flops_decode=np.array(gen.flops_decode[i]),
                tokens=np.array([len(c.token_ids) for c in gen.completions[i]], float)))
        self.pools[key] = pools
        return pools

    def scored(self, problems: Sequence[Problem], n: int, which: str) -> list[Pool]:
        pools = self.pool(problems, n)
        rm = self.orm if which == "orm" else self.prm
        if getattr(pools[0], which) is None:
            prompts = [self.task.prompt(p) for p, pool in zip(problems, pools) for _ in pool.texts]
            texts = [t for pool in pools for t in pool.texts]
            scores, flops = rm.score(prompts, texts)
            k = 0
            for pool in pools:
                s, f = scores[k:k + pool.N], flops[k:k + pool.N]
                if which == "orm":
                    pool.orm, pool.orm_flops = np.array([x[0] for x in s]), np.array(f)
                else:
                    pool.prm, pool.prm_flops = s, np.array(f)
                k += pool.N
        return pools


def answer_codes(answers: Sequence[Any]) -> np.ndarray:
    """Answers as int64 codes for the vote estimators: equal answers share a code, none is NO_ANSWER.
    A task's answers are any hashable (a testbed residue, a fraction, a choice letter, a string),
    and a model may write a number too long for int64."""
    codes: dict[Any, int] = {}
    return np.array([est.NO_ANSWER if a is None else codes.setdefault(a, len(codes)) for a in answers], np.int64)
