"""Sampling sharded over Ray actors that each hold a copy of the policy (the optional `ray` extra)."""
from __future__ import annotations

import os
import time
from typing import Any

from scalelab.cluster import describe_failure, require_ray
from scalelab.errors import ScalelabError


class _EngineActor:
    """Holds one copy of the policy on a Ray worker and samples for the prompts it is sent."""

    def __init__(self, model: str, max_batch: int, threads: int):
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        import torch

        from scalelab.inference.engine import Engine

        torch.set_num_threads(threads)
        self.engine = Engine.load(model, max_batch=max_batch)

    def generate(self, prompts: list[Any], n: int, params: Any) -> Any:
        return self.engine.generate(prompts, n, params)


class ShardedEngine:
    """An `Engine` whose `generate` splits its prompts into contiguous shards, one per Ray actor, and
    merges the results in prompt order; every other attribute (tokenizer, FLOP model, meter,
    sessions for step-by-step search) is the local engine's. Shard k samples with seed
    `seed + k * 1_000_003`: shard 0 keeps the evaluation's seed, so one shard draws exactly the
    local run's samples (same prompts, same batches, same generator), and the others draw
    independent streams. With K > 1 the samples therefore differ from a one-process run's (the
    engine draws every row of a batch from one generator); their distribution does not."""

    def __init__(self, local: Any, actors: list[Any]):
        self.local, self.actors = local, actors

    def __getattr__(self, name: str) -> Any:
        return getattr(self.local, name)

    def generate(self, prompts: Any, n: int = 1, params: Any = None, *, progress: Any = None) -> Any:
        import dataclasses

        from scalelab.inference.engine import Generation, SamplingParams

        ray = require_ray()
        params = params or SamplingParams()
        prompts = list(prompts)
        k = max(1, min(len(self.actors), len(prompts)))
        bounds = [round(i * len(prompts) / k) for i in range(k + 1)]
        t0 = time.perf_counter()
        refs = [self.actors[i].generate.remote(prompts[bounds[i]:bounds[i + 1]], n,
                                               dataclasses.replace(params, seed=params.seed + i * 1_000_003))
                for i in range(k)]
        try:
            parts = ray.get(refs)
        except ray.exceptions.RayError as e:  # an actor died twice (max_restarts=1) or raised: one line, no traceback
            raise ScalelabError(f"sampling on Ray failed: {describe_failure(e).rstrip('.')}; re-run the same command to "
                                f"resume (finished points are kept)") from None
        merged = Generation(
            completions=[row for g in parts for row in g.completions],
            prompt_tokens=[t for g in parts for t in g.prompt_tokens],
            flops_prefill=[f for g in parts for f in g.flops_prefill],
            flops_decode=[row for g in parts for row in g.flops_decode],
            wall_s=time.perf_counter() - t0, max_tokens=min(g.max_tokens for g in parts),
            backend=f"ray x{k} ({parts[0].backend})")
        if progress is not None:
            progress(len(prompts) * n, len(prompts) * n)
        self.local.meter.add(self.local.phase, merged.flops, prompt_tokens=sum(merged.prompt_tokens),
                             generated_tokens=merged.generated_tokens, kind="generate", n=n,
                             prompts=len(prompts), wall_s=merged.wall_s, shards=k)
        return merged
