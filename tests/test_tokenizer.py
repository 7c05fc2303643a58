"""Character and byte-level BPE tokenizers: exact round-trips, ids, saving, determinism."""
from __future__ import annotations

import random
import subprocess
import sys

import pytest
from transformers import AutoTokenizer

from scalelab.errors import ConfigError, InputError
from scalelab.data.tokenizer import (
    char_tokenizer,
    encode_plain,
    token_byte_lengths,
    tokenizer_hash,
    train_bpe,
)

ALPHABET = "0123456789+-*/=()<> \n:QDA!abcdefghijkl"

TEXTS = [
    "def add(a, b):\n    return a + b\n\n\nclass Point:\n    x: int = 0\n",
    "héllo wörld — naïve café ☕ 東京 😀\r\nsecond line\twith a tab  \n",
    "for i in range(10):\n    if i % 2 == 0:\n        print(i, 'even')\n" * 5,
]

# Strings that trip tokenizers which normalise or strip: spaces at the ends, runs of blank
# lines, CRLF, NUL and other control bytes, combining marks, characters outside the BMP.
AWKWARD = [
    "", " ", "  leading and trailing  ", "\n\n\n", "a\r\nb\rc", "\x00\x01\x7f", "tab\t\tend",
    "e\u0301 (combining acute)", "😀👍🏽 𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "﻿bom first", "don't  's  ' .  , ;", "<eos> <pad>x",
]


@pytest.fixture(scope="module")
def bpe():
    return train_bpe(TEXTS, 300)


def random_strings(chars: str, n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(chars) for _ in range(rng.randrange(0, 60))) for _ in range(n)]


def test_char_roundtrip_one_token_per_character():
    tok = char_tokenizer(ALPHABET)
    for s in random_strings(ALPHABET, 300, seed=0) + ["  12 + 3 =\n\n 15 ", "\n", " "]:
        ids = tok.encode(s)
        assert len(ids) == len(s)
        assert tok.decode(ids) == s
        assert tok.decode(ids, skip_special_tokens=True) == s


def test_char_ids_specials_first_then_alphabet_order():
    tok = char_tokenizer("ba\n ba")  # duplicates are ignored
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, 2)
    assert tok.convert_tokens_to_ids(["b", "a", "\n", " "]) == [3, 4, 5, 6]
    assert len(tok) == 7
    assert tok.decode([1, 3, 4, 2, 0], skip_special_tokens=True) == "ba"


def test_char_save_and_autotokenizer_reload(tmp_path):
    tok = char_tokenizer(ALPHABET)
    tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    s = " 7*8=56\nA: 56 "
    assert again.encode(s) == tok.encode(s)
    assert again.decode(again.encode(s)) == s
    assert (again.pad_token_id, again.bos_token_id, again.eos_token_id) == (0, 1, 2)
    assert tokenizer_hash(again) == tokenizer_hash(tok)


def test_char_rejects_unknown_characters_and_bad_arguments():
    tok = char_tokenizer("01")
    with pytest.raises(Exception, match="UNK|unk"):
        tok.encode("012")
    with pytest.raises(InputError, match="empty"):
        char_tokenizer("")
    with pytest.raises(InputError, match="specials"):
        char_tokenizer("ab", specials=("<pad>", "<pad>", "<eos>"))


def test_bpe_roundtrip_arbitrary_unicode(bpe):
    strings = TEXTS + AWKWARD + random_strings("aé 東😀\n\t\r\x00'.", 200, seed=1)
    for s in strings:
        assert bpe.decode(bpe.encode(s)) == s, repr(s)


def test_bpe_vocabulary_and_specials(bpe):
    # vocab_size is met exactly when the text holds enough pairs seen twice, and is a ceiling
    # otherwise (the small TEXTS run out of mergeable pairs before 300).
    words = random_strings("abcdefghijklmnop", 3000, seed=2)
    assert len(train_bpe([" ".join(words)], 400)) == 400
    assert 259 < len(bpe) <= 300
    assert (bpe.pad_token_id, bpe.bos_token_id, bpe.eos_token_id) == (0, 1, 2)
    assert bpe.encode("hello") != []  # specials are not added by encode
    assert bpe.eos_token_id not in bpe.encode("hello")


def test_bpe_save_reload_identical(bpe, tmp_path):
    bpe.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    for s in TEXTS + AWKWARD:
        assert again.encode(s) == bpe.encode(s)
        assert again.decode(again.encode(s)) == s


def test_bpe_from_files_equals_from_texts(tmp_path, bpe):
    paths = []
    for i, t in enumerate(TEXTS):
        p = tmp_path / f"{i}.txt"
        p.write_bytes(t.encode("utf-8"))  # bytes: no newline translation
        paths.append(p)
    assert tokenizer_hash(train_bpe(paths, 300)) == tokenizer_hash(bpe)


def test_bpe_training_is_deterministic_across_processes(bpe):
    # `tokenizers` hash maps are seeded per process, so compare against a fresh process
    # (with a different thread count) as well as within this one.
    assert tokenizer_hash(train_bpe(TEXTS, 300)) == tokenizer_hash(bpe)
    code = (
        "import sys, json; from scalelab.data.tokenizer import train_bpe, tokenizer_hash;"
        "print(tokenizer_hash(train_bpe(json.loads(sys.argv[1]), 300)))"
    )
    import json

    out = subprocess.run(
        [sys.executable, "-c", code, json.dumps(TEXTS)], capture_output=True, text=True,
        env={**__import__("os").environ, "RAYON_NUM_THREADS": "1"}, timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == tokenizer_hash(bpe)


def test_bpe_rejects_bad_arguments(tmp_path):
    with pytest.raises(ConfigError, match="vocab_size=100"):
        train_bpe(TEXTS, 100)
    with pytest.raises(InputError, match="no text"):
        train_bpe(["", ""], 300)
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("café".encode("latin-1"))
    with pytest.raises(InputError, match="latin1.txt: not UTF-8"):
        train_bpe([bad], 300)


def test_token_byte_lengths_sum_to_utf8_size(bpe):
    lengths = token_byte_lengths(bpe)
    assert lengths[:3] == [0, 0, 0]  # specials stand for no text
    for s in TEXTS + AWKWARD:
        # Some tokens end inside a multi-byte character; the per-token count must still add up.
        ids = encode_plain(bpe, [s])[0]
        assert sum(lengths[i] for i in ids) == len(s.encode("utf-8"))
    char = char_tokenizer("aé😀")
    assert token_byte_lengths(char)[3:] == [1, 2, 4]


def test_encode_plain_keeps_special_strings_as_text(bpe):
    s = "end<eos>start"
    assert bpe.eos_token_id in bpe.encode(s)  # Hugging Face behaviour: matched as the special
    plain = encode_plain(bpe, [s])[0]
    assert bpe.eos_token_id not in plain
    assert bpe.decode(plain) == s
