"""Pretraining sweeps on a Ray cluster (the optional `ray` extra).

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

Joining a cluster (`cluster.connect`) and test-time sampling on Ray (`inference.sharded`,
`testtime.ray_eval`) live apart from the sweep runner.
"""
from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Any, Callable

from scalelab import trackers
from scalelab.cluster import connect, describe_failure, require_ray
from scalelab.errors import ConfigError, ScalelabError
from scalelab.pretrain.sweep import Outcome, run_member
from scalelab.pretrain.train import TrainConfig, run_id_for

# A retried task may find its run still locked for a moment by the process Ray is killing (a worker
# on a node being torn down); it waits this long before reporting the member busy.
BUSY_WAIT_S = 30.0


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


def mark_failed(run_dir: Path, reason: str) -> None:
    """Write `failed` + reason into a member's record when the driver can see it and nobody holds
    the run (a worker killed by SIGKILL could not write it itself)."""
    from scalelab.runs import RunBusy, run_lock
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
            runtime_env={"env_vars": {"OMP_NUM_THREADS": str(self.threads), "OMP_WAIT_POLICY": "PASSIVE",
                                      **trackers.worker_env()}})  # members log where the sweep does
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
