"""Pretraining: `train(config, runs_dir) -> RunRecord`.

One run trains one ladder model (`scalelab.model`) on one token source (`scalelab.data.sources`) with
AdamW and a warmup + cosine or WSD schedule, evaluates on the held-out split at intervals, logs
every row against tokens and FLOPs, checkpoints crash-safely (`scalelab.checkpoint`) and writes
a `RunRecord`. Calling it again with the same config returns the finished record, or resumes
from the last checkpoint, and reproduces the uninterrupted run (the data of step s is a pure
function of (seed, s) and the optimizer state is restored exactly).

    from scalelab.pretrain.train import TrainConfig, train
    record = train(TrainConfig.build(model="d4", tokens=2_000_000), "runs")

Command line: `scalelab train --preset d4 --set tokens=2e6 --runs-dir runs`.
"""
from __future__ import annotations

import importlib
import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Literal

from pydantic import Field, field_validator

from scalelab import checkpoint as ckpt, trackers
from scalelab.runs import RunBusy, run_id, run_lock, torch_threads  # noqa: F401 (re-exported for sweeps)
from scalelab import model as M
from scalelab.config import Config
from scalelab.errors import ConfigError, InputError
from scalelab.records import (
    CONFIG_FILE, METRICS_FILE, RunRecord, SIXN_CONVENTION, append_metrics, atomic_write_json,
    atomic_write_text, check_output_dir, dumps_json, read_metrics, read_record, write_record,
)

# ---- the learning-rate and batch rule -------------------------------------------------------
# Forms from the literature, constants adjusted by a first probe (docs/LOG.md, 2026-11-25); every
# record stores them and they enter the run id, so changing one never reuses an old run.
#   lr(N) = lr_mult * (a - b ln N)   Kaplan et al. 2020, appendix D.6 (eq. D.1), N non-embedding;
#                                     lr_mult = 2.5: on the testbed at 1e12 FLOPs, 2-4x Kaplan's
#                                     value beat 0.5x and 1x for d2, d3 and d4
#   B(C)  = c * C^e tokens           DeepSeek LLM (Bi et al. 2024): B_opt = 0.2920 C^0.3271, C in
#                                     FLOPs; c halved: batch 4 beat 8 and 16 for d3 and d4 at 1e12
# The batch is rounded to a power of two in sequences and capped so a run takes >= min_steps
# steps: FINDINGS.md measured that small models here are step-limited (batch 8 beat 16 at 1M tokens).
RULE: dict[str, float] = {
    "lr_a": 0.003239, "lr_b": 0.0001395, "lr_mult": 2.5,
    "batch_c": 0.0365, "batch_e": 0.3271,
    "batch_min_seqs": 2, "batch_max_seqs": 512, "min_steps": 100,
}
# Tuned on the testbed (docs/LOG.md, 2026-11-25, experiments/testbed_lr_sweep.sh): at 3-4M tokens
# the best peak lr was 0.0025-0.01 at d2 (flat), 0.0025 at d4 and 0.005 at d6 (differences of
# 0.005-0.015 nats), which 2.5 x Kaplan (0.0046, 0.0038, 0.0034) straddles; batches of 2 x 256
# tokens beat 4 x 256 by 0.008-0.02 nats at d2 and d4 (step-limited), so the batch is 1/8 of
# DeepSeek's B_opt(C), which gives 2 sequences up to ~1e13 FLOPs and grows as C^0.33 after.
RULE_NAME = "lr: 2.5 x Kaplan 2020 eq. D.1; batch: DeepSeek LLM 2024 B_opt(C) / 8 (tuned on the testbed)"
# Evaluation may cost at most this share of the training FLOPs (a forward pass is 1/3 of a training
# step per token), so short runs evaluate less often instead of spending most of their time there.
EVAL_SHARE = 0.1
EXECUTION_FIELDS = {"threads", "checkpoint_every", "checkpoint_interval_s", "compile", "tracker"}


def quiet_import_noise() -> None:
    """Importing transformers loads torchao, whose missing GPU kernels and deprecated enum
    registrations log warnings on every start; they say nothing about training, so the command
    line and sweep workers raise those two loggers to ERROR (call before importing torch)."""
    import logging

    for name in ("torchao", "torch.utils._pytree"):
        logging.getLogger(name).setLevel(logging.ERROR)


def rule_lr(n_nonembedding: int) -> float:
    return RULE["lr_mult"] * max(1e-5, RULE["lr_a"] - RULE["lr_b"] * math.log(n_nonembedding))


def rule_batch(compute_flops: float, seq_len: int, tokens: int) -> int:
    seqs = RULE["batch_c"] * compute_flops ** RULE["batch_e"] / seq_len
    seqs = 2 ** round(math.log2(max(seqs, 1)))
    seqs = min(max(seqs, RULE["batch_min_seqs"]), RULE["batch_max_seqs"])
    step_cap = max(1, tokens // (seq_len * RULE["min_steps"]))
    return int(max(1, min(seqs, step_cap)))


class TrainConfig(Config):
    """One pretraining run. `None` means "derived by a rule" (see `plan_run`)."""

    model: str = Field("d4", description="ladder preset: d4, moe-d4, gpu-d12 (scalelab.model)")
    source: str = Field("testbed", description="testbed | stdlib | PATH | module:callable")
    source_options: dict[str, Any] = Field(default_factory=dict)
    tokens: int = Field(1_000_000, ge=1_000, le=10**13, description="training horizon D")
    seq_len: int = Field(256, ge=8, le=65_536)
    batch_size: int | None = Field(None, ge=1, le=65_536, description="sequences per step")
    lr: float | None = Field(None, gt=0, le=1.0)
    lr_scale: float = Field(1.0, gt=0, le=100, description="multiplies the rule's lr (LR sweeps)")
    schedule: Literal["cosine", "wsd", "constant"] = "cosine"
    warmup_frac: float = Field(0.05, ge=0, le=0.5)
    decay_frac: float = Field(0.2, gt=0, le=1.0, description="WSD cooldown share (Hagele et al. 2024)")
    min_lr_frac: float = Field(0.1, ge=0, le=1.0, description="final lr / peak (Hoffmann 2022: 0.1)")
    weight_decay: float = Field(0.1, ge=0, le=1.0)
    beta1: float = Field(0.9, ge=0, lt=1)
    beta2: float = Field(0.95, ge=0, lt=1)  # Llama (Touvron et al. 2023)
    grad_clip: float = Field(1.0, ge=0, le=1e3, description="0 disables")
    tie_embeddings: bool = False
    router_aux_coef: float = Field(0.01, ge=0, le=1, description="MoE load-balancing loss weight")
    eval_every: int | None = Field(None, ge=1, description="steps; default: <= 10 evals, <= 10% of compute")
    eval_tokens: int = Field(32_768, ge=1, le=10**9, description="held-out tokens per eval (cap)")
    log_every: int | None = Field(None, ge=1, description="steps; default: ~200 rows per run")
    checkpoint_every: int | None = Field(None, ge=1, description="steps; default: by wall time only")
    checkpoint_interval_s: float = Field(120.0, gt=0, description="checkpoint after this long (what a kill loses)")
    seed: int = Field(0, ge=0, le=2**31 - 1)
    threads: int | None = Field(None, ge=1, le=1024, description="torch threads; default: all cores")
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    precision: Literal["fp32", "bf16"] = "fp32"
    compile: bool = False
    attn_implementation: Literal["sdpa", "eager"] = "sdpa"
    tracker: Literal["none", "mlflow", "tensorboard"] | None = Field(
        None, description="mirror rows and record to MLflow or TensorBoard (default: $SCALELAB_TRACKER)")

    @field_validator("model")
    @classmethod
    def _known_model(cls, v: str) -> str:
        try:
            M.check_preset(v)
        except ConfigError as e:
            raise ValueError(str(e).split(": ", 1)[1]) from None
        return v


def run_id_for(config: TrainConfig) -> str:
    """`<model>-<tokens>-<hash>`: the hash covers every field that changes the result."""
    key = {**config.model_dump(exclude=EXECUTION_FIELDS), "rule": RULE}
    return run_id(config.model, _short(config.tokens), key=key)


def _short(n: float) -> str:
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g}{unit}"
    return str(int(n))


def resolve_source(spec: str, options: dict[str, Any]) -> Any:
    """`testbed`, `stdlib`, a path, or `package.module:callable` (a user's own TokenSource)."""
    if ":" in spec and not os.path.exists(spec):
        mod, _, attr = spec.partition(":")
        try:
            factory = getattr(importlib.import_module(mod), attr)
        except (ImportError, AttributeError) as e:
            raise ConfigError(f"source={spec!r}: cannot import ({e})") from None
        return factory(**options)
    from scalelab.data.sources import make_source

    return make_source(spec, **options)


def source_options(config: "TrainConfig") -> dict[str, Any]:
    """The source's options, with the held-out set cut to `eval_tokens` inside the source, so
    that its entropy floor and bytes per token describe exactly the tokens that are scored."""
    opts = dict(config.source_options)
    if ":" not in config.source or os.path.exists(config.source):
        opts.setdefault("max_eval_tokens", config.eval_tokens)
    return opts


def plan_run(config: TrainConfig, vocab_size: int) -> dict[str, Any]:
    """Everything derived from the config and the model size: printed and recorded."""
    arch = M.parse_preset(config.model, vocab_size, config.seq_len, tie_embeddings=config.tie_embeddings)
    n = M.param_counts(arch).active
    fpt = M.train_flops_per_token(arch, config.seq_len)
    batch = config.batch_size or rule_batch(fpt * config.tokens, config.seq_len, config.tokens)
    steps = max(1, round(config.tokens / (batch * config.seq_len)))
    lr = config.lr if config.lr is not None else rule_lr(n) * config.lr_scale
    return {
        "arch": arch, "batch_size": batch, "steps": steps, "lr": lr,
        "warmup_steps": math.ceil(config.warmup_frac * steps),
        "eval_every": config.eval_every or max(
            1, steps // 10, math.ceil(steps * config.eval_tokens / (3 * EVAL_SHARE * config.tokens))),
        "log_every": config.log_every or max(1, steps // 200),
        # By wall time, not a share of the steps: a kill loses at most checkpoint_interval_s of work, and a
        # short run is not slowed by checkpoints it will never need (a 41-step run wrote 10).
        "checkpoint_every": config.checkpoint_every,
        "flops_per_token": fpt, "flops_6n_per_token": M.flops_6n_per_token(arch),
        "rule": {"name": RULE_NAME, **RULE, "lr_from_rule": config.lr is None,
                 "batch_from_rule": config.batch_size is None},
    }


def lr_at(step: int, peak: float, steps: int, warmup: int, c: TrainConfig) -> float:
    """Linear warmup, then cosine to min_lr_frac * peak (Hoffmann et al. 2022: a cycle as long as
    the run, decaying 10x), or WSD: constant, then a (1 - sqrt) cooldown over the last decay_frac
    of the run (warmup-stable-decay: MiniCPM, Hu et al. 2024; the cooldown shape from Hagele et
    al. 2024), or constant."""
    if step < warmup:
        return peak * (step + 1) / warmup
    lo = peak * c.min_lr_frac
    if c.schedule == "constant":
        return peak
    if c.schedule == "cosine":
        t = (step - warmup) / max(1, steps - warmup)
        return lo + (peak - lo) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))
    decay_start = steps - max(1, round(c.decay_frac * steps))
    if step < decay_start:
        return peak
    t = (step - decay_start + 1) / (steps - decay_start)
    return lo + (peak - lo) * (1 - math.sqrt(min(t, 1.0)))


def _existing(run_dir: Path) -> RunRecord | None:
    if not (run_dir / "record.json").exists():
        return None
    try:
        return read_record(run_dir)
    except InputError as e:
        raise InputError(f"{e}; delete {run_dir} to retrain it") from None


def train(config: TrainConfig, runs_dir: str | Path = "runs", *, source: Any = None,
          progress: Callable[[dict[str, Any]], None] | None = None, parallel: Any = None) -> RunRecord:
    """Train (or finish, or just return) the run that `config` names; see the module docstring.
    `parallel`: this process's rank of a torchrun job (`scalelab.pretrain.launch`); None: one process."""
    from scalelab.pretrain.parallel import SINGLE

    par = parallel or SINGLE
    check_output_dir(runs_dir, "--runs-dir")
    run_dir = Path(runs_dir) / run_id_for(config)
    with par.lock(run_dir), trackers.use(config.tracker):
        done = _existing(run_dir)
        par.barrier()  # every rank has read the record before rank 0 writes it
        if done is not None and (done.status == "complete" or (done.error or "").startswith("diverged")):
            return done
        with torch_threads(config.threads or os.cpu_count() or 1):
            return _run(config, run_dir, source or resolve_source(config.source, source_options(config)),
                        progress, done, par)


# ---- the loop --------------------------------------------------------------------------------
def make_optimizer(model: Any, c: TrainConfig, lr: float) -> Any:
    """AdamW; weight decay on matrices only (nanoGPT's grouping). Fused: one kernel for every tensor, 4.7
    ms a d6 step on CPU against 16.4 ms for torch's default per-tensor loop (docs/LOG.md, 2026-12-03)."""
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": c.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    fused = bool(params) and all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params)
    return torch.optim.AdamW(groups, lr=lr, betas=(c.beta1, c.beta2), eps=1e-8, fused=fused or None)


def _device(c: TrainConfig) -> str:
    import torch

    if c.device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if c.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device='cuda': no CUDA device is available; use device=cpu or auto")
    return c.device


def evaluate(model: Any, batches: list[tuple[Any, Any]], device: str, autocast: Any,
             reduce: Callable[[float, float], tuple[float, float]] | None = None) -> float:
    """Mean held-out loss in nats per counted target token (`reduce`: sums over ranks)."""
    import torch
    import torch.nn.functional as F

    was_training, total, count = model.training, 0.0, 0.0
    model.eval()
    with torch.no_grad(), autocast():
        for x, mask in batches:
            x, mask = x.to(device), mask.to(device)
            logits = model(input_ids=x[:, :-1], use_cache=False).logits  # [B, T, V]
            nll = F.cross_entropy(logits.float().transpose(1, 2), x[:, 1:], reduction="none")  # [B, T]
            total += float((nll * mask).sum())
            count += float(mask.sum())
    model.train(was_training)
    if reduce is not None:
        total, count = reduce(total, count)
    return total / max(count, 1.0)


def _eval_set(source: Any, c: TrainConfig) -> tuple[list[tuple[Any, Any]], int]:
    import torch

    out, counted = [], 0
    for x, mask in source.eval_batches(16, c.seq_len):
        if counted >= c.eval_tokens:
            break
        out.append((torch.as_tensor(x, dtype=torch.long), torch.as_tensor(mask, dtype=torch.float32)))
        counted += int(mask.sum())
    if not out:
        raise InputError(f"source {source.name!r}: the held-out split is empty")
    return out, counted


def _run(c: TrainConfig, run_dir: Path, source: Any, progress: Any, previous: RunRecord | None, par: Any) -> RunRecord:
    import torch
    import torch.nn.functional as F

    from scalelab.pretrain.runmodel import checkpoint_view, load_or_build

    plan = plan_run(c, source.vocab_size)
    arch, B, T, steps = plan["arch"], plan["batch_size"], c.seq_len, plan["steps"]
    device, counts, tok = _device(c), M.param_counts(arch), source.tokenizer
    autocast = lambda: torch.autocast(device.split(":")[0], dtype=torch.bfloat16, enabled=c.precision == "bf16")  # noqa: E731
    par.check_batch(B)
    put = (lambda r: write_record(run_dir, r)) if par.main else (lambda r: None)  # rank 0 writes files
    log_row = (lambda r: append_metrics(run_dir, r)) if par.main else (lambda r: None)
    if par.main:
        ckpt.remove_stale_temporaries(run_dir)
    last = ckpt.latest(run_dir)
    model = load_or_build(arch, c, tok, last, par.mode)  # dense: FastLlama; checkpoints in HF's layout
    model.to(device).train()
    wrapped = par.wrap(model)  # DDP / FSDP; the model itself when one process
    opt = make_optimizer(model, c, plan["lr"])
    saved_model, saved_opt = checkpoint_view(model, opt)  # as checkpoint files name them (HF's names)
    st: dict[str, Any] = {"step": 0, "tokens": 0, "flops": 0.0, "flops_6n": 0.0, "wall_s": 0.0,
                          "loss_sum": 0.0, "loss_count": 0, "eval_curve": []}
    if last is not None:
        st = par.load_checkpoint(last, saved_opt, saved_model)
        kept = [r for r in read_metrics(run_dir) if r["step"] <= st["step"]]  # drop rows past it
        par.barrier()  # every rank has read the checkpoint and metrics before rank 0 rewrites them
        if par.main:
            atomic_write_text(run_dir / METRICS_FILE, "".join(_jsonl(r) for r in kept))
    elif par.main:
        (run_dir / METRICS_FILE).unlink(missing_ok=True)
    record = RunRecord(
        run_id=run_dir.name, phase="pretrain", technique="pretrain", task=source.name,
        n_params=counts.total, n_params_nonembedding=counts.nonembedding,
        n_params_embedding=counts.embedding + counts.unembedding, n_params_active=counts.active,
        flops_convention=M.EXACT_CONVENTION, config=c.model_dump(),
        model=M.describe(arch, T), source=source.describe(),
        hparams={k: v for k, v in plan.items() if k != "arch"},
        flops_6n_convention=SIXN_CONVENTION, resumed_from_step=st["step"] or None,
    )
    if previous is not None:
        record.created_at = previous.created_at
    if par.describe() is not None:
        record.parallel = par.describe()
    if par.main:
        atomic_write_json(run_dir / CONFIG_FILE, c.model_dump())
    evals, eval_tokens = _eval_set(source, c)
    fwd = torch.compile(wrapped) if c.compile else wrapped
    scorer = model if wrapped is not model else fwd  # DDP: evaluate the inner module (no collectives)
    params = [p for p in model.parameters() if p.requires_grad]
    fpt, f6n = plan["flops_per_token"], plan["flops_6n_per_token"]
    t0, wall0, last_ckpt = time.perf_counter(), st["wall_s"], time.perf_counter()
    acc = torch.tensor(st["loss_sum"], dtype=torch.float64)
    lr = plan["lr"]

    def row(step: int, eval_loss: float | None) -> dict[str, Any]:
        n = st["loss_count"]
        return {"step": step, "tokens": st["tokens"], "flops": st["flops"], "flops_6n": st["flops_6n"],
             "wall_s": round(wall0 + time.perf_counter() - t0, 4),
             "loss": float(acc) / n if n else None, "eval_loss": eval_loss,
             "bpb": eval_loss / math.log(2) / source.eval_bytes_per_token if eval_loss is not None else None,
             "lr": lr}

    def save_state(step: int) -> None:
        st.update(step=step, wall_s=wall0 + time.perf_counter() - t0, loss_sum=float(acc))
        par.save_checkpoint(run_dir, saved_model, tok, saved_opt, {k: v for k, v in st.items() if k != "optimizer"})
        record.tokens, record.wall_s = st["tokens"], st["wall_s"]
        record.flops, record.flops_6n = {"pretrain": st["flops"]}, {"pretrain": st["flops_6n"]}
        put(record)

    eval_positions = sum(x.shape[0] * T for x, _ in evals)
    fwd_fpt = M.forward_flops_per_token(arch, T)
    st.setdefault("eval_flops", 0.0)

    def run_eval() -> float:
        st["eval_flops"] += eval_positions * fwd_fpt
        return evaluate(scorer, par.eval_part(evals), device, autocast, par.eval_reduce)

    # The next batch is made on a helper thread while this step computes: sources written in
    # Python (the testbed) would otherwise add their generation time to every step.
    loader = ThreadPoolExecutor(1, thread_name_prefix="batches")
    fetch = lambda s: loader.submit(source.train_batch, s, B, T, c.seed) if s < steps else None  # noqa: E731
    try:
        put(record)
        if st["step"] == 0:
            e = run_eval()
            st["eval_curve"].append([0, 0, 0.0, e])
            log_row(row(0, e))
        pending = fetch(st["step"])
        for step in range(st["step"], steps):
            lr = lr_at(step, plan["lr"], steps, plan["warmup_steps"], c)
            for g in opt.param_groups:
                g["lr"] = lr
            x = par.shard(torch.from_numpy(pending.result())).to(device)  # [B, T+1], this rank's rows
            pending = fetch(step + 1)
            with autocast():
                out = fwd(input_ids=x[:, :-1], use_cache=False, **({"output_router_logits": True} if arch.is_moe else {}))
                loss = F.cross_entropy(out.logits.float().reshape(-1, out.logits.shape[-1]), x[:, 1:].reshape(-1))
                total = loss + c.router_aux_coef * out.aux_loss if arch.is_moe else loss
            total.backward()
            if c.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, c.grad_clip)
            opt.step()
            opt.zero_grad(set_to_none=True)
            acc += par.mean(loss.detach()).double()  # averaged over ranks
            st["loss_count"] += 1
            st["tokens"] += B * T
            st["flops"] += B * T * fpt
            st["flops_6n"] += B * T * f6n
            s = step + 1
            is_eval = s % plan["eval_every"] == 0 or s == steps
            if is_eval or s % plan["log_every"] == 0:
                if not math.isfinite(float(acc)):
                    record.fail(f"diverged: training loss is {float(acc)} at step {s} (lr {lr:.3g})")
                    put(record)
                    return record
                e = run_eval() if is_eval else None
                if e is not None:
                    st["eval_curve"].append([s, st["tokens"], st["flops"], e])
                r = row(s, e)
                st["train_loss"] = r["loss"]
                log_row(r)
                if progress is not None and par.main:
                    progress({"run_id": record.run_id, "step": s, "steps": steps, "flops": st["flops"],
                              "flops_total": steps * B * T * fpt, "eval_loss": e})
                acc.zero_()
                st["loss_count"] = 0
            every = plan["checkpoint_every"]
            if s < steps and ((every and s % every == 0) or time.perf_counter() - last_ckpt > c.checkpoint_interval_s):
                save_state(s)
                last_ckpt = time.perf_counter()
        final = st["eval_curve"][-1][3]
        save_state(steps)
    except BaseException as err:
        record.fail(err if str(err) else type(err).__name__)
        put(record)
        raise
    finally:
        loader.shutdown(wait=True, cancel_futures=True)
    record.complete(
        loss=final, bpb=final / math.log(2) / source.eval_bytes_per_token, train_loss=st.get("train_loss"),
        entropy_floor=source.entropy_floor, eval_tokens=eval_tokens, eval_curve=st["eval_curve"],
    )
    record.flops_eval = st["eval_flops"]  # held-out evaluation, kept out of the pretraining ledger
    put(record)
    return record


def _jsonl(r: dict[str, Any]) -> str:
    return dumps_json(r) + "\n"
