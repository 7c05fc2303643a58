"""The acceptance checks of post-training, one command each:

    scalelab posttrain accept sft      --base RUN --runs-dir DIR   full and LoRA SFT raise middle difficulties
    scalelab posttrain accept distill  --base RUN --teacher RUN    distilled student beats scratch at equal FLOPs
    scalelab posttrain accept prune    --base RUN                  50% width pruning + distillation keeps >= 90%
    scalelab posttrain accept quantize --base RUN                  int8 loses <= 1 point with >= 2x smaller weights
    scalelab posttrain accept synth    --base RUN [--teacher RUN]  synthetic data raises the hardest bin

Each runs the stages it needs (finished runs are found, not redone), prints the numbers and PASS or
FAIL. A gain counts when it exceeds two standard errors of the difference (binomial standard errors
of the per-difficulty accuracies, floored at one success in n, combined in quadrature).
`--set key=value` reaches every stage of the check (e.g. eval_problems=100, examples=5000).

"Middle difficulties" are those where the base model's accuracy lies in [0.1, 0.9]: room to gain,
not hopeless. For `distill`, `--base` is the same-size model trained from scratch (a pretraining run)
and the student re-initialised from its architecture (`--init scratch`) is distilled on as many
pretraining-stream tokens as the base was trained on, so both spend the same student FLOPs.
"""
from __future__ import annotations

import math
from typing import Any, Callable

from scalelab.errors import InputError

CHECKS = ("sft", "distill", "prune", "quantize", "synth")


def _se(p: float, n: int) -> float:
    """Binomial standard error of an accuracy over n problems, with p(1 - p) floored at what one
    success or failure in n would give, so that 0/n and n/n do not claim certainty."""
    floor = (1 / n) * (1 - 1 / n) if n > 1 else 0.25
    return math.sqrt(max(p * (1 - p), floor) / n)


def _n(metrics: dict[str, Any]) -> dict[str, int]:
    """Problems scored per difficulty: fewer than eval_problems where the split holds fewer distinct
    problems of that length (e.g. 45 one-step test problems at max_modulus 10)."""
    return (metrics.get("eval_problems_by_difficulty")
            or {d: metrics["eval_problems"] for d in metrics["accuracy_by_difficulty"]})  # records from before


def _mean(acc: dict[str, float], ds: list[str], n: dict[str, int]) -> tuple[float, float]:
    """Mean accuracy over difficulties `ds` and its standard error (bins independent)."""
    return (sum(acc[d] for d in ds) / len(ds), math.sqrt(sum(_se(acc[d], n[d]) ** 2 for d in ds)) / len(ds))


def _middle(rec: Any) -> list[str]:
    par = rec.metrics["parent_accuracy_by_difficulty"]
    ds = [d for d, a in par.items() if 0.1 <= a <= 0.9]
    if not ds:
        raise InputError(f"base {rec.parent_id}: no difficulty with accuracy in [0.1, 0.9] ({par}); the check "
                         "needs a base model of middling accuracy")
    return ds


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def check(name: str, base: str, runs_dir: str, *, teacher: str | None = None, sets: dict[str, Any] | None = None,
          out: Callable[[str], None] = print) -> bool:
    """Run one acceptance check (module docstring); returns whether it passed."""
    from scalelab.posttrain import get_technique, run

    if name not in CHECKS:
        raise InputError(f"unknown check {name!r}; known checks: {', '.join(CHECKS)}")
    s = dict(sets or {})
    common = {"parent": base, **s}

    def go(tech: str, *, only_known: bool = False, **kw: Any) -> Any:
        fields = common
        if only_known:  # a comparison stage skips the --set fields that only the main stage has
            known = get_technique(tech).config.model_fields
            fields = {k: v for k, v in common.items() if k in known}
        rec = run(tech, {**fields, **kw}, runs_dir)
        out(f"  {rec.technique:<24} {rec.run_id}")
        return rec

    if name == "sft":
        full, lora = go("sft", lora_rank=0), go("sft", lora_rank=s.get("lora_rank") or 8)
        ds, n = _middle(full), _n(full.metrics)
        base_m, base_se = _mean(full.metrics["parent_accuracy_by_difficulty"], ds, n)
        f_m, f_se = _mean(full.metrics["accuracy_by_difficulty"], ds, n)
        l_m, l_se = _mean(lora.metrics["accuracy_by_difficulty"], ds, n)
        share = (l_m - base_m) / (f_m - base_m) if f_m > base_m else math.nan
        frac = lora.metrics["trainable_params"] / full.metrics["trainable_params"]
        out(f"middle difficulties {ds}: base {base_m:.3f} ± {base_se:.3f}, full SFT {f_m:.3f} ± {f_se:.3f}, LoRA "
            f"{l_m:.3f} ± {l_se:.3f} ({share:.0%} of the full gain with {frac:.1%} of the trainable parameters); "
            f"FLOPs full {full.flops['posttrain']:.3g}, LoRA {lora.flops['posttrain']:.3g}")
        ok = f_m - base_m > 2 * math.hypot(f_se, base_se) and share >= 0.5
        out(f"{_verdict(ok)}: SFT gain > 2 se and LoRA reaches >= 50% of it")
        return ok
    if name == "distill":
        if not teacher:
            raise InputError("accept distill needs --teacher RUN (a larger model with the same tokenizer)")
        from scalelab.posttrain.stage import open_run

        ref = open_run(base)
        tokens = ref.record.tokens if ref.record is not None and ref.record.tokens else None
        if not tokens:
            raise InputError(f"--base {base}: not a pretraining run with a token count (train one with scalelab train)")
        hp = getattr(ref.record, "hparams", {}) or {}
        rec = go("distill", teacher=teacher, init="scratch", data="corpus", tokens=tokens,
                 **({"batch_size": hp["batch_size"]} if "batch_size" in hp and "batch_size" not in s else {}))
        m = rec.metrics
        ds, n = list(m["accuracy_by_difficulty"]), _n(m)
        d_m, d_se = _mean(m["accuracy_by_difficulty"], ds, n)
        b_m, b_se = _mean(m["parent_accuracy_by_difficulty"], ds, n)
        student, pre = rec.posttrain_ledger["student_train"], ref.record.flops.get("pretrain", math.nan)
        out(f"distilled {d_m:.3f} ± {d_se:.3f} vs scratch {b_m:.3f} ± {b_se:.3f}; student FLOPs {student:.3g} vs "
            f"scratch {pre:.3g} (ratio {student / pre:.3f}); teacher forwards {rec.posttrain_ledger['teacher_forward']:.3g}")
        ok = d_m - b_m > 2 * math.hypot(d_se, b_se) and abs(student / pre - 1) < 0.05
        out(f"{_verdict(ok)}: distilled beats scratch by > 2 se at equal student FLOPs (within 5%)")
        return ok
    if name == "prune":
        rec = go("prune", method=s.get("method", "width"), sparsity=s.get("sparsity", 0.5))
        m = rec.metrics
        ratio = m["accuracy"] / m["parent_accuracy"] if m["parent_accuracy"] > 0 else math.nan
        left = round((1 - m["sparsity"]) * m["nonembedding_before"])  # unstructured: zeros stay in the file
        out(f"pruned {m['sparsity']:.1%} of non-embedding parameters ({m['nonembedding_before']:,} -> "
            f"{left:,} nonzero); accuracy {m['accuracy']:.3f} vs parent {m['parent_accuracy']:.3f} "
            f"({ratio:.1%}); FLOPs {rec.flops['posttrain']:.3g}")
        ok = m["sparsity"] >= 0.5 - 1e-9 and ratio >= 0.9
        out(f"{_verdict(ok)}: >= 50% pruned and >= 90% of the parent's accuracy kept")
        return ok
    if name == "quantize":
        rec = go("quantize", method=s.get("method", "int8-weight"))
        m = rec.metrics
        drop = m["parent_accuracy"] - m["accuracy"]
        out(f"accuracy {m['accuracy']:.3f} vs parent {m['parent_accuracy']:.3f} (drop {100 * drop:+.1f} points); "
            f"weights {m['weights_bytes']:,} vs {m['parent_weights_bytes']:,} bytes ({m['size_ratio']:.2f}x smaller); "
            f"{m['ms_per_generated_token']:.3g} vs {m['parent_ms_per_generated_token']:.3g} ms per generated token")
        ok = drop <= 0.01 and m["size_ratio"] >= 2
        out(f"{_verdict(ok)}: <= 1 point lost with >= 2x smaller weights")
        return ok
    syn = go("synth", **({"teacher": teacher} if teacher else {}))
    real = syn.metrics["real_steps"]
    base_sft = go("sft", only_known=True, data_steps=real)  # synth_problems, samples, ... are synth's
    hard = str(max(int(d) for d in syn.metrics["accuracy_by_difficulty"]))
    a, b = syn.metrics, base_sft.metrics
    gain = a["accuracy_by_difficulty"][hard] - b["accuracy_by_difficulty"][hard]
    se = math.hypot(_se(a["accuracy_by_difficulty"][hard], _n(a)[hard]),
                    _se(b["accuracy_by_difficulty"][hard], _n(b)[hard]))
    out(f"hardest bin ({hard} steps): synth {a['accuracy_by_difficulty'][hard]:.3f} vs SFT on the same real data "
        f"{b['accuracy_by_difficulty'][hard]:.3f} (gain {gain:+.3f} ± {se:.3f}); kept {a['synth_kept']} of "
        f"{a['synth_samples']} teacher samples; FLOPs synth {syn.flops['posttrain']:.3g} vs SFT {base_sft.flops['posttrain']:.3g}")
    ok = gain > 2 * se
    out(f"{_verdict(ok)}: the hardest bin gains > 2 se")
    return ok
