"""The model a pretraining run trains, and what its checkpoints hold.

Dense ladder models train as `FastLlama` (`scalelab.pretrain.fastllama`: Llama's function, fewer
kernels per step); MoE models, FSDP runs and `attn_implementation="eager"` keep Hugging Face's
classes. Either way a checkpoint is the one `LlamaForCausalLM` / `MixtralForCausalLM` would write:
the weights through `save_pretrained`, and AdamW's moments in `optimizer.safetensors` under the HF
parameter names, so a run checkpointed by one kind of model resumes in the other and everything
downstream (`AutoModelForCausalLM.from_pretrained`, post-training, the inference engine) reads the
run unchanged.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from scalelab import checkpoint as ckpt, model as M
from scalelab.pretrain.fastllama import FastLlama, hf_names_of, hf_to_own, own_to_hf


def uses_fast(arch: M.Arch, attn_implementation: str, mode: str) -> bool:
    """FastLlama for dense models; FSDP's checkpoint gathering builds HF's classes (pretrain.parallel)."""
    return not arch.is_moe and attn_implementation == "sdpa" and mode != "fsdp"


def load_or_build(arch: M.Arch, c: Any, tokenizer: Any, last: Path | None, mode: str) -> Any:
    """The run's model: resumed from checkpoint `last`, or initialised from `c.seed`. A new FastLlama
    takes its initial weights from HF's initialisation (normal(0, 0.02), norms at 1), so a run starts
    from the same weights it did when HF's class trained it."""
    from transformers import AutoModelForCausalLM

    fast = uses_fast(arch, c.attn_implementation, mode)
    if last is not None:
        if fast:
            return FastLlama.from_pretrained(last)
        with ckpt.quiet_hf():
            return AutoModelForCausalLM.from_pretrained(last, dtype=torch.float32,
                                                        attn_implementation=c.attn_implementation)
    special = {f"{k}_token_id": getattr(tokenizer, f"{k}_token_id", None) for k in ("pad", "bos", "eos")}
    model = M.build_model(arch, seed=c.seed, special_tokens=special, attn_implementation=c.attn_implementation,
                          router_aux_loss_coef=c.router_aux_coef)
    return FastLlama.from_hf(model) if fast else model


def checkpoint_view(model: Any, opt: Any) -> tuple[Any, Any]:
    """(model, optimizer) as `checkpoint.save` / `checkpoint.load` should see them: themselves for HF
    models; for FastLlama, views under HF's parameter names (`HFNamedOptimizer`)."""
    if not isinstance(model, FastLlama):
        return model, opt
    view = HFNamedOptimizer(model, opt)
    return _Named(model, view.hf), view


class _Named:
    """FastLlama as `checkpoint.save` reads a model: save_pretrained, and named_parameters() under HF's
    names (only the names and their order matter there: it pairs optimizer slots with names)."""

    def __init__(self, model: Any, hf: dict[str, Any]):
        self.model, self.hf = model, hf  # the tensors the optimizer view lists, so their ids pair up

    def save_pretrained(self, path: Any, **kw: Any) -> None:
        self.model.save_pretrained(path, **kw)

    def named_parameters(self) -> Any:
        return iter(self.hf.items())


class HFNamedOptimizer:
    """A FastLlama's AdamW seen through HF's parameter names: `state_dict()` splits the moments of the
    fused q|k|v and gate|up matrices (element-wise state has its parameter's shape) and
    `load_state_dict()` joins them, with `fastllama.own_to_hf` / `hf_to_own`. The parameter order of
    each group is HF's (q, k, v, o, gate, up, down within a layer), which is also the order of an
    optimizer built over `LlamaForCausalLM.parameters()`."""

    def __init__(self, model: Any, opt: Any):
        self.model, self.opt = model, opt
        own = {id(p): n for n, p in model.named_parameters()}
        self.own_names = [[own[id(p)] for p in g["params"]] for g in opt.param_groups]
        self.hf_names = [[h for n in names for h in self._expand(n)] for names in self.own_names]
        # stand-ins, one per HF parameter: `checkpoint` pairs optimizer slots with names by identity
        self.hf = {h: torch.empty(0) for names in self.hf_names for h in names}
        self.param_groups = [{**g, "params": [self.hf[h] for h in names]}
                             for g, names in zip(opt.param_groups, self.hf_names)]

    def _expand(self, own_name: str) -> list[str]:
        return hf_names_of(own_name, self.model.config)

    def state_dict(self) -> dict[str, Any]:
        sd = self.opt.state_dict()
        flat = [n for names in self.own_names for n in names]
        index = {h: i for i, h in enumerate(h for names in self.hf_names for h in names)}
        state: dict[int, dict[str, Any]] = {}
        for i, slots in sd["state"].items():
            for slot, v in slots.items():
                if hasattr(v, "dim") and v.dim() > 0:
                    pieces = own_to_hf({flat[i]: v}, self.model.config)
                else:  # scalars (AdamW's step): the same for every piece
                    pieces = {h: v for h in self._expand(flat[i])}
                for h, t in pieces.items():
                    state.setdefault(index[h], {})[slot] = t
        groups = [{**g, "params": [index[h] for h in names]} for g, names in zip(sd["param_groups"], self.hf_names)]
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        saved = [len(g["params"]) for g in sd["param_groups"]]
        if saved != [len(n) for n in self.hf_names]:
            raise ValueError(f"checkpoint optimizer groups hold {saved} parameters; this model has "
                             f"{[len(n) for n in self.hf_names]} under HF's names")
        name_of = {i: h for g, names in zip(sd["param_groups"], self.hf_names) for i, h in zip(g["params"], names)}
        tensors: dict[str, dict[str, Any]] = {}  # slot -> {HF name: tensor}
        scalars: dict[str, dict[str, Any]] = {}  # slot -> {HF name: value}
        for i, slots in sd["state"].items():
            for slot, v in slots.items():
                (tensors if hasattr(v, "dim") and v.dim() > 0 else scalars).setdefault(slot, {})[name_of[i]] = v
        own_index = {n: i for i, n in enumerate(n for names in self.own_names for n in names)}
        state: dict[int, dict[str, Any]] = {}
        for slot, named in tensors.items():
            for n, t in hf_to_own(named, self.model.config).items():
                state.setdefault(own_index[n], {})[slot] = t
        for slot, named in scalars.items():  # a fused parameter takes its first piece's (all are equal)
            for n, i in own_index.items():
                if self._expand(n)[0] in named:
                    state.setdefault(i, {})[slot] = named[self._expand(n)[0]]
        groups = [{**g, "params": [own_index[n] for n in names]} for g, names in zip(sd["param_groups"], self.own_names)]
        self.opt.load_state_dict({"state": state, "param_groups": groups})
