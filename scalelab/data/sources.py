"""Token sources: what `train(config)` consumes, whatever the data.

A source is the embedded testbed (generated problems, unlimited and never repeated), the Python
standard library's source files, or a user's corpus. The training loop only sees this protocol:

* `train_batch(step, batch_size, seq_len, seed)` -> int64 array [batch_size, seq_len + 1]. It is a
  pure function of its arguments, so a resumed run reads exactly the batches it would have read,
  and two runs with the same seed see the same data.
* `eval_batches(batch_size, seq_len)` -> the fixed held-out set as (tokens [B, T+1], mask [B, T])
  pairs; the mask marks target positions that count (0 on padding).
* `eval_bytes_per_token` -> UTF-8 bytes per counted eval token, to report bits per byte
  (bpb = loss_nats / ln 2 / bytes_per_token), which compares across tokenizers.
* `unique_tokens` -> training tokens available before data repeats (None when unlimited); the
  data-constrained law reads it as U.
* `entropy_floor` -> exact Bayes-optimal loss (nats/token) on the eval set when known in closed
  form (the testbed), else None.
* `tokenizer` -> a `transformers.PreTrainedTokenizerFast`, saved next to every checkpoint.

`make_source(spec, **options)` builds one from a spec string: "testbed", "stdlib" or a path/glob.
"""
from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class TokenSource(Protocol):
    name: str

    @property
    def tokenizer(self) -> Any: ...

    @property
    def vocab_size(self) -> int: ...

    @property
    def unique_tokens(self) -> int | None: ...

    @property
    def entropy_floor(self) -> float | None: ...

    @property
    def eval_bytes_per_token(self) -> float: ...

    def train_batch(self, step: int, batch_size: int, seq_len: int, seed: int) -> np.ndarray: ...

    def eval_batches(self, batch_size: int, seq_len: int) -> list[tuple[np.ndarray, np.ndarray]]: ...

    def describe(self) -> dict[str, Any]:
        """JSON-able facts for the run record (name, sizes, splits, tokenizer, floor)."""
        ...


def make_source(spec: str, **options: Any) -> TokenSource:
    """Build a token source from "testbed", "stdlib" or a path / glob / JSONL file."""
    if spec == "testbed":
        from scalelab.data.testbed import TestbedSource

        return TestbedSource(**options)
    from scalelab.data.corpus import CorpusSource

    return CorpusSource(spec, **options)
