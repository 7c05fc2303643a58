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
import json
import os
import subprocess
import sys
import traceback
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Iterator

from scalelab.errors import ConfigError, ScalelabError

COLLECTIVE_TIMEOUT_S = 600.0
MODES = ("auto", "ddp", "fsdp")


class Single:
    """The one-process run: every hook is the identity."""

    rank, world, main, mode = 0, 1, True, "single"

    def lock(self, run_dir: Path) -> Any:
        from scalelab.checkpoint import run_lock

        return run_lock(run_dir)

    def check_batch(self, batch: int) -> None:
        pass

    def wrap(self, model: Any) -> Any:
        return model

    def shard(self, x: Any) -> Any:
        return x

    def mean(self, t: Any) -> Any:
        return t

    def barrier(self) -> None:
        pass

    def eval_part(self, batches: list[Any]) -> list[Any]:
        return batches

    eval_reduce = None

    def load_checkpoint(self, path: Path, opt: Any, model: Any) -> dict[str, Any]:
        from scalelab import checkpoint as ckpt

        return ckpt.load(path, opt, model)

    def save_checkpoint(self, run_dir: Path, model: Any, tok: Any, opt: Any, state: dict[str, Any]) -> None:
        from scalelab import checkpoint as ckpt

        ckpt.save(run_dir, model, tok, opt, state)

    def describe(self) -> dict[str, Any] | None:
        return None


SINGLE = Single()


@dataclass
class Parallel(Single):
    """K ranks of one run (after `init_process_group`); see the module docstring."""

    rank: int = 0
    world: int = 1
    mode: str = "ddp"
    backend: str = "gloo"

    def __post_init__(self) -> None:
        self.main = self.rank == 0

    # ---- agreement ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self, run_dir: Path) -> Iterator[None]:
        """Rank 0 holds the run lock; every rank learns whether it got it (so none waits alone)."""
        from scalelab.checkpoint import RunBusy, run_lock

        held = contextlib.ExitStack()
        ok = True
        if self.main:
            try:
                held.enter_context(run_lock(run_dir))
            except RunBusy:
                ok = False
        if not self._all(ok):
            held.close()
            raise RunBusy(f"{run_dir}: another process is training this run")
        with held:
            yield

    def _all(self, flag: bool) -> bool:
        import torch
        import torch.distributed as dist

        t = torch.tensor([0 if flag else 1], dtype=torch.int64, device=self._device())
        dist.all_reduce(t)
        return int(t.item()) == 0

    def _device(self) -> Any:
        import torch

        return torch.device("cuda", torch.cuda.current_device()) if self.backend == "nccl" else torch.device("cpu")

    def barrier(self) -> None:
        import torch.distributed as dist

        dist.barrier()

    # ---- the step ------------------------------------------------------------------------------
    def check_batch(self, batch: int) -> None:
        if batch % self.world:
            raise ConfigError(f"batch_size {batch} sequences cannot be split evenly over {self.world} processes; "
                              f"set batch_size to a multiple of {self.world} (--set batch_size=...)")

    def wrap(self, model: Any) -> Any:
        if self.mode == "fsdp":
            from torch.distributed.fsdp import fully_shard

            for m in model.modules():  # one unit per decoder layer, then the rest (embeddings, head)
                if type(m).__name__.endswith("DecoderLayer"):
                    fully_shard(m)
            fully_shard(model)
            return model
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [self._device().index] if self.backend == "nccl" else None
        # No buffer sync per forward (torch 2.13 renamed broadcast_buffers to forward_sync_buffers):
        # the only buffers are rotary frequencies, equal on every rank.
        return DDP(model, device_ids=ids, forward_sync_buffers=False)

    def shard(self, x: Any) -> Any:
        per = x.shape[0] // self.world
        return x[self.rank * per:(self.rank + 1) * per]  # [B/K, T+1]

    def mean(self, t: Any) -> Any:
        import torch.distributed as dist

        t = t.detach().clone()
        dist.all_reduce(t)
        return t / self.world

    # ---- evaluation ----------------------------------------------------------------------------
    def eval_part(self, batches: list[Any]) -> list[Any]:
        return batches if self.mode == "fsdp" else batches[self.rank::self.world]

    def eval_reduce(self, total: float, count: float) -> tuple[float, float]:  # type: ignore[override]
        import torch
        import torch.distributed as dist

        if self.mode == "fsdp":  # every rank scored every batch
            return total, count
        t = torch.tensor([total, count], dtype=torch.float64, device=self._device())
        dist.all_reduce(t)
        return float(t[0]), float(t[1])

    # ---- checkpoints ---------------------------------------------------------------------------
    def load_checkpoint(self, path: Path, opt: Any, model: Any) -> dict[str, Any]:
        if self.mode != "fsdp":
            return super().load_checkpoint(path, opt, model)
        import torch
        from safetensors.torch import load_file
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        from scalelab import checkpoint as ckpt

        state = json.loads((path / ckpt.STATE_FILE).read_text())
        tensors = load_file(str(path / ckpt.OPTIMIZER_FILE))
        torch.set_rng_state(tensors.pop("rng.torch_cpu"))
        by_index = ckpt.flat_to_optimizer(tensors, state["optimizer"], model)
        names = [n for g in state["optimizer"]["param_groups"] for n in g["params"]]  # index -> name
        full = {"state": {names[i]: s for i, s in by_index["state"].items()},
                "param_groups": [{**g, "params": [names[i] for i in g["params"]]} for g in by_index["param_groups"]]}
        set_optimizer_state_dict(model, opt, full, options=StateDictOptions(full_state_dict=True))
        return state

    def save_checkpoint(self, run_dir: Path, model: Any, tok: Any, opt: Any, state: dict[str, Any]) -> None:
        if self.mode != "fsdp":
            if self.main:
                super().save_checkpoint(run_dir, model, tok, opt, state)
            return
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions, get_model_state_dict, get_optimizer_state_dict,
        )

        opts = StateDictOptions(full_state_dict=True, cpu_offload=True)  # collectives: every rank
        weights = get_model_state_dict(model, options=opts)
        moments = get_optimizer_state_dict(model, opt, options=opts)
        if self.main:  # full tensors exist on rank 0 only
            shadow, view = _plain_copy(model, weights, moments)
            super().save_checkpoint(run_dir, shadow, tok, view, state)

    def describe(self) -> dict[str, Any]:
        return {"mode": self.mode, "world_size": self.world, "backend": self.backend,
                "batch_rows_per_rank": "batch_size / world_size"}


def _plain_copy(model: Any, weights: dict[str, Any], moments: dict[str, Any]) -> tuple[Any, Any]:
    """An unsharded CPU model holding `weights`, and an optimizer look-alike over its parameters
    holding `moments`, in the shape `checkpoint.save` reads (so the files match a one-process run's)."""
    from transformers import AutoModelForCausalLM

    shadow = AutoModelForCausalLM.from_config(model.config)
    shadow.load_state_dict(weights)
    params = dict(shadow.named_parameters())
    order = [n for g in moments["param_groups"] for n in g["params"]]

    class View:
        param_groups = [{**g, "params": [params[n] for n in g["params"]]} for g in moments["param_groups"]]

        @staticmethod
        def state_dict() -> dict[str, Any]:
            return {"state": {order.index(n): s for n, s in moments["state"].items()},
                    "param_groups": [{**g, "params": [order.index(n) for n in g["params"]]}
                                     for g in moments["param_groups"]]}

    return shadow, View()


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
def init_from_env(mode: str, device: str) -> Parallel:
    """`init_process_group` from torchrun's environment (RANK, WORLD_SIZE, MASTER_ADDR, ...)."""
    import torch
    import torch.distributed as dist

    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        raise ConfigError("scalelab.pretrain.launch runs under torchrun (RANK and WORLD_SIZE are not set)")
    cuda = device in ("cuda", "auto") and torch.cuda.is_available()
    backend = "nccl" if cuda else "gloo"
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group(backend, timeout=timedelta(seconds=COLLECTIVE_TIMEOUT_S))
    return Parallel(rank=dist.get_rank(), world=dist.get_world_size(), mode=mode, backend=backend)


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


def launch(config: Any, runs_dir: str | Path, nproc: int, *, mode: str = "ddp", nnodes: int = 1,
           rdzv_endpoint: str | None = None, rdzv_id: str | None = None, rdzv_timeout_s: float = 60.0,
           echo: Any = None) -> Path:
    """Run `config` under torchrun with `nproc` processes on this node; return the run directory.
    One node: `--standalone` (a free local port). Several: c10d rendezvous at `rdzv_endpoint`,
    giving up after `rdzv_timeout_s` if the other nodes do not join."""
    from scalelab.pretrain.train import run_id_for

    if nproc < 1 or nnodes < 1:
        raise ConfigError("--nproc and --nnodes must be >= 1")
    if nnodes > 1 and not rdzv_endpoint:
        raise ConfigError("--nnodes > 1 needs --rdzv-endpoint HOST:PORT (the node that hosts the rendezvous)")
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
