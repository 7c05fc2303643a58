"""Evaluation: strategies x budgets x difficulties on the testbed, one run record per point.

    from scalelab.testtime.evaluate import TesttimeConfig, evaluate
    records = evaluate(TesttimeConfig.build(model="runs/d6-...", strategies=["cot", "majority"]), "runs/tt")

Records go to RUNS_DIR/<model run>/<strategy>/d<steps>/<run id>/record.json, so that one curve
(one strategy, one difficulty, every n) is one folder: `scalelab fit RUNS_DIR/<model>/majority/d5
--law testtime` fits it. A record holds `technique` = the strategy, `metrics.n`,
`metrics.accuracy` (mean expected correctness over the problems) with its standard error,
`metrics.chance`, `metrics.flops_per_question`, and `flops.inference` / `flops.verifier` (the
evaluation's totals over all its problems) next to the policy's pretraining (and post-training)
FLOPs carried forward from the parent run. Points already recorded are skipped, so an
interrupted evaluation resumes where it stopped.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np
from pydantic import Field, field_validator

from scalelab.config import Config
from scalelab.errors import ConfigError
from scalelab.records import RunRecord, atomic_write_json, read_record, write_record
from scalelab.runs import run_id
from scalelab import passk as est
from scalelab.testtime.strategies import STRATEGIES, Context, Options, get_strategy, run_strategy
from scalelab.rewards.models import PRM_AGGREGATES
from scalelab.tasks.testbed import TestbedTask, check_testbed_tokenizer

EXECUTION = {"max_batch", "threads", "strategies", "n", "difficulties"}


class TesttimeConfig(Config):
    model: str = Field(..., description="policy run directory (or checkpoint directory)")
    strategies: list[str] = Field(default_factory=lambda: ["cot", "majority"])
    n: list[int] = Field(default_factory=lambda: [1, 2, 4, 8, 16, 32, 64], description="budgets")
    difficulties: list[int] = Field(default_factory=lambda: list(range(1, 9)), description="steps per problem")
    problems: int = Field(50, ge=1, le=100_000, description="problems per difficulty")
    split: Literal["val", "test"] = "test"
    modulus: int | list[int] | None = Field(None, description="fix the modulus, or draw it uniformly from a list "
                                            "(a band of number sizes); default: the policy's mix")
    orm: str | None = None
    prm: str | None = None
    temperature: float = Field(0.8, ge=0, le=10)
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int = Field(0, ge=0)
    prm_agg: str = "last"
    beam_width: int = Field(4, ge=1, le=1024)
    final: Literal["weighted", "best"] = "weighted"
    revision_threshold: float = Field(0.5, ge=0, le=1, description="revision: least doubt that reopens a step")
    draws: int = Field(1000, ge=1, le=1_000_000)
    seed: int = Field(0, ge=0, description="draws the problems, and the samples unless sample_seed is set")
    sample_seed: int | None = Field(None, ge=0, description="seed of the samples only: another value draws an "
                                    "independent pool on the same problems (predict.py's honest protocol)")
    max_batch: int = Field(1024, ge=1, le=1_000_000)
    threads: int | None = Field(None, ge=1, le=1024)

    @field_validator("n")
    @classmethod
    def _budgets(cls, v: list[int]) -> list[int]:
        bad = [x for x in v if x < 1]
        if bad or not v:
            raise ValueError(f"every n must be a positive integer (got {bad or 'none'})")
        return sorted(set(v))

    @field_validator("strategies")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        bad = [s for s in v if s not in STRATEGIES]
        if bad or not v:
            raise ValueError(f"unknown strategy {bad[0] if bad else '(none)'!r}; known strategies: {', '.join(STRATEGIES)}")
        return v

    @field_validator("prm_agg")
    @classmethod
    def _agg(cls, v: str) -> str:
        if v not in PRM_AGGREGATES:
            raise ValueError(f"choose one of {', '.join(PRM_AGGREGATES)}")
        return v

    @field_validator("modulus")
    @classmethod
    def _moduli(cls, v: int | list[int] | None) -> int | list[int] | None:
        bad = [m for m in ([v] if isinstance(v, int) else v or []) if not 2 <= m <= 997]
        if bad or v == []:
            raise ValueError(f"moduli are integers in 2..997 (got {bad or 'none'})")
        return v

    @field_validator("difficulties")
    @classmethod
    def _steps(cls, v: list[int]) -> list[int]:
        if not v or min(v) < 1:
            raise ValueError("difficulties are step counts >= 1")
        return sorted(set(v))


def _options(cfg: TesttimeConfig) -> Options:
    seed = cfg.seed if cfg.sample_seed is None else cfg.sample_seed
    return Options(temperature=cfg.temperature, top_p=cfg.top_p, top_k=cfg.top_k, seed=seed, prm_agg=cfg.prm_agg,
                   beam_width=cfg.beam_width, final=cfg.final, revision_threshold=cfg.revision_threshold,
                   draws=cfg.draws)


def load_context(cfg: TesttimeConfig, *, progress: Any = None) -> tuple[Context, Any, str, Any]:
    """(strategy context, parent record, parent id, testbed source), reward models checked."""
    from scalelab.inference.engine import Engine
    from scalelab.inference.loading import parent_record, run_name, testbed_for
    from scalelab.rewards.models import RewardModel

    eng = Engine.load(cfg.model, max_batch=cfg.max_batch)
    parent = parent_record(cfg.model)
    pid = run_name(cfg.model, parent)
    rms = {}
    for kind in ("orm", "prm"):
        path = getattr(cfg, kind)
        if path is None:
            continue
        rm = RewardModel.load(path, meter=eng.meter, max_batch=cfg.max_batch)
        if rm.kind != kind:
            raise ConfigError(f"--{kind} {path}: is {'an' if rm.kind == 'orm' else 'a'} {rm.kind.upper()}, "
                              f"not {'an' if kind == 'orm' else 'a'} {kind.upper()}")
        rm.check_tokenizer(eng.tokenizer, policy_name=pid)
        rms[kind] = rm
    needs = {n for s in cfg.strategies for n in get_strategy(s).needs}
    for need in sorted(needs - set(rms)):
        users = [s for s in cfg.strategies if need in get_strategy(s).needs]
        raise ConfigError(f"strategies {', '.join(users)} need --{need} (a reward-model run from "
                          f"`scalelab testtime train-verifier --kind {need}`)")
    ctx = Context(engine=eng, orm=rms.get("orm"), prm=rms.get("prm"), options=_options(cfg), progress=progress,
                  pool_size=max(cfg.n))
    check_testbed_tokenizer(eng, pid)
    return ctx, parent, pid, testbed_for(parent)


def evaluate(cfg: TesttimeConfig, runs_dir: str | Path, *,
             progress: Callable[[str, int, int], None] | None = None,
             on_record: Callable[[RunRecord], None] | None = None) -> list[RunRecord]:
    from scalelab.records import check_output_dir
    from scalelab.runs import torch_threads

    check_output_dir(runs_dir, "--runs-dir")  # before any sampling: a bad path is found at once
    with torch_threads(cfg.threads):
        ctx, parent, pid, src = load_context(cfg, progress=progress)
        too_long = [d for d in cfg.difficulties if d > src.config.max_steps]
        if too_long:
            raise ConfigError(f"difficulties {too_long}: the policy's testbed has at most {src.config.max_steps} steps")
        out = []
        for d in cfg.difficulties:
            problems = src.problems(cfg.split, cfg.problems, steps=d, modulus=cfg.modulus, seed=cfg.seed)
            for name in cfg.strategies:
                s = get_strategy(name)
                for n in ([1] if s.kind == "single" else cfg.n):
                    rec = _point(cfg, ctx, parent, pid, problems, name, d, n, Path(runs_dir))
                    out.append(rec)
                    if on_record is not None:
                        on_record(rec)
            ctx.pools.clear()  # the next difficulty has other problems
        return out


def run_dir_for(runs_dir: Path, cfg: TesttimeConfig, pid: str, strategy: str, steps: int, n: int) -> Path:
    key = {**cfg.model_dump(exclude=EXECUTION | {"model"}), "policy": pid, "strategy": strategy,
           "steps": steps, "n": n}
    return runs_dir / pid / strategy / f"d{steps}" / run_id(strategy, f"d{steps}", f"n{n}", key=key)


def _point(cfg: TesttimeConfig, ctx: Context, parent: Any, pid: str, problems: list[Any], name: str, d: int,
           n: int, runs_dir: Path) -> RunRecord:
    run_dir = run_dir_for(runs_dir, cfg, pid, name, d, n)
    if (run_dir / "record.json").is_file():
        old = read_record(run_dir)
        if old.status == "complete":
            return old
    s = get_strategy(name)
    t0 = time.perf_counter()
    outs = run_strategy(name, problems, n, ctx)
    wall = time.perf_counter() - t0
    task = TestbedTask(direct=s.direct)
    acc, se = est.mean_and_se([o.correct for o in outs])
    ans, _ = est.mean_and_se([o.answer_correct for o in outs])
    inf = float(sum(o.flops_inference for o in outs))
    ver = float(sum(o.flops_verifier for o in outs))
    q = len(outs)
    metrics: dict[str, Any] = {
        "n": n, "accuracy": acc, "accuracy_se": se, "answer_accuracy": ans,
        "chance": float(np.mean([task.chance(p) for p in problems])),
        "difficulty": d, "steps": d, "problems": q, "kind": s.kind,
        "flops_per_question": (inf + ver) / q, "inference_flops_per_question": inf / q,
        "verifier_flops_per_question": ver / q, "tokens_per_question": float(np.mean([o.tokens for o in outs])),
        "estimator": {"parallel": "unbiased subsampling of one pool (passk.py)",
                      "search": "run at this budget", "single": "greedy"}[s.kind],
        "per_problem": [o.correct for o in outs],
    }
    if s.kind == "parallel":
        pools = ctx.pools[tuple(problems)]
        metrics["pool_n"] = pools[0].N
        metrics["pool_correct"] = [int(p.correct.sum()) for p in pools]  # per problem, for the beta-binomial fit
    rec = RunRecord(run_id=run_dir.name, parent_id=pid, phase="testtime", technique=name, task="testbed",
                    config={**cfg.model_dump(), "strategy": name, "steps": d, "n_budget": n})
    if parent is not None:
        rec.n_params, rec.n_params_nonembedding = parent.n_params, parent.n_params_nonembedding
        rec.n_params_embedding, rec.n_params_active = parent.n_params_embedding, parent.n_params_active
        rec.tokens = parent.tokens
        rec.flops = {k: v for k, v in parent.flops.items() if k in ("pretrain", "posttrain")}
    rec.flops.update(inference=inf, verifier=ver)
    rec.flops_convention = ("exact (scalelab.model): inference = policy prefill + decode, verifier = reward-model "
                            f"forwards; {ctx.engine.flop_model.source}; padding excluded; parallel strategies: "
                            "expected cost of n samples")
    rec.wall_s = wall
    rec.complete(**metrics)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(run_dir / "config.json", rec.config)
    write_record(run_dir, rec)
    return rec
