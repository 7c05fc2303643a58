"""CorpusSource: splits by file, exact bits-per-byte accounting, pure batches, epochs, cache, stdlib."""
from __future__ import annotations

import json
import math
import random
import threading
from pathlib import Path

import numpy as np
import pytest

from scalelab.data import corpus as corpus_mod
from scalelab.data import corpus_files
from scalelab.data.corpus import CorpusSource
from scalelab.data.sources import TokenSource, make_source
from scalelab.data.tokenizer import encode_plain

N_FILES = 24


def _marker(i: int) -> str:
    # A made-up word per file, repeated so often that BPE learns it as one token if (and only
    # if) the file is in the training split.
    rng = random.Random(i)
    return "".join(rng.choice("bcdfghjkmnpqrstvwxz") for _ in range(7))


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    for i in range(N_FILES):
        sub = root / ("sub" if i % 3 == 0 else "")
        sub.mkdir(exist_ok=True)
        body = f"# file {i}: naïve café 😀\n" + (f" {_marker(i)}" * 80) + "\n" + "print('hello')\n" * (i + 1)
        (sub / f"f{i:02d}.txt").write_bytes(body.encode("utf-8"))
    (root / ".hidden").write_bytes(b"\x00\x01binary")  # ignored: hidden
    (root / "__pycache__").mkdir()
    (root / "__pycache__" / "x.pyc").write_bytes(b"\x00\x00")  # ignored: bytecode dir
    return root


@pytest.fixture(scope="module")
def src(tree, tmp_path_factory) -> CorpusSource:
    return CorpusSource(tree, vocab_size=512, eval_fraction=0.25, cache_dir=tmp_path_factory.mktemp("cache"))


def test_is_a_token_source_and_describes_itself(src):
    assert isinstance(src, TokenSource)
    d = json.loads(json.dumps(src.describe()))
    assert d["files"]["train"] + d["files"]["eval"] == N_FILES
    assert d["tokens"]["train"] == src.unique_tokens
    assert d["vocab_size"] == len(src.tokenizer) <= d["options"]["vocab_size"] == 512
    assert d["entropy_floor"] is None and src.entropy_floor is None
    assert d["split_unit"] == "file"


def test_no_file_in_both_splits_and_eval_share_by_bytes(src, tree):
    train, held = set(src.files["train"]), set(src.files["eval"])
    assert not train & held
    assert train | held == {p.relative_to(tree).as_posix() for p in tree.rglob("f*.txt")}
    total = src.describe()["bytes"]["train"] + src.describe()["bytes"]["eval"]
    assert total == sum(p.stat().st_size for p in tree.rglob("f*.txt"))
    assert 0.25 <= src.describe()["bytes"]["eval"] / total < 0.25 + 0.1  # overshoot < one file


def test_tokenizer_is_trained_on_the_training_split_only(src):
    as_one_token = {f: len(src.tokenizer.encode(" " + _marker(int(Path(f).stem[1:])))) == 1
                    for split in ("train", "eval") for f in src.files[split]}
    assert all(as_one_token[f] for f in src.files["train"])
    assert not any(as_one_token[f] for f in src.files["eval"])


def test_split_is_deterministic_and_salted_by_seed(tree, src, tmp_path):
    again = CorpusSource(tree, vocab_size=512, eval_fraction=0.25, cache_dir=tmp_path / "a")
    assert again.files == src.files
    assert np.array_equal(again.train_batch(3, 4, 16, 0), src.train_batch(3, 4, 16, 0))
    other = CorpusSource(tree, vocab_size=512, eval_fraction=0.25, seed=1, cache_dir=tmp_path / "a")
    assert other.files["eval"] != src.files["eval"]


def test_bits_per_byte_accounting_by_hand(tmp_path):
    # Two tiny files: one is held out. Each training file's byte pairs occur once, so with
    # min_frequency 2 BPE learns no merge and every byte is one token: a held-out text of n
    # bytes is n tokens plus the <eos> that ends it, and the leading <eos> is never a target.
    sizes = {"a.txt": ("héllo\n", 7), "b.txt": ("wörld 😀\n", 12)}
    for name, (text, n) in sizes.items():
        assert len(text.encode()) == n
        (tmp_path / name).write_text(text, encoding="utf-8", newline="")
    s = CorpusSource(tmp_path, vocab_size=300, eval_fraction=0.5, cache_dir=tmp_path / ".cache")
    (held,) = s.files["eval"]
    n = sizes[held][1]
    assert (s.eval_bytes, s.eval_tokens) == (n, n + 1)
    assert s.eval_bytes_per_token == n / (n + 1)
    batches = s.eval_batches(batch_size=2, seq_len=4)
    assert sum(m.sum() for _, m in batches) == n + 1
    loss = 2.0  # nats per counted token, say
    assert loss / math.log(2) / s.eval_bytes_per_token == pytest.approx(loss * (n + 1) / (n * math.log(2)))


def test_eval_batches_cover_each_target_once_with_padding_masked(src):
    stream = src._eval
    for B, T in ((3, 7), (64, 50), (1, 1)):
        batches = src.eval_batches(B, T)
        assert all(x.shape[1] == T + 1 and m.shape == (x.shape[0], T) and len(x) <= B for x, m in batches)
        x = np.concatenate([b[0] for b in batches])
        m = np.concatenate([b[1] for b in batches]).astype(bool)
        assert np.array_equal(x[:, 1:][m], stream[1:])  # every target once, in order
        assert np.all(x[:, 1:][~m] == src.tokenizer.pad_token_id)
        assert m.sum() == src.eval_tokens
    text = src.tokenizer.decode(stream[1:], skip_special_tokens=True)
    assert len(text.encode()) == src.eval_bytes == src.describe()["bytes"]["eval"]


def test_max_eval_tokens_keeps_bytes_exact(tree, src):
    capped = CorpusSource(tree, vocab_size=512, eval_fraction=0.25, max_eval_tokens=100,
                          cache_dir=src.cache_path.parent)
    assert capped.eval_tokens == 100
    ids = capped._eval[1:]
    assert capped.eval_bytes == len(bytes(b for i in ids for b in _token_bytes(capped.tokenizer, i)))


def _token_bytes(tok, i: int) -> bytes:
    if i in tok.all_special_ids:
        return b""
    table = {c: b for b, c in enumerate(_gpt2_byte_chars())}
    return bytes(table[c] for c in tok.convert_ids_to_tokens(int(i)))


def _gpt2_byte_chars() -> list[str]:
    # GPT-2's byte -> printable character map, rebuilt independently of the code under test.
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars, n = {}, 0
    for b in range(256):
        if b in keep:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + n)
            n += 1
    return [chars[b] for b in range(256)]


def test_train_batch_is_pure_and_reads_whole_windows(src):
    a = src.train_batch(5, 8, 32, seed=7)
    assert a.dtype == np.int64 and a.shape == (8, 33)
    assert np.array_equal(a, src.train_batch(5, 8, 32, seed=7))
    assert not np.array_equal(a, src.train_batch(6, 8, 32, seed=7))
    assert not np.array_equal(a, src.train_batch(5, 8, 32, seed=8))
    stream = np.asarray(src._train)
    starts = {s for s in range(0, stream.size - 32, 32)}
    for row in a:  # each row is the window of the stream at some multiple of seq_len
        assert any(np.array_equal(row, stream[s : s + 33]) for s in starts)


def test_epochs_repeat_the_same_tokens_in_a_new_order(src):
    T = 32
    W = (src.unique_tokens - 1) // T
    B = 5
    steps = -(-2 * W // B)
    rows = np.concatenate([src.train_batch(k, B, T, seed=0) for k in range(steps)])
    first, second = rows[:W], rows[W : 2 * W]
    key = lambda r: r.tobytes()
    assert sorted(map(key, first)) == sorted(map(key, second))  # same windows
    assert len(set(map(key, first))) == len({src._train[i * T : i * T + T + 1].tobytes() for i in range(W)})
    assert not np.array_equal(first, second)  # reshuffled
    targets = np.concatenate([r[1:] for r in first])
    assert targets.size == W * T >= src.unique_tokens - T  # one epoch sees all but < T tokens


def test_cache_is_reused_and_holds_no_pickles(tree, src, monkeypatch):
    files = sorted(p.name for p in src.cache_path.iterdir())
    assert files == ["eval.npy", "meta.json", "tokenizer", "train.npy"]
    np.load(src.cache_path / "train.npy", allow_pickle=False)
    monkeypatch.setattr(corpus_mod, "train_bpe", lambda *a, **k: pytest.fail("rebuilt a cached corpus"))
    again = CorpusSource(tree, vocab_size=512, eval_fraction=0.25, cache_dir=src.cache_path.parent)
    assert again.cache_path == src.cache_path


def test_cache_key_follows_content_and_options(tmp_path):
    for i in range(3):
        (tmp_path / f"{i}.txt").write_text(f"text number {i}\n" * 20)
    cache = tmp_path / ".cache"
    a = CorpusSource(tmp_path / "*.txt", vocab_size=300, cache_dir=cache)
    assert CorpusSource(tmp_path / "*.txt", vocab_size=301, cache_dir=cache).cache_path != a.cache_path
    (tmp_path / "1.txt").write_text("changed\n" * 20)
    assert CorpusSource(tmp_path / "*.txt", vocab_size=300, cache_dir=cache).cache_path != a.cache_path


def test_parallel_builders_share_one_entry(tree, tmp_path):
    out, errors = [], []

    def build():
        try:
            out.append(CorpusSource(tree, vocab_size=400, cache_dir=tmp_path))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=build) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len({s.describe()["tokenizer_hash"] for s in out}) == 1
    entries = [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")]
    assert entries == [out[0].cache_path.name]  # one entry, no temporary directories left


def test_single_jsonl_is_split_by_record(tmp_path):
    rows = [{"id": i, "body": f"record {i} says {'hi ' * (i % 5 + 1)}\n"} for i in range(40)]
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    s = CorpusSource(path, vocab_size=300, text_field="body", cache_dir=tmp_path / ".cache")
    d = s.describe()
    assert d["split_unit"] == "record"
    assert d["documents"]["train"] + d["documents"]["eval"] == 40
    assert d["bytes"]["train"] + d["bytes"]["eval"] == sum(len(r["body"].encode()) for r in rows)
    assert d["documents"]["eval"] >= 1


def test_single_text_file_holds_out_its_tail(tmp_path):
    lines = [f"line {i} of the only file\n" for i in range(200)]
    path = tmp_path / "one.txt"
    path.write_text("".join(lines))
    s = CorpusSource(path, vocab_size=300, eval_fraction=0.1, cache_dir=tmp_path / ".cache")
    assert s.describe()["split_unit"] == "tail"
    held = s.tokenizer.decode(s._eval, skip_special_tokens=True)
    assert "".join(lines).endswith(held) and held.startswith("line 1")  # cut at a line start
    # at least the fraction asked for, and less than one line more
    assert 0.1 <= len(held) / len("".join(lines)) < 0.1 + len(lines[-1]) / len("".join(lines))


def test_glob_and_literal_bracket_paths(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "one.txt").write_text("first file\n" * 5)
    (tmp_path / "a" / "two.md").write_text("second file\n" * 5)
    (tmp_path / "a" / "three.txt").write_text("third file\n" * 5)
    s = CorpusSource(str(tmp_path / "a" / "*.txt"), vocab_size=300, cache_dir=tmp_path / "c")
    assert sorted(s.files["train"] + s.files["eval"]) == ["one.txt", "three.txt"]
    literal = tmp_path / "data[1].txt"  # exists, so it is a path, not a pattern
    literal.write_text("".join(f"line {i}\n" for i in range(50)))
    assert CorpusSource(literal, vocab_size=300, cache_dir=tmp_path / "c").files["train"] == ["data[1].txt"]


def test_make_source_builds_a_corpus(tree, src):
    s = make_source(str(tree), vocab_size=512, eval_fraction=0.25, cache_dir=src.cache_path.parent)
    assert isinstance(s, CorpusSource) and s.files == src.files


# ---- the standard library -------------------------------------------------------------------
def test_stdlib_members_exclude_tests_and_installed_packages():
    kind, members = corpus_files.resolve("stdlib", include_tests=False)
    rels = [r for r, _ in members]
    assert kind == "stdlib" and rels == sorted(rels) and len(rels) > 300
    assert "os.py" in rels and "json/decoder.py" in rels
    assert not any(r.startswith(("site-packages/", "test/")) or "/tests/" in r for r in rels)
    with_tests = [r for r, _ in corpus_files.resolve("stdlib", include_tests=True)[1]]
    assert any(r.startswith("test/") for r in with_tests) and len(with_tests) > len(rels)


def test_stdlib_capped_slice(tmp_path):
    s = CorpusSource("stdlib", vocab_size=1024, max_bytes=200_000, cache_dir=tmp_path)
    d = s.describe()
    assert d["bytes"]["train"] + d["bytes"]["eval"] <= 200_000
    assert d["bytes"]["train"] + d["bytes"]["eval"] > 190_000  # the cap is filled, cut at a line end
    assert not set(s.files["train"]) & set(s.files["eval"])
    assert 2.5 < s.eval_bytes_per_token < 5  # Python source with a 1k BPE: ~3-4 bytes per token
    assert not any(str(Path.home()) in x for x in d["skipped"]["first"])  # no machine paths
    x = s.train_batch(0, 2, 64, seed=0)
    assert s.tokenizer.decode(x[0]).strip()


# ---- bad input ----------------------------------------------------------------------------------
def _one_line_error(exc_info) -> str:
    msg = str(exc_info.value)
    assert "\n" not in msg
    return msg


@pytest.mark.parametrize("make, pattern", [
    (lambda d: d / "missing.txt", r"missing.txt: no such file"),
    (lambda d: str(d / "nothing-*.txt"), r"nothing-\*.txt: the glob matched no files"),
    (lambda d: (d / "e.txt").write_bytes(b"") and None or d / "e.txt", r"e.txt: empty file"),
    (lambda d: (d / "emptydir").mkdir() or d / "emptydir", r"emptydir: the directory holds no files"),
])
def test_missing_empty_and_unmatched_inputs(tmp_path, make, pattern):
    from scalelab.errors import InputError

    with pytest.raises(InputError, match=pattern) as e:
        CorpusSource(make(tmp_path), cache_dir=tmp_path / ".cache")
    _one_line_error(e)


def _two_files_and(tmp_path: Path, name: str, data: bytes) -> Path:
    (tmp_path / "good1.txt").write_text("fine text\n")
    (tmp_path / "good2.txt").write_text("more fine text\n")
    (tmp_path / name).write_bytes(data)
    return tmp_path


@pytest.mark.parametrize("name, data, pattern", [
    ("pic.png", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", r"pic.png: binary file \(NUL byte at offset 8\)"),
    ("latin.txt", "ok\nstill ok\ncafé\n".encode("latin-1"), r"latin.txt: not UTF-8 text \(byte 0xe9 at line 3"),
])
def test_binary_and_non_utf8_files_are_named(tmp_path, name, data, pattern):
    from scalelab.errors import InputError

    with pytest.raises(InputError, match=pattern) as e:
        CorpusSource(_two_files_and(tmp_path, name, data), cache_dir=tmp_path.parent / "c")
    _one_line_error(e)


def test_unreadable_file_is_named(tmp_path):
    from scalelab.errors import InputError

    d = _two_files_and(tmp_path, "x.txt", b"x\n")
    (d / "dangling.txt").symlink_to(d / "gone.txt")
    with pytest.raises(InputError, match=r"dangling.txt: cannot read") as e:
        CorpusSource(d, cache_dir=tmp_path.parent / "c")
    _one_line_error(e)


@pytest.mark.parametrize("lines, pattern", [
    (['{"text": "a"}', '{"text": "b"', '{"text": "c"}'], r"data.jsonl:2: not valid JSON"),
    (['{"text": "a"}', '["a list"]'], r"data.jsonl:2: expected a JSON object, got list"),
    (['{"text": "a"}', '{"text": "b"}', '{"body": "c"}'], r"data.jsonl:3: no 'text' field \(fields: body\)"),
    (['{"text": 5}'], r"data.jsonl:1: field 'text' is int, expected a string"),
    (['{"text": ""}', "", '{"text": ""}'], r"data.jsonl: no text found"),
])
def test_jsonl_errors_name_the_line(tmp_path, lines, pattern):
    from scalelab.errors import InputError

    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match=pattern) as e:
        CorpusSource(path, cache_dir=tmp_path / ".cache")
    _one_line_error(e)


def test_jsonl_non_utf8_line_is_named(tmp_path):
    from scalelab.errors import InputError

    path = tmp_path / "data.jsonl"
    path.write_bytes(b'{"text": "a"}\n{"text": "caf\xe9"}\n')
    with pytest.raises(InputError, match=r"data.jsonl:2: not UTF-8 text"):
        CorpusSource(path, cache_dir=tmp_path / ".cache")


def test_empty_member_files_are_skipped_and_reported(tmp_path):
    d = _two_files_and(tmp_path, "__init__.py", b"")
    s = CorpusSource(d, vocab_size=300, cache_dir=tmp_path.parent / "c")
    assert s.describe()["skipped"]["count"] == 1
    assert "__init__.py: empty file" in s.describe()["skipped"]["first"][0]


@pytest.mark.parametrize("kw, pattern", [
    ({"eval_fraction": 0.0}, "eval_fraction=0.0: must be > 0 and < 1"),
    ({"eval_fraction": 1}, "eval_fraction=1: must be > 0 and < 1"),
    ({"vocab_size": 100}, "vocab_size=100: must be an integer >= 259"),
    ({"max_bytes": 0}, "max_bytes=0: must be an integer >= 1"),
    ({"seed": -1}, "seed=-1: must be an integer >= 0"),
])
def test_bad_options_name_the_field_and_range(tmp_path, kw, pattern):
    from scalelab.errors import ConfigError

    with pytest.raises(ConfigError, match=pattern):
        CorpusSource(tmp_path, cache_dir=tmp_path / ".cache", **kw)


def test_seq_len_longer_than_the_corpus(tmp_path):
    from scalelab.errors import ConfigError

    d = _two_files_and(tmp_path, "x.txt", b"x\n")
    s = CorpusSource(d, vocab_size=300, cache_dir=tmp_path.parent / "c")
    with pytest.raises(ConfigError, match="seq_len=4096: longer than the training stream"):
        s.train_batch(0, 1, 4096, 0)


def test_special_token_text_in_the_corpus_stays_text(tmp_path):
    for i in range(2):
        (tmp_path / f"{i}.txt").write_text(f"a literal <eos> and <pad> in file {i}\n")
    s = CorpusSource(tmp_path, vocab_size=300, cache_dir=tmp_path / ".cache")
    for stream in (s._train, s._eval):
        ids = np.asarray(stream)
        eos = ids == s.tokenizer.eos_token_id
        assert eos.sum() == 2 and eos[0] and eos[-1]  # only the separators
        assert s.tokenizer.pad_token_id not in ids
    assert encode_plain(s.tokenizer, ["<eos>"])[0] != [s.tokenizer.eos_token_id]
