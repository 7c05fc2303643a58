"""Final answers: extracted from references and from model completions, normalised per format.

Model output is untrusted. Every function here looks at most `MAX_SCAN` characters (the first
ones: a completion is read the way the engine wrote it), uses regexes without nested
quantifiers (linear time), and never evaluates text. The rules, in the order they are tried:

gsm8k  reference: the number after `####` (GSM8K's own format, Cobbe et al. 2021).
       completion: (1) the first number after the first `####`; (2) else the first number after
       the last "the answer is" (any case; the few-shot format of Wei et al. 2022); (3) else the
       last number in the text. Numbers may carry commas, a sign and decimals; "1,000",
       "1000" and "1000.0" are equal (exact rationals; a decimal is equal within 1e-6 relative).
math   reference: the text inside the last `\\boxed{}` of the solution (nested braces), as MATH's
       `last_boxed_only_string` does; an `answer` column wins when the file has one.
       completion: (1) the last `\\boxed{...}`/`\\fbox{...}`; (2) else what follows the last
       "final answer is"/"the answer is" up to the end of its line. Compared by
       `mathanswer.equivalent`.
choice reference: a letter, a 0-based index or an option's text, stored as a letter.
       completion: (1) the letter after the last "answer is"/"Answer:" (`(B)`, `B`, `b`);
       (2) else a completion that starts with `(B)`, `B)`, `B.` or `B:`, or is one letter;
       (3) else a completion (or its first line) that is exactly one option's text.
number reference: a plain decimal number (SVAMP's 8.0, "1,000"). completion: the gsm8k rules;
       compared as gsm8k numbers, against each accepted answer.
exact  completion: what follows the last "answer is"/"Answer:" on its line, else the first
       non-empty line; equal to any accepted answer when both are plain numbers of equal value
       ("8.0" = "8", "-3" != "3") or both normalise to the same string (case, inner whitespace,
       punctuation and quotes at the ends).
regex  completion: the first capture group of the user's pattern, searched (compiled once, with
       a time limit: the `regex` module's `timeout`) in the first `MAX_SCAN` characters;
       compared as `exact` answers.
"""
from __future__ import annotations

import re
import string
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from typing import Any, Hashable

MAX_SCAN = 20_000          # characters of a completion examined (a long sample is cut, not parsed whole)
MAX_BOXED = 1_000          # characters inside one \boxed{}
REGEX_TIMEOUT_S = 0.5      # per search with a user's pattern

LETTERS = string.ascii_uppercase

# ---- numbers (gsm8k) ----------------------------------------------------------------------------
_NUMBER_RE = re.compile(r"-?\d[\d,]{0,30}(?:\.\d{1,30})?")
_PLAIN_RE = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)")  # no exponent: "1e999999999" would take minutes
_ANSWER_IS_RE = re.compile(r"(?:final answer|the answer) is", re.IGNORECASE)


def parse_number(text: str) -> Fraction | None:
    """'1,234.50' -> Fraction(2469, 2), '8.0' -> 8; None if it is not a plain decimal number."""
    t = text.strip().replace(",", "").rstrip(".")
    if not t or len(t) > 64 or not _PLAIN_RE.fullmatch(t):
        return None
    try:
        return Fraction(Decimal(t))
    except (InvalidOperation, ValueError):
        return None


def _first_number(text: str) -> str | None:
    m = _NUMBER_RE.search(text)
    return m.group(0) if m else None


def gsm8k_reference(answer: str) -> str | None:
    """The text of the number after '####' in a GSM8K answer, None when there is no '####'."""
    i = answer.find("####")
    return None if i < 0 else _first_number(answer[i + 4:i + 200])


def last_match(pattern: Any, text: str) -> Any:
    """The last match of a compiled pattern in text, or None (linear: one pass of finditer)."""
    last = None
    for last in pattern.finditer(text):
        pass
    return last


def gsm8k_extract(completion: str) -> str | None:
    text = completion[:MAX_SCAN]
    i = text.find("####")
    if i >= 0:
        return _first_number(text[i + 4:i + 200])
    last = last_match(_ANSWER_IS_RE, text)
    if last is not None:
        found = _first_number(text[last.end():last.end() + 200])
        if found is not None:
            return found
    numbers = _NUMBER_RE.findall(text)
    return numbers[-1] if numbers else None


def numbers_equal(a: Fraction, b: Fraction, *, decimals: bool) -> bool:
    if a == b:
        return True
    return decimals and abs(a - b) <= Fraction(1, 10**6) * max(1, abs(a), abs(b))


# ---- \boxed{} (math) -------------------------------------------------------------------------------
_BOXED_RE = re.compile(r"\\(?:boxed|fbox)\s*")
_MATH_ANSWER_IS_RE = re.compile(r"(?:final answer|the answer) is:?", re.IGNORECASE)


def last_boxed(text: str) -> str | None:
    """The content of the last \\boxed{...} with braces matched (bounded), or of `\\boxed 5`."""
    text = text[:MAX_SCAN]
    start = last_match(_BOXED_RE, text)
    if start is None:
        return None
    i = start.end()
    if i < len(text) and text[i] != "{":  # "\boxed 5": up to the next space or dollar
        m = re.match(r"[^\s$]{1,100}", text[i:])
        return m.group(0) if m else None
    depth = 0
    for j in range(i, min(len(text), i + MAX_BOXED)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1:j]
    return None  # unbalanced or too long


def math_extract(completion: str) -> str | None:
    boxed = last_boxed(completion)
    if boxed is not None:
        return boxed
    text = completion[:MAX_SCAN]
    last = last_match(_MATH_ANSWER_IS_RE, text)
    if last is None:
        return None
    line = text[last.end():last.end() + 400].split("\n", 1)[0].strip().strip("$").strip()
    return line.rstrip(".").strip("$").strip() or None


# ---- choice -----------------------------------------------------------------------------------------
_CHOICE_ANSWER_RE = re.compile(r"(?:answer is|answer\s*:)\s*\(?([A-Za-z])\)?(?![A-Za-z])", re.IGNORECASE)
_CHOICE_LEAD_RE = re.compile(r"\s*\(?([A-Z])(?:\)|\.|:|\s*$)")


def choice_reference(answer: object, choices: tuple[str, ...]) -> str | None:
    """A letter, a 0-based index or an option's text -> the option's letter; None if not an option."""
    n = len(choices)
    if isinstance(answer, bool):
        return None
    if isinstance(answer, (int, float)) and float(answer).is_integer():
        k = int(answer)
        return LETTERS[k] if 0 <= k < n else None
    s = str(answer).strip()
    if len(s) == 1 and s.upper() in LETTERS[:n]:
        return s.upper()
    if len(s) == 3 and s[0] == "(" and s[2] == ")" and s[1].upper() in LETTERS[:n]:
        return s[1].upper()
    if s.isdecimal() and len(s) < 6 and int(s) < n:  # isdigit() would pass "²", which int() refuses
        return LETTERS[int(s)]
    for k, option in enumerate(choices):
        if normalize_exact(option) == normalize_exact(s):
            return LETTERS[k]
    return None


def choice_extract(completion: str, choices: tuple[str, ...]) -> str | None:
    text = completion[:MAX_SCAN]
    allowed = LETTERS[:len(choices)]
    last = last_match(_CHOICE_ANSWER_RE, text)
    if last is not None and last.group(1).upper() in allowed:
        return last.group(1).upper()
    stripped = text.strip()
    if len(stripped) == 1 and stripped.upper() in allowed:
        return stripped.upper()
    m = _CHOICE_LEAD_RE.match(text)
    if m and m.group(1) in allowed:
        return m.group(1)
    first_line = stripped.split("\n", 1)[0]
    for candidate in (stripped, first_line):
        key = normalize_exact(candidate)
        for k, option in enumerate(choices):
            if key and key == normalize_exact(option):
                return LETTERS[k]
    return None


# ---- exact and regex ----------------------------------------------------------------------------------
_EDGE = string.punctuation + "\u201c\u201d\u2018\u2019 \t\n"
_EXACT_ANSWER_RE = re.compile(r"(?:answer is:?|answer\s*:)", re.IGNORECASE)


def normalize_exact(text: str) -> str:
    return " ".join(str(text)[:MAX_SCAN].casefold().split()).strip(_EDGE)


def exact_key(text: str) -> Hashable:
    """What an exact answer is compared by: its number when it is one ('8.0', '8' and '8.' meet;
    '1,000' and '1000' too), else its normalised text."""
    stripped = str(text).strip()
    number = parse_number(stripped) if len(stripped) <= 64 else None  # before the sign is stripped as punctuation
    return number if number is not None else normalize_exact(stripped)


def exact_extract(completion: str) -> str | None:
    text = completion[:MAX_SCAN]
    last = last_match(_EXACT_ANSWER_RE, text)
    if last is not None:
        line = text[last.end():last.end() + 400].split("\n", 1)[0]
        if normalize_exact(line):
            return line.strip()
    for line in text.split("\n"):
        if line.strip():
            return line.strip()
    return None


def compile_regex(pattern: str):
    """The user's pattern, compiled once, with at least one capture group (else ConfigError)."""
    import regex

    from scalelab.errors import ConfigError

    try:
        compiled = regex.compile(pattern)
    except regex.error as e:
        raise ConfigError(f"--regex {pattern!r}: not a valid regular expression ({e})") from None
    if compiled.groups < 1:
        raise ConfigError(f"--regex {pattern!r}: needs a capture group (the first group is the answer)")
    return compiled


def regex_extract(compiled, completion: str) -> str | None:
    try:
        m = compiled.search(completion[:MAX_SCAN], timeout=REGEX_TIMEOUT_S)
    except TimeoutError:
        return None
    return None if m is None or m.group(1) is None else m.group(1)


def canonical_number(text: str | None) -> Hashable | None:
    """A gsm8k answer as a hashable value (Fraction), so that '1,000' and '1000.0' vote together."""
    return None if text is None else parse_number(text)


STEP_MODES = ("lines", "paragraphs", "regex:PATTERN")


def step_splitter(mode: str):
    """lines | paragraphs | regex:PATTERN (a step ends after each match); pieces join back to the text."""
    if mode == "lines":
        from scalelab.tasks.base import split_lines

        return split_lines
    if mode == "paragraphs":
        pattern = compile_regex(r"(\n\s*\n)")
    elif mode.startswith("regex:"):
        pattern = compile_regex("(" + mode[6:] + ")")
    else:
        from scalelab.errors import ConfigError

        raise ConfigError(f"--steps {mode!r}: choose one of {', '.join(STEP_MODES)}")

    def split(text: str) -> list[str]:
        out, start = [], 0
        try:
            for m in pattern.finditer(text, timeout=REGEX_TIMEOUT_S):
                if m.end() > start:
                    out.append(text[start:m.end()])
                    start = m.end()
        except TimeoutError:
            return [text] if text else []
        if start < len(text):
            out.append(text[start:])
        return out
    return split
