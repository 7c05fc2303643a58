"""Training throughput: scalelab's `train()` against a minimal PyTorch loop, side by side.

For each ladder size both loops train the same model (same init, same batches of B x T tokens,
AdamW) for the same number of steps, alternating, best of `--repeats`:

  reference  forward, cross-entropy, backward, AdamW step; nothing else
  scalelab   `train(config)`: the schedule, gradient clipping, the batch prefetch thread, a
             metrics row every step, checkpoints at their default cadence (10% of the run);
             measured over the steps between evaluations (loop), and over the whole call with
             the evaluations and the final checkpoint (end to end)

Achieved FLOP/s uses the exact training count of `scalelab.model` (causal attention, lm_head).
`--compile` adds a `torch.compile` variant of both loops.

    OMP_NUM_THREADS=1 python benchmarks/bench_train.py --sizes d2,d4,d6 --threads 1 [--compile]
"""
from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import tempfile
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

from scalelab import model as M  # noqa: E402
from scalelab.pretrain.train import TrainConfig, quiet_import_noise, train  # noqa: E402

quiet_import_noise()
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

B, T, VOCAB = 8, 256, 64
STEPS = {"d2": 300, "d3": 200, "d4": 120, "d5": 80, "d6": 60, "d7": 40, "d8": 30}


class FixedBatches:
    """The same few batches for both loops, so data generation is not part of the comparison."""

    name = "fixed-batches"
    unique_tokens = None
    entropy_floor = None
    eval_bytes_per_token = 1.0
    vocab_size = VOCAB

    def __init__(self, n: int = 16):
        rng = np.random.default_rng(0)
        self.batches = [rng.integers(0, VOCAB, size=(B, T + 1)) for _ in range(n)]

    @property
    def tokenizer(self):
        return None

    def train_batch(self, step, batch_size, seq_len, seed):
        return self.batches[step % len(self.batches)]

    def eval_batches(self, batch_size, seq_len):
        return [(self.batches[0][:, : seq_len + 1], np.ones((B, seq_len), dtype=np.float32))]

    def describe(self):
        return {"name": self.name}


def reference(name: str, steps: int, compiled: bool) -> float:
    """Seconds per step of the minimal loop (after 3 warm-up steps)."""
    arch = M.parse_preset(name, VOCAB, T)
    model = M.build_model(arch, seed=0)
    fwd = torch.compile(model) if compiled else model
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1)
    data = FixedBatches()

    def step(i: int) -> None:
        x = torch.from_numpy(data.batches[i % len(data.batches)])
        logits = fwd(input_ids=x[:, :-1], use_cache=False).logits
        F.cross_entropy(logits.reshape(-1, VOCAB), x[:, 1:].reshape(-1)).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for i in range(3):
        step(i)
    t = time.perf_counter()
    for i in range(steps):
        step(i)
    return (time.perf_counter() - t) / steps


def scalelab_loop(name: str, steps: int, compiled: bool) -> tuple[float, float]:
    """(seconds per step over the steady steps, seconds per step for the whole train() call)."""
    cfg = TrainConfig.build(model=name, tokens=(steps + 3) * B * T, batch_size=B, seq_len=T, lr=1e-3,
                            source="bench", log_every=1, eval_every=10**9, eval_tokens=B * T,
                            warmup_frac=0.0, compile=compiled, threads=torch.get_num_threads())
    with tempfile.TemporaryDirectory() as d:
        rec = train(cfg, d, source=FixedBatches())
        from scalelab.records import read_metrics

        rows = {r["step"]: r for r in read_metrics(os.path.join(d, rec.run_id))}
    total = rec.hparams["steps"]
    loop = (rows[total - 1]["wall_s"] - rows[3]["wall_s"]) / (total - 4)  # steps 4 .. total-1
    return loop, rec.wall_s / total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="d2,d4,d6")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--compile", action="store_true", help="also time torch.compile variants")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    print(f"# bench_train: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"torch {torch.__version__}, {a.threads} thread(s), batch {B}x{T}, vocab {VOCAB}, "
          f"load before {os.getloadavg()[0]:.2f}")
    print("| model | N non-emb | FLOP/token (exact) | reference tok/s | scalelab loop tok/s | ratio | "
          "scalelab end-to-end tok/s | achieved GFLOP/s (loop) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    variants = [False, True] if a.compile else [False]
    for name in a.sizes.split(","):
        arch = M.parse_preset(name, VOCAB, T)
        fpt = M.train_flops_per_token(arch, T)
        steps = STEPS.get(name, 30)
        for compiled in variants:
            ref, loop, e2e = [], [], []
            for _ in range(a.repeats):  # alternate so that a change in machine load hits both
                ref.append(reference(name, steps, compiled))
                lo, en = scalelab_loop(name, steps, compiled)
                loop.append(lo)
                e2e.append(en)
            r, s, e = min(ref), min(loop), min(e2e)
            tag = name + (" (compiled)" if compiled else "")
            print(f"| {tag} | {M.param_counts(arch).nonembedding:,} | {fpt:,.0f} | {B * T / r:,.0f} | "
                  f"{B * T / s:,.0f} | {r / s:.3f} | {B * T / e:,.0f} | {B * T / s * fpt / 1e9:.1f} |")
            spread = statistics.pstdev([B * T / x for x in loop]) / (B * T / s)
            print(f"<!-- {tag}: reference s/step {ref}, scalelab s/step {loop}, spread {spread:.1%} -->")
    print(f"load after {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
