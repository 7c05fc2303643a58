"""A session: rows of token sequences that share one preallocated KV cache, kept between calls.

Rows advance together on one slot axis. A block of new tokens is right-aligned (a prompt batch is
therefore left-padded) and a row with fewer new tokens than others leaves masked holes; positions
count each row's real tokens only, so holes change nothing but the slot index. Rows can be
dropped, reordered or duplicated at any time (`select`): that is how n samples share one prompt
prefill, how finished rows leave a batch, and how beam search keeps and copies beams.

The last token a row sampled is "pending": it has no key/value yet. `decode` feeds pending tokens
first, so a session can alternate between generating and being fed forced text.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch

NEG = -1e30  # additive mask value: finite, so a query with no visible key gets a uniform (ignored) row


def choose_tokens(logits: torch.Tensor, temperature: float, top_k: int, top_p: float,
                  gen: torch.Generator | None) -> torch.Tensor:
    """Next token per row [B] from logits [B, V]: argmax at temperature 0, else a draw after the
    temperature, top-k and top-p cuts (a token is kept while the mass before it is < top_p)."""
    if temperature == 0:
        return logits.argmax(-1)
    x = logits.float() / temperature
    if 0 < top_k < x.shape[-1]:
        kth = torch.topk(x, top_k, dim=-1).values[:, -1:]  # [B, 1]
        x = x.masked_fill(x < kth, float("-inf"))
    if top_p < 1.0:
        srt, idx = torch.sort(x, dim=-1, descending=True)
        p = torch.softmax(srt, -1)
        drop = (torch.cumsum(p, -1) - p) >= top_p  # [B, V] in sorted order; the first token always stays
        x = x.scatter(-1, idx, srt.masked_fill(drop, float("-inf")))
    return torch.multinomial(torch.softmax(x, -1), 1, generator=gen)[:, 0]


class Session:
    """See the module docstring. Every method runs in `torch.inference_mode`: the session's tensors
    are inference tensors, changed in place only by its own methods."""

    @torch.inference_mode()
    def __init__(self, engine: Any, rows: int, capacity: int, *, metered: bool = False):
        self.eng = engine
        self.backend = engine.make_backend()
        self.device, self.dtype = engine.device, engine.dtype
        self.B, self.cap, self.t = rows, max(1, capacity), 0
        self.backend.alloc(rows, self.cap, self.device, self.dtype)
        self.mask = torch.zeros(rows, self.cap, dtype=torch.bool, device=self.device)  # real slots
        self.bias = torch.full((rows, self.cap), NEG, dtype=self.dtype, device=self.device)
        self.npos = torch.zeros(rows, dtype=torch.long, device=self.device)  # real tokens per row
        self.last_hidden = torch.zeros(rows, engine.head_weight.shape[1], dtype=self.dtype, device=self.device)
        self.pending = torch.full((rows,), -1, dtype=torch.long, device=self.device)
        self.flops = 0.0
        self.row_flops = torch.zeros(rows, dtype=torch.float64)  # per row since the last take_row_flops()
        self.metered = metered

    # ---- bookkeeping ---------------------------------------------------------------------------
    @torch.inference_mode()
    def _ensure(self, slots: int) -> None:
        if slots <= self.cap:
            return
        cap = max(slots, 2 * self.cap)
        self.backend.grow(cap)
        grow = lambda x, fill: torch.cat([x, torch.full((self.B, cap - self.cap), fill, dtype=x.dtype,  # noqa: E731
                                                        device=self.device)], 1)
        self.mask, self.bias, self.cap = grow(self.mask, False), grow(self.bias, NEG), cap

    def _count(self, flops: float, **row: Any) -> None:
        self.flops += flops
        if self.metered:
            self.eng.meter.add(self.eng.phase, flops, **row)

    @torch.inference_mode()
    def select(self, index: torch.Tensor) -> None:
        """Keep rows `index` (in that order; repeats duplicate a row with its whole cache)."""
        index = index.to(self.device)
        self.backend.select(index)
        for name in ("mask", "bias", "npos", "last_hidden", "pending"):
            setattr(self, name, getattr(self, name).index_select(0, index))
        self.row_flops = self.row_flops.index_select(0, index.cpu()) * 0  # costs stay with the rows that paid them
        self.B = int(index.numel())

    # ---- feeding -------------------------------------------------------------------------------
    @torch.inference_mode()
    def feed(self, chunks: Sequence[Sequence[int]], *, logits: bool = True) -> tuple[torch.Tensor, list[int]]:
        """Append `chunks[r]` to row r (empty: nothing). Returns the block's hidden states
        [B, W, d] and each row's offset in it (its chunk is at W - len .. W - 1). `logits`: the
        last position's logits will be used (the head is counted for it)."""
        self._flush_pending()
        lens = [len(c) for c in chunks]
        if len(chunks) != self.B:
            raise ValueError(f"feed: {len(chunks)} chunks for {self.B} rows")
        W = max(lens, default=0)
        if W == 0:
            return torch.zeros(self.B, 0, self.last_hidden.shape[1]), [0] * self.B
        self._ensure(self.t + W)
        pad = self.eng.pad_id
        flat = [[pad] * (W - len(c)) + list(c) for c in chunks]
        ids = torch.tensor(flat, dtype=torch.long, device=self.device)  # [B, W]
        n = torch.tensor(lens, dtype=torch.long, device=self.device)
        real = torch.arange(W, device=self.device)[None, :] >= (W - n)[:, None]  # [B, W]
        pos = (self.npos[:, None] + torch.cumsum(real, 1) - 1).clamp(min=0)  # [B, W]
        t, S = self.t, self.t + W
        self.mask[:, t:S] = real
        self.bias[:, t:S] = torch.where(real, 0.0, NEG).to(self.dtype)
        causal = torch.arange(S, device=self.device)[None, :] <= (t + torch.arange(W, device=self.device))[:, None]
        bias = torch.where(causal[None], self.bias[:, None, :S], NEG)[:, None]  # [B, 1, W, S]
        hidden = self.backend.forward(ids, pos, bias, t)
        fm = self.eng.flop_model
        per_row = [fm.tokens(k, int(p), heads=1 if logits else 0) if k else 0.0 for k, p in zip(lens, self.npos.tolist())]
        self.row_flops += torch.tensor(per_row, dtype=torch.float64)
        self._count(sum(per_row), prompt_tokens=sum(lens), kind="feed")
        self.t = S
        self.npos += n
        has = n > 0
        self.last_hidden = torch.where(has[:, None], hidden[:, -1], self.last_hidden)
        return hidden, [W - k for k in lens]

    @torch.inference_mode()
    def step(self, tok: torch.Tensor, real: torch.Tensor) -> None:
        """One slot: row r takes tok[r] where real[r], else a hole."""
        self._ensure(self.t + 1)
        t = self.t
        ids = torch.where(real, tok, self.eng.pad_id)[:, None]  # [B, 1]
        self.mask[:, t] = real
        self.bias[:, t] = torch.where(real, 0.0, NEG).to(self.dtype)
        hidden = self.backend.forward(ids, self.npos[:, None], self.bias[:, None, None, :t + 1], t)  # [B, 1, d]
        fm = self.eng.flop_model
        per_row = (real * (fm.body + fm.head + fm.attn_per_key * (self.npos + 1))).double().cpu()  # [B]
        self.row_flops += per_row
        self._count(float(per_row.sum()), generated_tokens=0, kind="step")
        self.t = t + 1
        self.npos += real.long()
        self.last_hidden = torch.where(real[:, None], hidden[:, 0], self.last_hidden)

    @torch.inference_mode()
    def take_row_flops(self) -> list[float]:
        """FLOPs each row cost since the last call (or since it was selected), then reset."""
        out = self.row_flops.tolist()
        self.row_flops.zero_()
        return out

    @torch.inference_mode()
    def rewind(self, row: int, keep: int) -> None:
        """Forget row `row`'s real tokens after its first `keep` (their slots become holes). The
        row's next-token state is stale until it is fed again (feed it before decoding)."""
        real = torch.nonzero(self.mask[row, :self.t]).flatten()
        drop = real[keep:]
        self.mask[row, drop] = False
        self.bias[row, drop] = NEG
        self.npos[row] = min(keep, int(real.numel()))
        self.pending[row] = -1

    @torch.inference_mode()
    def drop_pending(self, rows: torch.Tensor | None = None) -> None:
        """Rows that will not continue: their last sampled token need not be fed."""
        if rows is None:
            self.pending.fill_(-1)
        else:
            self.pending[rows] = -1

    @torch.inference_mode()
    def _flush_pending(self) -> None:
        has = self.pending >= 0
        if bool(has.any()):
            tok = self.pending.clamp(min=0)
            self.pending = torch.full_like(self.pending, -1)
            self.step(tok, has)

    # ---- generation ----------------------------------------------------------------------------
    @torch.inference_mode()
    def decode(self, params: Any, max_tokens: int, gen: torch.Generator | None, *, compact: bool = False,
               active: torch.Tensor | None = None, logprobs: bool = False) -> list[tuple[list[int], str]]:
        """Sample up to `max_tokens` per row (rows where `active` is False sample nothing).
        Returns (tokens, finish reason) per row as the rows stood at the call. With `compact`,
        finished rows are dropped from the session (use it for one-shot generation only).
        `logprobs`: keep the log-probability of each sampled token (before temperature and cuts) in
        `self.logprobs`, per row, aligned with the returned tokens."""
        eng = self.eng
        self._flush_pending()
        B0 = self.B
        out = torch.full((B0, max(max_tokens, 1)), -1, dtype=torch.long)
        length = torch.zeros(B0, dtype=torch.long)
        reason = [""] * B0
        live = torch.arange(B0)  # original row of each session row
        act = torch.ones(B0, dtype=torch.bool, device=self.device) if active is None else active.clone().to(self.device)
        stop_ids, cand = _stop_tables(eng, params.stop)
        text_of = eng.token_text() if cand is not None else None
        kept = torch.full((B0, max(max_tokens, 1)), float("nan")) if logprobs else None
        for step in range(max_tokens):
            logits = eng.logits(self.last_hidden)  # [B, V]
            tok = eng.choose(logits, params, gen)  # [B]
            a_cpu = act.cpu()
            rows = live[a_cpu]
            out[rows, step] = tok.cpu()[a_cpu]
            if kept is not None:
                lp = torch.log_softmax(logits.float(), -1).gather(1, tok[:, None])[:, 0]  # [B]
                kept[rows, step] = lp.cpu()[a_cpu]
            length[rows] += 1
            ended = act & torch.isin(tok, stop_ids)
            if cand is not None:
                for r in torch.nonzero(act & cand[tok] & ~ended).flatten().tolist():
                    o = int(live[r])
                    tail = "".join(text_of[i] for i in out[o, max(0, step - 64):step + 1].tolist())
                    if any(s in tail for s in params.stop):
                        ended[r] = True
            for r in torch.nonzero(ended).flatten().tolist():
                reason[int(live[r])] = "eos" if int(tok[r]) == eng.eos_id else "stop"
            self.pending = torch.where(act, tok, self.pending)
            act = act & ~ended
            if step == max_tokens - 1 or not bool(act.any()):
                break
            if compact and int((~act).sum()) >= max(1, self.B // 4):
                keep = torch.nonzero(act).flatten()
                self.select(keep)
                live, act, tok = live[keep.cpu()], act[keep], tok[keep]
            self.pending = torch.where(act, -1, self.pending)
            self.step(tok, act)
        for r in range(B0):
            if not reason[r] and length[r] > 0:
                reason[r] = "length"
        n_gen = int(length.sum())
        self.logprobs = [kept[r, :length[r]].tolist() for r in range(B0)] if kept is not None else None
        if self.metered:
            self.eng.meter.add(self.eng.phase, 0.0, generated_tokens=n_gen, kind="decode")
        return [(out[r, :length[r]].tolist(), reason[r]) for r in range(B0)]


def _stop_tables(eng: Any, stop: tuple[str, ...]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Token ids that end a sample by themselves (<eos>, a token that is a whole stop string),
    and a mask of tokens that may complete a longer stop string (checked on the text)."""
    ids = [eng.eos_id] if eng.eos_id is not None else []
    cand = None
    if stop:
        text = eng.token_text()
        whole = set(stop)
        ids += [i for i, s in enumerate(text) if s in whole]
        last = {s[-1] for s in stop}
        flags = [(s not in whole) and any(c in s for c in last) for s in text]
        if any(flags):
            cand = torch.tensor(flags, dtype=torch.bool, device=eng.device)
    return torch.tensor(sorted(set(ids)) or [-1], dtype=torch.long, device=eng.device), cand
