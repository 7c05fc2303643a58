"""Scale-out (issue 8): sweeps on Ray, one run over K processes under torchrun, and their faults.

Fast (CI, ~1 min on 2 cores): the install hint without Ray; an unreachable Ray address (closed
port, and a port that never speaks Ray); 2 torchrun processes on CPU against the one-process run,
and their checkpoint resumed by 1 process; a torchrun rendezvous that never completes; a member
out of memory in a sweep; Ray's OOM kill named in the reason.
Slow (`-m slow`): a real two-node Ray cluster on loopback that loses its worker node mid-sweep;
on a local Ray instance, members that run out of memory or are SIGKILLed (as by the kernel's OOM
killer) fail with their reason and a re-run retries them; test-time sampling sharded over Ray
actors writes the local evaluation's records.

Faults are injected by `FaultySource`, whose behaviour comes from the environment, so the faulty
run and its clean re-run share one config and one run id (as a real re-run after an OOM does).
"""
from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from scalelab.pretrain import sweep as S
from scalelab.records import read_metrics, read_record
from scalelab.pretrain.train import TrainConfig, run_id_for

from tests.conftest import REPO
from tests.test_train_source import MarkovSource

FAULT_ENV = "SCALELAB_TEST_FAULTS"  # "on": FaultySource members fail at FAULT_STEP; unset: they train
FAULT_STEP = 60  # checkpoints every 25 steps: a re-run resumes from step 50
SOURCE = "tests.test_train_source:MarkovSource"
FAULTY = "tests.test_scaleout:FaultySource"


class FaultySource(MarkovSource):
    """MarkovSource whose batch for step FAULT_STEP fails while $SCALELAB_TEST_FAULTS is set:
    fault="memory" raises MemoryError (what a failed allocation raises); fault="sigkill" kills the
    process, as the kernel's OOM killer does. Unset, it is MarkovSource, so a re-run after the
    fault has the faulty run's config and run id."""

    def __init__(self, fault: str | None = None, **kw):
        super().__init__(**kw)
        self.fault = fault

    def train_batch(self, step: int, batch_size: int, seq_len: int, seed: int):
        if self.fault and step == FAULT_STEP and os.environ.get(FAULT_ENV):
            if self.fault == "sigkill":
                os.kill(os.getpid(), signal.SIGKILL)
            raise MemoryError(f"test: cannot allocate the batch of step {step}")
        return super().train_batch(step, batch_size, seq_len, seed)


def tiny(**kw) -> TrainConfig:
    base = dict(model="d1", source=SOURCE, seq_len=16, batch_size=4, tokens=64 * 100, threads=1,
                eval_every=25, log_every=10, checkpoint_every=25)
    return TrainConfig.build({**base, **kw})


def _sets(cfg: TrainConfig, *keys: str) -> list[str]:
    out = []
    for k in keys:
        v = getattr(cfg, k)
        out += ["--set", f"{k}={json.dumps(v) if isinstance(v, dict) else v}"]
    return out


def _free_ports(n: int) -> list[int]:
    """n distinct ports free now (held open together, so the kernel cannot hand one out twice)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]


def _free_port() -> int:
    return _free_ports(1)[0]


def _env(**extra: str) -> dict[str, str]:
    """The subprocesses' environment: this repo importable (tests.* sources), one torch thread."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    env.pop(FAULT_ENV, None)
    return {**env, **extra}


def _cli(*args: str, timeout: float = 300, **env: str) -> subprocess.CompletedProcess:
    """The real command line, in its own process group: on a timeout the whole group (torchrun and
    its ranks included) is killed, not only the CLI process."""
    p = subprocess.Popen([sys.executable, "-m", "scalelab", *map(str, args)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, cwd=REPO, env=_env(**env), start_new_session=True)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.communicate()
        raise
    return subprocess.CompletedProcess(p.args, p.returncode, out, err)


def _assert_one_complete_record(run_dir: Path, cfg: TrainConfig) -> None:
    """Complete, and its metrics have each step once, in order, up to the last: nothing lost or doubled."""
    rec = read_record(run_dir)
    assert rec.status == "complete", (run_dir.name, rec.status, rec.error)
    steps = [r["step"] for r in read_metrics(run_dir)]
    assert steps == sorted(set(steps)) and steps[-1] == rec.hparams["steps"], steps
    assert rec.tokens == cfg.tokens


# ---- Ray: install hint and unreachable address --------------------------------------------------
def test_executor_ray_without_ray_says_how_to_install(monkeypatch, tmp_path, capsys):
    from scalelab.cli import main

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError, as when not installed
    with pytest.raises(SystemExit) as e:
        main(["sweep", "--plan", "grid", "--sizes", "d1", "--tokens", "2000", "--runs-dir", str(tmp_path),
              "--executor", "ray"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("error: Ray is not installed"), err
    assert "pip install -e '.[ray]'" in err
    assert not list(tmp_path.iterdir())  # refused before anything was planned or written


@pytest.mark.parametrize("listener", ["closed port", "silent listener"])
def test_unreachable_ray_address_is_one_line_exit_2_within_30_s(tmp_path, listener):
    """Nothing listening fails at once (a TCP probe); a port that accepts but never speaks Ray's
    protocol fails when the bounded wait for ray.init runs out (20 s)."""
    pytest.importorskip("ray")
    port = _free_port()
    server = None
    if listener == "silent listener":
        server = socket.create_server(("127.0.0.1", port))  # accepts (kernel backlog), never answers
    try:
        t0 = time.monotonic()
        r = _cli("sweep", "--plan", "grid", "--sizes", "d1", "--tokens", "2000", "--runs-dir", tmp_path,
                 "--executor", "ray", "--address", f"127.0.0.1:{port}", *_sets(tiny(), "source", "seq_len"),
                 timeout=60)
        took = time.monotonic() - t0
    finally:
        if server is not None:
            server.close()
    assert r.returncode == 2, r.stderr
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and f"127.0.0.1:{port}" in errors[0], r.stderr
    assert r.stderr.strip().splitlines()[-1] == errors[0]
    assert took < 30, took


# ---- torchrun: 2 processes against 1 --------------------------------------------------------------
# Tolerance: DDP sums the two ranks' half-batch gradients, the one process the whole batch, so the
# updates differ only by float32 summation order. Over these 100 AdamW steps the largest relative
# difference of any logged loss was 5.6e-8 (docs/LOG.md, 2026-11-25); 1e-5 leaves two orders of
# magnitude for other CPUs and torch builds.
REL_TOL = 1e-5


def _assert_same_curve(ref: list[dict], got: list[dict]) -> None:
    assert [r["step"] for r in got] == [r["step"] for r in ref][:len(got)]
    for ra, rb in zip(ref, got):
        assert (ra["tokens"], ra["flops"]) == (rb["tokens"], rb["flops"])  # the same global batch
        for k in ("loss", "eval_loss"):
            assert (ra[k] is None) == (rb[k] is None)
            if ra[k] is not None:
                assert rb[k] == pytest.approx(ra[k], rel=REL_TOL), (ra["step"], k, ra[k], rb[k])


def test_torchrun_two_processes_match_one_and_their_checkpoint_resumes_in_one(tmp_path, monkeypatch):
    from scalelab.pretrain.launch import LaunchError, launch
    from scalelab.pretrain.train import train

    monkeypatch.delenv(FAULT_ENV, raising=False)
    monkeypatch.setenv("PYTHONPATH", _env()["PYTHONPATH"])  # the ranks import tests.test_scaleout
    cfg = tiny(source=FAULTY, source_options={"fault": "memory"})
    rid = run_id_for(cfg)
    one = train(cfg, tmp_path / "one")  # the reference: one process, batch 4
    ref = read_metrics(tmp_path / "one" / rid)
    assert one.status == "complete" and ref[-1]["step"] == 100

    keys = ("source", "source_options", "seq_len", "batch_size", "tokens", "threads", "eval_every", "log_every",
            "checkpoint_every")
    two = _cli("train", "--preset", "d1", *_sets(cfg, *keys), "--runs-dir", tmp_path / "two", "--nproc", "2")
    assert two.returncode == 0, two.stderr
    assert "ddp: 4 sequences per step split over 2 processes" in two.stderr
    rec = read_record(tmp_path / "two" / rid)
    assert rec.status == "complete" and rec.parallel["world_size"] == 2
    got = read_metrics(tmp_path / "two" / rid)
    assert len(got) == len(ref)
    _assert_same_curve(ref, got)

    # Two processes fail at step 60 (MemoryError on both ranks; last checkpoint: step 50), and the
    # launcher names the cause; one process resumes their checkpoint and ends on the same curve.
    monkeypatch.setenv(FAULT_ENV, "on")
    with pytest.raises(LaunchError, match=r"^rank \d: MemoryError: test: cannot allocate the batch of step 60"):
        launch(cfg, tmp_path / "resume", 2)
    run = tmp_path / "resume" / rid
    assert read_record(run).status == "failed" and read_record(run).parallel["world_size"] == 2
    monkeypatch.delenv(FAULT_ENV)
    resumed = train(cfg, tmp_path / "resume")
    assert resumed.status == "complete" and resumed.resumed_from_step == 50
    _assert_same_curve(ref, read_metrics(run))
    assert len(read_metrics(run)) == len(ref)


@pytest.mark.parametrize("endpoint", ["here", "unreachable"])
def test_torchrun_rendezvous_that_never_completes_is_one_line_exit_2_not_a_hang(tmp_path, endpoint):
    """Two nodes expected, one comes. At an endpoint of this machine the node hosts the rendezvous
    store and waits for the other (join_timeout); at another machine's it waits for the store
    (read_timeout, 60 s a try by default: 195 s before --rdzv-timeout bounded it too)."""
    host = f"127.0.0.1:{_free_port()}" if endpoint == "here" else "203.0.113.1:29400"  # TEST-NET-3: nobody
    cfg = tiny()
    t0 = time.monotonic()
    r = _cli("train", "--preset", "d1", *_sets(cfg, "source", "seq_len", "batch_size", "tokens", "threads"),
             "--runs-dir", tmp_path, "--nproc", "1", "--nnodes", "2", "--rdzv-endpoint", host,
             "--rdzv-timeout", "5", timeout=120)
    took = time.monotonic() - t0
    assert r.returncode == 2, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: torchrun rendezvous failed: 2 node(s) expected at {host}"), r.stderr
    assert took < 45, took


def _descendants(pid: int) -> set[int]:
    out, todo = set(), [pid]
    while todo:
        for task in Path(f"/proc/{todo.pop()}/task").glob("*"):
            with contextlib.suppress(OSError):
                kids = {int(k) for k in (task / "children").read_text().split()}
                out |= kids
                todo += kids
    return out


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux's")
def test_torchrun_and_its_ranks_end_when_the_launcher_is_killed(tmp_path):
    """kill -9 of `scalelab train --nproc 2` must not leave torchrun or its ranks training on,
    holding the run lock (they did before the launcher and the ranks set a parent-death signal)."""
    cfg = tiny(tokens=64 * 100_000)
    keys = ("source", "seq_len", "batch_size", "tokens", "threads", "eval_every", "log_every", "checkpoint_every")
    p = subprocess.Popen([sys.executable, "-m", "scalelab", "train", "--preset", "d1", "--runs-dir", str(tmp_path),
                          "--nproc", "2", *_sets(cfg, *keys)],
                         cwd=REPO, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / run_id_for(cfg) / "metrics.jsonl").is_file():  # the ranks are training
            assert p.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
        below = _descendants(p.pid)
        assert len(below) >= 3  # torchrun and two ranks
        p.kill()
        p.wait()
        deadline = time.monotonic() + 30
        while (alive := [q for q in below if Path(f"/proc/{q}").exists()
                         and "Z" not in (Path(f"/proc/{q}/stat").read_text().split(")")[-1].split()[:1])]):
            assert time.monotonic() < deadline, f"still running after the launcher died: {alive}"
            time.sleep(0.2)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)


# ---- a member out of memory ---------------------------------------------------------------------
def test_member_out_of_memory_is_failed_with_the_reason_the_sweep_goes_on_a_rerun_retries(tmp_path, monkeypatch):
    oom, ok = tiny(source=FAULTY, source_options={"fault": "memory"}), tiny(tokens=3200)
    monkeypatch.setenv(FAULT_ENV, "on")
    out = S.run_sweep([oom, ok], tmp_path)
    assert [o.status for o in out] == ["failed", "complete"]
    assert out[0].error == "MemoryError: test: cannot allocate the batch of step 60"
    rec = read_record(tmp_path / run_id_for(oom))
    assert rec.status == "failed" and "cannot allocate the batch of step 60" in rec.error

    monkeypatch.delenv(FAULT_ENV)  # e.g. more memory, or a smaller batch per device
    again = S.run_sweep([oom, ok], tmp_path)
    assert [o.status for o in again] == ["complete", "skipped"]
    assert read_record(tmp_path / run_id_for(oom)).resumed_from_step == 50
    _assert_one_complete_record(tmp_path / run_id_for(oom), oom)


def test_ray_out_of_memory_kill_is_named_in_the_reason():
    """Ray's memory monitor kills a task with OutOfMemoryError; the member's reason says so."""
    ray = pytest.importorskip("ray")
    from scalelab.cluster import describe_failure

    err = ray.exceptions.OutOfMemoryError("Task was killed due to the node running low on memory.\nMemory on the node")
    assert describe_failure(err) == ("out of memory (Ray's memory monitor killed the worker): "
                                     "Task was killed due to the node running low on memory.")


@pytest.mark.slow
def test_ray_member_out_of_memory_or_killed_is_failed_with_the_reason_and_a_rerun_retries(tmp_path, monkeypatch):
    """On a local Ray instance: one member raises MemoryError, one is SIGKILLed at the same step on
    every attempt (the kernel's OOM killer); both fail with their reason, the third completes, and a
    re-run (faults gone) resumes both from their step-50 checkpoints."""
    pytest.importorskip("ray")
    from scalelab.pretrain.ray_sweep import RayExecutor

    monkeypatch.setenv("PYTHONPATH", _env()["PYTHONPATH"])  # Ray's workers inherit it and import tests.*
    # A cluster recorded but gone (RAY_ADDRESS, or a stale /tmp/ray/ray_current_cluster after `ray start`
    # was killed): RayExecutor() must still start its own instance, not wait on the dead one.
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{_free_port()}")
    oom = tiny(source=FAULTY, source_options={"fault": "memory"})
    killed = tiny(source=FAULTY, source_options={"fault": "sigkill"})
    ok = tiny(tokens=3200)
    plan = [oom, killed, ok]
    monkeypatch.setenv(FAULT_ENV, "on")
    out = S.run_sweep(plan, tmp_path, executor=RayExecutor(max_retries=1))
    assert [o.status for o in out] == ["failed", "failed", "complete"], out
    assert out[0].error == "MemoryError: test: cannot allocate the batch of step 60"
    assert out[1].error.startswith("worker died: "), out[1].error
    for cfg, o in zip(plan[:2], out):
        rec = read_record(tmp_path / run_id_for(cfg))
        assert rec.status == "failed" and rec.error, rec
    assert read_record(tmp_path / run_id_for(killed)).error == out[1].error  # written by the driver

    monkeypatch.delenv(FAULT_ENV)
    again = S.run_sweep(plan, tmp_path, executor=RayExecutor(max_retries=1))
    assert [o.status for o in again] == ["complete", "complete", "skipped"], again
    for cfg in plan[:2]:
        assert read_record(tmp_path / run_id_for(cfg)).resumed_from_step == 50
        _assert_one_complete_record(tmp_path / run_id_for(cfg), cfg)


# ---- Ray: a two-node cluster on loopback loses its worker node mid-sweep ----------------------------
class _RayNode:
    """One `ray start --block` that this test owns: its own process group, temp dir and ports, so
    that killing it (the whole group) or stopping it touches nothing else on the machine."""

    FLAGS = ("node-manager-port", "object-manager-port", "metrics-export-port", "dashboard-agent-listen-port",
             "dashboard-agent-grpc-port", "runtime-env-agent-port")

    def __init__(self, name: str, args: list[str], env: dict[str, str], ports: list[int]):
        # Short: Ray's unix socket paths under the temp dir must fit in 107 bytes.
        self.temp = tempfile.mkdtemp(prefix=f"slray-{name}-")
        ports = dict(zip(self.FLAGS, ports, strict=True))
        cmd = [str(Path(sys.executable).with_name("ray")), "start", "--block", "--node-ip-address=127.0.0.1",
               "--num-cpus=1", f"--temp-dir={self.temp}", "--disable-usage-stats",
               *(f"--{k}={v}" for k, v in ports.items()), *args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                                     start_new_session=True)
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)

    def wait_started(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while not any("Ray runtime started" in ln for ln in self.lines):
            assert self.proc.poll() is None, "".join(self.lines)
            assert time.monotonic() < deadline, "".join(self.lines)
            time.sleep(0.2)

    def pids(self) -> list[int]:
        """This node's processes: its session (Ray's workers each lead a process group of their own,
        inside the session of `ray start`), and any that carry its temp dir on the command line."""
        out = []
        for d in Path("/proc").iterdir():
            if not d.name.isdigit():
                continue
            try:
                sid = os.getsid(int(d.name))
                cmd = (d / "cmdline").read_bytes().decode(errors="replace")
            except (OSError, ProcessLookupError):
                continue
            if sid == self.proc.pid or self.temp in cmd:
                out.append(int(d.name))
        return out

    def kill(self) -> None:
        """The node dies at once, as when its machine is lost."""
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # `ray start --block` stops its node's processes
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(30)
        self.kill()
        shutil.rmtree(self.temp, ignore_errors=True)


def _training_on(node: _RayNode, runs: Path) -> str | None:
    """The run a member process of `node` holds the lock of (it keeps `<run>/.lock` open)."""
    for pid in node.pids():
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    target = Path(os.readlink(fd))
                    if target.name == ".lock" and target.parent.parent == runs:
                        return target.parent.name
    return None


@pytest.mark.slow
def test_ray_cluster_loses_its_worker_node_mid_sweep_and_every_member_completes_once(tmp_path):
    """A head and a worker node on loopback (one CPU each); once a member training on the worker
    node has written a checkpoint, every process of that node is SIGKILLed. Ray resubmits the
    member to the head, which resumes it from that checkpoint; the sweep exits 0 and each member
    has exactly one complete record, none lost, none trained twice."""
    pytest.importorskip("ray")
    runs = tmp_path / "runs"
    # Node death is noticed after 5 missed 2 s health checks (Ray's default: 5 x 3 s + timeouts).
    # Token authentication (Ray 2.60's default when a token exists) with this test's own token,
    # never the user's ~/.ray/auth_token; both nodes and the sweep's driver need it.
    env = _env(RAY_health_check_period_ms="2000", RAY_health_check_timeout_ms="2000",
               RAY_health_check_failure_threshold="5", RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32))
    k = len(_RayNode.FLAGS)
    port, client_port, *ports = _free_ports(2 + 2 * k)
    head = _RayNode("head", ["--head", f"--port={port}", "--include-dashboard=false",
                             f"--ray-client-server-port={client_port}"], env, ports[:k])
    worker = None
    try:
        head.wait_started()
        worker = _RayNode("worker", [f"--address=127.0.0.1:{port}"], env, ports[k:])
        worker.wait_started()
        base = tiny(checkpoint_every=20)
        args = ["sweep", "--plan", "grid", "--sizes", "d1,d2", "--tokens", "12800,19200", "--runs-dir", runs,
                "--executor", "ray", "--address", f"127.0.0.1:{port}",
                *_sets(base, "source", "seq_len", "batch_size", "log_every", "eval_every", "checkpoint_every")]
        # The driver has the token but not RAY_AUTH_MODE, as a user's shell would: connect() must
        # turn token auth on by itself (plain ray.init(address=...) waits on InvalidAuthToken).
        driver_env = {k: v for k, v in env.items() if k != "RAY_AUTH_MODE"}
        sweep = subprocess.Popen([sys.executable, "-m", "scalelab", *map(str, args)], cwd=REPO, env=driver_env,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            victim, deadline = None, time.monotonic() + 300
            while sweep.poll() is None and time.monotonic() < deadline:
                victim = victim or _training_on(worker, runs)
                if victim and (runs / victim / "checkpoint" / "trainer_state.json").is_file():
                    break
                time.sleep(0.1)
            assert victim and sweep.poll() is None, "no member had checkpointed on the worker node"
            step_at_kill = json.loads((runs / victim / "checkpoint" / "trainer_state.json").read_text())["step"]
            worker.kill()
            out, err = sweep.communicate(timeout=600)
        finally:
            if sweep.poll() is None:
                os.killpg(sweep.pid, signal.SIGKILL)
                sweep.wait()
        assert sweep.returncode == 0, err
        print(out, err, f"killed the worker node while {victim} was at checkpoint step {step_at_kill}", sep="\n")
        configs = S.plan_grid(base, ["d1", "d2"], [12800, 19200])
        ids = {run_id_for(c) for c in configs}
        assert {p.name for p in runs.iterdir() if p.is_dir()} == ids  # none lost, none extra
        table = {ln.split()[0]: ln.split()[1] for ln in out.splitlines() if ln.split() and ln.split()[0] in ids}
        assert table == {i: "complete" for i in ids}, out  # Ray also prints the node's death on stdout
        for c in configs:
            _assert_one_complete_record(runs / run_id_for(c), c)
        assert read_record(runs / victim).resumed_from_step >= step_at_kill  # retried from its checkpoint
    finally:
        for node in (worker, head):
            if node is not None:
                node.stop()


# ---- Ray: test-time sampling sharded over actors ------------------------------------------------------
@pytest.mark.slow
def test_testtime_sampling_sharded_on_ray_writes_the_records_of_the_local_evaluation(tmp_path):
    """evaluate_on_ray against testtime.evaluate on one tiny testbed policy: the same records (run
    ids, budgets); greedy chain of thought is deterministic, so its accuracy and FLOPs are equal;
    sampled strategies draw other streams per shard (ShardedEngine), so only their shape is."""
    pytest.importorskip("ray")
    from scalelab.testtime.ray_eval import evaluate_on_ray
    from scalelab.testtime.evaluate import TesttimeConfig, evaluate
    from scalelab.pretrain.train import train

    policy = train(TrainConfig.build(model="d1", tokens=65_536, seq_len=256, batch_size=4, threads=1), tmp_path)
    cfg = TesttimeConfig.build(model=str(tmp_path / policy.run_id), strategies=["cot", "majority"], n=[1, 4],
                               difficulties=[1], problems=8, threads=1)
    here = evaluate(cfg, tmp_path / "local")
    there = evaluate_on_ray(cfg, tmp_path / "ray", workers=2)
    assert [r.run_id for r in there] == [r.run_id for r in here] and len(here) == 3
    for a, b in zip(here, there):
        assert b.status == "complete" and b.parent_id == a.parent_id
        if a.run_id.startswith("cot-"):
            assert (b.metrics["accuracy"], b.flops) == (a.metrics["accuracy"], a.flops)
