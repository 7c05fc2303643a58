"""Verifiers: the testbed's exact checker, and learned reward models that score solutions.

Exact verifier: `scalelab.testbed.verify` (strict patterns, nothing evaluated). Here it is wrapped
as `TestbedTask`, which also knows the prompt format and how a solution splits into steps.

Reward models. An outcome reward model (ORM) gives one score per solution, a process reward
model (PRM) one score per step line. Both are causal LMs (`AutoModelForCausalLM`, safetensors)
that read the question and the solution and give a score at a query position as the probability
of a "good" label token against a "bad" one: P = sigmoid(logit["+"] - logit["-"]) at the last
token of a step line (PRM: every line; ORM: the last line). Math-Shepherd (Wang et al. 2024,
"Math-Shepherd: Verify and Reinforce LLMs Step-by-step without Human Annotations") trains its PRM
the same way, as a language model predicting a "+"/"-" tag after each step. Why this rather than
a scalar head:
  - the reward model starts as a copy of the policy, so it reads solutions with the policy's own
    arithmetic already in place (a verifier from scratch would have to learn the tables again);
  - it stays an ordinary causal-LM checkpoint: the same loader, engine session and FLOP meter;
  - it is causal, so the score of step i sees only the prefix up to step i: scoring a partial
    solution during search gives exactly the score that step gets inside the full solution, and
    a search can feed a reward model line by line through a KV-cache session.

A reward model directory holds the checkpoint, its tokenizer and `reward.json` (kind, label
tokens, the policy it was trained on, its tokenizer's vocabulary hash). A reward model built for
another tokenizer is refused (`check_tokenizer`).
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from scalelab.errors import InputError
from scalelab.testbed import Problem, Verdict, chance, verify

REWARD_FILE = "reward.json"
GOOD, BAD = "+", "-"  # label tokens; both are characters of the testbed alphabet
LINE = "\n"


# ---- the exact verifier and the task format ---------------------------------------------------
@dataclass(frozen=True)
class TestbedTask:
    """How strategies talk to the testbed: prompts, verdicts, answers, steps."""

    __test__ = False
    direct: bool = False

    def prompt(self, p: Problem) -> str:
        return "<bos>" + p.question(direct=self.direct)

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

    @staticmethod
    def is_answer_line(line: str) -> bool:
        return line.startswith("A:")


def split_lines(text: str) -> list[str]:
    """Lines with their newline kept; a last line without one is kept too."""
    out, start = [], 0
    for i, ch in enumerate(text):
        if ch == LINE:
            out.append(text[start:i + 1])
            start = i + 1
    if start < len(text):
        out.append(text[start:])
    return out


def vocab_hash(tokenizer: Any) -> str:
    vocab = sorted(tokenizer.get_vocab().items())
    return hashlib.sha256(json.dumps(vocab).encode()).hexdigest()[:16]


# ---- reward models ------------------------------------------------------------------------------
PRM_AGGREGATES = ("last", "min", "prod")


def aggregate(step_scores: Sequence[float], how: str) -> float:
    """One number from a PRM's step scores: the last step's (Snell et al. 2024 found it best),
    the minimum (Lightman et al. 2023) or the product (Wang et al. 2024)."""
    if not step_scores:
        return 0.0
    if how == "last":
        return float(step_scores[-1])
    if how == "min":
        return float(min(step_scores))
    if how == "prod":
        return float(math.exp(sum(math.log(max(s, 1e-12)) for s in step_scores)))
    raise InputError(f"PRM aggregation {how!r}: choose one of {', '.join(PRM_AGGREGATES)}")


class RewardModel:
    """An ORM or PRM loaded from a reward-model run or checkpoint (see module docstring)."""

    def __init__(self, engine: Any, meta: dict[str, Any]):
        self.engine = engine  # an Engine over the reward model, metering into phase "verifier"
        self.meta = meta
        self.kind: str = meta["kind"]
        tok = engine.tokenizer
        self.good_id = tok.convert_tokens_to_ids(meta.get("good_token", GOOD))
        self.bad_id = tok.convert_tokens_to_ids(meta.get("bad_token", BAD))
        w = engine.head_weight
        self.label_w = (w[self.good_id] - w[self.bad_id]).detach()  # [d]: logit difference direction
        b = engine.head_bias
        self.label_b = float(b[self.good_id] - b[self.bad_id]) if b is not None else 0.0
        self.line_ids = {i for i, s in enumerate(engine.token_text()) if s.endswith(LINE)}

    @classmethod
    def load(cls, path: str | Path, *, meter: Any = None, max_batch: int = 256) -> "RewardModel":
        from scalelab.testtime.engine import Engine
        from scalelab.testtime.loading import resolve_checkpoint

        ckpt = resolve_checkpoint(path)
        meta_path = ckpt / REWARD_FILE
        if not meta_path.is_file():
            raise InputError(f"{ckpt}: no {REWARD_FILE}: not a reward model (train one with "
                             "`scalelab testtime train-verifier`)")
        meta = json.loads(meta_path.read_text())
        if meta.get("kind") not in ("orm", "prm"):
            raise InputError(f"{meta_path}: kind must be orm or prm, got {meta.get('kind')!r}")
        eng = Engine.load(ckpt, meter=meter, phase="verifier", max_batch=max_batch)
        return cls(eng, meta)

    def check_tokenizer(self, policy_tokenizer: Any, *, policy_name: str = "the policy") -> None:
        mine, theirs = vocab_hash(self.engine.tokenizer), vocab_hash(policy_tokenizer)
        if mine != theirs:
            raise InputError(f"reward model {self.engine.name} was built for another tokenizer than {policy_name} "
                             f"(vocabularies of {len(self.engine.tokenizer)} and {len(policy_tokenizer)} tokens "
                             f"differ); train it on this policy with `scalelab testtime train-verifier`")

    def query_positions(self, completion_ids: Sequence[int]) -> list[int]:
        """Indices in the completion whose score is read: every line end (PRM) or the last token."""
        if not completion_ids:
            return []
        if self.kind == "orm":
            return [len(completion_ids) - 1]
        pos = [i for i, t in enumerate(completion_ids) if t in self.line_ids]
        if not pos or pos[-1] != len(completion_ids) - 1:
            pos.append(len(completion_ids) - 1)  # an unfinished last line is a step too
        return pos

    def score_hidden(self, hidden: Any) -> Any:
        """Scores in (0, 1) from final hidden states [..., d]."""
        import torch

        return torch.sigmoid(hidden @ self.label_w + self.label_b)

    def session(self, prompts: Sequence[str]) -> "RewardSession":
        """A session fed line by line (step-by-step search), one row per prompt."""
        return RewardSession(self, prompts)

    def score(self, prompts: Sequence[str], completions: Sequence[str]) -> tuple[list[list[float]], list[float]]:
        """Scores of each (prompt, completion) -- step scores (PRM) or one score (ORM) -- and the
        FLOPs each row cost (a forward over prompt + completion, no lm_head, one label row per
        query position)."""
        import torch

        eng = self.engine
        fm = eng.flop_model
        label = fm.head / eng.head_weight.shape[0]  # one row (good - bad) of the head: 2d FLOPs
        scores: list[list[float]] = []
        flops: list[float] = []
        rows = [(eng.encode(p), eng.encode(c)) for p, c in zip(prompts, completions)]
        for s in range(0, len(rows), eng.max_batch):
            part = rows[s:s + eng.max_batch]
            seqs = [p + c for p, c in part]
            sess = eng.session(len(part), max(map(len, seqs)))
            with torch.inference_mode():
                hidden, off = sess.feed(seqs, logits=False)
            for r, (p, c) in enumerate(part):
                q = self.query_positions(c)
                idx = torch.tensor([off[r] + len(p) + i for i in q], dtype=torch.long)
                scores.append(self.score_hidden(hidden[r, idx]).tolist() if q else [0.0])
                flops.append(fm.tokens(len(seqs[r]), 0, heads=0) + label * len(q))
        eng.meter.add("verifier", sum(flops), scored_tokens=sum(len(p) + len(c) for p, c in rows), kind="score")
        return scores, flops


class RewardSession:
    """A reward model fed line by line next to a policy session (for step-by-step search)."""

    def __init__(self, rm: RewardModel, prompts: Sequence[str]):
        self.rm = rm
        eng = rm.engine
        ids = [eng.encode(p) for p in prompts]
        self.sess = eng.session(len(ids), max(map(len, ids)) + 256)
        self.sess.metered = True
        self.sess.feed(ids, logits=False)

    def select(self, index: Any) -> None:
        self.sess.select(index)

    def take_row_flops(self) -> list[float]:
        return self.sess.take_row_flops()

    def add_lines(self, texts: Sequence[str]) -> list[float]:
        """Feed each row its new text (one step line, or nothing) and return the score at its end
        (NaN for rows fed nothing)."""
        import torch

        eng = self.rm.engine
        chunks = [eng.encode(t) if t else [] for t in texts]
        with torch.inference_mode():
            hidden, _ = self.sess.feed(chunks, logits=False)
        if hidden.shape[1] == 0:
            return [math.nan] * len(texts)
        fm = eng.flop_model
        n = sum(1 for c in chunks if c)
        eng.meter.add("verifier", fm.head / eng.head_weight.shape[0] * n, kind="score")
        scores = self.rm.score_hidden(hidden[:, -1]).tolist()  # right-aligned: a row's new text ends at -1
        return [s if c else math.nan for s, c in zip(scores, chunks)]
