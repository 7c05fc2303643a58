"""The fine-tuning loop every training stage shares: supervised cross-entropy on completion tokens,
logit distillation to a teacher, or a mix, with every pass counted in the stage's ledger.

    stats = fit(model, examples, ctx, cfg)                                  # SFT
    stats = fit(model, examples, ctx, cfg, teacher=t, kd_alpha=1.0)         # distillation
    stats = fit(model, rows, ctx, cfg, teacher=t, after_step=keep_masks)    # pruning recovery

Distillation loss (Hinton et al. 2015, "Distilling the Knowledge in a Neural Network"): the KL
divergence from the teacher's to the student's next-token distribution, both softened by a
temperature T and multiplied by T^2 so that its gradients keep their size as T changes, mixed with
the ordinary cross-entropy as  alpha * T^2 * KL(p_t^T || p_s^T) + (1 - alpha) * CE. Minitron
(Muralidharan et al. 2024, "Compact Language Models via Pruning and Knowledge Distillation") found
the logit KL alone (alpha = 1, T = 1) the best way to retrain a pruned model.

FLOPs (the record names the convention, `stage.LEDGER_CONVENTION`): per sequence of L tokens the
exact forward count of `scalelab.model` (logits at every position), training = 3 x forward less
2 x (frozen matmul weights) x L, because a frozen matrix still passes gradients to its input but
computes none for itself (LoRA freezes every base matrix; Hu et al. 2021). LoRA's own matrices
A (r x in) and B (out x r) add 2 r (in + out) forward FLOPs per token per adapted layer. A teacher
pass is one forward. Padding is not counted. 6N: 6 x non-embedding parameters per trained token,
2 x per teacher token.
"""
from __future__ import annotations

import math
import time
from typing import Any, Callable, ClassVar, Sequence

import numpy as np
from pydantic import Field

from scalelab.posttrain.data import Example, collate
from scalelab.posttrain.stage import StageConfig

LOG_ROWS = 50  # metrics rows per fit


class TrainStageConfig(StageConfig):
    """Optimiser settings shared by every stage that trains."""

    lr: float | None = Field(None, gt=0, le=1.0, description="peak learning rate (default: see default_lr)")
    epochs: int = Field(1, ge=1, le=1000)
    batch_size: int = Field(32, ge=1, le=65_536, description="sequences per step")
    warmup_frac: float = Field(0.05, ge=0, le=0.5)
    min_lr_frac: float = Field(0.1, ge=0, le=1.0, description="final lr / peak (cosine)")
    weight_decay: float = Field(0.0, ge=0, le=1.0)
    grad_clip: float = Field(1.0, ge=0, le=1e3, description="0 disables")
    curve_points: int = Field(0, ge=0, le=1000, description="held-out greedy accuracy before training and at this "
                              "many evenly spaced steps: the points of a post-training law from one run (0: none)")
    curve_problems: int = Field(32, ge=1, le=100_000, description="held-out validation questions per difficulty")
    # left out of the run id while there is no curve, so that runs made before curves keep their ids
    id_quiet_without_curve: ClassVar[tuple[str, ...]] = ("curve_points", "curve_problems")


def default_lr(parent: Any, *, lora: bool = False, scratch: bool = False) -> float:
    """The parent's pretraining peak lr for training from scratch; 0.1 x that for fine-tuning (a
    trained model should move a little: a common rule of thumb, not an optimum measured here); 10x
    the fine-tuning lr for LoRA, whose best learning rate is about ten times full fine-tuning's
    (Schulman et al. 2025, "LoRA Without Regret"). 1e-3 stands in for an unknown parent lr."""
    base = float(parent.pretrain_lr() or 1e-3)
    return base if scratch else base * 0.1 * (10.0 if lora else 1.0)


def lr_at(step: int, steps: int, peak: float, warmup: int, min_frac: float) -> float:
    """Linear warmup, then cosine to min_frac x peak (as `scalelab.pretrain.train`)."""
    if step < warmup:
        return peak * (step + 1) / warmup
    t = min(1.0, (step - warmup) / max(1, steps - warmup))
    return peak * (min_frac + (1 - min_frac) * 0.5 * (1 + math.cos(math.pi * t)))


# ---- FLOPs ----------------------------------------------------------------------------------------
def frozen_matmul_weights(model: Any) -> int:
    """Weights of frozen linear layers (lm_head included), excluding adapter matrices."""
    import torch

    return sum(m.weight.numel() for m in model.modules()
               if isinstance(m, torch.nn.Linear) and not m.weight.requires_grad)


def adapter_weights(model: Any) -> int:
    """LoRA matrices (PEFT names them lora_A / lora_B): extra matmul weights per token."""
    return sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)


def nonembedding_params(model: Any) -> int:
    from scalelab.model import count_module_params

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return count_module_params(base).nonembedding


class Counter:
    """Exact and 6N FLOPs of training and teacher passes over sequences of given lengths."""

    def __init__(self, model: Any):
        from scalelab.inference.flops import flop_model

        self.fm = flop_model(model)
        self.frozen = frozen_matmul_weights(model)
        self.adapter = adapter_weights(model)
        self.n = nonembedding_params(model)

    def forward(self, lengths: Sequence[int]) -> float:
        return float(sum(self.fm.tokens(L, 0, heads=L) + 2 * self.adapter * L for L in lengths))

    def train(self, lengths: Sequence[int]) -> float:
        return 3 * self.forward(lengths) - 2.0 * self.frozen * sum(lengths)


# ---- the loop -------------------------------------------------------------------------------------
def make_optimizer(model: Any, lr: float, weight_decay: float) -> Any:
    """AdamW, decay on matrices only (nanoGPT's grouping), betas of Llama (0.9, 0.95)."""
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95), eps=1e-8)


def kd_loss(student_logits: Any, teacher_logits: Any, mask: Any, temperature: float) -> Any:
    """T^2 x KL(p_teacher || p_student) at temperature T, averaged over masked positions."""
    import torch.nn.functional as F

    T = temperature
    log_s = F.log_softmax(student_logits.float() / T, dim=-1)  # [B, T, V]
    log_t = F.log_softmax(teacher_logits.float() / T, dim=-1)
    kl = (log_t.exp() * (log_t - log_s)).sum(-1)  # [B, T]
    return (kl * mask).sum() / mask.sum().clamp(min=1) * T * T


def fit(model: Any, data: list[Example], ctx: Any, cfg: TrainStageConfig, *, lr: float, teacher: Any = None,
        kd_alpha: float = 1.0, kd_temperature: float = 1.0, part: str = "student_train",
        after_step: Callable[[], None] | None = None) -> dict[str, Any]:
    """Train `model` in place on `data` for cfg.epochs; returns loss and counts (module docstring)."""
    import torch
    import torch.nn.functional as F

    if not data:
        from scalelab.errors import InputError

        raise InputError("no training examples (nothing to fine-tune on)")
    tok = ctx.parent.tokenizer
    torch.manual_seed(cfg.seed)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = make_optimizer(model, lr, cfg.weight_decay)
    count, tcount = Counter(model), (Counter(teacher) if teacher is not None else None)
    if teacher is not None:
        teacher.eval()
    per_epoch = math.ceil(len(data) / cfg.batch_size)
    steps = cfg.epochs * per_epoch
    warmup = math.ceil(cfg.warmup_frac * steps)
    rng = np.random.default_rng(cfg.seed)
    every = max(1, steps // LOG_ROWS)
    step, tokens, targets, window, recent = 0, 0, 0, [], math.nan
    resume, kind = ctx.resume, f"fit:{part}"
    resume.enter()
    at = resume.restore(kind, model, opt, ctx.ledger)
    first, skip = 0, 0
    if at is not None:  # a killed attempt's position: the same batches follow (see `resume`)
        rng.bit_generator.state = at["rng"]  # as it was when that epoch drew its order
        step, tokens, targets, window = at["step"], at["tokens"], at["targets"], at["window"]
        recent = math.nan if at["recent"] is None else at["recent"]
        first, skip = at["epoch"], at["step"] - at["epoch"] * per_epoch
    start = step
    curve = Curve(ctx, model, cfg, steps, at)
    t0, c0 = time.perf_counter(), time.process_time()
    for epoch in range(first, cfg.epochs):
        epoch_rng = rng.bit_generator.state
        order = rng.permutation(len(data))
        for i in range(skip * cfg.batch_size, len(order), cfg.batch_size):
            b = collate([data[j] for j in order[i:i + cfg.batch_size]], tok)
            x, y, m, att = b.ids[:, :-1], b.ids[:, 1:], b.target[:, 1:], b.attn[:, :-1]  # [B, T-1] each
            lengths = [L - 1 for L in b.lengths]
            lr_now = lr_at(step, steps, lr, warmup, cfg.min_lr_frac)
            for g in opt.param_groups:
                g["lr"] = lr_now
            logits = model(input_ids=x, attention_mask=att).logits  # [B, T-1, V]
            ce = (F.cross_entropy(logits.float().transpose(1, 2), y, reduction="none") * m).sum() / m.sum().clamp(min=1)
            loss, kd = ce, None
            if teacher is not None:
                with torch.no_grad():
                    t_logits = teacher(input_ids=x, attention_mask=att).logits
                kd = kd_loss(logits, t_logits, m, kd_temperature)
                loss = kd_alpha * kd + (1 - kd_alpha) * ce
                ctx.ledger.add("teacher_forward", tcount.forward(lengths), 2.0 * tcount.n * sum(lengths), sum(lengths))
            loss.backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            opt.step()
            opt.zero_grad(set_to_none=True)
            if after_step is not None:
                after_step()
            ctx.ledger.add(part, count.train(lengths), 6.0 * count.n * sum(lengths), sum(lengths))
            tokens += sum(lengths)
            targets += int(m.sum())
            step += 1
            window.append(float(loss.detach()))
            if step % every == 0 or step == steps:
                recent = float(np.mean(window))
                ctx.log({"step": step, "epoch": epoch, "tokens": tokens, "loss": recent, "ce": float(ce.detach()),
                         "kd": float(kd.detach()) if kd is not None else None, "lr": lr_now})
                ctx.progress("training", step, steps)
                window = []
            curve.after(step)
            if step < steps and resume.due():
                resume.save(kind, model, opt, ctx.ledger, {
                    "step": step, "epoch": epoch, "rng": epoch_rng, "tokens": tokens, "targets": targets,
                    "window": window, "recent": None if math.isnan(recent) else recent, "curve": curve.points})
        skip = 0
    model.eval()
    return {"train_loss": recent, "train_steps": step, "train_steps_run": step - start,  # this attempt's
            "train_tokens": tokens, "train_target_tokens": targets,
            "train_examples": len(data),
            "trainable_params": sum(p.numel() for p in params), "lr": lr,
            "train_wall_s": round(time.perf_counter() - t0, 3), "train_cpu_s": round(time.process_time() - c0, 3),
            **({"curve": curve.points} if curve.at else {})}


class Curve:
    """Held-out greedy accuracy along one training run (`curve_points`), as the RL loop keeps it:
    `metrics.curve` = [{step, posttrain_flops, greedy_accuracy}], step 0 before any update. The
    evaluation runs the test-time engine without gradients or the training RNG, so the trained
    weights are the same with or without a curve; its FLOPs are evaluation FLOPs (not the ledger)."""

    def __init__(self, ctx: Any, model: Any, cfg: TrainStageConfig, steps: int, at: dict[str, Any] | None):
        k = getattr(cfg, "curve_points", 0)
        self.ctx, self.model, self.cfg = ctx, model, cfg
        self.at = sorted({max(1, round(steps * i / k)) for i in range(1, k + 1)}) if k else []
        self.points: list[dict[str, Any]] = list((at or {}).get("curve") or [])
        if self.at:
            data = ctx.data
            self.probs = data.heldout_problems(cfg.curve_problems, data.bins(getattr(cfg, "data_steps", None),
                                                                              "data_steps"), cfg.seed)
            if not self.points:
                self._point(0)

    def after(self, step: int) -> None:
        if step in self.at:
            self._point(step)

    def _point(self, step: int) -> None:
        from scalelab.posttrain.accuracy import greedy_accuracy

        acc = greedy_accuracy(self.ctx, self.model, self.probs, self.cfg.seed)
        self.points.append({"step": step, "posttrain_flops": self.ctx.ledger.total, "greedy_accuracy": acc})
        self.ctx.log({"step": step, "curve": True, "greedy_accuracy": acc})


def completion_logprobs(model: Any, batch: Any) -> tuple[Any, Any]:
    """log p(token | prefix) of every next token of a collated batch [B, T-1], and the mask of
    completion positions [B, T-1] (shared by the RL and preference losses)."""
    import torch

    x, y, att = batch.ids[:, :-1], batch.ids[:, 1:], batch.attn[:, :-1]
    logits = model(input_ids=x, attention_mask=att).logits.float()  # [B, T-1, V]
    logp = torch.log_softmax(logits, -1).gather(-1, y.unsqueeze(-1)).squeeze(-1)  # [B, T-1]
    return logp, batch.target[:, 1:]
