"""The budget planner: split one FLOPs budget between training, post-training and serving.

    fits = load_fits("fits")                                # chinchilla.json (+ exchange.json)
    p = make_plan(PlanConfig(budget=1e15, queries=1e6, target_accuracy=0.6), fits)
    print("\\n".join(explain(p)))                          # or: scalelab plan --budget 1e15 ...

Costs follow Sardana et al. 2024 (Sec. 2): training 6·N·D, serving 2·N FLOPs per token, for Q
queries of T tokens each; a test-time strategy multiplies the serving cost by what it spends per
question over one greedy answer (its measured `multiplier`); a post-training recipe costs the
share of pretraining FLOPs it cost on the ladder and is worth the pretraining multiplier measured
there (`scalelab.laws.exchange`), both assumed to carry over to other sizes. Where the fits folder
also holds a post-training law of a technique (`scalelab posttrain fit RUNS --technique T --out
FITS/posttrain-T.json`), the plan may spend more or less post-training compute on it than was
measured, up to 4x the law's largest measured budget, the law predicting the gain
(`scalelab.pipeline.plan_posttrain`).

- `--target-loss`: Sardana et al.'s inference-aware optimum on the Chinchilla fit
  (`scalelab.laws.inference`): the cheapest N, D reaching the loss while serving Q·T tokens.
- `--target-accuracy`: for every training budget C (Chinchilla's compute-optimal N, D at C; with
  no Chinchilla fit in the folder -- a user's own model family has no loss ladder -- only the
  ladder's own models as trained, and the plan says so),
  every post-training recipe and every test-time strategy and n measured on the ladder, the
  exchange law predicts accuracy from (C_train, C_test); the cheapest plan that reaches the
  target within the budget wins. The exchange law was fitted on exact FLOPs, so a plan's 6ND is
  converted with the ladder's measured ratio (exact / 6ND), and its test-time FLOPs per question
  are the strategy's multiplier x 2N x the testbed question's greedy tokens (in 2N units).
  Accuracy is predicted for testbed questions: `--tokens-per-query` scales the serving bill only.

A budget that cannot reach the target gives `reachable = False` and the best reachable accuracy
(or loss) within it; the command line then exits with code 1 (2 is kept for bad input).
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field, model_validator

from scalelab.config import Config
from scalelab.errors import InputError
from scalelab.pipeline.plan_posttrain import Recipe, is_law_doc, law_lines, read_laws, recipes

MAKE_CHINCHILLA = "scalelab fit RUNS --law chinchilla --floor auto --out {dir}/chinchilla.json"
MAKE_EXCHANGE = "scalelab exchange RUNS --out {dir}/exchange.json"
GRID_PER_DECADE = 100  # training budgets tried: 2.3% apart


class PlanConfig(Config):
    budget: float = Field(..., gt=0, allow_inf_nan=False, description="total FLOPs: training + post-training + serving")
    queries: float = Field(..., ge=0, allow_inf_nan=False, description="queries to serve")
    tokens_per_query: float | None = Field(None, gt=0, allow_inf_nan=False,
                                           description="tokens per query (default: a testbed question's)")
    target_accuracy: float | None = Field(None, gt=0, lt=1)
    target_loss: float | None = Field(None, gt=0, allow_inf_nan=False)
    difficulty: int | None = Field(None, description="target accuracy at this difficulty (default: the mean)")

    @model_validator(mode="after")
    def _one_target(self) -> "PlanConfig":
        if (self.target_accuracy is None) == (self.target_loss is None):
            raise ValueError("give exactly one of target_accuracy and target_loss")
        return self


@dataclass
class Fits:
    directory: str
    chinchilla: Any
    exchange: dict[str, Any] | None
    posttrain: dict[str, dict[str, Any]] = field(default_factory=dict)  # technique -> its post-training law


def load_fits(directory: str | Path, *, need_exchange: bool) -> Fits:
    """The fits in a folder of JSON files: one Chinchilla fit (`scalelab fit --out`), the exchange
    document (`scalelab exchange --out`) when a target accuracy needs it, and any post-training laws
    (`scalelab posttrain fit --out`), at most one per technique."""
    from scalelab.laws.chinchilla import ChinchillaLaw

    d = Path(directory)
    if not d.is_dir():
        raise InputError(f"--fits {d}: no such directory; make the fits with `{MAKE_CHINCHILLA.format(dir=d)}`"
                         + (f" and `{MAKE_EXCHANGE.format(dir=d)}`" if need_exchange else ""))
    docs: dict[str, list[tuple[Path, dict]]] = {}
    laws: list[tuple[Path, dict]] = []
    for p in sorted(d.glob("*.json")):
        try:
            doc = json.loads(p.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue  # not a fit: other JSON files may share the folder
        if isinstance(doc, dict) and is_law_doc(doc):
            laws.append((p, doc))
        elif isinstance(doc, dict) and isinstance(doc.get("law"), str):
            docs.setdefault(doc["law"], []).append((p, doc))
    chin = docs.get("chinchilla", [])
    ex = docs.get("exchange", [])
    if not chin and need_exchange and ex:  # a user's model family: the ladder's own sizes stand in
        return Fits(str(d), None, ex[0][1], read_laws(laws))
    if not chin:
        raise InputError(f"{d}: no chinchilla fit here; make it with `{MAKE_CHINCHILLA.format(dir=d)}`")
    if len(chin) > 1:
        named = [c for c in chin if c[0].name == "chinchilla.json"]
        if not named:
            raise InputError(f"{d}: {len(chin)} chinchilla fits ({', '.join(c[0].name for c in chin)}); "
                             "keep one, or name the one to use chinchilla.json")
        chin = named
    try:
        law = ChinchillaLaw.from_dict(chin[0][1])
    except (InputError, TypeError, ValueError) as e:
        raise InputError(f"{chin[0][0]}: cannot read the chinchilla fit ({e})") from None
    bad = [f"{k} = {law.params_[k]:.4g}" for k in ("alpha", "beta") if not law.params_[k] > 0]
    if bad:  # N*(C) and D*(C) would not both grow with C: no compute-optimal allocation to plan with
        raise InputError(f"{chin[0][0]}: the chinchilla fit has {' and '.join(bad)} (loss does not fall with "
                         "both N and D), so it has no compute-optimal allocation; refit on runs whose larger "
                         "models and longer runs are better")
    if need_exchange and not ex:
        raise InputError(f"{d}: no exchange fit here (a target accuracy needs one); make it with "
                         f"`{MAKE_EXCHANGE.format(dir=d)}`")
    return Fits(str(d), law, ex[0][1] if ex else None, read_laws(laws))


@dataclass
class Plan:
    mode: str                       # "accuracy" or "loss"
    reachable: bool
    target: float
    predicted: float                # accuracy or loss of the plan shown
    budget: float
    queries: float
    tokens_per_query: float
    N: float
    D: float
    train_flops: float
    posttrain_flops: float
    serving_flops: float
    recipe: str = "none"
    recipe_multiplier: float = 1.0
    strategy: str = "greedy"
    n: int = 1
    test_multiplier: float = 1.0
    notes: list[str] = field(default_factory=list)
    compare: dict[str, Any] = field(default_factory=dict)
    posttrain_law: dict[str, Any] = field(default_factory=dict)  # the recipe's budget, when a law chose it

    @property
    def total_flops(self) -> float:
        return self.train_flops + self.posttrain_flops + self.serving_flops

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: NaN (no reachable value) becomes None."""
        d = {**asdict(self), "total_flops": self.total_flops}
        if not self.posttrain_law:  # no law in the fits folder: the plan's JSON is as it was before laws
            d.pop("posttrain_law")
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in d.items()}


def default_config(exchange: dict[str, Any], *, queries: float = 1e6) -> PlanConfig:
    """The report's question: reach the ladder's best greedy accuracy (mean over difficulties, to two
    decimals) while serving `queries` testbed questions, with 10x the FLOPs that training and serving
    the ladder's best model would take (6ND + Q x 2N x T)."""
    best, top = None, -1.0
    for m in exchange["ladder"]:
        accs = [v for k, v in m.items() if k.startswith("acc_d") and v is not None]
        if accs and np.mean(accs) > top:
            best, top = m, float(np.mean(accs))
    if best is None:
        raise InputError("the exchange fit has no greedy accuracies on its ladder (evaluate --strategies cot)")
    T = float(exchange["planner"]["test_tokens_2n"])
    budget = 10 * (best["C_train_6n"] + queries * 2 * best["N"] * T)
    return PlanConfig.build(budget=budget, queries=queries, target_accuracy=max(math.floor(top * 100) / 100, 0.01))


def make_plan(cfg: PlanConfig, fits: Fits) -> Plan:
    if cfg.target_loss is not None:
        return _plan_loss(cfg, fits)
    return _plan_accuracy(cfg, fits)


def _tokens(cfg: PlanConfig, fits: Fits) -> float:
    if cfg.tokens_per_query is not None:
        return cfg.tokens_per_query
    if fits.exchange is None:
        raise InputError("give --tokens-per-query (there is no exchange fit in --fits to take a testbed question's from)")
    return float(fits.exchange["planner"]["test_tokens_2n"])


# ---- target loss: Sardana et al. 2024 ---------------------------------------------------------------
def _plan_loss(cfg: PlanConfig, fits: Fits) -> Plan:
    from scalelab.laws.inference import inference_optimal

    law, T = fits.chinchilla, _tokens(cfg, fits)
    serve = cfg.queries * T
    notes = ["post-training and test-time strategies change accuracy, not the pretraining loss: not planned here"]
    if cfg.target_loss > law.params_["E"]:
        opt = inference_optimal(law, inference_tokens=serve, target_loss=cfg.target_loss)
        if opt.total_flops <= cfg.budget:
            return Plan("loss", True, cfg.target_loss, cfg.target_loss, cfg.budget, cfg.queries, T, opt.N, opt.D_train,
                        opt.train_flops, 0.0, opt.inference_flops, notes=notes,
                        compare={"chinchilla_total_flops": opt.chinchilla_total_flops, "saving": opt.saving})
    else:
        notes.append(f"the target is not above the fit's irreducible loss E = {law.params_['E']:.4g}")
    # the best loss within the budget: L(N, D) with 6ND + 2N·Q·T = budget, over N
    n_max = cfg.budget / (2 * serve) if serve > 0 else cfg.budget
    Ns = np.geomspace(n_max * 1e-9, n_max * (1 - 1e-6), 4000)
    Ds = (cfg.budget - 2 * Ns * serve) / (6 * Ns)
    losses = law.predict(np.column_stack([Ns, Ds]))
    j = int(np.nanargmin(losses))
    return Plan("loss", False, cfg.target_loss, float(losses[j]), cfg.budget, cfg.queries, T, float(Ns[j]), float(Ds[j]),
                6 * Ns[j] * Ds[j], 0.0, 2 * Ns[j] * serve, notes=notes)


# ---- target accuracy: the exchange law --------------------------------------------------------------
def _options(ex: dict[str, Any], laws: dict[str, Any]) -> tuple[list[tuple], list[Recipe], list[str]]:
    """(strategies: (name, law, n, multiplier)), (recipes: `plan_posttrain.Recipe`), notes on laws not used."""
    from scalelab.laws.exchange import ExchangeLaw
    from scalelab.laws.exchange_tables import GREEDY

    plan_in = ex["planner"]
    strategies = []
    for s, e in ex["strategies"].items():
        if e.get("oracle") or "error" in e["pooled"]:
            continue
        law = ExchangeLaw.from_dict(e["pooled"])
        for n, m in sorted(plan_in["multipliers"].get(s, {}).items(), key=lambda kv: int(kv[0])):
            strategies.append(("greedy" if s == GREEDY else s, law, int(n), float(m)))
    if not strategies:
        raise InputError("the exchange fit holds no fitted strategy to plan with; re-make it with "
                         "`scalelab exchange RUNS --out FITS/exchange.json` on test-time records of 2+ models")
    return (strategies, *recipes(ex, laws))


def _plan_accuracy(cfg: PlanConfig, fits: Fits) -> Plan:
    law, ex, T = fits.chinchilla, fits.exchange, _tokens(cfg, fits)
    plan_in = ex["planner"]
    kappa, t_law = float(plan_in["train_exact_per_6n"]), float(plan_in["test_tokens_2n"])
    strategies, options, notes = _options(ex, fits.posttrain)
    decades = 9
    C = np.geomspace(cfg.budget * 10.0 ** -decades, cfg.budget, decades * GRID_PER_DECADE + 1)
    if law is None:
        C, N, D, why = ladder_sizes(ex)
        notes.append(why)
    else:
        a, b = law.optimal_exponents()["a"], law.optimal_exponents()["b"]
        p = law.params_
        G = (p["alpha"] * p["A"] / (p["beta"] * p["B"])) ** (1.0 / (p["alpha"] + p["beta"]))
        N, D = G * (C / 6) ** a, (C / 6) ** b / G  # Hoffmann et al. 2022, Eq. 4 (as ChinchillaLaw.compute_optimal)
    cands = []  # (total, accuracy, recipe, strategy)
    for r in options:
        rmult, share = r.multiplier, r.share
        for sname, slaw, n, m in strategies:
            if cfg.difficulty is not None and cfg.difficulty not in slaw.difficulties_:
                raise InputError(f"--difficulty {cfg.difficulty}: the exchange fit has difficulties {slaw.difficulties_}")
            acc = slaw.predict(np.column_stack([kappa * C * rmult, m * 2 * N * t_law]), difficulty=cfg.difficulty)
            total = C * (1 + share) + cfg.queries * T * 2 * N * m
            cands.append((total, acc, r, (sname, slaw, n, m)))

    def best(pred, pool=cands):
        pick = None
        for total, acc, r, s in pool:
            ok = pred(total, acc)
            if not ok.any():
                continue
            i = int(np.argmin(np.where(ok, total, np.inf)))
            if pick is None or total[i] < pick[0]:
                pick = (total[i], acc[i], r, s, i)
        return pick

    goal = lambda total, acc: (total <= cfg.budget) & (acc >= cfg.target_accuracy)  # noqa: E731
    pick, reachable = best(goal), True
    if pick is None:  # the most accurate plan within the budget
        reachable = False
        pick = best(lambda total, acc: total <= cfg.budget)  # any one, to find the best accuracy next
        if pick is not None:
            top = max(float(np.max(acc[total <= cfg.budget], initial=-1.0)) for total, acc, _, _ in cands)
            pick = best(lambda total, acc: (total <= cfg.budget) & (acc >= top))
    if pick is None:  # not even the smallest model considered can serve the queries within the budget
        total, acc, r, s = min(cands, key=lambda c: float(c[0][0]))
        pick = (total[0], math.nan, r, s, 0)
        notes.append(f"nothing fits: serving {cfg.queries:.3g} queries with the smallest model considered "
                     f"(N = {N[0]:.3g}) already costs {total[0]:.3g} FLOPs")
    total, acc, recipe, (sname, slaw, n, m), i = pick
    rname, rmult, share = recipe.name, recipe.multiplier, recipe.share
    notes += _range_notes(slaw, kappa * C[i] * rmult, m * 2 * N[i] * t_law)
    sizes = [m_["N"] for m_ in ex.get("ladder", []) if m_.get("N")]
    if sizes and not min(sizes) / 1.01 <= N[i] <= max(sizes) * 1.01:
        notes.append(f"the plan's model (N = {N[i]:.3g}) is outside the ladder's sizes [{min(sizes):.3g}, "
                     f"{max(sizes):.3g}]")
    greedy = [c for c in cands if c[2].name == "none" and c[3][0] == "greedy"]
    compare = {}
    if reachable and greedy and (sname != "greedy" or rname != "none"):
        t, accg = greedy[0][0], greedy[0][1]
        ok = accg >= cfg.target_accuracy
        compare["greedy_total_flops"] = float(t[ok].min()) if ok.any() else None
    if reachable and recipe.law and recipe.law["scale"] != 1.0:  # what the law bought over the measured budget
        point = best(goal, [c for c in cands if c[2].name == rname and c[2].law and c[2].law["scale"] == 1.0])
        compare["measured_posttrain_total_flops"] = None if point is None else float(point[0])
    laws_left = sorted({c[2].law["file"] for c in cands if c[2].law} - ({recipe.law["file"]} if recipe.law else set()))
    if laws_left:
        notes.append(f"post-training laws considered ({', '.join(laws_left)}): no budget they price gave a cheaper "
                     "plan than this one")
    return Plan("accuracy", reachable, cfg.target_accuracy, float(acc), cfg.budget, cfg.queries, T, float(N[i]),
                float(D[i]), float(C[i]), float(C[i] * share), float(cfg.queries * T * 2 * N[i] * m), rname, rmult,
                sname, n, m, notes, compare, dict(recipe.law or {}))


def ladder_sizes(ex: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """(C, N, D) of the ladder's own models, for a model family with no Chinchilla fit: without a loss
    law there is no compute-optimal size to move to, so the plan picks among the models measured
    (as trained: C = 6ND) and never extrapolates to another size."""
    pts = sorted((float(m.get("C_train_6n") or m["C_train"]), float(m["N"])) for m in ex.get("ladder", [])
                 if m.get("N") and (m.get("C_train_6n") or m.get("C_train")))
    if not pts:
        raise InputError("no chinchilla fit in --fits and no ladder model with N in the exchange fit; make a "
                         f"chinchilla fit with `{MAKE_CHINCHILLA.format(dir='FITS')}`")
    C, N = np.array([c for c, _ in pts]), np.array([n for _, n in pts])
    why = (f"no chinchilla fit in the folder: the plan chooses among the ladder's {len(pts)} models as trained "
           "(their N and D), not a compute-optimal size, and does not extrapolate to other sizes")
    return C, N, C / (6 * N), why


def _range_notes(law: Any, c_train: float, c_test: float) -> list[str]:
    notes = []
    for name, v in (("pretraining", c_train), ("test-time", c_test)):
        lo, hi = law.range_.get("C_train" if name == "pretraining" else "C_test", [v, v])
        if v > hi * 1.01 or v < lo / 1.01:
            far = v / hi if v > hi else lo / v
            notes.append(f"the plan's {name} FLOPs ({v:.3g}, exact) lie {far:.3g}x outside the ladder's "
                         f"[{lo:.3g}, {hi:.3g}]: the accuracy is an extrapolation of the exchange law")
    return notes


def explain(p: Plan) -> list[str]:
    """The plan in plain words."""
    from scalelab.laws.render import fmt

    what = "accuracy" if p.mode == "accuracy" else "loss"
    out = []
    if not p.reachable and math.isnan(p.predicted):
        out.append(f"the budget of {fmt(p.budget)} FLOPs cannot serve {fmt(p.queries)} queries of "
                   f"{fmt(p.tokens_per_query)} tokens with any model considered; no {what} is reachable within it. "
                   "The cheapest plan considered:")
    elif not p.reachable:
        out.append(f"the budget of {fmt(p.budget)} FLOPs cannot reach the target {what} {fmt(p.target)}; "
                   f"the best reachable {what} within it is {fmt(p.predicted)}, with this plan:")
    else:
        out.append(f"plan for {fmt(p.budget)} FLOPs, {fmt(p.queries)} queries of {fmt(p.tokens_per_query)} tokens: "
                   f"predicted {what} {fmt(p.predicted)} (target {fmt(p.target)})")
    out.append(f"  model      N = {fmt(p.N)} parameters trained on D = {fmt(p.D)} tokens "
               f"({fmt(p.D / p.N)} tokens per parameter)")
    if p.mode == "accuracy":
        by_law = ", as its post-training law predicts" if p.posttrain_law.get("scale", 1.0) != 1.0 else ""
        rec = ("none" if p.recipe == "none" else
               f"{p.recipe} (worth {fmt(p.recipe_multiplier)}x its pretraining FLOPs on the ladder{by_law})")
        out.append(f"  post-train {rec}")
        out += law_lines(p.posttrain_law, fmt) if p.posttrain_law else []
        out.append(f"  test time  {p.strategy}" + (f", n = {p.n}" if p.strategy != "greedy" else "")
                   + f" ({fmt(p.test_multiplier)}x the FLOPs of one greedy answer)")
    tot = p.total_flops
    parts = [("training", p.train_flops), ("post-training", p.posttrain_flops),
             (f"serving {fmt(p.queries)} queries", p.serving_flops)]
    out.append("  FLOPs      " + "; ".join(f"{k} {fmt(v)} ({100 * v / tot:.1f}%)" for k, v in parts)
               + f"; total {fmt(tot)} of the {fmt(p.budget)} budget")
    if math.isnan(p.predicted):
        return out + [f"  note       {n}" for n in p.notes]
    serving = p.serving_flops / tot if tot > 0 else 0.0
    thinks = p.mode == "accuracy" and p.strategy != "greedy"
    if 0.2 <= serving < 0.5:
        why = (f"training and serving are of the same order (serving {100 * serving:.0f}%): a smaller model would "
               "save serving FLOPs but need more training to reach the target")
        if thinks:
            why += f"; {p.strategy} at n = {p.n} was cheaper than the pretraining it stands in for"
    elif serving >= 0.5:
        why = "serving dominates: every parameter is paid for again on each of the Q x T served tokens, so "
        why += ("the plan trains a model smaller than Chinchilla's optimum for the same loss, on more tokens per "
                "parameter (Sardana et al. 2024)" if p.mode == "loss" else
                "the plan keeps the model (and its training budget) as small as the target allows")
        if thinks:
            why += (f"; {p.strategy} at n = {p.n} multiplies each answer's cost by {fmt(p.test_multiplier)} and was "
                    "still cheaper than a larger model")
    elif p.mode == "loss":
        why = ("training dominates: with this few queries Sardana et al.'s inference-aware model stays close to "
               "Chinchilla's compute-optimal one")
    else:
        own = any(n.startswith("no chinchilla fit") for n in p.notes)
        why = ("training dominates: there are too few queries for serving to matter, so the cheapest way to the "
               "target is to put the budget into pretraining, " + ("in the cheapest of the ladder's models that "
               "reaches it" if own else "split by Chinchilla's compute-optimal rule"))
        if thinks:
            why += (f", with {p.strategy} at n = {p.n}, whose extra test-time FLOPs were cheaper than the "
                    "pretraining they stand in for")
    out.append("  why        " + why + ".")
    g = p.compare.get("greedy_total_flops", "absent")
    if g is None:
        out.append("  without post-training or test-time compute no model in the plan's range reaches the target")
    elif g != "absent":
        out.append(f"  greedy decoding without post-training would need {fmt(g)} FLOPs ({fmt(g / tot)}x this plan)")
    mp = p.compare.get("measured_posttrain_total_flops", "absent")
    if mp != "absent":
        out.append(f"  {p.recipe} at its measured post-training budget " + (
            "reaches the target in no plan within the budget" if mp is None else
            f"would need {fmt(mp)} FLOPs ({fmt(mp / tot)}x this plan)"))
    if "saving" in p.compare:
        out.append(f"  against the Chinchilla-optimal model at the same loss: {100 * p.compare['saving']:.2f}% "
                   "fewer FLOPs")
    out += [f"  note       {n}" for n in p.notes]
    return out
