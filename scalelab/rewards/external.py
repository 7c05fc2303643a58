"""Outcome reward models that scalelab did not train: a user's Hugging Face sequence classifier, and
an LLM judge (a second causal LM asked whether a solution is right). Both score text, so unlike a
trained reward model they need not share the policy's tokenizer; both meter their forwards as
verifier FLOPs, so best-of-n and weighted voting are charged for them like for any verifier.

  classifier  `--orm DIR` where DIR holds a `*ForSequenceClassification` checkpoint (safetensors):
              the score of prompt + completion is sigmoid(logit) for one label, else the softmax
              probability of the last label (the "good" class of binary reward models such as
              those TRL's RewardTrainer writes, which use one label).
  judge       `--judge DIR` (any causal LM): the judge reads `template` filled with the prompt and the
              completion and the score is P(yes) / (P(yes) + P(no)) of its next token: the first tokens
              where " Yes" and " No" differ, after the tokens they share (Zheng et al. 2023, "Judging LLM-as-a-Judge", single-answer grading
              reduced to one verdict token so that the score is a probability, not parsed text).

Neither can score steps: they are ORMs, and strategies that need a PRM refuse them.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from scalelab.errors import ConfigError, InputError

JUDGE_TEMPLATE = "{prompt}{completion}\n\nIs the answer above correct? Answer Yes or No.\nAnswer:"


def is_sequence_classifier(path: str | Path) -> bool:
    cfg = Path(path) / "config.json"
    if not cfg.is_file():
        return False
    try:
        archs = json.loads(cfg.read_text()).get("architectures") or []
    except (json.JSONDecodeError, AttributeError):
        return False
    return any(str(a).endswith("ForSequenceClassification") for a in archs)


class ClassifierORM:
    """A Hugging Face sequence classifier as an outcome reward model (see the module docstring)."""

    kind, head = "orm", "classifier"

    def __init__(self, path: str | Path, *, meter: Any = None, max_batch: int = 64):
        import torch
        from transformers import AutoModelForSequenceClassification

        from scalelab.checkpoint import load_tokenizer

        from scalelab.inference.flops import FlopMeter, flop_model
        from scalelab.inference.loading import quiet_transformers

        p = Path(path)
        if not (p / "model.safetensors").is_file() and not (p / "model.safetensors.index.json").is_file():
            raise InputError(f"--orm {path}: no model.safetensors (weights are loaded from safetensors only)")
        with quiet_transformers():
            self.model = AutoModelForSequenceClassification.from_pretrained(p, use_safetensors=True,
                                                                            dtype=torch.float32).eval()
            self.tokenizer = load_tokenizer(p)  # as saved (checkpoint.load_tokenizer says why)
        if self.tokenizer.pad_token_id is None:
            if self.tokenizer.eos_token_id is None:
                raise InputError(f"--orm {path}: its tokenizer has no pad token and no eos token to pad with")
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.name, self.max_batch = str(p), max_batch
        self.meter = meter if meter is not None else FlopMeter()
        self.flops = flop_model(self.model)  # its body and attention; the score head is a few rows (head 0)
        self.context = int(getattr(self.model.config, "max_position_embeddings", 0) or 0) or 10**9

    def check_tokenizer(self, policy_tokenizer: Any, *, policy_name: str = "the policy") -> None:
        """A classifier reads text with its own tokenizer: any policy's text will do."""

    def score(self, prompts: Sequence[str], completions: Sequence[str]) -> tuple[list[list[float]], list[float]]:
        import torch

        texts = [p + c for p, c in zip(prompts, completions)]
        scores: list[list[float]] = []
        flops: list[float] = []
        for s in range(0, len(texts), self.max_batch):
            enc = self.tokenizer(texts[s:s + self.max_batch], return_tensors="pt", padding=True, truncation=True,
                                 max_length=min(self.context, 100_000), add_special_tokens=True)
            with torch.inference_mode():
                logits = self.model(**enc).logits.float()
            probs = torch.sigmoid(logits[:, 0]) if logits.shape[1] == 1 else torch.softmax(logits, -1)[:, -1]
            scores += [[float(x)] for x in probs]
            flops += [self.flops.tokens(int(n), 0, heads=0) for n in enc["attention_mask"].sum(1)]
        self.meter.add("verifier", sum(flops), kind="score")
        return scores, flops


class JudgeORM:
    """A causal LM asked for a verdict token (see the module docstring)."""

    kind, head = "orm", "judge"

    def __init__(self, path: str | Path, *, meter: Any = None, max_batch: int = 64, template: str = JUDGE_TEMPLATE,
                 yes: str = " Yes", no: str = " No"):
        from scalelab.inference.engine import Engine

        if "{prompt}" not in template or "{completion}" not in template:
            raise ConfigError(f"--judge-template {template!r}: must contain {{prompt}} and {{completion}}")
        self.engine = Engine.load(path, meter=meter, phase="verifier", max_batch=max_batch)
        self.name, self.template = str(path), template
        y, n = (self.engine.encode(w) for w in (yes, no))
        k = 0  # a shared prefix (a byte-level BPE's leading space) is fed with the query
        while k < min(len(y), len(n)) and y[k] == n[k]:
            k += 1
        if k == len(y) or k == len(n):
            raise ConfigError(f"judge {path}: its tokenizer cannot tell {yes!r} from {no!r} by one token")
        self.lead, self.yes, self.no = y[:k], y[k], n[k]

    def check_tokenizer(self, policy_tokenizer: Any, *, policy_name: str = "the policy") -> None:
        """The judge reads the policy's text, re-encoded with its own tokenizer."""

    def score(self, prompts: Sequence[str], completions: Sequence[str]) -> tuple[list[list[float]], list[float]]:
        import torch

        eng = self.engine
        queries = [self.template.replace("{prompt}", p).replace("{completion}", c)
                   for p, c in zip(prompts, completions)]
        scores: list[list[float]] = []
        flops: list[float] = []
        for s in range(0, len(queries), eng.max_batch):
            ids = [eng.encode(q) + self.lead for q in queries[s:s + eng.max_batch]]
            for i, q in enumerate(ids):
                eng.check_prompt(q, f"judge query {s + i}")
            sess = eng.session(len(ids), max(map(len, ids)))
            with torch.inference_mode():
                sess.feed(ids, logits=False)
                lp = torch.log_softmax(eng.logits(sess.last_hidden).float(), -1)
            pair = torch.softmax(torch.stack([lp[:, self.yes], lp[:, self.no]], -1), -1)[:, 0]
            scores += [[float(x)] for x in pair]
            flops += [eng.flop_model.prefill(len(q)) for q in ids]
        eng.meter.add("verifier", sum(flops), kind="judge", prompts=len(queries))
        return scores, flops
