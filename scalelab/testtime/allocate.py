"""Difficulty-adaptive test-time compute (Snell et al. 2024, "Scaling LLM Test-Time Compute
Optimally can be More Effective than Scaling Model Parameters", sec. 3-4).

One pool of `n_max` samples per question is drawn for a mix of difficulties (the questions a
deployment would see), and cached as `pool-<hash>.npz` next to the records (`_cached_pools`). Five
analyses use it, none of them the true number of steps to decide anything:

1. Predicted difficulty. The first `probe` samples of a question (samples are exchangeable, so
   the first ones are a random subset) give its answer agreement: the share of the most common
   answer (or, `predictor="orm"`, their best ORM score). Questions are cut into `bins` quantile
   bins of it (low = predicted hard). Snell et al. bin by the model's own pass@1 estimate or a
   verifier's mean score; answer agreement needs neither labels nor a verifier. The report shows
   the true steps and pass@1 per bin, so the predictor can be judged.
2. Compute-optimal strategy per bin. For each budget k the strategies (majority vote, and with
   an ORM best-of-n and weighted best-of-n) are scored on the samples after the probe (held out
   from the prediction) with the unbiased estimators of `scalelab.passk`; the best strategy per bin
   is chosen on half of the questions and its accuracy measured on the other half (2-fold cross-
   validation, so choosing among strategies does not flatter the result).
3. Adaptive allocation: sample a question a little at a time and stop early. Two stopping rules:
   `agree` (the issue's rule) stops once the most common answer holds a share >= tau of the
   samples so far; `verifier` (needs an ORM) stops once some sample's ORM score reaches the
   confidence threshold, i.e. rejection sampling until the verifier accepts. Each runs under a
   per-question cap of samples. Answers come from the same rule as the uniform baseline (with an
   ORM, `select`: weighted best-of-n, or plain best-of-n, the top-scored sample; else majority
   vote). With a verifier that ranks a problem's samples nearly perfectly, plain best-of-n is
   the stronger baseline: a weighted vote lets a wrong answer that many samples share outvote a
   right one that few do. Replayed on the pool in `orders` random orders and averaged. For each
   setting the report gives accuracy, FLOPs per question (policy + verifier) and the FLOPs
   uniform allocation needs for the same accuracy (interpolated on its curve in log FLOPs), i.e.
   the saving.
4. With an ORM, rejection sampling with a cap per predicted-difficulty bin (`_bin_caps`).
5. With an ORM and `select="best"`, marginal-gain stopping (`stopping.py`): sample until the
   expected gain of one more sample per FLOP, learned by state (samples so far, best score so far)
   on one half of the questions, falls below a price chosen there; scored on the other half.

Measured (docs/testtime.md, docs/LOG.md): agreement never beat uniform allocation (it spends its
extra samples on questions no number of samples helps); rejection sampling saved 1.6x on a d4
policy with its own ORM and 1.73x on a d4 policy with a judge ORM; per-bin caps 1.91x with bins
of answer agreement, 2.17-2.68x with bins of the probe's best ORM score; marginal-gain stopping
reached uniform best-of-16 and best-of-32 with 2.65x and 3.13x fewer FLOPs.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np
from pydantic import Field

from scalelab.config import Config
from scalelab.errors import ConfigError
from scalelab.records import RunRecord, atomic_write_json, check_output_dir, config_hash, write_record
from scalelab import passk as est
class AllocateConfig(Config):
    model: str
    orm: str | None = None
    difficulties: list[int] = Field(default_factory=lambda: list(range(1, 9)))
    problems: int = Field(50, ge=2, le=100_000, description="problems per difficulty")
    split: Literal["val", "test"] = "test"
    modulus: int | list[int] | None = Field(None, description="as in TesttimeConfig: fix the modulus or a band")
    n_max: int = Field(64, ge=4, le=100_000)
    probe: int = Field(4, ge=2, le=1024)
    bins: int = Field(5, ge=1, le=100)
    predictor: Literal["agreement", "orm"] = Field("agreement", description="what bins the questions: the probe's "
                                                   "answer agreement, or its best ORM score (needs --orm)")
    gain_bins: int = Field(16, ge=1, le=100, description="marginal-gain stopping: bins of the best ORM score so "
                           "far (16: on development questions 4 bins saved 1.3-1.4x, 8 2.4-2.6x, 16 2.9-3.2x, 32 2.8-3.1x)")
    step: int = Field(1, ge=1, le=1024, description="adaptive: samples drawn per round")
    taus: list[float] = Field(default_factory=lambda: [0.5, 0.75, 1.0], description="agree rule thresholds")
    confidences: list[float] = Field(default_factory=lambda: [0.5, 0.7, 0.9], description="verifier rule thresholds")
    caps: list[int] = Field(default_factory=lambda: [4, 8, 16], description="most samples per question")
    select: Literal["weighted", "best"] = Field("weighted", description="with an ORM: weighted best-of-n or "
                                                "best-of-n (the top-scored sample), for uniform and adaptive alike")
    orders: int = Field(20, ge=1, le=10_000)
    temperature: float = Field(0.8, gt=0, le=10)
    draws: int = Field(400, ge=1)
    seed: int = Field(0, ge=0)
    max_batch: int = Field(1024, ge=1)
    threads: int | None = Field(None, ge=1)


def _agreement(answers: np.ndarray) -> float:
    a = answers[answers != est.NO_ANSWER]
    if a.size == 0:
        return 0.0
    return float(np.unique(a, return_counts=True)[1].max() / answers.size)


def _choose(answers: np.ndarray, correct: np.ndarray, scores: np.ndarray | None, select: str = "weighted") -> float:
    """Correctness of the vote over these samples (weighted by scores when given), or of the
    top-scored sample (`select="best"`)."""
    if scores is not None and select == "best":
        return float(correct[np.argmax(scores)])
    ok = answers != est.NO_ANSWER
    if not ok.any():
        return 0.0
    w = np.ones(answers.size) if scores is None else scores
    vals = np.unique(answers[ok])
    tot = np.array([w[answers == v].sum() for v in vals])
    win = vals[np.flatnonzero(tot == tot.max())[0]]
    members = np.flatnonzero(answers == win)
    if scores is None:
        return float(correct[members].mean())  # a random member, in expectation
    return float(correct[members[np.argmax(scores[members])]])


def run_allocation(cfg: AllocateConfig, runs_dir: str | Path,
                   progress: Callable[[str, int, int], None] | None = None) -> list[str]:
    import torch

    from scalelab.testtime.evaluate import TesttimeConfig, load_context

    if cfg.probe >= cfg.n_max:
        raise ConfigError(f"probe={cfg.probe} must be smaller than n_max={cfg.n_max}")
    check_output_dir(runs_dir, "--runs-dir")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    tcfg = TesttimeConfig.build(model=cfg.model, orm=cfg.orm, modulus=cfg.modulus,
                                strategies=["majority"] + (["best_of_n"] if cfg.orm else []),
                                temperature=cfg.temperature, seed=cfg.seed, max_batch=cfg.max_batch, n=[cfg.n_max])
    ctx, parent, pid, src = load_context(tcfg, progress=progress)
    problems = [p for d in cfg.difficulties
                for p in src.problems(cfg.split, cfg.problems, steps=d, modulus=cfg.modulus, seed=cfg.seed)]
    pools = _cached_pools(cfg, Path(runs_dir) / pid / "allocation",
                          lambda: ctx.scored(problems, cfg.n_max, "orm") if cfg.orm else ctx.pool(problems, cfg.n_max))
    rng = np.random.default_rng(cfg.seed)
    lines: list[str] = []
    steps = np.array([p.steps for p in problems])

    # 1. predicted difficulty from the probe samples
    if cfg.predictor == "orm" and not cfg.orm:
        raise ConfigError("predictor=orm needs --orm")
    agree = np.array([pl.orm[:cfg.probe].max() if cfg.predictor == "orm" else _agreement(pl.answers[:cfg.probe])
                      for pl in pools])
    what = "answer agreement" if cfg.predictor == "agreement" else "best ORM score"
    edges = np.unique(np.quantile(agree, np.linspace(0, 1, cfg.bins + 1)[1:-1]))
    raw = np.searchsorted(edges, agree, side="left")
    bin_of = np.unique(raw, return_inverse=True)[1].reshape(-1)  # 0 = least agreement = predicted hardest
    n_bins = int(bin_of.max()) + 1
    pass1 = np.array([pl.correct[cfg.probe:].mean() for pl in pools])
    lines.append(f"predicted difficulty: {n_bins} bins of {what} over {cfg.probe} samples "
                 f"(bin 0 = least {'agreement' if cfg.predictor == 'agreement' else 'score'})")
    lines.append(f"{'bin':>4}{'questions':>10}{cfg.predictor:>11}{'true steps':>12}{'pass@1':>8}")
    for b in range(n_bins):
        m = bin_of == b
        lines.append(f"{b:>4}{int(m.sum()):>10}{agree[m].mean():>11.2f}{steps[m].mean():>12.2f}{pass1[m].mean():>8.3f}")

    # 2. compute-optimal strategy per bin, 2-fold cross-validated
    held = cfg.n_max - cfg.probe
    ks = [k for k in (2 ** i for i in range(20)) if k <= held]
    rules = {"majority": None}
    if cfg.orm:
        rules.update(best_of_n="best", weighted_best_of_n="weighted")
    acc = {}  # (rule, k) -> per-question accuracy on held-out samples
    for name, kind in rules.items():
        for k in ks:
            vals = []
            for pl in pools:
                a, c = pl.answers[cfg.probe:], pl.correct[cfg.probe:]
                s = pl.orm[cfg.probe:] if pl.orm is not None else None
                if kind == "best":
                    vals.append(est.best_of_k(s, c, k))
                else:
                    vals.append(est.vote_at_k(a, c, k, scores=s if kind else None, draws=cfg.draws, rng=rng))
            acc[(name, k)] = np.array(vals)
    fold = rng.permutation(len(problems)) % 2
    lines.append("compute-optimal strategy per predicted-difficulty bin (chosen on one half, scored on the other):")
    lines.append(f"{'k':>4}  {'best single strategy':<28}{'per-bin optimal':>16}  choices by bin")
    for k in ks:
        best_single = max(rules, key=lambda r: acc[(r, k)].mean())
        cv = np.zeros(len(problems))
        picks = []
        for f in (0, 1):
            train, test = fold != f, fold == f
            for b in range(n_bins):
                tb = train & (bin_of == b)
                pick = max(rules, key=lambda r: acc[(r, k)][tb].mean() if tb.any() else -1)
                cv[test & (bin_of == b)] = acc[(pick, k)][test & (bin_of == b)]
                if f == 0:
                    picks.append(pick)
        lines.append(f"{k:>4}  {best_single + f' {acc[(best_single, k)].mean():.3f}':<28}{cv.mean():>16.3f}  {', '.join(picks)}")

    # 3. adaptive allocation against uniform, same selection rule
    rule = ("weighted_best_of_n" if cfg.select == "weighted" else "best_of_n") if cfg.orm else "majority"
    cost = np.array([pl.flops_decode.mean() for pl in pools])
    pre = np.array([pl.flops_prefill for pl in pools])
    vcost = np.array([pl.orm_flops.mean() for pl in pools]) if cfg.orm else np.zeros(len(pools))
    uni_k = [k for k in (2 ** i for i in range(20)) if k <= cfg.n_max]
    if cfg.orm and cfg.select == "best":
        uni_q = np.array([[est.best_of_k(pl.orm, pl.correct, k) for pl in pools] for k in uni_k])  # [k, question]
    else:
        uni_q = np.array([[est.vote_at_k(pl.answers, pl.correct, k, scores=pl.orm if cfg.orm else None,
                                         draws=cfg.draws, rng=rng) for pl in pools] for k in uni_k])
    uni_acc = uni_q.mean(1)
    uni_flops = np.array([np.mean(pre + k * (cost + vcost)) for k in uni_k])
    lines.append(f"adaptive allocation (answers by {rule}; {cfg.step} sample(s) per round, at most `cap` per question):")
    lines.append(f"{'stop rule':<22}{'cap':>5}{'mean n':>8}{'accuracy':>10}{'FLOPs/q':>11}"
                 f"{'uniform FLOPs/q at same acc':>30}{'saving':>8}")
    settings = [("agree", t) for t in cfg.taus] + ([("verifier", c) for c in cfg.confidences] if cfg.orm else [])
    for stop, thr in settings:
        for cap in sorted({min(c, cfg.n_max) for c in cfg.caps}):
            got, used = _adaptive(pools, stop, thr, cap, cfg, rng)
            a = float(got.mean())
            f = float(np.mean(pre + used * (cost + vcost)))
            u = _uniform_flops_at(uni_acc, uni_flops, a)
            save = f"{u / f:.2f}x" if u is not None else "-"
            what = f"agreement >= {thr:g}" if stop == "agree" else f"ORM score >= {thr:g}"
            lines.append(f"{what:<22}{cap:>5}{used.mean():>8.1f}{a:>10.3f}{f:>11.3g}"
                         f"{(f'{u:.3g}' if u else 'beyond n_max'):>30}{save:>8}")
            _record(cfg, runs_dir, parent, pid, rule, stop, thr, cap, a, got, used, pre, cost, vcost, len(problems), u)
    if cfg.orm:
        lines += _bin_caps(cfg, runs_dir, parent, pid, rule, pools, bin_of, fold, rng, pre, cost, vcost,
                           uni_k, uni_q, uni_acc, uni_flops)
    if cfg.orm and cfg.select == "best":
        lines += _gain(cfg, runs_dir, parent, pid, rule, pools, fold, rng, pre, cost, vcost, uni_k, uni_q)
    lines.append("uniform: " + ", ".join(f"n={k} {a_:.3f} ({f_:.3g})" for k, a_, f_ in zip(uni_k, uni_acc, uni_flops)))
    out = Path(runs_dir) / pid / "allocation"
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / f"report-{config_hash(cfg.model_dump())}.json", {"config": cfg.model_dump(), "lines": lines})
    return lines


POOL_FIELDS = ("model", "orm", "difficulties", "problems", "split", "modulus", "n_max", "temperature", "seed")


def _cached_pools(cfg: AllocateConfig, folder: Path, draw: Callable[[], list[Any]]) -> list[Any]:
    """The pool of every question, drawn once: saved as `pool-<hash>.npz` (answers, verdicts, ORM scores
    and FLOPs per sample; no texts) next to the reports, so that other stop rules, probes and bins
    are analysed without sampling again. The hash covers what decides the samples (POOL_FIELDS)."""
    from scalelab.testtime.strategies import Pool

    path = folder / f"pool-{config_hash({k: getattr(cfg, k) for k in POOL_FIELDS})}.npz"
    if path.is_file():
        z = np.load(path)
        orm = z["orm"] if "orm" in z.files else None
        return [Pool(texts=[""] * z["correct"].shape[1], correct=z["correct"][i], answer_correct=z["answer_correct"][i],
                     answers=z["answers"][i], flops_prefill=float(z["flops_prefill"][i]),
                     flops_decode=z["flops_decode"][i], tokens=z["tokens"][i],
                     orm=None if orm is None else orm[i], orm_flops=None if orm is None else z["orm_flops"][i])
                for i in range(z["correct"].shape[0])]
    pools = draw()
    arrays = {k: np.stack([getattr(pl, k) for pl in pools]) for k in
              ("correct", "answer_correct", "answers", "flops_decode", "tokens")}
    arrays["flops_prefill"] = np.array([pl.flops_prefill for pl in pools])
    if pools[0].orm is not None:
        arrays.update(orm=np.stack([pl.orm for pl in pools]), orm_flops=np.stack([pl.orm_flops for pl in pools]))
    folder.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    tmp.replace(path)
    return pools


def _bin_caps(cfg: AllocateConfig, runs_dir: str | Path, parent: Any, pid: str, rule: str, pools: list[Any],
              bin_of: np.ndarray, fold: np.ndarray, rng: np.random.Generator, pre: np.ndarray, cost: np.ndarray,
              vcost: np.ndarray, uni_k: list[int], uni_q: np.ndarray, uni_acc: np.ndarray,
              uni_flops: np.ndarray) -> list[str]:
    """4. Rejection sampling with a cap per predicted-difficulty bin (Snell et al. 2024, sec. 3.2:
    spend by predicted difficulty). The probe samples are drawn first (they predicted the bin),
    then one at a time until the ORM accepts or the bin's cap is reached. For each uniform budget
    k, the cheapest caps (one per bin, from `caps`) whose accuracy on one half of the questions
    reaches uniform best-of-k's on that half are chosen there and scored on the other half
    (2-fold). Why: rejection sampling alone spends its whole cap on the questions no sample
    solves, which bounds its saving by cap / mean n."""
    import itertools

    caps = sorted({min(c, cfg.n_max) for c in cfg.caps if c >= cfg.probe})
    rows = np.arange(len(pools))
    combos = [np.array(c) for c in itertools.product(range(len(caps)), repeat=int(bin_of.max()) + 1)]
    lines = [f"rejection sampling with a cap per predicted-difficulty bin (the {cfg.probe} probe samples first; caps "
             "chosen on one half to reach uniform best-of-k there, scored on the other):",
             f"{'ORM score >=':>12}{'k':>4}  {'caps by bin (each half)':<24}{'mean n':>7}{'accuracy':>10}"
             f"{'FLOPs/q':>10}"
             f"{'uniform acc':>12}{'uniform FLOPs/q at same acc':>29}{'saving':>8}"]
    for thr in cfg.confidences:
        runs = [_adaptive(pools, "verifier", thr, c, cfg, rng, prefix=cfg.probe) for c in caps]
        got = np.array([g for g, _ in runs])                           # [cap, question]
        used = np.array([u for _, u in runs])
        flops = pre[None] + used * (cost + vcost)[None]                 # [cap, question]
        for j, k in enumerate(uni_k):
            picks = []
            for f in (0, 1):
                train = fold != f
                ok = [(flops[c[bin_of], rows][train].mean(), i) for i, c in enumerate(combos)
                      if got[c[bin_of], rows][train].mean() >= uni_q[j][train].mean()]
                picks.append(combos[min(ok)[1]] if ok else None)
            if any(c is None for c in picks):
                lines.append(f"{thr:>12g}{k:>4}  no caps reach uniform best-of-{k} on a half")
                continue
            pick = np.where(fold == 0, picks[0][bin_of], picks[1][bin_of])  # each half scored by the other's choice
            a_q, n_q = got[pick, rows], used[pick, rows]
            a, f_ = float(a_q.mean()), float(flops[pick, rows].mean())
            u = _uniform_flops_at(uni_acc, uni_flops, a)
            shown = [[caps[i] for i in c] for c in picks]
            text = " | ".join(",".join(map(str, c)) for c in shown)
            lines.append(f"{thr:>12g}{k:>4}  {text:<24}{n_q.mean():>7.1f}{a:>10.3f}{f_:>10.3g}"
                         f"{uni_acc[j]:>12.3f}{(f'{u:.3g}' if u else 'beyond n_max'):>29}"
                         f"{(f'{u / f_:.2f}x' if u else '-'):>8}")
            _record(cfg, runs_dir, parent, pid, rule, f"verifier-bins-k{k}", thr, int(max(map(max, shown))), a, a_q,
                    n_q, pre, cost, vcost, len(pools), u, bin_caps=shown, uniform_k=k)
    return lines


def _gain(cfg: AllocateConfig, runs_dir: str | Path, parent: Any, pid: str, rule: str, pools: list[Any],
          fold: np.ndarray, rng: np.random.Generator, pre: np.ndarray, cost: np.ndarray, vcost: np.ndarray,
          uni_k: list[int], uni_q: np.ndarray) -> list[str]:
    """5. Marginal-gain stopping (`stopping.py`), against uniform best-of-k per question."""
    from scalelab.testtime import stopping

    uni_flops_q = np.array([pre + k * (cost + vcost) for k in uni_k])  # [k, question]

    def record(k: int, lams: list[float], got: np.ndarray, used: np.ndarray, pol: np.ndarray, ver: np.ndarray,
               u: float | None) -> None:
        _record(cfg, runs_dir, parent, pid, rule, f"gain-k{k}", lams[0], cfg.n_max, float(got.mean()), got, used,
                pre, (pol - pre) / used, ver / used, len(pools), u, lambdas=lams, uniform_k=k)

    return stopping.report(pools, fold, uni_k, uni_q, uni_flops_q, orders=cfg.orders, bins=cfg.gain_bins, rng=rng,
                           at=_uniform_flops_at, record=record)


def _adaptive(pools: list[Any], stop: str, thr: float, cap: int, cfg: AllocateConfig,
              rng: np.random.Generator, prefix: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Per question: expected correctness and samples used, over `orders` random sample orders
    (the first `prefix` samples of the pool, e.g. the probe, come first in every order)."""
    got, used = np.zeros(len(pools)), np.zeros(len(pools))
    first = max(2 if stop == "agree" else 1, prefix)  # agreement needs two answers to mean anything
    for i, pl in enumerate(pools):
        for _ in range(cfg.orders):
            order = np.concatenate([np.arange(prefix), prefix + rng.permutation(pl.N - prefix)]) if prefix else \
                rng.permutation(pl.N)
            m = min(first, cap, pl.N)
            while m < min(cap, pl.N):
                seen = order[:m]
                if stop == "agree" and _agreement(pl.answers[seen]) >= thr:
                    break
                if stop == "verifier" and pl.orm[seen].max() >= thr:
                    break
                m += cfg.step
            sel = order[:min(m, cap, pl.N)]
            scores = pl.orm[sel] if pl.orm is not None else None
            got[i] += _choose(pl.answers[sel], pl.correct[sel], scores, cfg.select)
            used[i] += sel.size
    return got / cfg.orders, used / cfg.orders


def _uniform_flops_at(acc: np.ndarray, flops: np.ndarray, target: float) -> float | None:
    """FLOPs at which the uniform curve first reaches `target` (log-linear interpolation)."""
    best = np.maximum.accumulate(acc)
    if target > best[-1]:
        return None
    j = int(np.argmax(best >= target))
    if j == 0:
        return float(flops[0])
    a0, a1 = best[j - 1], best[j]
    t = 0.0 if a1 == a0 else (target - a0) / (a1 - a0)
    return float(np.exp(np.log(flops[j - 1]) + t * (np.log(flops[j]) - np.log(flops[j - 1]))))


def _record(cfg: AllocateConfig, runs_dir: str | Path, parent: Any, pid: str, rule: str, stop: str, thr: float,
            cap: int, acc: float, got: np.ndarray, used: np.ndarray, pre: np.ndarray, cost: np.ndarray,
            vcost: np.ndarray, q: int, uniform: float | None, **extra: Any) -> None:
    name = f"adaptive_{rule}"
    key = {**cfg.model_dump(exclude={"threads", "max_batch", "taus", "confidences", "caps"}),
           "stop": stop, "threshold": thr, "cap": cap}
    run_dir = Path(runs_dir) / pid / "allocation" / f"{name}-{stop}{thr:g}-cap{cap}-{config_hash(key)}"
    rec = RunRecord(run_id=run_dir.name, parent_id=pid, phase="testtime", technique=name, task="testbed",
                    config={**cfg.model_dump(), "stop": stop, "threshold": thr, "cap": cap})
    if parent is not None:
        rec.flops = {k: v for k, v in parent.flops.items() if k in ("pretrain", "posttrain")}
    inf = float(np.sum(pre + used * cost))
    ver = float(np.sum(used * vcost))
    rec.flops.update(inference=inf, verifier=ver)
    se = float(got.std(ddof=1) / np.sqrt(got.size)) if got.size > 1 else None
    rec.complete(n=float(used.mean()), accuracy=float(acc), accuracy_se=se, stop=stop, threshold=thr, cap=cap, problems=q,
                 flops_per_question=(inf + ver) / q, inference_flops_per_question=inf / q,
                 verifier_flops_per_question=ver / q, uniform_flops_same_accuracy=uniform,
                 difficulties=cfg.difficulties, kind="adaptive", per_problem=got.tolist(), **extra)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(run_dir / "config.json", rec.config)
    write_record(run_dir, rec)
