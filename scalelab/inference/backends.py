"""Forward passes over a preallocated KV cache: one plain-torch path for Llama models, one for any
Hugging Face causal LM. Both take a block of W new tokens per row and write their keys and values
into cache slots [t, t + W) in place.

Why two: on a CPU a tiny decoder spends most of a decode step in Python (module calls, mask
building, cache bookkeeping), not in matmuls. The Llama path fuses q/k/v and gate/up into one
matmul each and calls about fifteen torch ops per layer; the generic path runs the model's own
modules with a cache object whose layers write into preallocated buffers instead of growing by
`torch.cat` (FINDINGS.md measured the concatenating cache 3x slower per token at large batch).
`tests/test_engine.py` checks both against `model.generate` token for token.

Shapes: B rows, W new tokens, S = t + W slots in use, H query heads, Hk key/value heads, D head
dim. `bias` is the additive attention mask [B, 1, W, S] (0 where a query may attend, a large
negative number elsewhere: padding, holes of rows that waited, and the causal future).
"""
from __future__ import annotations

import weakref
from typing import Any

import torch
import torch.nn.functional as F


def fast_path_supported(model: Any) -> bool:
    """Plain Llama only: default RoPE, SiLU MLP, no biases, no tensor-parallel split, and float
    weights (quantized tensors, e.g. torchao's, cannot be concatenated into the fused matrices)."""
    cfg = model.config
    rope = getattr(cfg, "rope_parameters", None) or {}
    return (getattr(cfg, "model_type", None) == "llama" and getattr(cfg, "quantization_config", None) is None
            and rope.get("rope_type", "default") == "default"
            and getattr(cfg, "hidden_act", "silu") == "silu" and not getattr(cfg, "attention_bias", False)
            and not getattr(cfg, "mlp_bias", False) and getattr(cfg, "pretraining_tp", 1) == 1)


# The fused, transposed weight copies, built once per model and kept while its weights are unchanged:
# every session makes a backend, and rebuilding them each time cost a 134M-parameter Llama 324 MB and
# 0.24-0.50 CPU-s per call (docs/LOG.md, 2026-12-03). A parameter changed in place (an optimizer
# step, load_state_dict) bumps its `_version`; a replaced one has another id: either rebuilds.
_FUSED: "weakref.WeakKeyDictionary[Any, tuple[tuple, tuple]]" = weakref.WeakKeyDictionary()


def _fused_weights(model: Any) -> tuple:
    key = tuple((id(p), p._version) for p in model.parameters())
    hit = _FUSED.get(model)
    if hit is not None and hit[0] == key:
        return hit[1]
    m = model.model
    with torch.no_grad():
        w = ([torch.cat([l.self_attn.q_proj.weight, l.self_attn.k_proj.weight,
                         l.self_attn.v_proj.weight]).t().contiguous() for l in m.layers],  # [d, (H+2Hk)D]
             [l.self_attn.o_proj.weight.t().contiguous() for l in m.layers],  # [HD, d]
             [torch.cat([l.mlp.gate_proj.weight, l.mlp.up_proj.weight]).t().contiguous() for l in m.layers],  # [d, 2F]
             [l.mlp.down_proj.weight.t().contiguous() for l in m.layers])  # [F, d]
    _FUSED[model] = (key, w)
    return w


class LlamaBackend:
    """Llama decoder written with plain torch ops on the model's own weights (no copies of the
    math, the same weights): RMSNorm, rotary embedding, grouped-query attention, SwiGLU."""

    name = "llama"

    def __init__(self, model: Any):
        cfg, m = model.config, model.model
        self.L, self.H = cfg.num_hidden_layers, cfg.num_attention_heads
        self.Hk = getattr(cfg, "num_key_value_heads", None) or self.H
        self.D = getattr(cfg, "head_dim", None) or cfg.hidden_size // self.H
        self.eps = cfg.rms_norm_eps
        self.ffn = cfg.intermediate_size
        self.w_qkv, self.w_o, self.w_gu, self.w_down = _fused_weights(model)
        self.n1 = [l.input_layernorm.weight for l in m.layers]
        self.n2 = [l.post_attention_layernorm.weight for l in m.layers]
        self.norm = m.norm.weight
        self.embed = m.embed_tokens.weight
        self.inv_freq = m.rotary_emb.inv_freq  # [D/2]
        self.rope_scale = float(getattr(m.rotary_emb, "attention_scaling", 1.0))
        self.K: list[torch.Tensor] = []
        self.V: list[torch.Tensor] = []

    def alloc(self, rows: int, capacity: int, device: Any, dtype: Any) -> None:
        shape = (rows, self.Hk, capacity, self.D)
        self.K = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(self.L)]
        self.V = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(self.L)]

    def select(self, index: torch.Tensor) -> None:
        self.K = [k.index_select(0, index) for k in self.K]
        self.V = [v.index_select(0, index) for v in self.V]

    def grow(self, capacity: int) -> None:
        def bigger(x: torch.Tensor) -> torch.Tensor:
            y = x.new_zeros(x.shape[0], x.shape[1], capacity, x.shape[3])
            y[:, :, :x.shape[2]] = x
            return y
        self.K, self.V = [bigger(k) for k in self.K], [bigger(v) for v in self.V]

    def _rms(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))

    def _rope(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        half = self.D // 2
        rotated = torch.cat((-x[..., half:], x[..., :half]), -1)
        return x * cos + rotated * sin

    def forward(self, ids: torch.Tensor, pos: torch.Tensor, bias: torch.Tensor, t: int) -> torch.Tensor:
        B, W = ids.shape
        H, Hk, D = self.H, self.Hk, self.D
        G = H // Hk
        S = t + W
        x = F.embedding(ids, self.embed)  # [B, W, d]
        freqs = pos[..., None].to(x.dtype) * self.inv_freq  # [B, W, D/2]
        emb = torch.cat((freqs, freqs), -1)
        cos = (emb.cos() * self.rope_scale)[:, None]  # [B, 1, W, D]
        sin = (emb.sin() * self.rope_scale)[:, None]
        if G > 1:
            bias = bias.repeat(1, 1, G, 1)  # [B, 1, G*W, S]: query heads grouped per kv head
        for i in range(self.L):
            h = self._rms(x, self.n1[i])
            qkv = h @ self.w_qkv[i]  # [B, W, (H + 2Hk) D]
            q = qkv[..., :H * D].view(B, W, H, D).transpose(1, 2)  # [B, H, W, D]
            k = qkv[..., H * D:(H + Hk) * D].view(B, W, Hk, D).transpose(1, 2)  # [B, Hk, W, D]
            v = qkv[..., (H + Hk) * D:].view(B, W, Hk, D).transpose(1, 2)
            q, k = self._rope(q, cos, sin), self._rope(k, cos, sin)
            self.K[i][:, :, t:S] = k
            self.V[i][:, :, t:S] = v
            keys, vals = self.K[i][:, :, :S], self.V[i][:, :, :S]  # [B, Hk, S, D]
            qg = q.reshape(B, Hk, G * W, D)  # heads of one kv group are adjacent in HF's layout
            att = torch.softmax(torch.matmul(qg, keys.transpose(2, 3)) * D ** -0.5 + bias, -1)  # [B, Hk, G*W, S]
            o = torch.matmul(att, vals).view(B, H, W, D).transpose(1, 2).reshape(B, W, H * D)
            x = x + o @ self.w_o[i]
            gu = self._rms(x, self.n2[i]) @ self.w_gu[i]  # [B, W, 2F]
            x = x + (F.silu(gu[..., :self.ffn]) * gu[..., self.ffn:]) @ self.w_down[i]
        return self._rms(x, self.norm)  # [B, W, d]


class HFBackend:
    """Any Hugging Face causal LM: its own modules and our preallocated cache. The model gets a 2-D
    mask of the real slots and builds its own causal mask from it: transformers takes a 4-D mask as
    final, so passing ours dropped Mistral's and Gemma's sliding windows (samples silently unlike
    `generate` past the window) and broke the ALiBi of Bloom and Falcon (a traceback)."""

    name = "hf"

    def __init__(self, model: Any):
        from transformers.cache_utils import Cache

        from scalelab.anatomy import shape

        self.base = model.base_model
        self.cache: Any = None
        self._Cache = Cache
        self.n_layers = shape(model.config).layers

    def alloc(self, rows: int, capacity: int, device: Any, dtype: Any) -> None:
        self.cache = _PreallocatedCache([_Slots(rows, capacity) for _ in range(self.n_layers)])

    def select(self, index: torch.Tensor) -> None:
        for layer in self.cache.layers:
            layer.select(index)

    def grow(self, capacity: int) -> None:
        for layer in self.cache.layers:
            layer.grow(capacity)

    def forward(self, ids: torch.Tensor, pos: torch.Tensor, bias: torch.Tensor, t: int) -> torch.Tensor:
        for layer in self.cache.layers:
            layer.t = t
        real = (bias[:, 0, -1] == 0).long()  # [B, S]: the block's last query sees every real slot (holes: 0)
        out = self.base(input_ids=ids, position_ids=pos, attention_mask=real, cache=self.cache, use_cache=True)
        return out.last_hidden_state  # [B, W, d], after the final norm


def _make_cache_classes():
    from transformers.cache_utils import Cache, DynamicLayer

    class Slots(DynamicLayer):
        """One layer's keys and values in buffers [B, Hk, capacity, D], written at slot t."""

        def __init__(self, rows: int, capacity: int):
            super().__init__()
            self.rows, self.capacity, self.t = rows, capacity, 0

        def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
            self.device = key_states.device
            self.kbuf = key_states.new_zeros(self.rows, key_states.shape[1], self.capacity, key_states.shape[3])
            self.vbuf = value_states.new_zeros(self.rows, value_states.shape[1], self.capacity, value_states.shape[3])
            self.is_initialized = True

        def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any):
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            end = self.t + key_states.shape[2]
            self.kbuf[:, :, self.t:end] = key_states
            self.vbuf[:, :, self.t:end] = value_states
            self.keys, self.values = self.kbuf[:, :, :end], self.vbuf[:, :, :end]
            return self.keys, self.values

        def get_seq_length(self) -> int:
            return self.t

        def select(self, index: torch.Tensor) -> None:
            self.rows = int(index.numel())
            if self.is_initialized:
                self.kbuf, self.vbuf = self.kbuf.index_select(0, index), self.vbuf.index_select(0, index)

        def grow(self, capacity: int) -> None:
            if self.is_initialized:
                for name in ("kbuf", "vbuf"):
                    old = getattr(self, name)
                    new = old.new_zeros(old.shape[0], old.shape[1], capacity, old.shape[3])
                    new[:, :, :old.shape[2]] = old
                    setattr(self, name, new)
            self.capacity = capacity

    class PreallocatedCache(Cache):
        def __init__(self, layers: list[Any]):
            super().__init__(layers=layers)

        def get_seq_length(self, layer_idx: int = 0) -> int:
            return self.layers[layer_idx].t

    return Slots, PreallocatedCache


def _Slots(rows: int, capacity: int) -> Any:  # noqa: N802 - a factory standing in for the class
    return _classes()[0](rows, capacity)


def _PreallocatedCache(layers: list[Any]) -> Any:  # noqa: N802
    return _classes()[1](layers)


_CLASSES: tuple[Any, Any] | None = None


def _classes() -> tuple[Any, Any]:
    global _CLASSES
    if _CLASSES is None:
        _CLASSES = _make_cache_classes()
    return _CLASSES


def make_backend(model: Any, kind: str = "auto") -> Any:
    if kind == "llama" or (kind == "auto" and fast_path_supported(model)):
        return LlamaBackend(model)
    return HFBackend(model)
