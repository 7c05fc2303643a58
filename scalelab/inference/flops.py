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
             modules, a routed expert's weights times top_k / experts), plus attention
             4 x layers x heads x head_dim x keys, sizes read through `scalelab.anatomy`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from scalelab import model as M
from scalelab.anatomy import fused_experts, is_expert, is_projection, shape

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
    s = shape(cfg)
    if not (s.layers and s.hidden and s.ffn and s.vocab):
        return None
    return M.Arch(
        name=f"hf-{cfg.model_type}", depth=s.layers, width=s.hidden, n_heads=s.heads, n_kv_heads=s.kv_heads,
        head_dim=s.head_dim, ffn=s.ffn, vocab_size=s.vocab,
        max_seq_len=getattr(cfg, "max_position_embeddings", 0) or 0,
        tie_embeddings=bool(getattr(cfg, "tie_word_embeddings", False)), n_experts=s.experts, top_k=s.top_k)


def _generic(model: Any) -> FlopModel:
    """2 FLOPs per weight of every projection but the head (a routed expert's weights times the
    share of experts a token runs through, top_k / experts), attention from the query width."""
    s = shape(model.config)
    share = s.top_k / s.experts if s.experts else 1.0
    body = 0.0
    for name, mod in model.named_modules():  # outside the blocks too (OPT's project_in / project_out)
        if is_projection(mod) and mod is not model.get_output_embeddings():
            body += mod.weight.numel() * (share if is_expert(name) else 1.0)
    body += sum(p.numel() for _, p in fused_experts(model)) * share
    head_mod = model.get_output_embeddings()
    head = 2.0 * head_mod.weight.numel() if head_mod is not None else 0.0
    # QK^T and AV: 2 x 2 x heads x head_dim per key per layer (model.py's _attention_flops)
    return FlopModel(body=2.0 * body, head=head, attn_per_key=4.0 * s.layers * s.attn_width,
                     source=f"generic ({getattr(model.config, 'model_type', '?')})")


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
