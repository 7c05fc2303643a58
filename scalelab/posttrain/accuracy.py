"""Accuracy by difficulty and held-out loss of a post-trained model, through the test-time code.

Accuracy is the test-time `cot` strategy (one greedy solution, `scalelab.testtime.strategies`) on
`eval_problems` problems of each difficulty of the stage's task (`taskdata`), scored by the task's
verifier: on the testbed a solution counts only when every step and the answer are right (difficulty =
number of steps); on a task file the final answer is checked by the file's format (difficulty = the
file's bins). The same seed gives the same problems, so a child and its parent are compared on
identical questions. The chance baseline is the probability that a guess passes (`task.chance`).

The loss is the mean cross-entropy (nats per token) on the completions of reference solutions of
held-out problems (the testbed's validation split, a task file's test split), i.e. what supervised
fine-tuning minimises, measured on questions it never trained on.
"""
from __future__ import annotations

from typing import Any

import numpy as np



def _data(src: Any) -> Any:
    """A stage's task data; a bare testbed source (as older callers pass) is its testbed."""
    from scalelab.posttrain.taskdata import TestbedData

    return src if hasattr(src, "eval_groups") else TestbedData(src=src)


def evaluate_model(model: Any, tokenizer: Any, src: Any, cfg: Any, *, backend: str = "auto") -> dict[str, Any]:
    """accuracy (mean over difficulties), accuracy_by_difficulty, its standard errors, chance, eval_loss, flops."""
    from scalelab.inference.engine import Engine
    from scalelab.testtime.strategies import Context, Options, run_strategy

    data = _data(src)
    was_training = model.training
    eng = Engine(model, tokenizer, max_batch=cfg.max_batch, backend=backend)
    ctx = Context(engine=eng, options=Options(seed=cfg.seed), task=data.task)
    task = data.task
    acc, se, chance, count, flops = {}, {}, {}, {}, 0.0
    for d, problems in data.eval_groups(cfg):
        outs = run_strategy("cot", problems, 1, ctx)
        c = np.array([o.correct for o in outs], float)
        acc[d] = float(c.mean())
        count[d] = len(c)  # can be below eval_problems: a split holds few distinct short problems
        se[d] = float(c.std(ddof=1) / np.sqrt(len(c))) if len(c) > 1 else float("nan")
        chance[d] = float(np.mean([task.chance(p) for p in problems]))
        flops += sum(o.flops_inference for o in outs)
    loss, loss_flops = completion_loss(model, tokenizer, data, cfg)
    model.train(was_training)
    return {"accuracy": float(np.mean(list(acc.values()))), "accuracy_by_difficulty": acc,
            "accuracy_se_by_difficulty": se, "chance_by_difficulty": chance, "eval_problems": cfg.eval_problems,
            "eval_problems_by_difficulty": count, "eval_split": cfg.eval_split, "eval_loss": loss,
            "flops": flops + loss_flops}


def completion_loss(model: Any, tokenizer: Any, src: Any, cfg: Any) -> tuple[float | None, float]:
    """Mean loss (nats per token) on completion tokens of validation worked solutions, and its FLOPs."""
    import torch

    from scalelab.posttrain.data import collate
    from scalelab.inference.flops import flop_model

    ex = _data(src).loss_examples(tokenizer, cfg.seed)
    fm = flop_model(model)
    model.eval()
    total, count, flops = 0.0, 0, 0.0
    with torch.no_grad():
        for i in range(0, len(ex), 64):
            b = collate(ex[i:i + 64], tokenizer)
            logits = model(input_ids=b.ids, attention_mask=b.attn).logits[:, :-1]  # [B, T-1, V]
            nll = torch.nn.functional.cross_entropy(logits.float().transpose(1, 2), b.ids[:, 1:], reduction="none")
            m = b.target[:, 1:]
            total += float((nll * m).sum())
            count += int(m.sum())
            flops += sum(fm.tokens(n, 0, heads=n) for n in b.lengths)
    return (total / count if count else None), flops


def greedy_accuracy(ctx: Any, model: Any, probs: list[Any], seed: int) -> float:
    """Accuracy of greedy solutions to `probs` on the stage's task (evaluation FLOPs, outside the ledger).
    A LoRA model in training is sampled through Hugging Face's forward of its base model, where the
    adapters sit (the engine's own path reads plain weights)."""
    from scalelab.testtime.strategies import Context, Options, run_strategy

    training = model.training
    lora = hasattr(model, "get_base_model")
    eng = ctx.engine(model.get_base_model() if lora else model, backend="hf" if lora else "auto")
    outs = run_strategy("cot", probs, 1, Context(engine=eng, options=Options(seed=seed), task=ctx.data.task))
    ctx.ledger.eval_flops += sum(eng.meter.totals.values())
    model.train(training)
    return float(np.mean([o.correct for o in outs]))
