"""The testbed as a token source for pretraining (see `scalelab.data.sources.TokenSource`).

The problems, their generator, the exact verifier and the test-time task live in
`scalelab.tasks.testbed`; this module packs the generator's documents into training batches and
held-out loss sets, with the exact entropy floor, and draws evaluation problems by split.
"""
from __future__ import annotations

from functools import cached_property
from typing import Any, Iterable

import numpy as np

from scalelab.errors import ConfigError
from scalelab.tasks.testbed import ALPHABET, BOS_CHAR, EOS_CHAR, Generator, Problem, TestbedConfig, draw_problems, stable_rng


# ---- the token source -------------------------------------------------------------------------
class TestbedSource:
    """The testbed as a TokenSource (see scalelab/sources.py): unlimited, never-repeating text."""

    __test__ = False

    name = "testbed"

    def __init__(self, config: TestbedConfig | None = None, *, max_eval_tokens: int | None = None,
                 **overrides: Any):
        base = config.model_dump() if config is not None else {}
        self.config = TestbedConfig.build({**base, **overrides})
        if max_eval_tokens is not None and max_eval_tokens < 1:
            raise ConfigError(f"max_eval_tokens={max_eval_tokens}: must be >= 1")
        # The held-out set is cut to whole documents within this many counted tokens, and the
        # floor and bytes per token are computed on exactly that set.
        self.max_eval_tokens = max_eval_tokens
        self.gen = Generator(self.config)
        self._eval: tuple[list[str], float] | None = None

    # tokenizer: one id per character, plus <pad>, <bos>, <eos>
    @cached_property
    def tokenizer(self) -> Any:
        from scalelab.data.tokenizer import char_tokenizer

        return char_tokenizer(ALPHABET)

    @cached_property
    def _lut(self) -> np.ndarray:
        tok = self.tokenizer
        lut = np.full(256, -1, dtype=np.int64)
        for ch in ALPHABET:
            lut[ord(ch)] = tok.convert_tokens_to_ids(ch)
        lut[ord(BOS_CHAR)] = tok.bos_token_id
        lut[ord(EOS_CHAR)] = tok.eos_token_id
        return lut

    @property
    def vocab_size(self) -> int:
        return len(self.tokenizer)

    @property
    def unique_tokens(self) -> None:
        return None  # generated fresh: data never repeats

    def encode(self, text: str) -> np.ndarray:
        ids = self._lut[np.frombuffer(text.encode("ascii"), dtype=np.uint8)]
        if (ids < 0).any():
            bad = sorted({c for c in text if c not in ALPHABET and c not in (BOS_CHAR, EOS_CHAR)})
            raise ValueError(f"characters outside the testbed alphabet: {bad!r}")
        return ids

    def train_batch(self, step: int, batch_size: int, seq_len: int, seed: int) -> np.ndarray:
        """Documents packed back to back as <bos>doc<eos>..., cut into rows of seq_len + 1."""
        rng = stable_rng("train", seed, step)
        need = batch_size * (seq_len + 1)
        parts, n = [], 0
        while n < need:
            doc, _ = self.gen.document(rng)
            parts.append(BOS_CHAR + doc + EOS_CHAR)
            n += len(doc) + 2
        ids = self.encode("".join(parts))
        off = rng.randrange(len(ids) - need + 1)  # random phase so rows do not all start at <bos>
        return ids[off:off + need].reshape(batch_size, seq_len + 1).copy()

    # held-out loss set: fresh documents from the training distribution, on their own seed
    def eval_documents(self) -> tuple[list[str], float]:
        """The evaluation documents and their total exact negative log-likelihood (nats)."""
        if self._eval is None:
            rng = stable_rng("eval", self.config.eval_seed)
            docs, nll, counted = [], 0.0, 0
            for _ in range(self.config.eval_docs):
                doc, lp = self.gen.document(rng)
                counted += len(doc) + 1
                if self.max_eval_tokens is not None and counted > self.max_eval_tokens and docs:
                    break
                docs.append(doc)
                nll -= lp
            self._eval = (docs, nll)
        return self._eval

    @property
    def entropy_floor(self) -> float:
        docs, nll = self.eval_documents()
        return nll / sum(len(d) + 1 for d in docs)  # counted targets: the characters and <eos>

    @property
    def eval_bytes_per_token(self) -> float:
        docs, _ = self.eval_documents()
        return sum(len(d) for d in docs) / sum(len(d) + 1 for d in docs)

    def max_document_length(self) -> int:
        c = self.config
        w = len(str(c.max_modulus - 1))
        step = 2 + 3 * w + 3  # "a:" x op y "=" r "\n"
        question = 2 + len(str(c.max_modulus)) + w + c.max_steps * (2 + w) + 1
        return question + c.max_steps * 2 * step + 3 + w

    def eval_batches(self, batch_size: int, seq_len: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """Whole documents packed into rows that start with <bos>; padding is masked out."""
        docs, _ = self.eval_documents()
        longest = max(len(d) for d in docs) + 2
        if longest > seq_len + 1:
            raise ConfigError(f"seq_len={seq_len} is shorter than the longest evaluation document "
                              f"({longest} tokens); use seq_len >= {longest - 1}")
        pad = self.tokenizer.pad_token_id
        bos = self.tokenizer.bos_token_id
        rows: list[np.ndarray] = []
        cur: list[np.ndarray] = []
        used = 0
        for d in docs:
            ids = self.encode(BOS_CHAR + d + EOS_CHAR)
            if used + len(ids) > seq_len + 1:
                rows.append(np.concatenate(cur))
                cur, used = [], 0
            cur.append(ids)
            used += len(ids)
        if cur:
            rows.append(np.concatenate(cur))
        batches = []
        for i in range(0, len(rows), batch_size):
            chunk = rows[i:i + batch_size]
            x = np.full((len(chunk), seq_len + 1), pad, dtype=np.int64)
            for j, r in enumerate(chunk):
                x[j, :len(r)] = r
            mask = ((x[:, 1:] != pad) & (x[:, 1:] != bos)).astype(np.float32)
            batches.append((x, mask))
        return batches

    def describe(self) -> dict[str, Any]:
        docs, _ = self.eval_documents()
        return {
            "name": self.name,
            "config": self.config.model_dump(),
            "vocab_size": self.vocab_size,
            "entropy_floor": self.entropy_floor,
            "eval_docs": len(docs),
            "eval_tokens": sum(len(d) + 1 for d in docs),
        }

    # ---- problems for accuracy evaluation (test-time, post-training) --------------------------
    def problems(self, split: str, n: int, *, steps: int, modulus: int | Iterable[int] | None = None,
                 seed: int = 0) -> list[Problem]:
        """`n` distinct problems of a split with `steps` steps (`tasks.testbed.draw_problems`)."""
        return draw_problems(self.gen, split, n, steps=steps, modulus=modulus, seed=seed)
