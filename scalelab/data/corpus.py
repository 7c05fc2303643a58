"""Real-text token sources: the Python standard library's source, or a user's own text.

    src = CorpusSource("stdlib", vocab_size=4096, max_bytes=2_000_000)
    src = CorpusSource("notes/**/*.md")                     # a glob, a directory or one file
    src = CorpusSource("data.jsonl", text_field="body")     # one document per JSON line
    x = src.train_batch(step, batch_size, seq_len, seed)    # int64 [B, T+1]

What happens, once per distinct corpus and options (then read back from a cache):

1. Read every file as exact UTF-8 (no newline translation, so byte counts are the files' own);
   reject missing, unreadable, binary and non-UTF-8 input with a one-line `InputError` naming the
   file (and the line, for JSONL).
2. `max_bytes`: keep a seeded sample of whole files (hash order), cutting the last one at a
   line end, so small runs stay small.
3. Hold out `eval_fraction` of the bytes BY FILE (hash of the relative path salted by `seed`), so
   no file is in both splits and eval measures generalisation to unseen files, not recall of
   seen ones. One JSONL file is split by record; one plain file by its tail (contiguous, as
   enwik8 is conventionally cut into its first 90 MB for training and last 5+5 MB for eval).
4. Train a byte-level BPE (`scalelab.data.tokenizer.train_bpe`) on the training split only.
5. Tokenise each split once into a flat stream `<eos> doc <eos> doc ... <eos>` (GPT-2's single
   separator between documents) and save it as `.npy` next to the tokenizer, in a cache directory
   named by a content hash of the input and the options, published by an atomic rename under a
   file lock, so parallel sweep workers build it once and never see half of it.

Bits per byte: every eval target is counted; `<eos>` stands for no text and counts 0 bytes (its
loss, the cost of knowing where a file ends, is charged to the text: 1 target in ~3,400 on the
stdlib at vocab 4096), every other token the UTF-8 bytes it decodes to, so bytes/token is exact and
bpb = loss_nats / ln 2 / eval_bytes_per_token compares across tokenizers.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import re
import shutil
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import tokenizers
from transformers import PreTrainedTokenizerFast

from scalelab.errors import ConfigError, InputError
from scalelab.records import atomic_write_json
from scalelab.data.corpus_files import Unit, read_units, resolve
from scalelab.data.tokenizer import encode_plain, token_byte_lengths, tokenizer_hash, train_bpe

CACHE_FORMAT = 1  # bump when the cache layout or the stream construction changes
class CorpusSource:
    """A `TokenSource` (see `scalelab.data.sources`) over real text; see the module docstring.

    spec: "stdlib", a file, a directory (read recursively; hidden names and __pycache__ skipped),
        a glob ("**" allowed), or a `.jsonl` file (one document per line, in `text_field`).
    vocab_size: BPE vocabulary, specials and the 256 bytes included (a ceiling on tiny corpora).
    max_bytes: keep about this many bytes of text (a seeded sample of whole files); None = all.
    eval_fraction: share of the text's bytes held out, by file (by record for one JSONL file).
    seed: salts the file sample and the split. Not the data order: that is `train_batch`'s seed,
        so every run of a sweep, whatever its seed, is scored on the same held-out files.
    include_tests: keep the standard library's test suites (see `STDLIB_TEST_DIRS`).
    max_eval_tokens: score only the first this-many held-out tokens (a fixed set), to keep
        frequent evaluation cheap; bytes per token stays exact for the part kept.
    cache_dir: where built corpora live; default $SCALELAB_CACHE_DIR, else
        $XDG_CACHE_HOME/scalelab/corpus, else ~/.cache/scalelab/corpus.
    """

    def __init__(
        self,
        spec: str | os.PathLike,
        *,
        vocab_size: int = 4096,
        max_bytes: int | None = None,
        eval_fraction: float = 0.1,
        seed: int = 0,
        text_field: str = "text",
        include_tests: bool = False,
        max_eval_tokens: int | None = None,
        cache_dir: str | os.PathLike | None = None,
    ):
        _check_int("vocab_size", vocab_size, 259)
        if max_bytes is not None:
            _check_int("max_bytes", max_bytes, 1)
        if max_eval_tokens is not None:
            _check_int("max_eval_tokens", max_eval_tokens, 1)
        _check_int("seed", seed, 0)
        if not (isinstance(eval_fraction, (int, float)) and 0 < eval_fraction < 1):
            raise ConfigError(f"eval_fraction={eval_fraction!r}: must be > 0 and < 1")
        if not isinstance(text_field, str) or not text_field:
            raise ConfigError(f"text_field={text_field!r}: must be a non-empty string")
        self.spec = str(spec)
        self.name = "stdlib" if self.spec == "stdlib" else f"corpus:{Path(self.spec).name}"
        self.options = dict(vocab_size=vocab_size, max_bytes=max_bytes, eval_fraction=eval_fraction,
                            seed=seed, text_field=text_field, include_tests=include_tests)
        self.max_eval_tokens = max_eval_tokens

        self.kind, members = resolve(self.spec, include_tests)
        units, self.skipped, digest = read_units(members, text_field, lenient=self.kind == "stdlib",
                                                    where=self.spec)
        key = _hash({"format": CACHE_FORMAT, "tokenizers": tokenizers.__version__,
                     "content": digest, **self.options})
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", self.name.split(":")[-1])[:40] or "corpus"
        self.cache_path = _cache_root(cache_dir) / f"{slug}-{key[:20]}"
        _build_once(self.cache_path, lambda tmp: self._build(tmp, units))
        self._load(self.cache_path)

    # ---- building (once per corpus and options) -------------------------------------------
    def _build(self, out: Path, units: list[Unit]) -> None:
        o = self.options
        units = _cap(units, o["max_bytes"], o["seed"])
        train, held_out, split_unit = _split(units, o["eval_fraction"], o["seed"])
        tok = train_bpe([d for u in train for d in u.docs], o["vocab_size"])
        tok.save_pretrained(out / "tokenizer")
        nbytes = np.asarray(token_byte_lengths(tok), dtype=np.int64)
        meta: dict[str, Any] = {"format": CACHE_FORMAT, "split_unit": split_unit, "splits": {}}
        for name, part in (("train", train), ("eval", held_out)):
            docs = [d for u in part for d in u.docs]
            stream = _pack(encode_plain(tok, docs), tok.eos_token_id, len(tok))
            text_bytes = sum(u.nbytes for u in part)
            if int(nbytes[stream].sum()) != text_bytes:  # the bpb denominator must be exact
                raise RuntimeError(f"{name}: token bytes {int(nbytes[stream].sum())} != text bytes {text_bytes}")
            np.save(out / f"{name}.npy", stream)
            meta["splits"][name] = {
                "files": sorted({u.file for u in part}), "units": [u.key for u in part],
                "documents": len(docs), "bytes": text_bytes, "tokens": int(stream.size)}
        atomic_write_json(out / "meta.json", meta)  # written last: its presence marks a whole entry

    def _load(self, entry: Path) -> None:
        try:
            self.meta = json.loads((entry / "meta.json").read_text())
            self._tokenizer = PreTrainedTokenizerFast.from_pretrained(entry / "tokenizer")
            # Memory-mapped: parallel workers on one machine share one copy in the page cache.
            self._train = np.load(entry / "train.npy", mmap_mode="r")
            eval_stream = np.load(entry / "eval.npy", mmap_mode="r")
        except (OSError, ValueError, json.JSONDecodeError) as e:
            raise InputError(f"{entry}: damaged corpus cache entry ({e}); delete it to rebuild") from None
        if self.max_eval_tokens is not None:
            eval_stream = eval_stream[: self.max_eval_tokens + 1]  # +1: the first is only context
        self._eval = np.asarray(eval_stream, dtype=np.int64)
        self._nbytes = np.asarray(token_byte_lengths(self._tokenizer), dtype=np.int64)
        self.files = {k: v["files"] for k, v in self.meta["splits"].items()}

    # ---- the TokenSource protocol ---------------------------------------------------------
    @property
    def tokenizer(self) -> PreTrainedTokenizerFast:
        return self._tokenizer

    @property
    def vocab_size(self) -> int:
        return len(self._tokenizer)

    @property
    def unique_tokens(self) -> int:
        """Training tokens before the data repeats (separators included): U of the data-constrained law."""
        return int(self._train.size)

    @property
    def entropy_floor(self) -> None:
        return None  # unknown for natural text

    @property
    def eval_tokens(self) -> int:
        """Counted eval targets: every token of the held-out stream after the first."""
        return int(self._eval.size - 1)

    @property
    def eval_bytes(self) -> int:
        """UTF-8 bytes of the text the counted eval targets stand for."""
        return int(self._nbytes[self._eval[1:]].sum())

    @property
    def eval_bytes_per_token(self) -> float:
        return self.eval_bytes / self.eval_tokens

    def train_batch(self, step: int, batch_size: int, seq_len: int, seed: int) -> np.ndarray:
        """Rows of seq_len + 1 tokens; a pure function of the arguments.

        The stream is cut into W windows at stride seq_len (consecutive windows share one token,
        so every token after the first is a target once per epoch). Row b of `step` is sample
        i = step * batch_size + b; sample i reads window perm_e[i mod W] of epoch e = i div W, where
        perm_e is a permutation of the W windows seeded by (seed, e, seq_len). So each epoch shows
        the same tokens in a new order, and a resumed run reads exactly what it would have read.
        """
        _check_int("step", step, 0)
        _check_int("batch_size", batch_size, 1)
        _check_int("seq_len", seq_len, 1)
        _check_int("seed", seed, 0)
        n_windows = (self._train.size - 1) // seq_len
        if n_windows < 1:
            raise ConfigError(f"seq_len={seq_len}: longer than the training stream ({self._train.size} tokens)")
        sample = step * batch_size + np.arange(batch_size, dtype=np.int64)
        epoch, pos = np.divmod(sample, n_windows)
        starts = np.empty(batch_size, dtype=np.int64)
        for e in np.unique(epoch):  # a batch spans at most a few epochs
            rows = epoch == e
            starts[rows] = _permutation(seed, int(e), seq_len, n_windows)[pos[rows]] * seq_len
        idx = starts[:, None] + np.arange(seq_len + 1)  # [B, T+1]
        return np.asarray(self._train[idx], dtype=np.int64)

    def eval_batches(self, batch_size: int, seq_len: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """The whole held-out stream in windows whose targets never overlap; the last batch may
        have fewer rows, and the last window is padded with <pad> under a mask of zeros."""
        _check_int("batch_size", batch_size, 1)
        _check_int("seq_len", seq_len, 1)
        n = self._eval.size
        n_windows = -(-(n - 1) // seq_len)
        idx = np.arange(n_windows)[:, None] * seq_len + np.arange(seq_len + 1)  # [W, T+1]
        valid = idx < n
        tokens = np.where(valid, self._eval[np.minimum(idx, n - 1)], self._tokenizer.pad_token_id)
        mask = valid[:, 1:].astype(np.float32)  # [W, T]
        return [(tokens[i : i + batch_size], mask[i : i + batch_size]) for i in range(0, n_windows, batch_size)]

    def describe(self) -> dict[str, Any]:
        s = self.meta["splits"]
        return {
            "name": self.name,
            "spec": self.spec,
            "kind": self.kind,
            "python": platform.python_version() if self.kind == "stdlib" else None,
            "options": self.options,
            "split_unit": self.meta["split_unit"],
            "files": {k: len(v["files"]) for k, v in s.items()},
            "documents": {k: v["documents"] for k, v in s.items()},
            "bytes": {k: v["bytes"] for k, v in s.items()},
            "tokens": {k: v["tokens"] for k, v in s.items()},
            "eval_split_hash": _hash(s["eval"]["units"])[:12],
            "skipped": {"count": len(self.skipped), "first": self.skipped[:10]},
            "tokenizer": f"byte-level BPE, tokenizers {tokenizers.__version__}",
            "tokenizer_hash": tokenizer_hash(self._tokenizer),
            "vocab_size": self.vocab_size,
            "unique_tokens": self.unique_tokens,
            "max_eval_tokens": self.max_eval_tokens,
            "eval_tokens": self.eval_tokens,
            "eval_bytes": self.eval_bytes,
            "eval_bytes_per_token": self.eval_bytes_per_token,
            "entropy_floor": None,
            "cache": self.cache_path.name,
        }


# ---- sampling and splitting -------------------------------------------------------------------
def _rank(salt: str, key: str) -> bytes:
    return hashlib.sha256(f"{salt}\0{key}".encode()).digest()


def _cap(units: list[Unit], max_bytes: int | None, seed: int) -> list[Unit]:
    """Whole units in a seeded hash order until max_bytes; the one that crosses is cut at a line end."""
    if max_bytes is None or sum(u.nbytes for u in units) <= max_bytes:
        return units
    kept, left = [], max_bytes
    for u in sorted(units, key=lambda u: _rank(f"select:{seed}", u.key)):
        docs = []
        for d in u.docs:
            b = d.encode("utf-8")
            if len(b) > left:
                cut = b.rfind(b"\n", 0, left) + 1  # a newline is never inside a UTF-8 character
                if cut:
                    docs.append(b[:cut].decode("utf-8"))
                left = 0
                break
            docs.append(d)
            left -= len(b)
        if docs:
            kept.append(Unit(u.key, u.file, docs, u.kind))
        if left == 0:
            break
    if not kept:
        raise ConfigError(f"max_bytes={max_bytes}: too small to hold one line of the corpus")
    return kept


def _split(units: list[Unit], fraction: float, seed: int) -> tuple[list[Unit], list[Unit], str]:
    """(train, eval, split unit). Eval takes units in a seeded hash order of their keys until it
    holds `fraction` of the bytes: at least one unit, and never all of them."""
    if len(units) == 1 and len(units[0].docs) == 1:
        return _split_tail(units[0], fraction)
    if len(units) == 1:
        raise InputError(f"{units[0].file}: one file cannot be split by file; give two or more")
    order = sorted(units, key=lambda u: _rank(f"split:{seed}", u.key))
    target, total, n_eval = fraction * sum(u.nbytes for u in units), 0, 0
    while n_eval < len(order) - 1 and (n_eval == 0 or total < target):
        total += order[n_eval].nbytes
        n_eval += 1
    return order[n_eval:], order[:n_eval], units[0].kind


def _split_tail(u: Unit, fraction: float) -> tuple[list[Unit], list[Unit], str]:
    """One text: hold out its last `fraction` of bytes, cut at a line end when there is one."""
    b = u.docs[0].encode("utf-8")
    cut = round(len(b) * (1 - fraction))
    line_end = b.rfind(b"\n", 0, cut) + 1
    if line_end:
        cut = line_end
    while 0 < cut < len(b) and (b[cut] & 0xC0) == 0x80:  # not inside a multi-byte character
        cut -= 1
    if not 0 < cut < len(b):
        raise InputError(f"{u.file}: too short to hold out a part ({len(b)} bytes)")
    head, tail = b[:cut].decode("utf-8"), b[cut:].decode("utf-8")
    return [Unit(f"{u.key}#train", u.file, [head])], [Unit(f"{u.key}#eval", u.file, [tail])], "tail"


def _pack(docs: list[list[int]], eos: int, vocab: int) -> np.ndarray:
    """<eos> d1 <eos> d2 ... <eos>: the leading <eos> makes every text token a target."""
    dtype = np.uint16 if vocab <= 1 << 16 else np.uint32
    out = np.empty(sum(len(d) + 1 for d in docs) + 1, dtype=dtype)
    out[0], i = eos, 1
    for d in docs:
        out[i : i + len(d)] = d
        out[i + len(d)] = eos
        i += len(d) + 1
    return out


@lru_cache(maxsize=4)
def _permutation(seed: int, epoch: int, seq_len: int, n: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch, seq_len, n]).permutation(n)


# ---- the cache --------------------------------------------------------------------------------
def _cache_root(cache_dir: str | os.PathLike | None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir)
    if os.environ.get("SCALELAB_CACHE_DIR"):
        return Path(os.environ["SCALELAB_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "scalelab" / "corpus"


def _build_once(entry: Path, build) -> None:
    """Run build(tmp_dir) and rename tmp_dir to `entry`, unless `entry` exists. A file lock makes
    concurrent builders wait for the first instead of repeating its work; the rename makes the
    entry appear whole or not at all, even without the lock (a filesystem without flock)."""
    if (entry / "meta.json").is_file():
        return
    entry.parent.mkdir(parents=True, exist_ok=True)
    with _file_lock(entry.parent / f".{entry.name}.lock"):
        if (entry / "meta.json").is_file():
            return
        tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", suffix=".tmp", dir=entry.parent))
        try:
            build(tmp)
            os.rename(tmp, entry)
        except OSError:
            if not (entry / "meta.json").is_file():
                raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)  # a no-op after a successful rename


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # not POSIX: rely on the atomic rename alone
        yield
        return
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# ---- small helpers ----------------------------------------------------------------------------
def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def _check_int(name: str, value: Any, low: int) -> None:
    if isinstance(value, (bool, float)) or not isinstance(value, (int, np.integer)) or value < low:
        raise ConfigError(f"{name}={value!r}: must be an integer >= {low}")
