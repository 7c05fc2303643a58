"""Sweeps: plans (grid, IsoFLOP) and executors that run every member through `train(config)`.

A plan is a list of `TrainConfig`s. A member's run id is the hash of its config, so a sweep is
idempotent and resumable by construction: re-running the same command skips complete members,
resumes interrupted ones from their last checkpoint (`scalelab.checkpoint`), and two workers can
never write the same run (each run is also held by an OS lock while it trains, see
`train.run_lock`). A `kill -9` of the whole sweep loses at most the steps since each running
member's last checkpoint.

Executors share one interface (`Executor.run(configs, runs_dir, on_event)`) and one worker entry
point (`run_member`), so a Ray executor only has to call `run_member` remotely.

    from scalelab.pretrain.sweep import plan_isoflop, run_sweep
    configs = plan_isoflop(base, budgets=[1e12, 1e13], points=5, vocab_size=64)
    outcomes = run_sweep(configs, "runs/iso", workers=2)

Command line: `scalelab sweep --plan isoflop --budgets 1e12,1e13 --points-per-budget 5 --runs-dir runs/iso`.
"""
from __future__ import annotations

import json
import math
import os
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

from scalelab import checkpoint as ckpt
from scalelab import model as M
from scalelab.errors import ConfigError, InputError
from scalelab.records import atomic_write_json, check_output_dir, config_hash, read_record
from scalelab.tables import load_runs
from scalelab.pretrain.train import RunBusy, TrainConfig, plan_run, quiet_import_noise, run_id_for, train

# Hoffmann et al. 2022 (table 3): compute-optimal training uses ~20 tokens per parameter; the
# IsoFLOP plan centres each budget's sizes on it. Only the centre depends on it: the fit finds
# the real optimum, provided the points bracket it.
TOKENS_PER_PARAM = 20.0
MAX_DEPTH = M.MAX_DEPTH
MIN_DEPTH = 2  # one layer cannot form induction heads (Olsson et al. 2022): another regime

# `--preset quick` (<= 2 min on 2 idle cores, used by tests) and `--preset default` (<= 20 min).
# Budgets are exact training FLOPs; `base` overrides TrainConfig defaults for every member. On the
# testbed the compute-optimal models at 1e12-3e12 FLOPs are the smallest of the ladder (d2 beat d3
# at 3e12 with 464 tokens per parameter; docs/LOG.md, 2026-11-25), so the presets centre on 150
# tokens per parameter and admit depth 1 as the left bracket of the lowest budgets.
SWEEP_PRESETS: dict[str, dict[str, Any]] = {
    "quick": {"plan": "isoflop", "budgets": [1e11, 2.5e11, 6e11], "points": 3, "tokens_per_param": 150,
              "min_depth": 1, "base": {"seq_len": 256, "eval_tokens": 16_384}},
    "default": {"plan": "isoflop", "budgets": [2e11, 6e11, 2e12, 6e12], "points": 5, "tokens_per_param": 150,
                "min_depth": 1, "max_tokens_per_param": 5000, "base": {"seq_len": 256, "eval_tokens": 32_768}},
}
# On text (`--corpus stdlib` or PATH) the same presets change two things. The vocabulary is 1,024
# (4,096 would put most of a small model's FLOPs in its embedding and head) and the standard
# library's test suites are included: at 1,024 tokens the library alone is 4.1M training tokens,
# and the largest members and the 10x extrapolation run would repeat it many times, leaving the
# regime the Chinchilla law describes (Muennighoff et al. 2023: up to ~4 epochs cost little).
# Budgets stop at 3e12 for the same reason (docs/LOG.md, 2026-11-25).
TEXT_PRESETS: dict[str, dict[str, Any]] = {
    "quick": {"source_options": {"vocab_size": 1024}},
    "default": {"budgets": [1e11, 3e11, 1e12, 3e12],
                "source_options": {"vocab_size": 1024, "include_tests": True}},
}


def sweep_preset(name: str, source: str = "testbed") -> dict[str, Any]:
    """A sweep preset for a source: the testbed's as listed, text sources with TEXT_PRESETS applied
    (`source_options` joins the preset's base config)."""
    if name not in SWEEP_PRESETS:
        raise ConfigError(f"--preset {name!r}: expected one of {', '.join(SWEEP_PRESETS)}")
    pre = {**SWEEP_PRESETS[name], "base": dict(SWEEP_PRESETS[name]["base"])}
    if source != "testbed":
        text = dict(TEXT_PRESETS.get(name, {}))
        opts = text.pop("source_options", None)
        pre.update(text)
        if opts:
            pre["base"]["source_options"] = opts
    return pre


# ---- plans -----------------------------------------------------------------------------------
def plan_grid(base: TrainConfig, sizes: list[str], tokens: list[int]) -> list[TrainConfig]:
    """Every size trained for every token count."""
    if not sizes or not tokens:
        raise ConfigError("grid plan: give at least one size (--sizes) and one token count (--tokens)")
    return _unique([base.override([f"model={s}", f"tokens={int(d)}"]) for s in sizes for d in tokens])


def plan_isoflop(base: TrainConfig, budgets: list[float], points: int, *, vocab_size: int,
                 family: str | None = None, moe: bool | None = None,
                 tokens_per_param: float | list[float] = TOKENS_PER_PARAM, min_depth: int = MIN_DEPTH,
                 max_tokens_per_param: float | None = None, sizes: list[str] | None = None,
                 seeds: int | list[int] = 1) -> list[TrainConfig]:
    """For each budget C, `points` consecutive ladder sizes centred on the size that would see
    `tokens_per_param` tokens per parameter (one ratio, or one per budget in the order given: the
    compute-optimal ratio moves with the budget, on the testbed's fact band steeply), each trained
    for C / (exact FLOPs per token) tokens.
    The ladder is every depth of the family from `min_depth`, or the presets in `sizes` (a finer
    ladder with width-suffixed rungs, `d3w32`, ordered by size). Sizes that would see more than
    `max_tokens_per_param` are left out: far past their optimum they add nothing to the parabola,
    and the smallest models are the slowest per FLOP. `seeds` (one count, or one per budget) adds
    replicates of a budget's runs with seeds base.seed + 1, ... (small budgets are seed noise)."""
    if not budgets or points < 1:
        raise ConfigError("isoflop plan: give at least one budget (--budgets) and --points-per-budget >= 1")
    ratios = tokens_per_param if isinstance(tokens_per_param, list) else [tokens_per_param] * len(budgets)
    if len(ratios) != len(budgets):
        raise ConfigError(f"isoflop plan: {len(ratios)} tokens-per-parameter centres for {len(budgets)} budgets; "
                          "give one, or one per budget")
    counts = seeds if isinstance(seeds, list) else [seeds] * len(budgets)
    if len(counts) != len(budgets) or min(counts) < 1:
        raise ConfigError(f"isoflop plan: seeds {seeds}: give one count >= 1, or one per budget")
    centre, replicas = dict(zip(budgets, ratios)), dict(zip(budgets, counts))
    ref = M.parse_preset(base.model, vocab_size, base.seq_len)
    family = family or ("gpu" if ref.name.startswith("gpu-") else "cpu")
    moe = ref.is_moe if moe is None else moe
    prefix = ("gpu-" if family == "gpu" else "") + ("moe-" if moe else "")
    archs = [M.parse_preset(n, vocab_size, base.seq_len)
             for n in sizes or [f"{prefix}d{depth}" for depth in range(min_depth, MAX_DEPTH[family] + 1)]]
    archs.sort(key=lambda a: M.param_counts(a).active)
    out = []
    for c in sorted(budgets):
        ladder = []  # (name, tokens, tokens per parameter) for every size with enough tokens
        for arch in archs:
            d = int(c / M.train_flops_per_token(arch, base.seq_len))
            too_many = max_tokens_per_param is not None and d / M.param_counts(arch).active > max_tokens_per_param
            if d >= max(1000, 10 * base.seq_len) and not too_many:
                ladder.append((arch.name, d, d / M.param_counts(arch).active))
        if len(ladder) < points:
            raise ConfigError(f"budget {c:.3g} FLOPs: only {len(ladder)} ladder sizes get >= 10 sequences; "
                              f"raise the budget or lower --points-per-budget")
        best = min(range(len(ladder)), key=lambda i: abs(math.log(ladder[i][2] / centre[c])))
        lo = min(max(0, best - points // 2), len(ladder) - points)
        out += [base.override([f"model={n}", f"tokens={d}", f"seed={base.seed + j}"])
                for j in range(replicas[c]) for n, d, _ in ladder[lo:lo + points]]
    return _unique(out)


def _unique(configs: list[TrainConfig]) -> list[TrainConfig]:
    seen: dict[str, TrainConfig] = {}
    for c in configs:
        seen.setdefault(run_id_for(c), c)
    return list(seen.values())


# ---- executors -------------------------------------------------------------------------------
@dataclass
class Outcome:
    run_id: str
    status: str  # complete | failed | skipped (already complete) | busy (held by another process)
    error: str | None = None
    loss: float | None = None


class Executor(Protocol):
    """Runs members, each through `run_member`, reporting events: {"kind": "progress" | "done",
    "run_id", ...}. Must return one Outcome per config."""

    def run(self, configs: list[TrainConfig], runs_dir: Path,
            on_event: Callable[[dict[str, Any]], None]) -> list[Outcome]: ...


def run_member(config: dict[str, Any], runs_dir: str, report: Callable[[dict[str, Any]], None] | None = None) -> Outcome:
    """Train one member in this process; never raises for a failed run (the record says why)."""
    c = TrainConfig.build(config)
    try:
        rec = train(c, runs_dir, progress=(lambda ev: report({"kind": "progress", **ev})) if report else None)
    except RunBusy as e:
        return Outcome(run_id_for(c), "busy", str(e))
    except Exception as e:  # noqa: BLE001 - the member fails, the sweep goes on
        return Outcome(run_id_for(c), "failed", f"{type(e).__name__}: {e}")
    return Outcome(rec.run_id, rec.status, rec.error, rec.metrics.get("loss"))


_EVENTS: Any = None


def _init_worker(events: Any, threads: int) -> None:
    """Runs in each worker before torch is imported: thread settings must precede OpenMP's start."""
    global _EVENTS
    _EVENTS = events
    os.environ["OMP_NUM_THREADS"] = str(threads)
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"  # FINDINGS.md: busy-waiting threads slowed training 10-16x
    quiet_import_noise()
    parent = os.getppid()

    def watch() -> None:  # a worker whose sweep was killed stops too (its checkpoint stays)
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def _worker_member(config: dict[str, Any], runs_dir: str) -> Outcome:
    return run_member(config, runs_dir, _EVENTS.put if _EVENTS is not None else None)


class InProcessExecutor:
    """Members one after another in this process: no start-up cost per worker (importing torch and
    transformers takes seconds), the default for `--workers 1`."""

    def __init__(self, threads: int | None = None):
        self.threads = threads

    def run(self, configs: list[TrainConfig], runs_dir: Path,
            on_event: Callable[[dict[str, Any]], None]) -> list[Outcome]:
        out = []
        for c in configs:
            o = run_member({**c.model_dump(), "threads": self.threads or c.threads}, str(runs_dir), on_event)
            on_event({"kind": "done", "run_id": o.run_id, "status": o.status})
            out.append(o)
        return out


class LocalExecutor:
    """`workers` spawned processes on this machine, `threads` torch threads each (default 1 when
    several workers, all cores when one: two 1-thread workers beat one 2-thread job, FINDINGS.md)."""

    def __init__(self, workers: int = 1, threads: int | None = None):
        if workers < 1:
            raise ConfigError(f"workers={workers}: expected >= 1")
        self.workers = workers
        self.threads = threads or (1 if workers > 1 else (os.cpu_count() or 1))

    def run(self, configs: list[TrainConfig], runs_dir: Path,
            on_event: Callable[[dict[str, Any]], None]) -> list[Outcome]:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        ctx = mp.get_context("spawn")  # fork after torch has started threads is unsafe
        events = ctx.Queue()
        stop = threading.Event()

        def pump() -> None:
            while not stop.is_set():
                try:
                    on_event(events.get(timeout=0.2))
                except queue.Empty:
                    continue

        pumper = threading.Thread(target=pump, daemon=True)
        pumper.start()
        outcomes: dict[str, Outcome] = {}
        pool = ProcessPoolExecutor(self.workers, mp_context=ctx, initializer=_init_worker,
                                   initargs=(events, self.threads))
        try:
            futures = {pool.submit(_worker_member, {**c.model_dump(), "threads": self.threads}, str(runs_dir)):
                       run_id_for(c) for c in configs}
            for f in as_completed(futures):
                try:
                    out = f.result()
                except Exception as e:  # noqa: BLE001 - a worker process died (e.g. out of memory)
                    out = Outcome(futures[f], "failed", f"worker died: {type(e).__name__}: {e}")
                outcomes[out.run_id] = out
                on_event({"kind": "done", "run_id": out.run_id, "status": out.status})
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            stop.set()
            pumper.join()
        return [outcomes[run_id_for(c)] for c in configs]


# ---- the sweep -------------------------------------------------------------------------------
def run_sweep(configs: list[TrainConfig], runs_dir: str | Path, *, workers: int = 1,
              executor: Executor | None = None, vocab_size: int | None = None,
              on_event: Callable[[dict[str, Any]], None] | None = None, show_progress: bool = False,
              plan: dict[str, Any] | None = None) -> list[Outcome]:
    """Run every member not yet complete; skip complete ones; report unreadable records."""
    runs_dir = check_output_dir(runs_dir, "--runs-dir")
    runs_dir.mkdir(parents=True, exist_ok=True)
    ids = [run_id_for(c) for c in configs]
    atomic_write_json(runs_dir / f"sweep-{config_hash(ids)}.json",
                      {"plan": plan or {}, "members": ids, "configs": [c.model_dump() for c in configs]})
    problems = load_runs(runs_dir, status=None).problems
    bad = {Path(p.path).name for p in problems}
    todo, outcomes = [], {}
    for c, rid in zip(configs, ids):
        if rid in bad:
            outcomes[rid] = Outcome(rid, "failed", f"unreadable record: {_problem(problems, rid)}")
            continue
        if (runs_dir / rid / "record.json").is_file() and read_record(runs_dir / rid).status == "complete":
            outcomes[rid] = Outcome(rid, "skipped", loss=read_record(runs_dir / rid).metrics.get("loss"))
            continue
        todo.append(c)
    if vocab_size is not None:  # largest first: the pool drains evenly and the ETA settles early
        todo.sort(key=lambda c: -c.tokens * plan_run(c, vocab_size)["flops_per_token"])
    executor = executor or (LocalExecutor(workers) if workers > 1 else InProcessExecutor())
    if todo:
        if show_progress and vocab_size is not None:
            with _ProgressBar(todo, vocab_size, len(configs) - len(todo), runs_dir) as bar:
                done = executor.run(todo, runs_dir, bar.chain(on_event))
        else:
            done = executor.run(todo, runs_dir, on_event or (lambda ev: None))
        outcomes.update({o.run_id: o for o in done})
    return [outcomes[i] for i in ids]


def _checkpointed_flops(run_dir: Path) -> float:
    last = ckpt.latest(run_dir)
    if last is None:
        return 0.0
    try:
        return float(json.loads((last / ckpt.STATE_FILE).read_text()).get("flops", 0.0))
    except (OSError, ValueError):
        return 0.0


def _problem(problems: list[Any], rid: str) -> str:
    return next(p.reason for p in problems if Path(p.path).name == rid)


class _ProgressBar:
    """A rich bar on stderr over the FLOPs of the members still to run, with an ETA."""

    def __init__(self, todo: list[TrainConfig], vocab_size: int, skipped: int, runs_dir: Path):
        from rich.progress import BarColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        from scalelab.progress import progress_bars

        self.total = {run_id_for(c): c.tokens * plan_run(c, vocab_size)["flops_per_token"] for c in todo}
        # Work already in checkpoints counts as done from the start, so resuming does not read as
        # a burst of speed that would make the ETA optimistic.
        self.done = {rid: _checkpointed_flops(runs_dir / rid) for rid in self.total}
        self.members, self.finished = len(todo) + skipped, skipped
        self.progress = progress_bars(TextColumn("{task.description}"), BarColumn(),
                                      TextColumn("{task.percentage:>3.0f}% of FLOPs"), TimeElapsedColumn(),
                                      TextColumn("ETA"), TimeRemainingColumn())
        self.task = self.progress.add_task(self._label(), total=sum(self.total.values()),
                                           completed=sum(self.done.values()))

    def _label(self) -> str:
        return f"sweep {self.finished}/{self.members} members"

    def __enter__(self) -> "_ProgressBar":
        self.progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.stop()

    def chain(self, other: Callable[[dict[str, Any]], None] | None) -> Callable[[dict[str, Any]], None]:
        def handle(ev: dict[str, Any]) -> None:
            rid = ev["run_id"]
            if ev["kind"] == "progress":
                self.done[rid] = min(ev["flops"], self.total.get(rid, ev["flops"]))
            elif ev["kind"] == "done":
                self.done[rid] = self.total.get(rid, 0.0)
                self.finished += 1
            self.progress.update(self.task, completed=sum(self.done.values()), description=self._label())
            if other is not None:
                other(ev)
        return handle


def read_budgets(text: str, what: str = "budgets") -> list[float]:
    """"1e12,3e12" -> [1e12, 3e12], with a one-line error naming the bad item."""
    out = []
    for item in text.split(","):
        try:
            v = float(item.strip())
        except ValueError:
            raise InputError(f"--{what}: {item.strip()!r} is not a number") from None
        if not v > 0 or not math.isfinite(v):
            raise InputError(f"--{what}: {item.strip()!r} must be a positive number")
        out.append(v)
    return out
