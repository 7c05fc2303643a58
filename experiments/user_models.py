"""Make "a user's" models and task files: plain Hugging Face model directories (no scalelab run
record) of three sizes and three architectures, trained here on generated word problems, and the
GSM8K-, MATH- and multiple-choice-format files they are evaluated on.

    python experiments/user_models.py --out user/ [--problems 6000] [--steps 1500]

writes user/tasks/{gsm8k,math,choice}.jsonl (seeded word problems of one shape in three formats;
train/test split by a hash of the question) and user/models/{small-gpt2,medium-qwen2,large-llama}/ (config,
model.safetensors, tokenizer), plus user/models/pretraining.csv (model, N, D: parameters and
training tokens, for `scalelab exchange --pretraining`). The tokenizer is a byte-level BPE trained
on the training text; the Qwen2 model has a chat template and is trained on chat-rendered prompts,
the others on the plain "Question: ...\\nAnswer:" template, each format with its own system
text (SYSTEMS: pass the same with --system when evaluating). Each model learns all three formats
(prompt + reference solution + <eos>, loss on every token), so accuracy falls with the number of
operations instead of sitting at 0 or 1. A plain training loop stands in for however the user
trained: scalelab only ever sees the saved directories.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import random
import time
from pathlib import Path

import torch

CHAT_TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|>\n{% endif %}")
# One instruction per format, given with --system at evaluation: the three files ask questions of one shape,
# and without a cue a model trained on all three answers a GSM8K prompt in MATH's \boxed{} style.
SYSTEMS = {"gsm8k": "Solve it step by step and end with #### and the answer.",
           "math": "Solve it and put the final answer in \\boxed{}.",
           "choice": "Answer with the letter of the right option."}
MODELS = {  # name: (architecture, width, layers, heads)
    "small-gpt2": ("gpt2", 48, 2, 2),
    "medium-qwen2": ("qwen2", 96, 3, 4),
    "large-llama": ("llama", 128, 4, 4),
}


def build(arch: str, vocab: int, d: int, layers: int, heads: int, tok) -> torch.nn.Module:
    from transformers import (GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, Qwen2Config,
                              Qwen2ForCausalLM)

    ids = dict(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    if arch == "gpt2":
        return GPT2LMHeadModel(GPT2Config(vocab_size=vocab, n_embd=d, n_layer=layers, n_head=heads, n_positions=512,
                                          **ids))
    cls, cfg = {"llama": (LlamaForCausalLM, LlamaConfig), "qwen2": (Qwen2ForCausalLM, Qwen2Config)}[arch]
    return cls(cfg(vocab_size=vocab, hidden_size=d, intermediate_size=4 * d, num_hidden_layers=layers,
                   num_attention_heads=heads, num_key_value_heads=heads, max_position_embeddings=512,
                   tie_word_embeddings=True, **ids))


def texts_for(task_files: list[Path], tok, chat: bool) -> list[str]:
    from scalelab.tasks.files import load_task

    out = []
    for f in task_files:
        task = load_task(f, tokenizer=tok, chat="on" if chat else "off", system=SYSTEMS[f.stem])
        for p in task.problems("train", 10**9):
            ref = task.reference(p).strip()
            out.append(task.prompt(p) + ("" if chat else " ") + ref)
    return out


def train(model, tok, texts: list[str], steps: int, batch: int, lr: float, seed: int, log, save=None,
          save_every: int = 0) -> int:
    rng = random.Random(seed)
    enc = [tok(t, add_special_tokens=True)["input_ids"] + [tok.eos_token_id] for t in texts]
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.1, betas=(0.9, 0.95))
    tokens = 0
    model.train()
    t0 = time.time()
    for step in range(steps):
        rows = [enc[rng.randrange(len(enc))] for _ in range(batch)]
        width = max(map(len, rows))
        x = torch.full((batch, width), tok.pad_token_id)
        labels = torch.full((batch, width), -100)
        for i, r in enumerate(rows):
            x[i, :len(r)] = torch.tensor(r)
            labels[i, :len(r)] = torch.tensor(r)
        scale = min(1.0, (step + 1) / 100) * 0.5 * (1 + math.cos(math.pi * step / steps))
        for g in opt.param_groups:
            g["lr"] = lr * max(scale, 0.05)
        loss = model(input_ids=x, attention_mask=(labels != -100).long(), labels=labels).loss
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        tokens += int((labels != -100).sum())
        if step % 100 == 0 or step == steps - 1:
            log(f"  step {step}/{steps} loss {loss.item():.3f} ({time.time() - t0:.0f}s)")
        if save is not None and save_every and (step + 1) % save_every == 0 and step + 1 < steps:
            model.eval()
            save(step + 1, tokens)  # a usable model whenever the run is stopped
            model.train()
    model.eval()
    return tokens


def write_csv(models: Path) -> None:
    """pretraining.csv: every model saved so far, its parameters N and training tokens D."""
    with open(models / "pretraining.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["model", "N", "D"])
        w.writeheader()
        for d in sorted(models.glob("*/training.json")):
            w.writerow({"model": str(d.parent), **{k: json.loads(d.read_text())[k] for k in ("N", "D")}})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--problems", type=int, default=6000)
    ap.add_argument("--steps", type=int, default=2500)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--only", default=None, help="train only these models (comma-separated)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--save-every", type=int, default=250, help="save the model every K steps too")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    from scalelab.data.tokenizer import train_bpe
    from scalelab.tasks.wordproblems import generate, write_jsonl

    tasks = a.out / "tasks"
    tasks.mkdir(parents=True, exist_ok=True)
    files = [tasks / f"{fmt}.jsonl" for fmt in ("gsm8k", "math", "choice")]
    for fmt, f in zip(("gsm8k", "math", "choice"), files):
        if not f.is_file():
            write_jsonl(f, generate(fmt, a.problems, seed=0, max_ops=4))
    models = a.out / "models"
    models.mkdir(parents=True, exist_ok=True)
    corpus = [json.dumps(json.loads(line)) for f in files for line in f.read_text().splitlines()]
    tok = train_bpe(corpus + ["Question: \nAnswer: The answer is <|user|>\n<|assistant|>\n"], 512)
    rows: list[str] = []
    for name, (arch, d, layers, heads) in MODELS.items():
        if a.only and name not in a.only.split(","):
            continue
        torch.manual_seed(0)
        chat = arch == "qwen2"
        mtok = tok
        if chat:
            import copy

            mtok = copy.deepcopy(tok)
            mtok.chat_template = CHAT_TEMPLATE
        model = build(arch, len(tok), d, layers, heads, mtok)
        n = sum(p.numel() for p in model.parameters())
        print(f"{name}: {arch}, {n:,} parameters, {'chat template' if chat else 'plain prompts'}", flush=True)
        def save(steps: int, seen: int, name=name, model=model, mtok=mtok, n=n) -> None:
            model.save_pretrained(models / name)
            mtok.save_pretrained(models / name)
            (models / name / "training.json").write_text(json.dumps({"N": n, "D": seen, "steps": steps}))
            write_csv(models)

        seen = train(model, mtok, texts_for(files, mtok, chat), a.steps, a.batch, a.lr, 0,
                     lambda s: print(s, flush=True), save, a.save_every)
        save(a.steps, seen)
        rows.append(name)
    print(f"wrote {len(rows)} models under {models}")


if __name__ == "__main__":
    main()
