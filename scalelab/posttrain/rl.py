"""Online RL on the task: GRPO or RLOO against a reward, with a KL penalty to a reference policy.

    scalelab posttrain rlvr --from SFT_RUN --runs-dir DIR                      # reward = exact verifier
    scalelab posttrain rlhf --from SFT_RUN --reward-model RM_RUN --kl-coef 0.05 # reward = learned RM
    scalelab posttrain rlaif --from SFT_RUN --judge LARGER_RUN                 # reward = an AI judge

The three techniques share this one loop and differ only in the reward source (`rewards.py`).
The task is the testbed or a task file (`--task FILE`): its train split gives the questions, its
verifier the rlvr reward (on a file: 1 when the final answer is right), its stop strings and
token limit the sampling. Each step:
  1. sample `group_size` solutions for each of `prompts_per_step` fresh training questions from
     the current policy with the test-time engine (metered: policy_generate);
  2. score them (reward_model / judge_forward; the verifier is free) -- and, whatever the reward,
     check them with the task's verifier, logged next to the reward so that a reward that rises
     while correctness does not (reward over-optimisation, Gao et al. 2023) is visible;
  3. advantages within each question's group: GRPO (Shao et al. 2024, "DeepSeekMath"),
     A = (r - mean) / std, or without the std (`scale_rewards=false`, Liu et al. 2025, "Dr. GRPO"),
     or RLOO (Ahmadian et al. 2024), A = r - mean of the other samples of the group;
  4. the clipped surrogate  -min(rho A, clip(rho, 1 +- eps) A)  per completion token, rho the
     probability ratio to the sampling policy, plus kl_coef x the k3 estimator of
     KL(policy || reference) per token, exp(q) - q - 1 with q = log p_ref - log p (Schulman 2020,
     "Approximating KL divergence"; GRPO's choice), averaged per sequence then over sequences;
     `updates_per_batch` gradient steps on each batch (1 = on-policy, rho = 1).
     `negative_weight` scales the negative advantages: 1 is GRPO; 0 reinforces only the samples
     better than their group's mean, a filtered policy gradient close to RAFT (Dong et al. 2023)
     and ReST (Gulcehre et al. 2023). On the testbed only the latter raised greedy accuracy over
     the SFT parent (docs/posttrain-rl.md). `reward_level=step` (rlvr, testbed only: a task file
     cannot check a line) replaces the outcome reward by exact per-line rewards with DeepSeekMath's
     process-supervision advantages.
Every `eval_every` steps the policy answers held-out validation questions greedily: their exact
accuracy and the reward source's score of those answers make the over-optimisation curve
(`metrics.curve`), next to a KL estimate on the step's samples (evaluation FLOPs, kept out of the
ledger as everywhere else).

FLOPs (stage.LEDGER_CONVENTION): sampling as the engine meters it, policy updates as training
passes over prompt + completion (3 x forward), reference forwards (only when kl_coef > 0), and
the reward source's forwards.
"""
from __future__ import annotations

import math
import time
from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from scalelab.posttrain.data import Steps
from scalelab.posttrain.stage import StageConfig, StageContext, StageResult, Technique

CURVE_KEYS = ("step", "posttrain_flops", "reward", "sample_accuracy", "greedy_accuracy", "greedy_reward", "kl")


class RLConfig(StageConfig):
    algorithm: Literal["grpo", "rloo"] = "grpo"
    steps: int = Field(200, ge=1, le=1_000_000, description="policy-update batches")
    prompts_per_step: int = Field(16, ge=1, le=100_000, description="questions per batch")
    group_size: int = Field(8, ge=2, le=4096, description="samples per question")
    temperature: float = Field(1.0, gt=0, le=10)
    top_p: float = Field(1.0, gt=0, le=1)
    kl_coef: float = Field(0.04, ge=0, le=100, description="weight of KL(policy || reference); GRPO used 0.04")
    clip_eps: float = Field(0.2, gt=0, le=10)
    updates_per_batch: int = Field(1, ge=1, le=64)
    scale_rewards: bool = Field(True, description="GRPO: divide advantages by the group's std")
    loss_agg: Literal["sequence", "token"] = Field("sequence", description="mean per sequence, or over all tokens")
    negative_weight: float = Field(1.0, ge=0, le=1, description="scale of negative advantages (0: reinforce only "
                                   "better-than-average samples)")
    lr: float | None = Field(None, gt=0, le=1.0, description="default: 0.03 x the parent's pretraining lr")
    warmup_frac: float = Field(0.0, ge=0, le=0.5)
    min_lr_frac: float = Field(1.0, ge=0, le=1.0, description="1: constant lr (common in RL fine-tuning)")
    weight_decay: float = Field(0.0, ge=0, le=1.0)
    grad_clip: float = Field(1.0, ge=0, le=1e3)
    data_steps: Steps = Field(None, description="difficulties of the training questions (default: all)")
    reference: str | None = Field(None, description="reference policy for the KL term (default: the parent)")
    eval_every: int = Field(25, ge=0, le=1_000_000, description="steps between curve points (0: start and end only)")
    curve_problems: int = Field(32, ge=1, le=100_000, description="held-out validation questions per difficulty")

    def needs_train_split(self) -> bool:
        return True


class RLVRConfig(RLConfig):
    reward_level: Literal["outcome", "step"] = Field(
        "outcome", description="outcome: 1 if the whole solution is right; step: every line checked (process)")

    @model_validator(mode="after")
    def _steps_on_testbed(self) -> "RLVRConfig":
        if self.reward_level == "step" and not self.on_testbed:
            raise ValueError("reward_level=step checks testbed step lines; a task file's verifier checks the final "
                             "answer only (use reward_level=outcome)")
        return self


class RLHFConfig(RLConfig):
    reward_model: str = Field(..., description="reward-model run (posttrain reward-model / testtime train-verifier)")
    prm_agg: str = Field("last", description="a PRM's step scores: last | min | prod")
    kl_coef: float = Field(0.05, ge=0, le=100)

    def check_inputs(self, parent: Any) -> None:  # a reward model's reward.json, before the child exists
        from scalelab.rewards.models import reward_meta
        reward_meta(self.reward_model)


class RLAIFConfig(RLConfig):
    judge: str = Field(..., description="judge: a larger model's run (likelihood judge) or a reward-model run built on it")
    judge_mode: Literal["min", "mean"] = Field("min", description="likelihood judge: min | mean of log p over the "
                                               "completion")
    prm_agg: str = Field("last", description="a PRM judge's step scores: last | min | prod")
    kl_coef: float = Field(0.05, ge=0, le=100)

    def check_inputs(self, parent: Any) -> None:  # the judge's folder, before the child exists
        from scalelab.inference.loading import resolve_checkpoint
        resolve_checkpoint(self.judge)


def reward_source(cfg: RLConfig, task: Any = None) -> Any:
    from scalelab.rewards import feedback as R
    if isinstance(cfg, RLHFConfig):
        return R.ModelReward(cfg.reward_model, part="reward_model", name="reward-model", prm_agg=cfg.prm_agg,
                             max_batch=cfg.max_batch)
    if isinstance(cfg, RLAIFConfig):
        return R.judge_source(cfg.judge, mode=cfg.judge_mode, prm_agg=cfg.prm_agg, max_batch=cfg.max_batch)
    return R.VerifierReward(task)


def advantages(r: np.ndarray, ok: np.ndarray, algorithm: str, scale: bool) -> np.ndarray:
    """Group-relative advantages [G] of one question's rewards; failed samples get 0 (no update)."""
    a = np.zeros_like(r)
    k = int(ok.sum())
    if k < 2:
        return a
    x = r[ok]
    if algorithm == "rloo":
        a[ok] = (x - (x.sum() - x) / (k - 1))  # each sample against the mean of the others
    else:
        a[ok] = x - x.mean()
        if scale:
            a[ok] /= x.std() + 1e-4
    return a


def line_rewards(problem: Any, text: str) -> list[float]:
    """Exact process rewards: 1 for each line of `text` that is right against the problem's true
    values (a step line: its inputs, operation and result; a '!' correction: the step it redoes;
    the answer line: the answer), 0 otherwise. Only well-formed testbed lines can score."""
    from scalelab.tasks.base import split_lines
    from scalelab.tasks.testbed import LABELS, verify

    out = []
    for ln in split_lines(text):
        body = ln.rstrip("\n")
        if body.startswith("A:"):
            out.append(float(verify(problem, body + "\n").answer_correct))
            continue
        label = body[1:2] if body.startswith("!") else body[:1]
        i = LABELS.find(label) if label else -1
        ok = 0 <= i < problem.steps and body.lstrip("!") == problem.step_line(i).rstrip("\n")
        out.append(float(ok))
    return out


def step_advantages(lines: list[list[float]], ok: np.ndarray) -> list[np.ndarray]:
    """Process-supervision advantages of one group (Shao et al. 2024, DeepSeekMath sec. 4.1.3):
    every line reward is normalised by the mean and std of all line rewards of the group, and a
    token's advantage is the sum of the normalised rewards of its line and every later line.
    Returns per sample one value per line (the caller spreads them over the line's tokens)."""
    pooled = np.array([r for l, good in zip(lines, ok) if good for r in l], float)
    if pooled.size < 2 or np.ptp(pooled) == 0:
        return [np.zeros(len(l)) for l in lines]
    mu, sd = pooled.mean(), pooled.std() + 1e-4
    return [np.cumsum(((np.array(l, float) - mu) / sd)[::-1])[::-1] if good else np.zeros(len(l))
            for l, good in zip(lines, ok)]


def token_lines(engine: Any, token_ids: list[int]) -> list[int]:
    """The line index of each completion token (a token whose text ends a line closes its line)."""
    text = engine.token_text()
    out, line = [], 0
    for t in token_ids:
        out.append(line)
        if text[t].endswith("\n"):
            line += 1
    return out


def policy_loss(lp: Any, old_lp: Any, ref_lp: Any, A: Any, mask: Any, use: Any,
                cfg: RLConfig) -> tuple[Any, float | None]:
    """The clipped surrogate plus kl_coef x k3 (module docstring) over completion tokens, and the
    per-sequence KL estimate (k1, nats) when a reference was run. Shapes: lp, old_lp, ref_lp,
    mask [B, T]; A, use [B, 1] (use = 0 for samples whose reward failed)."""
    import torch

    m = mask * use
    ratio = torch.exp(lp - old_lp)
    per_tok = -torch.minimum(ratio * A, ratio.clamp(1 - cfg.clip_eps, 1 + cfg.clip_eps) * A)
    kl = None
    if ref_lp is not None:
        q = ref_lp - lp
        kl = float((-q.detach() * mask).sum(1).mean())
        if cfg.kl_coef > 0:
            per_tok = per_tok + cfg.kl_coef * (torch.exp(q) - q - 1)  # k3 >= 0, unbiased on policy samples
    if cfg.loss_agg == "token":
        return (per_tok * m).sum() / m.sum().clamp(min=1), kl
    return ((per_tok * m).sum(1) / mask.sum(1).clamp(min=1)).sum() / use.sum().clamp(min=1), kl


def transform(ctx: StageContext) -> StageResult:
    import torch

    from scalelab.posttrain.loop import Counter, default_lr, lr_at, make_optimizer

    cfg: RLConfig = ctx.cfg
    data = ctx.data
    steps = data.bins(cfg.data_steps, "data_steps")
    reward = reward_source(cfg, data.task)
    policy = ctx.parent.load_model()
    ref_run = ctx.open_run(cfg.reference, role="--reference") if cfg.reference else ctx.parent
    reference = ref_run.load_model(train=False).requires_grad_(False)
    task = data.task
    engine = ctx.engine(policy)
    count, rcount = Counter(policy), Counter(reference)
    # RL moves a trained policy less than SFT does: 0.3 x the fine-tuning default, the rate at
    # which rlvr raised greedy accuracy on the testbed (docs/posttrain-rl.md); 1e-3 degraded it
    lr = cfg.lr or 0.3 * default_lr(ctx.parent)
    torch.manual_seed(cfg.seed)
    opt = make_optimizer(policy, lr, cfg.weight_decay)
    curve_probs = data.heldout_problems(cfg.curve_problems, steps, cfg.seed)
    loop = _Loop(ctx, cfg, policy, reference, engine, reward, task, count, rcount)
    warmup = math.ceil(cfg.warmup_frac * cfg.steps)
    resume = ctx.resume
    resume.enter()
    at = resume.restore("rl", policy, opt, ctx.ledger)
    if at is None:
        curve, first = [loop.curve_point(0, curve_probs, None)], 1
    else:  # a killed attempt's state: every step's questions and samples follow from (seed, step)
        curve, first = at["curve"], at["step"] + 1
        loop.failed, loop.errors, loop.samples, loop.tokens = at["failed"], at["errors"], at["samples"], at["tokens"]
    t0, c0 = time.perf_counter(), time.process_time()
    for step in range(first, cfg.steps + 1):
        lr_now = lr_at(step - 1, cfg.steps, lr, warmup, cfg.min_lr_frac)
        for g in opt.param_groups:
            g["lr"] = lr_now
        probs = _questions(data, cfg, steps, step)
        params = data.params(probs, temperature=cfg.temperature, top_p=cfg.top_p, seed=cfg.seed * 1_000_003 + step)
        row = loop.step(probs, params, opt, monitor_kl=_due(step, cfg))
        ctx.log({"step": step, "lr": lr_now, **row})
        ctx.progress("rl", step, cfg.steps)
        if _due(step, cfg):
            curve.append(loop.curve_point(step, curve_probs, row))
        if step < cfg.steps and resume.due():
            resume.save("rl", policy, opt, ctx.ledger, {"step": step, "curve": curve, "failed": loop.failed,
                                                        "errors": loop.errors, "samples": loop.samples,
                                                        "tokens": loop.tokens})
    policy.eval()
    last = curve[-1]
    metrics = {"curve": curve, "reward_source": reward.name, "reward_failures": loop.failed,
               "reward_errors": loop.errors, "samples": loop.samples, "final_reward": last.get("greedy_reward"),
               "final_greedy_accuracy_val": last["greedy_accuracy"], "lr": lr, "rl_steps": cfg.steps,
               "rl_steps_run": cfg.steps - first + 1,  # this attempt's (fewer after a resume)
               "train_tokens": loop.tokens, "train_wall_s": round(time.perf_counter() - t0, 3),
               "train_cpu_s": round(time.process_time() - c0, 3),
               "trainable_params": sum(p.numel() for p in policy.parameters())}
    return StageResult(model=policy, variant=_NAME[type(cfg)], metrics=metrics, tokens=loop.tokens,
                       extra={"reference_id": ref_run.run_id, "reward": _reward_id(cfg)})


def _due(step: int, cfg: RLConfig) -> bool:
    return step == cfg.steps or (cfg.eval_every > 0 and step % cfg.eval_every == 0)


def _questions(data: Any, cfg: RLConfig, steps: list[Any], step: int) -> list[Any]:
    """Fresh training questions for one batch (testbed: difficulties spread evenly), on their own seed."""
    return data.train_problems(cfg.prompts_per_step, steps, cfg.seed * 1_000_003 + 7919 * step)


def _reward_id(cfg: RLConfig) -> str:
    return getattr(cfg, "reward_model", None) or getattr(cfg, "judge", None) or "verifier"


class _Loop:
    """One policy-update step and one curve point; holds the running counts."""

    def __init__(self, ctx: StageContext, cfg: RLConfig, policy: Any, reference: Any, engine: Any, reward: Any,
                 task: Any, count: Any, rcount: Any):
        self.ctx, self.cfg, self.policy, self.reference = ctx, cfg, policy, reference
        self.engine, self.reward, self.task, self.count, self.rcount = engine, reward, task, count, rcount
        self.failed, self.errors, self.samples, self.tokens = 0, [], 0, 0
        self.params = [p for p in policy.parameters()]

    def _batch(self, probs: list[Any], gen: Any) -> tuple[Any, list[int]]:
        from scalelab.posttrain.data import Example, collate

        prompts = [self.engine.encode(self.task.prompt(p)) for p in probs]
        ex = [Example(tuple(prompts[i] + c.token_ids), len(prompts[i]))
              for i, row in enumerate(gen.completions) for c in row]
        b = collate(ex, self.engine.tokenizer)
        return b, [L - 1 for L in b.lengths]

    def step(self, probs: list[Any], params: Any, opt: Any, *, monitor_kl: bool) -> dict[str, Any]:
        import torch

        from scalelab.posttrain.loop import completion_logprobs

        cfg, ctx, G = self.cfg, self.ctx, self.cfg.group_size
        prompts = [self.task.prompt(p) for p in probs]
        gen = ctx.generate(self.engine, prompts, G, params, part="policy_generate")
        self.policy.train()  # the engine put it in eval mode for sampling
        texts = [c.text for row in gen.completions for c in row]
        rep = [p for p in probs for _ in range(G)]
        rb = self.reward(rep, [q for q in prompts for _ in range(G)], texts)
        if rb.flops:
            ctx.ledger.add(self.reward.part, rb.flops, 0.0, sum(gen.prompt_tokens) * G + gen.generated_tokens)
        self.failed += rb.failed
        self.errors += [e for e in rb.errors if e not in self.errors][:max(0, 5 - len(self.errors))]
        correct = np.array([self.task.verify(p, t).correct for p, t in zip(rep, texts)], float)
        r, ok = rb.values.reshape(-1, G), rb.ok.reshape(-1, G)
        b, lengths = self._batch(probs, gen)
        if getattr(cfg, "reward_level", "outcome") == "step":
            A = self._step_advantages(probs, gen, texts, rb.ok, b)  # [B, T-1]
        else:
            adv = np.concatenate([advantages(r[i], ok[i], cfg.algorithm, cfg.scale_rewards) for i in range(len(probs))])
            A = torch.tensor(adv, dtype=torch.float32)[:, None]  # [B, 1]
        if cfg.negative_weight < 1:
            A = torch.where(A < 0, cfg.negative_weight * A, A)
        use = torch.tensor(rb.ok, dtype=torch.float32)[:, None]
        ref_lp, kl_val = None, None
        if cfg.kl_coef > 0 or monitor_kl:
            with torch.no_grad():
                ref_lp, _ = completion_logprobs(self.reference, b)
            f = self.rcount.forward(lengths)
            if cfg.kl_coef > 0:
                ctx.ledger.add("reference_forward", f, 2.0 * self.rcount.n * sum(lengths), sum(lengths))
            else:
                ctx.ledger.eval_flops += f
        old_lp = None
        for _ in range(cfg.updates_per_batch):
            lp, mask = completion_logprobs(self.policy, b)  # [B, T-1]
            if old_lp is None:
                old_lp = lp.detach()
            loss, kl = policy_loss(lp, old_lp, ref_lp, A, mask, use, cfg)
            kl_val = kl if kl is not None else kl_val
            loss.backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(self.params, cfg.grad_clip)
            opt.step()
            opt.zero_grad(set_to_none=True)
            ctx.ledger.add("policy_train", self.count.train(lengths), 6.0 * self.count.n * sum(lengths), sum(lengths))
            self.tokens += sum(lengths)
        self.samples += len(texts)
        vals = rb.values[rb.ok]
        return {"reward": float(vals.mean()) if vals.size else None, "sample_accuracy": float(correct.mean()),
                "kl": kl_val, "loss": float(loss.detach()), "reward_failed": rb.failed,
                "completion_tokens": gen.generated_tokens / len(texts),
                "groups_with_signal": int(sum(ok[i].sum() > 1 and np.ptp(r[i][ok[i]]) > 0 for i in range(len(probs))))}

    def _step_advantages(self, probs: list[Any], gen: Any, texts: list[str], ok: np.ndarray, b: Any) -> Any:
        """Per-token process advantages [B, T-1], aligned with `completion_logprobs`' positions."""
        import torch

        G = self.cfg.group_size
        A = torch.zeros(b.ids.shape[0], b.ids.shape[1] - 1)
        comps = [c for row in gen.completions for c in row]
        for i, p in enumerate(probs):
            rows = range(i * G, (i + 1) * G)
            lines = [line_rewards(p, texts[r]) or [0.0] for r in rows]
            adv = step_advantages(lines, ok[i * G:(i + 1) * G])
            for r, a in zip(rows, adv):
                ids = comps[r].token_ids
                where = [min(j, len(a) - 1) for j in token_lines(self.engine, ids)]
                start = b.lengths[r] - len(ids) - 1  # logp index of the first completion token
                A[r, start:start + len(ids)] = torch.tensor(a[where], dtype=torch.float32)
        return A

    def curve_point(self, step: int, probs: list[Any], row: dict[str, Any] | None) -> dict[str, Any]:
        """Greedy accuracy on held-out questions and the reward source's score of those answers."""
        from scalelab.testtime.strategies import Context, Options, run_strategy

        snap = self.engine.meter.snapshot()
        outs = run_strategy("cot", probs, 1, Context(engine=self.engine, options=Options(seed=self.cfg.seed),
                                                     task=self.task))
        rb = self.reward(probs, [self.task.prompt(p) for p in probs], [o.text or "" for o in outs])
        self.ctx.ledger.eval_flops += sum(self.engine.meter.since(snap).values()) + rb.flops
        vals = rb.values[rb.ok]
        point = {"step": step, "posttrain_flops": self.ctx.ledger.total,
                 "greedy_accuracy": float(np.mean([o.correct for o in outs])),
                 "greedy_reward": float(vals.mean()) if vals.size else None,
                 "reward": row.get("reward") if row else None,
                 "sample_accuracy": row.get("sample_accuracy") if row else None,
                 "kl": row.get("kl") if row else 0.0}
        self.ctx.log({"step": step, "curve": True, **{k: v for k, v in point.items() if k != "posttrain_flops"}})
        return point


_NAME = {RLVRConfig: "rlvr", RLHFConfig: "rlhf", RLAIFConfig: "rlaif"}
RLVR = Technique("rlvr", RLVRConfig, transform, "GRPO/RLOO with the exact verifier as the reward")
RLHF = Technique("rlhf", RLHFConfig, transform, "GRPO/RLOO against a learned reward model, KL to the reference")
RLAIF = Technique("rlaif", RLAIFConfig, transform, "GRPO/RLOO against an AI judge (a larger model's judgement)")
TECHNIQUES = {t.name: t for t in (RLVR, RLHF, RLAIF)}
