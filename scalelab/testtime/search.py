"""Strategies that run per budget: PRM-guided beam search, DVTS, and sequential revision.

Beam search and DVTS grow solutions one step line at a time. Every row of a policy session
samples its next line (stop at a newline); a PRM session fed the same lines in lockstep scores
each new line; rows are then kept, duplicated or dropped with `Session.select` on both sessions,
so neither model ever re-reads a prefix. A row ends when it writes the answer line (or <eos>).

  beam_search(n)  n rows per problem; after each line keep the n / width best rows by aggregated
                  PRM score and copy each `width` times (Snell et al. 2024, sec. 5.2;
                  search-and-learn's beam search); a kept row that has finished leaves the beam
                  for the candidates, a finished row outside the n / width best is pruned. A
                  problem stops once n / width candidates have finished. For n <= width (one
                  beam) this is DVTS with one subtree.
  dvts(n)         n / width independent subtrees of `width` rows; each keeps only its own best
                  row and copies it `width` times; a subtree ends when its best row has finished.
                  Splitting the budget keeps the final candidates diverse (Beeching et al. 2024,
                  "Scaling test-time compute with open models", search-and-learn).
Both pick the final solution among finished rows by weighted vote over answers (sum of
aggregated scores; the best-scored solution of the winning answer) or by best score (`final`).

  revision(n)     budget forcing on this corpus (Muennighoff et al. 2025, "s1": make the model keep
                  thinking where it would stop). In the testbed's documents a step line is
                  followed by a '!' correction line exactly when the step was wrong, and the
                  correction is always right and always differs from the wrong value. So the
                  in-distribution way to make the model think again is to reopen its solution
                  after a step line and write '!': it redoes that step, with a different result,
                  and everything after it. The greedy solution is decoded once; each of up to
                  n - 1 revisions cuts the solution after the step line whose written result the
                  model found least likely (doubt = 1 - the smallest probability of a result
                  token; the last step counts, so reopening there is "suppress the answer line and
                  keep thinking") and forces '!'. Correction lines are never corrected again (the
                  corpus never does). Revisions stop early when no step's doubt reaches
                  `revision_threshold`. The answer is read with the strict verifier, which applies
                  corrections. Why doubt from the result's likelihood and not from the model's own
                  probability of writing '!': a 200k-parameter policy put 7-9% on '!' after every
                  step line, right or wrong (the corpus's error rate), so that signal carries no
                  information; the likelihood of the result separates right from wrong samples
                  (verifiers.py).

FLOPs are counted per row by the sessions (policy: inference; PRM: verifier) and summed per
problem, duplicated rows each paying for their own tokens.
"""
from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, Sequence

import numpy as np
import torch

from scalelab.tasks.testbed import LABELS, Problem
from scalelab.testtime.context import Context, Outcome
from scalelab.rewards.models import aggregate

def _limits(task: Any, problems: Sequence[Any]) -> tuple[int, int]:
    """(most step lines a row may write, most tokens in one line), from the task."""
    shapes = [task.search_limits(p) for p in problems]
    return max(a for a, _ in shapes), max(b for _, b in shapes)


def beam_search(problems: Sequence[Problem], n: int, ctx: Context) -> list[Outcome]:
    return _tree(problems, n, ctx, "beam")


def dvts(problems: Sequence[Problem], n: int, ctx: Context) -> list[Outcome]:
    return _tree(problems, n, ctx, "dvts")


def _chunks(items: Sequence[Any], per: int) -> list[Sequence[Any]]:
    return [items[i:i + per] for i in range(0, len(items), max(1, per))]


def _tree(problems: Sequence[Problem], n: int, ctx: Context, mode: str) -> list[Outcome]:
    eng, task, o = ctx.engine, ctx.task, ctx.options
    width = min(o.beam_width, n)
    groups = max(1, n // width)     # beams kept (beam) or subtrees (dvts)
    rows_per = groups * width
    out: list[Outcome] = []
    gen = torch.Generator(device=eng.device).manual_seed(o.seed * 1_000_003 + n)
    for chunk in _chunks(list(problems), eng.max_batch // rows_per):
        prompts = [task.prompt(p) for p in chunk]
        ids = [eng.encode(p) for p in prompts]
        max_lines, line_tokens = _limits(task, chunk)
        max_lines = max(1, min(max_lines, (eng.context - max(map(len, ids))) // line_tokens))  # within the context
        pol = eng.session(len(chunk), max(map(len, ids)) + max_lines * line_tokens)
        pol.metered = True
        rms = ctx.prm.session(prompts)
        with torch.inference_mode():
            pol.feed(ids)
        f_inf = np.array(pol.take_row_flops(), float)
        f_ver = np.array(rms.take_row_flops(), float)
        index = torch.arange(len(chunk)).repeat_interleave(rows_per)
        pol.select(index)
        rms.select(index)
        rows = [{"p": i // rows_per, "g": (i % rows_per) // width, "text": "", "scores": []}
                for i in range(len(chunk) * rows_per)]
        done: dict[int, list[dict[str, Any]]] = defaultdict(list)
        tokens = np.zeros(len(chunk))
        params = ctx.sampling(line_tokens, stop=("\n",))
        ends = tuple(s.strip("\n") for s in getattr(task, "stop", ()) if s.strip("\n"))  # e.g. the next "Question:"
        for _ in range(max_lines):
            with torch.inference_mode():
                outs = pol.decode(params, line_tokens, gen)
            lines = [eng.completion(t, r, params.stop).text for t, r in outs]
            scores = rms.add_lines(lines)
            for r, ((toks, reason), line, s) in enumerate(zip(outs, lines, scores)):
                row = rows[r]
                next_question = bool(ends) and line.lstrip().startswith(ends)
                row["text"] += "" if next_question else line
                row["scores"] = row["scores"] + [0.0 if math.isnan(s) else s]
                row["finished"] = reason != "stop" or task.is_answer_line(line) or next_question
                tokens[row["p"]] += len(toks)
            for r, f in enumerate(pol.take_row_flops()):
                f_inf[rows[r]["p"]] += f
            for r, f in enumerate(rms.take_row_flops()):
                f_ver[rows[r]["p"]] += f
            keep = _select(rows, done, mode, groups, width, o.prm_agg)
            if not keep:
                break
            idx = torch.tensor(keep)
            pol.select(idx)
            rms.select(idx)
            rows = [dict(rows[k]) for k in keep]
        seen = set()  # out of lines: the unfinished rows compete too (copies of a row count once)
        last = []
        for row in rows:
            if (row["p"], row["text"]) not in seen:
                seen.add((row["p"], row["text"]))
                last.append({**row, "finished": True})
        _select(last, done, mode, len(last) + 1, 1, o.prm_agg)
        for i, p in enumerate(chunk):
            text = _final(done[i], o.final, o.prm_agg, task, p)
            v = task.verify(p, text)
            out.append(Outcome(float(v.correct), float(v.answer_correct), float(f_inf[i]), float(f_ver[i]),
                               float(tokens[i]), text))
    return out


def _select(rows: list[dict[str, Any]], done: dict[int, list[dict[str, Any]]], mode: str, groups: int,
            width: int, agg: str) -> list[int]:
    """Indices of the rows to continue with (repeats copy a row)."""
    keep: list[int] = []
    by_key: dict[tuple[int, int], list[int]] = defaultdict(list)
    for r, row in enumerate(rows):
        by_key[(row["p"], row["g"] if mode == "dvts" else 0)].append(r)
    for (p, _), members in sorted(by_key.items()):
        if mode == "dvts":
            best = max(members, key=lambda r: aggregate(rows[r]["scores"], agg))
            if rows[best]["finished"]:
                done[p].append(rows[best])
            else:
                keep += [best] * width
            continue
        # The beam holds `groups` rows: the best-scored, finished or not. A finished row leaves it for
        # `done`; one outside it is pruned like any other. (Taking every finished row would let the
        # first row that writes an answer line, however badly scored, end the search: measured on a
        # d3 policy with a judge PRM, that made beam search 0.22-0.35 where DVTS reached 0.45-0.62.)
        ranked = sorted(members, key=lambda r: -aggregate(rows[r]["scores"], agg))
        for r in ranked[:max(0, groups - len(done[p]))]:
            if rows[r]["finished"]:
                done[p].append(rows[r])
            else:
                keep += [r] * width
    return keep


def _final(cands: list[dict[str, Any]], how: str, agg: str, task: Any, p: Problem) -> str:
    if not cands:
        return ""
    scored = [(aggregate(c["scores"], agg), c["text"]) for c in cands]
    if how == "best":
        return max(scored)[1]
    sums: dict[Any, float] = defaultdict(float)
    answer = {}
    for s, t in scored:
        a = task.verify(p, t).answer
        answer[t] = a
        if a is not None:
            sums[a] += s
    if not sums:
        return max(scored)[1]
    win = max(sums, key=lambda a: sums[a])
    return max((s, t) for s, t in scored if answer[t] == win)[1]


# ---- sequential revision ---------------------------------------------------------------------------
def revision(problems: Sequence[Problem], n: int, ctx: Context) -> list[Outcome]:
    eng, task, o = ctx.engine, ctx.task, ctx.options
    text_of = eng.token_text()
    bang = eng.tokenizer.convert_tokens_to_ids("!")
    params = ctx.sampling(max(task.max_tokens(p) for p in problems), temperature=0.0)
    out: list[Outcome] = []
    for chunk in _chunks(list(problems), eng.max_batch):
        ids = [eng.encode(task.prompt(p)) for p in chunk]
        sess = eng.session(len(chunk), max(map(len, ids)) + params.max_tokens * 2)
        sess.metered = True
        with torch.inference_mode():
            sess.feed(ids)
            res = sess.decode(params, params.max_tokens, None, logprobs=True)
        toks = [t for t, _ in res]
        lps = list(sess.logprobs)
        for _ in range(n - 1):
            cut = [_doubt(t, lp, text_of, bang, o.revision_threshold) for t, lp in zip(toks, lps)]
            todo = [r for r, c in enumerate(cut) if c is not None]
            if not todo:
                break
            sess.drop_pending()
            for r in todo:
                sess.rewind(r, len(ids[r]) + cut[r])
            active = torch.zeros(len(chunk), dtype=torch.bool)
            active[todo] = True
            with torch.inference_mode():
                sess.feed([[bang] if active[r] else [] for r in range(len(chunk))])
                res = sess.decode(params, params.max_tokens, None, active=active, logprobs=True)
            for r in todo:
                toks[r] = toks[r][:cut[r]] + [bang] + res[r][0]
                lps[r] = lps[r][:cut[r]] + [0.0] + sess.logprobs[r]
        flops = sess.take_row_flops()
        for r, p in enumerate(chunk):
            body = toks[r][:-1] if toks[r] and toks[r][-1] == eng.eos_id else toks[r]
            text = eng.decode(body)
            v = task.verify(p, text)
            out.append(Outcome(float(v.correct), float(v.answer_correct), flops[r], 0.0, float(len(toks[r])), text))
    return out


def _doubt(toks: list[int], lps: list[float], text_of: list[str], bang: int, threshold: float) -> int | None:
    """Where to force a correction: right after the uncorrected step line whose result the model
    found least likely (1 - min probability of the tokens after '='), if that doubt >= threshold."""
    best, where, line, res = -1.0, None, "", []
    for j, t in enumerate(toks):
        if j > 0 and text_of[toks[j - 1]].endswith("\n"):
            is_step = len(line) > 1 and line[0] in LABELS and line[1] == ":"
            if is_step and t != bang and res:
                doubt = 1.0 - math.exp(min(res))
                if doubt > best:
                    best, where = doubt, j
            line, res = "", []
        if "=" in line and not text_of[t].endswith("\n"):
            res.append(lps[j])
        line += text_of[t]
    return where if where is not None and best >= threshold else None
