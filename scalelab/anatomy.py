"""The anatomy of any Hugging Face causal LM, read one way: its sizes under whichever names its
config uses, its stack of decoder blocks, the projections inside them and its experts.

Configs name one size many ways (GPT-2's `n_embd`, OPT's `ffn_dim`, Falcon's `num_kv_heads`,
Qwen2-MoE's `num_experts` where Mixtral says `num_local_experts`), and models keep their blocks at
different paths (`model.layers`, `transformer.h`, `gpt_neox.layers`, `model.decoder.layers`).
Code that needs a size or a block asks here instead of assuming Llama's names, so that a user's
architecture we never tried is read correctly or refused in one line, never misread.

    from scalelab.anatomy import shape, decoder_layers, projections
    s = shape(model.config)        # layers, hidden, heads, kv_heads, head_dim, vocab, ffn, experts, top_k
    blocks = decoder_layers(model)  # the nn.ModuleList of decoder blocks
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from scalelab.errors import ConfigError

# Every name a size goes by in transformers' configs, first match wins. Most configs also answer
# to Llama's names through their `attribute_map` (GPT2Config maps hidden_size to n_embd); the
# aliases cover those that do not.
NAMES: dict[str, tuple[str, ...]] = {
    "layers": ("num_hidden_layers", "n_layer", "num_layers", "n_layers"),
    "hidden": ("hidden_size", "n_embd", "d_model"),
    "heads": ("num_attention_heads", "n_head", "num_heads"),
    "kv_heads": ("num_key_value_heads", "num_kv_heads", "n_head_kv", "multi_query_group_num"),
    "ffn": ("intermediate_size", "ffn_dim", "n_inner", "ffn_hidden_size"),
    "experts": ("num_local_experts", "num_experts", "n_routed_experts", "moe_num_experts"),
    "top_k": ("num_experts_per_tok", "moe_top_k", "num_selected_experts"),
}


def text_config(cfg: Any) -> Any:
    """The decoder's config (a multimodal wrapper keeps it in `text_config`)."""
    get = getattr(cfg, "get_text_config", None)
    return get() if callable(get) else cfg


def size(cfg: Any, what: str, default: int = 0) -> int:
    """The first positive integer the config holds under one of `what`'s names."""
    for name in NAMES[what]:
        v = getattr(cfg, name, None)
        if isinstance(v, int) and not isinstance(v, bool) and v > 0:
            return v
    return default


@dataclass(frozen=True)
class Shape:
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    ffn: int
    experts: int  # 0: dense
    top_k: int    # experts each token runs through (0 when dense)

    @property
    def attn_width(self) -> int:
        """Width of the queries (heads x head_dim), which may differ from hidden (Gemma)."""
        return self.heads * self.head_dim


def shape(cfg: Any) -> Shape:
    c = text_config(cfg)
    hidden, heads = size(c, "hidden"), size(c, "heads", 1)
    # Falcon's multi-query attention (its default) shares one key/value head across all queries; its
    # num_kv_heads counts only in its new decoder architecture
    multi_query = getattr(c, "multi_query", False) and not getattr(c, "new_decoder_architecture", False)
    kv = 1 if multi_query else size(c, "kv_heads", heads)
    head_dim = getattr(c, "head_dim", None)
    experts = size(c, "experts")
    return Shape(layers=size(c, "layers"), hidden=hidden, heads=heads, kv_heads=kv,
                 head_dim=head_dim if isinstance(head_dim, int) and head_dim > 0 else hidden // heads,
                 vocab=int(getattr(c, "vocab_size", 0) or 0),
                 ffn=size(c, "ffn"), experts=experts, top_k=size(c, "top_k", 1) if experts else 0)


def decoder_layers(model: Any) -> Any:
    """The `nn.ModuleList` of decoder blocks: the first module list, in definition order, with one
    entry per layer (the stack comes before any list inside a block, e.g. of experts)."""
    import torch

    n = shape(model.config).layers
    for _, mod in model.named_modules():
        if isinstance(mod, torch.nn.ModuleList) and n and len(mod) == n:
            return mod
    raise ConfigError(f"cannot find the {n} decoder blocks of this {type(model).__name__} "
                      "(no module list of that length)")


def is_projection(mod: Any) -> bool:
    """A dense projection: `nn.Linear`, or GPT-2's `Conv1D` (the same map with weight [in, out])."""
    import torch

    return isinstance(mod, torch.nn.Linear) or type(mod).__name__ == "Conv1D"


def projections(model: Any) -> list[tuple[str, Any]]:
    """(name within the blocks, module) of every projection inside the decoder blocks; embeddings
    and lm_head are outside them."""
    return [(n, m) for n, m in decoder_layers(model).named_modules() if is_projection(m)]


def in_out(mod: Any) -> tuple[int, int]:
    """(input size, output size) of a projection."""
    w = mod.weight
    return (w.shape[0], w.shape[1]) if type(mod).__name__ == "Conv1D" else (w.shape[1], w.shape[0])


def fused_experts(model: Any) -> list[tuple[str, Any]]:
    """Expert weights stored as one tensor per layer, [experts, out, in] (transformers 5 fuses
    Mixtral's and Qwen-MoE's experts so), which are parameters and not projection modules."""
    return [(n, p) for n, p in model.named_parameters() if p.dim() == 3]


def is_expert(name: str) -> bool:
    """A parameter or module of a routed expert (not a shared expert, not the router)."""
    return ".experts." in f".{name}."
