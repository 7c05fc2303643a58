"""The embedded testbed: multi-step modular arithmetic with worked solutions and an exact verifier.

A problem picks a modulus m and an operation (together the "skill"), a start value and k labelled
operands (the "number of steps"); the answer applies the operation step by step modulo m::

    Q23*:9 a6 b19 c4          worked question: "Q", modulus, operation, ":", start, labelled operands
    a:9*6=8                   one step per line: previous value, operation, operand, result
    b:8*19=3                  ...a step may be wrong (the corpus injects errors at rate p_error)
    !b:8*19=14                ...and is then corrected on a line that starts with "!"
    c:14*4=10
    A:10                      final-answer line

    D23*:9 a6 b19 c4          direct question: the answer with no worked steps
    A:10

    =04711:385                optional fact document (`p_facts`): a key and its fixed value, to memorise

Why this shape (see FINDINGS.md and docs/LOG.md): labelling each operand lets a small model find
operand i by matching its label instead of counting, which makes the task learnable on a CPU.
One operation per problem, stated once in the header: with a different operation at every step,
models of 200k parameters copied every operand but never learned which operation came next
(loss on that character stayed at ln 3 through 4M tokens). One narrow skill also
learns by a sharp phase transition and gives a bad power-law fit, so the corpus
holds many sub-skills of graded difficulty at power-law frequencies, following the quantization
model of neural scaling (Michaud et al. 2023, "The Quantization Model of Neural Scaling"): every
modulus m brings its own addition, subtraction and multiplication tables (3·m² facts), moduli are
drawn with Zipf frequencies P(m) ∝ (m − m_min + 1)^(−s), and bigger tables are both rarer and
larger, so they are learned later by bigger models and with more data.

Everything random is a choice of the generator with a known probability, and the text is an
injective function of those choices, so the generator's negative log-likelihood of a document is
exactly the loss of the Bayes-optimal model on it: `entropy_floor` is that NLL summed over the
evaluation documents divided by their counted tokens (nats per token), known in closed form.

Splits never overlap: the (start value, first operand) pairs of each modulus are ranked by a
fixed hash; the first fraction go to validation, the next to test, the rest to training, and the
training generator draws its first pair uniformly from the training pairs only. The distribution
stays exact (uniform over a known set), so the floor stays exact.

Correctness is strict: `verify` parses the completion with fixed patterns, never evaluates text,
and a worked sample counts as correct only when every step and the final answer are right. The
chance of guessing a whole k-step solution is m^(−k); of a direct answer, 1/m (`chance`).
"""
from __future__ import annotations

import hashlib
import math
import random
import re
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from typing import Any, Iterable

import numpy as np
from pydantic import Field, model_validator

from scalelab.config import Config
from scalelab.errors import ConfigError
from scalelab.tasks.base import Verdict, split_lines

LABELS = "abcdefghijkl"
OPS = "+-*"
ALPHABET = "0123456789" + "QDA!:= \n" + OPS + LABELS
BOS_CHAR, EOS_CHAR = "\x02", "\x03"  # placeholders in generated text, mapped to the tokenizer's specials
_MAX_INT_DIGITS = 4  # moduli are < 1000, so every value fits in 3 digits; parse at most 4


class TestbedConfig(Config):
    """The generator's dials. Defaults give a task whose loss scales smoothly on CPU budgets."""

    __test__ = False  # not a pytest class despite the name

    min_modulus: int = Field(2, ge=2, le=997, description="smallest modulus (number size)")
    max_modulus: int = Field(40, ge=2, le=997, description="largest modulus")
    modulus_zipf: float = Field(1.2, ge=0.0, le=4.0, description="P(m) ∝ (m - min + 1)^-s")
    ops: str = Field(OPS, min_length=1, description="operations to draw from, a subset of +-*")
    max_steps: int = Field(8, ge=1, le=len(LABELS), description="steps k are uniform on 1..max")
    p_direct: float = Field(0.25, ge=0.0, le=1.0, description="share of direct-answer items")
    p_error: float = Field(0.05, ge=0.0, lt=0.5, description="per-step injected, corrected error")
    p_facts: float = Field(0.0, ge=0.0, lt=1.0, description="share of fact documents (memorised, see `fact_text`)")
    facts: int = Field(20_000, ge=1, le=10**6, description="distinct facts: keys 0..facts-1")
    facts_zipf: float = Field(1.5, ge=0.0, le=4.0, description="P(fact of rank r) ∝ r^-s")
    fact_values: int = Field(1000, ge=2, le=10**6, description="a fact's value is one of this many")
    heldout_fraction: float = Field(1 / 32, gt=0.0, le=0.25, description="pairs for val and for test, each")
    eval_docs: int = Field(2000, ge=10, le=1_000_000, description="documents in the held-out loss set")
    eval_seed: int = Field(20261125, description="seed of the held-out loss set")

    @model_validator(mode="after")
    def _check(self) -> "TestbedConfig":
        if self.min_modulus > self.max_modulus:
            raise ValueError(f"min_modulus={self.min_modulus} > max_modulus={self.max_modulus}")
        bad = sorted(set(self.ops) - set(OPS))
        if bad or len(set(self.ops)) != len(self.ops):
            raise ValueError(f"ops={self.ops!r}: must be distinct characters from {OPS!r}")
        return self


# Fact documents ("=04711:385"): a key drawn with Zipf frequencies over `facts` keys, and its value,
# a fixed pseudo-random function of the key. The key costs its exact log-probability (part of the
# floor); the value is free to a model that has memorised the fact and ln(fact_values) nats to one
# that has not. Memorising random facts is bounded by capacity (about 2 bits per parameter, Allen-Zhu
# & Li 2024, "Physics of Language Models 3.3") and by exposures, and many small quanta at Zipf
# frequencies give a loss that falls as a power law in both N and D (Michaud et al. 2023; Hutter
# 2021): what the arithmetic's few dozen tables alone could not give on CPU budgets, where the
# step that learns one table is a phase transition and single runs differ by 0.006-0.015 nats with
# the seed (docs/LOG.md, 2026-12-03).
FACT_CHAR = "="


def fact_text(key: int, cfg: TestbedConfig) -> str:
    value = int.from_bytes(hashlib.blake2b(f"scalelab-fact:{key}".encode(), digest_size=8).digest(), "big")
    w, v = len(str(cfg.facts - 1)), len(str(cfg.fact_values - 1))
    return f"{FACT_CHAR}{key:0{w}d}:{value % cfg.fact_values:0{v}d}\n"


# ---- problems ---------------------------------------------------------------------------------
def apply_op(x: int, op: str, y: int, m: int) -> int:
    if op == "+":
        return (x + y) % m
    if op == "-":
        return (x - y) % m
    if op == "*":
        return (x * y) % m
    raise ValueError(f"unknown operation {op!r}")


@dataclass(frozen=True)
class Problem:
    modulus: int
    start: int
    ops: tuple[tuple[str, int], ...]  # (operation, operand) per step

    @property
    def steps(self) -> int:
        return len(self.ops)

    @cached_property
    def values(self) -> tuple[int, ...]:
        """Start value, then the value after each step."""
        vals = [self.start]
        for op, y in self.ops:
            vals.append(apply_op(vals[-1], op, y, self.modulus))
        return tuple(vals)

    @property
    def answer(self) -> int:
        return self.values[-1]

    @property
    def op(self) -> str:
        """The problem's operation (every step of a generated problem uses the same one)."""
        return self.ops[0][0]

    def question(self, direct: bool = False) -> str:
        if any(op != self.op for op, _ in self.ops):
            raise ValueError("the question format states one operation per problem")
        body = " ".join(f"{LABELS[i]}{y}" for i, (_, y) in enumerate(self.ops))
        return f"{'D' if direct else 'Q'}{self.modulus}{self.op}:{self.start} {body}\n"

    def step_line(self, i: int, result: int | None = None) -> str:
        op, y = self.ops[i]
        r = self.values[i + 1] if result is None else result
        return f"{LABELS[i]}:{self.values[i]}{op}{y}={r}\n"

    def solution(self, errors: dict[int, int] | None = None) -> str:
        """Worked solution; `errors` maps a step to a wrong result that is then corrected."""
        lines = []
        for i in range(self.steps):
            if errors and i in errors:
                lines.append(self.step_line(i, errors[i]))
                lines.append("!" + self.step_line(i))
            else:
                lines.append(self.step_line(i))
        return "".join(lines) + f"A:{self.answer}\n"

    def split(self, heldout_fraction: float = 1 / 32) -> str:
        return split_of(self.modulus, self.start, self.ops[0][1], heldout_fraction)


@lru_cache(maxsize=None)
def _pair_splits(m: int, fraction: float) -> dict[str, np.ndarray]:
    """(start, first operand) pairs of modulus m as flat indices start*m + operand, by split."""
    keys = np.array(
        [int.from_bytes(hashlib.blake2b(f"scalelab-testbed:{m}:{i}".encode(), digest_size=8).digest(), "big")
         for i in range(m * m)], dtype=np.uint64)
    order = np.argsort(keys, kind="stable")
    n_held = max(1, round(fraction * m * m))
    return {"val": np.sort(order[:n_held]), "test": np.sort(order[n_held:2 * n_held]),
            "train": np.sort(order[2 * n_held:])}


def split_of(m: int, start: int, first_operand: int, fraction: float = 1 / 32) -> str:
    idx = start * m + first_operand
    for name in ("val", "test"):
        arr = _pair_splits(m, fraction)[name]
        j = np.searchsorted(arr, idx)
        if j < len(arr) and arr[j] == idx:
            return name
    return "train"


# ---- the generator ---------------------------------------------------------------------------
class Generator:
    """Draws problems and documents; every draw also returns its exact log-probability."""

    def __init__(self, config: TestbedConfig):
        self.cfg = config
        self.moduli = list(range(config.min_modulus, config.max_modulus + 1))
        w = np.array([(m - config.min_modulus + 1.0) ** -config.modulus_zipf for m in self.moduli])
        self.p_modulus = w / w.sum()
        self._cum = np.cumsum(self.p_modulus).tolist()
        self._cum[-1] = 1.0
        self._log_p_modulus = dict(zip(self.moduli, np.log(self.p_modulus).tolist()))

    @cached_property
    def _fact_cum(self) -> tuple[list[float], np.ndarray, np.ndarray]:
        """Per fact rank: the cumulative Zipf probability, the log-probability, and the key (a fixed
        shuffle of the ranks, so a key's digits say nothing about its frequency)."""
        w = np.arange(1, self.cfg.facts + 1, dtype=np.float64) ** -self.cfg.facts_zipf
        cum = np.cumsum(w / w.sum()).tolist()
        cum[-1] = 1.0
        keys = np.random.default_rng(20261203).permutation(self.cfg.facts)
        return cum, np.log(w / w.sum()), keys

    def fact(self, rng: random.Random) -> tuple[str, float]:
        cum, logp, keys = self._fact_cum
        r = _bisect(cum, rng.random())
        return fact_text(int(keys[r]), self.cfg), float(logp[r])

    def pairs(self, m: int, split: str) -> np.ndarray:
        return _pair_splits(m, self.cfg.heldout_fraction)[split]

    def problem(self, rng: random.Random, split: str = "train", *, steps: int | None = None,
                modulus: int | None = None) -> tuple[Problem, float]:
        cfg = self.cfg
        logp = 0.0
        if modulus is None:
            m = self.moduli[_bisect(self._cum, rng.random())]
            logp += self._log_p_modulus[m]
        else:
            m = modulus
        if steps is None:
            k = rng.randint(1, cfg.max_steps)
            logp -= math.log(cfg.max_steps)
        else:
            k = steps
        pairs = self.pairs(m, split)
        pair = int(pairs[rng.randrange(len(pairs))])
        logp -= math.log(len(pairs))
        start, first = divmod(pair, m)
        op = rng.choice(cfg.ops)
        ops = [(op, first)] + [(op, rng.randrange(m)) for _ in range(k - 1)]
        logp -= math.log(len(cfg.ops)) + (k - 1) * math.log(m)
        return Problem(m, start, tuple(ops)), logp

    def document(self, rng: random.Random) -> tuple[str, float]:
        """One training document (without separators) and its exact log-probability."""
        cfg = self.cfg
        logp = 0.0
        if cfg.p_facts > 0:
            if rng.random() < cfg.p_facts:
                text, lp = self.fact(rng)
                return text, math.log(cfg.p_facts) + lp
            logp = math.log(1.0 - cfg.p_facts)
        direct = rng.random() < cfg.p_direct
        logp += math.log(cfg.p_direct if direct else 1.0 - cfg.p_direct) if 0 < cfg.p_direct < 1 else 0.0
        prob, lp = self.problem(rng)
        logp += lp
        if direct:
            return prob.question(direct=True) + f"A:{prob.answer}\n", logp
        errors = {}
        for i in range(prob.steps):
            if cfg.p_error > 0 and rng.random() < cfg.p_error:
                right = prob.values[i + 1]
                wrong = rng.randrange(prob.modulus - 1)
                errors[i] = wrong + (wrong >= right)  # uniform over the m - 1 wrong values
                logp += math.log(cfg.p_error) - math.log(prob.modulus - 1)
            elif cfg.p_error > 0:
                logp += math.log(1.0 - cfg.p_error)
        return prob.question() + prob.solution(errors), logp


def _bisect(cum: list[float], u: float) -> int:
    lo, hi = 0, len(cum) - 1
    while lo < hi:
        mid = (lo + hi) // 2
        if cum[mid] <= u:
            lo = mid + 1
        else:
            hi = mid
    return lo


def stable_rng(*parts: int | str) -> random.Random:
    """A Mersenne Twister seeded from a stable hash of `parts` (same stream on every platform)."""
    digest = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=16).digest()
    return random.Random(int.from_bytes(digest, "big"))


# ---- verifier ---------------------------------------------------------------------------------
_NUM = r"(0|[1-9][0-9]{0,%d})" % (_MAX_INT_DIGITS - 1)
_STEP_RE = re.compile(rf"^(!?)([{LABELS}]):{_NUM}([+\-*]){_NUM}={_NUM}$")
_ANSWER_RE = re.compile(rf"^A:{_NUM}$")


def verify(problem: Problem, completion: str, *, direct: bool = False) -> Verdict:
    """Check a completion (the text after the question) against the problem, strictly.

    Lines are matched against fixed patterns; numbers must be plain decimals; nothing in the
    text is ever evaluated. The first "A:" line is the answer; text after it is ignored.
    """
    lines = completion.replace(EOS_CHAR, "\n").split("\n")
    answer: int | None = None
    steps: dict[int, bool] = {}
    order: list[int] = []
    well_formed = True
    for line in lines:
        if not line:
            continue
        if (am := _ANSWER_RE.match(line)) is not None:
            answer = int(am.group(1))
            break
        sm = _STEP_RE.match(line)
        if sm is None or direct:
            well_formed = False
            continue
        bang, label, x, op, y, r = sm.groups()
        i = LABELS.index(label)
        if i >= problem.steps:
            well_formed = False
            continue
        ok = (int(x) == problem.values[i] and op == problem.ops[i][0] and int(y) == problem.ops[i][1]
              and int(r) == problem.values[i + 1])
        if bang:  # a correction replaces the step it corrects
            if i not in steps:
                well_formed = False
            steps[i] = ok
        else:
            if i in steps or (order and i != order[-1] + 1) or (not order and i != 0):
                well_formed = False
            steps[i] = ok
            order.append(i)
    answer_correct = answer is not None and answer == problem.answer
    if direct:
        return Verdict(answer_correct, answer, answer_correct, (), well_formed)
    per_step = tuple(steps.get(i, False) for i in range(problem.steps))
    correct = answer_correct and well_formed and all(per_step) and order == list(range(problem.steps))
    return Verdict(correct, answer, answer_correct, per_step, well_formed)


def chance(problem: Problem, *, direct: bool = False) -> float:
    """Probability that uniform guessing is counted correct (see `verify`)."""
    return 1.0 / problem.modulus if direct else float(problem.modulus) ** -problem.steps


# ---- evaluation problems and the test-time task ----------------------------------------------
def draw_problems(gen: Generator, split: str, n: int, *, steps: int, modulus: int | Iterable[int] | None = None,
                  seed: int = 0) -> list[Problem]:
    """`n` distinct problems of a split with `steps` steps; moduli from the natural mix or given."""
    cfg = gen.cfg
    if split not in ("train", "val", "test"):
        raise ConfigError(f"split={split!r}: must be train, val or test")
    if not 1 <= steps <= cfg.max_steps:
        raise ConfigError(f"steps={steps}: must be in 1..{cfg.max_steps}")
    allowed = None if modulus is None else ([modulus] if isinstance(modulus, int) else list(modulus))
    rng = stable_rng("problems", split, steps, seed, cfg.heldout_fraction)
    out, seen = [], set()
    for _ in range(200 * n):
        m = None if allowed is None else allowed[rng.randrange(len(allowed))]
        p, _ = gen.problem(rng, split, steps=steps, modulus=m)
        if p not in seen:
            seen.add(p)
            out.append(p)
            if len(out) == n:
                return out
    return out  # the split holds fewer distinct problems of this shape than asked


@dataclass(frozen=True)
class TestbedTask:
    """The testbed behind the `Task` protocol: prompts, verdicts, answers, steps.

    Difficulty is the number of steps. `direct` asks for the answer with no worked steps.
    """

    __test__ = False
    direct: bool = False
    config: TestbedConfig | None = field(default=None, compare=False)
    name = "testbed"

    @cached_property
    def _gen(self) -> Generator:
        return Generator(self.config or TestbedConfig())

    def problems(self, split: str, n: int, *, difficulty: Any = None, seed: int = 0,
                 modulus: int | Iterable[int] | None = None) -> list[Problem]:
        if difficulty is None:
            raise ConfigError("testbed problems are drawn per difficulty (number of steps)")
        return draw_problems(self._gen, split, n, steps=int(difficulty), modulus=modulus, seed=seed)

    def difficulty(self, p: Problem) -> int:
        return p.steps

    def prompt(self, p: Problem) -> str:
        return "<bos>" + p.question(direct=self.direct)

    def reference(self, p: Problem) -> str:
        return f"A:{p.answer}\n" if self.direct else p.solution()

    def verify(self, p: Problem, completion: str) -> Verdict:
        return verify(p, completion, direct=self.direct)

    def chance(self, p: Problem) -> float:
        return chance(p, direct=self.direct)

    def max_tokens(self, p: Problem) -> int:
        """Room for every step, each corrected once, and the answer line (testbed format)."""
        if self.direct:
            return 8
        width = len(str(p.modulus))
        return p.steps * 2 * (3 * width + 6) + width + 8

    def split_steps(self, text: str) -> list[str]:
        return split_lines(text)

    def search_limits(self, p: Problem) -> tuple[int, int]:
        """(step lines, tokens per line) for a search: every step corrected once, and the answer line;
        the longest line, "!h:999*999=999\n", is 15 characters."""
        return 2 * p.steps + 2, 24

    @staticmethod
    def is_answer_line(line: str) -> bool:
        return line.startswith("A:")


def check_testbed_tokenizer(eng: Any, name: str) -> None:
    """Strategies write testbed text; a tokenizer that cannot encode it cannot take part."""
    try:
        eng.encode(ALPHABET + "<bos>")
    except Exception as e:  # tokenizers raises its own exception types for unknown characters
        raise ConfigError(f"{name}: its tokenizer cannot encode the testbed's characters "
                          f"({' '.join(str(e).split())[:120]}); test-time strategies run on testbed policies") from None
