"""Training an outcome or process reward model on samples of a policy: `train_verifier(config)`.

1. Sample `samples` worked solutions per training problem from the policy (temperature T).
2. Label them. ORM: the strict verifier's verdict on the whole solution. PRM: Monte-Carlo
   estimation as in Math-Shepherd (Wang et al. 2024, sec. 3.3): from the prefix ending at each
   line, `rollouts` completions are sampled from the same policy; the line's label is 1 if any
   rollout ends in a right solution ("hard estimation", their default) or the share that does
   ("soft"). The answer line's label is the sample's own verdict. No step-level oracle is used, so
   the recipe works wherever only final answers can be checked; on the testbed the labels are
   also compared with the true correctness of each prefix (`label_agreement`), which differs
   exactly where a wrong step is followed by a correction the policy would write.
3. Fit the head (see `verifiers.py`) on the reward model's base, the policy itself or a `judge`:
   another causal LM with the same tokenizer, e.g. a larger or longer-trained model of the same
   testbed (Cobbe et al. 2021, "Training Verifiers to Solve Math Word Problems", judge a small
   generator's samples with a larger verifier). The policy's own log-probabilities cannot tell
   it more than it knows: greedy decoding already follows its most likely tokens. Likelihood
   head (default): the base's log-probabilities of the sampled tokens give a few features per
   query position; a logistic regression (L2, scipy L-BFGS) fits its coefficients; the
   checkpoint is the base's weights unchanged. Label head: fine-tune a copy of the base (or a
   fresh ladder model, `init=d2`...) to predict the label as P("+" vs "-") at each query
   position, binary cross-entropy, AdamW. Samples and Monte-Carlo rollouts always come from the
   policy: the reward model judges the policy's solutions.
4. Validate on the validation split: AUC of the score against correctness, and the accuracy of
   picking the best-scored of the `samples` solutions against picking one at random.
5. Write a run like any other: checkpoint (safetensors, tokenizer, reward.json), record with the
   policy as parent; its ledger carries the policy's FLOPs forward and adds sampling and rollouts
   as inference, training as posttrain; a judge's own ledger is kept in `metrics.judge_flops`
   (its pretraining is its own run's, not the policy's).

Command line: `scalelab testtime train-verifier --policy RUN --kind prm --runs-dir runs`.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from scalelab.errors import ConfigError
from scalelab.records import (CHECKPOINT_DIR, CONFIG_FILE, RunRecord, append_metrics, atomic_write_json, check_output_dir,
                              read_record, write_record)
from scalelab.runs import run_id
from scalelab import passk as est
from scalelab.rewards.models import BAD, FEATURES, GOOD, REWARD_FILE, likelihood_features, query_positions, token_logprobs, vocab_hash
from scalelab.tasks.base import split_lines
from scalelab.tasks.options import TASK_FIELDS, TaskOptions
from scalelab.tasks.testbed import TestbedTask


class VerifierConfig(TaskOptions):
    policy: str = Field(..., description="policy run directory (or checkpoint directory)")
    kind: Literal["orm", "prm"] = "prm"
    head: Literal["likelihood", "label"] = Field("likelihood", description="see testtime/verifiers.py")
    problems: int = Field(512, ge=1, le=1_000_000, description="training problems")
    samples: int = Field(8, ge=1, le=4096, description="policy samples per problem")
    rollouts: int = Field(8, ge=1, le=1024, description="PRM: Monte-Carlo completions per step prefix")
    label: Literal["hard", "soft"] = "hard"
    min_steps: int = Field(1, ge=1, le=12)
    max_steps: int = Field(8, ge=1, le=12)
    temperature: float = Field(0.8, gt=0, le=10)
    judge: str | None = Field(None, description="the model the reward model is built from (default: the policy); "
                              "same tokenizer")
    init: str = Field("policy", description="label head: policy (fine-tune a copy of the base: the policy or the "
                      "judge) or a ladder preset from scratch")
    l2: float = Field(1e-3, ge=0, le=100, description="likelihood head: L2 penalty of the logistic fit")
    epochs: int = Field(3, ge=1, le=1000)
    lr: float = Field(3e-4, gt=0, le=1)
    batch_size: int = Field(32, ge=1, le=65_536)
    weight_decay: float = Field(0.0, ge=0, le=1)
    val_problems: int = Field(64, ge=2, le=100_000)
    seed: int = Field(0, ge=0)
    max_batch: int = Field(1024, ge=1, le=1_000_000, description="engine rows per batch")
    threads: int | None = Field(None, ge=1, le=1024)


def run_id_for(cfg: VerifierConfig, policy_id: str, judge_id: str | None = None) -> str:
    key = {**cfg.model_dump(exclude={"max_batch", "threads", "policy", "judge", *TASK_FIELDS}), **cfg.task_key()}
    if judge_id is not None:  # runs identified by name, not by where they lie (as the policy)
        key["judge"] = judge_id
    return run_id(cfg.kind, policy_id, key={**key, 'policy': policy_id})


def _file_problems(task: Any, cfg: VerifierConfig) -> tuple[list[Any], list[Any]]:
    """(training, validation) problems of a task file: its train split, validated on its val split
    or, without one, on `val_problems` held out of the train split (never on the test split)."""
    pool = task.problems("train", 10**9)
    rng = np.random.default_rng(cfg.seed)
    pool = [pool[i] for i in rng.permutation(len(pool))]
    if "val" in task.splits():
        return pool[:cfg.problems], task.problems("val", cfg.val_problems, seed=cfg.seed)
    if len(pool) < 4:
        raise ConfigError(f"{task.name}: {len(pool)} training problems; a reward model needs at least 4 (and a "
                          "validation share held out of them)")
    k = min(cfg.val_problems, len(pool) // 4)
    return pool[k:k + cfg.problems], pool[:k]


def _problems(src: Any, split: str, n: int, cfg: VerifierConfig, seed: int) -> list[Any]:
    ks = list(range(cfg.min_steps, cfg.max_steps + 1))
    per = math.ceil(n / len(ks))
    out = [p for k in ks for p in src.problems(split, per, steps=k, seed=seed)]
    rng = np.random.default_rng(seed)
    return [out[i] for i in rng.permutation(len(out))[:n]]


def _label_prm(eng: Any, task: TestbedTask, probs: list[Any], texts: list[list[str]], cfg: VerifierConfig,
               progress: Any) -> tuple[list[list[list[float]]], list[list[list[bool]]]]:
    """MC labels [problem][sample][line] and the true prefix correctness for the same lines."""
    from scalelab.inference.engine import SamplingParams

    prefixes: dict[tuple[int, str], None] = {}
    for i, row in enumerate(texts):
        for t in row:
            lines = split_lines(t)
            for j in range(len(lines) - 1):
                prefixes[(i, "".join(lines[:j + 1]))] = None
    keys = list(prefixes)
    labels: dict[tuple[int, str], float] = {}
    if keys:
        params = SamplingParams(temperature=cfg.temperature, seed=cfg.seed + 1, stop=tuple(getattr(task, "stop", ())),
                                max_tokens=max(task.max_tokens(p) for p in probs))
        gen = eng.generate([task.prompt(probs[i]) + pre for i, pre in keys], cfg.rollouts, params, progress=progress)
        for (i, pre), comps in zip(keys, gen.completions):
            ok = [task.verify(probs[i], pre + c.text).correct for c in comps]
            labels[(i, pre)] = float(any(ok)) if cfg.label == "hard" else float(np.mean(ok))
    out, truth = [], []
    for i, row in enumerate(texts):
        out.append([])
        truth.append([])
        for t in row:
            lines = split_lines(t)
            final = float(task.verify(probs[i], t).correct)
            # an empty sample (<eos> at once) has no line to label, nor a query position to score
            steps = [labels[(i, "".join(lines[:j + 1]))] for j in range(len(lines) - 1)]
            out[-1].append(steps + [final] if lines else [])
            if isinstance(task, TestbedTask):  # only the testbed can check a prefix's steps
                truth[-1].append([_prefix_ok(task, probs[i], "".join(lines[:j + 1])) for j in range(len(lines))])
    return out, truth


def _prefix_ok(task: TestbedTask, p: Any, prefix: str) -> bool:
    """Every step written so far is right (after corrections) and the lines are well formed."""
    from scalelab.tasks.testbed import LABELS

    v = task.verify(p, prefix)
    seen = {ln[0] if ln[0] != "!" else ln[1] for ln in prefix.split("\n") if len(ln) > 1 and ln[0] != "A"}
    steps = [LABELS.index(c) for c in seen if c in LABELS and LABELS.index(c) < p.steps]
    ok = v.well_formed and all(v.steps_correct[s] for s in steps)
    return bool(ok and (v.answer is None or v.answer_correct))


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U / (n_pos n_neg)), ties counted half."""
    s, y = np.asarray(scores, float), np.asarray(labels, bool)
    pos, neg = s[y], s[~y]
    if pos.size == 0 or neg.size == 0:
        return math.nan
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(greater / (pos.size * neg.size))


def train_verifier(cfg: VerifierConfig, runs_dir: str | Path, *, progress: Any = None) -> RunRecord:
    """See the module docstring. Returns the finished record (an existing complete run is reused)."""
    from scalelab.runs import torch_threads
    from scalelab.inference.loading import parent_record, run_name

    if cfg.min_steps > cfg.max_steps:
        raise ConfigError(f"min_steps={cfg.min_steps} > max_steps={cfg.max_steps}")
    check_output_dir(runs_dir, "--runs-dir")
    parent = parent_record(cfg.policy)
    pid = run_name(cfg.policy, parent)
    jid = run_name(cfg.judge, parent_record(cfg.judge)) if cfg.judge is not None else None
    run_dir = Path(runs_dir) / run_id_for(cfg, pid, jid)
    if (run_dir / "record.json").is_file():
        done = read_record(run_dir)
        if done.status == "complete":
            return done
    with torch_threads(cfg.threads):
        return _train(cfg, run_dir, parent, pid, progress or (lambda *a: None))


def _train(cfg: VerifierConfig, run_dir: Path, parent: Any, pid: str, progress: Any) -> RunRecord:
    from scalelab.inference.engine import Engine, SamplingParams
    from scalelab.inference.loading import resolve_checkpoint, testbed_for

    t0 = time.perf_counter()
    eng = Engine.load(cfg.policy, max_batch=cfg.max_batch)
    task = cfg.task_for(eng, pid)
    base, jrec, jid = eng, None, None  # what the reward model is built from
    if cfg.judge is not None:
        base, jrec, jid = _load_judge(cfg, eng, pid)
    if cfg.on_testbed:
        src = testbed_for(parent)
        if cfg.max_steps > src.config.max_steps:
            raise ConfigError(f"max_steps={cfg.max_steps}: the policy's testbed has at most {src.config.max_steps} steps")
        train_p = _problems(src, "train", cfg.problems, cfg, cfg.seed)
        val_p = _problems(src, "val", cfg.val_problems, cfg, cfg.seed + 7)
    else:
        if cfg.kind == "prm" and cfg.step_split != "lines":
            raise ConfigError(f"--step-split {cfg.step_split}: process reward models are trained and queried at line "
                              "ends; use --step-split lines")
        train_p, val_p = _file_problems(task, cfg)
    params = SamplingParams(temperature=cfg.temperature, seed=cfg.seed, stop=tuple(getattr(task, "stop", ())),
                            max_tokens=max(task.max_tokens(p) for p in train_p + val_p))
    tick = lambda stage: (lambda d, t: progress(stage, d, t))  # noqa: E731
    gen = eng.generate([task.prompt(p) for p in train_p + val_p], cfg.samples, params, progress=tick("sampling"))
    texts = gen.texts()
    tr_texts, va_texts = texts[:len(train_p)], texts[len(train_p):]
    correct = [[task.verify(p, t).correct for t in row] for p, row in zip(train_p + val_p, texts)]
    if cfg.kind == "prm":
        labels, truth = _label_prm(eng, task, train_p, tr_texts, cfg, tick("rollouts"))
        flat_l = np.array([x for a in labels for b in a for x in b])
        flat_t = np.array([x for a in truth for b in a for x in b])
        agreement = float(((flat_l >= 0.5) == flat_t).mean()) if cfg.on_testbed else None
    else:
        labels = [[[float(c)] for c in row] for row in correct[:len(train_p)]]
        agreement = None
    inference_flops = eng.meter.totals["inference"]

    # ---- the reward model -----------------------------------------------------------------------
    tok = eng.tokenizer
    rm_meta = {"kind": cfg.kind, "head": cfg.head, "good_token": GOOD, "bad_token": BAD, "policy": pid,
               "judge": jid,
               "label": cfg.label, "vocab_hash": vocab_hash(tok),
               "query": "every line end" if cfg.kind == "prm" else "last token"}
    record = RunRecord(run_id=run_dir.name, parent_id=pid, phase="posttrain",
                       technique=f"reward-model-{cfg.kind}", task=cfg.task_name(), config=cfg.model_dump())
    ledger = dict(parent.flops) if parent is not None else {}
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(run_dir / CONFIG_FILE, cfg.model_dump())
    (run_dir / "metrics.jsonl").unlink(missing_ok=True)
    write_record(run_dir, record)
    rm_dir = run_dir / CHECKPOINT_DIR
    try:
        from scalelab.inference.loading import quiet_transformers

        if cfg.head == "likelihood":
            model = base.model
            coef, mu, sd, train_flops, last_loss, n_tok = _fit_likelihood(base, task, train_p, tr_texts, labels, cfg)
            rm_meta.update(coef=coef, mu=mu, sd=sd, features=list(FEATURES[cfg.kind]))
        else:
            from scalelab.inference.flops import flop_model

            model = _init_model(cfg, base, resolve_checkpoint(cfg.judge or cfg.policy))
            examples = _examples(eng, task, train_p, tr_texts, labels, cfg.kind)
            train_flops, last_loss = _fit(model, examples, cfg, tok.convert_tokens_to_ids(GOOD),
                                          tok.convert_tokens_to_ids(BAD), flop_model(model), run_dir, tick("training"))
            n_tok = int(sum(len(e[0]) for e in examples)) * cfg.epochs
        record.n_params = sum(p.numel() for p in model.parameters())
        with quiet_transformers():
            model.save_pretrained(rm_dir, safe_serialization=True)
            tok.save_pretrained(rm_dir)
        atomic_write_json(rm_dir / REWARD_FILE, rm_meta)
        val = _validate(rm_dir, eng, task, val_p, va_texts, correct[len(train_p):])
    except BaseException as err:
        record.fail(err)
        write_record(run_dir, record)
        raise
    record.flops = {**ledger, "inference": ledger.get("inference", 0.0) + inference_flops,
                    "posttrain": ledger.get("posttrain", 0.0) + train_flops}
    record.tokens = n_tok
    record.wall_s = time.perf_counter() - t0
    n_lab = sum(len(x) for a in labels for x in a)
    record.complete(train_loss=last_loss, train_examples=sum(map(len, tr_texts)), train_labels=n_lab, head=cfg.head,
                    train_positive=float(np.mean([x >= 0.5 for a in labels for b in a for x in b])),
                    train_accuracy_policy=float(np.mean(correct[:len(train_p)])),
                    label_agreement=agreement, rollouts=cfg.rollouts if cfg.kind == "prm" else 0,
                    judge=rm_meta["judge"], judge_flops=dict(jrec.flops) if jrec is not None else None, **val)
    write_record(run_dir, record)
    return record


def _load_judge(cfg: VerifierConfig, policy: Any, pid: str) -> tuple[Any, Any, str]:
    """(engine over the judge, its run record or None, its name); refused unless it reads the
    policy's tokens as the policy does (the same vocabulary) and can encode the testbed."""
    from scalelab.inference.engine import Engine
    from scalelab.tasks.testbed import check_testbed_tokenizer
    from scalelab.inference.loading import parent_record, run_name

    jrec = parent_record(cfg.judge)
    jid = run_name(cfg.judge, jrec)
    judge = Engine.load(cfg.judge, max_batch=cfg.max_batch)
    if cfg.on_testbed:
        check_testbed_tokenizer(judge, jid)
    if vocab_hash(judge.tokenizer) != vocab_hash(policy.tokenizer):
        raise ConfigError(f"judge {jid} has another tokenizer than the policy {pid} (vocabularies of "
                          f"{len(judge.tokenizer)} and {len(policy.tokenizer)} tokens differ): a judge must read the "
                          "policy's tokens")
    return judge, jrec, jid


def _fit_likelihood(eng: Any, task: TestbedTask, probs: list[Any], texts: list[list[str]], labels: list[Any],
                    cfg: VerifierConfig) -> tuple[list[float], list[float], list[float], float, float, int]:
    """Logistic regression of the labels on likelihood features; returns (coef, mu, sd, FLOPs,
    final loss, tokens read)."""
    from scipy.optimize import minimize

    prompts = [task.prompt(p) for p, row in zip(probs, texts) for _ in row]
    flat = [t for row in texts for t in row]
    lps, flops = token_logprobs(eng, prompts, flat)
    line_ids = {i for i, t in enumerate(eng.token_text()) if t.endswith("\n")}
    X, y = [], []
    for t, lp, lab in zip(flat, lps, [x for row in labels for x in row]):
        f = likelihood_features(cfg.kind, lp, query_positions(cfg.kind, eng.encode(t), line_ids))
        k = min(len(f), len(lab))
        X += list(f[:k])
        y += list(lab[:k])
    X, y = np.asarray(X, float), np.asarray(y, float)
    if X.shape[0] < 2:
        raise ConfigError("too few labelled positions to fit the reward head; raise --problems or --samples")
    mu, sd = X.mean(0), X.std(0) + 1e-8
    Z = np.column_stack([np.ones(len(X)), (X - mu) / sd])

    def loss(c: np.ndarray) -> tuple[float, np.ndarray]:
        z = Z @ c
        p = 1.0 / (1.0 + np.exp(-z))
        nll = np.mean(np.logaddexp(0.0, z) - y * z) + cfg.l2 * float(c[1:] @ c[1:])
        grad = Z.T @ (p - y) / len(y)
        grad[1:] += 2 * cfg.l2 * c[1:]
        return float(nll), grad

    res = minimize(loss, np.zeros(Z.shape[1]), jac=True, method="L-BFGS-B")
    if not res.success:
        raise ConfigError(f"the logistic fit of the reward head did not converge: {res.message}")
    n_tok = sum(len(eng.encode(p)) + len(eng.encode(t)) for p, t in zip(prompts, flat))
    return res.x.tolist(), mu.tolist(), sd.tolist(), float(sum(flops)), float(res.fun), n_tok


def _init_model(cfg: VerifierConfig, eng: Any, policy_ckpt: Path) -> Any:
    import torch
    from transformers import AutoModelForCausalLM

    from scalelab import model as M
    from scalelab.inference.loading import quiet_transformers

    if cfg.init == "policy":
        with quiet_transformers():
            return AutoModelForCausalLM.from_pretrained(policy_ckpt, dtype=torch.float32, use_safetensors=True)
    tok = eng.tokenizer
    arch = M.parse_preset(cfg.init, len(tok), eng.context if eng.context < 10**9 else 512)
    special = {f"{k}_token_id": getattr(tok, f"{k}_token_id", None) for k in ("pad", "bos", "eos")}
    return M.build_model(arch, seed=cfg.seed, special_tokens=special)


def _examples(eng: Any, task: TestbedTask, probs: list[Any], texts: list[list[str]], labels: list[Any],
              kind: str) -> list[tuple[list[int], list[int], list[float]]]:
    """(token ids of prompt + solution, query positions, labels) per sample."""
    out = []
    line_ids = {i for i, s in enumerate(eng.token_text()) if s.endswith("\n")}
    for p, row, lab in zip(probs, texts, labels):
        prompt = eng.encode(task.prompt(p))
        for t, y in zip(row, lab):
            ids = eng.encode(t)
            if not ids:
                continue
            if kind == "orm":
                q = [len(ids) - 1]
            else:
                q = [i for i, x in enumerate(ids) if x in line_ids]
                if not q or q[-1] != len(ids) - 1:
                    q.append(len(ids) - 1)
            q = q[:len(y)]
            out.append((prompt + ids, [len(prompt) + i for i in q], list(y[:len(q)])))
    return out


def _fit(model: Any, examples: list[Any], cfg: VerifierConfig, good: int, bad: int, fm: Any, run_dir: Path,
         progress: Any) -> tuple[float, float]:
    import torch
    import torch.nn.functional as F

    torch.manual_seed(cfg.seed)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.95))
    head = model.get_output_embeddings()
    rng = np.random.default_rng(cfg.seed)
    steps = cfg.epochs * math.ceil(len(examples) / cfg.batch_size)
    flops, step, t0, loss_v = 0.0, 0, time.perf_counter(), math.nan
    for epoch in range(cfg.epochs):
        order = rng.permutation(len(examples))
        for b in range(0, len(order), cfg.batch_size):
            batch = [examples[i] for i in order[b:b + cfg.batch_size]]
            L = max(len(e[0]) for e in batch)
            ids = torch.full((len(batch), L), 0, dtype=torch.long)
            att = torch.zeros((len(batch), L), dtype=torch.long)
            rows, cols, ys = [], [], []
            for r, (x, q, y) in enumerate(batch):
                ids[r, :len(x)] = torch.tensor(x)
                att[r, :len(x)] = 1
                rows += [r] * len(q)
                cols += q
                ys += y
            h = model.base_model(input_ids=ids, attention_mask=att).last_hidden_state[rows, cols]  # [Q, d]
            w = head.weight[good] - head.weight[bad]
            z = h @ w + ((head.bias[good] - head.bias[bad]) if getattr(head, "bias", None) is not None else 0.0)
            loss = F.binary_cross_entropy_with_logits(z, torch.tensor(ys, dtype=z.dtype))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            lr = cfg.lr * min(1.0, (step + 1) / max(1, steps // 20)) * 0.5 * (1 + math.cos(math.pi * step / steps))
            for g in opt.param_groups:
                g["lr"] = lr
            opt.step()
            opt.zero_grad(set_to_none=True)
            # forward + backward = 3 x forward (model.py convention); the head is one row per label
            flops += 3 * (sum(fm.tokens(len(e[0]), 0, heads=0) for e in batch) + fm.head / head.weight.shape[0] * len(ys))
            step += 1
            loss_v = float(loss.detach())
            if step % max(1, steps // 50) == 0 or step == steps:
                append_metrics(run_dir, {"step": step, "epoch": epoch, "tokens": None, "flops": flops,
                                         "wall_s": round(time.perf_counter() - t0, 3), "loss": loss_v, "lr": lr})
                progress(step, steps)
    model.eval()
    return flops, loss_v


def _validate(rm_dir: Path, eng: Any, task: TestbedTask, probs: list[Any], texts: list[list[str]],
              correct: list[list[bool]]) -> dict[str, Any]:
    """AUC against correctness and best-of-samples accuracy on validation problems."""
    from scalelab.rewards.models import RewardModel, aggregate

    rm = RewardModel.load(rm_dir)
    prompts = [task.prompt(p) for p, row in zip(probs, texts) for _ in row]
    flat = [t for row in texts for t in row]
    scores, _ = rm.score(prompts, flat)
    final = np.array([aggregate(s, "last") for s in scores])
    y = np.array([c for row in correct for c in row], float)
    k = len(texts[0])
    per = np.array([est.best_of_k(final[i * k:(i + 1) * k], y[i * k:(i + 1) * k], k) for i in range(len(texts))])
    # Pooled AUC mostly rewards telling easy problems from hard ones; what a selector needs is to
    # rank the samples of one problem, so the AUC within problems is reported too.
    within = [auc(final[i * k:(i + 1) * k], y[i * k:(i + 1) * k]) for i in range(len(texts))]
    within = [a for a in within if a == a]
    return {"val_auc": auc(final, y), "val_auc_within_problem": float(np.mean(within)) if within else None,
            "val_problems_mixed": len(within), "val_problems": len(texts), "val_samples": int(y.size),
            "val_accuracy_random_pick": float(y.mean()), "val_accuracy_best_of_samples": float(per.mean()),
            "val_best_of": k}
