"""Tokens per second of the demo's pretraining stage, and where its time goes.

Runs the pretraining stage of `scalelab demo --quick` (or `--preset default`) into a fresh
temporary folder, one worker, one torch thread, and prints for each run: model, tokens, the
loop's wall time (`record.wall_s`), the CPU time of the whole `train()` call (this process, the
batch-making thread included), tokens/s by each, and the seconds spent in held-out evaluation,
checkpoint writes, metrics rows and batch generation (timed by wrapping those functions), so they
can be set against the bare step speed of `benchmarks/bench_nanogpt.py` at the same shape
(B=4, T=128). CPU time is the fairer clock on a shared machine.

    OMP_NUM_THREADS=1 python benchmarks/bench_demo_pretrain.py [--preset quick]
"""
from __future__ import annotations

import argparse
import collections
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from scalelab.pretrain.train import quiet_import_noise  # noqa: E402

quiet_import_noise()

from scalelab import checkpoint  # noqa: E402
from scalelab.pipeline import demo  # noqa: E402
from scalelab.pretrain import sweep, train as T  # noqa: E402
from scalelab.records import read_record  # noqa: E402

SPENT: dict[str, float] = collections.defaultdict(float)
RUN_CPU: dict[str, float] = {}


def timed_train(inner):
    def wrapper(*a, **k):
        c0 = time.process_time()
        rec = inner(*a, **k)
        RUN_CPU[rec.run_id] = time.process_time() - c0
        return rec
    return wrapper


def timed_source(inner):
    """Batch generation runs on the loop's helper thread: its own CPU time is what it costs."""
    def wrapper(*a, **k):
        src = inner(*a, **k)
        if getattr(src, "_timed", False):  # a cached source is wrapped once
            return src
        make, src._timed = src.train_batch, True

        def train_batch(*a, **k):
            c0 = time.thread_time()
            try:
                return make(*a, **k)
            finally:
                SPENT["batches (helper thread CPU)"] += time.thread_time() - c0
        src.train_batch = train_batch
        return src
    return wrapper


def timed(owner, name: str, label: str) -> None:
    inner = getattr(owner, name)

    def wrapper(*a, **k):
        t0 = time.perf_counter()
        try:
            return inner(*a, **k)
        finally:
            SPENT[label] += time.perf_counter() - t0
    setattr(owner, name, wrapper)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="quick", choices=list(demo.PRESETS))
    a = ap.parse_args()
    timed(T, "evaluate", "eval")
    timed(checkpoint, "save", "checkpoint")
    timed(T, "append_metrics", "metrics rows")
    timed(T, "write_record", "records")
    sweep.train = timed_train(sweep.train)
    T.resolve_source = timed_source(T.resolve_source)
    with tempfile.TemporaryDirectory() as tmp:
        pipe = demo._Pipeline(demo.DemoConfig.preset(a.preset), Path(tmp), 1, 1, demo.Quiet())
        w0, c0 = time.perf_counter(), time.process_time()
        line = pipe.pretrain()
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        recs = sorted((read_record(p) for p in (Path(tmp) / "runs" / "pretrain").iterdir() if p.is_dir()),
                      key=lambda r: (r.n_params, r.tokens))
    print(f"# {a.preset} demo pretraining: {line}; stage {wall:.1f} s wall, {cpu:.1f} s CPU; "
          f"load average {os.getloadavg()[0]:.2f}")
    print("| run | model | batch x seq | tokens | loop wall s | tokens/s (wall) | train() CPU s | tokens/s (CPU) |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for r in recs:
        h, cpu_s = r.hparams, RUN_CPU.get(r.run_id, float("nan"))
        print(f"| {r.run_id} | {r.config['model']} | {h['batch_size']} x {r.config['seq_len']} | {r.tokens:,} | "
              f"{r.wall_s:.2f} | {r.tokens / r.wall_s:,.0f} | {cpu_s:.2f} | {r.tokens / cpu_s:,.0f} |")
    tokens = sum(r.tokens for r in recs)
    print(f"# all runs: {tokens:,} tokens, {tokens / wall:,.0f} tokens/s over the stage's wall time, "
          f"{tokens / sum(r.wall_s for r in recs):,.0f} over the loops' wall time")
    print("# inside the loops: " + ", ".join(f"{k} {v:.2f} s" for k, v in SPENT.items()))


if __name__ == "__main__":
    main()
