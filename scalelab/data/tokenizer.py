"""Tokenizers, built with the Hugging Face `tokenizers` library and returned as
`transformers.PreTrainedTokenizerFast`, so that `save_pretrained` writes them next to a checkpoint
and `AutoTokenizer.from_pretrained` loads them back.

* `char_tokenizer(alphabet)`: one token per character, for the embedded testbed, whose alphabet is
  small and known in advance. Character-level means a token's loss is a character's loss.
* `train_bpe(texts_or_files, vocab_size)`: byte-level BPE for text corpora, the scheme of GPT-2
  (Radford et al. 2019, "Language Models are Unsupervised Multitask Learners", section 2.2): text
  is cut into pieces by a regular expression, each piece is seen as UTF-8 bytes, and merges are
  learnt over bytes, so every string has an encoding and decoding gives the exact bytes back.

Both put the special tokens first: <pad> = 0, <bos> = 1, <eos> = 2 (with the default specials).
Neither adds special tokens on `encode`; callers place <bos>/<eos> themselves (the corpus source
puts <eos> between documents). Neither normalises text: no lower-casing, no Unicode
normalisation, no stripping, and `clean_up_tokenization_spaces` is off, so
`decode(encode(s)) == s`.

A literal special-token string inside text (say the characters "<eos>") is matched as that special
token by `encode`, as in every Hugging Face tokenizer; `decode` still gives the same text back.
Code that must treat such text as plain characters (the corpus pre-tokeniser does) uses
`encode_plain`.
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from scalelab.errors import ConfigError, InputError

DEFAULT_SPECIALS = ("<pad>", "<bos>", "<eos>")

# Every one of the 256 byte values as the printable character GPT-2's byte-level scheme maps it
# to; putting them all in the initial alphabet means no byte is ever unknown.
_BYTE_ALPHABET = frozenset(pre_tokenizers.ByteLevel.alphabet())


def char_tokenizer(
    alphabet: str, *, specials: Sequence[str] = DEFAULT_SPECIALS
) -> PreTrainedTokenizerFast:
    """A tokenizer with one token per character of `alphabet` (duplicates ignored).

    Ids: the specials first, in order, then the characters in the order they first appear in
    `alphabet`. Encoding a character outside the alphabet raises (there is no <unk>: in the
    testbed an unknown character is a bug, and mapping it to <unk> would hide it).
    """
    if not alphabet:
        raise InputError("char_tokenizer: the alphabet is empty")
    specials = _check_specials(specials)
    vocab = {s: i for i, s in enumerate(specials)}
    for ch in alphabet:
        if ch in vocab and ch in specials:
            raise InputError(f"char_tokenizer: {ch!r} is both a special token and a character")
        vocab.setdefault(ch, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=None))
    # Split into single code points. `[\s\S]` rather than `.`: in the Oniguruma regex dialect that
    # `tokenizers` uses, `.` does not match a newline.
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()  # join tokens with nothing between them (the default adds spaces)
    return _wrap(tok, specials)


def train_bpe(
    texts_or_files: Iterable[str | os.PathLike],
    vocab_size: int,
    *,
    specials: Sequence[str] = DEFAULT_SPECIALS,
    min_frequency: int = 2,
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on texts (`str` items) or UTF-8 files (`PathLike` items).

    `vocab_size` counts everything: the specials, the 256 byte tokens and the merges; a corpus too
    small to support that many merges yields fewer. `min_frequency=2`: a pair seen once is not
    worth a token. There is no seed because training has no random element: merges are chosen by
    count with ties broken by token id, and the ids of the byte alphabet are assigned in sorted
    order (the one known source of run-to-run variation in `tokenizers` training is the id order
    of WordPiece-style continuing-subword tokens, huggingface/tokenizers#1794, which byte-level BPE
    does not use). `tests/test_tokenizer.py` checks that two trainings give identical files.
    """
    specials = _check_specials(specials)
    floor = len(_BYTE_ALPHABET) + len(specials)
    if not isinstance(vocab_size, int) or isinstance(vocab_size, bool) or vocab_size < floor:
        raise ConfigError(
            f"vocab_size={vocab_size!r}: must be an integer >= {floor} "
            f"(256 byte tokens + {len(specials)} specials)"
        )
    if min_frequency < 1:
        raise ConfigError(f"min_frequency={min_frequency!r}: must be >= 1")
    texts = [_read_utf8(x) if isinstance(x, os.PathLike) else _check_text(x) for x in texts_or_files]
    if not any(texts):
        raise InputError("train_bpe: no text to train on")

    tok = Tokenizer(models.BPE())
    # GPT-2's pre-tokenisation regex (use_regex=True) and no prefix space: the first word of a
    # text is not given a leading space it did not have, which would break exact round-trips.
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(specials),
        initial_alphabet=sorted(_BYTE_ALPHABET),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer, length=len(texts))
    return _wrap(tok, specials)


def encode_plain(tokenizer: PreTrainedTokenizerFast, texts: Sequence[str]) -> list[list[int]]:
    """Encode texts with special-token strings treated as ordinary text, in parallel.

    A corpus that happens to contain the characters "<eos>" must not gain an end-of-document
    token there: the data would then disagree with its own byte count.
    """
    backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())  # a private copy
    backend.encode_special_tokens = True
    backend.no_padding()
    backend.no_truncation()
    return [e.ids for e in backend.encode_batch(list(texts), add_special_tokens=False)]


def token_byte_lengths(tokenizer: PreTrainedTokenizerFast) -> list[int]:
    """UTF-8 bytes each token id stands for (0 for special tokens), indexed by id.

    Exact for byte-level BPE, where each character of a token's string stands for one byte; that
    is why bits per byte can be counted per token even when a token ends inside a multi-byte
    character (decoding such a token alone would give a replacement character, not its bytes).
    """
    special_ids = {i for i, t in tokenizer.added_tokens_decoder.items() if t.special}
    vocab = tokenizer.backend_tokenizer.get_vocab(with_added_tokens=True)
    out = [0] * (max(vocab.values()) + 1)
    byte_level = isinstance(tokenizer.backend_tokenizer.pre_tokenizer, pre_tokenizers.ByteLevel)
    for piece, i in vocab.items():
        if i in special_ids:
            continue
        if byte_level:
            if not set(piece) <= _BYTE_ALPHABET:
                raise ValueError(f"token {i} ({piece!r}) is not a byte-level token")
            out[i] = len(piece)
        else:  # one piece of plain text per token (the character tokenizer)
            out[i] = len(piece.encode("utf-8"))
    return out


def tokenizer_hash(tokenizer: PreTrainedTokenizerFast, length: int = 12) -> str:
    """A short content hash of the tokenizer (vocabulary, merges, pipeline), for run records."""
    return hashlib.sha256(tokenizer.backend_tokenizer.to_str().encode()).hexdigest()[:length]


def _wrap(tok: Tokenizer, specials: tuple[str, ...]) -> PreTrainedTokenizerFast:
    tok.add_special_tokens(list(specials))
    roles: dict = dict(zip(("pad_token", "bos_token", "eos_token"), specials))
    if len(specials) > 3:
        roles["extra_special_tokens"] = list(specials[3:])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        clean_up_tokenization_spaces=False,  # it would turn "a ." into "a." on decode
        **roles,
    )


def _check_specials(specials: Sequence[str]) -> tuple[str, ...]:
    specials = tuple(specials)
    if len(specials) < 3:
        raise InputError(f"specials={specials!r}: need at least pad, bos and eos, in that order")
    if len(set(specials)) != len(specials) or not all(isinstance(s, str) and s for s in specials):
        raise InputError(f"specials={specials!r}: must be distinct non-empty strings")
    return specials


def _check_text(x: object) -> str:
    if not isinstance(x, str):
        raise InputError(f"train_bpe: expected str texts or path-like files, got {type(x).__name__}")
    return x


def _read_utf8(path: os.PathLike) -> str:
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as e:
        raise InputError(f"{p}: cannot read ({e.strerror or e})") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"{p}: not UTF-8 text (byte {e.start})") from None
