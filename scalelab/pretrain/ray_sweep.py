"""Sweeps and test-time sampling on a Ray cluster (the optional `ray` extra).

`RayExecutor` runs each sweep member as one Ray task that calls the same `sweep.run_member` ->
`train(config)` as the local executors, so records land in the runs directory exactly as they do
locally. The runs directory must be a path that every node sees (a shared file system); the run
id is a hash of the config, so a retried task resumes its member from the last checkpoint and
two tasks can never both train one run (the OS lock in `scalelab.checkpoint`).

    from scalelab.pretrain.ray_sweep import RayExecutor
    run_sweep(configs, "/shared/runs/iso", executor=RayExecutor("head-node:6379", num_cpus=1))

Command line: `scalelab sweep ... --executor ray [--address HOST:PORT]`; with no address a local
Ray instance is started (and stopped at the end).

Faults, and what happens (Ray's task fault-tolerance docs):
  node or worker process dies   Ray resubmits the task up to `max_retries` times; the retry
                                resumes from the member's last checkpoint. After that the member
                                is failed with the reason; the sweep goes on.
  out of memory                 Ray's memory monitor kills the task; Ray's own default retries
                                such kills without limit, so the driver sets RAY_task_oom_retries
                                (read by the task's owner) to `oom_retries` unless the user set
                                it. Then failed with the reason, like a dead worker.
  unreachable address           a TCP probe first (ray.init itself waited > 200 s here on a
                                closed port, docs/LOG.md) and a bounded wait for ray.init: one
                                clear error within `connect_timeout_s`.
A failed member's record is marked failed with the reason when the driver can see it; re-running
the sweep retries every member that is not complete.

`evaluate_on_ray` shards a test-time evaluation's sampling over Ray actors that each hold the
policy (see `ShardedEngine`) and writes the same records as `testtime.evaluate`. Command line:
`scalelab testtime ... --executor ray [--address HOST:PORT] [--shards K]`.
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any, Callable

from scalelab.errors import ConfigError, ScalelabError
from scalelab.pretrain.sweep import Outcome, run_member
from scalelab.pretrain.train import TrainConfig, run_id_for

INSTALL_HINT = "Ray is not installed; install the extra with: pip install -e '.[ray]' (or pip install 'ray[default]>=2.40')"
# A retried task may find its run still locked for a moment by the process Ray is killing (a worker
# on a node being torn down); it waits this long before reporting the member busy.
BUSY_WAIT_S = 30.0


def require_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ConfigError(INSTALL_HINT) from None
    return ray


# ---- connecting --------------------------------------------------------------------------------
def _host_port(address: str) -> tuple[str, int] | None:
    """'host:port' or 'ray://host:port' -> (host, port); None for 'auto' / 'local'."""
    if address in ("auto", "local"):
        return None
    rest = address.split("://", 1)[-1].rstrip("/")
    host, sep, port = rest.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ConfigError(f"--address {address!r}: expected HOST:PORT (the head node's GCS port, 6379 by "
                          f"default) or ray://HOST:PORT")
    return host.strip("[]"), int(port)


def probe(address: str, timeout_s: float) -> None:
    """Fail fast with one line when nothing listens at `address` (Ray's own connect retries last minutes)."""
    hp = _host_port(address)
    if hp is None:
        return
    try:
        with socket.create_connection(hp, timeout=timeout_s):
            pass
    except OSError as e:
        reason = "timed out" if isinstance(e, (socket.timeout, TimeoutError)) else (e.strerror or type(e).__name__)
        raise ConfigError(f"cannot reach a Ray cluster at {address}: {reason} (is `ray start --head` running "
                          f"there, and is the port open?)") from None


def connect(address: str | None, *, timeout_s: float = 20.0, num_cpus: int | None = None,
            oom_retries: int = 1) -> bool:
    """Start a local Ray instance (address None) or join the cluster at `address`. Returns True when
    this call initialised Ray (so the caller shuts it down), False when Ray was already up."""
    ray = require_ray()
    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_task_oom_retries", str(oom_retries))  # read when the driver's core worker starts
    kw: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.WARNING, "configure_logging": True}
    if address is None:
        # On this thread: the processes a local instance starts die with the thread that started
        # them (Linux's parent-death signal), so a helper thread that returns would take them along.
        # address="local": a new instance always. ray.init() without an address joins the cluster
        # named by RAY_ADDRESS or by the last `ray start` on this machine (/tmp/ray/ray_current_cluster),
        # and when that cluster is gone it retried for minutes (docs/LOG.md, 2026-11-25).
        try:
            ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, **kw)
        except Exception as e:  # noqa: BLE001
            raise ConfigError(f"could not start a local Ray instance: {type(e).__name__}: {_first_line(e)}") from None
        return True
    probe(address, min(timeout_s, 10.0))
    _send_local_token()
    kw["address"] = address
    # ray.init has no timeout of its own when joining: run it on a helper thread (joining starts no
    # processes) and stop waiting after timeout_s; a hung attempt stays behind on its daemon thread.
    box: dict[str, BaseException | None] = {}

    def init() -> None:
        try:
            ray.init(**kw)
            box["error"] = None
        except BaseException as e:  # noqa: BLE001 - reported below, on the caller's thread
            box["error"] = e

    t = threading.Thread(target=init, name="ray-init", daemon=True)
    t.start()
    t.join(timeout_s)
    if "error" not in box:
        raise ConfigError(f"no Ray cluster answered at {address} within {timeout_s:.0f} s: something listens on "
                          f"that port, but it is not a Ray head node's GCS, or the cluster wants a token this "
                          f"machine lacks (set RAY_AUTH_TOKEN, or copy the head's ~/.ray/auth_token here)")
    if box["error"] is not None:
        e = box["error"]
        raise ConfigError(f"could not join the Ray cluster at {address}: {type(e).__name__}: {_first_line(e)}") from None
    return True


def _send_local_token() -> None:
    """Ray's rule for `ray start --head`, applied to this driver: with RAY_AUTH_MODE unset and a token
    on this machine (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token), use token auth. A head
    started next to a token turns token auth on by itself, but `ray.init(address=...)` does not, and
    then retries on "InvalidAuthToken" until our timeout (Ray 2.60; docs/LOG.md, 2026-11-25). A token
    sent to a cluster without authentication is ignored (checked). Ray's helper is private: if it
    moves, nothing changes and the timeout message names the token."""
    try:
        from ray._private.authentication import authentication_token_setup as auth
    except ImportError:
        return
    log = logging.getLogger(auth.__name__)
    level = log.level
    log.setLevel(logging.ERROR)  # its warning speaks of starting a cluster, not of joining one
    try:
        auth.maybe_enable_token_auth_if_token_available(warn_if_disabled=False)
    except Exception:  # noqa: BLE001 - best effort; RAY_AUTH_MODE=token does the same by hand
        pass
    finally:
        log.setLevel(level)


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [""])[0][:300]


# ---- sweeps ------------------------------------------------------------------------------------
def _member_task(config: dict[str, Any], runs_dir: str, events: Any, busy_wait_s: float) -> Outcome:
    """Runs in a Ray worker: one member through the same entry point as the local executors."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # FINDINGS.md: busy-waiting threads slowed training 10-16x
    from scalelab.pretrain.train import quiet_import_noise

    quiet_import_noise()

    def report(ev: dict[str, Any]) -> None:
        if events is None:
            return
        try:  # progress is best effort: a lost queue must never fail a member
            events.put_nowait(ev)
        except Exception:  # noqa: BLE001
            pass

    deadline = time.monotonic() + busy_wait_s
    while True:
        out = run_member(config, runs_dir, report)
        if out.status != "busy" or time.monotonic() > deadline:
            return out
        time.sleep(1.0)


def describe_failure(err: BaseException) -> str:
    """One line naming why a Ray task ended without a result."""
    ray = require_ray()
    exc = ray.exceptions
    first = _first_line(err)
    if isinstance(err, exc.OutOfMemoryError):
        return f"out of memory (Ray's memory monitor killed the worker): {first}"
    if isinstance(err, (exc.WorkerCrashedError, exc.NodeDiedError, exc.LocalRayletDiedError)):
        return f"worker died: {type(err).__name__}: {first}"
    if isinstance(err, exc.RayTaskError):
        cause = err.cause if getattr(err, "cause", None) is not None else err
        return f"{type(cause).__name__}: {_first_line(cause)}"
    return f"{type(err).__name__}: {first}"


def mark_failed(run_dir: Path, reason: str) -> None:
    """Write `failed` + reason into a member's record when the driver can see it and nobody holds
    the run (a worker killed by SIGKILL could not write it itself)."""
    from scalelab.checkpoint import RunBusy, run_lock
    from scalelab.records import read_record, write_record

    if not (run_dir / "record.json").is_file():
        return
    try:
        with run_lock(run_dir):
            rec = read_record(run_dir)
            if rec.status != "complete":
                write_record(run_dir, rec.fail(reason))
    except (RunBusy, ScalelabError, OSError):
        pass


class RayExecutor:
    """Each member is a Ray task asking for `num_cpus` CPUs and `num_gpus` GPUs; see the module docstring."""

    def __init__(self, address: str | None = None, *, num_cpus: float = 1, num_gpus: float = 0,
                 threads: int | None = None, max_retries: int = 3, oom_retries: int = 1,
                 connect_timeout_s: float = 20.0, busy_wait_s: float = BUSY_WAIT_S):
        require_ray()
        if num_cpus <= 0 or num_gpus < 0 or max_retries < 0 or oom_retries < 0:
            raise ConfigError("ray executor: num_cpus must be > 0; num_gpus, max_retries and oom_retries >= 0")
        self.address = address
        self.num_cpus, self.num_gpus = num_cpus, num_gpus
        self.threads = threads or max(1, int(num_cpus))
        self.max_retries, self.oom_retries = max_retries, oom_retries
        self.connect_timeout_s, self.busy_wait_s = connect_timeout_s, busy_wait_s

    def run(self, configs: list[TrainConfig], runs_dir: Path,
            on_event: Callable[[dict[str, Any]], None]) -> list[Outcome]:
        ray = require_ray()
        owns = connect(self.address, timeout_s=self.connect_timeout_s, oom_retries=self.oom_retries)
        try:
            return self._run(ray, configs, Path(runs_dir).resolve(), on_event)
        finally:
            if owns:
                ray.shutdown()

    def _run(self, ray: Any, configs: list[TrainConfig], runs_dir: Path,
             on_event: Callable[[dict[str, Any]], None]) -> list[Outcome]:
        events = _event_queue(ray)
        task = ray.remote(_member_task).options(
            num_cpus=self.num_cpus, num_gpus=self.num_gpus, max_retries=self.max_retries,
            retry_exceptions=False,  # a Python error in train() is deterministic: retrying repeats it
            runtime_env={"env_vars": {"OMP_NUM_THREADS": str(self.threads), "OMP_WAIT_POLICY": "PASSIVE"}})
        refs = {task.remote({**c.model_dump(), "threads": self.threads}, str(runs_dir), events,
                            self.busy_wait_s): run_id_for(c) for c in configs}
        outcomes: dict[str, Outcome] = {}
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1, timeout=0.5)
            _drain(events, on_event)
            for ref in done:
                rid = refs[ref]
                try:
                    out = ray.get(ref)
                except Exception as e:  # noqa: BLE001 - the member fails, the sweep goes on
                    out = Outcome(rid, "failed", describe_failure(e))
                    mark_failed(runs_dir / rid, out.error or "")
                if out.run_id != rid:  # the worker hashed the config differently: other code there
                    out = Outcome(rid, "failed", f"the worker wrote run {out.run_id} instead of {rid}: "
                                  f"scalelab differs between this driver and the cluster's workers")
                outcomes[rid] = out
                on_event({"kind": "done", "run_id": rid, "status": out.status})
        _drain(events, on_event)
        return [outcomes[run_id_for(c)] for c in configs]


def _event_queue(ray: Any) -> Any:
    """A progress queue pinned to the driver's node, so that losing a worker node never loses it."""
    try:
        from ray.util.queue import Queue
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        here = ray.get_runtime_context().get_node_id()
        return Queue(actor_options={"num_cpus": 0,
                                    "scheduling_strategy": NodeAffinitySchedulingStrategy(here, soft=False)})
    except Exception:  # noqa: BLE001 - no progress bar, same results
        return None


def _drain(events: Any, on_event: Callable[[dict[str, Any]], None]) -> None:
    if events is None:
        return
    with contextlib.suppress(Exception):
        for ev in events.get_nowait_batch(events.qsize()):
            on_event(ev)


# ---- test-time sampling ------------------------------------------------------------------------
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
    from scalelab.checkpoint import torch_threads
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
            too_long = [d for d in cfg.difficulties if d > src.config.max_steps]
            if too_long:
                raise ConfigError(f"difficulties {too_long}: the policy's testbed has at most {src.config.max_steps} steps")
            threads = max(1, int(cpus))
            actor = ray.remote(_EngineActor).options(
                num_cpus=cpus, max_restarts=1, max_task_retries=1,
                runtime_env={"env_vars": {"OMP_NUM_THREADS": str(threads), "OMP_WAIT_POLICY": "PASSIVE"}})
            # The actors load the policy from this path: on a cluster it must be one every node sees.
            model = str(Path(cfg.model).resolve())
            ctx.engine = ShardedEngine(ctx.engine, [actor.remote(model, cfg.max_batch, threads) for _ in range(workers)])
            out = []
            for d in cfg.difficulties:
                problems = src.problems(cfg.split, cfg.problems, steps=d, modulus=cfg.modulus, seed=cfg.seed)
                for name in cfg.strategies:
                    for n in ([1] if get_strategy(name).kind == "single" else cfg.n):
                        rec = E._point(cfg, ctx, parent, pid, problems, name, d, n, Path(runs_dir))
                        out.append(rec)
                        if on_record is not None:
                            on_record(rec)
                ctx.pools.clear()  # the next difficulty has other problems
            return out
    finally:
        if owns:
            ray.shutdown()
