"""A test-time evaluation with its sampling sharded over Ray actors (`inference.sharded`).

Command line: `scalelab testtime ... --executor ray [--address HOST:PORT] [--shards K]`.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Callable

from scalelab.cluster import connect, require_ray
from scalelab.errors import ConfigError
from scalelab.inference.sharded import ShardedEngine, _EngineActor


def evaluate_on_ray(cfg: Any, runs_dir: str | Path, *, address: str | None = None, workers: int = 2,
                    cpus_per_worker: float | None = None, connect_timeout_s: float = 20.0,
                    progress: Callable[[str, int, int], None] | None = None,
                    on_record: Callable[[Any], None] | None = None) -> list[Any]:
    """`testtime.evaluate.evaluate` with its sampling sharded over `workers` Ray actors: the same
    loop over difficulties, strategies and budgets, the same `_point` writing the same records.
    Parallel and single-answer strategies sample through `Engine.generate` and are sharded;
    search strategies drive step-by-step sessions and run on the driver's local engine. Each
    actor asks Ray for `cpus_per_worker` CPUs (default: `cfg.threads`, else 1) and uses as many
    torch threads; the driver runs with `cfg.threads`, as the local evaluation does."""
    from scalelab.runs import torch_threads
    from scalelab.testtime import evaluate as E
    from scalelab.testtime.strategies import get_strategy

    ray = require_ray()
    if workers < 1:
        raise ConfigError(f"--shards {workers}: expected >= 1")
    cpus = cpus_per_worker if cpus_per_worker is not None else (cfg.threads or 1)
    # Joined before the policy loads: an unreachable cluster is reported before anything heavy runs.
    # Unlike sweep tasks, which queue, every actor must be placed at once, or sampling waits forever:
    # a local instance declares enough CPUs (oversubscribing this machine), a cluster must have them.
    need = workers * cpus
    owns = connect(address, timeout_s=connect_timeout_s,
                   num_cpus=None if address else max(os.cpu_count() or 1, math.ceil(need)))
    try:
        have = ray.cluster_resources().get("CPU", 0)
        if have < need:
            raise ConfigError(f"--shards {workers} x {cpus:g} CPUs: the Ray cluster has {have:g} CPUs, and an "
                              f"actor that cannot be placed would wait forever; use fewer shards")
        with torch_threads(cfg.threads):
            ctx, parent, pid, src = E.load_context(cfg, progress=progress)
            groups = E.problem_groups(cfg, ctx.task, src)
            if src is None:
                for _, _, problems in groups:
                    E.check_prompts(ctx, problems)
            threads = max(1, int(cpus))
            actor = ray.remote(_EngineActor).options(
                num_cpus=cpus, max_restarts=1, max_task_retries=1,
                runtime_env={"env_vars": {"OMP_NUM_THREADS": str(threads), "OMP_WAIT_POLICY": "PASSIVE"}})
            # The actors load the policy from this path: on a cluster it must be one every node sees.
            model = str(Path(cfg.model).resolve())
            ctx.engine = ShardedEngine(ctx.engine, [actor.remote(model, cfg.max_batch, threads) for _ in range(workers)])
            out = []
            for label, steps, problems in groups:
                for name in cfg.strategies:
                    for n in ([1] if get_strategy(name).kind == "single" else cfg.n):
                        rec = E._point(cfg, ctx, parent, pid, problems, name, (label, steps), n, Path(runs_dir))
                        out.append(rec)
                        if on_record is not None:
                            on_record(rec)
                ctx.pools.clear()  # the next difficulty has other problems
            return out
    finally:
        if owns:
            ray.shutdown()
