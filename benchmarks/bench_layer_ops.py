"""Where one decoder layer's training step goes at the ladder's CPU shapes: the pieces the Llama
function adds over nanoGPT's (RMSNorm against LayerNorm, rotary), the attention both share, and
the whole layer against nanoGPT's block.

    OMP_NUM_THREADS=1 python benchmarks/bench_layer_ops.py [--nanogpt PATH] [--sizes d2,d4,d6]

Each row is one operation at a layer's shape (B x T tokens, width d, head dim 16), forward and
backward unless it says forward, timed by the thread's CPU time; the rows alternate within each
repeat and the table gives the minimum over repeats (other processes only ever slow a repeat
down). `--nanogpt PATH`: a checkout of karpathy/nanoGPT, for its `Block` at the same width and
heads (nothing of it is part of this project). What it is for: the eager gap to nanoGPT
(benchmarks/bench_nanogpt.py) is in these rows, not in the matmuls (docs/LOG.md).
"""
from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from scalelab import model as M  # noqa: E402
from scalelab.pretrain.train import quiet_import_noise  # noqa: E402

quiet_import_noise()
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from scalelab.pretrain.fastllama import FastLlama, RMSNorm  # noqa: E402


def ops(name: str, B: int, T: int, nano) -> dict[str, object]:
    """label -> a function running one forward (+ backward) of it."""
    arch = M.parse_preset(name, 36, T)
    d, H, D = arch.width, arch.n_heads, arch.head_dim
    fast = FastLlama.from_hf(M.build_model(arch, seed=0))
    layer, rope = fast.layers[0], fast.rope[:T, None].float()
    x = torch.randn(B, T, d, requires_grad=True)
    g = torch.randn(B, T, d)
    w = torch.ones(d, requires_grad=True)
    qk = torch.randn(B, T, 2 * H, D, requires_grad=True)
    gqk = torch.randn(B, T, 2 * H, D)
    q, k, v = (torch.randn(B, H, T, D, requires_grad=True) for _ in range(3))
    gq = torch.randn(B, H, T, D)
    rot = torch.view_as_complex(rope.contiguous())

    def rotary():
        pairs = torch.view_as_complex(qk.unflatten(-1, (D // 2, 2)))
        torch.view_as_real(pairs * rot).flatten(-2).backward(gqk)

    out = {
        "RMSNorm (scalelab's)": lambda: RMSNorm.apply(x, w, 1e-6).backward(g),
        "F.rms_norm": lambda: F.rms_norm(x, [d], w, 1e-6).backward(g),
        "F.layer_norm (nanoGPT's)": lambda: F.layer_norm(x, [d], w, None, 1e-5).backward(g),
        "rotary, q and k (complex multiply)": rotary,
        "a real multiply of the same q and k": lambda: (qk * 2.0).backward(gqk),
        "attention forward (SDPA, causal)": lambda: F.scaled_dot_product_attention(q.detach(), k.detach(),
                                                                                   v.detach(), is_causal=True),
        "attention forward + backward": lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True).backward(gq),
        "FastLlama layer": lambda: layer(x, rope).backward(g),
    }
    if nano is not None:
        block = nano.Block(nano.GPTConfig(block_size=T, vocab_size=36, n_layer=1, n_head=H, n_embd=d,
                                          dropout=0.0, bias=False))
        out["nanoGPT block"] = lambda: block(x).backward(g)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nanogpt", metavar="PATH", help="a checkout of karpathy/nanoGPT (adds its Block)")
    ap.add_argument("--sizes", default="d2,d4,d6")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--calls", type=int, default=20, help="calls per timed repeat")
    ap.add_argument("--repeats", type=int, default=15)
    a = ap.parse_args()
    torch.set_num_threads(1)
    nano = None
    if a.nanogpt:
        from bench_nanogpt import load_nanogpt

        nano = load_nanogpt(a.nanogpt)
    sizes = a.sizes.split(",")
    table: dict[str, dict[str, float]] = {}
    for name in sizes:
        fns = ops(name, a.batch, a.seq_len, nano)
        for fn in fns.values():
            for _ in range(3):
                fn()
        best = {k: float("inf") for k in fns}
        for _ in range(a.repeats):
            for k, fn in fns.items():
                t0 = time.thread_time()
                for _ in range(a.calls):
                    fn()
                best[k] = min(best[k], (time.thread_time() - t0) / a.calls * 1e6)
        for k, us in best.items():
            table.setdefault(k, {})[name] = us
    print(f"# torch {torch.__version__}, 1 thread, B={a.batch} T={a.seq_len}, min over {a.repeats} repeats of "
          f"{a.calls} calls, load average {os.getloadavg()[0]:.2f}")
    print("| operation (forward + backward unless forward) | " + " | ".join(f"{s} µs" for s in sizes) + " |")
    print("|---|" + "---:|" * len(sizes))
    for k, row in table.items():
        print(f"| {k} | " + " | ".join(f"{row[s]:,.0f}" for s in sizes) + " |")


if __name__ == "__main__":
    main()
