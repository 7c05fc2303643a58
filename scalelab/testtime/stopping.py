"""Marginal-gain stopping: the fifth analysis of `scalelab testtime allocate` (with an ORM).

A question is sampled one at a time. After m samples its state is (m, the best ORM score so
far); a table learned on other questions gives the expected gain in accuracy of one more sample
in that state (the answer is always the top-scored sample), and the question stops once that
gain per FLOP falls below a price lambda. This is the greedy solution of "most accuracy for a mean
FLOPs budget" when returns diminish: every question is sampled until its next sample is worth
less than lambda, so the last sample spent anywhere buys the same accuracy per FLOP (the
Lagrangian condition of the knapsack; Snell et al. 2024 sec. 3.2 spend by predicted difficulty,
here the difficulty is re-predicted after every sample from the verifier's scores).

The one rule covers the two ways rejection sampling wastes compute: a high best score predicts
that more samples will not change the answer (accept), and a low best score after several
samples predicts a question no sample solves (give up); in between, sampling continues. No
threshold is set by hand: lambda is the only choice, made per uniform budget k on one half of
the questions (the cheapest lambda whose accuracy there reaches uniform best-of-k's) together
with the gain table, then applied to the other half (2-fold, each half scored by the other's
choice). True correctness is used only to learn the table on the training half and to score.

States: m in log2 groups (1, 2-3, 4-7, ...), the best score in `bins` quantile bins of the
training half's running best scores. FLOPs are the drawn samples' own (policy decode and ORM),
plus the prompt's prefill once.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class Replay:
    """Every question replayed in `orders` random sample orders; arrays [question, order, m-1]."""

    best: np.ndarray      # best ORM score among the first m samples
    right: np.ndarray     # correctness of the top-scored of the first m samples
    spent: np.ndarray     # FLOPs of the first m samples (policy decode + ORM), prefill excluded
    policy: np.ndarray    # the policy's share of `spent`
    prefill: np.ndarray   # [question]


def replay(pools: list[Any], orders: int, rng: np.random.Generator) -> Replay:
    if not pools:
        raise ValueError("replay: no questions")
    Q, N = len(pools), pools[0].N
    orm = np.stack([pl.orm for pl in pools])                                 # [Q, N]
    ok = np.stack([pl.correct for pl in pools])
    dec = np.stack([pl.flops_decode for pl in pools])
    ver = np.stack([pl.orm_flops for pl in pools])
    perm = np.argsort(rng.random((Q, orders, N)), axis=2)                    # [Q, O, N] random orders
    take = lambda a: np.take_along_axis(a[:, None, :].repeat(orders, 1), perm, 2)  # noqa: E731
    s, c = take(orm), take(ok)
    best = np.maximum.accumulate(s, axis=2)
    # index of the running top score (the first one on ties)
    new = np.concatenate([np.ones((Q, orders, 1), bool), s[:, :, 1:] > best[:, :, :-1]], axis=2)
    arg = np.maximum.accumulate(np.where(new, np.arange(N), 0), axis=2)
    right = np.take_along_axis(c, arg, 2)
    pol = np.cumsum(take(dec), 2)
    return Replay(best=best, right=right, spent=pol + np.cumsum(take(ver), 2), policy=pol,
                  prefill=np.array([pl.flops_prefill for pl in pools], float))


def _cells(rep: Replay, rows: np.ndarray, edges: np.ndarray) -> np.ndarray:
    N = rep.best.shape[2]
    mgroup = np.floor(np.log2(np.arange(1, N + 1))).astype(int)             # m = 1, 2-3, 4-7, ...
    sbin = np.searchsorted(edges, rep.best[rows], side="right")              # [q, O, N]
    return mgroup[None, None, :] * (edges.size + 1) + sbin


@dataclass
class GainTable:
    edges: np.ndarray     # score bin edges
    gain: np.ndarray      # [cell] expected accuracy gain of one more sample

    def value(self, rep: Replay, rows: np.ndarray) -> np.ndarray:
        """Expected gain per FLOP of the next sample, [q, O, N] (the last position: none left)."""
        m = np.arange(1, rep.best.shape[2] + 1)
        per_sample = rep.spent[rows] / m                                     # the mean cost of samples seen
        v = self.gain[_cells(rep, rows, self.edges)] / per_sample
        v[:, :, -1] = -np.inf
        return v


def fit_gain(rep: Replay, rows: np.ndarray, bins: int = 8) -> GainTable:
    """Mean gain of the (m+1)-th sample per state over the training rows and orders. Score bins are
    equally wide in log-odds between the 1st and 99th percentile of the training half's running
    best scores: a judge's scores crowd near 0 and 1, and both ends matter (near 1: accepted; near
    0: hopeless), so quantile bins would lump a near miss with an accepted answer. A state no
    training question reached takes the nearest reached score bin of its m group."""
    run = rep.best[rows][:, :, :-1].ravel()
    z = np.log(np.clip(run, 1e-6, 1 - 1e-6) / (1 - np.clip(run, 1e-6, 1 - 1e-6)))
    lo, hi = np.quantile(z, [0.01, 0.99])
    edges = np.unique(1 / (1 + np.exp(-np.linspace(lo, hi, bins + 1)[1:-1]))) if hi > lo else np.array([])
    cells = _cells(rep, rows, edges)[:, :, :-1].ravel()
    g = (rep.right[rows][:, :, 1:] - rep.right[rows][:, :, :-1]).ravel()
    n_cells = int(rep.best.shape[2]).bit_length() * (edges.size + 1)         # m groups x score bins
    tot = np.bincount(cells, g, n_cells).reshape(-1, edges.size + 1)
    cnt = np.bincount(cells, minlength=n_cells).reshape(-1, edges.size + 1)
    gain = np.zeros(tot.shape)
    for i in range(gain.shape[0]):
        seen = np.flatnonzero(cnt[i])
        if seen.size:
            near = seen[np.abs(np.arange(gain.shape[1])[:, None] - seen[None]).argmin(1)]
            gain[i] = tot[i, near] / cnt[i, near]
    return GainTable(edges=edges, gain=gain.ravel())


def outcome(rep: Replay, rows: np.ndarray, table: GainTable, lam: float,
            value: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per question (mean over orders): correctness, samples used, policy FLOPs, verifier FLOPs
    (prefill included in the policy's) when each stops at the first state worth less than lam."""
    v = table.value(rep, rows) if value is None else value
    halt = v < lam
    halt[:, :, -1] = True                                                    # the pool is spent
    stop = np.argmax(halt, axis=2)                                           # [q, O] index m - 1
    pick = lambda a: np.take_along_axis(a[rows], stop[:, :, None], 2)[:, :, 0].mean(1)  # noqa: E731
    pol = pick(rep.policy) + rep.prefill[rows]
    return pick(rep.right), stop.mean(1) + 1.0, pol, pick(rep.spent) + rep.prefill[rows] - pol


def cheapest_lambda(rep: Replay, rows: np.ndarray, table: GainTable, target: float,
                    grid: int = 80) -> float | None:
    """The largest price (fewest samples) whose mean accuracy on `rows` reaches `target`."""
    v = table.value(rep, rows)
    pos = v[np.isfinite(v) & (v > 0)]
    inner = np.geomspace(pos.min(), pos.max(), grid)[::-1] if pos.size else np.array([])
    lams = np.concatenate([[np.inf], inner, [0.0, -np.inf]])  # inf: one sample each; -inf: the whole pool
    for lam in lams:
        if outcome(rep, rows, table, lam, v)[0].mean() >= target:
            return float(lam)
    return None


def bootstrap_saving(got: np.ndarray, flops: np.ndarray, uni_q: np.ndarray, uni_flops_q: np.ndarray,
                     at: Any, resamples: int = 200, seed: int = 0) -> tuple[float | None, int]:
    """Standard error of (uniform FLOPs at the adaptive accuracy) / (adaptive FLOPs) over questions
    resampled with replacement (uni_q, uni_flops_q: [k, question]); and how many resamples fell
    beyond the uniform curve and were left out."""
    rng = np.random.default_rng(seed)
    vals, left = [], 0
    for _ in range(resamples):
        i = rng.integers(0, got.size, got.size)
        u = at(uni_q[:, i].mean(1), uni_flops_q[:, i].mean(1), float(got[i].mean()))
        if u is None:
            left += 1
        else:
            vals.append(u / flops[i].mean())
    return (float(np.std(vals, ddof=1)) if len(vals) > 1 else None), left


def report(pools: list[Any], fold: np.ndarray, uni_k: list[int], uni_q: np.ndarray, uni_flops_q: np.ndarray,
           *, orders: int, bins: int, rng: np.random.Generator, at: Any,
           record: Any = None) -> list[str]:
    """Lines of the report (and one record per uniform budget via `record(k, lams, got, used, pol, ver, u)`).
    uni_q, uni_flops_q: uniform best-of-k correctness and FLOPs per question, [k, question]."""
    rep = replay(pools, orders, rng)
    hopeless = np.array([pl.correct.sum() == 0 for pl in pools])  # for the report only, never for a decision
    Q = len(pools)
    lines = ["marginal-gain stopping (one sample at a time; stop once the expected gain of the next sample per FLOP, "
             f"learned on one half by state (m, best ORM score so far; {bins} score bins), falls below lambda; lambda "
             "chosen on that half to reach uniform best-of-k there; scored on the other half):",
             f"{'k':>4}{'lambda (each half)':>22}{'mean n':>8}{'n some right':>13}{'n none right':>13}{'accuracy':>10}"
             f"{'± se':>7}{'FLOPs/q':>10}{'best-of-k':>10}{'FLOPs/q':>10}{'gap ± se':>14}{'saving ± se':>15}"
             f"{'vs k':>7}"]
    tables = {f: fit_gain(rep, np.flatnonzero(fold != f), bins) for f in (0, 1)}
    for j, k in enumerate(uni_k):
        lams = [cheapest_lambda(rep, np.flatnonzero(fold != f), tables[f], uni_q[j][fold != f].mean()) for f in (0, 1)]
        if any(lam is None for lam in lams):
            lines.append(f"{k:>4}  no lambda reaches uniform best-of-{k} on a half")
            continue
        got, used, pol, ver = (np.zeros(Q) for _ in range(4))
        for f in (0, 1):
            test = np.flatnonzero(fold == f)
            got[test], used[test], pol[test], ver[test] = outcome(rep, test, tables[f], lams[f])
        flops = pol + ver
        a, fq = float(got.mean()), float(flops.mean())
        se = float(got.std(ddof=1) / np.sqrt(Q))
        d = got - uni_q[j]
        gap, gap_se = float(d.mean()), float(d.std(ddof=1) / np.sqrt(Q))  # paired: the same questions
        u = at(uni_q.mean(1), uni_flops_q.mean(1), a)
        s_se, left = bootstrap_saving(got, flops, uni_q, uni_flops_q, at)
        save = "beyond n_max" if u is None else f"{u / fq:.2f}x" + (f" ± {s_se:.2f}" if s_se is not None else "")
        if left and u is not None:
            save += f" ({left} of 200 beyond)"
        shown = " | ".join(f"{lam:.3g}" for lam in lams)
        some, none = (float(used[m].mean()) if m.any() else float("nan") for m in (~hopeless, hopeless))
        lines.append(f"{k:>4}{shown:>22}{used.mean():>8.1f}{some:>13.1f}{none:>13.1f}{a:>10.3f}{se:>7.3f}"
                     f"{fq:>10.3g}{uni_q[j].mean():>10.3f}{uni_flops_q[j].mean():>10.3g}"
                     f"{f'{100 * gap:+.1f} ± {100 * gap_se:.1f}pt':>14}{save:>15}{uni_flops_q[j].mean() / fq:>6.2f}x")
        if record is not None:
            record(k, lams, got, used, pol, ver, u)
    return lines
