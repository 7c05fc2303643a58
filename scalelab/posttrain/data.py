"""Fine-tuning data: (prompt, completion) examples with the loss on completion tokens only.

Four sources:
  testbed   worked solutions of training-split problems, `"<bos>" + question` -> `solution + <eos>`,
            with the number of steps drawn evenly from `steps` (clean solutions: no injected errors)
  task file the train split's prompts and reference solutions (`taskdata.FileData.example`)
  JSONL     a user's file, one object per line: non-empty string fields "prompt" and "completion",
            or chat "messages" (a list of {"role", "content"}) ending in an assistant turn, rendered
            with the tokenizer's chat template; a bad line is reported by its number
  generated a model's own samples for the task's questions, optionally kept only when the task's
            verifier accepts them (offline distillation, synthetic data, rejection sampling)

Corpus rows (`corpus_rows`) are the parent's pretraining stream, every position a target, for
distillation and pruning recovery on the pretraining distribution.

Loss on completions only: the prompt is given, so its tokens carry no signal about answering
(TRL's `completion_only_loss` does the same for prompt-completion data).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Sequence

import numpy as np
from pydantic import AfterValidator

from scalelab.errors import InputError
from scalelab.tables import jsonl_objects

BOS, EOS = "<bos>", "<eos>"


def _steps(v: list[int] | None) -> list[int] | None:
    if v is not None and (not v or min(v) < 1):
        raise ValueError("steps are integers >= 1")
    return sorted(set(v)) if v else v


# A config field of testbed difficulties (numbers of steps): None, or integers >= 1, sorted, unique.
Steps = Annotated[list[int] | None, AfterValidator(_steps)]


@dataclass(frozen=True)
class Example:
    ids: tuple[int, ...]        # prompt + completion token ids
    n_prompt: int               # the first n_prompt ids are the prompt (no loss)
    steps: int | None = None    # testbed difficulty, when known

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class Batch:
    ids: Any          # [B, T] long, right-padded
    attn: Any         # [B, T] 1 on tokens, 0 on padding
    target: Any       # [B, T] float: 1 where the token at t is a training target (completion tokens)
    lengths: list[int]


def encode(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def make_example(tokenizer: Any, prompt: str, completion: str, *, steps: int | None = None,
                 add_eos: bool = True) -> Example:
    p, c = encode(tokenizer, prompt), encode(tokenizer, completion)
    if add_eos and tokenizer.eos_token_id is not None and (not c or c[-1] != tokenizer.eos_token_id):
        c.append(tokenizer.eos_token_id)
    return Example(tuple(p + c), len(p), steps)


def testbed_problems(src: Any, n: int, *, split: str = "train", steps: Sequence[int], seed: int = 0) -> list[Any]:
    """`n` problems with the number of steps spread evenly over `steps`, shuffled."""
    steps = list(steps)
    per = math.ceil(n / len(steps))
    probs = [p for k in steps for p in src.problems(split, per, steps=k, seed=seed)]
    order = np.random.default_rng(seed).permutation(len(probs))
    return [probs[i] for i in order[:n]]


def testbed_examples(src: Any, tokenizer: Any, n: int, *, split: str = "train", steps: Sequence[int],
                     seed: int = 0) -> list[Example]:
    return [make_example(tokenizer, BOS + p.question(), p.solution(), steps=p.steps)
            for p in testbed_problems(src, n, split=split, steps=steps, seed=seed)]


def require_strings(path: str | Path, i: int, obj: dict[str, Any], keys: Sequence[str]) -> None:
    for key in keys:
        if key not in obj:
            raise InputError(f"{path} line {i}: missing field \"{key}\"")
        if not isinstance(obj[key], str) or not obj[key].strip():
            raise InputError(f"{path} line {i}: field \"{key}\" must be a non-empty string")


def read_jsonl(path: str | Path, tokenizer: Any) -> list[Example]:
    """Prompt/completion pairs or chat conversations from a JSONL file; a missing, empty or
    non-string field names its line."""
    out = []
    for i, obj in jsonl_objects(path, what="JSONL file (prompt/completion or chat messages)"):
        if "messages" in obj:
            prompt, completion = chat_pair(path, i, obj["messages"], tokenizer)
        else:
            require_strings(path, i, obj, ("prompt", "completion"))
            prompt, completion = obj["prompt"], obj["completion"]
        try:
            out.append(make_example(tokenizer, prompt, completion))
        except (ValueError, KeyError) as e:
            raise InputError(f"{path} line {i}: cannot tokenize ({e})") from None
    if not out:
        raise InputError(f"{path}: no examples (the file is empty)")
    return out


def chat_pair(path: str | Path, i: int, messages: Any, tokenizer: Any) -> tuple[str, str]:
    """A conversation as (prompt, completion): every turn before the last through the tokenizer's chat
    template with the assistant header added, then the last (assistant) turn's text. The loss is on
    that last turn only, as TRL's `assistant_only_loss` would put it on the final answer; earlier
    assistant turns are context."""
    if not isinstance(messages, list) or not messages:
        raise InputError(f"{path} line {i}: \"messages\" must be a non-empty list of {{\"role\", \"content\"}}")
    for m in messages:
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise InputError(f"{path} line {i}: every message needs string \"role\" and \"content\"")
    if messages[-1]["role"] != "assistant" or not messages[-1]["content"].strip():
        raise InputError(f"{path} line {i}: the last message must be a non-empty assistant turn (what is learnt)")
    if not getattr(tokenizer, "chat_template", None):
        raise InputError(f"{path} line {i}: chat \"messages\" need a tokenizer with a chat template; this model's "
                         "has none (write prompt/completion lines instead)")
    try:
        prompt = tokenizer.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
    except Exception as e:  # a template may refuse a role order (jinja raises its own exceptions)
        raise InputError(f"{path} line {i}: the chat template refused these messages "
                         f"({' '.join(str(e).split())[:120]})") from None
    return prompt, messages[-1]["content"]


def collate(examples: Sequence[Example], tokenizer: Any, *, max_len: int | None = None) -> Batch:
    """Right-padded batch; targets are completion tokens (positions >= n_prompt)."""
    import torch

    rows = [e.ids[:max_len] if max_len else e.ids for e in examples]
    T = max(map(len, rows))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = torch.full((len(rows), T), pad, dtype=torch.long)
    attn = torch.zeros((len(rows), T), dtype=torch.long)
    target = torch.zeros((len(rows), T), dtype=torch.float32)
    for r, (e, x) in enumerate(zip(examples, rows)):
        ids[r, :len(x)] = torch.tensor(x)
        attn[r, :len(x)] = 1
        target[r, e.n_prompt:len(x)] = 1.0
    return Batch(ids, attn, target, [len(x) for x in rows])


def corpus_rows(source: Any, n_rows: int, seq_len: int, seed: int, *, offset: int = 0) -> list[Example]:
    """`n_rows` rows of the pretraining stream (every token a target but the first). `offset`
    starts past the batches the parent saw at the same seed, so the rows are fresh text."""
    out, step = [], offset
    while len(out) < n_rows:
        block = source.train_batch(step, min(64, n_rows - len(out)), seq_len, seed)  # [b, seq_len + 1]
        out += [Example(tuple(int(t) for t in row), 1) for row in block]
        step += 1
    return out


@dataclass
class Generated:
    examples: list[Example]
    samples: int
    kept: int
    kept_by_steps: dict[str, list[int]]  # steps -> [kept, sampled]


def generated_examples(ctx: Any, engine: Any, problems: list[Any], n: int, params: Any, *, part: str,
                       keep: str = "verified", distinct: bool = False, prompts: Any = None) -> Generated:
    """`n` samples per problem from `engine`, metered into `ctx.ledger` as `part`; keep "verified"
    (the task's verifier accepts the solution) or "all"; samples cut off by the token limit are
    dropped (they would teach the student not to stop), and a sample that ended on one of the task's
    stop strings is kept without it (it ended there). `distinct` keeps one copy of each solution
    text per problem, as rejection-sampling fine-tuning does (Yuan et al. 2023, "Scaling
    Relationship on Learning Mathematical Reasoning with Large Language Models"); otherwise
    duplicates stay and weight a solution by how often the teacher writes it. `prompts` is the task
    as the sampler reads it when that is not the student's rendering (a teacher without the
    student's chat template); the examples always carry the student's prompt."""
    data = getattr(ctx, "data", None) or _testbed_data()
    task = data.task
    gen = ctx.generate(engine, [(prompts or task).prompt(p) for p in problems], n, params, part=part)
    tok = engine.tokenizer
    out, by = [], {}
    for p, row in zip(problems, gen.completions):
        seen = set()
        stats = by.setdefault(data.label(p), [0, 0])
        for c in row:
            stats[1] += 1
            text = finished_text(c, getattr(prompts or task, "stop", ()))
            if text is None or (distinct and text in seen):
                continue
            if keep == "verified" and not task.verify(p, text).correct:
                continue
            seen.add(text)
            stats[0] += 1
            out.append(data.make(tok, p, text))
    return Generated(out, len(problems) * n, len(out), by)


def finished_text(c: Any, stop: Sequence[str]) -> str | None:
    """A completion's text if it ended by itself (EOS, or a stop string, which is cut off), else None."""
    if c.finish_reason == "eos":
        return c.text
    if c.finish_reason == "stop":
        for s in stop:
            if c.text.endswith(s):
                return c.text[:-len(s)]
        return c.text
    return None


def _testbed_data() -> Any:
    from types import SimpleNamespace

    from scalelab.tasks.testbed import TestbedTask

    task = TestbedTask()
    return SimpleNamespace(task=task, label=lambda p: str(p.steps),
                           make=lambda tok, p, text: make_example(tok, task.prompt(p), text, steps=p.steps))
