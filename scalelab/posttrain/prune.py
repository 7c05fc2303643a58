"""Pruning: remove weights (unstructured) or whole heads, channels and layers (structured), then
optionally recover by distillation from the unpruned parent.

    scalelab posttrain prune --from RUN --method wanda|magnitude|width|depth --sparsity 0.5 --runs-dir DIR

The size is the share of non-embedding parameters removed (`--sparsity`, in [0, 1)) or the
non-embedding parameters to keep (`--target-params`); structured pruning takes the largest shape
that does not exceed the target, and the record states what was reached.

Unstructured (the projections of the decoder blocks, found by `scalelab.anatomy` in any
architecture, GPT-2's Conv1D included; embeddings and lm_head are kept; experts fused into one
tensor per layer are refused; masks through `torch.nn.utils.prune`, so recovery training keeps
pruned weights at zero):
  magnitude  the smallest |W| of each matrix
  wanda      Sun et al. 2023, "A Simple and Effective Pruning Approach for Large Language Models":
             score |W_ij| * ||X_j||_2 (X_j: input feature j over calibration tokens), compared
             within each output row
  The child is saved dense (zeros stored): safetensors has no sparse layout, so the file does not
  shrink, and the FLOPs of a dense kernel do not either; both are reported as they are.

Calibration and recovery text: the parent's pretraining stream; with `--task FILE`, the file's train
split (prompts and reference solutions packed as a stream, `taskdata.TaskCorpus`), so that a user's
model is calibrated on the text it will be asked to write.

Structured (dense Llama checkpoints; Muralidharan et al. 2024, "Compact Language Models via
Pruning and Knowledge Distillation", Minitron): importance from activations on calibration rows
of that text, aggregated as an L2 norm over the sequence and a mean over rows:
  heads   norm of each head's attention output (the input of o_proj)
  mlp     each intermediate channel (the input of down_proj)
  hidden  each residual channel at the outputs of every RMSNorm, summed over layers
  layers  block importance 1 - cos(x_in, x_out) (Men et al. 2024, ShortGPT; Minitron ranks depth
          the same way)
`--method width` keeps the same number of heads / channels in every layer (each layer keeps its own
most important ones), so the child is a valid smaller `LlamaConfig` that `from_pretrained`
loads; `--axes` chooses among heads, mlp, hidden (default mlp,hidden: Llama-3.1-Minitron 4B-Width
pruned MLP and embedding channels and kept heads and layers, Sreenivas et al. 2024). `--method
depth` drops the least important layers.

Recovery (`--recover-tokens`, default 200k for structured, 0 for unstructured) distils the parent's
logits into the pruned model on fresh pretraining text (`loop.fit`, KL only, as Minitron).
Calibration forwards, recovery training and the parent's teacher forwards are all in the ledger.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from scalelab.errors import ConfigError
from scalelab.posttrain.data import corpus_rows
from scalelab.posttrain.loop import Counter, TrainStageConfig, default_lr, fit
from scalelab.posttrain.stage import StageContext, StageResult, Technique

AXES = ("heads", "mlp", "hidden")
CALIBRATION_OFFSET = 2 * 10**6  # batch index far past the parent's pretraining batches (fresh text)
RECOVERY_OFFSET = 3 * 10**6


class PruneConfig(TrainStageConfig):
    method: Literal["magnitude", "wanda", "width", "depth"] = "wanda"
    sparsity: float | None = Field(None, ge=0, lt=1, description="share of non-embedding parameters to remove")
    target_params: int | None = Field(None, ge=1, description="non-embedding parameters to keep")
    axes: list[str] = Field(default_factory=lambda: ["mlp", "hidden"], description="width: heads, mlp, hidden")
    calibration_rows: int = Field(64, ge=1, le=100_000, description="rows of pretraining text for importance")
    recover_tokens: int | None = Field(None, ge=0, le=10**12, description="distillation tokens after pruning")
    kd_temperature: float = Field(1.0, gt=0, le=100)

    @field_validator("axes")
    @classmethod
    def _axes(cls, v: list[str]) -> list[str]:
        bad = [a for a in v if a not in AXES]
        if bad or not v:
            raise ValueError(f"unknown axis {bad[0] if bad else '(none)'!r}; choose from {', '.join(AXES)}")
        return sorted(set(v), key=AXES.index)

    @model_validator(mode="after")
    def _size(self) -> "PruneConfig":
        if self.sparsity is not None and self.target_params is not None:
            raise ValueError("give sparsity or target_params, not both")
        if self.sparsity is None and self.target_params is None:
            self.sparsity = 0.5
        return self

    def check_inputs(self, parent: Any) -> None:
        from scalelab.inference.loading import skeleton

        have = getattr(parent.record, "n_params_nonembedding", None)
        if self.target_params is not None and have and self.target_params >= have:
            raise ConfigError(f"target_params={self.target_params:,}: the parent has {have:,} non-embedding "
                              "parameters; nothing would be pruned")
        model = skeleton(parent.checkpoint)  # the layout, refused before the child's folder exists
        if self.structured:
            _arch(model.config)
        else:
            _decoder_linears(model)

    @property
    def structured(self) -> bool:
        return self.method in ("width", "depth")

    def needs_train_split(self) -> bool:
        return self.method != "magnitude" or bool(self.recover_tokens)  # calibration or recovery text


# ---- calibration: activation statistics by hooks ----------------------------------------------------
def _decoder_linears(model: Any) -> list[tuple[str, Any]]:
    """Every projection of the decoder blocks, found by `scalelab.anatomy` whatever the model calls
    them; a model whose experts are fused tensors is refused (those would stay dense)."""
    from scalelab.anatomy import fused_experts, projections

    fused = fused_experts(model)
    if fused:
        raise ConfigError(f"unstructured pruning masks projection layers; this {model.config.model_type} keeps its "
                          f"experts as fused tensors ({fused[0][0]}, ...), which it would leave dense")
    return projections(model)


def calibrate(ctx: StageContext, model: Any, cfg: PruneConfig, *, stats: str) -> dict[str, Any]:
    """One forward over the calibration rows with hooks; `stats` = "wanda" (input norms of every
    decoder linear) or "minitron" (heads, mlp, hidden, layers). The forward is in the ledger."""
    import torch

    T = ctx.data.seq_len()
    rows = corpus_rows(ctx.data.corpus(), cfg.calibration_rows, T, cfg.seed, offset=CALIBRATION_OFFSET)
    acc: dict[str, Any] = {}
    hooks = []

    def add(key: str, value: Any) -> None:
        acc[key] = acc[key] + value if key in acc else value

    def seq_l2_mean(x: Any) -> Any:  # [B, T, C] -> [C]: L2 over the sequence, mean over rows
        return x.float().pow(2).sum(1).sqrt().mean(0)

    if stats == "wanda":
        for name, mod in _decoder_linears(model):
            hooks.append(mod.register_forward_pre_hook(
                lambda m, a, name=name: add(name, a[0].float().flatten(0, -2).pow(2).sum(0))))  # [in]: sum of squares
            # over every token, whether the block hands its layers [B, T, in] or [B*T, in] (OPT)
    else:
        cfg_ = model.config
        H, D = cfg_.num_attention_heads, cfg_.head_dim
        for i, layer in enumerate(model.model.layers):
            hooks.append(layer.self_attn.o_proj.register_forward_pre_hook(
                lambda m, a, i=i: add(f"heads.{i}", seq_l2_mean(a[0].unflatten(-1, (H, D)).norm(dim=-1)))))
            hooks.append(layer.mlp.down_proj.register_forward_pre_hook(
                lambda m, a, i=i: add(f"mlp.{i}", seq_l2_mean(a[0]))))
            for norm in (layer.input_layernorm, layer.post_attention_layernorm):
                hooks.append(norm.register_forward_hook(lambda m, a, out: add("hidden", seq_l2_mean(out))))
            hooks.append(layer.register_forward_hook(
                lambda m, a, out, i=i: add(f"layer.{i}", _block_importance(a[0], out[0] if isinstance(out, tuple) else out)),
                with_kwargs=False))
    count = Counter(model)
    model.eval()
    try:
        with torch.no_grad():
            for s in range(0, len(rows), 16):
                x = torch.tensor([r.ids[:-1] for r in rows[s:s + 16]], dtype=torch.long)  # [b, T]
                model(input_ids=x)
                lengths = [x.shape[1]] * x.shape[0]
                ctx.ledger.add("calibration", count.forward(lengths), 2.0 * count.n * sum(lengths), sum(lengths))
    finally:
        for h in hooks:
            h.remove()
    acc["_batches"] = (len(rows) + 15) // 16
    return acc


def _block_importance(x_in: Any, x_out: Any) -> Any:
    """Mean over tokens of 1 - cos(input, output) of a decoder block (ShortGPT's BI)."""
    import torch.nn.functional as F

    return (1 - F.cosine_similarity(x_in.float(), x_out.float(), dim=-1)).mean()


# ---- unstructured ---------------------------------------------------------------------------------------
def unstructured(ctx: StageContext, model: Any, cfg: PruneConfig, n_nonemb: int) -> tuple[list[Any], float]:
    """Masks on every decoder linear; returns the pruned modules and the per-matrix sparsity."""
    from torch.nn.utils import prune

    lin = _decoder_linears(model)
    total = sum(m.weight.numel() for _, m in lin)
    remove = (cfg.sparsity * n_nonemb) if cfg.sparsity is not None else max(0, n_nonemb - cfg.target_params)
    s = remove / total  # share of each matrix; the norms (the rest of the non-embedding parameters) stay
    if s >= 1:
        asked = f"sparsity={cfg.sparsity}" if cfg.sparsity is not None else f"target_params={cfg.target_params}"
        raise ConfigError(f"{asked}: more than the {total:,} projection weights unstructured pruning can remove "
                          f"(the other {n_nonemb - total:,} non-embedding parameters, norms and biases, stay); "
                          "prune structurally instead")
    norms = calibrate(ctx, model, cfg, stats="wanda") if cfg.method == "wanda" else {}
    for name, m in lin:
        if cfg.method == "magnitude":
            prune.l1_unstructured(m, "weight", amount=s)
            continue
        w = m.weight.detach()
        if type(m).__name__ == "Conv1D":  # GPT-2's projections hold [in, out]: score rows of the transpose
            prune.custom_from_mask(m, "weight", wanda_mask(w.t(), norms[name], s).t())
        else:
            prune.custom_from_mask(m, "weight", wanda_mask(w, norms[name], s))
    return [m for _, m in lin], s


def wanda_mask(weight: Any, in_sq: Any, sparsity: float) -> Any:
    """Wanda's mask for one matrix [out, in] given the summed squares of its inputs [in]: in every
    output row, zero the ceil(sparsity x in) weights of smallest |W_ij| x ||X_j||_2 (ceil: at least
    the asked share goes, as structured pruning never keeps more than its target)."""
    import math

    import torch

    score = weight.abs() * in_sq.sqrt()[None, :]  # [out, in]
    k = min(score.shape[1], math.ceil(sparsity * score.shape[1] - 1e-9))  # 1e-9: 0.5 x 48 stays 24
    mask = torch.ones_like(score)
    if k:
        mask.scatter_(1, score.topk(k, dim=1, largest=False).indices, 0.0)
    return mask


# ---- structured -----------------------------------------------------------------------------------------
def _arch(cfg: Any) -> Any:
    from scalelab.inference.flops import arch_from_config

    arch = arch_from_config(cfg)
    if arch is None or cfg.model_type != "llama" or arch.is_moe:
        raise ConfigError(f"structured pruning supports dense Llama checkpoints; this one is {cfg.model_type!r} "
                          "(use --method magnitude or wanda)")
    return arch


def plan_shape(arch: Any, cfg: PruneConfig, target: float) -> Any:
    """The largest shape with at most `target` non-embedding parameters."""
    from scalelab import model as M

    def nonemb(a: Any) -> int:
        return M.param_counts(a).nonembedding

    if cfg.method == "depth":
        shapes = [dataclasses.replace(arch, depth=k) for k in range(arch.depth, 0, -1)]
    else:
        if "heads" in cfg.axes and arch.n_kv_heads != arch.n_heads:
            raise ConfigError("head pruning needs one key/value head per query head (this model uses grouped-query "
                              "attention); prune --axes mlp,hidden")

        def shape(k: float) -> Any:
            h = max(1, round(arch.n_heads * k)) if "heads" in cfg.axes else arch.n_heads
            # transformers' LlamaConfig refuses a hidden_size that is not a multiple of the heads, even
            # with head_dim given, so the residual width moves in steps of h
            w = max(h, h * round(arch.width * k / h)) if "hidden" in cfg.axes else arch.width
            kv = h if "heads" in cfg.axes else arch.n_kv_heads  # unpruned heads keep their grouping
            return dataclasses.replace(arch, n_heads=h, n_kv_heads=kv, width=w,
                                       ffn=max(1, round(arch.ffn * k)) if "mlp" in cfg.axes else arch.ffn)
        shapes = [shape(1 - i / 1000) for i in range(1000)]  # keep fractions 1.000, 0.999, ..., 0.001
    fits = [a for a in shapes if nonemb(a) <= target]
    return fits[0] if fits else shapes[-1]


def _top(scores: Any, k: int) -> Any:
    return scores.topk(k).indices.sort().values


def prune_structured(model: Any, imp: dict[str, Any], new: Any, method: str) -> Any:
    """A fresh model of the smaller config holding the kept slices of the parent's weights."""
    import torch
    from transformers import AutoModelForCausalLM

    old = model.config
    sd = model.state_dict()
    L = old.num_hidden_layers
    out: dict[str, Any] = {}
    if method == "depth":
        bi = torch.stack([imp[f"layer.{i}"] for i in range(L)])
        keep = _top(bi, new.depth).tolist()  # the layers that change the residual stream most
        for k, v in sd.items():
            if k.startswith("model.layers."):
                i, rest = k[len("model.layers."):].split(".", 1)
                if int(i) in keep:
                    out[f"model.layers.{keep.index(int(i))}.{rest}"] = v
            else:
                out[k] = v
        kept = {"layers": keep}
    else:
        D = old.head_dim
        E = _top(imp["hidden"], new.width)  # residual channels, shared by every layer
        out["model.embed_tokens.weight"] = sd["model.embed_tokens.weight"][:, E]
        out["model.norm.weight"] = sd["model.norm.weight"][E]
        if "lm_head.weight" in sd:
            out["lm_head.weight"] = sd["lm_head.weight"][:, E]
        kept = {"hidden": E.tolist(), "heads": [], "mlp": []}
        for i in range(L):
            p = f"model.layers.{i}."
            Hk = _top(imp[f"heads.{i}"], new.n_heads)
            rows = (Hk[:, None] * D + torch.arange(D)[None, :]).reshape(-1)  # the kept heads' rows of q, k, v
            # k and v have one head per query head once heads are pruned (plan_shape refuses grouped
            # queries then); otherwise every key/value head stays
            kv_rows = rows if new.n_kv_heads == new.n_heads else torch.arange(new.n_kv_heads * D)
            F_ = _top(imp[f"mlp.{i}"], new.ffn)
            for w, r in (("q_proj", rows), ("k_proj", kv_rows), ("v_proj", kv_rows)):
                out[p + f"self_attn.{w}.weight"] = sd[p + f"self_attn.{w}.weight"][r][:, E]
            out[p + "self_attn.o_proj.weight"] = sd[p + "self_attn.o_proj.weight"][E][:, rows]
            for w in ("gate_proj", "up_proj"):
                out[p + f"mlp.{w}.weight"] = sd[p + f"mlp.{w}.weight"][F_][:, E]
            out[p + "mlp.down_proj.weight"] = sd[p + "mlp.down_proj.weight"][E][:, F_]
            for n in ("input_layernorm", "post_attention_layernorm"):
                out[p + f"{n}.weight"] = sd[p + f"{n}.weight"][E]
            kept["heads"].append(Hk.tolist())
            kept["mlp"].append(len(F_))
    cfg = type(old).from_dict({**old.to_dict(), "hidden_size": new.width, "num_attention_heads": new.n_heads,
                               "num_key_value_heads": new.n_kv_heads, "head_dim": old.head_dim,
                               "intermediate_size": new.ffn, "num_hidden_layers": new.depth})
    child = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    child.load_state_dict({k: v.clone() for k, v in out.items()}, strict=not old.tie_word_embeddings)
    child.kept = kept
    return child.train()


# ---- the stage ------------------------------------------------------------------------------------------
def transform(ctx: StageContext) -> StageResult:
    from torch.nn.utils import prune

    from scalelab.model import count_module_params

    cfg: PruneConfig = ctx.cfg
    model = ctx.parent.load_model()
    before = count_module_params(model)
    target = (1 - cfg.sparsity) * before.nonembedding if cfg.sparsity is not None else cfg.target_params
    metrics: dict[str, Any] = {"method": cfg.method, "sparsity_target": cfg.sparsity, "target_params": cfg.target_params,
                               "params_before": before.total, "nonembedding_before": before.nonembedding}
    masked: list[Any] = []
    if cfg.structured:
        new = plan_shape(_arch(model.config), cfg, target)
        model = prune_structured(model, calibrate(ctx, model, cfg, stats="minitron"), new, cfg.method)
        metrics.update(shape={"depth": new.depth, "width": new.width, "heads": new.n_heads, "ffn": new.ffn},
                       kept=model.kept, axes=cfg.axes if cfg.method == "width" else ["layers"])
    else:
        masked, s = unstructured(ctx, model, cfg, before.nonembedding)
        metrics["matrix_sparsity"] = s
    tokens = cfg.recover_tokens if cfg.recover_tokens is not None else (200_000 if cfg.structured else 0)
    if tokens:
        teacher = ctx.parent.load_model(train=False)
        for p in teacher.parameters():
            p.requires_grad_(False)
        T = ctx.data.seq_len()
        rows = corpus_rows(ctx.data.corpus(), max(1, round(tokens / T)), T, cfg.seed, offset=RECOVERY_OFFSET)
        metrics.update(fit(model, rows, ctx, cfg, lr=cfg.lr or default_lr(ctx.parent), teacher=teacher,
                           kd_alpha=1.0, kd_temperature=cfg.kd_temperature))
    for m in masked:
        prune.remove(m, "weight")  # bake the mask into the weight: a plain checkpoint with zeros
    after = count_module_params(model)
    zeros = sum(int((m.weight == 0).sum()) for m in masked)
    metrics.update(params_after=after.total, nonembedding_after=after.nonembedding, recover_tokens=tokens,
                   sparsity=1 - (after.nonembedding - zeros) / before.nonembedding)
    return StageResult(model=model.eval(), variant=f"prune-{cfg.method}", metrics=metrics,
                       tokens=metrics.get("train_tokens", 0), teacher=None)


TECHNIQUE = Technique("prune", PruneConfig, transform,
                      "magnitude / Wanda (unstructured) or Minitron width / depth (structured), then distillation")
