"""Training-step speed of scalelab's decoder against nanoGPT and Hugging Face Llama, one table.

    OMP_NUM_THREADS=1 python benchmarks/bench_nanogpt.py --nanogpt PATH [--sizes d2,d4,d6] [--compile]

PATH is a checkout of karpathy/nanoGPT (the directory holding its `model.py`); its `GPT` and
`GPTConfig` are imported from there, nothing of it is part of this project. Three candidates at
each ladder size, with the ladder's depth, width and heads (`scalelab.model`, "cpu" family):

  nanogpt   nanoGPT's GPT at n_layer=depth, n_embd=width, n_head=heads, block_size=T, the same
            vocabulary, dropout 0 and bias=False (its faster setting; the default, bias=True, adds
            a bias to every Linear and LayerNorm). Its own natural shape otherwise, which differs
            from Llama's: LayerNorm instead of RMSNorm, learned position embeddings instead of
            rotary, a GELU MLP of 4 x width instead of SwiGLU of ~8/3 x width (the same ~8 width^2
            weights), an lm_head tied to the embedding.
  scalelab  `scalelab.pretrain.fastllama.FastLlama` at the ladder's shape (untied, as pretraining
            builds it).
  hf        `transformers.LlamaForCausalLM` at the same shape (sdpa attention), what pretraining
            trained before FastLlama.

One timed step is forward, cross-entropy over every position, backward, and a fused AdamW step
(the optimizer `train()` uses) with zero_grad, on a fixed batch of B x T tokens. The candidates
alternate: each repeat times `--steps` steps of every candidate in turn, after warm-up steps, so
load from other processes falls on all of them alike. Each repeat is timed twice: by the
thread's CPU time (`time.thread_time`: the one compute thread, so time lost to other processes
on a shared machine is left out) and by the wall clock. Tokens/s are B x T over the median step
time of the repeats ("best": the fastest repeat).
Parameter counts differ a little between the architectures, so the table also gives achieved
FLOP/s: exact training FLOPs per token in `scalelab.model`'s convention (matmuls of every
projection, attention over the causal context, lm_head; 3 x forward) for each architecture's own
weights. Ratios are tokens/s over nanoGPT's from the same run, median over median, by CPU time and
(in brackets) by wall clock. `--compile` adds the three candidates under `torch.compile`.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from scalelab import model as M  # noqa: E402
from scalelab.pretrain.train import quiet_import_noise  # noqa: E402

quiet_import_noise()
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from scalelab.pretrain.fastllama import FastLlama  # noqa: E402


def load_nanogpt(path: str):
    """nanoGPT's `model` module from a checkout (its GPT prints a parameter count on construction)."""
    file = Path(path) / "model.py"
    if not file.is_file():
        sys.exit(f"--nanogpt {path}: no model.py there (expected a checkout of karpathy/nanoGPT)")
    spec = importlib.util.spec_from_file_location("nanogpt_model", file)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def nanogpt_train_flops_per_token(L: int, d: int, V: int, T: int) -> float:
    """scalelab.model's exact convention for nanoGPT's weights: per layer qkv 3d^2 + proj d^2 +
    MLP 2 x 4d^2 multiply-adds, the lm_head V d, attention scores and values over (T+1)/2 keys."""
    matmul = L * 12 * d * d + V * d
    return 3 * (2 * matmul + 2 * 2 * L * d * (T + 1) / 2)


def unique_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def candidates(name: str, nano, V: int, T: int, seed: int) -> dict[str, tuple[torch.nn.Module, float]]:
    """name -> (model, exact training FLOPs per token)."""
    arch = M.parse_preset(name, V, T)
    torch.manual_seed(seed)
    with open(os.devnull, "w") as quiet, _stdout(quiet):
        gpt = nano.GPT(nano.GPTConfig(block_size=T, vocab_size=V, n_layer=arch.depth, n_head=arch.n_heads,
                                      n_embd=arch.width, dropout=0.0, bias=False))
    hf = M.build_model(arch, seed=seed, attn_implementation="sdpa")
    fast = FastLlama.from_hf(hf)
    llama_fpt = M.train_flops_per_token(arch, T)
    return {"nanogpt": (gpt, nanogpt_train_flops_per_token(arch.depth, arch.width, V, T)),
            "scalelab": (fast, llama_fpt), "hf": (hf, llama_fpt)}


class _stdout:
    def __init__(self, to):
        self.to = to

    def __enter__(self):
        self.was, sys.stdout = sys.stdout, self.to

    def __exit__(self, *exc):
        sys.stdout = self.was


def make_step(kind: str, model: torch.nn.Module, compiled: bool, x: torch.Tensor, y: torch.Tensor):
    fwd = torch.compile(model) if compiled else model
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1, fused=True)
    V = model.config.vocab_size

    def step() -> None:
        if kind == "nanogpt":
            _, loss = fwd(x, y)  # nanoGPT computes the cross-entropy itself when given targets
        else:
            logits = fwd(input_ids=x, use_cache=False).logits
            loss = F.cross_entropy(logits.reshape(-1, V), y.reshape(-1))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nanogpt", required=True, metavar="PATH", help="a checkout of karpathy/nanoGPT")
    ap.add_argument("--sizes", default="d2,d4,d6")
    ap.add_argument("--batch", type=int, default=4, help="sequences per step (the demo's)")
    ap.add_argument("--seq-len", type=int, default=128, help="tokens per sequence (the demo's)")
    ap.add_argument("--vocab", type=int, default=36, help="the arithmetic testbed's vocabulary")
    ap.add_argument("--steps", type=int, default=20, help="steps per timed repeat")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--compile", action="store_true", help="also time torch.compile'd candidates")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    nano = load_nanogpt(a.nanogpt)
    B, T, V = a.batch, a.seq_len, a.vocab
    g = torch.Generator().manual_seed(0)
    data = torch.randint(0, V, (B, T + 1), generator=g)
    x, y = data[:, :-1].contiguous(), data[:, 1:].contiguous()
    print(f"# torch {torch.__version__}, {platform.processor() or platform.machine()}, {a.threads} thread(s), "
          f"B={B} T={T} V={V}, {a.repeats} repeats x {a.steps} steps, load average {os.getloadavg()[0]:.2f}")
    print("| size | mode | model | params | tokens/s (CPU) median | best | tokens/s (wall) median | GFLOP/s (CPU) | "
          "vs nanoGPT: CPU (wall) |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|")
    for name in a.sizes.split(","):
        for compiled in ([False, True] if a.compile else [False]):
            models = candidates(name, nano, V, T, seed=0)
            steps = {k: make_step(k, m, compiled, x, y) for k, (m, _) in models.items()}
            for fn in steps.values():
                for _ in range(a.warmup):
                    fn()
            cpu: dict[str, list[float]] = {k: [] for k in steps}
            wall: dict[str, list[float]] = {k: [] for k in steps}
            for _ in range(a.repeats):
                for k, fn in steps.items():  # alternate: every repeat times each candidate once
                    c0, w0 = time.thread_time(), time.perf_counter()
                    for _ in range(a.steps):
                        fn()
                    cpu[k].append((time.thread_time() - c0) / a.steps)
                    wall[k].append((time.perf_counter() - w0) / a.steps)
            med = {k: statistics.median(v) for k, v in cpu.items()}
            wmed = {k: statistics.median(v) for k, v in wall.items()}
            for k in steps:
                model, fpt = models[k]
                ratio = f"{med['nanogpt'] / med[k]:.2f}x ({wmed['nanogpt'] / wmed[k]:.2f}x)" if k != "nanogpt" else "1"
                print(f"| {name} | {'compiled' if compiled else 'eager'} | {k} | {unique_params(model):,} | "
                      f"{B * T / med[k]:,.0f} | {B * T / min(cpu[k]):,.0f} | {B * T / wmed[k]:,.0f} | "
                      f"{B * T * fpt / med[k] / 1e9:.2f} | {ratio} |", flush=True)
    print(f"# load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
