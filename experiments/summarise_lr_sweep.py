"""Summarise an LR/batch sweep: final held-out loss per (model, tokens, batch, lr), best marked.

    python experiments/summarise_lr_sweep.py runs/lr-sweep
"""
import sys

from scalelab.tables import load_runs


def main(runs_dir: str) -> None:
    runs = load_runs(runs_dir)
    for p in runs.problems:
        print(f"skipped: {p}", file=sys.stderr)
    rows = {}
    for r in runs.records:
        c = r.config
        rows.setdefault((c["model"], r.tokens), []).append(
            (c.get("batch_size"), c.get("lr"), r.metrics["loss"], r.metrics.get("steps")))
    for (model, tokens), items in sorted(rows.items()):
        best = min(items, key=lambda t: t[2])
        print(f"\n{model} at {tokens:,} tokens (floor {runs.records[0].metrics.get('entropy_floor', float('nan')):.4f})")
        print(f"  {'batch':>5} {'lr':>7} {'loss':>8}")
        for b, lr, loss, _ in sorted(items, key=lambda t: (t[0] or 0, t[1] or 0)):
            print(f"  {b!s:>5} {lr!s:>7} {loss:8.4f}{'  <- best' if (b, lr, loss) == best[:3] else ''}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/lr-sweep")
