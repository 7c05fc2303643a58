"""The demo's presets: what `scalelab demo` and `scalelab demo --quick` train and measure, as
`DemoConfig` fields (`scalelab.pipeline.demo`). Data only; the measurements behind each choice
are in docs/LOG.md."""
from __future__ import annotations

from typing import Any

# The testbed of docs/posttrain.md and docs/planning.md (at most 4 steps, moduli up to 10, 128-token
# windows): d2-d3 models reach 0.2-0.7 greedy accuracy on 0.5M-5M tokens. Depth 1 brackets the two
# smallest budgets, where d2 is loss-optimal (docs/planning.md's quick sweep on this testbed).
TESTBED = {"seq_len": 128, "eval_tokens": 16_384, "source_options": {"max_steps": 4, "max_modulus": 10}}
# The default adds memorised facts (half the documents: 20,000 keys at Zipf 1.2, 3-digit values;
# `tasks.testbed.FACT_CHAR`): on arithmetic alone the loss is set by tokens and the optimum stayed at
# d2-d3 from 1e11 to 3e12, while with facts at 1e12 FLOPs a 38k model beat 25k by 0.013-0.020 nats
# over three seeds and at 3e11 a 13k model beat 25k by 0.013 (docs/LOG.md, 2026-12-03).
FACT_BAND = {**TESTBED, "source_options": {**TESTBED["source_options"], "p_facts": 0.5, "facts": 20_000,
                                           "facts_zipf": 1.2, "fact_values": 1000}}
PRESETS: dict[str, dict[str, Any]] = {
    "default": {
        # 500 problems per difficulty: at 100 a post-training gain of 2-3 points (rlvr's on this
        # ladder, docs/posttrain-rl.md) is inside the noise. Sizes: a finer ladder (narrow rungs
        # below d2, deeper width-32 rungs between d2 and d3); each budget's three sizes centred where
        # the probes put its optimum, since the optimal tokens per parameter fall fast with C here.
        # 6e11 instead of 1e11 put its optimum at the largest of its sizes and gave a ladder whose
        # greedy accuracy falls at 6e11 (tokens, not loss, set the arithmetic): LOG, 2026-12-03.
        # Seeds: at 1e11 one seed moves a run by 0.05-0.11 nats, more than the sizes differ, so that
        # budget trains each size three times and its optimum is the best mean (d2w16, with d1 below
        # it); at 3e11 three seeds of d4w16 agree within 0.008 and it led on the mean (LOG, "seeds").
        "name": "default", "budgets": [1e11, 3e11, 1e12, 2e12], "train": FACT_BAND, "eval_problems": 500,
        "sizes": ["d1", "d2w16", "d3w16", "d4w16", "d2", "d3w32", "d4w32", "d3", "d4w48"], "seeds": [3, 1, 1, 1],
        "tokens_per_param": [300, 170, 86, 70],
        "posttrain": {
            # 8,000 examples clear the evaluation's noise where 2,000 did not, and 3x the default lr
            # (0.1 x pretraining) fine-tuned a d3 better (docs/posttrain.md)
            "sft": {"examples": 8000, "lr": 0.003, "curve_points": 5},
            # the recipe that raised greedy accuracy over an SFT parent (docs/posttrain-rl.md): 64
            # questions x 8 samples a batch, only better-than-average samples reinforced, no KL term
            "rlvr": {"steps": 150, "prompts_per_step": 64, "kl_coef": 0.0, "negative_weight": 0.0,
                     "data_steps": [2, 3, 4], "eval_every": 30},
            "distill": {"examples": 4000, "curve_points": 5},
            "prune": {"method": "wanda", "sparsity": 0.5, "recover_tokens": 200_000},
            "quantize": {"method": "int8-weight"}}},
    "quick": {  # a smoke test of every stage in under 3 minutes on 2 cores (CI)
        # lr 0.01 and batch 4 (docs/planning.md's ladder recipe) learn a d2 in fewer steps than the rule
        "name": "quick", "smoke_test": True, "budgets": [3e10, 8e10, 2e11], "min_depth": 2,
        "max_tokens_per_param": None, "train": {**TESTBED, "lr": 0.01, "batch_size": 4},
        "n": [1, 2, 4], "difficulties": [1, 2], "problems": 20, "eval_problems": 20, "bootstrap": 20,
        "posttrain": {
            "sft": {"examples": 400, "lr": 0.003, "curve_points": 4, "curve_problems": 4},
            "rlvr": {"steps": 3, "prompts_per_step": 4, "group_size": 4, "eval_every": 0, "curve_problems": 8,
                     "kl_coef": 0.0, "negative_weight": 0.0},
            "distill": {"examples": 200},
            "prune": {"method": "wanda", "sparsity": 0.5, "recover_tokens": 20_000},
            "quantize": {"method": "int8-weight", "repeats": 1}}},
}
