"""Verifiers: the testbed's exact checker, and learned reward models that score solutions.

The exact verifiers are the tasks' own (`scalelab.tasks`: strict patterns, nothing evaluated).

Reward models. An outcome reward model (ORM) gives one score per solution, a process reward
model (PRM) one score per step line (every line of the solution, the answer line included). Both
are Hugging Face causal LMs (safetensors) that start as a copy of the policy, so they read
solutions with the policy's own arithmetic, or of a judge (`rewardtrain.py`: a larger or
longer-trained model with the same tokenizer), which reads them with better arithmetic than the
policy has; a score is read at a query position (the end of each line for a PRM, the last token
for an ORM) by one of two heads:

  likelihood  (default) a logistic head on how likely the model finds the text it reads: the
              log-probability of each token under the reward model's own next-token distribution,
              summarised per line (min and sum) and over the prefix so far (running min and sum);
              per solution for an ORM (min, sum, mean). Only the head's few coefficients are
              fitted, by logistic regression on the labels. Why: verifying a testbed step means
              recomputing "x op y" and comparing it with the written result. The policy already
              does the first half at every "=": its next-token distribution is the recomputation,
              and the probability it gives the written result is the comparison. A label read at
              the end of the line would have to rebuild that inside the network, and a 4-6 layer
              model has no layers left to compare after it has computed; measured on a 200k-
              parameter policy, the label head learned which problems are hard (pooled AUC 0.95)
              but hardly which of one problem's samples are right (AUC within problems 0.54-0.62),
              the likelihood head ranked within problems at AUC 0.92 (docs/LOG.md, 2026-11-25).
  label       the whole model is fine-tuned so that P = sigmoid(logit["+"] - logit["-"]) at a
              query position predicts the label, as Math-Shepherd (Wang et al. 2024,
              "Math-Shepherd: Verify and Reinforce LLMs Step-by-step without Human Annotations")
              trains its PRM: a language model predicting a "+"/"-" tag after each step.

Both heads are causal: the score of step i sees only the prefix up to step i, so scoring a partial
solution during search gives exactly the score that step gets inside the full solution, and a
search feeds a reward model line by line through a KV-cache session (`RewardSession`).

A reward model directory holds the checkpoint, its tokenizer and `reward.json` (kind, head and its
coefficients, label tokens, the policy it was trained on, its tokenizer's vocabulary hash). A
reward model built for another tokenizer is refused (`check_tokenizer`).
"""
from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from scalelab.errors import InputError

REWARD_FILE = "reward.json"
HEADS = ("likelihood", "label")
GOOD, BAD = "+", "-"  # label tokens; both are characters of the testbed alphabet
LINE = "\n"


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


def reward_meta(path: str | Path) -> tuple[Path, dict[str, Any]]:
    """(checkpoint, reward.json) of a reward-model run, read without loading the weights: what a stage
    checks before it writes anything."""
    from scalelab.inference.loading import resolve_checkpoint

    ckpt = resolve_checkpoint(path)
    meta_path = ckpt / REWARD_FILE
    if not meta_path.is_file():
        raise InputError(f"{ckpt}: no {REWARD_FILE}: not a reward model (train one with "
                         "`scalelab testtime train-verifier` or `scalelab posttrain reward-model`)")
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        meta = None
    if not isinstance(meta, dict) or meta.get("kind") not in ("orm", "prm") or meta.get("head", "label") not in HEADS:
        raise InputError(f"{meta_path}: expected kind orm|prm and head {'|'.join(HEADS)}")
    return ckpt, meta


class RewardModel:
    """An ORM or PRM loaded from a reward-model run or checkpoint (see module docstring)."""

    def __init__(self, engine: Any, meta: dict[str, Any]):
        self.engine = engine  # an Engine over the reward model, metering into phase "verifier"
        self.meta = meta
        self.kind: str = meta["kind"]
        self.head: str = meta.get("head", "label")
        tok = engine.tokenizer
        w, b = engine.head_weight, engine.head_bias
        good = tok.convert_tokens_to_ids(meta.get("good_token", GOOD))
        bad = tok.convert_tokens_to_ids(meta.get("bad_token", BAD))
        self.label_w = (w[good] - w[bad]).detach()  # [d]: the logit-difference direction
        self.label_b = float(b[good] - b[bad]) if b is not None else 0.0
        self.label_b += float(meta.get("offset", 0.0))  # Bradley-Terry models store their centring
        self.line_ids = {i for i, t in enumerate(engine.token_text()) if t.endswith(LINE)}
        if self.head == "likelihood":
            self.coef = np.asarray(meta["coef"], float)    # bias, then one weight per feature
            self.mu = np.asarray(meta["mu"], float)        # feature standardisation
            self.sd = np.asarray(meta["sd"], float)

    @classmethod
    def load(cls, path: str | Path, *, meter: Any = None, max_batch: int = 256) -> "RewardModel":
        from scalelab.inference.engine import Engine

        ckpt, meta = reward_meta(path)
        eng = Engine.load(ckpt, meter=meter, phase="verifier", max_batch=max_batch)
        return cls(eng, meta)

    def check_tokenizer(self, policy_tokenizer: Any, *, policy_name: str = "the policy") -> None:
        mine, theirs = vocab_hash(self.engine.tokenizer), vocab_hash(policy_tokenizer)
        if mine != theirs:
            raise InputError(f"reward model {self.engine.name} was built for another tokenizer than {policy_name} "
                             f"(vocabularies of {len(self.engine.tokenizer)} and {len(policy_tokenizer)} tokens "
                             f"differ); train it on this policy with `scalelab testtime train-verifier`")

    def query_positions(self, completion_ids: Sequence[int]) -> list[int]:
        return query_positions(self.kind, completion_ids, self.line_ids)

    def _squash(self, feats: np.ndarray) -> np.ndarray:
        z = self.coef[0] + ((feats - self.mu) / self.sd) @ self.coef[1:]
        return 1.0 / (1.0 + np.exp(-z))

    def session(self, prompts: Sequence[str]) -> "RewardSession":
        """A session fed line by line (step-by-step search), one row per prompt."""
        return RewardSession(self, prompts)

    def score(self, prompts: Sequence[str], completions: Sequence[str]) -> tuple[list[list[float]], list[float]]:
        """Scores of each (prompt, completion) -- step scores (PRM) or one score (ORM) -- and the
        FLOPs each row cost: a forward over prompt + completion; the label head reads one row of
        the lm_head (2d FLOPs) per query position, the likelihood head the whole lm_head at every
        completion position."""
        if self.head == "likelihood":
            lps, flops = token_logprobs(self.engine, prompts, completions)
            scores = []
            for c, lp in zip(completions, lps):
                ids = self.engine.encode(c)
                f = likelihood_features(self.kind, lp, self.query_positions(ids))
                scores.append(self._squash(f).tolist() if len(f) else [0.0])
            return scores, flops
        return self._score_label(prompts, completions)

    def _score_label(self, prompts: Sequence[str], completions: Sequence[str]) -> tuple[list[list[float]], list[float]]:
        import torch

        eng = self.engine
        fm = eng.flop_model
        label = fm.head / eng.head_weight.shape[0]  # one row (good - bad) of the head: 2d FLOPs
        scores: list[list[float]] = []
        flops: list[float] = []
        scored = 0
        for p, c, hidden, start in fed_rows(eng, prompts, completions):
            scored += len(p) + len(c)
            q = self.query_positions(c)
            z = hidden[torch.tensor([start + i for i in q], dtype=torch.long)] @ self.label_w + self.label_b
            scores.append(torch.sigmoid(z).tolist() if q else [0.0])
            flops.append(fm.tokens(len(p) + len(c), 0, heads=0) + label * len(q))
        eng.meter.add("verifier", sum(flops), scored_tokens=scored, kind="score")
        return scores, flops


def query_positions(kind: str, completion_ids: Sequence[int], line_ids: set[int]) -> list[int]:
    """Indices in the completion whose score is read: every line end (PRM) or the last token."""
    if not completion_ids:
        return []
    if kind == "orm":
        return [len(completion_ids) - 1]
    pos = [i for i, t in enumerate(completion_ids) if t in line_ids]
    if not pos or pos[-1] != len(completion_ids) - 1:
        pos.append(len(completion_ids) - 1)  # an unfinished last line is a step too
    return pos


# ---- the likelihood head -------------------------------------------------------------------------
FEATURES = {"prm": ("line_min_logprob", "line_logprob", "prefix_min_logprob", "prefix_logprob"),
            "orm": ("min_logprob", "logprob", "mean_logprob")}


def likelihood_features(kind: str, lp: Sequence[float], ends: Sequence[int]) -> np.ndarray:
    """Features [queries, F] from the log-probability of each completion token under the model:
    per line (PRM, lines ending at `ends`) its min and sum, and the running min and sum over the
    prefix; per solution (ORM) min, sum and mean."""
    lp = np.asarray(lp, float)
    if lp.size == 0 or not ends:
        return np.zeros((0, len(FEATURES[kind])))
    if kind == "orm":
        return np.array([[lp.min(), lp.sum(), lp.mean()]])
    rows, start, run_min, run_sum = [], 0, 0.0, 0.0
    for e in ends:
        seg = lp[start:e + 1]
        run_min, run_sum = min(run_min, float(seg.min())), run_sum + float(seg.sum())
        rows.append([seg.min(), seg.sum(), run_min, run_sum])
        start = e + 1
    return np.array(rows)


def token_logprobs(engine: Any, prompts: Sequence[str], completions: Sequence[str]) -> tuple[list[np.ndarray], list[float]]:
    """log P(token | prefix) of every completion token under the engine's model, and the FLOPs of
    each row (a forward over prompt + completion with the lm_head at every completion position)."""
    import torch

    eng = engine
    fm = eng.flop_model
    out: list[np.ndarray] = []
    flops: list[float] = []
    scored = 0
    for p, c, hidden, start in fed_rows(eng, prompts, completions):
        scored += len(p) + len(c)
        if not c:
            out.append(np.zeros(0))
            flops.append(fm.tokens(len(p), 0, heads=0))
            continue
        pos = torch.arange(start - 1, start + len(c) - 1)  # each position predicts the next token
        lp = torch.log_softmax(eng.logits(hidden[pos]).float(), -1)  # [len(c), V]
        out.append(lp[torch.arange(len(c)), torch.tensor(c)].numpy().astype(float))
        flops.append(fm.tokens(len(p) + len(c), 0, heads=len(c)))
    eng.meter.add(eng.phase, sum(flops), scored_tokens=scored, kind="logprobs")
    return out, flops


def fed_rows(eng: Any, prompts: Sequence[str], completions: Sequence[str]) -> Iterator[tuple[list[int], list[int], Any, int]]:
    """One forward over every prompt + completion, `eng.max_batch` rows at a time, in inference
    mode; yields (prompt ids, completion ids, that row's hidden states, index of its first
    completion token in them)."""
    import torch

    rows = [(eng.encode(p), eng.encode(c)) for p, c in zip(prompts, completions)]
    for s in range(0, len(rows), eng.max_batch):
        part = rows[s:s + eng.max_batch]
        seqs = [p + c for p, c in part]
        sess = eng.session(len(part), max(map(len, seqs)))
        with torch.inference_mode():
            hidden, off = sess.feed(seqs, logits=False)
            for r, (p, c) in enumerate(part):
                yield p, c, hidden[r], off[r] + len(p)


class RewardSession:
    """A reward model fed line by line next to a policy session (for step-by-step search)."""

    def __init__(self, rm: RewardModel, prompts: Sequence[str]):
        self.rm = rm
        eng = rm.engine
        ids = [eng.encode(p) for p in prompts]
        self.sess = eng.session(len(ids), max(map(len, ids)) + 256)
        self.sess.metered = True
        self.run = np.zeros((len(ids), 2))  # likelihood head: running min and sum of log-probs per row
        self.sess.feed(ids, logits=False)

    def select(self, index: Any) -> None:
        self.sess.select(index)
        self.run = self.run[np.asarray(index.cpu() if hasattr(index, "cpu") else index)]

    def take_row_flops(self) -> list[float]:
        return self.sess.take_row_flops()

    def add_lines(self, texts: Sequence[str]) -> list[float]:
        """Feed each row its new text (one step line, or nothing) and return the score at its end
        (NaN for rows fed nothing)."""
        import torch

        with torch.inference_mode():
            return self._add_lines(texts)

    def _add_lines(self, texts: Sequence[str]) -> list[float]:
        import torch

        rm, eng = self.rm, self.rm.engine
        chunks = [eng.encode(t) if t else [] for t in texts]
        before = eng.logits(self.sess.last_hidden) if rm.head == "likelihood" else None  # predicts each chunk's 1st token
        hidden, off = self.sess.feed(chunks, logits=False)
        if hidden.shape[1] == 0:
            return [math.nan] * len(texts)
        fm = eng.flop_model
        n = [len(c) for c in chunks]
        if rm.head == "label":
            eng.meter.add("verifier", fm.head / eng.head_weight.shape[0] * sum(1 for k in n if k), kind="score")
            scores = torch.sigmoid(hidden[:, -1] @ rm.label_w + rm.label_b).tolist()  # right-aligned: ends at -1
            return [s if c else math.nan for s, c in zip(scores, chunks)]
        eng.meter.add("verifier", fm.head * sum(n), kind="logprobs")
        out = []
        for r, c in enumerate(chunks):
            if not c:
                out.append(math.nan)
                continue
            logits = torch.cat([before[r:r + 1], eng.logits(hidden[r, off[r]:-1])])  # [len(c), V]
            lp = torch.log_softmax(logits.float(), -1)[torch.arange(len(c)), torch.tensor(c)].numpy()
            self.run[r] = (min(self.run[r, 0], float(lp.min())), self.run[r, 1] + float(lp.sum()))
            feats = np.array([[lp.min(), lp.sum(), self.run[r, 0], self.run[r, 1]]])
            out.append(float(rm._squash(feats)[0]))
        return out
