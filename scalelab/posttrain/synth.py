"""Synthetic-data augmentation: a teacher writes solutions where real data is scarce, the exact
verifier keeps the right ones, and they are mixed into the fine-tuning data.

    scalelab posttrain synth --from RUN [--teacher RUN] --target-steps 7,8 [--task FILE] --runs-dir DIR

The scenario: the real fine-tuning data covers the easy difficulties (`--data-steps`, default every
difficulty except the targets) and the hard ones are under-represented. Questions of the target
difficulties cost nothing to write, answers do: the teacher (default: the parent itself, which makes
this one round of self-training with a verifier, as in STaR, Zelikman et al. 2022) samples
`--samples` solutions per question at `--temperature`, the verifier keeps whole solutions that are
right (on the testbed: in every step; on a task file: by its answer check), one copy of each
distinct solution per question, and they join the real examples. On a task file the difficulties
are its bins and the targets default to the hardest quarter of them. The student is then fine-tuned exactly as `sft` does (full or LoRA).

The comparison that measures it is `sft` on the same real data (same `--data-steps`): the hardest
bins should gain (docs/posttrain.md). Teacher sampling is in the ledger as teacher_generate.
"""
from __future__ import annotations

import math
from typing import Any

from pydantic import Field

from scalelab.errors import ConfigError
from scalelab.posttrain.data import Steps, generated_examples
from scalelab.posttrain.sft import SFTConfig, finetune, training_examples
from scalelab.posttrain.stage import StageContext, StageResult, Technique


class SynthConfig(SFTConfig):
    teacher: str | None = Field(None, description="teacher run (default: the parent itself)")
    target_steps: Steps = Field(None, description="under-represented difficulties (default: hardest quarter)")
    synth_problems: int = Field(500, ge=1, le=10_000_000, description="target questions the teacher answers")
    samples: int = Field(4, ge=1, le=1024, description="teacher samples per question")
    temperature: float = Field(0.8, ge=0, le=10, description="teacher sampling temperature")

    def needs_train_split(self) -> bool:
        return True  # the teacher answers training questions


def targets(cfg: SynthConfig, data: Any) -> list[Any]:
    """The scarce difficulties: given, or the hardest quarter of the task's (the testbed: the most steps)."""
    every = data.all_bins
    return data.bins(cfg.target_steps or every[len(every) - math.ceil(len(every) / 4):], "target_steps")


def transform(ctx: StageContext) -> StageResult:
    cfg: SynthConfig = ctx.cfg
    data = ctx.data
    tgt = targets(cfg, data)
    real_steps = cfg.data_steps or [k for k in data.all_bins if k not in tgt]
    if cfg.data == "testbed" and not real_steps:
        raise ConfigError(f"target_steps {tgt} cover every difficulty: no real data is left; set data_steps")
    real = training_examples(ctx, cfg.model_copy(update={"data_steps": real_steps}))
    teacher_ref = ctx.open_run(cfg.teacher, role="--teacher") if cfg.teacher else ctx.parent
    teacher = teacher_ref.load_model(train=False)
    # Training-split questions on their own seed stream, so they are not the real examples' questions.
    probs = data.train_problems(cfg.synth_problems, tgt, cfg.seed + 1)
    params = data.params(probs, temperature=cfg.temperature, seed=cfg.seed)
    g = generated_examples(ctx, ctx.engine(teacher), probs, cfg.samples, params, part="teacher_generate",
                           keep="verified", distinct=True)
    del teacher
    model, stats = finetune(ctx, cfg, ctx.parent.load_model(), real + g.examples)
    stats.update(real_examples=len(real), real_steps=real_steps, target_steps=tgt, synth_samples=g.samples,
                 synth_kept=g.kept, synth_kept_by_steps=g.kept_by_steps,
                 synth_yield=g.kept / g.samples if g.samples else 0.0, teacher="parent" if not cfg.teacher else teacher_ref.run_id)
    return StageResult(model=model, variant="synth-lora" if cfg.lora_rank else "synth", metrics=stats,
                       tokens=stats["train_tokens"], teacher=teacher_ref if cfg.teacher else None)


TECHNIQUE = Technique("synth", SynthConfig, transform,
                      "teacher-written, verifier-filtered solutions for under-represented difficulties, then SFT")
