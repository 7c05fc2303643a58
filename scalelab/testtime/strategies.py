"""Test-time strategies: one signature, one registry.

Every strategy is `run(problems, n, ctx) -> list[Outcome]`: it answers each problem with a budget
of n and reports, per problem, the expected correctness and the FLOPs spent (policy and
verifier). `STRATEGIES` maps names to `Strategy` entries (the command line, the evaluation and
the conformance test all read it; search-and-learn keeps its approaches in one dict the same way).

Three kinds:
  single    one greedy answer; n is ignored (evaluated at n = 1)
  parallel  a selection rule over samples: one pool of N = max n samples per problem is drawn
            once (`Context.pool`) and every n <= N is scored by unbiased subsampling
            (`scalelab.passk`); FLOPs are the expected cost of n samples (prefill once + n decodes,
            + n reward-model passes)
  search    run per budget (PRM beam search, DVTS, sequential revision; `search.py`)

Correctness is the testbed's unit for worked solutions: every step and the answer right
(`testbed.verify`); `answer_correct` is kept next to it.

    ctx = Context(engine=Engine.load(run), orm=RewardModel.load(orm_run))
    outs = run_strategy("best_of_n", problems, 16, ctx)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from scalelab import passk as est
from scalelab.errors import ConfigError, InputError
from scalelab.registry import Registry
from scalelab.rewards.models import aggregate
from scalelab.tasks.testbed import Problem, TestbedTask
from scalelab.testtime import search
from scalelab.testtime.context import Context, Options, Outcome, Pool  # noqa: F401 (the strategies' shared types)


# ---- single --------------------------------------------------------------------------------------
def _greedy(problems: Sequence[Problem], ctx: Context, task: TestbedTask) -> list[Outcome]:
    eng = ctx.engine
    prompts = [task.prompt(p) for p in problems]
    gen = eng.generate(prompts, 1, ctx.sampling(max(task.max_tokens(p) for p in problems), temperature=0.0))
    out = []
    for i, p in enumerate(problems):
        c = gen.completions[i][0]
        v = task.verify(p, c.text)
        out.append(Outcome(float(v.correct), float(v.answer_correct), gen.flops_prefill[i] + gen.flops_decode[i][0],
                           0.0, float(len(c.token_ids)), c.text))
    return out


def run_direct(problems: Sequence[Problem], n: int, ctx: Context) -> list[Outcome]:
    return _greedy(problems, ctx, TestbedTask(direct=True))


def run_cot(problems: Sequence[Problem], n: int, ctx: Context) -> list[Outcome]:
    return _greedy(problems, ctx, ctx.task)


# ---- parallel: selection rules over one pool ------------------------------------------------------
def _parallel(select: Callable[[Pool, int, np.random.Generator, Context], tuple[float, float]], rm: str | None):
    def run(problems: Sequence[Problem], n: int, ctx: Context) -> list[Outcome]:
        pools = ctx.scored(problems, n, rm) if rm else ctx.pool(problems, n)
        rng = np.random.default_rng([ctx.options.seed, n])
        out = []
        for pool in pools:
            c, a = select(pool, n, rng, ctx)
            ver = 0.0
            if rm:
                ver = n * float(np.mean(pool.orm_flops if rm == "orm" else pool.prm_flops))
            out.append(Outcome(c, a, pool.flops_prefill + n * float(pool.flops_decode.mean()), ver,
                               n * float(pool.tokens.mean())))
        return out
    return run


def _coverage(pool: Pool, k: int, rng: Any, ctx: Context) -> tuple[float, float]:
    return (est.pass_at_k(pool.N, int(pool.correct.sum()), k),
            est.pass_at_k(pool.N, int(pool.answer_correct.sum()), k))


def _majority(pool: Pool, k: int, rng: Any, ctx: Context) -> tuple[float, float]:
    d = ctx.options.draws
    return (est.vote_at_k(pool.answers, pool.correct, k, draws=d, rng=rng),
            est.vote_at_k(pool.answers, pool.answer_correct, k, draws=d, rng=rng))


def _scores(pool: Pool, rm: str, ctx: Context) -> np.ndarray:
    if rm == "orm":
        return pool.orm
    return np.array([aggregate(s, ctx.options.prm_agg) for s in pool.prm])


def _best(rm: str):
    def select(pool: Pool, k: int, rng: Any, ctx: Context) -> tuple[float, float]:
        s = _scores(pool, rm, ctx)
        return est.best_of_k(s, pool.correct, k), est.best_of_k(s, pool.answer_correct, k)
    return select


def _weighted(rm: str):
    def select(pool: Pool, k: int, rng: Any, ctx: Context) -> tuple[float, float]:
        s, d = _scores(pool, rm, ctx), ctx.options.draws
        return (est.vote_at_k(pool.answers, pool.correct, k, scores=s, draws=d, rng=rng),
                est.vote_at_k(pool.answers, pool.answer_correct, k, scores=s, draws=d, rng=rng))
    return select


# ---- the registry -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Strategy:
    name: str
    kind: str                      # single | parallel | search
    run: Callable[[Sequence[Problem], int, Context], list[Outcome]]
    summary: str
    needs: tuple[str, ...] = ()    # "orm", "prm"
    direct: bool = False           # answers the direct-answer question (no worked steps)


_ENTRIES = [
    Strategy("direct", "single", run_direct, "greedy direct answer, no worked steps", direct=True),
    Strategy("cot", "single", run_cot, "chain of thought: one greedy worked solution"),
    Strategy("coverage", "parallel", _parallel(_coverage, None),
             "pass@n: right if any of n samples is right (an oracle's upper bound; Brown et al. 2024)"),
    Strategy("majority", "parallel", _parallel(_majority, None),
             "self-consistency: the most frequent answer of n samples (Wang et al. 2023)"),
    Strategy("best_of_n", "parallel", _parallel(_best("orm"), "orm"), "the sample the ORM scores highest",
             needs=("orm",)),
    Strategy("best_of_n_prm", "parallel", _parallel(_best("prm"), "prm"),
             "the sample with the highest aggregated PRM score", needs=("prm",)),
    Strategy("weighted_best_of_n", "parallel", _parallel(_weighted("orm"), "orm"),
             "the answer with the largest sum of ORM scores (Li et al. 2023; Snell et al. 2024)", needs=("orm",)),
    Strategy("weighted_best_of_n_prm", "parallel", _parallel(_weighted("prm"), "prm"),
             "the answer with the largest sum of aggregated PRM scores", needs=("prm",)),
    Strategy("beam_search", "search", search.beam_search,
             "PRM-guided beam search over step lines: n beams, keep n/width, expand each width times",
             needs=("prm",)),
    Strategy("dvts", "search", search.dvts,
             "diverse verifier tree search: n/width independent subtrees, greedy on the PRM (Beeching et al. 2024)",
             needs=("prm",)),
    Strategy("revision", "search", search.revision,
             "budget forcing: reopen the greedy solution after its least likely step result with a '!' "
             "correction line, up to n - 1 times"),
]
STRATEGIES = Registry("strategy", {s.name: s for s in _ENTRIES}, plural="strategies")


def get_strategy(name: str) -> Strategy:
    return STRATEGIES.get(name)


def run_strategy(name: str, problems: Sequence[Problem], n: int, ctx: Context) -> list[Outcome]:
    """Run one registered strategy at budget n (checks the budget and the reward models it needs)."""
    s = get_strategy(name)
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise ConfigError(f"n={n}: the budget must be a positive integer")
    for need in s.needs:
        if getattr(ctx, need) is None:
            raise InputError(f"strategy {name!r} needs a{'n' if need == 'orm' else ''} {need.upper()} "
                             f"(--{need} RUN, trained with `scalelab testtime train-verifier --kind {need}`)")
    if not problems:
        return []
    return s.run(problems, int(n), ctx)
