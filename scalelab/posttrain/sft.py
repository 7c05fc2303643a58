"""Supervised fine-tuning: full or LoRA, on the task's worked solutions or a user's JSONL.

    scalelab posttrain sft --from RUN [--lora-rank 8] [--data FILE.jsonl] [--task FILE] --runs-dir DIR

Default data: `examples` reference solutions of the task's train split -- the testbed's worked
solutions, or with `--task FILE` the file's (prompt as the task renders it, then its reference).
`--data FILE.jsonl` trains on prompt/completion lines or chat `messages` instead; the stage is
still evaluated on the task.

LoRA (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models") through PEFT: every
linear layer of the decoder gets a rank-r update B A (lm_head and embeddings stay frozen), scaled by
alpha / r; after training the update is merged into the weights (`merge_and_unload`), so the
child is a plain checkpoint of the parent's shape. `trainable_params` in the record counts the
adapter only.

Two trainers run the same examples, loss and schedule:
  own  `scalelab.posttrain.loop.fit` (default)
  trl  TRL's SFTTrainer on the same pre-tokenized examples with completion-only loss
       (`use_cpu=True, bf16=False`, no activation checkpointing, FINDINGS.md; `report_to`
       the run's tracker, `scalelab.trackers`;
       transformers 5 renamed gradient_checkpointing to activation_checkpointing)
Why the own loop is the default: on models of 10^4-10^6 parameters a step is a few milliseconds of
matmuls, and SFTTrainer adds a fixed start-up (dataset preparation, accelerate) and a per-step
overhead of the same size; docs/LOG.md has the measurement. `--trainer trl` stays for comparison
and for users who want TRL's callbacks.
"""
from __future__ import annotations

import math
import shutil
import time
from typing import Any, Literal

from pydantic import Field

from scalelab import trackers
from scalelab.posttrain.data import Example, Steps, read_jsonl
from scalelab.posttrain.loop import Counter, TrainStageConfig, default_lr, fit
from scalelab.posttrain.stage import RunRef, StageContext, StageResult, Technique


class SFTConfig(TrainStageConfig):
    data: str = Field("testbed", description="testbed: the task's own worked solutions (train split); or a JSONL "
                      "file of prompt/completion or chat messages")
    examples: int = Field(2000, ge=1, le=10_000_000, description="task data: training examples")
    data_steps: Steps = Field(None, description="task data: difficulties (testbed steps, file bins; default: all)")
    lora_rank: int = Field(0, ge=0, le=4096, description="0: full fine-tuning; r > 0: LoRA of rank r")
    lora_alpha: float | None = Field(None, gt=0, description="LoRA scale alpha (default 2 x rank)")
    trainer: Literal["own", "trl"] = "own"

    def needs_train_split(self) -> bool:
        return self.data == "testbed"

    def check_inputs(self, parent: RunRef) -> None:
        if self.data != "testbed":
            read_jsonl(self.data, parent.tokenizer)  # every line, before the child exists


def training_examples(ctx: StageContext, cfg: Any) -> list[Example]:
    """The fine-tuning set: a JSONL file, or reference solutions of the task's train split."""
    if cfg.data != "testbed":
        return read_jsonl(cfg.data, ctx.parent.tokenizer)
    steps = ctx.data.bins(cfg.data_steps, "data_steps")
    return ctx.data.examples(ctx.parent.tokenizer, cfg.examples, steps, cfg.seed)


def add_lora(model: Any, rank: int, alpha: float | None) -> Any:
    """PEFT LoRA on every linear layer of the decoder; alpha = 2 x rank by default, a common
    practitioners' setting (the paper tunes alpha once and keeps alpha / r fixed)."""
    import warnings

    from peft import LoraConfig, get_peft_model

    conf = LoraConfig(r=rank, lora_alpha=alpha or 2.0 * rank, lora_dropout=0.0, bias="none",
                      target_modules="all-linear", task_type="CAUSAL_LM")
    with warnings.catch_warnings():  # PEFT calls a transformers method deprecated in 5.x; nothing to act on
        warnings.simplefilter("ignore", FutureWarning)
        return get_peft_model(model, conf)


def finetune(ctx: StageContext, cfg: SFTConfig, model: Any, data: list[Example]) -> tuple[Any, dict[str, Any]]:
    """Fine-tune `model` on `data` (LoRA when cfg.lora_rank > 0, merged afterwards); shared with synth."""
    n_total = sum(p.numel() for p in model.parameters())
    lora = cfg.lora_rank > 0
    if lora:
        model = add_lora(model, cfg.lora_rank, cfg.lora_alpha)
    lr = cfg.lr or default_lr(ctx.parent, lora=lora)
    stats = (fit_trl if cfg.trainer == "trl" else fit)(model, data, ctx, cfg, lr=lr)
    if lora:
        model = model.merge_and_unload()  # W + (alpha / r) B A, the adapter folded into the weights
    stats.update(trainable_fraction=stats["trainable_params"] / n_total, trainer=cfg.trainer, data=_data_name(cfg),
                 lora_rank=cfg.lora_rank, lora_alpha=(cfg.lora_alpha or 2.0 * cfg.lora_rank) if lora else None)
    return model, stats


def transform(ctx: StageContext) -> StageResult:
    cfg: SFTConfig = ctx.cfg
    model, stats = finetune(ctx, cfg, ctx.parent.load_model(), training_examples(ctx, cfg))
    return StageResult(model=model, variant="sft-lora" if cfg.lora_rank else "sft", metrics=stats,
                       tokens=stats["train_tokens"])


def _data_name(cfg: Any) -> str:
    from pathlib import Path

    return cfg.task_name() if cfg.data == "testbed" else Path(cfg.data).name


# ---- TRL ------------------------------------------------------------------------------------------
def fit_trl(model: Any, data: list[Example], ctx: StageContext, cfg: TrainStageConfig, *, lr: float) -> dict[str, Any]:
    """The same examples through TRL's SFTTrainer (pre-tokenized, completion-only loss)."""
    from datasets import Dataset
    from datasets.utils import logging as ds_logging
    from transformers import PrinterCallback, TrainerCallback
    from trl import SFTConfig as TRLConfig, SFTTrainer

    tok = ctx.parent.tokenizer
    ds = Dataset.from_list([{"input_ids": list(e.ids), "completion_mask": [0] * e.n_prompt + [1] * (len(e) - e.n_prompt)}
                            for e in data])
    steps = cfg.epochs * math.ceil(len(data) / cfg.batch_size)
    out_dir = ctx.run_dir / ".trl"
    args = TRLConfig(
        output_dir=str(out_dir), per_device_train_batch_size=cfg.batch_size, num_train_epochs=cfg.epochs,
        learning_rate=lr, lr_scheduler_type="cosine_with_min_lr", lr_scheduler_kwargs={"min_lr_rate": cfg.min_lr_frac},
        warmup_steps=cfg.warmup_frac, weight_decay=cfg.weight_decay, max_grad_norm=cfg.grad_clip or 1e9,
        adam_beta1=0.9, adam_beta2=0.95, seed=cfg.seed, data_seed=cfg.seed, use_cpu=True, bf16=False,
        activation_checkpointing=False, report_to="none", save_strategy="no", logging_steps=max(1, steps // 50),
        completion_only_loss=True, packing=False, max_length=None, dataloader_num_workers=0, disable_tqdm=True,
        remove_unused_columns=True)
    losses: list[float] = []
    counter = Counter(model)

    class Log(TrainerCallback):
        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
            if logs and "loss" in logs:
                losses.append(float(logs["loss"]))
                ctx.log({"step": state.global_step, "loss": float(logs["loss"]), "lr": logs.get("learning_rate")})
                ctx.progress("training", state.global_step, steps)

    t0, c0 = time.perf_counter(), time.process_time()
    bars = ds_logging.is_progress_bar_enabled()
    ds_logging.disable_progress_bar()  # "Building labels" bars; our own progress bar reports steps
    try:
        with trackers.trainer_reporting(ctx.run_dir) as report_to:  # TRL reports where the run does
            args.report_to = [report_to] if report_to != "none" else []
            trainer = SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tok, callbacks=[Log()])
            trainer.remove_callback(PrinterCallback)  # it prints every log dict to stdout
            trainer.train()
    finally:
        if bars:
            ds_logging.enable_progress_bar()
    shutil.rmtree(out_dir, ignore_errors=True)
    lengths = [len(e) for e in data] * cfg.epochs  # TRL feeds each whole example (no shift before the model)
    ctx.ledger.add("student_train", counter.train(lengths), 6.0 * counter.n * sum(lengths), sum(lengths))
    model.eval()
    return {"train_loss": losses[-1] if losses else math.nan, "train_steps": trainer.state.global_step,
            "train_tokens": sum(lengths), "train_examples": len(data), "lr": lr,
            "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "train_wall_s": round(time.perf_counter() - t0, 3), "train_cpu_s": round(time.process_time() - c0, 3)}


TECHNIQUE = Technique("sft", SFTConfig, transform, "supervised fine-tuning, full or LoRA (--lora-rank)")
