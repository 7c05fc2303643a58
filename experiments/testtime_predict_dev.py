"""Development check of the n <= 8 -> large-n test-time predictions, on questions the acceptance
run does not use: one cached allocation pool (`scalelab testtime allocate ... --set seed=1` writes
`pool-<hash>.npz`: answers, verdicts and ORM scores of n_max samples per question, difficulties in
order, `--problems` each). Each block of 8 samples is a small pool; the other n_max - 8 samples of
the same problems are the independent large pool it predicts.

    python experiments/testtime_predict_dev.py RUNS/<model>/allocation/pool-<hash>.npz [--problems 100]

Per law, the error at k = n_max - 8 by difficulty (mean over blocks, and their spread), how many of
the block x difficulty predictions land within 3 points, the mean |error|, and the error of the mean
over difficulties. Laws: the beta-binomial per difficulty and with one shared alpha
(`SharedTailCoverage`); best-of-n by the testtime law and by the selection law (rho x coverage);
majority vote by the testtime law on 1, 2, 4, 8 and on odd n (docs/testtime.md, "Predicting
large budgets"). Used on 2026-12-01 to choose those laws before the acceptance run was read.
"""
from __future__ import annotations

import argparse

import numpy as np

from scalelab.laws.coverage import CoverageLaw, SharedTailCoverage
from scalelab.laws.sampling import TesttimeLaw
from scalelab import passk as est
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("pool")
    ap.add_argument("--problems", type=int, default=100, help="problems per difficulty, in order")
    ap.add_argument("--draws", type=int, default=200, help="Monte Carlo draws of the majority vote")
    args = ap.parse_args()
    z = np.load(args.pool)
    C, S, A = z["correct"], z["orm"], z["answers"]
    N = C.shape[1]
    D, T, ks = C.shape[0] // args.problems, N - 8, np.arange(1, 9, dtype=float)
    rng = np.random.default_rng(0)
    vote = lambda a, c, k: np.mean([est.vote_at_k(x, y, k, draws=args.draws, rng=rng) for x, y in zip(a, c)])  # noqa: E731
    err: dict[str, list[np.ndarray]] = {}
    for blk in range(N // 8):
        small = np.arange(8 * blk, 8 * blk + 8)
        big = np.setdiff1d(np.arange(N), small)
        pred: dict[str, list[float]] = {}
        truth: dict[str, list[float]] = {}
        counts = []
        for d in range(D):
            r = slice(args.problems * d, args.problems * (d + 1))
            c, s, a = C[r][:, small], S[r][:, small], A[r][:, small]
            cb, sb, ab = C[r][:, big], S[r][:, big], A[r][:, big]
            truth.setdefault("cov", []).append(np.mean([est.pass_at_k(T, int(x.sum()), T) for x in cb]))
            truth.setdefault("bo", []).append(np.mean([est.best_of_k(x, y, T) for x, y in zip(sb, cb)]))
            truth.setdefault("maj", []).append(vote(ab, cb, T))
            cov = np.array([np.mean([est.pass_at_k(8, int(x.sum()), int(k)) for x in c]) for k in ks])
            bo = np.array([np.mean([est.best_of_k(x, y, int(k)) for x, y in zip(s, c)]) for k in ks])
            odd = np.array([vote(a, c, k) for k in (1, 3, 5, 7)])
            pow2 = np.array([vote(a, c, k) for k in (1, 2, 4, 8)])
            counts.append(c.sum(1))
            pc = CoverageLaw(bootstrap=0).fit(ks, cov, counts=(counts[-1], 8)).predict([T])[0]
            pred.setdefault("coverage, beta per difficulty", []).append(pc)
            pred.setdefault("best-of-n, testtime law 1,2,4,8", []).append(
                TesttimeLaw(bootstrap=0).fit([1, 2, 4, 8], bo[[0, 1, 3, 7]]).predict([T])[0])
            pred.setdefault("best-of-n, selection", []).append(bo[-1] / cov[-1] * pc)
            pred.setdefault("majority, testtime law 1,2,4,8", []).append(
                TesttimeLaw(bootstrap=0).fit([1, 2, 4, 8], pow2).predict([T])[0])
            pred.setdefault("majority, testtime law odd n", []).append(
                TesttimeLaw(bootstrap=0).fit([1, 3, 5, 7], odd).predict([T])[0])
            pred.setdefault("_rho", []).append(bo[-1] / cov[-1])
        shared = SharedTailCoverage().fit(counts, 8)
        pcs = np.array([shared.predict([T], g)[0] for g in range(D)])
        pred["coverage, shared alpha"] = list(pcs)
        pred["best-of-n, selection, shared alpha"] = list(np.array(pred.pop("_rho")) * pcs)
        for name, v in pred.items():
            t = truth["cov" if name.startswith("coverage") else "bo" if name.startswith("best") else "maj"]
            err.setdefault(name, []).append(np.array(v) - np.array(t))
    print(f"error (points) at k = {T} from 8 samples, by difficulty 1..{D}: mean over {N // 8} blocks (spread)")
    for name, v in err.items():
        e = np.array(v)  # [block, difficulty]
        cells = " ".join(f"{100 * m:+5.1f}({100 * sd:.1f})" for m, sd in zip(e.mean(0), e.std(0)))
        print(f"{name:<36}{cells} | within 3: {int((np.abs(e) <= 0.03).sum())}/{e.size}, mean |error| "
              f"{100 * np.abs(e).mean():.1f}, error of the mean over difficulties {100 * e.mean():+.1f}")


if __name__ == "__main__":
    main()
