"""Reward models from user feedback: preference pairs or thumbs-up / thumbs-down.

    scalelab posttrain reward-model --from POLICY_RUN --runs-dir DIR                 # testbed pairs
    scalelab posttrain reward-model --from POLICY --task FILE --runs-dir DIR        # pairs on a task file
    scalelab posttrain reward-model --from RUN --data feedback.jsonl --runs-dir DIR  # your feedback

The reward model is a causal LM (the parent by default, or `--init RUN`, e.g. a larger model with
the same tokenizer) read by one of the two heads of `testtime.verifiers`, so the child is also an
outcome reward model for `scalelab testtime` best-of-n:

  likelihood (default) r = c0 + w . (min, sum, mean) of log p(token | prefix) over the completion
             under the model, standardised; only the weights are fitted, the model is unchanged.
             Why: on the testbed a wrong solution differs from a right one in a digit or two, and
             how likely the model finds that digit says more than a head trained on top of it
             (held-out pairwise accuracy in docs/posttrain-rl.md).
  label      r = h_last . (w["+"] - w["-"]), the logit difference of two rows of the model's own
             output layer at the last token, the whole model fine-tuned (AdamW): a scalar-head
             reward model in the manner of InstructGPT.
Losses: pairs, the Bradley-Terry loss  -log sigmoid(r_chosen - r_rejected)  (InstructGPT, Ouyang
et al. 2022; TRL's RewardTrainer uses the same loss); thumbs, the binary cross-entropy of
sigmoid(r) against the label (unpaired feedback, as KTO's setting; Ethayarajh et al. 2024). Both
may come from one file. A Bradley-Terry reward is defined up to a constant, so pairs alone centre
the training texts' rewards at 0 and sigmoid(r) -- what `RewardModel.score` returns -- at 1/2.

Held-out evaluation (prompts kept apart from training, `prefs.split_by_prompt`): pairwise accuracy
(share of held-out pairs with r_chosen > r_rejected), by reason on testbed pairs ("correct",
"shorter"), and for thumbs the accuracy of sigmoid(r) > 1/2 and the AUC.

FLOPs: sampling the policy for testbed pairs (policy_generate); label head: training passes over
every text, a forward through the body plus one row of the head per text, x3 (reward_model_train);
likelihood head: one forward per text with the head at every completion position
(reward_model_forward).
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from scalelab.errors import ConfigError
from scalelab.posttrain.data import Steps
from scalelab.posttrain.prefs import Feedback, Pair, Thumb, read_feedback, split_by_prompt, testbed_pairs
from scalelab.posttrain.stage import StageConfig, StageContext, StageResult, Technique


class FeedbackConfig(StageConfig):
    """Where pairs or thumbs come from (shared by reward-model and dpo)."""

    data: str = Field("testbed", description="testbed: pairs from the parent's samples on the task's training "
                      "questions; or a feedback JSONL")
    feedback: Literal["pairs", "thumbs"] = Field("pairs", description="testbed: pairs, or thumbs from the verifier")
    problems: int = Field(1024, ge=1, le=10_000_000, description="testbed: training questions sampled")
    samples: int = Field(8, ge=2, le=4096, description="testbed: policy samples per question")
    temperature: float = Field(1.0, gt=0, le=10)
    data_steps: Steps = Field(None, description="testbed: difficulties (default: all)")
    max_pairs: int = Field(4, ge=1, le=10_000, description="testbed: pairs per question")
    prefer_shorter: bool = Field(True, description="testbed: a correct, shorter solution beats a longer one")
    heldout: float = Field(0.2, ge=0, lt=1, description="share of prompts held out for evaluation")
    batch_size: int = Field(32, ge=1, le=65_536, description="pairs or labels per step")
    weight_decay: float = Field(0.0, ge=0, le=1)
    grad_clip: float = Field(1.0, ge=0, le=1e3)

    def needs_train_split(self) -> bool:
        return self.data == "testbed"

    def check_inputs(self, parent: Any) -> None:
        if self.data != "testbed":
            read_feedback(self.data)


class RewardModelConfig(FeedbackConfig):
    head: Literal["likelihood", "label"] = Field("likelihood", description="see the module docstring")
    init: str = Field("parent", description="parent, or a run with the same tokenizer (e.g. a larger model)")
    epochs: int = Field(2, ge=1, le=1000, description="label head")
    lr: float = Field(3e-4, gt=0, le=1, description="label head")
    l2: float = Field(1e-3, ge=0, le=100, description="likelihood head: L2 penalty of the logistic weights")

    evaluates: ClassVar[bool] = False  # not a policy: it reports held-out pairwise accuracy instead


def feedback(ctx: StageContext, cfg: FeedbackConfig) -> Feedback:
    """The user's file, or pairs / thumbs from the parent's own samples on the task's training questions."""
    if cfg.data != "testbed":
        return read_feedback(cfg.data)
    from scalelab.posttrain.data import finished_text

    data = ctx.data
    task = data.task
    steps = data.bins(cfg.data_steps, "data_steps")
    probs = data.train_problems(cfg.problems, steps, cfg.seed + 11)
    params = data.params(probs, temperature=cfg.temperature, seed=cfg.seed)
    gen = ctx.generate(ctx.engine(ctx.parent.load_model(train=False)), [task.prompt(p) for p in probs],
                       cfg.samples, params, part="policy_generate")
    stop = getattr(task, "stop", ())  # a sample that ran into the next "Question:" is judged without it
    texts = [[finished_text(c, stop) if c.finish_reason == "stop" else c.text for c in row] for row in gen.completions]
    if cfg.feedback == "thumbs":
        thumbs = [Thumb(task.prompt(p), t, float(task.verify(p, t).correct)) for p, row in zip(probs, texts)
                  for t in dict.fromkeys(row) if t.strip()]
        return Feedback([], thumbs, f"{data.name} thumbs ({'exact ' if data.on_testbed else ''}verifier)")
    pairs = testbed_pairs(probs, texts, max_pairs=cfg.max_pairs, seed=cfg.seed, shorter=cfg.prefer_shorter, task=task)
    if not pairs:
        raise ConfigError("the parent's samples gave no preference pairs (every sample equally right); raise "
                          "temperature or samples")
    return Feedback(pairs, [], f"{data.name} pairs ({'exact ' if data.on_testbed else ''}verifier + shorter)")


class Scorer:
    """r(prompt + completion) of a causal LM read at the last token; FLOPs per text."""

    def __init__(self, model: Any, tokenizer: Any):
        from scalelab.inference.flops import flop_model
        from scalelab.rewards.models import BAD, GOOD

        self.model, self.tok = model, tokenizer
        self.good, self.bad = tokenizer.convert_tokens_to_ids(GOOD), tokenizer.convert_tokens_to_ids(BAD)
        self.fm = flop_model(model)
        self.row = self.fm.head / model.get_output_embeddings().weight.shape[0]  # one head row: 2d FLOPs

    def encode(self, prompt: str, completion: str) -> list[int]:
        from scalelab.posttrain.data import encode

        return encode(self.tok, prompt) + encode(self.tok, completion)

    def __call__(self, seqs: list[list[int]]) -> Any:
        import torch

        from scalelab.posttrain.data import Example, collate

        b = collate([Example(tuple(s), len(s)) for s in seqs], self.tok)
        h = self.model.base_model(input_ids=b.ids, attention_mask=b.attn).last_hidden_state  # [B, L, d]
        last = h[torch.arange(len(seqs)), torch.tensor([n - 1 for n in b.lengths])]  # [B, d]
        w = self.model.get_output_embeddings().weight
        return last @ (w[self.good] - w[self.bad])  # [B]

    def forward_flops(self, seqs: list[list[int]]) -> float:
        return float(sum(self.fm.tokens(len(s), 0, heads=0) + self.row for s in seqs))

    def z(self, prompts: list[str], completions: list[str]) -> np.ndarray:
        return self.score([self.encode(p, c) for p, c in zip(prompts, completions)])

    def score(self, seqs: list[list[int]], batch: int = 256) -> np.ndarray:
        import torch

        with torch.no_grad():
            return np.concatenate([self(seqs[i:i + batch]).numpy() for i in range(0, len(seqs), batch)]) \
                if seqs else np.zeros(0)


def train_scorer(sc: Scorer, pairs: list[Pair], thumbs: list[Thumb], ctx: StageContext,
                 cfg: RewardModelConfig) -> dict[str, Any]:
    import torch
    import torch.nn.functional as F

    from scalelab.posttrain.loop import make_optimizer

    items: list[tuple[str, Any]] = [("pair", (sc.encode(p.prompt, p.chosen), sc.encode(p.prompt, p.rejected)))
                                    for p in pairs]
    items += [("thumb", (sc.encode(t.prompt, t.completion), t.label)) for t in thumbs]
    torch.manual_seed(cfg.seed)
    sc.model.train()
    opt = make_optimizer(sc.model, cfg.lr, cfg.weight_decay)
    params = [p for p in sc.model.parameters() if p.requires_grad]
    rng = np.random.default_rng(cfg.seed)
    steps = cfg.epochs * math.ceil(len(items) / cfg.batch_size)
    step, loss_v, t0 = 0, math.nan, time.perf_counter()
    for epoch in range(cfg.epochs):
        order = rng.permutation(len(items))
        for i in range(0, len(order), cfg.batch_size):
            batch = [items[j] for j in order[i:i + cfg.batch_size]]
            prs = [x for k, x in batch if k == "pair"]
            ths = [x for k, x in batch if k == "thumb"]
            seqs = [s for c, r in prs for s in (c, r)] + [s for s, _ in ths]
            z = sc(seqs)
            loss = z.new_zeros(())
            if prs:
                zc, zr = z[0:2 * len(prs):2], z[1:2 * len(prs):2]
                loss = loss + F.softplus(-(zc - zr)).sum()  # -log sigmoid(r_c - r_r)
            if ths:
                y = torch.tensor([lab for _, lab in ths], dtype=z.dtype)
                loss = loss + F.binary_cross_entropy_with_logits(z[2 * len(prs):], y, reduction="sum")
            loss = loss / len(batch)
            loss.backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            lr = cfg.lr * 0.5 * (1 + math.cos(math.pi * step / steps))  # cosine to 0
            for g in opt.param_groups:
                g["lr"] = lr
            opt.step()
            opt.zero_grad(set_to_none=True)
            n_tok = sum(map(len, seqs))
            ctx.ledger.add("reward_model_train", 3 * sc.forward_flops(seqs), 6.0 * sc.fm.body / 2 * n_tok, n_tok)
            step += 1
            loss_v = float(loss.detach())
            if step % max(1, steps // 50) == 0 or step == steps:
                ctx.log({"step": step, "epoch": epoch, "loss": loss_v, "lr": lr})
                ctx.progress("training", step, steps)
    sc.model.eval()
    return {"train_loss": loss_v, "train_steps": step, "train_wall_s": round(time.perf_counter() - t0, 3)}


class LikelihoodScorer:
    """r = c0 + w . standardised (min, sum, mean) of log p(completion token | prefix) under the init
    model, the weights fitted on the feedback (Bradley-Terry on pairs, logistic on thumbs) and the
    model left as it is: the likelihood head of `testtime.verifiers`, here fitted to preferences."""

    def __init__(self, model: Any, tokenizer: Any, l2: float):
        from scalelab.inference.engine import Engine

        self.engine, self.l2 = Engine(model, tokenizer, max_batch=256), l2
        self.coef, self.mu, self.sd = None, None, None

    def features(self, prompts: list[str], completions: list[str]) -> tuple[np.ndarray, float]:
        from scalelab.rewards.models import likelihood_features, token_logprobs

        if not prompts:
            return np.zeros((0, 3)), 0.0
        lps, flops = token_logprobs(self.engine, prompts, completions)
        rows = [likelihood_features("orm", lp, [len(lp) - 1]) if len(lp) else np.zeros((1, 3)) for lp in lps]
        return np.concatenate(rows), float(sum(flops))

    def z(self, prompts: list[str], completions: list[str]) -> np.ndarray:
        f, _ = self.features(prompts, completions)
        return self.coef[0] + ((f - self.mu) / self.sd) @ self.coef[1:]

    def fit(self, pairs: list[Pair], thumbs: list[Thumb], ctx: StageContext) -> dict[str, Any]:
        from scipy.optimize import minimize

        fc, f1 = self.features([p.prompt for p in pairs], [p.chosen for p in pairs])
        fr, f2 = self.features([p.prompt for p in pairs], [p.rejected for p in pairs])
        ft, f3 = self.features([t.prompt for t in thumbs], [t.completion for t in thumbs])
        ctx.ledger.add("reward_model_forward", f1 + f2 + f3)
        allf = np.concatenate([fc, fr, ft])
        self.mu, self.sd = allf.mean(0), allf.std(0) + 1e-8
        zc, zr, zt = ((x - self.mu) / self.sd for x in (fc, fr, ft))
        y = np.array([t.label for t in thumbs])

        def loss(c: np.ndarray) -> tuple[float, np.ndarray]:
            w, g = c[1:], np.zeros_like(c)
            f = self.l2 * float(w @ w)
            g[1:] = 2 * self.l2 * w
            if len(pairs):
                m = (zc - zr) @ w
                f += float(np.mean(np.logaddexp(0.0, -m)))  # -log sigmoid(r_c - r_r)
                g[1:] += -((1 / (1 + np.exp(m)))[:, None] * (zc - zr)).mean(0)
            if len(thumbs):
                z = c[0] + zt @ w
                p = 1 / (1 + np.exp(-z))
                f += float(np.mean(np.logaddexp(0.0, z) - y * z))
                g[0] += float((p - y).mean())
                g[1:] += ((p - y)[:, None] * zt).mean(0)
            return f, g

        res = minimize(loss, np.zeros(allf.shape[1] + 1), jac=True, method="L-BFGS-B")
        if not res.success:
            raise ConfigError(f"the reward head's fit did not converge: {res.message}")
        self.coef = res.x
        if not len(thumbs):  # Bradley-Terry leaves the offset free: centre the training texts at 0
            self.coef[0] = -float(np.mean(np.concatenate([zc, zr]) @ self.coef[1:]))
        return {"train_loss": float(res.fun), "train_iterations": int(res.nit)}

    def meta(self) -> dict[str, Any]:
        from scalelab.rewards.models import FEATURES

        return {"head": "likelihood", "coef": self.coef.tolist(), "mu": self.mu.tolist(), "sd": self.sd.tolist(),
                "features": list(FEATURES["orm"])}


def evaluate_scorer(sc: Any, pairs: list[Pair], thumbs: list[Thumb], prefix: str) -> dict[str, Any]:
    from scalelab.rewards.trainer import auc

    out: dict[str, Any] = {}
    if pairs:
        zc = sc.z([p.prompt for p in pairs], [p.chosen for p in pairs])
        zr = sc.z([p.prompt for p in pairs], [p.rejected for p in pairs])
        win = zc > zr
        out[f"{prefix}pairwise_accuracy"] = float(win.mean())
        out[f"{prefix}pairs"] = len(pairs)
        out[f"{prefix}pairwise_accuracy_by_reason"] = {
            why: float(win[[p.why == why for p in pairs]].mean()) for why in sorted({p.why for p in pairs})}
    if thumbs:
        z = sc.z([t.prompt for t in thumbs], [t.completion for t in thumbs])
        y = np.array([t.label for t in thumbs])
        out[f"{prefix}label_accuracy"] = float(((z > 0) == (y > 0.5)).mean())
        out[f"{prefix}label_auc"] = auc(z, y > 0.5)
        out[f"{prefix}labels"] = len(thumbs)
    return out


def transform(ctx: StageContext) -> StageResult:
    cfg: RewardModelConfig = ctx.cfg
    fb = feedback(ctx, cfg)
    init = ctx.parent if cfg.init == "parent" else ctx.open_run(cfg.init, role="--init")
    model = init.load_model()
    tr_p, ho_p = split_by_prompt(fb.pairs, cfg.heldout, cfg.seed)
    tr_t, ho_t = split_by_prompt(fb.thumbs, cfg.heldout, cfg.seed)
    if not tr_p and not tr_t:
        raise ConfigError(f"{fb.source}: no training feedback left after holding out {cfg.heldout:.0%} of the prompts")
    if cfg.head == "likelihood":
        sc: Any = LikelihoodScorer(model, ctx.parent.tokenizer, cfg.l2)
        stats = sc.fit(tr_p, tr_t, ctx)
        head = sc.meta()
    else:
        sc = Scorer(model, ctx.parent.tokenizer)
        stats = train_scorer(sc, tr_p, tr_t, ctx, cfg)
        z = sc.z([p.prompt for p in tr_p for _ in (0, 1)] + [t.prompt for t in tr_t],
                 [c for p in tr_p for c in (p.chosen, p.rejected)] + [t.completion for t in tr_t])
        # Bradley-Terry is shift-invariant: centre the training texts at 0; thumbs fix the zero themselves
        head = {"head": "label", "offset": -float(np.mean(z)) if not tr_t else 0.0}
    metrics = {**stats, **evaluate_scorer(sc, ho_p, ho_t, "heldout_"), **evaluate_scorer(sc, tr_p, tr_t, "train_"),
               "feedback": fb.source, "init": init.run_id, "head": cfg.head}

    def save(m: Any, out: Path) -> None:
        from scalelab.records import atomic_write_json
        from scalelab.rewards.models import BAD, GOOD, REWARD_FILE, vocab_hash

        m.save_pretrained(out, safe_serialization=True)
        atomic_write_json(out / REWARD_FILE, {
            "kind": "orm", "good_token": GOOD, "bad_token": BAD, **head,
            "policy": ctx.parent.run_id, "vocab_hash": vocab_hash(ctx.parent.tokenizer), "query": "last token",
            "trained_on": fb.source, "loss": "bradley-terry" if tr_p else "bce"})

    return StageResult(model=model, variant="reward-model", metrics=metrics, save=save, evaluate=False,
                       carry_pretrain=True, extra={"init_id": init.run_id})


TECHNIQUE = Technique("reward-model", RewardModelConfig, transform,
                      "a reward model from preference pairs or thumbs (Bradley-Terry / BCE), testbed or JSONL")
