"""A tiny synthetic TokenSource for the training and sweep tests, and tests of that source.

`MarkovSource` emits characters from a fixed first-order Markov chain over 12 letters: each
letter has three successors with probabilities 0.6 / 0.3 / 0.1. Every target in a window has its
predecessor in context, so the Bayes-optimal loss is exactly the chain's entropy rate, which is
what `entropy_floor` returns. Training and sweeps reach it by name: `--set
source=tests.test_train_source:MarkovSource` (train.py imports `module:callable` specs).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

LETTERS = "abcdefghijkl"
SPECIALS = ["<pad>", "<bos>", "<eos>"]
SUCC_P = np.array([0.6, 0.3, 0.1])


def _char_tokenizer() -> Any:
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(SPECIALS + list(LETTERS))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<bos>",
                                   eos_token="<eos>", unk_token="<pad>")


class MarkovSource:
    name = "markov"

    def __init__(self, chain_seed: int = 0, eval_sequences: int = 32):
        rng = np.random.default_rng(chain_seed)
        k = len(LETTERS)
        self.succ = np.stack([rng.choice(k, size=3, replace=False) for _ in range(k)])  # [k, 3]
        self.trans = np.zeros((k, k))
        for i in range(k):
            self.trans[i, self.succ[i]] = SUCC_P
        w, v = np.linalg.eig(self.trans.T)
        pi = np.real(v[:, np.argmin(np.abs(w - 1))])
        self.pi = pi / pi.sum()
        self.chain_seed, self.eval_sequences = chain_seed, eval_sequences
        self._tok = None

    @property
    def tokenizer(self) -> Any:
        if self._tok is None:
            self._tok = _char_tokenizer()
        return self._tok

    @property
    def vocab_size(self) -> int:
        return len(SPECIALS) + len(LETTERS)

    unique_tokens = None

    @property
    def entropy_floor(self) -> float:
        h = -sum(p * math.log(p) for p in SUCC_P)  # the same for every state
        return float(h)

    eval_bytes_per_token = 1.0

    def _sample(self, rng: np.random.Generator, rows: int, length: int) -> np.ndarray:
        x = np.empty((rows, length), dtype=np.int64)
        x[:, 0] = rng.choice(len(LETTERS), size=rows, p=self.pi)
        pick = rng.choice(3, size=(rows, length), p=SUCC_P)
        for t in range(1, length):
            x[:, t] = self.succ[x[:, t - 1], pick[:, t]]
        return x + len(SPECIALS)

    def train_batch(self, step: int, batch_size: int, seq_len: int, seed: int) -> np.ndarray:
        return self._sample(np.random.default_rng([seed, step, 1]), batch_size, seq_len + 1)

    def eval_batches(self, batch_size: int, seq_len: int) -> list[tuple[np.ndarray, np.ndarray]]:
        x = self._sample(np.random.default_rng([self.chain_seed, 999_999, 2]), self.eval_sequences, seq_len + 1)
        return [(x[i:i + batch_size], np.ones((len(x[i:i + batch_size]), seq_len), dtype=np.float32))
                for i in range(0, len(x), batch_size)]

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "chain_seed": self.chain_seed, "vocab_size": self.vocab_size,
                "entropy_floor": self.entropy_floor, "eval_sequences": self.eval_sequences}


def test_train_batch_is_a_pure_function():
    s = MarkovSource()
    a, b = s.train_batch(3, 4, 16, seed=1), s.train_batch(3, 4, 16, seed=1)
    assert a.shape == (4, 17) and (a == b).all()
    assert not (a == s.train_batch(4, 4, 16, seed=1)).all()
    assert a.min() >= len(SPECIALS) and a.max() < s.vocab_size


def test_transitions_follow_the_chain_and_floor_is_entropy_rate():
    s = MarkovSource()
    x = s.train_batch(0, 64, 64, seed=0) - len(SPECIALS)
    ok = [(x[:, t + 1, None] == s.succ[x[:, t]]).any(-1) for t in range(63)]
    assert np.all(ok)
    assert abs(s.entropy_floor - 0.8979) < 1e-3  # -(.6 ln .6 + .3 ln .3 + .1 ln .1)


def test_tokenizer_round_trips_letters():
    s = MarkovSource()
    ids = s.tokenizer("abc", add_special_tokens=False)["input_ids"]
    assert ids == [3, 4, 5] and s.tokenizer.decode(ids) == "abc"
