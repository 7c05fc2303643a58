"""Distillation: a student (the parent run) learns from a teacher run with the same tokenizer.

    scalelab posttrain distill --from STUDENT --teacher TEACHER --mode logit|offline --runs-dir DIR

  logit    the student matches the teacher's next-token distributions (Hinton et al. 2015; loss
           in `loop.kd_loss`) on the task's worked solutions (loss on completions), on the parent's
           pretraining stream (`--data corpus`, every token; with `--task FILE`, the file's train
           texts packed as a stream), or on a user's JSONL
  offline  sequence-level distillation (Kim & Rush 2016, "Sequence-Level Knowledge Distillation"):
           the teacher writes solutions to the task's training questions through the test-time
           engine, and the student is fine-tuned on them with cross-entropy; `--keep verified` keeps
           only the solutions the task's verifier accepts, `--keep all` (default) is pure imitation

Both work at the token level, so the teacher must share the student's tokenizer (the same
vocabulary: checked before anything is written; a one-line error otherwise).

`--init scratch` re-initialises the student's weights (the parent then only lends its architecture
and tokenizer, and none of its pretraining FLOPs are carried into the child): this is the
"distilled student against the same model trained from scratch on the same student FLOPs"
comparison. The record keeps student and teacher FLOPs apart (`posttrain_ledger`: student_train,
teacher_forward, teacher_generate) and the teacher's own ledger in `teacher_flops`.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Literal

from pydantic import Field, model_validator

from scalelab.posttrain.data import corpus_rows, generated_examples, read_jsonl
from scalelab.posttrain.loop import TrainStageConfig, default_lr, fit
from scalelab.posttrain.stage import RunRef, StageContext, StageResult, Technique


class DistillConfig(TrainStageConfig):
    teacher: str = Field(..., description="teacher run directory (same tokenizer as the student)")
    mode: Literal["logit", "offline"] = "logit"
    data: str = Field("testbed", description="logit: testbed (the task's worked solutions) | corpus | a JSONL "
                      "file; offline: the task's questions")
    examples: int = Field(2000, ge=1, le=10_000_000, description="task problems (solutions or questions)")
    data_steps: list[int] | None = Field(None, description="task difficulties (default: all)")
    tokens: int = Field(200_000, ge=1, le=10**12, description="corpus: student training tokens")
    samples: int = Field(1, ge=1, le=1024, description="offline: teacher solutions per question")
    temperature: float = Field(0.0, ge=0, le=10, description="offline: teacher sampling temperature (0: greedy)")
    keep: Literal["all", "verified"] = "all"
    kd_temperature: float = Field(1.0, gt=0, le=100, description="logit: softmax temperature T")
    kd_alpha: float = Field(1.0, ge=0, le=1, description="logit: weight of the KL term (1 - alpha on cross-entropy)")
    init: Literal["parent", "scratch"] = "parent"

    @model_validator(mode="after")
    def _check(self) -> "DistillConfig":
        if self.mode == "offline" and self.samples > 1 and self.temperature == 0:
            raise ValueError(f"samples={self.samples} with temperature=0 repeats one greedy solution; set a temperature > 0")
        if self.mode == "offline" and self.data != "testbed":
            raise ValueError("offline distillation writes solutions to the task's questions: use data=testbed")
        return self

    def needs_train_split(self) -> bool:
        return self.data in ("testbed", "corpus")  # a task file's corpus is its train split

    def check_inputs(self, parent: RunRef) -> None:
        if self.data not in ("testbed", "corpus"):
            read_jsonl(self.data, parent.tokenizer)


def scratch_copy(model: Any, seed: int) -> Any:
    """The same architecture with fresh weights (the initialisation `scalelab.pretrain.train` uses)."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(model.config, dtype=torch.float32).train()


def transform(ctx: StageContext) -> StageResult:
    cfg: DistillConfig = ctx.cfg
    teacher_ref = ctx.open_run(cfg.teacher, role="--teacher")
    teacher = teacher_ref.load_model(train=False)
    for p in teacher.parameters():
        p.requires_grad_(False)
    student = ctx.parent.load_model()
    if cfg.init == "scratch":
        student = scratch_copy(student, cfg.seed)
    data = ctx.data
    steps = data.bins(cfg.data_steps, "data_steps")
    extra: dict[str, Any] = {"mode": cfg.mode, "init": cfg.init, "data": cfg.data}
    lr = cfg.lr or default_lr(ctx.parent, scratch=cfg.init == "scratch")
    if cfg.mode == "offline":
        probs = data.train_problems(cfg.examples, steps, cfg.seed)
        params = data.params(probs, temperature=cfg.temperature, seed=cfg.seed)
        # the teacher reads the questions as its own tokenizer renders them (a chat template or not,
        # and the stop strings that go with it); the student learns them as it renders them
        own = None if data.on_testbed else cfg.load_task(teacher_ref.tokenizer)
        if own is not None:
            params = dataclasses.replace(params, stop=tuple(own.stop))
        g = generated_examples(ctx, ctx.engine(teacher), probs, cfg.samples, params, part="teacher_generate",
                               keep=cfg.keep, prompts=own)
        extra.update(teacher_samples=g.samples, teacher_kept=g.kept, teacher_kept_by_steps=g.kept_by_steps)
        stats = fit(student, g.examples, ctx, cfg, lr=lr)
    else:
        if cfg.data == "testbed":
            rows = data.examples(ctx.parent.tokenizer, cfg.examples, steps, cfg.seed)
        elif cfg.data == "corpus":
            T = data.seq_len()
            # Batches from step 10^6 on: past any batch the parent was pretrained on at this seed.
            rows = corpus_rows(data.corpus(), max(1, round(cfg.tokens / T)), T, cfg.seed, offset=10**6)
        else:
            rows = read_jsonl(cfg.data, ctx.parent.tokenizer)
        stats = fit(student, rows, ctx, cfg, lr=lr, teacher=teacher, kd_alpha=cfg.kd_alpha,
                    kd_temperature=cfg.kd_temperature)
    stats.update(extra)
    return StageResult(model=student, variant=f"distill-{cfg.mode}" + ("-scratch" if cfg.init == "scratch" else ""),
                       metrics=stats, tokens=stats["train_tokens"], teacher=teacher_ref,
                       carry_pretrain=cfg.init == "parent")


TECHNIQUE = Technique("distill", DistillConfig, transform,
                      "distillation from --teacher: logit-level KL or offline on teacher-written solutions")
