"""Post-training: make a pretrained model better, cheaper or more specific, and count what it cost.

Every technique has one shape (`stage.py`): load a parent run -> transform -> evaluate -> save a
child run with lineage (`parent_id`, `teacher_id`) and its own FLOPs ledger.

    stage.py     the shape: parent checks, ledger, context, evaluation and saving (`run_stage`)
    taskdata.py  the stage's task: the testbed or a task file (--task FILE): questions, examples, bins
    data.py      fine-tuning examples: task solutions, user JSONL or chat messages, verified generations
    loop.py      the shared training loop (cross-entropy on completions, logit distillation), FLOPs
    resume.py    a killed stage's training state (weights, AdamW, RNG, position, ledger): saved, restored
    evaluate.py  accuracy by difficulty (test-time `cot` strategy, exact verifier) and held-out loss
    sft.py       full and LoRA fine-tuning (own loop or TRL's SFTTrainer)
    distill.py   offline (teacher-written solutions) and logit-level (KL) distillation
    synth.py     teacher-written, verifier-filtered solutions for under-represented difficulties
    prune.py     unstructured (magnitude, Wanda) and structured (Minitron width / depth) pruning
    quantize.py  torchao int8 weight-only / dynamic (int4 where the platform has kernels)
    curves.py    accuracy against post-training and pretraining FLOPs, from the records
  feedback and RL (docs/posttrain-rl.md):
    prefs.py        preference pairs and thumbs: user JSONL, or ranked testbed samples
    rewardmodel.py  reward models from pairs (Bradley-Terry) or thumbs; likelihood or label head
    rewards.py      RL reward sources: exact verifier, reward model, AI judge; fault isolation
    rl.py           rlvr / rlhf / rlaif: one GRPO/RLOO loop with a KL penalty to a reference
    dpo.py          direct preference optimisation (own loop or TRL's DPOTrainer)
    rft.py          rejection-sampling fine-tuning, best-of-n distillation, strategies as samplers
    rlcurves.py     accuracy against RL FLOPs; reward over-optimisation
    compare.py      paired greedy accuracy of runs on the same problems

    from scalelab.posttrain import run
    record = run("sft", {"parent": "runs/d4-3M-b3d17d80", "lora_rank": 8}, "runs/post")

Command line: `scalelab posttrain TECHNIQUE --from RUN ... --runs-dir DIR`; guide: docs/posttrain.md.
A new technique adds one module with a config class and a `transform(ctx) -> StageResult`, and one
line in `TECHNIQUES` (a module may hold several, as rl.py's `TECHNIQUES`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from scalelab.registry import Registry

TECHNIQUES = Registry("technique", {
    "sft": "scalelab.posttrain.sft:TECHNIQUE",
    "distill": "scalelab.posttrain.distill:TECHNIQUE",
    "synth": "scalelab.posttrain.synth:TECHNIQUE",
    "prune": "scalelab.posttrain.prune:TECHNIQUE",
    "quantize": "scalelab.posttrain.quantize:TECHNIQUE",
    "reward-model": "scalelab.posttrain.rewardmodel:TECHNIQUE",
    "rlvr": "scalelab.posttrain.rl:TECHNIQUES.rlvr",
    "rlhf": "scalelab.posttrain.rl:TECHNIQUES.rlhf",
    "rlaif": "scalelab.posttrain.rl:TECHNIQUES.rlaif",
    "dpo": "scalelab.posttrain.dpo:TECHNIQUE",
    "rft": "scalelab.posttrain.rft:TECHNIQUE",
}, plural="techniques")


def get_technique(name: str) -> Any:
    return TECHNIQUES.get(name)


def run(name: str, config: dict[str, Any] | Any, runs_dir: str | Path, *, progress: Any = None) -> Any:
    """Build the technique's config (one-line errors) and run the stage; returns the child record."""
    from scalelab.posttrain.stage import run_stage

    tech = get_technique(name)
    cfg = config if isinstance(config, tech.config) else tech.config.build(dict(config))
    return run_stage(tech, cfg, runs_dir, progress=progress)
