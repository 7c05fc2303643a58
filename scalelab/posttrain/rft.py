"""Best-of-n as post-training: rejection-sampling fine-tuning / expert iteration, and best-of-n
distillation, with any test-time strategy as the sampler.

    scalelab posttrain rft --from SFT_RUN --rounds 3 --samples 8 --runs-dir DIR          # verified
    scalelab posttrain rft --from SFT_RUN --keep reward-best --orm ORM_RUN ...           # BoN distil
    scalelab posttrain rft --from SFT_RUN --sampler beam_search --prm PRM_RUN ...        # search data

Each of `rounds` rounds (expert iteration: Anthony et al. 2017; STaR, Zelikman et al. 2022; RFT,
Yuan et al. 2023), on the task's train split (the testbed, or `--task FILE`):
  1. the current model answers `questions` fresh training questions with the sampler:
       sample       `samples` solutions per question at `temperature` (the engine)
       a strategy   any test-time strategy that returns a solution (cot, beam_search, dvts,
                    revision) at budget n = `samples`, so that search writes the training data
  2. keep      verified      solutions the task's verifier accepts, one copy of each distinct text
                             per question (RFT's de-duplication)
               reward-best   the ORM's best of the n samples per question, right or wrong: best-of-
                             n distillation, no ground truth used (needs --orm)
               all           everything the sampler returned (with a search sampler: distil the
                             search into one sample)
  3. fine-tune the current model on the kept solutions (as `sft`: full or LoRA);
and after each round the model answers held-out validation questions greedily (`metrics.curve`).

FLOPs: the sampler's policy passes (sampler_generate, or sampler_inference for a strategy), its
reward-model passes (sampler_verifier), and fine-tuning (student_train).
"""
from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from scalelab.errors import InputError
from scalelab.posttrain.sft import SFTConfig, finetune
from scalelab.posttrain.stage import StageContext, StageResult, Technique


class RFTConfig(SFTConfig):
    rounds: int = Field(2, ge=1, le=1000)
    questions: int = Field(1000, ge=1, le=10_000_000, description="training questions per round")
    samples: int = Field(8, ge=1, le=4096, description="n: samples (or the strategy's budget) per question")
    sampler: str = Field("sample", description="sample, or a test-time strategy that returns a solution")
    keep: Literal["verified", "reward-best", "all"] = "verified"
    temperature: float = Field(0.8, gt=0, le=10)
    orm: str | None = Field(None, description="outcome reward model (keep reward-best, ORM strategies)")
    prm: str | None = Field(None, description="process reward model (beam_search, dvts)")
    curve_problems: int = Field(32, ge=1, le=100_000, description="held-out validation questions per difficulty")
    id_quiet_without_curve: ClassVar[tuple[str, ...]] = ("curve_points",)  # rft had curve_problems from the start

    def needs_train_split(self) -> bool:
        return True

    def check_inputs(self, parent: Any) -> None:
        from scalelab.inference.loading import resolve_checkpoint

        _sampler_check(self)
        for path in (self.orm, self.prm):
            if path:
                resolve_checkpoint(path)


def _sampler_check(cfg: RFTConfig) -> None:
    from scalelab.testtime.strategies import STRATEGIES, get_strategy

    if cfg.sampler == "sample":
        if cfg.keep == "reward-best" and not cfg.orm:
            raise InputError("--keep reward-best picks the ORM's best sample: give --orm RUN")
        return
    s = get_strategy(cfg.sampler)
    if cfg.sampler == "revision" and not cfg.on_testbed:
        raise InputError("sampler 'revision' writes the testbed's '!' correction lines; on a task file use sample, "
                         "cot, beam_search or dvts")
    if s.kind == "parallel" or s.direct:
        usable = ", ".join(n for n, x in STRATEGIES.items() if x.kind != "parallel" and not x.direct)
        raise InputError(f"sampler {cfg.sampler!r} scores samples but returns no solution text; use one of "
                         f"sample, {usable} (for best-of-n distillation: --sampler sample --keep reward-best)")
    if cfg.keep == "reward-best":
        raise InputError("--keep reward-best applies to --sampler sample; a strategy already picks its answer "
                         "(use --keep all to distil it)")


def _round_data(ctx: StageContext, cfg: RFTConfig, model: Any, probs: list[Any], orm: Any, prm: Any,
                rnd: int) -> tuple[list[Any], dict[str, Any]]:
    from scalelab.posttrain.data import generated_examples
    from scalelab.testtime.strategies import Context, Options, run_strategy

    data = ctx.data
    task = data.task
    engine = ctx.engine(model)
    seed = cfg.seed * 1_000_003 + rnd
    if cfg.sampler == "sample":
        params = data.params(probs, temperature=cfg.temperature, seed=seed)
        if cfg.keep != "reward-best":
            g = generated_examples(ctx, engine, probs, cfg.samples, params, part="sampler_generate",
                                   keep=cfg.keep, distinct=True)
            return g.examples, {"sampled": g.samples, "kept": g.kept}
        gen = ctx.generate(engine, [task.prompt(p) for p in probs], cfg.samples, params, part="sampler_generate")
        texts = [c.text for row in gen.completions for c in row]
        scores, flops = orm.score([task.prompt(p) for p in probs for _ in range(cfg.samples)], texts)
        ctx.ledger.add("sampler_verifier", sum(flops))
        s = np.array([x[0] for x in scores]).reshape(len(probs), cfg.samples)
        best = [texts[i * cfg.samples + int(np.argmax(s[i]))] for i in range(len(probs))]
        ex = [data.make(engine.tokenizer, p, t) for p, t in zip(probs, best)]
        right = float(np.mean([task.verify(p, t).correct for p, t in zip(probs, best)]))
        return ex, {"sampled": len(texts), "kept": len(ex), "kept_correct": right}
    sctx = Context(engine=engine, orm=orm, prm=prm, options=Options(temperature=cfg.temperature, seed=seed), task=task)
    outs = run_strategy(cfg.sampler, probs, cfg.samples, sctx)
    ctx.ledger.add("sampler_inference", sum(o.flops_inference for o in outs))
    if any(o.flops_verifier for o in outs):
        ctx.ledger.add("sampler_verifier", sum(o.flops_verifier for o in outs))
    keep = [(p, o.text) for p, o in zip(probs, outs) if o.text and (cfg.keep == "all" or o.correct == 1.0)]
    ex = [data.make(engine.tokenizer, p, t) for p, t in keep]
    return ex, {"sampled": len(outs), "kept": len(ex),
                "kept_correct": float(np.mean([o.correct for o in outs])) if outs else 0.0}


def transform(ctx: StageContext) -> StageResult:
    from scalelab.posttrain.accuracy import greedy_accuracy
    from scalelab.rewards.models import RewardModel

    cfg: RFTConfig = ctx.cfg
    _sampler_check(cfg)
    data = ctx.data
    steps = data.bins(cfg.data_steps, "data_steps")
    orm = RewardModel.load(cfg.orm, max_batch=cfg.max_batch) if cfg.orm else None
    prm = RewardModel.load(cfg.prm, max_batch=cfg.max_batch) if cfg.prm else None
    for rm in (orm, prm):
        if rm is not None:
            rm.check_tokenizer(ctx.parent.tokenizer, policy_name=ctx.parent.run_id)
    curve_probs = data.heldout_problems(cfg.curve_problems, steps, cfg.seed)
    model = ctx.parent.load_model()
    curve = [{"round": 0, "posttrain_flops": 0.0, "greedy_accuracy": greedy_accuracy(ctx, model, curve_probs, cfg.seed)}]
    stats: dict[str, Any] = {}
    tokens = 0
    for rnd in range(1, cfg.rounds + 1):
        ctx.progress(f"round {rnd}: sampling", 0, 1)
        probs = data.train_problems(cfg.questions, steps, cfg.seed * 1_000_003 + 104_729 * rnd)
        rows, info = _round_data(ctx, cfg, model, probs, orm, prm, rnd)
        if rows:  # a round that kept nothing trains nothing (counted in rounds_without_data)
            ctx.progress(f"round {rnd}: training", 0, 1)
            model.train()
            model, stats = finetune(ctx, cfg, model, rows)
            tokens += stats["train_tokens"]
        curve.append({"round": rnd, "posttrain_flops": ctx.ledger.total, **info,
                      "greedy_accuracy": greedy_accuracy(ctx, model, curve_probs, cfg.seed)})
        ctx.log({"step": rnd, "round": rnd, **{k: v for k, v in curve[-1].items() if k != "posttrain_flops"}})
    stats.update(curve=curve, rounds=cfg.rounds, sampler=cfg.sampler, keep=cfg.keep, train_tokens=tokens,
                 kept_total=int(sum(c.get("kept", 0) for c in curve)),
                 rounds_without_data=sum(1 for c in curve[1:] if not c.get("kept")))
    return StageResult(model=model, variant="rft" if cfg.keep == "verified" else f"rft-{cfg.keep}",
                       metrics=stats, tokens=tokens)


TECHNIQUE = Technique("rft", RFTConfig, transform,
                      "rejection-sampling fine-tuning / expert iteration; best-of-n distillation; any strategy as sampler")
