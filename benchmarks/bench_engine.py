"""Sampling throughput: scalelab's engine against `model.generate`, side by side, same model, same
prompts, same rows per call, same sampling settings (temperature 0.8, no top-k / top-p cut).

For each n, both generate n samples for each of `--prompts` testbed questions in one call:

  generate  Hugging Face `model.generate(..., do_sample=True, num_return_sequences=n)` on the
            left-padded batch of prompts (the batched call a user would write): every prompt is
            copied n times before the prefill, the cache grows by concatenation, and finished rows
            keep being computed until the longest sample ends.
  engine    `Engine.generate(prompts, n)`: one prefill per prompt copied to its n rows, a cache
            preallocated at prompt + max_tokens, finished rows dropped once a quarter of the batch
            has finished, and (for Llama) the plain-torch decoder of `inference/backends.py`.

Tokens/s counts generated tokens up to and including each sample's <eos> (what both must
produce); wall time is the whole call. Tokens per CPU-second divide by the process's CPU time
during the call instead (one thread: the time it actually computed), which a shared machine's
load disturbs less than wall time. Runs alternate after one untimed warm-up call each, best
of `--repeats`. Without `--model`, a randomly initialised ladder model samples near-uniform
characters, so a sample ends at its first <eos> (about 1 in 36 tokens) or at `--max-tokens`; with
a trained run, samples end where the model ends its solution.

A large model from a config: `--preset gpu-d12 --vocab 32000` builds the ladder's GPT-2-small
shaped Llama (width 768, 12 layers, FFN 2048) with a 32,000-token vocabulary, untied, float32,
random weights: 134,105,856 parameters. The testbed's 36-character tokenizer is extended to the
vocabulary with filler characters (one code point per id from U+4E00), so the prompts keep their
testbed ids and every sampled id decodes. With random weights use `--ignore-eos`: `generate` gets
`min_new_tokens = max_new_tokens` (its <eos> logit is masked) and the engine runs with no <eos>
id (it may sample <eos> as an ordinary token), so every row of both samples exactly --max-tokens.

`--memory` adds the peak resident memory of each method: for each n and method a fresh Python
process builds the same model, reads its resident set (/proc/self/statm) just before one call and
every millisecond during it from a sampling thread, and reports the highest reading minus the
one before (not `ru_maxrss`: Linux carries the parent's value into a child). A fresh process
per method, with glibc's mmap threshold fixed at 128 KiB, keeps freed memory that the allocator
would otherwise hold (the other method's, the model build's) from hiding allocations. The
key/value cache each method holds at the end of the call is printed from the shapes (generate:
every row at the padded prompt + max_tokens - 1 slots; engine: its preallocation at the longest
prompt + max_tokens), and so is the size of the engine's fused copy of the decoder weights (the
Llama path builds it for every call).

    OMP_NUM_THREADS=1 python benchmarks/bench_engine.py --preset d4 --n 1,16,64
    OMP_NUM_THREADS=1 python benchmarks/bench_engine.py --model runs/<run> --n 1,16,64
    OMP_NUM_THREADS=1 python benchmarks/bench_engine.py --preset gpu-d12 --vocab 32000 --n 16,1 \\
        --prompts 4 --max-tokens 32 --repeats 3 --ignore-eos --memory
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import subprocess
import sys
import threading
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from scalelab.pretrain.train import quiet_import_noise  # noqa: E402

quiet_import_noise()
import torch  # noqa: E402

from scalelab import model as M  # noqa: E402
from scalelab.data.testbed import TestbedSource  # noqa: E402
from scalelab.inference.engine import Engine, SamplingParams  # noqa: E402


FILLER = 0x4E00  # first code point of the filler characters that widen the testbed tokenizer


def load(args):
    if args.model:
        eng = Engine.load(args.model, backend=args.backend)
        return eng.model, eng.tokenizer
    src = TestbedSource()
    tok = src.tokenizer
    vocab = args.vocab or src.vocab_size
    if vocab > src.vocab_size:  # the testbed's ids stay; ids above them decode to filler characters
        from scalelab.data.testbed import ALPHABET
        from scalelab.data.tokenizer import char_tokenizer

        tok = char_tokenizer(ALPHABET + "".join(chr(FILLER + i) for i in range(vocab - src.vocab_size)))
        assert len(tok) == vocab and tok("<bos>Q1", add_special_tokens=False) == src.tokenizer("<bos>Q1", add_special_tokens=False)
    elif vocab < src.vocab_size:
        raise SystemExit(f"--vocab {vocab}: the testbed needs at least {src.vocab_size}")
    special = {f"{k}_token_id": getattr(tok, f"{k}_token_id") for k in ("pad", "bos", "eos")}
    model = M.build_model(M.parse_preset(args.preset, vocab, 512), seed=0, special_tokens=special)
    return model.eval(), tok


def generated(ids, eos: int) -> int:
    """Tokens per row up to and including the first <eos>."""
    hit = (ids == eos).int()
    first = torch.where(hit.any(1), hit.argmax(1) + 1, torch.full_like(hit[:, 0], ids.shape[1]))
    return int(first.sum())


def run_generate(model, tok, prompts, n, args) -> tuple[int, float, float]:
    tok.padding_side = "left"
    enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    torch.manual_seed(args.seed)
    t0, c0 = time.perf_counter(), time.process_time()
    with torch.inference_mode():
        out = model.generate(**enc, do_sample=True, temperature=args.temperature, top_k=0, top_p=1.0,
                             num_return_sequences=n, max_new_tokens=args.max_tokens,
                             **({"min_new_tokens": args.max_tokens} if args.ignore_eos else {}),
                             eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    new = out[:, enc["input_ids"].shape[1]:]
    return (new.numel() if args.ignore_eos else generated(new, tok.eos_token_id)), dt, cpu


def run_engine(eng, prompts, n, args) -> tuple[int, float, float]:
    t0, c0 = time.perf_counter(), time.process_time()
    g = eng.generate(prompts, n, SamplingParams(temperature=args.temperature, max_tokens=args.max_tokens, seed=args.seed))
    return g.generated_tokens, time.perf_counter() - t0, time.process_time() - c0


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_child(model, tok, eng, prompts, args) -> None:
    """One call of `args.peak` in this (fresh) process; prints its peak memory above the baseline."""
    gc.collect()
    base, stop, peak = rss(), threading.Event(), [0]

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], rss())
            time.sleep(0.001)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    k, dt, _ = (run_generate(model, tok, prompts, args.n_one, args) if args.peak == "generate"
             else run_engine(eng, prompts, args.n_one, args))
    stop.set()
    th.join()
    peak[0] = max(peak[0], rss())
    print(json.dumps({"peak": peak[0] - base, "baseline": base, "tokens": k, "wall_s": dt}))


def measure_peak(method: str, n: int) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), *sys.argv[1:], "--n", str(n), "--peak", method]
    # A fixed mmap threshold: every block of 128 KiB or more is mapped on its own and unmapped when
    # freed, so the resident set follows the live tensors (glibc's default raises the threshold
    # after frees and keeps freed blocks, which later calls then reuse unseen).
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


def kv_theory(model, rows: int, slots: int) -> int:
    """Bytes of K and V for `rows` sequences of `slots` positions (every layer)."""
    c = model.config
    d = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    kv = getattr(c, "num_key_value_heads", None) or c.num_attention_heads
    return 2 * c.num_hidden_layers * rows * slots * kv * d * next(model.parameters()).element_size()


def fused_bytes(eng) -> int:
    """The engine's Llama path concatenates q/k/v and gate/up into new matrices per session."""
    if eng.backend_name != "llama":
        return 0
    b = eng.make_backend()
    return sum(w.numel() * w.element_size() for ws in (b.w_qkv, b.w_o, b.w_gu, b.w_down) for w in ws)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="a run or checkpoint directory (default: a random --preset model)")
    ap.add_argument("--preset", default="d4", help="a ladder preset (d4, gpu-d12, ...)")
    ap.add_argument("--vocab", type=int, default=0,
                    help="vocabulary of the random --preset model (default: the testbed's 36)")
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
    ap.add_argument("--memory", action="store_true",
                    help="also the peak resident memory of one call of each method, each in a fresh process")
    ap.add_argument("--no-greedy-check", action="store_true")
    ap.add_argument("--peak", choices=["generate", "engine"], help=argparse.SUPPRESS)  # the --memory child
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, tok = load(args)
    prompts = ["<bos>" + p.question() for p in TestbedSource().problems("test", args.prompts, steps=args.steps)]
    eng = Engine(model, tok, backend=args.backend) if args.peak != "generate" else None  # a child measures one
    if eng is not None and args.ignore_eos:
        eng.eos_id = None
    if args.peak:
        args.n_one = int(args.n)
        return peak_child(model, tok, eng, prompts, args)
    t_check = time.perf_counter()
    same = greedy_check(model, tok, eng, prompts, args) if not args.no_greedy_check else "not checked"
    t_check = time.perf_counter() - t_check
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, threads {args.threads}; "
          f"load average before: {os.getloadavg()[0]:.2f}")
    src = args.model or f"random {args.preset}"
    print(f"model: {src}, {sum(p.numel() for p in model.parameters()):,} parameters, vocabulary "
          f"{model.config.vocab_size:,}, engine backend {eng.backend_name}; {args.prompts} prompts of {args.steps} "
          f"steps, max {args.max_tokens} new tokens; greedy equals generate: {same} ({t_check:.0f} s)"
          + ("; <eos> ignored: every row samples max tokens" if args.ignore_eos else ""), flush=True)
    lens = [len(tok(p, add_special_tokens=False)["input_ids"]) for p in prompts]
    head = (f"{'n':>4}{'rows':>6}{'generate tok/s':>16}{'engine tok/s':>14}{'speed-up':>10}"
            f"{'gen tok/CPU-s':>15}{'eng tok/CPU-s':>15}{'CPU speed-up':>14}")
    if args.memory:
        head += f"{'gen peak MB':>13}{'eng peak MB':>13}{'gen KV MB':>11}{'eng KV MB':>11}"
    print(head, flush=True)
    for n in [int(x) for x in args.n.split(",")]:
        run_generate(model, tok, prompts, n, args)  # warm-up: first-call allocations are not the steady state
        run_engine(eng, prompts, n, args)
        best = {"generate": 0.0, "engine": 0.0}
        cpu = {"generate": 0.0, "engine": 0.0}  # tokens per second of this process's CPU time
        for _ in range(args.repeats):
            for name in ("generate", "engine"):
                k, dt, c = run_generate(model, tok, prompts, n, args) if name == "generate" else run_engine(eng, prompts, n, args)
                best[name], cpu[name] = max(best[name], k / dt), max(cpu[name], k / c)
        line = (f"{n:>4}{n * args.prompts:>6}{best['generate']:>16,.0f}{best['engine']:>14,.0f}"
                f"{best['engine'] / best['generate']:>9.2f}x{cpu['generate']:>15,.0f}{cpu['engine']:>15,.0f}"
                f"{cpu['engine'] / cpu['generate']:>13.2f}x")
        if args.memory:
            mem = {m: measure_peak(m, n) for m in ("generate", "engine")}
            rows, mb = n * args.prompts, 2**20
            kv_gen = kv_theory(model, rows, max(lens) + args.max_tokens - 1)
            kv_eng = kv_theory(model, rows, max(lens) + args.max_tokens)
            line += (f"{mem['generate']['peak'] / mb:>13,.0f}{mem['engine']['peak'] / mb:>13,.0f}"
                     f"{kv_gen / mb:>11,.0f}{kv_eng / mb:>11,.0f}")
            line += "\n      memory detail: " + "; ".join(
                f"{m}: peak {v['peak'] / mb:,.0f} MB above a baseline of {v['baseline'] / mb:,.0f} MB "
                f"({v['tokens']:,} tokens in {v['wall_s']:.1f} s)" for m, v in mem.items())
            line += f"; engine's fused weight copy {fused_bytes(eng) / mb:,.0f} MB"
        print(line, flush=True)
    print(f"load average after: {os.getloadavg()[0]:.2f}")


def greedy_check(model, tok, eng, prompts, args) -> bool:
    """Temperature 0: the engine's tokens equal `generate(do_sample=False)`'s on two prompts."""
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
    return same


if __name__ == "__main__":
    main()
