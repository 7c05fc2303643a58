"""The parallelism of one training run, kept apart from the loop (torchtitan keeps `parallelize.py`
beside `model.py` the same way): `Single` is the one-process run, `Parallel` a torchrun rank (DDP,
or FSDP for models that do not fit one device). `train(config, parallel=...)` calls the hooks;
`pretrain.launch` starts the ranks. What a K-process run does is written in `pretrain.launch`.
"""
from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Iterator

from scalelab.errors import ConfigError

COLLECTIVE_TIMEOUT_S = 600.0
MODES = ("auto", "ddp", "fsdp")


class Single:
    """The one-process run: every hook is the identity."""

    rank, world, main, mode = 0, 1, True, "single"

    def lock(self, run_dir: Path) -> Any:
        from scalelab.runs import run_lock

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
        from scalelab.runs import RunBusy, run_lock

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
