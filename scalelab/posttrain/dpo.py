"""Direct preference optimisation: offline, on the same pairs a reward model would learn from.

    scalelab posttrain dpo --from SFT_RUN [--data pairs.jsonl] --beta 0.1 --runs-dir DIR

DPO (Rafailov et al. 2023, "Direct Preference Optimization") trains the policy on preference pairs
with no reward model and no sampling during training:

    loss = -log sigmoid( beta * [ (log pi(y_c|x) - log ref(y_c|x)) - (log pi(y_r|x) - log ref(y_r|x)) ] )

where log pi(y|x) sums the completion's token log-probabilities, and ref is the frozen reference
(the parent by default). beta x the log-ratio is the policy's implicit reward; its accuracy on
held-out pairs (r_chosen > r_rejected) is reported as a reward model's would be. `sft_weight` adds
the chosen texts' negative log-likelihood per token (RPO: Pang et al. 2024, "Iterative Reasoning
Preference Optimization"), against DPO's known fall of the chosen likelihood on reasoning pairs. The pairs come
from `reward_model.feedback`: a user's JSONL (pairs only) or the parent's own samples on the task
ranked by the verifier and the stated preference for shorter correct solutions.

FLOPs: sampling for the task's pairs (policy_generate), one reference forward per text, computed once
(reference_forward), and a training pass over both texts of every pair per epoch (policy_train).
"""
from __future__ import annotations

import math
import time
from typing import Any, Literal

import numpy as np
from pydantic import Field

from scalelab import trackers
from scalelab.errors import ConfigError
from scalelab.posttrain.rewardmodel import FeedbackConfig, feedback
from scalelab.posttrain.stage import StageContext, StageResult, Technique


class DPOConfig(FeedbackConfig):
    beta: float = Field(0.1, gt=0, le=100, description="strength of the KL constraint to the reference")
    reference: str | None = Field(None, description="reference policy (default: the parent)")
    sft_weight: float = Field(0.0, ge=0, le=100, description="weight of the chosen texts' NLL per token (RPO)")
    epochs: int = Field(2, ge=1, le=1000)
    lr: float | None = Field(None, gt=0, le=1.0, description="default: 0.01 x the parent's pretraining lr")
    curve_problems: int = Field(32, ge=1, le=100_000, description="held-out validation questions per difficulty")
    trainer: Literal["own", "trl"] = Field("own", description="own loop, or TRL's DPOTrainer on the same pairs")


def _examples(tok: Any, pairs: list[Any]) -> list[Any]:
    from scalelab.posttrain.data import make_example

    return [make_example(tok, p.prompt, c) for p in pairs for c in (p.chosen, p.rejected)]


def _seq_logps(model: Any, examples: list[Any], tok: Any, *, grad: bool, batch: int = 64) -> Any:
    """Summed completion log-probabilities [len(examples)]."""
    import torch

    from scalelab.posttrain.data import collate
    from scalelab.posttrain.loop import completion_logprobs

    out = []
    for i in range(0, len(examples), batch):
        with torch.set_grad_enabled(grad):
            lp, m = completion_logprobs(model, collate(examples[i:i + batch], tok))
            out.append((lp * m).sum(1))
    return torch.cat(out)


def transform(ctx: StageContext) -> StageResult:
    import torch
    import torch.nn.functional as F

    from scalelab.posttrain.loop import Counter, default_lr, make_optimizer
    from scalelab.posttrain.prefs import split_by_prompt

    cfg: DPOConfig = ctx.cfg
    fb = feedback(ctx, cfg)
    if not fb.pairs:
        raise ConfigError(f"{fb.source}: DPO needs preference pairs (prompt, chosen, rejected); this feedback has "
                          "only thumbs labels -- train a reward model on them instead (posttrain reward-model)")
    tok = ctx.parent.tokenizer
    train, held = split_by_prompt(fb.pairs, cfg.heldout, cfg.seed)
    policy = ctx.parent.load_model()
    ref_run = ctx.open_run(cfg.reference, role="--reference") if cfg.reference else ctx.parent
    reference = ref_run.load_model(train=False)
    count, rcount = Counter(policy), Counter(reference)
    ex_tr, ex_ho = _examples(tok, train), _examples(tok, held)
    with torch.no_grad():
        ref_tr = _seq_logps(reference, ex_tr, tok, grad=False)
        ref_ho = _seq_logps(reference, ex_ho, tok, grad=False) if ex_ho else None
    lens = [len(e) - 1 for e in ex_tr + ex_ho]
    ctx.ledger.add("reference_forward", rcount.forward(lens), 2.0 * rcount.n * sum(lens), sum(lens))
    # 0.1 x the fine-tuning default: at 1e-3 (the SFT default) two epochs of DPO on testbed pairs
    # drove the d3 SFT policy's accuracy to 0 (docs/posttrain-rl.md)
    lr = cfg.lr or 0.1 * default_lr(ctx.parent)
    torch.manual_seed(cfg.seed)
    opt = make_optimizer(policy, lr, cfg.weight_decay)
    params = [p for p in policy.parameters() if p.requires_grad]
    rng = np.random.default_rng(cfg.seed)
    steps = cfg.epochs * math.ceil(len(train) / cfg.batch_size)
    step, loss_v, acc_v, t0, tokens = 0, math.nan, math.nan, time.perf_counter(), 0
    curve = _Curve(ctx, cfg)
    curve.point(0, policy)
    policy.train()
    if cfg.trainer == "trl":
        loss_v, acc_v, step, tokens = _fit_trl(policy, reference, train, ex_tr, ctx, cfg, lr, count)
        curve.point(cfg.epochs, policy)
    for epoch in range(cfg.epochs if cfg.trainer == "own" else 0):
        order = rng.permutation(len(train))
        for i in range(0, len(order), cfg.batch_size):
            idx = order[i:i + cfg.batch_size]
            ex = [ex_tr[2 * j + k] for j in idx for k in (0, 1)]
            lp = _seq_logps(policy, ex, tok, grad=True, batch=len(ex))
            ref = torch.stack([ref_tr[2 * j + k] for j in idx for k in (0, 1)])
            margin = cfg.beta * ((lp[0::2] - ref[0::2]) - (lp[1::2] - ref[1::2]))  # implicit reward gap
            loss = F.softplus(-margin).mean()  # -log sigmoid(margin)
            if cfg.sft_weight > 0:  # RPO: keep the chosen texts likely, per completion token
                n_tok = torch.tensor([len(ex[2 * k]) - ex[2 * k].n_prompt for k in range(len(idx))], dtype=lp.dtype)
                loss = loss + cfg.sft_weight * (-lp[0::2] / n_tok).mean()
            loss.backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            opt.step()
            opt.zero_grad(set_to_none=True)
            L = [len(e) - 1 for e in ex]
            ctx.ledger.add("policy_train", count.train(L), 6.0 * count.n * sum(L), sum(L))
            tokens += sum(L)
            step += 1
            loss_v, acc_v = float(loss.detach()), float((margin > 0).float().mean())
            if step % max(1, steps // 50) == 0 or step == steps:
                ctx.log({"step": step, "epoch": epoch, "loss": loss_v, "reward_accuracy": acc_v,
                         "margin": float(margin.detach().mean()), "lr": lr})
                ctx.progress("training", step, steps)
        curve.point(epoch + 1, policy)
        policy.train()
    policy.eval()
    metrics = {"curve": curve.points, "trainer": cfg.trainer, "train_loss": loss_v, "train_reward_accuracy": acc_v, "train_steps": step, "train_tokens": tokens,
               "pairs": len(train), "feedback": fb.source, "beta": cfg.beta, "lr": lr,
               "train_wall_s": round(time.perf_counter() - t0, 3)}
    if ex_ho:
        with torch.no_grad():
            lp = _seq_logps(policy, ex_ho, tok, grad=False)
        margin = cfg.beta * ((lp[0::2] - ref_ho[0::2]) - (lp[1::2] - ref_ho[1::2]))
        metrics.update(heldout_pairwise_accuracy=float((margin > 0).float().mean()), heldout_pairs=len(held))
        ctx.ledger.eval_flops += count.forward([len(e) - 1 for e in ex_ho])
    return StageResult(model=policy, variant="dpo", metrics=metrics, tokens=tokens,
                       extra={"reference_id": ref_run.run_id})


def _fit_trl(policy: Any, reference: Any, pairs: list[Any], examples: list[Any], ctx: StageContext, cfg: DPOConfig,
             lr: float, count: Any) -> tuple[float, float, int, int]:
    """The same pairs through TRL's DPOTrainer (sigmoid loss, constant lr, reference log-probabilities
    precomputed once as the own loop does; `use_cpu=True, bf16=False`, FINDINGS.md). The ledger
    counts the same passes as the own loop: a training pass over both texts of every pair per epoch
    (the reference forwards are already in it)."""
    import shutil

    from datasets import Dataset
    from datasets.utils import logging as ds_logging
    from transformers import PrinterCallback
    from trl import DPOConfig as TRLConfig, DPOTrainer

    if cfg.sft_weight > 0:
        raise ConfigError("sft_weight (RPO) is implemented by the own trainer only; use trainer=own")
    out_dir = ctx.run_dir / ".trl"
    args = TRLConfig(output_dir=str(out_dir), per_device_train_batch_size=cfg.batch_size, num_train_epochs=cfg.epochs,
                     learning_rate=lr, lr_scheduler_type="constant", beta=cfg.beta, loss_type=["sigmoid"],
                     max_grad_norm=cfg.grad_clip or 1e9, weight_decay=cfg.weight_decay, adam_beta1=0.9,
                     adam_beta2=0.95, seed=cfg.seed, data_seed=cfg.seed, use_cpu=True, bf16=False,
                     activation_checkpointing=False, report_to="none", save_strategy="no",
                     logging_steps=max(1, cfg.epochs * math.ceil(len(pairs) / cfg.batch_size) // 50),
                     precompute_ref_log_probs=True, max_length=None, disable_tqdm=True, dataloader_num_workers=0)
    ds = Dataset.from_list([{"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected} for p in pairs])
    bars = ds_logging.is_progress_bar_enabled()
    ds_logging.disable_progress_bar()
    try:
        with trackers.trainer_reporting(ctx.run_dir) as report_to:  # TRL reports where the run does
            args.report_to = [report_to] if report_to != "none" else []
            trainer = DPOTrainer(model=policy, ref_model=reference, args=args, train_dataset=ds,
                                 processing_class=ctx.parent.tokenizer)
            trainer.remove_callback(PrinterCallback)
            trainer.train()
    finally:
        if bars:
            ds_logging.enable_progress_bar()
    shutil.rmtree(out_dir, ignore_errors=True)
    logs = [h for h in trainer.state.log_history if "loss" in h]
    for h in logs:
        ctx.log({"step": h.get("step"), "loss": h["loss"], "reward_accuracy": h.get("rewards/accuracies"), "lr": lr})
    L = [len(e) - 1 for e in examples] * cfg.epochs
    ctx.ledger.add("policy_train", count.train(L), 6.0 * count.n * sum(L), sum(L))
    last = logs[-1] if logs else {}
    return (float(last.get("loss", math.nan)), float(last.get("rewards/accuracies", math.nan)),
            int(trainer.state.global_step), sum(L))


class _Curve:
    """Held-out greedy accuracy after each epoch, against the stage's FLOPs so far."""

    def __init__(self, ctx: StageContext, cfg: DPOConfig):
        self.ctx, self.seed, self.points, self.probs = ctx, cfg.seed, [], []
        # a text-corpus parent on the testbed has no problems to answer; a task file has them when it
        # has training (or validation) questions to hold out
        data = ctx.data
        if (data.on_testbed and ctx.parent.pretrain_source()["source"] == "testbed") or \
                (not data.on_testbed and {"train", "val"} & set(data.task.splits())):
            steps = ctx.data.bins(cfg.data_steps, "data_steps")
            self.probs = ctx.data.heldout_problems(cfg.curve_problems, steps, cfg.seed)

    def point(self, epoch: int, model: Any) -> None:
        from scalelab.posttrain.accuracy import greedy_accuracy

        if self.probs:
            acc = greedy_accuracy(self.ctx, model, self.probs, self.seed)
            self.points.append({"round": epoch, "posttrain_flops": self.ctx.ledger.total, "greedy_accuracy": acc})


TECHNIQUE = Technique("dpo", DPOConfig, transform, "direct preference optimisation on pairs (offline, no reward model)")
