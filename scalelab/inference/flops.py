"""FLOPs of test-time forward passes, and the meter that adds them up per call.

Convention (the same as `scalelab.model`, see its docstring): matmul FLOPs only, 2 per
multiply-add; per token, every projection, attention scores and values over the keys the token
attends to, and the output head (lm_head) only at positions whose logits are used. Padding and
masked cache slots are not counted: the figures are what the tokens need, not what a padded
batch happened to compute.

Two sources of the per-token constants:
  model.py   the Llama family (llama, mistral, mixtral, qwen2, qwen3 configs): an `Arch` is built
             from the Hugging Face config and `scalelab.model.prefill_flops` / `decode_flops`
             give the numbers, so a scalelab checkpoint is metered by the same code that
             counted its training.
  generic    any other causal LM: 2 x the weights of its linear layers per token (counted from
             the module), plus attention 4 x layers x hidden x keys from its config. Mixture-of-
             experts outside the Llama family would be over-counted (all experts); said in
             `FlopModel.source`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from scalelab import model as M

LLAMA_FAMILY = ("llama", "mistral", "mixtral", "qwen2", "qwen3")


@dataclass(frozen=True)
class FlopModel:
    """Per-token forward FLOPs of one model: body (everything but the head), head, attention."""

    body: float        # projections and MLP of all layers, per token
    head: float        # lm_head, per position whose logits are computed
    attn_per_key: float  # QK^T and AV, all layers, per (query token, key) pair
    source: str        # "model.py (llama)" or "generic (gpt2)"
    arch: Any = None   # the scalelab Arch when source is model.py

    def tokens(self, n: int, past: int, *, heads: int = 1) -> float:
        """`n` new tokens after `past` cached ones (token i attends to past + i keys), with the
        head at `heads` positions."""
        keys = n * past + n * (n + 1) / 2
        return self.body * n + self.attn_per_key * keys + self.head * heads

    def prefill(self, prompt_len: int) -> float:
        """Reading a prompt into the cache, logits at its last position (what generation needs)."""
        if self.arch is not None:
            return M.prefill_flops(self.arch, prompt_len)
        return self.tokens(prompt_len, 0)

    def decode(self, context: int) -> float:
        """One token attending to `context` keys, itself included, with its logits."""
        if self.arch is not None:
            return M.decode_flops(self.arch, context)
        return self.body + self.attn_per_key * context + self.head

    def decode_run(self, prompt_len: int, generated: int) -> float:
        """A sample of `generated` tokens after a prompt: every token but the last is fed back
        (the last one ends the sample and needs no logits), token j at context prompt + j."""
        fed = max(generated - 1, 0)
        return self.tokens(fed, prompt_len, heads=fed)


def flop_model(model: Any) -> FlopModel:
    """The FlopModel of a loaded Hugging Face causal LM."""
    cfg = model.config
    arch = arch_from_config(cfg)
    if arch is not None:
        body = 2 * (M._matmul_weights(arch) - arch.vocab_size * arch.width)
        return FlopModel(body=body, head=2.0 * arch.vocab_size * arch.width,
                         attn_per_key=M._attention_flops(arch, 1), source=f"model.py ({cfg.model_type})", arch=arch)
    return _generic(model)


def arch_from_config(cfg: Any) -> M.Arch | None:
    """A scalelab Arch for a Llama-family config (None for other families)."""
    if getattr(cfg, "model_type", None) not in LLAMA_FAMILY:
        return None
    try:
        heads = cfg.num_attention_heads
        n_exp = int(getattr(cfg, "num_local_experts", 0) or 0)
        return M.Arch(
            name=f"hf-{cfg.model_type}", depth=cfg.num_hidden_layers, width=cfg.hidden_size, n_heads=heads,
            n_kv_heads=getattr(cfg, "num_key_value_heads", None) or heads,
            head_dim=getattr(cfg, "head_dim", None) or cfg.hidden_size // heads,
            ffn=cfg.intermediate_size, vocab_size=cfg.vocab_size,
            max_seq_len=getattr(cfg, "max_position_embeddings", 0) or 0,
            tie_embeddings=bool(getattr(cfg, "tie_word_embeddings", False)),
            n_experts=n_exp, top_k=int(getattr(cfg, "num_experts_per_tok", 0) or 0) if n_exp else 0,
        )
    except (AttributeError, TypeError):
        return None


def _generic(model: Any) -> FlopModel:
    import torch

    head_mod = model.get_output_embeddings()
    linear = 0
    for mod in model.modules():
        if mod is head_mod:
            continue
        if isinstance(mod, torch.nn.Linear):
            linear += mod.weight.numel()
        elif type(mod).__name__ == "Conv1D":  # GPT-2 style projections (transformers.pytorch_utils)
            linear += mod.weight.numel()
    cfg = model.config
    layers = _first(cfg, "num_hidden_layers", "n_layer", "num_layers")
    hidden = _first(cfg, "hidden_size", "n_embd", "d_model")
    head = 2.0 * head_mod.weight.numel() if head_mod is not None else 0.0
    return FlopModel(body=2.0 * linear, head=head, attn_per_key=4.0 * layers * hidden,
                     source=f"generic ({getattr(cfg, 'model_type', '?')})")


def _first(cfg: Any, *names: str) -> int:
    for n in names:
        v = getattr(cfg, n, None)
        if v:
            return int(v)
    return 0


@dataclass
class FlopMeter:
    """Adds up test-time FLOPs by ledger phase ("inference": the policy; "verifier": reward
    models and self-checks by another model) and keeps one row per engine call."""

    totals: dict[str, float] = field(default_factory=lambda: {"inference": 0.0, "verifier": 0.0})
    tokens: dict[str, int] = field(default_factory=lambda: {"prompt": 0, "generated": 0, "scored": 0})
    calls: list[dict[str, Any]] = field(default_factory=list)
    keep_calls: bool = False

    def add(self, phase: str, flops: float, **row: Any) -> None:
        self.totals[phase] = self.totals.get(phase, 0.0) + float(flops)
        for k in ("prompt", "generated", "scored"):
            self.tokens[k] += int(row.get(f"{k}_tokens", 0))
        if self.keep_calls:
            self.calls.append({"phase": phase, "flops": float(flops), **row})

    def snapshot(self) -> dict[str, float]:
        return dict(self.totals)

    def since(self, snap: dict[str, float]) -> dict[str, float]:
        return {k: self.totals.get(k, 0.0) - snap.get(k, 0.0) for k in self.totals}
