"""Which columns of a task file play which role, and what format the file is in.

Public data sets name their columns in many ways; the defaults below cover the ones users bring as
they ship (column names matched without regard to case). A `--field ROLE=COLUMN` overrides any.

    GSM8K            question, answer ("... #### 72")                          -> gsm8k
    MATH, MATH-500   problem, solution (\\boxed{}), answer, level ("Level 3")     -> math
    MMLU             question, choices (list), answer (0-based index)           -> choice
    MMLU's CSV       no header: question, A, B, C, D, answer letter             -> choice
    ARC, CSQA, OBQA  question / question_stem, choices {text, label}, answerKey -> choice (via the labels)
    HellaSwag        ctx, endings, label ("3")                                  -> choice
    TruthfulQA MC    question, mc1_targets {choices, labels: one 1}             -> choice
    AQuA-RAT         question, options ["A)21", ...], correct                   -> choice (prefixes dropped)
    MathQA           Problem, options "a ) 38 , b ) 27 , ...", correct          -> choice
    SVAMP            Body + Question, Answer (8.0)                              -> number
    OpenAI evals     input (chat messages), ideal (a string or a list)          -> exact / number
    Alpaca           instruction + input, output                                -> exact
    HumanEval, MBPP  test / entry_point / test_list                             -> refused (scalelab runs no code)
"""
from __future__ import annotations

import re
from typing import Any

from scalelab.errors import InputError
from scalelab.tasks import answers as A
from scalelab.tasks.reading import parse_cell

FORMATS = ("gsm8k", "math", "choice", "number", "exact", "regex")
ROLES = ("prompt", "answer", "solution", "choices", "difficulty", "id", "split")
_QUESTION = ("question", "problem", "prompt", "input", "query")
_ANSWER = ("answer", "answerkey", "correct", "label", "ideal", "target", "output", "gold")
COMMON = {"difficulty": ("difficulty", "level"), "id": ("id", "task_id", "unique_id", "idx", "qid", "question_id"),
          "split": ("split",)}
DEFAULT_FIELDS: dict[str, dict[str, tuple[str, ...]]] = {
    "gsm8k": {"prompt": ("question", "problem"), "answer": ("answer",)},
    "math": {"prompt": ("problem", "question"), "solution": ("solution",), "answer": ("answer",)},
    "choice": {"prompt": ("question", "problem", "question_stem", "ctx", "query", "prompt", "input"),
               "choices": ("choices", "options", "endings", "mc1_targets"), "answer": _ANSWER},
    "number": {"prompt": _QUESTION, "answer": _ANSWER, "solution": ("solution", "rationale")},
    "exact": {"prompt": _QUESTION, "answer": _ANSWER},
    "regex": {"prompt": _QUESTION, "answer": ("answer",), "solution": ("solution",)},
}
# a choice file needs an answer column too, unless its choices mark the correct one (files.resolve_fields)
REQUIRED = {"gsm8k": ("prompt", "answer"), "math": ("prompt",), "choice": ("prompt", "choices"),
            "number": ("prompt", "answer"), "exact": ("prompt", "answer"), "regex": ("prompt",)}
# prompts written over two columns: (first, second, separator); an empty second part is left out
COMPOSITE_PROMPTS = (("body", "question", " "), ("instruction", "input", "\n\n"))
_CODE = (({"test", "entry_point"}, "HumanEval"), ({"test_list"}, "MBPP"), ({"input_output"}, "APPS"))


def find(columns: list[str], names: tuple[str, ...]) -> str | None:
    """The first of `names` among the columns, matched exactly, else without regard to case."""
    for n in names:
        if n in columns:
            return n
    lower = {c.lower(): c for c in reversed(columns)}
    return next((lower[n] for n in names if n in lower), None)


def letter_columns(columns: list[str]) -> list[str]:
    """Option columns named A, B, C, ... (C-Eval, MMLU's CSV): two or more, consecutive from A."""
    out = []
    for letter in A.LETTERS:
        if letter not in columns:
            break
        out.append(letter)
    return out if len(out) >= 2 else []


def default_prompt(columns: list[str]) -> list[str] | None:
    """A prompt made of two columns (SVAMP's Body + Question, Alpaca's instruction + input)."""
    for first, second, _ in COMPOSITE_PROMPTS:
        a, b = find(columns, (first,)), find(columns, (second,))
        if a and b:
            return [a, b]
    return None


def join_prompt(parts: list[str], cols: list[str]) -> str:
    seps = {(f, s): sep for f, s, sep in COMPOSITE_PROMPTS}
    sep = seps.get(tuple(c.lower() for c in cols), "\n\n")  # type: ignore[arg-type]
    return sep.join(p.strip() for p in parts if p.strip())


def _numeric(value: Any) -> bool:
    return not isinstance(value, bool) and A.parse_number(str(value)) is not None


def detect_format(rows: list[tuple[int, dict]], columns: list[str], fields: dict[str, str],
                  path: str) -> tuple[str, str]:
    """(format, why) from the columns and, for question/answer files, from the answers."""
    low = {c.lower() for c in columns}
    for needs, name in _CODE:
        if needs <= low and not fields:
            raise InputError(f"{path}: a code-generation task ({name}-style columns {', '.join(sorted(needs))}): "
                             "it is judged by running the model's code, which scalelab never does; "
                             "give --format exact --field prompt=COLUMN answer=COLUMN to match text instead")
    choices = fields.get("choices") or find(columns, DEFAULT_FIELDS["choice"]["choices"])
    if choices:
        return "choice", f"column {choices!r} holds the options"
    if letter_columns(columns) and (fields.get("answer") or find(columns, _ANSWER)):
        cols = letter_columns(columns)
        return "choice", f"columns {', '.join(cols)} hold the options"
    answer_col = fields.get("answer") or find(columns, _ANSWER)
    given = [(line, r.get(answer_col)) for line, r in rows if not _blank(r.get(answer_col))] if answer_col else []
    with_mark = [line for line, v in given if "####" in str(v)]
    worked = "solution" in fields or "solution" in low
    if given and len(with_mark) == len(given) and not worked:  # before math: GSM8K rows named "problem"
        return "gsm8k", f"every {answer_col!r} ends in '#### N'"
    if worked or "problem" in low:
        return "math", "columns problem/solution (answers inside \\boxed{})"
    if answer_col in columns:
        if with_mark:
            line = next(line for line, v in given if "####" not in str(v))
            raise InputError(f"{path} line {line}: mixed formats: {answer_col!r} has no '#### N' while line "
                             f"{with_mark[0]} has one; give --format or fix the file")
        if given and all(_numeric(v) for _, v in given):
            return "number", f"every {answer_col!r} is a number (compared as numbers: 8.0 = 8, 1,000 = 1000)"
        return "exact", f"column {answer_col!r} holds plain answers (no '####')"
    raise InputError(f"{path}: cannot detect the format from the columns {', '.join(columns)}; "
                     "give --format and --field prompt=COLUMN answer=COLUMN")


def _blank(value: Any) -> bool:
    if value is None or (isinstance(value, float) and value != value):
        return True
    if isinstance(value, (list, tuple)):
        return not value
    return isinstance(value, str) and not value.strip()


# ---- options of a multiple-choice row -----------------------------------------------------------------
_PREFIX_RE = re.compile(r"^\s*\(?([A-Za-z])\s*[).:]\s*")
_MARKER_RE = re.compile(r"(?:^|,)\s*([a-z])\s*\)\s*", re.IGNORECASE)


def _strip_prefixes(options: list[str]) -> list[str]:
    """['A)21', 'B)21.5'] -> ['21', '21.5'] when every option i carries the i-th letter (AQuA-RAT)."""
    found = [_PREFIX_RE.match(o) for o in options]
    if all(m is not None and m.group(1).upper() == A.LETTERS[i] for i, m in enumerate(found)):
        return [o[m.end():].strip() for o, m in zip(options, found)]  # type: ignore[union-attr]
    return options


def _lettered_string(text: str) -> list[str] | None:
    """MathQA's 'a ) rs . 400 , b ) rs . 300 , ...': markers a), b), ... in order, split there."""
    starts, pos = [], 0
    for letter in A.LETTERS.lower():
        m = next((m for m in _MARKER_RE.finditer(text, pos) if m.group(1).lower() == letter), None)
        if m is None:
            break
        starts.append(m)
        pos = m.end()
    if len(starts) < 2 or starts[0].start() != 0:
        return None
    ends = [m.start() for m in starts[1:]] + [len(text)]
    return [text[m.end():end].strip() for m, end in zip(starts, ends)]


def options(value: Any, where: str) -> tuple[tuple[str, ...], list[str] | None, int | None]:
    """(options, their labels or None, the index marked correct or None) of one row's choices cell:
    a list; a JSON, Python or numpy list written as text; ARC's {text, label}; TruthfulQA's
    {choices, labels}; MathQA's 'a ) x , b ) y'. Letter prefixes ('A)21') are dropped."""
    if isinstance(value, str):
        text = value
        value = parse_cell(text)
        if value is None:
            value = _lettered_string(text)
        if value is None:
            raise InputError(f"{where}: choices {text[:60]!r} is not a list (give a JSON list or "
                             "--field choices=COL1,COL2,...)")
    if hasattr(value, "tolist"):
        value = value.tolist()  # a Parquet list column arrives as a numpy array
    labels, correct = None, None
    if isinstance(value, dict):
        value = {k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in value.items()}
        if "text" in value:
            labels = [str(x).strip() for x in value.get("label") or []] or None
            value = value["text"]
        elif "choices" in value and "labels" in value:
            marks = [int(x) for x in value["labels"]]
            if marks.count(1) != 1:
                raise InputError(f"{where}: {marks.count(1)} options are marked correct; a choice task has exactly "
                                 "one (TruthfulQA: use mc1_targets, not mc2_targets)")
            correct, value = marks.index(1), value["choices"]
        else:
            raise InputError(f"{where}: choices is a record with keys {', '.join(map(str, value))}; expected a list, "
                             "{text, label} or {choices, labels}")
    if not isinstance(value, (list, tuple)) or not 2 <= len(value) <= 26:
        raise InputError(f"{where}: choices must be a list of 2 to 26 options")
    out = _strip_prefixes(["" if v is None else str(v) for v in value])
    if labels is not None and len(labels) != len(out):
        raise InputError(f"{where}: {len(out)} options but {len(labels)} labels")
    return tuple(out), labels, correct


def choice_answer(raw: Any, opts: tuple[str, ...], labels: list[str] | None, correct: int | None) -> str | None:
    """The correct option's letter: from the options' own labels first (ARC's answerKey '3' with
    labels '1'..'4' is the third option, C), else a letter, a 0-based index or an option's text."""
    if correct is not None:
        return A.LETTERS[correct]
    if _blank(raw):
        return None
    if labels is not None:
        key = str(raw).strip()
        if key in labels:
            return A.LETTERS[labels.index(key)]
    if hasattr(raw, "item"):
        raw = raw.item()  # numpy scalars from Parquet
    return A.choice_reference(raw, opts)


def messages(value: Any) -> tuple[tuple[tuple[str, str], ...], str] | None:
    """An OpenAI-evals `input` (a list of {role, content}) -> (the turns before, the last user turn)."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if not isinstance(value, list) or not value or not all(isinstance(m, dict) and "content" in m for m in value):
        return None
    turns = tuple((str(m.get("role", "user")), "" if m["content"] is None else str(m["content"])) for m in value)
    if turns[-1][0] != "user":
        return None
    return turns[:-1], turns[-1][1]
