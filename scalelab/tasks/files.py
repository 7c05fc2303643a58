"""A user's task file as a `Task`: field mapping, problems, prompts and verification.

    task = load_task("gsm8k_test.jsonl")                       # format detected from the columns
    task = load_task("mc.csv", "choice", ["prompt=stem", "choices=A,B,C,D", "answer=key"])
    task.problems("test", 100), task.prompt(p), task.verify(p, completion)

Formats and their default columns (a `role=COLUMN` mapping overrides any of them; the columns of
public data sets each format recognises, and the detection order, are in `shapes.py`; file types,
compression and CSV cells in `reading.py`):

    gsm8k   question, answer (the worked solution ending in "#### N")
    math    problem, solution (answer inside the last \\boxed{}), answer (optional: wins over \\boxed{})
    choice  question, choices (a list, a JSON list, {text, label}, or several columns:
            choices=A,B,C,D), answer (the option's label, a letter, a 0-based index or its text)
    number  question, answer (a number: compared as numbers, so 8.0 = 8 and 1,000 = 1000)
    exact   question, answer (a string, or a list of accepted strings)
    regex   question, answer (or solution: the pattern's first group in it), with --regex PATTERN
    every   id (else the line number), split (else "test"), difficulty or level (numbers, text
            bins, MATH's "Level 3"; "Level ?" is no difficulty)

Bad input raises InputError naming the file, the line and what is wrong (one line on the CLI).
Answer extraction and the rules in their order are in `answers.py`; prompts in `prompting.py`.
"""
from __future__ import annotations

import random
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Hashable, Iterable, Sequence

from scalelab.errors import ConfigError, InputError
from scalelab.tasks import answers as A
from scalelab.tasks import shapes as S
from scalelab.tasks.base import Verdict
from scalelab.tasks.mathanswer import canonical as math_canonical, equivalent as math_equivalent
from scalelab.tasks.prompting import DEFAULT_TEMPLATE, Prompter
from scalelab.tasks.reading import parse_cell, read_rows
from scalelab.tasks.shapes import FORMATS, ROLES, detect_format

__all__ = ["FORMATS", "FileProblem", "FileTask", "detect_format", "load_task", "read_rows", "score", "summary"]
_LEVEL_RE = re.compile(r"^\s*level\s*(\d+|\?)\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class FileProblem:
    """One problem of a task file (hashable: strategies key pools and caches by problem)."""

    id: str
    split: str
    question: str                 # the prompt column, as written (the last user turn of a chat)
    answer: str                   # the reference answer as extracted, before normalisation
    solution: str                 # the worked solution (gsm8k, math), else ""
    choices: tuple[str, ...] = ()
    difficulty: Hashable | None = None
    line: int = 0
    context: tuple[tuple[str, str], ...] = ()   # (role, text) turns before the question (OpenAI evals)
    alternatives: tuple[str, ...] = ()          # other accepted answers (exact, number)


# ---- columns --------------------------------------------------------------------------------------------
def parse_fields(items: Iterable[str]) -> dict[str, str]:
    """['prompt=q', 'answer=a'] -> {'prompt': 'q', 'answer': 'a'}."""
    out = {}
    for item in items:
        role, sep, col = item.partition("=")
        role, col = role.strip(), col.strip()
        if not sep or not col:
            raise ConfigError(f"--field {item!r}: expected ROLE=COLUMN, e.g. prompt=question")
        if role not in ROLES:
            raise ConfigError(f"--field {item!r}: unknown role {role!r}; roles are {', '.join(ROLES)}")
        out[role] = col
    return out


def resolve_fields(fmt: str, fields: dict[str, str], columns: list[str], path: str) -> dict[str, Any]:
    """Role -> column after checking every column exists; choices and prompt may be a list of columns
    (options A,B,C,D; a prompt written over two columns, joined by `shapes.join_prompt`)."""
    found = ", ".join(columns)
    out: dict[str, Any] = {}
    for role, col in fields.items():
        multi = role in ("choices", "prompt") and col not in columns and "," in col
        cols = [c.strip() for c in col.split(",")] if multi else [col]
        missing = [c for c in cols if c not in columns]
        if missing:
            raise InputError(f"{path}: no column {missing[0]!r} for {role}; columns found: {found}")
        out[role] = cols if multi else col
    if "prompt" not in out and (pair := S.default_prompt(columns)) is not None:
        out["prompt"] = pair
    for role, names in {**S.COMMON, **S.DEFAULT_FIELDS[fmt]}.items():
        if role not in out and (hit := S.find(columns, names)) is not None:
            out[role] = hit
    if fmt == "choice" and "choices" not in out and S.letter_columns(columns):
        out["choices"] = S.letter_columns(columns)
    for role in S.REQUIRED[fmt] + (("answer",) if fmt == "choice" and "answer" not in out
                                   and not _self_marking(out.get("choices")) else ()):
        if role not in out:
            want = "/".join(S.DEFAULT_FIELDS[fmt][role])
            article = "an" if role[0] in "aeiou" else "a"
            raise InputError(f"{path}: {fmt} needs {article} {role} column ({want} or --field {role}=COLUMN); "
                             f"columns found: {found}")
    if fmt == "math" and "solution" not in out and "answer" not in out:
        raise InputError(f"{path}: math needs a solution or an answer column; columns found: {found}")
    return out


def _self_marking(col: Any) -> bool:
    """A choices column that marks its correct option itself (TruthfulQA's mc1_targets)."""
    return isinstance(col, str) and col.lower() in ("mc1_targets", "mc2_targets")


# ---- building problems ----------------------------------------------------------------------------------
def _text(value: Any) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return ""
    return value if isinstance(value, str) else str(value)


def _answers(value: Any) -> list[str]:
    """The accepted answers of a row: one value, or each item of a list (OpenAI evals' `ideal`)."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    items = value if isinstance(value, (list, tuple)) else [value]
    return [t for t in (_text(v).strip() for v in items) if t]


def parse_difficulty(value: Any) -> Hashable | None:
    """5 -> 5, '2.5' -> 2.5, 'Level 3' -> 3, 'hard' -> 'hard', missing or MATH's 'Level ?' -> None."""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, (int, float)):
        return None if value != value else (int(value) if float(value).is_integer() else float(value))
    s = _text(value).strip()
    if not s:
        return None
    if (m := _LEVEL_RE.match(s)) is not None:
        return None if m.group(1) == "?" else int(m.group(1))
    try:
        f = float(s)
    except ValueError:
        return s
    if f != f or f in (float("inf"), float("-inf")):
        return s
    return int(f) if f.is_integer() else f


def _prompt(row: dict, col: Any) -> tuple[tuple[tuple[str, str], ...], str]:
    """(turns before the question, the question) of a row: one column, two joined, or a chat."""
    if isinstance(col, list):
        return (), S.join_prompt([_text(row.get(c)) for c in col], col)
    value = row.get(col)
    if isinstance(value, str) and value.lstrip().startswith("[{"):  # a chat written into a CSV cell
        value = parse_cell(value) or value
    chat = S.messages(value)
    return chat if chat is not None else ((), _text(row.get(col)))


def build_problems(rows: list[tuple[int, dict]], fmt: str, cols: dict[str, Any], path: str,
                   pattern: Any = None) -> list[FileProblem]:
    out: list[FileProblem] = []
    seen_ids: dict[str, int] = {}
    empty_answers, first_empty = 0, 0
    for line, row in rows:
        where = f"{path} line {line}"
        get = lambda role: _text(row.get(cols[role])) if role in cols else ""  # noqa: E731
        context, question = _prompt(row, cols["prompt"])
        if not question.strip():
            raise InputError(f"{where}: empty {cols['prompt']!r}")
        raw_answer, solution, choices = row.get(cols["answer"]) if "answer" in cols else None, "", ()
        alternatives: tuple[str, ...] = ()
        answer: str | None
        if fmt == "gsm8k":
            solution = get("answer")
            answer = A.gsm8k_reference(solution)
            if answer is None and solution.strip():
                raise InputError(f"{where}: {cols['answer']!r} has no '#### N' final answer (mixed formats?)")
        elif fmt == "math":
            solution, given = get("solution"), get("answer").strip()
            answer = given or A.last_boxed(solution)
            if answer is None and solution.strip():
                raise InputError(f"{where}: no \\boxed{{}} answer in {cols['solution']!r} and no answer column")
            solution = solution or f"The answer is $\\boxed{{{answer}}}$."
        elif fmt == "choice":
            value = [row.get(c) for c in cols["choices"]] if isinstance(cols["choices"], list) else row.get(cols["choices"])
            choices, labels, correct = S.options(value, where)
            answer = S.choice_answer(raw_answer, choices, labels, correct)
            if answer is None and _text(raw_answer).strip():
                raise InputError(f"{where}: answer {_text(raw_answer)[:40]!r} is not among the {len(choices)} choices "
                                 f"({'a label ' + ', '.join(labels) + ', ' if labels else ''}a letter "
                                 f"A-{A.LETTERS[len(choices) - 1]}, an index 0-{len(choices) - 1} or an option's text)")
            solution = "" if answer is None else f"The answer is ({answer})."
        elif fmt == "regex" and not get("answer").strip() and get("solution").strip():
            solution = get("solution")
            answer = A.regex_extract(pattern, solution)
            if answer is None:
                raise InputError(f"{where}: the --regex pattern finds no answer in {cols['solution']!r}")
        else:
            accepted = _answers(raw_answer) if fmt in ("number", "exact") else [get("answer").strip()]
            answer, alternatives = (accepted[0] or None, tuple(accepted[1:])) if accepted else (None, ())
            bad = next((a for a in accepted if A.parse_number(a) is None), None) if fmt == "number" else None
            if bad is not None:
                raise InputError(f"{where}: answer {bad[:40]!r} is not a number (use --format exact for text answers)")
            solution = get("solution") or (answer or "")
        if answer is None or not answer.strip():
            empty_answers += 1
            first_empty = first_empty or line
            continue
        pid = get("id").strip() or str(line)
        if pid in seen_ids:
            raise InputError(f"{where}: id {pid!r} repeats line {seen_ids[pid]}")
        seen_ids[pid] = line
        out.append(FileProblem(pid, get("split").strip() or "test", question, answer.strip(), solution, choices,
                               parse_difficulty(row.get(cols["difficulty"])) if "difficulty" in cols else None, line,
                               context, alternatives))
    if not out:
        role = "solution" if fmt == "math" and "answer" not in cols else "answer"
        raise InputError(f"{path}: no answers: {role} is empty on every line")
    if empty_answers:
        raise InputError(f"{path} line {first_empty}: no answer ({empty_answers} of {len(rows)} lines lack one; "
                         "keep only the labelled rows, e.g. a split that has answers)")
    return out


# ---- the task -----------------------------------------------------------------------------------------
class FileTask:
    """A task file's problems behind the `Task` protocol (see scalelab/tasks/base.py)."""

    def __init__(self, problems: Sequence[FileProblem], fmt: str, *, name: str = "file",
                 prompter: Prompter | None = None, regex: str | None = None, max_new_tokens: int = 512,
                 stop: Sequence[str] | None = None, steps: str = "lines", detected: str = ""):
        if fmt not in FORMATS:
            raise ConfigError(f"--format {fmt!r}: choose one of auto, {', '.join(FORMATS)}")
        if fmt == "regex" and not regex:
            raise ConfigError("--format regex needs --regex PATTERN (its first group is the answer)")
        if not 1 <= max_new_tokens <= 1_000_000:
            raise ConfigError(f"--max-new-tokens {max_new_tokens}: must be in 1..1000000")
        self.name, self.format, self.all_problems = name, fmt, list(problems)
        self.prompter = prompter or Prompter()
        self.pattern = A.compile_regex(regex) if regex else None
        self.max_new_tokens = max_new_tokens
        # stop strings for the engine: in a plain few-shot prompt the model goes on with the next
        # "Question:"; a chat template ends the turn with its own end-of-turn token instead.
        plain_stop = ("\n" + self.prompter.template.split("{prompt}")[0].strip(),) \
            if self.prompter.template.split("{prompt}")[0].strip() else ()
        self.stop = tuple(stop) if stop is not None else (() if self.prompter.uses_chat else plain_stop)
        self._steps = A.step_splitter(steps)
        self.detected = detected

    # ---- problems
    def splits(self) -> dict[str, int]:
        return dict(Counter(p.split for p in self.all_problems))

    def difficulty_bins(self) -> dict[str, int]:
        counts = Counter(p.difficulty for p in self.all_problems if p.difficulty is not None)
        return {str(k): counts[k] for k in sorted(counts, key=lambda d: (isinstance(d, str), d))}

    def problems(self, split: str, n: int, *, difficulty: Hashable | None = None, seed: int = 0) -> list[FileProblem]:
        """Up to n problems of a split (and difficulty): a seeded sample, returned in file order."""
        if split not in self.splits():
            raise InputError(f"{self.name}: no split {split!r}; splits found: {', '.join(sorted(self.splits()))}")
        pool = [p for p in self.all_problems if p.split == split and (difficulty is None or p.difficulty == difficulty)]
        if not pool:
            raise InputError(f"{self.name}: split {split!r} has no problems of difficulty {difficulty!r}; "
                             f"difficulties found: {', '.join(self.difficulty_bins()) or 'none'}")
        if n >= len(pool):
            return pool
        keep = set(random.Random(seed).sample(range(len(pool)), n))
        return [p for i, p in enumerate(pool) if i in keep]

    def difficulty(self, problem: FileProblem) -> Hashable | None:
        return problem.difficulty

    # ---- text
    def question(self, problem: FileProblem) -> str:
        """The question as the model reads it inside the template (options listed for choice)."""
        if not problem.choices:
            return problem.question
        options = "\n".join(f"{A.LETTERS[k]}. {c}" for k, c in enumerate(problem.choices))
        return f"{problem.question}\n{options}"

    def prompt(self, problem: FileProblem) -> str:
        return self.prompter.render(self.question(problem), problem.context)

    def reference(self, problem: FileProblem) -> str:
        return problem.solution

    def max_tokens(self, problem: FileProblem) -> int:
        return self.max_new_tokens

    def chance(self, problem: FileProblem) -> float:
        """1/options for multiple choice; 0 for free answers (a guess is taken never to hit)."""
        return 1.0 / len(problem.choices) if self.format == "choice" else 0.0

    # ---- answers
    def extract(self, problem: FileProblem, completion: str) -> str | None:
        """The final answer's text in a completion, by the format's rules (answers.py), or None."""
        if self.format in ("gsm8k", "number"):
            return A.gsm8k_extract(completion)
        if self.format == "math":
            return A.math_extract(completion)
        if self.format == "choice":
            return A.choice_extract(completion, problem.choices)
        if self.format == "regex":
            return A.regex_extract(self.pattern, completion)
        return A.exact_extract(completion)

    def verify(self, problem: FileProblem, completion: str) -> Verdict:
        got = self.extract(problem, completion)
        if got is None:
            return Verdict(False, None, False, (), False)
        refs = (problem.answer, *problem.alternatives)
        if self.format in ("gsm8k", "number"):
            a = A.parse_number(got)
            ok = a is not None and any(A.numbers_equal(a, b, decimals="." in got + r) for r in refs
                                       if (b := A.parse_number(r)) is not None)
            key: Hashable = a if a is not None else got
        elif self.format == "math":
            ok, key = math_equivalent(got, problem.answer), math_canonical(got)
        elif self.format == "choice":
            ok, key = got == problem.answer, got
        else:
            key = A.exact_key(got)
            ok = any(key == A.exact_key(r) for r in refs)
        return Verdict(ok, key, ok, (), True)

    def split_steps(self, text: str) -> list[str]:
        return self._steps(text)

    def search_limits(self, problem: FileProblem) -> tuple[int, int]:
        """(step lines, tokens per line) for a line-by-line search within `max_new_tokens` in all:
        a line may take up to 128 tokens, and as many lines as fill the budget at 16 tokens a line."""
        per_line = min(self.max_new_tokens, 128)
        return max(1, -(-self.max_new_tokens // 16)), per_line

    def is_answer_line(self, step: str) -> bool:
        low = step[:A.MAX_SCAN].lower()
        if "answer is" in low or "answer:" in low:
            return True
        return {"gsm8k": "####" in step, "number": "####" in step, "math": "\\boxed" in step or "\\fbox" in step}.get(self.format, False)


def _notes(problems: list[FileProblem]) -> list[str]:
    """What a user should know before trusting an accuracy on this file."""
    out = []
    letters = {p.answer for p in problems if p.choices}
    if len(letters) == 1 and len(problems) >= 5:
        a = next(iter(letters))
        out.append(f"; note: the answer is {a} on every line (a model that always says {a} scores 1.0)")
    unbinned = sum(p.difficulty is None for p in problems)
    if 0 < unbinned < len(problems):
        out.append(f"; note: {unbinned} problem(s) have no difficulty and fall in no difficulty bin")
    return out


def load_task(path: str | Path, fmt: str = "auto", fields: Iterable[str] | dict[str, str] = (),
              regex: str | None = None, *, fewshot: str | Path | None = None, shots: int = 0,
              system: str | None = None, chat: str = "auto", tokenizer: Any = None,
              template: str = DEFAULT_TEMPLATE, max_new_tokens: int = 512, stop: Sequence[str] | None = None,
              steps: str = "lines") -> FileTask:
    """Read a task file into a FileTask; `task.detected` says which format and why."""
    path = str(path)
    if fmt not in ("auto",) + FORMATS:
        raise ConfigError(f"--format {fmt!r}: choose one of auto, {', '.join(FORMATS)}")
    if regex and fmt not in ("auto", "regex"):
        raise ConfigError(f"--regex applies to --format regex, not {fmt}")
    mapping = dict(fields) if isinstance(fields, dict) else parse_fields(fields)
    rows, columns = read_rows(path)
    if regex:
        fmt, why = "regex", "--regex was given"
    elif fmt == "auto":
        fmt, why = detect_format(rows, columns, mapping, path)
    else:
        why = "--format was given"
    pattern = A.compile_regex(regex) if regex else None
    problems = build_problems(rows, fmt, resolve_fields(fmt, mapping, columns, path), path, pattern)
    why += "".join(_notes(problems))
    shot_pairs: tuple[tuple[str, str], ...] = ()
    if shots < 0:
        raise ConfigError(f"--shots {shots}: must be 0 or more")
    if shots and fewshot is None:
        raise ConfigError("--shots needs --fewshot FILE (examples in the task's format)")
    if fewshot is not None:
        shot_task = load_task(fewshot, fmt, mapping, regex)
        if len(shot_task.all_problems) < shots:
            raise InputError(f"{fewshot}: {len(shot_task.all_problems)} examples, fewer than --shots {shots}")
        shot_pairs = tuple((shot_task.question(p), shot_task.reference(p)) for p in shot_task.all_problems[:shots])
    prompter = Prompter(template=template, system=system, shots=shot_pairs, chat=chat, tokenizer=tokenizer)
    return FileTask(problems, fmt, name=Path(path).name, prompter=prompter, regex=regex,
                    max_new_tokens=max_new_tokens, stop=stop, steps=steps, detected=f"{fmt}: {why}")


def summary(task: FileTask, examples: int = 2, split: str | None = None) -> dict[str, Any]:
    """What `scalelab tasks show` prints: format, counts, splits, difficulty bins, first prompts."""
    return {"format": task.format, "detected": task.detected, "n_problems": len(task.all_problems),
            "splits": task.splits(), "difficulties": task.difficulty_bins(), "chat_template": task.prompter.uses_chat,
            "stop": list(task.stop),
            "examples": [{"id": p.id, "prompt": task.prompt(p), "answer": p.answer}
                         for p in (task.all_problems if split is None else
                                   task.problems(split, len(task.all_problems)))[:examples]]}


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """The text up to the first stop string (a completion generated without stop strings runs on into
    the next few-shot question, whose numbers would otherwise be read as its answer)."""
    cut = min((i for i in (text.find(s) for s in stop) if i >= 0), default=len(text))
    return text[:cut]


def score(task: FileTask, completions: str | Path) -> dict[str, Any]:
    """Accuracy of a completions file (JSONL with `completion`, matched by `id` or by line order), each
    completion cut at the task's first stop string as the engine would have stopped it."""
    rows, _ = read_rows(completions)
    problems = task.all_problems
    for line, r in rows:
        if not isinstance(r.get("completion"), str):
            raise InputError(f"{completions} line {line}: no 'completion' string")
    if all("id" in r for _, r in rows):
        by_id = {p.id: p for p in problems}
        matched = []
        for line, r in rows:
            if str(r["id"]) not in by_id:
                raise InputError(f"{completions} line {line}: id {str(r['id'])!r} is not a problem of {task.name}")
            matched.append(by_id[str(r["id"])])
    elif len(rows) != len(problems):
        raise InputError(f"{completions}: {len(rows)} completions for {len(problems)} problems "
                         "(without an id on every line they are matched by line order)")
    else:
        matched = problems
    verdicts = [task.verify(p, cut_at_stop(r["completion"], task.stop)) for p, (_, r) in zip(matched, rows)]
    correct = [v.correct for v in verdicts]
    return {"accuracy": sum(correct) / len(correct), "n": len(correct), "correct": correct,
            "ids": [p.id for p in matched], "answers": [None if v.answer is None else str(v.answer) for v in verdicts]}
