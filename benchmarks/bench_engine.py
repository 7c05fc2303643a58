"""Sampling throughput: scalelab's engine against `model.generate`, side by side, same model, same
prompts, same rows per call, same sampling settings (temperature 0.8, no top-k / top-p cut).

For each n, both generate n samples for each of `--prompts` testbed questions in one call:

  generate  Hugging Face `model.generate(..., do_sample=True, num_return_sequences=n)` on the
            left-padded batch of prompts (the batched call a user would write): every prompt is
            copied n times before the prefill, the cache grows by concatenation, and finished rows
            keep being computed until the longest sample ends.
  engine    `Engine.generate(prompts, n)`: one prefill per prompt copied to its n rows, a cache
            preallocated at prompt + max_tokens, finished rows dropped once a quarter of the batch
            has finished, and (for Llama) the plain-torch decoder of `testtime/backends.py`.

Tokens/s counts generated tokens up to and including each sample's <eos> (what both must
produce); wall time is the whole call. Runs alternate after one untimed warm-up call each, best
of `--repeats`. Without `--model`, a randomly initialised ladder model samples near-uniform
characters, so a sample ends at its first <eos> (about 1 in 36 tokens) or at `--max-tokens`; with
a trained run, samples end where the model ends its solution.

    OMP_NUM_THREADS=1 python benchmarks/bench_engine.py --preset d4 --n 1,16,64
    OMP_NUM_THREADS=1 python benchmarks/bench_engine.py --model runs/<run> --n 1,16,64
"""
from __future__ import annotations

import argparse
import os
import platform
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from scalelab.pretrain.train import quiet_import_noise  # noqa: E402

quiet_import_noise()
import torch  # noqa: E402

from scalelab import model as M  # noqa: E402
from scalelab.data.testbed import TestbedSource  # noqa: E402
from scalelab.inference.engine import Engine, SamplingParams  # noqa: E402


def load(args):
    if args.model:
        eng = Engine.load(args.model, backend=args.backend)
        return eng.model, eng.tokenizer
    src = TestbedSource()
    tok = src.tokenizer
    special = {f"{k}_token_id": getattr(tok, f"{k}_token_id") for k in ("pad", "bos", "eos")}
    model = M.build_model(M.parse_preset(args.preset, src.vocab_size, 512), seed=0, special_tokens=special)
    return model.eval(), tok


def generated(ids, eos: int) -> int:
    """Tokens per row up to and including the first <eos>."""
    hit = (ids == eos).int()
    first = torch.where(hit.any(1), hit.argmax(1) + 1, torch.full_like(hit[:, 0], ids.shape[1]))
    return int(first.sum())


def run_generate(model, tok, prompts, n, args) -> tuple[int, float]:
    tok.padding_side = "left"
    enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    torch.manual_seed(args.seed)
    t0 = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(**enc, do_sample=True, temperature=args.temperature, top_k=0, top_p=1.0,
                             num_return_sequences=n, max_new_tokens=args.max_tokens,
                             **({"min_new_tokens": args.max_tokens} if args.ignore_eos else {}),
                             eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    dt = time.perf_counter() - t0
    new = out[:, enc["input_ids"].shape[1]:]
    return (new.numel() if args.ignore_eos else generated(new, tok.eos_token_id)), dt


def run_engine(eng, prompts, n, args) -> tuple[int, float]:
    t0 = time.perf_counter()
    g = eng.generate(prompts, n, SamplingParams(temperature=args.temperature, max_tokens=args.max_tokens, seed=args.seed))
    return g.generated_tokens, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="a run or checkpoint directory (default: a random --preset model)")
    ap.add_argument("--preset", default="d4")
    ap.add_argument("--backend", default="auto", choices=["auto", "hf", "llama"])
    ap.add_argument("--n", default="1,16,64")
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--steps", type=int, default=4, help="testbed steps per question")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--temperature", type=float, default=0.8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ignore-eos", action="store_true",
                    help="both sample exactly --max-tokens per row (isolates the per-token cost)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, tok = load(args)
    eng = Engine(model, tok, backend=args.backend)
    if args.ignore_eos:
        eng.eos_id = None
    prompts = ["<bos>" + p.question() for p in TestbedSource().problems("test", args.prompts, steps=args.steps)]
    eos = eng.eos_id
    eng.eos_id = tok.eos_token_id  # the equality check runs with <eos> as generate does
    greedy = eng.generate(prompts[:2], 1, SamplingParams(temperature=0, max_tokens=args.max_tokens))
    tok.padding_side = "left"
    same = all(
        model.generate(**tok([p], return_tensors="pt", add_special_tokens=False), do_sample=False,
                       max_new_tokens=args.max_tokens, eos_token_id=tok.eos_token_id,
                       pad_token_id=tok.pad_token_id)[0, len(tok(p, add_special_tokens=False)["input_ids"]):].tolist()
        == greedy.completions[i][0].token_ids for i, p in enumerate(prompts[:2]))
    eng.eos_id = eos
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, threads {args.threads}; "
          f"load average before: {os.getloadavg()[0]:.2f}")
    src = args.model or f"random {args.preset}"
    print(f"model: {src}, {sum(p.numel() for p in model.parameters()):,} parameters, engine backend "
          f"{eng.backend_name}; {args.prompts} prompts of {args.steps} steps, max {args.max_tokens} new tokens; "
          f"greedy equals generate: {same}" + ("; <eos> ignored: every row samples max tokens" if args.ignore_eos else ""))
    print(f"{'n':>4}{'rows':>6}{'generate tok/s':>16}{'engine tok/s':>14}{'speed-up':>10}")
    for n in [int(x) for x in args.n.split(",")]:
        run_generate(model, tok, prompts, n, args)  # warm-up: first-call allocations are not the steady state
        run_engine(eng, prompts, n, args)
        best = {"generate": 0.0, "engine": 0.0}
        for _ in range(args.repeats):
            for name in ("generate", "engine"):
                k, dt = run_generate(model, tok, prompts, n, args) if name == "generate" else run_engine(eng, prompts, n, args)
                best[name] = max(best[name], k / dt)
        print(f"{n:>4}{n * args.prompts:>6}{best['generate']:>16,.0f}{best['engine']:>14,.0f}"
              f"{best['engine'] / best['generate']:>9.2f}x", flush=True)
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
