"""The sampling engine: batched generation over a preallocated KV cache, with a FLOP meter.

    from scalelab.inference.engine import Engine, SamplingParams
    eng = Engine.load("runs/d4-3M-b3d17d80")                  # a run dir or any HF checkpoint dir
    gen = eng.generate(["<bos>Q7:3 a+4\\n"], n=16, params=SamplingParams(temperature=0.8, seed=1))
    gen.completions[0][3].text, gen.flops_prefill, gen.flops_decode

How it works (nanochat's engine is the model: STYLE.md item 8):
- Each prompt is prefilled once; its cache rows are then copied to its n samples (a prompt of P
  tokens costs P token-forwards, not n*P). Prompts of different lengths are left-padded.
- The cache is allocated once per batch at prompt + max_tokens slots and written in place.
- A batch holds at most `max_batch` rows; rows that finish are dropped from the batch once a
  quarter of it has finished (their slots stop costing anything).
- Temperature 0 is argmax and matches `model.generate(do_sample=False)` token for token
  (tests/test_engine.py). Otherwise temperature, then top-k, then top-p (nucleus: the smallest
  set of tokens whose probability reaches p; Holtzman et al. 2020), then a draw from a
  `torch.Generator` seeded by `SamplingParams.seed`: the same call gives the same samples.
- Stop strings end a sample when its generated text ends with one (the text keeps it); <eos>
  ends a sample and is not in the text.

Sessions (`Engine.session`) keep rows alive between calls for step-by-step search: generate a
line, score it, keep or duplicate rows (`Session.select`), generate the next line; the cache is
never recomputed. FLOPs are counted with `scalelab.inference.flops` (model.py's exact convention).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from scalelab.anatomy import shape
from scalelab.errors import ConfigError
from scalelab.inference.flops import FlopMeter, FlopModel, flop_model
from scalelab.inference.loading import load_causal_lm
from scalelab.inference.session import Session, choose_tokens


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0: no top-k cut
    max_tokens: int = 256
    stop: tuple[str, ...] = ()
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.temperature >= 0:
            raise ConfigError(f"temperature={self.temperature}: must be >= 0")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"top_p={self.top_p}: must be in (0, 1]")
        if self.top_k < 0:
            raise ConfigError(f"top_k={self.top_k}: must be >= 0")
        if self.max_tokens < 1:
            raise ConfigError(f"max_tokens={self.max_tokens}: must be >= 1")
        if any(not s for s in self.stop):
            raise ConfigError("stop strings must not be empty")


@dataclass
class Completion:
    text: str                 # generated text: <eos> left out, a stop string kept
    token_ids: list[int]      # every sampled token, <eos> or the stop token included
    finish_reason: str        # "eos" | "stop" | "length"


@dataclass
class Generation:
    completions: list[list[Completion]]  # [prompt][sample]
    prompt_tokens: list[int]
    flops_prefill: list[float]            # per prompt (shared by its samples)
    flops_decode: list[list[float]]       # per prompt, per sample
    wall_s: float = 0.0
    max_tokens: int = 0                   # after clamping to the context window
    backend: str = ""

    @property
    def flops(self) -> float:
        return float(sum(self.flops_prefill) + sum(map(sum, self.flops_decode)))

    @property
    def generated_tokens(self) -> int:
        return sum(len(c.token_ids) for row in self.completions for c in row)

    def texts(self) -> list[list[str]]:
        return [[c.text for c in row] for row in self.completions]


class Engine:
    """A causal LM and its tokenizer, ready to sample; see the module docstring."""

    def __init__(self, model: Any, tokenizer: Any, *, max_batch: int = 1024, backend: str = "auto",
                 meter: FlopMeter | None = None, phase: str = "inference", add_special_tokens: bool = False,
                 name: str = ""):
        import torch

        from scalelab.inference.backends import make_backend

        if max_batch < 1:
            raise ConfigError(f"max_batch={max_batch}: must be >= 1")
        # Every forward runs in torch.inference_mode (Session), so the weights' grad flags are left
        # as they are: an RL policy is sampled and trained in turn without re-enabling them.
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.max_batch = max_batch
        self.backend_kind = backend
        self.make_backend = lambda: make_backend(self.model, backend)
        self.backend_name = self.make_backend().name
        self.flop_model: FlopModel = flop_model(model)
        self.meter = meter if meter is not None else FlopMeter()
        self.phase = phase
        self.add_special_tokens = add_special_tokens
        self.name = name
        self.device = next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype
        self.eos_id = tokenizer.eos_token_id
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (self.eos_id or 0)
        self.context = int(getattr(model.config, "max_position_embeddings", 0) or 0) or 10**9
        head = model.get_output_embeddings()
        self.head_weight = head.weight  # [V, d]
        self.head_bias = getattr(head, "bias", None)
        self.softcap = getattr(model.config, "final_logit_softcapping", None)
        self._token_text: list[str] | None = None
        self._torch = torch

    @classmethod
    def load(cls, path: str | Path, *, device: str = "cpu", **kw: Any) -> "Engine":
        model, tok, where = load_causal_lm(path, device=device)
        return cls(model, tok, name=str(where), **kw)

    # ---- text <-> tokens ---------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=self.add_special_tokens)["input_ids"])

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def token_text(self) -> list[str]:
        """Each vocabulary id decoded alone (for stop strings), computed once."""
        if self._token_text is None:
            self._token_text = [self.decode([i]) for i in range(self.head_weight.shape[0])]
        return self._token_text

    def logits(self, hidden: Any) -> Any:
        out = hidden @ self.head_weight.t()
        if self.head_bias is not None:
            out = out + self.head_bias
        if self.softcap:
            out = self._torch.tanh(out / self.softcap) * self.softcap
        return out

    def check_prompt(self, ids: list[int], what: str = "prompt") -> None:
        if not ids:
            raise ConfigError(f"{what} is empty")
        if len(ids) >= self.context:
            raise ConfigError(f"{what} has {len(ids)} tokens but the model's context is {self.context} "
                              f"(max_position_embeddings): nothing can be generated after it")

    def session(self, rows: int, capacity: int) -> Session:
        self.check_memory(rows, capacity)
        return Session(self, rows, capacity)

    def kv_bytes(self, rows: int, tokens: int) -> int:
        """Bytes of the key/value cache for `rows` sequences of `tokens` (every layer, K and V)."""
        s = shape(self.model.config)
        return 2 * s.layers * rows * tokens * s.kv_heads * s.head_dim * self._torch.finfo(self.dtype).bits // 8

    def check_memory(self, rows: int, tokens: int) -> None:
        """Refuse, before anything is allocated, a cache that would not fit in the memory free now."""
        if self.device.type != "cpu":  # an accelerator's memory is its own; torch reports running out there
            return
        need, free = self.kv_bytes(rows, tokens), available_memory()
        if free is not None and need > 0.8 * free:
            raise ConfigError(f"sampling {rows} rows of up to {tokens} tokens needs a {need / 2**30:.1f} GiB "
                              f"key/value cache, and {free / 2**30:.1f} GiB of memory is free: lower --max-batch "
                              f"(now {self.max_batch}), n, or --max-new-tokens")

    # ---- one-shot generation -----------------------------------------------------------------
    def generate(self, prompts: Sequence[str] | Sequence[list[int]], n: int = 1,
                 params: SamplingParams = SamplingParams(), *,
                 progress: Callable[[int, int], None] | None = None) -> Generation:
        """`n` samples for each prompt (strings, or token id lists used as they are)."""
        torch = self._torch
        if not isinstance(n, int) or n < 1:
            raise ConfigError(f"n={n}: the number of samples must be a positive integer")
        if not prompts:
            raise ConfigError("no prompts given")
        t0 = time.perf_counter()
        ids = [list(p) if not isinstance(p, str) else self.encode(p) for p in prompts]
        for i, p in enumerate(ids):
            self.check_prompt(p, f"prompt {i}")
        longest = max(map(len, ids))
        max_new = min(params.max_tokens, self.context - longest)
        gen = torch.Generator(device=self.device).manual_seed(params.seed)
        comps: list[list[Completion | None]] = [[None] * n for _ in ids]
        f_pre = [0.0] * len(ids)
        f_dec = [[0.0] * n for _ in ids]
        fm = self.flop_model
        done_rows = 0
        for chunk in _chunks(len(ids), n, self.max_batch):  # [(prompt index, first sample, count)]
            uniq = sorted({p for p, _, _ in chunk})
            cap = max(len(ids[p]) for p in uniq) + max_new
            self.check_memory(sum(c for _, _, c in chunk), cap)  # the rows the prompts are copied into
            sess = Session(self, len(uniq), cap)
            with torch.inference_mode():
                sess.feed([ids[p] for p in uniq])
                where = {p: i for i, p in enumerate(uniq)}
                sess.select(torch.tensor([where[p] for p, _, c in chunk for _ in range(c)], device=self.device))
                outs = sess.decode(params, max_new, gen, compact=True)
            for p in uniq:
                f_pre[p] += fm.prefill(len(ids[p]))
            r = 0
            for p, s0, c in chunk:
                for s in range(s0, s0 + c):
                    toks, reason = outs[r]
                    comps[p][s] = self.completion(toks, reason, params.stop)
                    f_dec[p][s] = fm.decode_run(len(ids[p]), len(toks))
                    r += 1
            done_rows += r
            if progress is not None:
                progress(done_rows, len(ids) * n)
        result = Generation(completions=comps, prompt_tokens=[len(p) for p in ids], flops_prefill=f_pre,  # type: ignore[arg-type]
                            flops_decode=f_dec, wall_s=time.perf_counter() - t0, max_tokens=max_new,
                            backend=self.backend_name)
        self.meter.add(self.phase, result.flops, prompt_tokens=sum(result.prompt_tokens),
                       generated_tokens=result.generated_tokens, kind="generate", n=n, prompts=len(ids),
                       wall_s=result.wall_s)
        return result

    def completion(self, toks: list[int], reason: str, stop: tuple[str, ...]) -> Completion:
        body = toks[:-1] if reason == "eos" else toks
        text = self.decode(body)
        if reason == "stop":
            cut = min((text.find(s) + len(s) for s in stop if s in text), default=len(text))
            text = text[:cut]  # a multi-character token may run past the stop string
        return Completion(text=text, token_ids=list(toks), finish_reason=reason)

    # used by Session.decode
    def choose(self, logits: Any, params: SamplingParams, gen: Any) -> Any:
        return choose_tokens(logits, params.temperature, params.top_k, params.top_p, gen)


def _chunks(n_prompts: int, n: int, max_batch: int) -> list[list[tuple[int, int, int]]]:
    """Rows grouped into batches of at most max_batch: whole prompts when n fits, else a prompt's
    samples split across batches (its prompt is then prefilled once per batch)."""
    out: list[list[tuple[int, int, int]]] = []
    if n >= max_batch:
        for p in range(n_prompts):
            for s in range(0, n, max_batch):
                out.append([(p, s, min(max_batch, n - s))])
        return out
    per = max_batch // n
    for p0 in range(0, n_prompts, per):
        out.append([(p, 0, n) for p in range(p0, min(p0 + per, n_prompts))])
    return out


def available_memory() -> int | None:
    """Bytes of memory free for new allocations (Linux's MemAvailable), or None where unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None
