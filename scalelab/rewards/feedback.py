"""Where an RL reward comes from: the exact verifier, a learned reward model, or an AI judge.

Every source is called the same way, `source(problems, prompts, completions) -> RewardBatch`, and
says which ledger part its FLOPs go to:

  verifier      (rlvr) 1 if the task's verifier accepts the solution (the testbed's strict one: the
                whole solution; a task file's: its final answer), else 0; no FLOPs (a string
                check, nothing evaluated)
  reward model  (rlhf) a reward-model run (`posttrain reward-model` or `testtime train-verifier`):
                its score of each completion, a forward over prompt + completion ("reward_model")
  judge         (rlaif) another model's judgement, not the ground truth ("judge_forward"):
                a reward-model directory built on a larger model (its ORM score, or its PRM's
                aggregated step scores), or a plain causal LM read as a likelihood judge: how
                likely the judge finds what the policy wrote, exp(min over completion tokens of
                log p_judge(token | prefix)) by default ("min": the least believable token, which
                on the testbed is a wrong step result), or exp(mean log p) ("mean"). This is
                feedback from a model's own beliefs, as Constitutional AI / RLAIF use a model's
                judgement (Bai et al. 2022; Lee et al. 2023) -- cheaper here than a written
                critique and with no parsing of judge output.

Faults: a source that raises on a batch is retried sample by sample, so one bad completion costs
only itself; a sample whose reward raises or is NaN / infinite is left out of the update and
counted (`RewardBatch.failed`, with the first error message), and the run goes on.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from scalelab.errors import InputError


@dataclass
class RewardBatch:
    values: np.ndarray            # [n] reward, NaN where it failed
    flops: float = 0.0
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> np.ndarray:
        return np.isfinite(self.values)

    @property
    def failed(self) -> int:
        return int((~self.ok).sum())


class RewardSource:
    """Base: subclasses implement `_score(problems, prompts, completions) -> (values, flops)`."""

    name = "reward"
    part = "reward"

    def _score(self, problems: Sequence[Any], prompts: Sequence[str], completions: Sequence[str]) -> tuple[list[float], float]:
        raise NotImplementedError

    def __call__(self, problems: Sequence[Any], prompts: Sequence[str], completions: Sequence[str]) -> RewardBatch:
        try:
            vals, flops = self._score(problems, prompts, completions)
            return _checked(vals, flops, [])
        except Exception as err:  # noqa: BLE001 -- isolate the failing samples, keep the run going
            first = _why(err)
        vals, flops, errors = [], 0.0, [first]
        for p, q, c in zip(problems, prompts, completions):
            try:
                v, f = self._score([p], [q], [c])
                vals.append(float(v[0]))
                flops += f
            except Exception as err:  # noqa: BLE001
                vals.append(math.nan)
                errors.append(_why(err))
        return _checked(vals, flops, errors)


def _why(err: BaseException) -> str:
    return f"{type(err).__name__}: {' '.join(str(err).split())}"[:300]


def _checked(vals: Sequence[Any], flops: float, errors: list[str]) -> RewardBatch:
    out = np.full(len(vals), math.nan)
    for i, v in enumerate(vals):
        try:
            x = float(v)
        except (TypeError, ValueError):
            errors.append(f"reward {v!r} is not a number")
            continue
        if math.isfinite(x):
            out[i] = x
        else:
            errors.append(f"reward {x} is not finite")
    return RewardBatch(out, float(flops), errors)


class VerifierReward(RewardSource):
    name, part = "verifier", "verifier"

    def __init__(self, task: Any = None):
        from scalelab.tasks.testbed import TestbedTask

        self.task = task if task is not None else TestbedTask()

    def _score(self, problems, prompts, completions):
        return [float(self.task.verify(p, c).correct) for p, c in zip(problems, completions)], 0.0


class FunctionReward(RewardSource):
    """A user's Python function `f(problem, completion) -> float` (tests, notebooks)."""

    name, part = "function", "reward"

    def __init__(self, fn: Callable[[Any, str], float]):
        self.fn = fn

    def _score(self, problems, prompts, completions):
        return [self.fn(p, c) for p, c in zip(problems, completions)], 0.0


class ModelReward(RewardSource):
    """A reward-model directory (reward.json): ORM score, or a PRM's aggregated step scores."""

    def __init__(self, path: str, *, part: str, name: str, prm_agg: str = "last", max_batch: int = 256):
        from scalelab.rewards.models import RewardModel

        self.rm = RewardModel.load(path, max_batch=max_batch)
        self.path, self.part, self.name, self.prm_agg = path, part, name, prm_agg

    def _score(self, problems, prompts, completions):
        from scalelab.rewards.models import aggregate

        scores, flops = self.rm.score(list(prompts), list(completions))
        vals = [s[0] if self.rm.kind == "orm" else aggregate(s, self.prm_agg) for s in scores]
        return vals, float(sum(flops))


JUDGE_MODES = ("min", "mean")


class LikelihoodJudge(RewardSource):
    """A plain causal LM as judge: exp(min or mean of log p_judge over the completion's tokens)."""

    part = "judge_forward"

    def __init__(self, path: str, *, mode: str = "min", max_batch: int = 256):
        from scalelab.inference.engine import Engine

        if mode not in JUDGE_MODES:
            raise InputError(f"judge mode {mode!r}: choose one of {', '.join(JUDGE_MODES)}")
        self.engine = Engine.load(path, phase="verifier", max_batch=max_batch)
        self.mode, self.name = mode, f"judge-{mode}"

    def _score(self, problems, prompts, completions):
        from scalelab.rewards.models import token_logprobs

        lps, flops = token_logprobs(self.engine, list(prompts), list(completions))
        vals = [math.exp(float(lp.min() if self.mode == "min" else lp.mean())) if lp.size else 0.0 for lp in lps]
        return vals, float(sum(flops))


def judge_source(path: str, *, mode: str = "min", prm_agg: str = "last", max_batch: int = 256) -> RewardSource:
    """An AI judge from a path: a reward-model directory, or any causal-LM run (likelihood judge)."""
    from scalelab.inference.loading import resolve_checkpoint
    from scalelab.rewards.models import REWARD_FILE

    if (resolve_checkpoint(path) / REWARD_FILE).is_file():
        return ModelReward(path, part="judge_forward", name="judge-rm", prm_agg=prm_agg, max_batch=max_batch)
    return LikelihoodJudge(path, mode=mode, max_batch=max_batch)


def source_tokenizer(src: RewardSource) -> Any:
    """The tokenizer a model-based source reads with (None for the verifier and functions)."""
    if isinstance(src, ModelReward):
        return src.rm.engine.tokenizer
    if isinstance(src, LikelihoodJudge):
        return src.engine.tokenizer
    return None
