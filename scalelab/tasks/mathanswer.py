"""Equivalence of math answers written in LaTeX or plain text, with bounded work and no eval.

`equivalent(a, b)` says whether two final answers (the text inside a `\\boxed{}`) are the same:

1. Both are normalised the way the MATH benchmark's grader does (Hendrycks et al. 2021,
   `math_equivalence.py`, `_strip_string`): `\\dfrac`/`\\tfrac` become `\\frac`, `\\left`/
   `\\right`, `\\!`, spaces, `^\\circ`/degrees, `\\$`, `\\%` and trailing unit words
   (`\\text{...}`, `\\mbox{...}`) go, `\\frac12` becomes `\\frac{1}{2}`, `.5` becomes `0.5`, and
   a short `x = 5` becomes `5`; a one-character exponent or subscript loses its braces (`x^{2}`
   is `x^2`). Equal strings are equivalent.
2. Otherwise both are parsed by `value()`, a small recursive-descent parser of numbers,
   `\\frac`, `\\sqrt`, `+ - * / ^`, `\\cdot`, `\\times`, `\\pi`, parentheses and braces, with
   exact rationals (`fractions.Fraction`); a non-square root or pi makes the value a float
   compared with a relative tolerance of 1e-9. Tuples and intervals (`(1, 2)`, `[0, \\infty)`)
   compare element by element with the same brackets.

Why not sympy or Hugging Face `math-verify`: both reach `sympy.parse_expr`, which calls Python's
`eval`, and math-verify's time limit is `signal.alarm` (main thread only, cannot interrupt a long
computation inside C). See docs/your-task.md for what was measured. Here the model's text is
only tokenised and parsed: every number has a bounded size, exponents are small integers, the
input is cut to `MAX_CHARS`, and nesting is limited to `MAX_DEPTH`, so every call is fast.
"""
from __future__ import annotations

import math
import re
from fractions import Fraction
from typing import Union

MAX_CHARS = 400        # an answer longer than this is compared as a string only
MAX_DEPTH = 40         # nesting of brackets and commands
MAX_EXPONENT = 64      # |integer exponent|
MAX_BITS = 2048        # numerator and denominator size of any intermediate value
MAX_DIGITS = 60        # digits in one number literal

Value = Union[Fraction, float]


class _Fail(Exception):
    """The text is outside the grammar or the bounds: fall back to string comparison."""


# ---- normalisation (after Hendrycks et al. 2021, math_equivalence._strip_string) -----------------
_TEXT_RE = re.compile(r"\\(?:text|mbox|textbf|mathrm)\{([^{}]{0,80})\}")
_UNIT_TAIL_RE = re.compile(r"\\(?:text|mbox)\{\s?[^{}]{0,80}\}\s*$")
_FRAC_SHORT_RE = re.compile(r"\\frac(\d)(\d)")
_FRAC_HALF_RE = re.compile(r"\\frac(\{[^{}]{0,80}\})(\d)")
_SQRT_SHORT_RE = re.compile(r"\\sqrt(\w)")
_THOUSANDS_RE = re.compile(r"^-?\d{1,3}(?:,\d{3})+(?:\.\d+)?$")
_LHS_RE = re.compile(r"^[a-zA-Z](?:_\{?\w{1,3}\}?)?=")
_ONE_CHAR_GROUP_RE = re.compile(r"([\^_])\{(\w)\}")  # x^{2} -> x^2, a_{1} -> a_1


def normalize(text: str) -> str:
    s = text[:MAX_CHARS].strip().replace("\n", "").replace("\\!", "")
    s = s.replace("\\\\", "\\").replace("tfrac", "frac").replace("dfrac", "frac")
    s = s.replace("\\left", "").replace("\\right", "")
    s = s.replace("^{\\circ}", "").replace("^\\circ", "").replace("°", "")
    s = s.replace("\\$", "").replace("$", "")
    # a unit word after a number goes (MATH's _remove_right_units); an answer that is all text stays
    if _UNIT_TAIL_RE.search(s) and _UNIT_TAIL_RE.sub("", s).strip():
        s = _UNIT_TAIL_RE.sub("", s)
    s = _TEXT_RE.sub(r"\1", s)
    s = s.replace("\\%", "").replace("%", "").replace("{,}", "")
    s = s.replace("\\ ", "").replace("\\,", "").replace("\\;", "").replace("~", "")
    s = re.sub(r"\s+", "", s)
    s = s.rstrip(".")
    if _THOUSANDS_RE.match(s):
        s = s.replace(",", "")
    if s.startswith("."):
        s = "0" + s
    s = s.replace("{.", "{0.").replace("(.", "(0.")
    if len(s) <= 40 and _LHS_RE.match(s) and s.count("=") == 1:
        s = s.split("=", 1)[1]  # "x=5" -> "5", as MATH does for a short left-hand side
    s = _ONE_CHAR_GROUP_RE.sub(r"\1\2", s)
    s = _SQRT_SHORT_RE.sub(r"\\sqrt{\1}", s)
    s = _FRAC_SHORT_RE.sub(r"\\frac{\1}{\2}", s)
    s = _FRAC_HALF_RE.sub(r"\\frac\1{\2}", s)
    return s


# ---- tokens -----------------------------------------------------------------------------------
_TOKEN_RE = re.compile(r"\d+(?:\.\d+)?|\.\d+|\\[a-zA-Z]+|[-+*/^(){}\[\],]|\S")
_COMMANDS = {"\\frac", "\\sqrt", "\\cdot", "\\times", "\\div", "\\pi", "\\infty"}


def _tokens(s: str) -> list[str]:
    toks = _TOKEN_RE.findall(s)
    for t in toks:
        if t[0] == "\\" and t not in _COMMANDS:
            raise _Fail(t)
        if t[0].isdigit() and len(t) > MAX_DIGITS:
            raise _Fail("number too long")
    return toks


def _check(v: Value) -> Value:
    if isinstance(v, Fraction):
        if v.numerator.bit_length() > MAX_BITS or v.denominator.bit_length() > MAX_BITS:
            raise _Fail("number too large")
        return v
    if not math.isfinite(v):
        raise _Fail("not finite")
    return v


class _Parser:
    """expr := term (('+'|'-') term)* ; term := unary (('*'|'/'|'\\cdot'|'\\times'|implicit) unary)*
    unary := ('-'|'+') unary | power ; power := atom ('^' unary)? ; atom := number | '\\pi' |
    '\\frac' group group | '\\sqrt' group | '(' expr ')' | '{' expr '}'."""

    def __init__(self, toks: list[str]):
        self.t, self.i, self.depth = toks, 0, 0

    def peek(self) -> str | None:
        return self.t[self.i] if self.i < len(self.t) else None

    def take(self, want: str | None = None) -> str:
        tok = self.peek()
        if tok is None or (want is not None and tok != want):
            raise _Fail(f"expected {want}")
        self.i += 1
        return tok

    def parse(self) -> Value:
        v = self.expr()
        if self.peek() is not None:
            raise _Fail("trailing text")
        return v

    def expr(self) -> Value:
        v = self.term()
        while self.peek() in ("+", "-"):
            op = self.take()
            w = self.term()
            v = _check(v + w if op == "+" else v - w)
        return v

    def term(self) -> Value:
        v = self.unary()
        while True:
            tok = self.peek()
            if tok in ("*", "\\cdot", "\\times", "/", "\\div"):
                self.take()
                w = self.unary()
                if tok in ("/", "\\div"):
                    if w == 0:
                        raise _Fail("division by zero")
                    v = _check(v / w)
                else:
                    v = _check(v * w)
            elif tok is not None and (tok[0].isdigit() or tok in ("(", "{", "\\frac", "\\sqrt", "\\pi")):
                v = _check(v * self.unary())  # implicit product: 2\sqrt{3}, 3\pi
            else:
                return v

    def unary(self) -> Value:
        if self.peek() in ("-", "+"):
            sign = self.take()
            self._enter()
            v = self.unary()
            self.depth -= 1
            return -v if sign == "-" else v
        return self.power()

    def power(self) -> Value:
        base = self.atom()
        if self.peek() != "^":
            return base
        self.take()
        self._enter()
        exp = self.unary()
        self.depth -= 1
        return _pow(base, exp)

    def atom(self) -> Value:
        tok = self.take()
        if tok[0].isdigit() or tok[0] == ".":
            return Fraction(tok)
        if tok == "\\pi":
            return math.pi
        if tok in ("(", "{"):
            self._enter()
            v = self.expr()
            self.take(")" if tok == "(" else "}")
            self.depth -= 1
            return v
        if tok == "\\frac":
            num, den = self.group(), self.group()
            if den == 0:
                raise _Fail("division by zero")
            return _check(num / den)
        if tok == "\\sqrt":
            return _sqrt(self.group())
        raise _Fail(f"unexpected {tok}")

    def group(self) -> Value:
        """A braced argument or one token (`\\frac12` was already braced by `normalize`)."""
        return self.atom()

    def _enter(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise _Fail("nested too deeply")


def _pow(base: Value, exp: Value) -> Value:
    if isinstance(exp, Fraction) and exp.denominator == 1:
        if abs(exp) > MAX_EXPONENT:
            raise _Fail("exponent too large")
        if base == 0 and exp < 0:
            raise _Fail("division by zero")
        return _check(base ** int(exp))
    if exp == Fraction(1, 2):
        return _sqrt(base)
    if float(base) <= 0 or abs(float(exp)) > MAX_EXPONENT:
        raise _Fail("unsupported power")
    return _check(float(base) ** float(exp))


def _sqrt(v: Value) -> Value:
    if v < 0:
        raise _Fail("square root of a negative number")
    if isinstance(v, Fraction):
        n, d = math.isqrt(v.numerator), math.isqrt(v.denominator)
        if n * n == v.numerator and d * d == v.denominator:
            return Fraction(n, d)
    return math.sqrt(float(v))


def value(text: str) -> Value | None:
    """The number a normalised answer denotes, or None outside the grammar or the bounds."""
    if len(text) > MAX_CHARS:
        return None
    try:
        return _Parser(_tokens(text)).parse()
    except (_Fail, ValueError, ZeroDivisionError, OverflowError):
        return None


def _close(a: Value, b: Value) -> bool:
    if isinstance(a, Fraction) and isinstance(b, Fraction):
        return a == b
    return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)


def _split_top(s: str) -> list[str] | None:
    """Items of `(a,b)` / `[a,b)` / `a,b` split at top-level commas; None if brackets do not match."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(s):
        if ch in "({[":
            depth += 1
        elif ch in ")}]":
            depth -= 1
            if depth < 0:
                return None
        elif ch == "," and depth == 0:
            parts.append(s[start:i])
            start = i + 1
    parts.append(s[start:])
    return parts if depth == 0 else None


def _items(s: str) -> tuple[str, list[str]] | None:
    """A tuple or interval: its bracket pair (e.g. '[)') and items; None for a single answer."""
    if len(s) >= 2 and s[0] in "([" and s[-1] in ")]":
        inner = _split_top(s[1:-1])
        if inner is not None and len(inner) > 1:
            return s[0] + s[-1], inner
    parts = _split_top(s)
    if parts is not None and len(parts) > 1:
        return "", parts
    return None


def _same(a: str, b: str) -> bool:
    if a == b:
        return True
    va, vb = value(a), value(b)
    return va is not None and vb is not None and _close(va, vb)


def equivalent(answer: str, reference: str) -> bool:
    """Whether two final answers are the same (see the module docstring); never raises."""
    a, b = normalize(answer), normalize(reference)
    if a == b:
        return bool(a)
    ia, ib = _items(a), _items(b)
    if ia is not None or ib is not None:
        if ia is None or ib is None or ia[0] != ib[0] or len(ia[1]) != len(ib[1]):
            return False
        return all(_same(x, y) for x, y in zip(ia[1], ib[1]))
    return _same(a, b)


def canonical(text: str) -> object:
    """A hashable key under which equivalent answers usually meet (for majority voting)."""
    s = normalize(text)
    v = value(s)
    if isinstance(v, Fraction):
        return v
    if isinstance(v, float):
        return round(v, 9)
    return s
