"""Evaluation: strategies x budgets x difficulties on a task, one run record per point.

    from scalelab.testtime.evaluate import TesttimeConfig, evaluate
    records = evaluate(TesttimeConfig.build(model="runs/d6-...", strategies=["cot", "majority"]), "runs/tt")

Records go to RUNS_DIR/<model run>/<strategy>/d<steps>/<run id>/record.json (a task file's under
RUNS_DIR/<model run>/<task file's stem>/...), so that one curve
(one strategy, one difficulty, every n) is one folder: `scalelab fit RUNS_DIR/<model>/majority/d5
--law testtime` fits it. A record holds `technique` = the strategy, `metrics.n`,
`metrics.accuracy` (mean expected correctness over the problems) with its standard error,
`metrics.chance`, `metrics.flops_per_question`, and `flops.inference` / `flops.verifier` (the
evaluation's totals over all its problems) next to the policy's pretraining (and post-training)
FLOPs carried forward from the parent run. Points already recorded are skipped, so an
interrupted evaluation resumes where it stopped.

The task is the testbed (difficulty = steps per problem) or a task file (`task=FILE`, the
`TaskOptions` fields): its problems of `split` grouped by the file's difficulty bins (`difficulties`
picks bins; a file without difficulties is one group, "all"). A file task's records keep the bin in
`metrics.difficulty`, an integer in `metrics.steps` (the bin when it is a number, else its rank from
1; "all" is 0) and the folder `d<bin>`, so the fits, plots and comparisons read them as they read
testbed records.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Literal, Optional, Union

import numpy as np
from pydantic import Field, field_validator, model_validator

from scalelab.errors import ConfigError
from scalelab.records import RunRecord, atomic_write_json, read_record, write_record
from scalelab.runs import run_id
from scalelab import passk as est
from scalelab.testtime.strategies import STRATEGIES, Context, Options, get_strategy, run_strategy
from scalelab.rewards.models import PRM_AGGREGATES
from scalelab.rewards.external import JUDGE_TEMPLATE
from scalelab.tasks.options import TASK_FIELDS, TaskOptions
from scalelab.tasks.testbed import TestbedTask

# The largest budget: 10,000 samples per problem is the most the literature draws (Brown et al. 2024,
# "Large Language Monkeys"); ten times that leaves room and stops a typo before it fills memory.
MAX_N = 100_000
EXECUTION = {"max_batch", "threads", "strategies", "n", "difficulties"}


class TesttimeConfig(TaskOptions):
    model: str = Field(..., description="policy run directory (or checkpoint directory)")
    strategies: list[str] = Field(default_factory=lambda: ["cot", "majority"])
    n: list[int] = Field(default_factory=lambda: [1, 2, 4, 8, 16, 32, 64], description="budgets")
    difficulties: Optional[list[Union[int, str]]] = Field(
        None, description="testbed: steps per problem (default 1..8); task file: difficulty bins (default: all)")
    problems: int = Field(50, ge=1, le=100_000, description="problems per difficulty")
    split: str = Field("test", description="testbed: val | test; task file: any split it has")
    modulus: int | list[int] | None = Field(None, description="fix the modulus, or draw it uniformly from a list "
                                            "(a band of number sizes); default: the policy's mix")
    orm: str | None = Field(None, description="ORM: a reward-model run, or a *ForSequenceClassification checkpoint")
    prm: str | None = None
    judge: str | None = Field(None, description="an LLM judge as the ORM: a causal LM asked Yes or No")
    judge_template: str = Field(JUDGE_TEMPLATE, description="the judge's query: {prompt} and {completion}")
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
        bad = [x for x in v if not 1 <= x <= MAX_N]
        if bad or not v:
            raise ValueError(f"every n must be a positive integer up to {MAX_N:,} (got {bad or 'none'})")
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

    @model_validator(mode="after")
    def _on_testbed(self) -> "TesttimeConfig":
        if not self.on_testbed:
            return self
        if self.split not in ("val", "test"):
            raise ValueError(f"split={self.split!r}: the testbed evaluates on val or test")
        if self.difficulties is not None:
            if not self.difficulties or not all(isinstance(d, int) and d >= 1 for d in self.difficulties):
                raise ValueError(f"difficulties {self.difficulties}: on the testbed they are step counts >= 1")
        return self

    def testbed_steps(self) -> list[int]:
        return sorted(set(self.difficulties)) if self.difficulties else list(range(1, 9))  # type: ignore[arg-type]


def _options(cfg: TesttimeConfig) -> Options:
    seed = cfg.seed if cfg.sample_seed is None else cfg.sample_seed
    return Options(temperature=cfg.temperature, top_p=cfg.top_p, top_k=cfg.top_k, seed=seed, prm_agg=cfg.prm_agg,
                   beam_width=cfg.beam_width, final=cfg.final, revision_threshold=cfg.revision_threshold,
                   draws=cfg.draws)


def load_context(cfg: TesttimeConfig, *, progress: Any = None) -> tuple[Context, Any, str, Any]:
    """(strategy context, parent record, parent id, testbed source or None), the task and the reward
    models checked against the policy before any sampling."""
    from scalelab.inference.engine import Engine
    from scalelab.inference.loading import parent_record, run_name, testbed_for
    from scalelab.rewards.models import RewardModel

    eng = Engine.load(cfg.model, max_batch=cfg.max_batch)
    parent = parent_record(cfg.model)
    pid = run_name(cfg.model, parent)
    task = load_policy_task(cfg, eng, pid)
    rms = {}
    if cfg.judge is not None:
        if cfg.orm is not None:
            raise ConfigError("--judge is an ORM: give --orm or --judge, not both")
        from scalelab.rewards.external import JudgeORM

        rms["orm"] = JudgeORM(cfg.judge, meter=eng.meter, max_batch=cfg.max_batch, template=cfg.judge_template)
    for kind in ("orm", "prm"):
        path = getattr(cfg, kind)
        if path is None:
            continue
        from scalelab.rewards.external import ClassifierORM, is_sequence_classifier

        if is_sequence_classifier(path):
            if kind == "prm":
                raise ConfigError(f"--prm {path}: a sequence classifier scores whole solutions; give it as --orm")
            rms[kind] = ClassifierORM(path, meter=eng.meter, max_batch=min(cfg.max_batch, 64))
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
                  pool_size=max(cfg.n), task=task)
    return ctx, parent, pid, (testbed_for(parent) if cfg.on_testbed else None)


def load_policy_task(cfg: TaskOptions, eng: Any, pid: str, strategies: Any = ()) -> Any:
    """The task of `cfg` for this policy: the testbed (its tokenizer checked) or a task file prompted
    with the policy's tokenizer (its chat template where it has one)."""
    task = cfg.task_for(eng, pid)
    if cfg.on_testbed:
        return task
    bad = [s for s in getattr(cfg, "strategies", ()) if s in TESTBED_ONLY]
    if bad:
        raise ConfigError(f"strategy {bad[0]!r} is written for the testbed's format ({TESTBED_ONLY[bad[0]]}); "
                          f"on a task file use cot, majority, best_of_n, beam_search or dvts")
    return task


TESTBED_ONLY = {"direct": "its direct-answer question", "revision": "its '!' correction lines"}


def problem_groups(cfg: TesttimeConfig, task: Any, src: Any) -> list[tuple[Any, int, list[Any]]]:
    """(difficulty label, integer steps, problems) per group evaluated."""
    if src is not None:  # the testbed: one group per step count
        too_long = [d for d in cfg.testbed_steps() if d > src.config.max_steps]
        if too_long:
            raise ConfigError(f"difficulties {too_long}: the policy's testbed has at most {src.config.max_steps} steps")
        return [(d, d, src.problems(cfg.split, cfg.problems, steps=d, modulus=cfg.modulus, seed=cfg.seed))
                for d in cfg.testbed_steps()]
    if cfg.modulus is not None:
        raise ConfigError("modulus applies to the testbed, not to a task file")
    bins = list(task.difficulty_bins())
    task.problems(cfg.split, 1)  # names the splits the file has when this one is missing
    if not bins:
        if cfg.difficulties:
            raise ConfigError(f"--difficulties {cfg.difficulties}: {task.name} has no difficulty column")
        return [("all", 0, task.problems(cfg.split, cfg.problems, seed=cfg.seed))]
    # by default every bin the split holds (a bin only in `train` is no error); ranks stay file-wide
    in_split = {str(p.difficulty) for p in task.all_problems if p.split == cfg.split and p.difficulty is not None}
    wanted = [str(d) for d in cfg.difficulties] if cfg.difficulties else [b for b in bins if b in in_split]
    if not wanted:
        raise ConfigError(f"split {cfg.split!r} of {task.name} has no problem with a difficulty")
    missing = [d for d in wanted if d not in bins]
    if missing:
        raise ConfigError(f"difficulty {missing[0]!r} is not in {task.name}; its difficulties: {', '.join(bins)}")
    by_label = {str(d): d for d in {p.difficulty for p in task.all_problems if p.difficulty is not None}}
    out = []
    for rank, label in enumerate(bins, 1):
        if label in wanted:
            d = by_label[label]
            steps = d if isinstance(d, int) else rank
            out.append((d, steps, task.problems(cfg.split, cfg.problems, difficulty=d, seed=cfg.seed)))
    return out


def evaluate(cfg: TesttimeConfig, runs_dir: str | Path, *,
             progress: Callable[[str, int, int], None] | None = None,
             on_record: Callable[[RunRecord], None] | None = None) -> list[RunRecord]:
    from scalelab.records import check_output_dir
    from scalelab.runs import torch_threads

    check_output_dir(runs_dir, "--runs-dir")  # before any sampling: a bad path is found at once
    with torch_threads(cfg.threads):
        ctx, parent, pid, src = load_context(cfg, progress=progress)
        groups = problem_groups(cfg, ctx.task, src)
        if src is None:
            for _, _, problems in groups:
                check_prompts(ctx, problems)
        out = []
        for label, steps, problems in groups:
            for name in cfg.strategies:
                s = get_strategy(name)
                for n in ([1] if s.kind == "single" else cfg.n):
                    rec = _point(cfg, ctx, parent, pid, problems, name, (label, steps), n, Path(runs_dir))
                    out.append(rec)
                    if on_record is not None:
                        on_record(rec)
            ctx.pools.clear()  # the next difficulty has other problems
        return out


def check_prompts(ctx: Context, problems: list[Any]) -> None:
    """Every prompt fits the policy's context with room to answer: refused before any sampling."""
    eng, task = ctx.engine, ctx.task
    for p in problems:
        n = len(eng.encode(task.prompt(p)))
        if n >= eng.context:
            raise ConfigError(f"{task.name}: problem {p.id} (line {p.line}) gives a prompt of {n} tokens but the "
                              f"model's context is {eng.context} (max_position_embeddings); shorten it or use "
                              "fewer --shots")


def run_dir_for(runs_dir: Path, cfg: TesttimeConfig, pid: str, strategy: str, steps: Any, n: int) -> Path:
    quiet = {"judge", "judge_template"} if cfg.judge is None else set()  # ids written before judges existed hold
    key = {**cfg.model_dump(exclude=EXECUTION | {"model"} | set(TASK_FIELDS) | quiet), **cfg.task_key(), "policy": pid,
           "strategy": strategy, "steps": steps, "n": n}
    home = runs_dir / pid if cfg.on_testbed else runs_dir / pid / Path(cfg.task).stem  # one task per curve folder
    return home / strategy / f"d{steps}" / run_id(strategy, f"d{steps}", f"n{n}", key=key)


def _point(cfg: TesttimeConfig, ctx: Context, parent: Any, pid: str, problems: list[Any], name: str,
           group: tuple[Any, int], n: int, runs_dir: Path) -> RunRecord:
    label, d = group
    run_dir = run_dir_for(runs_dir, cfg, pid, name, label, n)
    if (run_dir / "record.json").is_file():
        old = read_record(run_dir)
        if old.status == "complete":
            return old
    s = get_strategy(name)
    t0 = time.perf_counter()
    outs = run_strategy(name, problems, n, ctx)
    wall = time.perf_counter() - t0
    task = TestbedTask(direct=True) if s.direct else ctx.task
    acc, se = est.mean_and_se([o.correct for o in outs])
    ans, _ = est.mean_and_se([o.answer_correct for o in outs])
    inf = float(sum(o.flops_inference for o in outs))
    ver = float(sum(o.flops_verifier for o in outs))
    q = len(outs)
    metrics: dict[str, Any] = {
        "n": n, "accuracy": acc, "accuracy_se": se, "accuracy_ci95": list(est.interval95([o.correct for o in outs])),
        "answer_accuracy": ans,
        "chance": float(np.mean([task.chance(p) for p in problems])),
        "difficulty": label, "steps": d, "problems": q, "kind": s.kind,
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
    rec = RunRecord(run_id=run_dir.name, parent_id=pid, phase="testtime", technique=name,
                    task=cfg.task_name(), config={**cfg.model_dump(), "strategy": name, "steps": d, "n_budget": n})
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
