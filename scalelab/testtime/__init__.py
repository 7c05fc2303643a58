"""Test-time scaling: spend more compute per question and measure what it buys, in FLOPs.

    engine.py      batched sampling over a preallocated KV cache, prefill once per prompt, FLOP meter
    session.py     rows sharing one cache between calls (step-by-step search), token choice
    backends.py    the forward passes (plain-torch Llama path; any Hugging Face causal LM)
    flops.py       FLOPs per forward (model.py's convention) and the meter
    verifiers.py   the exact verifier, outcome and process reward models
    rewardtrain.py Monte-Carlo step labels (Math-Shepherd) and reward-model training runs
    strategies.py  the strategy registry: one signature for greedy, CoT, voting, best-of-n, search
    search.py      PRM beam search, DVTS and sequential revision
    estimators.py  unbiased pass@k, maj@k and best-of-k from one large-n sample pool
    evaluate.py    runs strategies over testbed difficulties and writes one record per point
    allocate.py    difficulty prediction from answer agreement and adaptive compute allocation

Command line: `scalelab testtime --help`; guide: docs/testtime.md.
"""
