"""TRL's GRPOTrainer on the same parent, reward and settings as `scalelab posttrain rlvr`, as a
cross-check of the finding that plain GRPO does not raise greedy accuracy on the testbed
(docs/posttrain-rl.md). Prints the greedy accuracy of the parent and of TRL's child on the same
validation problems, with paired standard errors.

    python experiments/trl_grpo_check.py --parent RUN --steps 150 --prompts 64 --group 8 --lr 3e-4

TRL 1.16 on CPU needs use_cpu=True, bf16=False and no activation checkpointing (FINDINGS.md).
`per_device_train_batch_size` counts completions, so prompts x group completions per step; beta=0
(no KL term) and the group std scaling match `rlvr --kl-coef 0 --negative-weight 1`.
"""
from __future__ import annotations

import argparse
import time

import numpy as np


def greedy(model, tok, problems, task):
    from scalelab.inference.engine import Engine, SamplingParams

    eng = Engine(model, tok)
    g = eng.generate([task.prompt(p) for p in problems], 1, SamplingParams(temperature=0, max_tokens=60))
    return np.array([task.verify(p, r[0].text).correct for p, r in zip(problems, g.completions)], float)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parent", required=True)
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--group", type=int, default=8)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--data-steps", default="2,3,4")
    ap.add_argument("--eval-problems", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    import torch
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from scalelab.posttrain.data import testbed_problems
    from scalelab.posttrain.stage import open_run
    from scalelab.tasks.testbed import TestbedTask

    torch.set_num_threads(1)
    parent = open_run(args.parent)
    src, task = parent.testbed(), TestbedTask()
    steps = [int(s) for s in args.data_steps.split(",")]
    probs = testbed_problems(src, args.prompts * args.steps, steps=steps, seed=4242 + args.seed)
    by_prompt = {task.prompt(p): p for p in probs}

    def reward(prompts, completions, **_):  # the exact verifier, as rlvr's reward
        return [float(task.verify(by_prompt[p], c).correct) for p, c in zip(prompts, completions)]

    model, tok = parent.load_model(), parent.tokenizer
    conf = GRPOConfig(output_dir=".trl-grpo-check", per_device_train_batch_size=args.prompts * args.group,
                      num_generations=args.group, max_completion_length=60, learning_rate=args.lr,
                      lr_scheduler_type="constant", beta=0.0, temperature=1.0, max_steps=args.steps, use_cpu=True,
                      bf16=False, report_to="none", save_strategy="no", logging_steps=10, seed=args.seed,
                      disable_tqdm=True, activation_checkpointing=False)
    t0 = time.time()
    trainer = GRPOTrainer(model=model, reward_funcs=reward, args=conf,
                          train_dataset=Dataset.from_list([{"prompt": task.prompt(p)} for p in probs]),
                          processing_class=tok)
    trainer.train()
    wall = time.time() - t0
    rewards = [round(h["reward"], 3) for h in trainer.state.log_history if "reward" in h]
    print(f"TRL GRPO: {args.steps} steps in {wall:.0f} s; logged mean rewards {rewards}")
    base = parent.load_model(train=False)
    model.eval()
    for k in steps:
        ps = src.problems("val", args.eval_problems, steps=k, seed=4242)
        a, b = greedy(base, tok, ps, task), greedy(model, tok, ps, task)
        d = b - a
        print(f"{k} steps: parent {a.mean():.3f} -> TRL GRPO {b.mean():.3f} "
              f"({d.mean():+.3f} +- {d.std(ddof=1) / np.sqrt(len(d)):.3f}, n={len(d)})")


if __name__ == "__main__":
    main()
