"""A dense Llama decoder written for training speed: the function of Hugging Face's
`LlamaForCausalLM`, with its checkpoint layout, and less work per step.

Why it exists: at the ladder's CPU sizes (width 32-128, a few hundred tokens a step) much of a
step is spent outside the matmuls, in element-wise kernels and autograd bookkeeping, and HF's
Llama runs many (separate q/k/v and gate/up projections, rotary tables rebuilt every forward,
`rotate_half` by slicing and concatenation, RMSNorm as five autograd nodes, output classes).
Measured against nanoGPT and HF Llama in `benchmarks/bench_nanogpt.py` (docs/LOG.md).

The same function as HF Llama (transformers `models/llama/modeling_llama.py`; Touvron et al. 2023):
  - RMSNorm (Zhang & Sennrich 2019) with the config's eps, computed in float32, weight after;
  - rotary embeddings (Su et al. 2021) in HF's "rotate half" layout: dimension i pairs with
    i + head_dim/2 (not the interleaved pairs of the Meta release), inv_freq = theta^(-2i/d);
  - grouped-query attention (Ainslie et al. 2023) when n_kv_heads < n_heads, query head h
    reading key/value head h // (n_heads / n_kv_heads) as HF's `repeat_kv` does, causal, scale
    head_dim^-0.5; SwiGLU MLP (Shazeer 2020), down(silu(gate(x)) * up(x)); no biases;
  - a tied or untied lm_head, as the config says.
What differs is only how: q, k, v are one matrix and gate, up another (one matmul each instead of
three and two); the rotary table is a buffer computed once, and q and k rotate together by one
complex multiply (their rows are stored pair-adjacent, see `interleave`); RMSNorm's backward is
written out; attention is `F.scaled_dot_product_attention(is_causal=True)` with no mask tensor.

Checkpoints are HF's: `save_pretrained` writes exactly the tensors (names, shapes, dtypes),
config.json and generation_config.json that `LlamaForCausalLM.save_pretrained` writes, split
from the fused matrices, and `from_pretrained` reads an HF Llama directory; so
`AutoModelForCausalLM.from_pretrained` loads what this module saves (tests/test_fastmodel.py).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

WEIGHTS_FILE = "model.safetensors"  # what save_pretrained names a single-file checkpoint


class Output(NamedTuple):
    """What the training loop and `evaluate` read from a forward (HF's output has `.logits` too)."""

    logits: torch.Tensor


def rotary_table(head_dim: int, max_len: int, theta: float) -> torch.Tensor:
    """[max_len, head_dim/2, 2] float32: (cos, sin) of each position's angle per frequency, as HF's
    default rope computes them (inv_freq = 1 / theta^(arange(0, d, 2) / d), angle = pos * inv_freq).
    Read as complex numbers e^(i angle), so that rotating a (real, imaginary) pair is one multiply."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    angle = torch.arange(max_len, dtype=torch.float32)[:, None] * inv_freq[None, :]  # [L, d/2]
    return torch.stack([angle.cos(), angle.sin()], dim=-1)


def interleave(head_dim: int) -> torch.Tensor:
    """HF's rotary pairs dimension m with m + d/2 (`rotate_half`); this module keeps each pair
    adjacent (m at 2m, m + d/2 at 2m + 1) so a pair is one complex number. The q and k rows of a
    head are reordered with this permutation on load and back on save: a dot product q.k is the
    same under one permutation of both, so attention, and the function, are unchanged."""
    half = head_dim // 2
    return torch.stack([torch.arange(half), torch.arange(half) + half], dim=-1).reshape(-1)


class RMSNorm(torch.autograd.Function):
    """weight * x / sqrt(mean(x^2) + eps) over the last dimension (HF's LlamaRMSNorm), with the
    backward pass written out: 5 kernels where autograd differentiates `F.rms_norm(x) * weight`
    node by node (pow, mean, add, rsqrt, two products). Forward + backward of [4, 128, 32..96]
    measured ~20% faster than that composite, and still ~2x a fused LayerNorm (torch has no
    fused RMSNorm kernel on CPU).
    Gradients (x_hat = x * rstd, g' = g * weight):
      dx = rstd * (g' - x_hat * mean(g' * x_hat)),   dweight = sum over rows of g * x_hat."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        xf = x.float()  # HF normalises in float32 and casts back before the weight
        rstd = torch.rsqrt(torch.linalg.vecdot(xf, xf).unsqueeze(-1).div_(xf.shape[-1]).add_(eps))  # [.., 1]
        x_hat = (xf * rstd).to(x.dtype)
        ctx.save_for_backward(x_hat, rstd, weight)
        return x_hat * weight

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:
        x_hat, rstd, weight = ctx.saved_tensors
        g = grad * weight
        dot = torch.linalg.vecdot(g, x_hat).unsqueeze(-1)  # [.., 1]
        dx = torch.addcmul(g, x_hat, dot, value=-1.0 / x_hat.shape[-1]).mul_(rstd)
        dweight = torch.linalg.vecdot(grad.flatten(0, -2).T, x_hat.flatten(0, -2).T)
        return dx, dweight, None


def rotate(x: torch.Tensor, rope: torch.Tensor) -> torch.Tensor:
    """Rotary embedding of x [B, T, heads, D] (pairs adjacent, `interleave`) by rope [T, 1, D/2, 2],
    in float32 (bfloat16 has no complex type; HF computes its cos/sin in float32 too). Eager: one
    complex multiply (one kernel forward and one backward). Under torch.compile, whose inductor
    generates no code for complex operators, the same products in real arithmetic, which it fuses."""
    pairs = x.float().unflatten(-1, (x.shape[-1] // 2, 2))  # [B, T, heads, D/2, 2]
    if not torch.compiler.is_compiling():
        return torch.view_as_real(torch.view_as_complex(pairs) * torch.view_as_complex(rope)).flatten(-2)
    re, im, cos, sin = pairs[..., 0], pairs[..., 1], rope[..., 0], rope[..., 1]
    return torch.stack([re * cos - im * sin, re * sin + im * cos], dim=-1).flatten(-2)


class Norm(nn.Module):
    """RMSNorm's weight as a module, like HF's, so parameters come in HF's order (`runmodel` relies on it)."""

    def __init__(self, width: int, eps: float):
        super().__init__()
        self.weight, self.eps = nn.Parameter(torch.ones(width)), eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return RMSNorm.apply(x, self.weight, self.eps)


class FastLlamaDecoderLayer(nn.Module):
    """Pre-norm block: x + attn(norm(x)), then x + mlp(norm(x)). (The class name ends in
    `DecoderLayer` so FSDP's per-layer wrapping finds it as it finds HF's.)"""

    def __init__(self, cfg: Any):
        super().__init__()
        d, hd = cfg.hidden_size, cfg.head_dim
        self.n_heads, self.n_kv, self.head_dim = cfg.num_attention_heads, cfg.num_key_value_heads, hd
        self.input_layernorm = Norm(d, cfg.rms_norm_eps)
        self.qkv_proj = nn.Linear(d, (self.n_heads + 2 * self.n_kv) * hd, bias=False)  # [q; k; v] rows
        self.o_proj = nn.Linear(self.n_heads * hd, d, bias=False)
        self.post_attention_layernorm = Norm(d, cfg.rms_norm_eps)
        self.gate_up_proj = nn.Linear(d, 2 * cfg.intermediate_size, bias=False)  # [gate; up] rows
        self.down_proj = nn.Linear(cfg.intermediate_size, d, bias=False)

    def forward(self, x: torch.Tensor, rope: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        H, K, D = self.n_heads, self.n_kv, self.head_dim
        h = self.input_layernorm(x)
        # split, not slices: the backward of a split is one concatenation, of a slice a zero-filled
        # full-size tensor per piece
        qk, v = self.qkv_proj(h).view(B, T, H + 2 * K, D).split([H + K, K], dim=2)  # [B, T, H+K | K, D]
        q, k = rotate(qk, rope).to(v.dtype).split([H, K], dim=2)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # [B, H | K, T, D]
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=K != H)  # [B, H, T, D]
        x = x + self.o_proj(y.transpose(1, 2).reshape(B, T, H * D))
        h = self.post_attention_layernorm(x)
        gate, up = self.gate_up_proj(h).chunk(2, dim=-1)  # [B, T, F] each
        return x + self.down_proj(F.silu(gate) * up)


class FastLlama(nn.Module):
    """`LlamaForCausalLM`'s function and checkpoint layout; built from a `LlamaConfig`."""

    def __init__(self, config: Any):
        super().__init__()
        self.config = config
        c = config
        theta = (getattr(c, "rope_parameters", None) or {}).get("rope_theta", getattr(c, "rope_theta", 10000.0))
        rope_type = (getattr(c, "rope_parameters", None) or {}).get("rope_type", "default")
        if rope_type != "default" or getattr(c, "attention_bias", False) or getattr(c, "mlp_bias", False):
            raise ValueError(f"FastLlama computes plain Llama only (rope {rope_type!r}, no biases)")
        # padding_idx as HF's LlamaModel sets it: the pad token's row gets no gradient
        self.embed_tokens = nn.Embedding(c.vocab_size, c.hidden_size, padding_idx=c.pad_token_id)
        self.layers = nn.ModuleList(FastLlamaDecoderLayer(c) for _ in range(c.num_hidden_layers))
        self.norm = Norm(c.hidden_size, c.rms_norm_eps)
        self.lm_head = nn.Linear(c.hidden_size, c.vocab_size, bias=False)
        if c.tie_word_embeddings:
            self.lm_head.weight = self.embed_tokens.weight
        # Not saved: it follows from the config (HF keeps inv_freq out of its checkpoints too). Real,
        # not complex: Module.to(float dtype) would drop a complex buffer's imaginary part.
        self.register_buffer("rope", rotary_table(c.head_dim, c.max_position_embeddings, theta), persistent=False)

    def forward(self, input_ids: torch.Tensor, **ignored: Any) -> Output:
        """`ignored`: HF's call keywords (use_cache, ...); positions are 0..T-1, no padding mask."""
        T = input_ids.shape[1]
        rope = self.rope[:T, None].float()  # [T, 1, D/2, 2]: broadcast over heads
        x = self.embed_tokens(input_ids)  # [B, T, d]
        for layer in self.layers:
            x = layer(x, rope)
        x = self.norm(x)
        return Output(self.lm_head(x))  # [B, T, V]

    # ---- the HF interface the training code uses -------------------------------------------------
    def get_input_embeddings(self) -> nn.Module:
        return self.embed_tokens

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head

    # ---- the checkpoint layout -----------------------------------------------------------------------
    def hf_state_dict(self) -> dict[str, torch.Tensor]:
        """The tensors `LlamaForCausalLM.save_pretrained` writes, by its names (contiguous copies)."""
        return own_to_hf({n: t.detach() for n, t in self.state_dict().items()}, self.config)

    def load_hf_state_dict(self, tensors: dict[str, torch.Tensor]) -> None:
        """Load tensors named as in an HF Llama checkpoint (strict: every weight, no extras)."""
        own = hf_to_own(tensors, self.config)
        if self.config.tie_word_embeddings:
            own.pop("lm_head.weight", None)
            own["lm_head.weight"] = own["embed_tokens.weight"]
        self.load_state_dict(own, strict=True)

    def save_pretrained(self, path: str | Path, **ignored: Any) -> None:
        """model.safetensors + config.json + generation_config.json, as HF writes them."""
        from transformers import GenerationConfig

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        cfg = self.config
        cfg.architectures = ["LlamaForCausalLM"]
        cfg.save_pretrained(path)
        GenerationConfig.from_model_config(cfg).save_pretrained(path)
        save_file(self.hf_state_dict(), str(path / WEIGHTS_FILE), metadata={"format": "pt"})

    @classmethod
    def from_pretrained(cls, path: str | Path, **ignored: Any) -> "FastLlama":
        """A Llama checkpoint directory (single safetensors file or HF's sharded index)."""
        from transformers import LlamaConfig

        path = Path(path)
        model = cls(LlamaConfig.from_pretrained(path))
        index = path / (WEIGHTS_FILE + ".index.json")
        files = sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.is_file() else [WEIGHTS_FILE]
        tensors: dict[str, torch.Tensor] = {}
        for f in files:
            tensors.update(load_file(str(path / f)))
        model.load_hf_state_dict({k: v.float() for k, v in tensors.items()})
        return model

    @classmethod
    def from_hf(cls, hf_model: Any) -> "FastLlama":
        """The same weights as an in-memory `LlamaForCausalLM` (its initialisation included)."""
        model = cls(hf_model.config)
        model.load_hf_state_dict({n: t.detach() for n, t in hf_model.state_dict().items()})
        return model.to(next(hf_model.parameters()).dtype)


# ---- name and shape mapping: fused own tensors <-> HF's per-projection tensors --------------------
# Also applied to AdamW's moments, which have the shapes of their parameters (checkpoint files keep
# HF names for them too, so a run started by the HF model resumes here and the other way round).


_ROTATED = ("self_attn.q_proj", "self_attn.k_proj")  # the rows that `interleave` reorders


def _per_head(rows: torch.Tensor, head_dim: int, order: torch.Tensor) -> torch.Tensor:
    """Reorder the rows of every head of a q or k projection (or of its AdamW moments)."""
    return rows.reshape(-1, head_dim, *rows.shape[1:])[:, order].reshape(rows.shape)


def _splits(cfg: Any) -> dict[str, tuple[list[str], list[int]]]:
    """Fused matrix -> (HF projections, row counts), in the row order the fused matrix keeps."""
    hd = cfg.head_dim
    return {"qkv_proj": (["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"],
                         [cfg.num_attention_heads * hd, cfg.num_key_value_heads * hd, cfg.num_key_value_heads * hd]),
            "gate_up_proj": (["mlp.gate_proj", "mlp.up_proj"], [cfg.intermediate_size] * 2)}


def _own_to_hf_name(name: str) -> str:
    if name.startswith("layers."):
        _, i, rest = name.split(".", 2)
        rest = {"o_proj.weight": "self_attn.o_proj.weight", "down_proj.weight": "mlp.down_proj.weight"}.get(rest, rest)
        return f"model.layers.{i}.{rest}"
    return {"embed_tokens.weight": "model.embed_tokens.weight", "norm.weight": "model.norm.weight"}.get(name, name)


def hf_names_of(name: str, cfg: Any) -> list[str]:
    """The HF tensors one own tensor becomes (none for a tied lm_head, which HF saves once)."""
    if cfg.tie_word_embeddings and name == "lm_head.weight":
        return []
    parts, splits = name.split("."), _splits(cfg)
    if len(parts) == 4 and parts[2] in splits:
        return [f"model.layers.{parts[1]}.{proj}.weight" for proj in splits[parts[2]][0]]
    return [_own_to_hf_name(name)]


def own_to_hf(tensors: dict[str, torch.Tensor], cfg: Any, suffix: str = "") -> dict[str, torch.Tensor]:
    """Own names -> HF names (fused matrices split by rows). `suffix`: a key tail such as
    ".exp_avg" that is kept (optimizer moments are keyed `param_name.slot`)."""
    out, splits = {}, _splits(cfg)
    for key, t in tensors.items():
        name = key[: len(key) - len(suffix)] if suffix else key
        if cfg.tie_word_embeddings and name == "lm_head.weight":
            continue  # HF saves a tied head once, as the embedding
        parts = name.split(".")
        if len(parts) == 4 and parts[2] in splits:  # layers.{i}.{fused}.weight
            hf, rows = splits[parts[2]]
            for proj, piece in zip(hf, t.split(rows, dim=0)):
                if proj in _ROTATED:
                    piece = _per_head(piece, cfg.head_dim, torch.argsort(interleave(cfg.head_dim)))
                out[f"model.layers.{parts[1]}.{proj}.weight{suffix}"] = piece.contiguous()
        else:
            out[_own_to_hf_name(name) + suffix] = t.contiguous()
    return out


def hf_to_own(tensors: dict[str, torch.Tensor], cfg: Any, suffix: str = "") -> dict[str, torch.Tensor]:
    """HF names -> own names (the per-projection matrices concatenated); unknown names are an error."""
    inverse = {_own_to_hf_name(n): n for n in ("embed_tokens.weight", "norm.weight", "lm_head.weight")}
    for i in range(cfg.num_hidden_layers):
        for own in ("input_layernorm.weight", "post_attention_layernorm.weight", "o_proj.weight", "down_proj.weight"):
            inverse[_own_to_hf_name(f"layers.{i}.{own}")] = f"layers.{i}.{own}"
    fused: dict[str, list[tuple[str, str]]] = {}  # own name -> [(HF name, projection)]
    for i in range(cfg.num_hidden_layers):
        for own, (hf, _) in _splits(cfg).items():
            fused[f"layers.{i}.{own}.weight"] = [(f"model.layers.{i}.{p}.weight", p) for p in hf]
    members = {h for hs in fused.values() for h, _ in hs}
    out: dict[str, torch.Tensor] = {}
    for key, t in tensors.items():
        name = key[: len(key) - len(suffix)] if suffix else key
        if name in members:
            continue
        if name not in inverse:
            raise KeyError(f"{name}: not a tensor of a {cfg.num_hidden_layers}-layer Llama")
        out[inverse[name] + suffix] = t
    for own, hf in fused.items():
        pieces = [tensors.get(h + suffix) for h, _ in hf]
        if all(p is not None for p in pieces):
            out[own + suffix] = torch.cat(
                [_per_head(t, cfg.head_dim, interleave(cfg.head_dim)) if proj in _ROTATED else t
                 for t, (_, proj) in zip(pieces, hf)], dim=0)
        elif any(p is not None for p in pieces):
            raise KeyError(f"{own}: only some of {', '.join(h for h, _ in hf)} present")
    return out
