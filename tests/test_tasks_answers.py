"""Answer extraction per format, math equivalence, and hostile completions (parsed, never run)."""
from __future__ import annotations

import time
from fractions import Fraction

import pytest

from scalelab.tasks import answers as A
from scalelab.tasks.files import FileProblem, FileTask
from scalelab.tasks.mathanswer import equivalent, value


@pytest.mark.parametrize("completion, expected", [
    ("She has 5 + 3 = 8.\n#### 8", "8"),                       # rule 1: after ####
    ("#### 1,000 and later 7", "1,000"),
    ("So 4 apples. The answer is -12.5 dollars. Then 3.", "-12.5"),  # rule 2: after "The answer is"
    ("the answer is 3, no wait, the answer is 4", "4"),         # the last "answer is"
    ("First 3, then 4, finally 42.", "42"),                     # rule 3: the last number
    ("no digits here", None),
])
def test_gsm8k_extraction_rules(completion, expected):
    assert A.gsm8k_extract(completion) == expected


def test_gsm8k_reference_and_equality():
    assert A.gsm8k_reference("3 + 4 = 7\n#### 1,000") == "1,000"
    assert A.gsm8k_reference("no marker") is None
    n = A.parse_number
    assert n("1,000") == n("1000") == n("1000.0") == Fraction(1000)
    assert A.numbers_equal(n("0.3333333"), Fraction(1, 3), decimals=True)
    assert not A.numbers_equal(n("7"), n("8"), decimals=False)


@pytest.mark.parametrize("a, b", [
    (r"\frac{1}{2}", "0.5"), (r"\frac{1}{2}", "1/2"), (r"\dfrac{1}{2}", r"\tfrac12"),
    (r"\left( 1, 2 \right)", "(1,2)"), (r"10\text{ cm}", "10"), (r"10\mbox{ inches}", "10"),
    (r"90^\circ", "90"), (r"90^{\circ}", "90"), (r"2\!\sqrt{3}", r"\sqrt{12}"), (r"\sqrt{4}", "2"),
    (r"[0, \infty)", r"[0,\infty)"), ("x = 5", "5"), (r"\$1{,}000", "1000"), ("2^{-2}", r"\frac14"),
    (r"\frac{\sqrt{2}}{2}", r"\frac{1}{\sqrt{2}}"), (r"\frac{\pi}{2}", r"\pi/2"), ("50\\%", "50"),
])
def test_math_equivalences(a, b):
    assert equivalent(a, b) and equivalent(b, a)


@pytest.mark.parametrize("a, b", [("3", "4"), ("(1,2)", "[1,2]"), ("(1,2)", "(1,2,3)"), (r"\frac{1}{3}", "0.33"),
                                  (r"\sqrt{2}", "1.41"), ("", "")])
def test_math_non_equivalences(a, b):
    assert not equivalent(a, b)


def test_boxed_extraction():
    assert A.last_boxed(r"so \boxed{1} or rather \boxed{\frac{a}{b^{2}}}.") == r"\frac{a}{b^{2}}"
    assert A.last_boxed(r"\boxed 5$") == "5"
    assert A.last_boxed(r"\boxed{unclosed") is None
    assert A.math_extract("The final answer is $\\frac{3}{4}$.\nBye") == r"\frac{3}{4}"


@pytest.mark.parametrize("completion", ["(B)", "B)", "Answer: B", "b", "The answer is (B).", "B. because",
                                        "I think the answer is b", "yellow"])
def test_choice_forms(completion):
    assert A.choice_extract(completion, ("red", "yellow", "blue")) == "B"


def test_choice_reference_forms():
    opts = ("red", "yellow", "blue")
    assert A.choice_reference("b", opts) == A.choice_reference(1, opts) == A.choice_reference("Yellow", opts) == "B"
    assert A.choice_reference("E", opts) is None and A.choice_reference(5, opts) is None


def test_exact_and_regex():
    assert A.normalize_exact('  "Paris." ') == A.normalize_exact("paris") == "paris"
    assert A.exact_extract("Let me think.\nThe answer is: Paris.") == "Paris."
    assert A.exact_extract("\n  Rome\nmore") == "Rome"
    rx = A.compile_regex(r"ANSWER=(\w+)")
    assert A.regex_extract(rx, "x ANSWER=blue y") == "blue"
    assert A.regex_extract(rx, "nothing") is None


def _task(fmt, answer, solution="", choices=()):
    return FileTask([FileProblem("1", "test", "q?", answer, solution, choices)], fmt)


HOSTILE = [
    "__import__('os').system('touch PWNED')",
    r"The answer is \boxed{__import__('os').system('touch PWNED')}",
    r"\boxed{(lambda: exec('open(\"PWNED\",\"w\")'))()}",
    r"\boxed{10^{10^{10}}}", r"\boxed{9^{9^{9^{9}}}}", r"\boxed{(10^{10})!}",
    "\\boxed{" + "{" * 10_000 + "1" + "}" * 10_000 + "}",
    "$" + "\\frac{1}{" * 5000 + "2" + "}" * 5000 + "$",
    "1" * 10_000_000,
    "(" * 1_000_000 + "#### " + "9" * 1_000_000,
]


@pytest.mark.parametrize("fmt, answer", [("gsm8k", "7"), ("math", "7"), ("exact", "7")])
def test_hostile_completions_are_scored_wrong_fast_and_never_run(fmt, answer, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    import builtins
    import os

    calls = []
    monkeypatch.setattr(os, "system", lambda *a: calls.append(a) or 0)
    real_eval, real_exec = builtins.eval, builtins.exec
    monkeypatch.setattr(builtins, "eval", lambda *a, **k: calls.append(a) or real_eval(*a, **k))
    monkeypatch.setattr(builtins, "exec", lambda *a, **k: calls.append(a) or real_exec(*a, **k))
    task = _task(fmt, answer)
    for text in HOSTILE:
        t0 = time.perf_counter()
        verdict = task.verify(task.all_problems[0], text)
        assert time.perf_counter() - t0 < 1.0, text[:40]
        assert not verdict.correct
    assert calls == [] and not (tmp_path / "PWNED").exists()


def test_hostile_math_values_are_bounded():
    t0 = time.perf_counter()
    assert value("10^{10^{10}}") is None          # exponent bound
    assert value("(" * 5000 + "1" + ")" * 5000) is None   # nesting bound
    assert value("9" * 100) is None                # literal bound
    assert value("2^{64}") == 2 ** 64
    assert time.perf_counter() - t0 < 0.5


def test_chance_and_verdict_keys():
    choice = _task("choice", "B", "The answer is (B).", ("x", "y", "z", "w"))
    p = choice.all_problems[0]
    assert choice.chance(p) == 0.25 and choice.verify(p, "(B)").answer == "B"
    g = _task("gsm8k", "1000", "#### 1000")
    v1, v2 = g.verify(g.all_problems[0], "#### 1,000"), g.verify(g.all_problems[0], "The answer is 1000.0")
    assert v1.correct and v2.correct and v1.answer == v2.answer and g.chance(g.all_problems[0]) == 0.0
    m = _task("math", r"\frac{1}{2}")
    assert m.verify(m.all_problems[0], r"so $\boxed{0.5}$").correct
    assert m.verify(m.all_problems[0], "no answer here") == m.verify(m.all_problems[0], "")
    assert not m.verify(m.all_problems[0], "").well_formed
