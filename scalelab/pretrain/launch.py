"""One large training run over K processes under torchrun: DDP, or FSDP for models that do not fit
one device. Every rank calls the same `train(config, runs_dir, parallel=...)` as a one-process run;
this module holds all the parallelism (the model file and the loop stay as they are).

    scalelab train --preset d6 --set tokens=2e7 --nproc 2             # torchrun --standalone here
    torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint HEAD:29500 \\
        -m scalelab.pretrain.launch config.json --runs-dir /shared/runs    # each node of a cluster

What a K-process run does (PyTorch's DDP notes; FSDP2 `fully_shard` docs):
- Every rank draws the same global batch of B sequences from the source (the data of step s is a
  pure function of (seed, s)) and trains on rows [r*B/K, (r+1)*B/K): the global batch, the
  schedule, the token and FLOP counts are those of the one-process run with batch B.
- DDP averages gradients over ranks; the mean of K equal-sized per-rank mean losses is the global
  mean loss, so the update is the one-process update up to floating-point order
  (tests/test_scaleout.py measures the difference). The logged loss is averaged over ranks.
- FSDP shards parameters, gradients and AdamW moments over ranks (each decoder layer is one unit);
  checkpoints gather full tensors, so a checkpoint has the same format whatever K and mode wrote
  it, and any K (1 included) resumes it.
- Held-out evaluation is split over ranks and summed (DDP), or run in full on every rank (FSDP,
  whose forward passes are collective).
- Rank 0 alone takes the run lock and writes records, metrics and checkpoints.
Backends: gloo on CPU, NCCL on CUDA. Timeouts: the rendezvous waits at most `rdzv_timeout_s` for
the other nodes (torchrun's join_timeout) and for its store at the endpoint (read_timeout); any
collective waits at most COLLECTIVE_TIMEOUT_S.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import traceback
from pathlib import Path
from typing import Any

from scalelab.errors import ConfigError, ScalelabError
from scalelab.pretrain.parallel import MODES, init_from_env


def choose_mode(mode: str, config: Any, vocab_size: int) -> str:
    """`auto`: FSDP when AdamW training state (~16 bytes per parameter in fp32: weights, gradients,
    two moments; ZeRO paper, Rajbhandari et al. 2020) would exceed 80% of one GPU; else DDP."""
    if mode not in MODES:
        raise ConfigError(f"--parallel {mode!r}: expected one of {', '.join(MODES)}")
    if mode != "auto":
        return mode
    import torch

    from scalelab import model as M
    from scalelab.pretrain.train import plan_run

    if config.device == "cpu" or not torch.cuda.is_available():
        return "ddp"
    n = M.param_counts(plan_run(config, vocab_size)["arch"]).total
    return "fsdp" if 16 * n > 0.8 * torch.cuda.get_device_properties(0).total_memory else "ddp"


# ---- the worker (one rank) ------------------------------------------------------------------------
def worker_main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m scalelab.pretrain.launch",
                                 description="one rank of a scalelab training run (start it with torchrun)")
    ap.add_argument("config", help="a TrainConfig JSON file")
    ap.add_argument("--runs-dir", default="runs")
    ap.add_argument("--parallel", default="ddp", choices=("ddp", "fsdp"))
    args = ap.parse_args(argv)
    if sys.platform.startswith("linux"):
        _end_with_parent()  # a rank whose torchrun was killed stops too
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from scalelab.pretrain.train import TrainConfig, quiet_import_noise, train

    quiet_import_noise()
    par = None
    try:
        cfg = TrainConfig.from_json(args.config)
        par = init_from_env(args.parallel, cfg.device)
        show = (lambda e: print(f"  step {e['step']}/{e['steps']}  eval loss {e['eval_loss']:.4f}", flush=True)
                if e["eval_loss"] is not None else None) if par.main else None
        rec = train(cfg, args.runs_dir, progress=show, parallel=par)
        if par.main:
            print(f"rank 0: run {rec.run_id} {rec.status}", flush=True)
        return 0 if rec.status == "complete" else 1
    except ScalelabError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 2
    except Exception as e:  # noqa: BLE001 - a fault on this rank (out of memory, a bug): keep the
        # traceback in the log and end with the one line that `launch` reports (torchrun's own
        # summary says only "To enable traceback see ...").
        traceback.print_exc()
        why = " ".join(str(e).split())
        print(f"error: rank {par.rank if par else os.environ.get('RANK', '?')}: {type(e).__name__}"
              f"{': ' + why if why else ''}", file=sys.stderr, flush=True)
        return 1
    finally:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


# ---- the launcher (`scalelab train --nproc K`) ----------------------------------------------------
class LaunchError(ScalelabError):
    """torchrun or one of its ranks failed; the message says which and why."""


# Oversubscription a user may want (two CPU ranks on one core test DDP); beyond it --nproc is a typo.
RANKS_PER_CORE = 4


def check_launch(nproc: int, nnodes: int, rdzv_endpoint: str | None, rdzv_timeout_s: float) -> None:
    """The launcher's options, refused before anything starts or is written: a node runs at most
    RANKS_PER_CORE ranks per CPU core or GPU (torchrun would start them all, then crawl), and a
    rendezvous needs a HOST:PORT and a finite positive timeout."""
    import math

    if nproc < 1 or nnodes < 1:
        raise ConfigError("--nproc and --nnodes must be >= 1")
    most = RANKS_PER_CORE * max(os.cpu_count() or 1, _gpus())
    if nproc > most:
        raise ConfigError(f"--nproc {nproc}: more than {most} processes ({RANKS_PER_CORE} per CPU core or GPU of "
                          "this node); one per core or GPU is the usual choice")
    if nnodes > 1 and not rdzv_endpoint:
        raise ConfigError("--nnodes > 1 needs --rdzv-endpoint HOST:PORT (the node that hosts the rendezvous)")
    if rdzv_endpoint is not None:
        host, _, port = rdzv_endpoint.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"--rdzv-endpoint {rdzv_endpoint!r}: expected HOST:PORT, e.g. node0:29400")
    if not (math.isfinite(rdzv_timeout_s) and rdzv_timeout_s > 0):
        raise ConfigError(f"--rdzv-timeout {rdzv_timeout_s}: expected a positive number of seconds")


def check_workers(workers: int) -> None:
    """Local sweep processes (one torch thread each): at most RANKS_PER_CORE per CPU core."""
    most = RANKS_PER_CORE * (os.cpu_count() or 1)
    if not 1 <= workers <= most:
        raise ConfigError(f"--workers {workers}: expected 1 to {most} local processes ({RANKS_PER_CORE} per CPU "
                          "core of this machine); one per core is the usual choice")


def _gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def launch(config: Any, runs_dir: str | Path, nproc: int, *, mode: str = "ddp", nnodes: int = 1,
           rdzv_endpoint: str | None = None, rdzv_id: str | None = None, rdzv_timeout_s: float = 60.0,
           echo: Any = None) -> Path:
    """Run `config` under torchrun with `nproc` processes on this node; return the run directory.
    One node: `--standalone` (a free local port). Several: c10d rendezvous at `rdzv_endpoint`,
    giving up after `rdzv_timeout_s` if the other nodes do not join."""
    from scalelab.pretrain.train import run_id_for

    check_launch(nproc, nnodes, rdzv_endpoint, rdzv_timeout_s)
    run_dir = Path(runs_dir) / run_id_for(config)
    run_dir.mkdir(parents=True, exist_ok=True)
    threads = config.threads or max(1, (os.cpu_count() or 1) // nproc)
    # The ranks' config file lives in the run: a launcher killed before its cleanup litters nothing else.
    cfg_file = run_dir / f".torchrun-config-{os.getpid()}.json"
    cfg_file.write_text(config.model_copy(update={"threads": threads}).to_json())
    # join_timeout bounds the wait for the other nodes; read_timeout the connection to the store at
    # the endpoint, which a node that does not host it (the endpoint is not one of its own names)
    # otherwise retries for 60 s a try: 195 s with --rdzv-timeout 10 (docs/LOG.md, 2026-11-25).
    t = max(1, int(rdzv_timeout_s))
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}"]
    if nnodes == 1 and not rdzv_endpoint:
        cmd += ["--standalone", "--nnodes=1"]
    else:
        cmd += [f"--nnodes={nnodes}", "--rdzv-backend=c10d", f"--rdzv-endpoint={rdzv_endpoint}",
                f"--rdzv-id={rdzv_id or run_dir.name}", f"--rdzv-conf=join_timeout={t},read_timeout={t}",
                "--max-restarts=0"]
    cmd += ["-m", "scalelab.pretrain.launch", str(cfg_file), "--runs-dir", str(runs_dir), "--parallel", mode]
    log = run_dir / "torchrun.log"
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "OMP_WAIT_POLICY": "PASSIVE"}
    try:
        with open(log, "a") as err:
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True, env=env,
                                    preexec_fn=_end_with_parent if sys.platform.startswith("linux") else None)
            assert proc.stdout is not None
            for line in proc.stdout:  # rank 0's progress lines
                if echo is not None and not line.startswith("rank 0: run"):
                    echo(line.rstrip("\n"))
            code = proc.wait()
    finally:
        cfg_file.unlink(missing_ok=True)
    if code != 0:
        raise LaunchError(_why(log, code, nnodes, rdzv_endpoint, rdzv_timeout_s))
    return run_dir


def _end_with_parent() -> None:
    """SIGTERM this process when its parent dies, even by SIGKILL (Linux's PR_SET_PDEATHSIG). Set in
    torchrun (before it starts) and in every rank: without it a killed `scalelab train` left torchrun,
    and a killed torchrun left its ranks, training on and holding the run lock (tests/test_scaleout.py)."""
    import ctypes
    import signal

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


def _why(log: Path, code: int, nnodes: int, endpoint: str | None, timeout_s: float) -> str:
    text = log.read_text(errors="replace") if log.is_file() else ""
    tail = text[-20_000:]
    mine = [ln[len("error: "):] for ln in tail.splitlines() if ln.startswith("error: ")]
    if mine:
        return f"{mine[-1]} (torchrun log: {log})"
    if "RendezvousTimeoutError" in tail or "RendezvousConnectionError" in tail or "DistNetworkError" in tail:
        return (f"torchrun rendezvous failed: {nnodes} node(s) expected at {endpoint or 'localhost'}, not all joined "
                f"or the endpoint was unreachable (--rdzv-timeout {timeout_s:.0f} s; torchrun log: {log})")
    last = [ln.strip() for ln in tail.splitlines() if "Error" in ln or "error" in ln]
    return f"torchrun exited with code {code}: {last[-1][:300] if last else 'no error line'} (torchrun log: {log})"

if __name__ == "__main__":
    raise SystemExit(worker_main())
