"""The model ladder and its accounting: one size dial -> a Hugging Face decoder, its parameter
groups and its FLOPs per token.

Everything follows from `depth` (the number of decoder layers), as in nanochat, where
`--depth` alone sets width, heads and the rest:

    width  = depth * ASPECT          (rounded to a multiple of the head dimension)
    heads  = width / HEAD_DIM
    ffn    = 8/3 * width, rounded up (SwiGLU keeps the MLP at ~8 width^2 parameters)

Two families share the dial: "cpu" (aspect 16, head dim 16: d2..d8 span 25k..1.6M non-embedding
parameters, 64x, and train on one core) and "gpu" (aspect 64, head dim 64, nanochat's ratio:
gpu-d12 is GPT-2-small shaped). `moe-` variants swap each MLP for a Mixtral sparse block.

Preset names: `d4`, `moe-d4`, `gpu-d12`, `gpu-moe-d12` (any depth up to `MAX_DEPTH` works, see `parse_preset`).
A `w` suffix sets the width instead of the rule (`d3w32`: depth 3, width 32): rungs between the
depths (which grow 2-3x in N per step at d2..d5), for ladders with finer steps.

FLOPs conventions (each number says which it is):
  exact  matmul FLOPs only, 2 per multiply-add: every projection, attention scores (QK^T) and
         values (AV) over the causal context (token i attends to i keys, so a window of T tokens
         averages (T+1)/2 keys), the router of MoE layers and the lm_head on every position.
         Training = 3 x forward (the backward pass costs twice the forward: Kaplan et al. 2020,
         sec. 2.1). Embedding lookups, norms, rotary embeddings, softmax and activations are left
         out (a few percent at most of the matmul work at these sizes).
  6N     6 x non-embedding parameters (active parameters for MoE) per training token
         (Kaplan et al. 2020; Hoffmann et al. 2022); leaves out attention over the context and
         the lm_head.

Run `python -m scalelab.model` to print the ladder.
"""
from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from typing import Any, Literal

from scalelab.anatomy import is_expert, shape
from scalelab.errors import ConfigError

Family = Literal["cpu", "gpu"]

# Per-family shape rules. Kaplan et al. 2020 (fig. 5) found loss changes by only a few percent for
# width/depth ratios between ~20 and ~200 at fixed N, so the aspect is a convenience, not a
# tuned value: 16 keeps tiny CPU models deep enough to compose, 64 is nanochat's ratio.
FAMILIES: dict[str, dict[str, int]] = {
    "cpu": {"aspect": 16, "head_dim": 16, "ffn_multiple": 8},
    "gpu": {"aspect": 64, "head_dim": 64, "ffn_multiple": 64},
}
# The depths each family is meant for: cpu-d16 (13M non-embedding parameters) already takes hours
# on one core, gpu-d48 (5.4B) is a multi-GPU run. Past them a typo (d99 for d9) would silently
# build a model thousands of times larger, so names beyond are refused, not extrapolated.
MAX_DEPTH = {"cpu": 16, "gpu": 48}
CPU_LADDER = [f"d{n}" for n in range(2, 9)]          # 25k .. 1.6M non-embedding parameters
GPU_LADDER = [f"gpu-d{n}" for n in (12, 16, 20, 24)]  # 85M .. 680M
MOE_EXPERTS = 8  # Mixtral uses 8 experts, top-2 (Jiang et al. 2024)
MOE_TOP_K = 2
PRESET_PATTERN = re.compile(r"^(?P<gpu>gpu-)?(?P<moe>moe-)?d(?P<depth>\d+)(?:w(?P<width>\d+))?$")
EXACT_CONVENTION = (
    "exact: matmul FLOPs (2 per multiply-add) of projections, attention scores and values over the "
    "causal context ((T+1)/2 keys per token on average), MoE router, and lm_head on every position; "
    "training = 3 x forward; embedding lookups, norms, rotary, softmax, activations excluded"
)


@dataclass(frozen=True)
class Arch:
    """A decoder's shape. Build with `ladder(depth, ...)` or `parse_preset(name, ...)`."""

    name: str
    depth: int
    width: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    ffn: int  # intermediate size of the dense MLP, or of one expert
    vocab_size: int
    max_seq_len: int
    tie_embeddings: bool = False
    n_experts: int = 0  # 0 = dense Llama; >= 2 = Mixtral sparse MoE
    top_k: int = 0

    @property
    def is_moe(self) -> bool:
        return self.n_experts > 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---- the dial -------------------------------------------------------------------------------
def width_for(depth: int, aspect: int, head_dim: int) -> int:
    """nanochat: model_dim = depth * aspect_ratio, rounded up to whole heads."""
    return head_dim * math.ceil(depth * aspect / head_dim)


def ffn_for(width: int, multiple: int) -> int:
    """SwiGLU has three matrices, so 8/3 * width keeps 8 width^2 parameters like a 4x ReLU MLP
    (Shazeer 2020); rounded up to a multiple as Llama does (`multiple_of`, Touvron et al. 2023)."""
    return multiple * math.ceil(8 * width / 3 / multiple)


def expert_ffn_for(width: int, multiple: int, top_k: int) -> int:
    """Each expert gets 1/top_k of the dense MLP, so an MoE model costs about the same active
    FLOPs per token as the dense model of the same depth while holding n_experts/top_k times the
    MLP parameters (fine-grained experts, DeepSeekMoE, Dai et al. 2024)."""
    return max(multiple, multiple * round(ffn_for(width, multiple) / top_k / multiple))


def ladder(depth: int, vocab_size: int, max_seq_len: int, *, family: Family = "cpu",
           moe: bool = False, tie_embeddings: bool = False, width: int | None = None) -> Arch:
    """The decoder at `depth` in `family`; every other size follows from it (module docstring),
    the width too unless given (whole heads, at most the width of the family's deepest model)."""
    if family not in FAMILIES:
        raise ConfigError(f"family={family!r}: expected one of {', '.join(FAMILIES)}")
    if not 1 <= depth <= MAX_DEPTH[family]:
        raise ConfigError(f"depth={depth}: expected 1..{MAX_DEPTH[family]} for the {family} family")
    if vocab_size < 2 or max_seq_len < 1:
        raise ConfigError(f"vocab_size={vocab_size}, max_seq_len={max_seq_len}: expected >= 2 and >= 1")
    f = FAMILIES[family]
    rule = width_for(depth, f["aspect"], f["head_dim"])
    if width is not None:
        check_width(width, family)
    width = width or rule
    heads = width // f["head_dim"]
    name = (f"{'gpu-' if family == 'gpu' else ''}{'moe-' if moe else ''}d{depth}"
            + (f"w{width}" if width != rule else ""))
    return Arch(
        name=name, depth=depth, width=width, n_heads=heads, n_kv_heads=heads,
        head_dim=f["head_dim"],
        ffn=expert_ffn_for(width, f["ffn_multiple"], MOE_TOP_K) if moe else ffn_for(width, f["ffn_multiple"]),
        vocab_size=vocab_size, max_seq_len=max_seq_len, tie_embeddings=tie_embeddings,
        n_experts=MOE_EXPERTS if moe else 0, top_k=MOE_TOP_K if moe else 0,
    )


def check_width(width: int, family: Family) -> None:
    """Whole heads, at most the width of the family's deepest model (a typo is refused, as for depths)."""
    f = FAMILIES[family]
    widest = width_for(MAX_DEPTH[family], f["aspect"], f["head_dim"])
    if not (width % f["head_dim"] == 0 and f["head_dim"] <= width <= widest):
        raise ConfigError(f"width={width}: expected a multiple of {f['head_dim']} from {f['head_dim']} to "
                          f"{widest} for the {family} family")


def parse_preset(name: str, vocab_size: int, max_seq_len: int, *, tie_embeddings: bool = False) -> Arch:
    """`d4`, `moe-d4`, `gpu-d12`, `gpu-moe-d12`, `d3w32` (width 32) -> Arch."""
    m = check_preset(name)
    return ladder(int(m["depth"]), vocab_size, max_seq_len, family="gpu" if m["gpu"] else "cpu",
                  moe=bool(m["moe"]), tie_embeddings=tie_embeddings,
                  width=int(m["width"]) if m["width"] else None)


def check_preset(name: str) -> re.Match:
    """A preset name within its family's depths, or a ConfigError that lists the valid ones."""
    m = PRESET_PATTERN.match(name.strip())
    valid = (f"d1 .. d{MAX_DEPTH['cpu']} (presets {', '.join(CPU_LADDER)}), moe-d1 .. moe-d{MAX_DEPTH['cpu']}, "
             f"gpu-d1 .. gpu-d{MAX_DEPTH['gpu']} (presets {', '.join(GPU_LADDER)}), gpu-moe-d1 .., "
             f"each with an optional width (d3w32)")
    if not m:
        raise ConfigError(f"model {name!r}: not a ladder preset; valid: {valid}")
    family = "gpu" if m["gpu"] else "cpu"
    if not 1 <= int(m["depth"]) <= MAX_DEPTH[family]:
        raise ConfigError(f"model {name!r}: beyond the {family} ladder (a model that size is not extrapolated "
                          f"from a name); valid: {valid}")
    if m["width"]:
        try:
            check_width(int(m["width"]), family)
        except ConfigError as e:
            raise ConfigError(f"model {name!r}: {e}") from None
    return m


# ---- transformers config and model ----------------------------------------------------------
def hf_config(arch: Arch, *, special_tokens: dict[str, int | None] | None = None,
              attn_implementation: str = "sdpa", router_aux_loss_coef: float = 0.01) -> Any:
    """A `LlamaConfig` (dense) or `MixtralConfig` (MoE) for `arch`."""
    from transformers import LlamaConfig, MixtralConfig

    common = dict(
        vocab_size=arch.vocab_size, hidden_size=arch.width, intermediate_size=arch.ffn,
        num_hidden_layers=arch.depth, num_attention_heads=arch.n_heads,
        num_key_value_heads=arch.n_kv_heads, head_dim=arch.head_dim,
        max_position_embeddings=arch.max_seq_len, hidden_act="silu", rms_norm_eps=1e-6,
        tie_word_embeddings=arch.tie_embeddings, attention_dropout=0.0, use_cache=True,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        **{k: v for k, v in (special_tokens or {}).items() if k.endswith("_token_id")},
    )
    if not arch.is_moe:
        cfg = LlamaConfig(attention_bias=False, mlp_bias=False, **common)
    else:
        # Switch Transformer's load-balancing loss weight is 0.01 (Fedus et al. 2022).
        cfg = MixtralConfig(num_local_experts=arch.n_experts, num_experts_per_tok=arch.top_k,
                            router_aux_loss_coef=router_aux_loss_coef, router_jitter_noise=0.0,
                            output_router_logits=False, sliding_window=None, **common)
    cfg._attn_implementation = attn_implementation
    return cfg


def build_model(arch: Arch, *, seed: int | None = None, **config_kw: Any) -> Any:
    """A freshly initialised `LlamaForCausalLM` / `MixtralForCausalLM` (float32, train mode)."""
    import torch
    from transformers import AutoModelForCausalLM

    if seed is not None:
        torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(hf_config(arch, **config_kw), dtype=torch.float32)
    model.train()
    return model


# ---- parameter counts -----------------------------------------------------------------------
@dataclass(frozen=True)
class ParamCounts:
    embedding: int       # input token embedding, and learned position tables where a model has them
    unembedding: int     # lm_head when untied (0 when tied to the embedding)
    nonembedding: int    # every decoder layer and the final norm (Kaplan's N)
    active: int          # non-embedding parameters used per token (= nonembedding when dense)
    total: int

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def _layer_params(a: Arch) -> tuple[int, int]:
    """(parameters, active parameters) of one decoder layer."""
    attn = a.width * a.n_heads * a.head_dim * 2 + a.width * a.n_kv_heads * a.head_dim * 2  # q,o + k,v
    norms = 2 * a.width
    mlp_one = 3 * a.width * a.ffn  # gate, up, down (SwiGLU)
    if not a.is_moe:
        return attn + norms + mlp_one, attn + norms + mlp_one
    router = a.n_experts * a.width
    return (attn + norms + router + a.n_experts * mlp_one, attn + norms + router + a.top_k * mlp_one)


def param_counts(a: Arch) -> ParamCounts:
    layer, layer_active = _layer_params(a)
    emb = a.vocab_size * a.width
    unemb = 0 if a.tie_embeddings else emb
    nonemb = a.depth * layer + a.width  # + final norm
    active = a.depth * layer_active + a.width
    return ParamCounts(emb, unemb, nonemb, active, emb + unemb + nonemb)


def count_module_params(model: Any) -> ParamCounts:
    """The same groups counted from a built model's tensors (the check on `param_counts`)."""
    import torch

    emb = model.get_input_embeddings().weight
    out = model.get_output_embeddings().weight
    seen, total = set(), 0
    for p in model.parameters():  # parameters() already lists a tied weight once
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    unemb = 0 if out is emb else out.numel()
    # Learned position tables (GPT-2's wpe, OPT's embed_positions) are embeddings too: Kaplan et al.
    # 2020 count N "excluding all vocabulary and positional embeddings"
    positions = sum(m.weight.numel() for m in model.modules()
                    if isinstance(m, torch.nn.Embedding) and m.weight is not emb and m.weight is not out)
    nonemb = total - emb.numel() - unemb - positions
    # Active: the expert tensors hold n_experts slices, of which top_k run per token.
    active = nonemb
    s = shape(model.config)  # Mixtral's num_local_experts, Qwen-MoE's num_experts, ...
    if s.experts:
        expert = sum(p.numel() for n, p in model.named_parameters() if is_expert(n))
        active = nonemb - expert + expert * s.top_k // s.experts
    return ParamCounts(emb.numel() + positions, unemb, nonemb, active, total)


# ---- FLOPs per token ------------------------------------------------------------------------
def _matmul_weights(a: Arch) -> int:
    """Weights multiplied once per token per forward, lm_head included (norms are not matmuls)."""
    c = param_counts(a)
    return c.active - a.depth * 2 * a.width - a.width + a.vocab_size * a.width


def _attention_flops(a: Arch, keys: float) -> float:
    """Forward FLOPs of QK^T and AV for one query token attending to `keys` keys, all layers."""
    return 2 * 2 * a.depth * a.n_heads * a.head_dim * keys


def forward_flops_per_token(a: Arch, seq_len: int, *, causal: bool = True) -> float:
    """Exact forward FLOPs per token averaged over a window of `seq_len` tokens."""
    keys = (seq_len + 1) / 2 if causal else seq_len  # causal=False is what a dense kernel computes
    return 2 * _matmul_weights(a) + _attention_flops(a, keys)


def train_flops_per_token(a: Arch, seq_len: int, *, causal: bool = True) -> float:
    """Exact training FLOPs per token: forward + backward = 3 x forward."""
    return 3 * forward_flops_per_token(a, seq_len, causal=causal)


def flops_6n_per_token(a: Arch) -> float:
    return 6.0 * param_counts(a).active


def prefill_flops(a: Arch, prompt_len: int, *, logits: Literal["last", "all"] = "last") -> float:
    """Exact forward FLOPs to read a prompt of `prompt_len` tokens into the KV cache. With
    logits="last" (what `generate` computes) the lm_head runs on the last position only."""
    head = 2 * a.vocab_size * a.width
    body = 2 * (_matmul_weights(a) - a.vocab_size * a.width) * prompt_len
    attn = _attention_flops(a, 1) * prompt_len * (prompt_len + 1) / 2  # sum over i of i keys
    return body + attn + head * (prompt_len if logits == "all" else 1)


def decode_flops(a: Arch, context_len: int) -> float:
    """Exact forward FLOPs for one new token that attends to `context_len` keys (itself included)."""
    return 2 * _matmul_weights(a) + _attention_flops(a, context_len)


def describe(a: Arch, seq_len: int) -> dict[str, Any]:
    """Everything derived from the dial, for printing and for the run record."""
    fam = "gpu" if a.name.startswith("gpu-") else "cpu"
    return {
        **a.to_dict(),
        "family": fam, "rules": FAMILIES[fam],
        "params": param_counts(a).to_dict(),
        "flops_per_token": {
            "train_exact": train_flops_per_token(a, seq_len),
            "train_6n": flops_6n_per_token(a),
            "forward_exact": forward_flops_per_token(a, seq_len),
            "seq_len": seq_len,
            "convention": EXACT_CONVENTION,
        },
    }


def ladder_table(vocab_size: int = 36, seq_len: int = 256) -> str:
    """The presets as a Markdown table (GPU presets at vocab 50,304 and 1,024 tokens)."""
    lines = ["| preset | width | heads | FFN | N non-emb | N active | N total | train FLOP/token exact | 6N |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name in CPU_LADDER + ["moe-d2", "moe-d4", "moe-d6"] + GPU_LADDER:
        gpu = name.startswith("gpu-")
        v, t = (50_304, 1024) if gpu else (vocab_size, seq_len)
        a, c = parse_preset(name, v, t), param_counts(parse_preset(name, v, t))
        lines.append(f"| {name} | {a.width} | {a.n_heads} | {a.ffn}{' x8' if a.is_moe else ''} | "
                     f"{c.nonembedding:,} | {c.active:,} | {c.total:,} | "
                     f"{train_flops_per_token(a, t):,.0f} | {flops_6n_per_token(a):,.0f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(ladder_table())
