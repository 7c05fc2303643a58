"""The extrapolation check of a sweep (issue 3's acceptance): fit, pick the ladder size the fit
says is compute-optimal at `--factor` x the sweep's largest budget, train it there, compare.

    python experiments/extrapolate.py runs/sweep --factor 10 [--corpus stdlib] [--threads 2] [--dry-run]

The budget is exact training FLOPs, as the sweep's members count them, so the optimal size is
chosen on the ladder itself: for each depth, D = C / (exact training FLOPs per token) and the
fitted L(N, D) is evaluated; the smallest prediction wins (a 6ND optimum would mis-price the
attention and head FLOPs these small models spend). The member's config (source, vocabulary,
sequence length, eval tokens) is the sweep's, with only the model and tokens changed; the
training rule sets batch and learning rate as it did for the sweep.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from scalelab import model as M
from scalelab.laws import ChinchillaLaw, fit_table
from scalelab.tables import load_runs
from scalelab.pretrain.train import TrainConfig, resolve_source, source_options, train


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("sweep")
    ap.add_argument("--factor", type=float, default=10.0)
    ap.add_argument("--runs-dir", default=None, help="where the extra run goes (default: SWEEP-extrapolation)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--dry-run", action="store_true")
    a = ap.parse_args()

    recs = [r for r in load_runs(a.sweep).records if r.phase == "pretrain"]
    law, prep = fit_table(a.sweep, ChinchillaLaw(bootstrap=a.bootstrap))
    resid = (law.predict(prep.X) - prep.y) / prep.y
    c_max = max(r.flops["pretrain"] for r in recs)
    C = a.factor * c_max
    base = TrainConfig.build(recs[0].config)
    source = resolve_source(base.source, source_options(base))
    family = "gpu-" if base.model.startswith("gpu-") else ""
    rows = []
    for depth in range(1, 17):
        arch = M.parse_preset(f"{family}d{depth}", source.vocab_size, base.seq_len)
        n = M.param_counts(arch).active
        d = C / M.train_flops_per_token(arch, base.seq_len)
        rows.append((arch.name, n, d, float(law.predict([[n, d]])[0])))
    best = min(rows, key=lambda r: r[3])
    p = law.params_
    print(f"sweep {a.sweep}: {len(recs)} runs, largest budget {c_max:.3g} FLOPs; fit E {p['E']:.4f} "
          f"A {p['A']:.4g} B {p['B']:.4g} alpha {p['alpha']:.4f} beta {p['beta']:.4f}; 95% CI of E "
          f"{law.ci_.get('E') if law.ci_ else None}")
    print(f"in-sample relative residuals: rms {100 * (resid ** 2).mean() ** 0.5:.2f}%, max |.| "
          f"{100 * abs(resid).max():.2f}%; entropy floor {recs[0].metrics.get('entropy_floor')}")
    print(f"target C = {C:.3g} FLOPs ({a.factor:g}x):")
    for name, n, d, l in rows[:8]:
        print(f"  {name:<5} N {n:>9,} D {d:>12,.0f} ({d / n:8.1f} tok/param) predicted {l:.4f}"
              + ("  <- optimal" if name == best[0] else ""))
    if a.dry_run:
        return
    cfg = base.override([f"model={best[0]}", f"tokens={int(best[2])}", f"threads={a.threads}"])
    out = Path(a.runs_dir or f"{a.sweep.rstrip('/')}-extrapolation")
    rec = train(cfg, out)
    got = rec.metrics["loss"]
    pred = float(law.predict([[rec.n_params_active or rec.n_params_nonembedding, rec.tokens]])[0])
    lo_hi = _interval(law, rec.n_params_active or rec.n_params_nonembedding, rec.tokens)
    summary = {"sweep": a.sweep, "factor": a.factor, "compute": rec.flops["pretrain"], "model": best[0],
               "N": rec.n_params_active or rec.n_params_nonembedding, "D": rec.tokens, "loss": got,
               "predicted": pred, "error": pred / got - 1, "wall_s": rec.wall_s, "run_id": rec.run_id,
               "params": p, "ci95": law.ci_, "rms_residual": float((resid ** 2).mean() ** 0.5),
               "entropy_floor": recs[0].metrics.get("entropy_floor"), "interval": lo_hi}
    print(f"extra run {rec.run_id}: {rec.flops['pretrain']:.3g} FLOPs, loss {got:.4f}, predicted {pred:.4f}, "
          f"error {100 * (pred / got - 1):+.2f}% ({rec.wall_s:.0f} s); bootstrap 95% interval of the "
          f"prediction {lo_hi}")
    (out / "extrapolation.json").write_text(json.dumps(summary, indent=1, default=float))


def _interval(law: ChinchillaLaw, n: float, d: float) -> list[float] | None:
    """Percentile 95% interval of the prediction over the bootstrap refits (log-parameters a, b,
    e, alpha, beta, as `ChinchillaLaw` stores them)."""
    import numpy as np

    th = getattr(law, "bootstrap_params_", None)
    if th is None or len(th) == 0:
        return None
    a, b, e, al, be = th.T
    with np.errstate(over="ignore", invalid="ignore"):
        preds = np.exp(e) + np.exp(a) * n ** -al + np.exp(b) * d ** -be
    preds = np.where(np.isfinite(preds), preds, np.inf)  # a refit with A or B at inf predicts inf
    return [float(np.percentile(preds, 2.5)), float(np.percentile(preds, 97.5))]


if __name__ == "__main__":
    sys.exit(main())
