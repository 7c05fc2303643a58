"""Task files made here: seeded word problems with a difficulty dial, and the testbed's problems.

`generate("gsm8k", 500, seed=0)` writes rows like GSM8K's (Cobbe et al. 2021): a short story of
k operations on a count of things, k = difficulty (1..max_ops), a worked answer of one line per
operation and "#### N". The same problems come as MATH-style rows (`problem`, `solution` with the
answer in `\\boxed{}`, `level`; sharing out may leave a fraction, written `\\frac{p}{q}`) and as
multiple-choice rows (four options: the answer, off-by-one, one step skipped, a random value).
Numbers stay below 100 and every story uses the same few sentence shapes, so a small model
trained here can learn some of it: accuracy falls with k instead of sitting at 0 or 1.

A problem's split is fixed by a hash of its question (20% test), so train and test never share
a question whatever the seed. `testbed_rows` writes the arithmetic testbed's evaluation problems in
GSM8K's shape (the same problems `scalelab testtime` draws for the same difficulties and count).
"""
from __future__ import annotations

import hashlib
import json
import random
from fractions import Fraction
from pathlib import Path
from typing import Sequence

from scalelab.errors import ConfigError, InputError

GEN_FORMATS = ("gsm8k", "math", "choice")
NAMES = ("Ava", "Ben", "Chen", "Dara", "Eli", "Femi", "Gus", "Hana")
ITEMS = ("apples", "marbles", "stickers", "books", "coins", "shells")
TEST_FRACTION = 0.2


def _latex(x: Fraction) -> str:
    if x.denominator == 1:
        return str(x.numerator)
    sign = "-" if x < 0 else ""
    return f"{sign}\\frac{{{abs(x.numerator)}}}{{{x.denominator}}}"


def _story(rng: random.Random, k: int, fractions: bool) -> tuple[str, list[str], list[str], Fraction, list[Fraction]]:
    """(question, plain steps, latex steps, answer, values after each step)."""
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    x = Fraction(rng.randint(2, 20))
    sentences, plain, latex, values = [f"{name} has {x} {item}."], [], [], [x]
    for _ in range(k):
        kinds = ["add", "mul", "share"] + (["sub"] if x > 2 else [])
        kind = rng.choice(kinds)
        if kind == "add":
            b = rng.randint(1, 20)
            y, sent, op = x + b, f"Then {name} gets {b} more.", "+"
        elif kind == "sub":
            b = rng.randint(1, int(x) - 1 if x.denominator == 1 else 1)
            y, sent, op = x - b, f"Then {name} gives away {b}.", "-"
        elif kind == "mul":
            b = rng.randint(2, 3)
            y, sent, op = x * b, f"Then {name} ends up with {b} times as many.", "*"
        else:
            divisors = [d for d in (2, 3, 4) if fractions or (x / d).denominator == 1]
            if not divisors or x * 2 > 100:
                b = rng.randint(1, 9)
                y, sent, op = x + b, f"Then {name} gets {b} more.", "+"
            else:
                b = rng.choice(divisors)
                y, sent, op = x / b, f"Then {name} splits them into {b} equal parts and keeps one part.", "/"
        sentences.append(sent)
        plain.append(f"{x} {op} {b} = {y}")
        sym = {"*": "\\times", "/": "\\div"}.get(op, op)
        latex.append(f"${_latex(x)} {sym} {b} = {_latex(y)}$")
        x = y
        values.append(x)
    sentences.append(f"How many {item} does {name} have now?")
    return " ".join(sentences), plain, latex, x, values


def _split(question: str) -> str:
    h = int.from_bytes(hashlib.blake2b(question.encode(), digest_size=8).digest(), "big")
    return "test" if h % 1000 < TEST_FRACTION * 1000 else "train"


def generate(fmt: str, n: int, *, seed: int = 0, max_ops: int = 4) -> list[dict]:
    """n distinct problems, difficulties 1..max_ops in turn, as rows of the given format."""
    if fmt not in GEN_FORMATS:
        raise ConfigError(f"--format {fmt!r}: the generator writes {', '.join(GEN_FORMATS)}")
    if not 1 <= n <= 1_000_000 or not 1 <= max_ops <= 10:
        raise ConfigError(f"--problems {n} / --max-ops {max_ops}: need 1..1000000 problems and 1..10 operations")
    rng, rows, seen = random.Random(f"wordproblems:{fmt}:{seed}"), [], set()
    for i in range(50 * n):
        k = 1 + len(rows) % max_ops
        q, plain, latex, ans, values = _story(rng, k, fractions=fmt == "math")
        if q in seen:
            continue
        seen.add(q)
        row = {"id": f"wp{len(rows)}", "split": _split(q)}
        if fmt == "gsm8k":
            row |= {"question": q, "answer": "\n".join(plain) + f"\n#### {ans}", "difficulty": k}
        elif fmt == "math":
            row |= {"problem": q, "solution": " ".join(latex) + f" The answer is $\\boxed{{{_latex(ans)}}}$.",
                    "level": f"Level {k}"}
        else:
            wrong = [ans + 1, values[-2] if len(values) > 1 else ans - 1, Fraction(rng.randint(1, 99))]
            options = [ans]
            for w in wrong + [ans + 2, ans + 3]:
                if w not in options and len(options) < 4:
                    options.append(w)
            rng.shuffle(options)
            row |= {"question": q, "choices": [str(o) for o in options], "answer": "ABCD"[options.index(ans)],
                    "difficulty": k}
        rows.append(row)
        if len(rows) == n:
            break
    return rows


def testbed_rows(difficulties: Sequence[int], n: int, *, seed: int = 0) -> list[dict]:
    """The testbed's test problems (as `scalelab testtime` draws them) in GSM8K's shape."""
    from scalelab.tasks.testbed import TestbedTask

    task, rows = TestbedTask(), []
    for d in difficulties:
        for j, p in enumerate(task.problems("test", n, difficulty=d, seed=seed)):
            rows.append({"id": f"d{d}-{j}", "question": p.question(), "answer": p.solution() + f"#### {p.answer}",
                         "difficulty": d, "split": "test"})
    return rows


def check_out(path: str | Path, force: bool) -> Path:
    """An output path whose parent is a directory and that is not an existing file (unless force)."""
    p = Path(path)
    if not p.parent.is_dir():
        raise InputError(f"--out {path}: {p.parent} is not a directory")
    if p.is_dir():
        raise InputError(f"--out {path}: is a directory")
    if p.exists() and not force:
        raise InputError(f"--out {path}: exists; use --force to overwrite it")
    return p


def write_jsonl(path: str | Path, rows: Sequence[dict], *, force: bool = False) -> Path:
    p = check_out(path, force)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    tmp.replace(p)
    return p
