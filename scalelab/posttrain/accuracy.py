"""Accuracy by difficulty and held-out loss of a post-trained model, through the test-time code.

Accuracy is the test-time `cot` strategy (one greedy worked solution, `scalelab.testtime.strategies`)
on `eval_problems` problems of each difficulty (number of steps) of the parent's testbed, scored by
the exact verifier: a solution counts only when every step and the answer are right. The same seed
gives the same problems, so a child and its parent are compared on identical questions. The chance
baseline is the probability that uniform guessing passes the verifier (`testbed.chance`).

The loss is the mean cross-entropy (nats per token) on the completions of worked solutions of
validation problems, i.e. what supervised fine-tuning minimises, measured on held-out questions.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from scalelab.errors import ConfigError

EVAL_LOSS_PROBLEMS = 16  # validation problems per difficulty for the held-out loss


def difficulties(cfg: Any, src: Any) -> list[int]:
    ds = cfg.eval_difficulties or list(range(1, src.config.max_steps + 1))
    bad = [d for d in ds if not 1 <= d <= src.config.max_steps]
    if bad:
        raise ConfigError(f"eval difficulties {bad}: the parent's testbed has 1..{src.config.max_steps} steps")
    return sorted(set(ds))


def evaluate_model(model: Any, tokenizer: Any, src: Any, cfg: Any, *, backend: str = "auto") -> dict[str, Any]:
    """accuracy (mean over difficulties), accuracy_by_difficulty, its standard errors, chance, eval_loss, flops."""
    from scalelab.inference.engine import Engine
    from scalelab.testtime.strategies import Context, Options, run_strategy
    from scalelab.tasks.testbed import TestbedTask

    was_training = model.training
    eng = Engine(model, tokenizer, max_batch=cfg.max_batch, backend=backend)
    ctx = Context(engine=eng, options=Options(seed=cfg.seed))
    task = TestbedTask()
    acc, se, chance, count, flops = {}, {}, {}, {}, 0.0
    for d in difficulties(cfg, src):
        problems = src.problems(cfg.eval_split, cfg.eval_problems, steps=d, seed=cfg.seed)
        outs = run_strategy("cot", problems, 1, ctx)
        c = np.array([o.correct for o in outs], float)
        acc[str(d)] = float(c.mean())
        count[str(d)] = len(c)  # can be below eval_problems: a split holds few distinct short problems
        se[str(d)] = float(c.std(ddof=1) / np.sqrt(len(c))) if len(c) > 1 else float("nan")
        chance[str(d)] = float(np.mean([task.chance(p) for p in problems]))
        flops += sum(o.flops_inference for o in outs)
    loss, loss_flops = completion_loss(model, tokenizer, src, cfg)
    model.train(was_training)
    return {"accuracy": float(np.mean(list(acc.values()))), "accuracy_by_difficulty": acc,
            "accuracy_se_by_difficulty": se, "chance_by_difficulty": chance, "eval_problems": cfg.eval_problems,
            "eval_problems_by_difficulty": count, "eval_split": cfg.eval_split, "eval_loss": loss,
            "flops": flops + loss_flops}


def completion_loss(model: Any, tokenizer: Any, src: Any, cfg: Any) -> tuple[float | None, float]:
    """Mean loss (nats per token) on completion tokens of validation worked solutions, and its FLOPs."""
    import torch

    from scalelab.posttrain.data import collate, testbed_examples
    from scalelab.inference.flops import flop_model

    ex = testbed_examples(src, tokenizer, EVAL_LOSS_PROBLEMS * src.config.max_steps, split="val",
                          steps=list(range(1, src.config.max_steps + 1)), seed=cfg.seed)
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


def curve_problems(src: Any, steps: list[int], per: int, seed: int) -> list[Any]:
    """The held-out validation questions a stage's learning curve is measured on."""
    return [p for k in steps for p in src.problems("val", per, steps=k, seed=seed)]


def greedy_accuracy(ctx: Any, model: Any, probs: list[Any], seed: int) -> float:
    """Exact accuracy of greedy solutions to `probs` (evaluation FLOPs, outside the ledger)."""
    from scalelab.testtime.strategies import Context, Options, run_strategy

    training = model.training
    eng = ctx.engine(model)
    outs = run_strategy("cot", probs, 1, Context(engine=eng, options=Options(seed=seed)))
    ctx.ledger.eval_flops += sum(eng.meter.totals.values())
    model.train(training)
    return float(np.mean([o.correct for o in outs]))
