"""From a runs directory to exchange rates: the tables `scalelab.laws.exchange` fits, and the
exchange document (`scalelab exchange RUNS --out FITS/exchange.json`) that the report shows and
the planner reads.

    table, notices = testtime_table("runs/x7")          # one row per test-time record of the ladder
    doc = measure_exchange("runs/x7", bootstrap=200)     # fits, replacement checks, post-training worth

The ladder is every pretrained model with test-time records under the folder (`parent_id`),
placed by its pretraining FLOPs (`flops.pretrain`, exact, carried into each test-time record);
models that were post-trained are left out of it (their records carry `flops.posttrain`), and by
default so are models below the compute frontier (`frontier`), each named in a notice.
Post-training children are read with `scalelab.tables.posttrain_table`.

What the document holds, per strategy: the pooled law (one intercept per difficulty, shared
slopes) and one law per difficulty; greedy decoding (`cot`) gets a law in C_train only. Then
`replacement`: for each difficulty and each pair of neighbouring models, whether the smaller
model's best accuracy over every strategy and n (oracles such as `coverage`, which needs the
true verifier, left out) reaches the larger model's greedy accuracy, and at what test-time
multiplier. Then `posttrain`: each child's pretraining-FLOPs multiplier at equal accuracy. Then
`planner`: what the planner needs to cost a plan (see `scalelab.pipeline.plan`).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from scalelab import __version__
from scalelab.errors import InputError
from scalelab.laws.exchange import ExchangeLaw, LadderCurve, _isotonic
from scalelab.tables import load_runs

GREEDY = "cot"
ORACLES = ("coverage",)  # pass@n: right if any sample is right, which needs the exact verifier
MAKE = "scalelab testtime --model RUN --strategies cot,majority --n 1,2,4,8,16 --runs-dir DIR"


def testtime_table(runs_dir: str | Path) -> tuple[pd.DataFrame, list[str]]:
    """One row per complete test-time evaluation point of a pretrained (not post-trained) model."""
    runs = load_runs(runs_dir)
    rows, posttrained, seen, copies = [], set(), set(), 0
    for r in runs.records:
        m = r.metrics
        if r.run_id in seen:  # the same evaluation (its id hashes its config) under two folders: count it once
            copies += 1
            continue
        seen.add(r.run_id)
        if r.phase != "testtime" or m.get("kind") == "adaptive" or "flops_per_question" not in m:
            continue
        if "steps" not in m or m.get("accuracy") is None or not r.flops.get("pretrain"):
            continue
        if r.flops.get("posttrain"):
            posttrained.add(r.parent_id)
            continue
        N, D = r.n_params_nonembedding, r.tokens
        rows.append({"model": r.parent_id, "C_train": float(r.flops["pretrain"]),
                     "C_train_6n": 6.0 * N * D if N and D else math.nan, "N": N, "D": D,
                     "strategy": r.technique, "kind": m.get("kind"), "difficulty": int(m["steps"]),
                     "n": int(m.get("n") or 1), "C_test": float(m["flops_per_question"]),
                     "accuracy": float(m["accuracy"]), "se": float(m.get("accuracy_se") or 0.0),
                     "problems": int(m.get("problems") or len(m.get("per_problem") or []) or 1),
                     "chance": float(m.get("chance") or 0.0), "per_problem": m.get("per_problem")})
    notices = [f"left out of the ladder (post-trained): {p}" for p in sorted(posttrained)]
    notices += [f"{copies} records found twice (same run id in another folder) counted once"] if copies else []
    notices += [f"run left out: {p}" for p in runs.problems]
    return pd.DataFrame(rows), notices


def frontier(table: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Only the models on the compute frontier: greedy accuracy (mean over difficulties) above that
    of every model with fewer pretraining FLOPs. Jones (2021) reads exchange rates off the
    frontier, the best agent at each compute; a dominated model (here: one trained with a learning
    rate too high for its size) would make pretraining look worthless."""
    g = table[table.strategy == GREEDY]
    if g.empty:
        return table, [f"every model kept: the compute frontier is ranked by greedy accuracy and there are no "
                       f"`{GREEDY}` records (add --strategies {GREEDY})"]
    score = g.groupby("model").agg(C=("C_train", "first"), acc=("accuracy", "mean")).sort_values("C")
    keep, best = [], -1.0
    for m, r in score.iterrows():
        if r.acc > best:
            keep.append(m)
            best = r.acc
    dropped = [m for m in score.index if m not in keep]
    return table[table.model.isin(keep)], [f"left out of the ladder (below the compute frontier): {m}" for m in dropped]


def ladder(table: pd.DataFrame) -> pd.DataFrame:
    """One row per model: C_train, N, D, and greedy accuracy per difficulty (columns acc_d<k>)."""
    models = table.groupby("model").agg(C_train=("C_train", "first"), C_train_6n=("C_train_6n", "first"),
                                        N=("N", "first"), D=("D", "first")).sort_values("C_train")
    g = table[table.strategy == GREEDY]
    for d, sub in g.groupby("difficulty"):
        models[f"acc_d{d}"] = sub.set_index("model").accuracy
    return models.reset_index()


def _fit(sub: pd.DataFrame, *, test_slope: bool, bootstrap: int, seed: int) -> dict[str, Any]:
    law = ExchangeLaw(test_slope=test_slope, bootstrap=bootstrap, seed=seed)
    pp = list(sub.per_problem) if sub.per_problem.map(lambda p: isinstance(p, list)).all() else None
    try:
        law.fit(sub[["C_train", "C_test"]].to_numpy(float), sub.accuracy.to_numpy(float),
                difficulty=sub.difficulty.to_numpy(), weight=sub.problems.to_numpy(float),
                chance=sub.chance.to_numpy(float), per_problem=pp)
    except InputError as e:
        return {"error": str(e)}
    return law.to_dict()


def replacement(table: pd.DataFrame) -> list[dict[str, Any]]:
    """Can the smaller of two neighbouring models match the larger one's greedy accuracy?"""
    out = []
    cands = table[~table.strategy.isin(ORACLES)]
    order = table.groupby("model").C_train.first().sort_values()
    for d in sorted(table.difficulty.unique()):
        at = cands[cands.difficulty == d]
        for small, large in zip(order.index[:-1], order.index[1:]):
            s, big = at[at.model == small], at[at.model == large]
            ref = big[big.strategy == GREEDY]
            if s.empty or big.empty:
                continue
            if ref.empty:  # no greedy record: the larger model's cheapest point
                ref = big.nsmallest(1, "C_test")
            ref = ref.iloc[0]
            best = s.loc[s.accuracy.idxmax()]
            noise = 2 * math.hypot(best.se, ref.se)
            row = {"difficulty": int(d), "small": small, "large": large,
                   "train_ratio": float(order[large] / order[small]), "large_strategy": ref.strategy,
                   "large_accuracy": float(ref.accuracy), "large_C_test": float(ref.C_test),
                   "small_best_accuracy": float(best.accuracy), "small_best_strategy": best.strategy,
                   "small_best_n": int(best.n), "gap": float(best.accuracy - ref.accuracy),
                   "two_se": float(noise), "replaced": bool(best.accuracy >= ref.accuracy)}
            row["already"] = bool(s[s.strategy == GREEDY].accuracy.max() >= ref.accuracy)  # no extra test time needed
            if row["replaced"] and not row["already"]:
                curve = s[s.strategy == best.strategy].sort_values("C_test")
                acc = _isotonic(curve.accuracy.to_numpy(float))
                lc = np.log10(curve.C_test.to_numpy(float))
                j = int(np.argmax(acc >= ref.accuracy))
                if j > 0 and acc[j] > acc[j - 1]:  # linear in log C_test between the two budgets around it
                    lc_j = lc[j - 1] + (ref.accuracy - acc[j - 1]) / (acc[j] - acc[j - 1]) * (lc[j] - lc[j - 1])
                else:
                    lc_j = lc[j]
                mult = 10 ** lc_j / ref.C_test
                row.update(C_test_needed=float(10 ** lc_j), test_multiplier=float(mult),
                           per_10x=float(mult ** (1 / math.log10(row["train_ratio"]))))
            out.append(row)
    return out


def posttrain_worth(runs_dir: str | Path, table: pd.DataFrame, *, bootstrap: int, seed: int) -> list[dict[str, Any]]:
    """Each post-trained child's pretraining-FLOPs multiplier at equal greedy accuracy, per difficulty
    and for the mean over the difficulties both the child and the ladder were scored on."""
    from scalelab.tables import posttrain_table

    try:
        post = posttrain_table(runs_dir)
    except InputError:
        return []
    lad = ladder(table)
    g = table[table.strategy == GREEDY]
    se = {d: lad.model.map(sub.set_index("model").se).to_numpy(float) for d, sub in g.groupby("difficulty")}
    out = []
    for run, rows in post[post.difficulty != "mean"].groupby("run_id"):
        r0 = rows.iloc[0]
        if not (r0.pretrain_flops > 0):
            continue
        rows = rows[rows.difficulty.map(lambda d: f"acc_d{d}" in lad)].dropna(subset=["parent_accuracy"])
        if rows.empty:
            continue
        cols = [f"acc_d{d}" for d in rows.difficulty]
        k = len(cols)
        cases = [(d, lad[c], se[int(d)], r.parent_accuracy, r.accuracy, r.accuracy_se)
                 for d, c, (_, r) in zip(rows.difficulty, cols, rows.iterrows())]
        mean_se = np.sqrt(sum(np.nan_to_num(se[int(d)]) ** 2 for d in rows.difficulty)) / k
        cases.append(("mean", lad[cols].mean(axis=1), mean_se,
                      rows.parent_accuracy.mean(), rows.accuracy.mean(),
                      math.sqrt(float(np.nansum(rows.accuracy_se ** 2))) / k))
        for d, acc, acc_se, par, child, child_se in cases:
            ok = acc.notna().to_numpy()
            if ok.sum() < 2:
                continue
            curve = LadderCurve(bootstrap=bootstrap, seed=seed).fit(lad.C_train[ok], acc[ok], acc_se[ok])
            # the parent's standard error is taken equal to the child's (same problems, similar accuracy)
            w = curve.worth(float(r0.pretrain_flops), float(par), float(child),
                            parent_se=float(np.nan_to_num(child_se)), child_se=float(np.nan_to_num(child_se)))
            pf, tf = float(r0.pretrain_flops), float(r0.posttrain_flops)
            out.append({"run": run, "technique": r0.technique, "parent": r0.parent_id, "difficulty": str(d),
                        "parent_accuracy": float(par), "accuracy": float(child), "pretrain_flops": pf,
                        "posttrain_flops": tf, "posttrain_share": tf / pf,
                        "saved_per_flop": (w["equivalent_C"] - pf) / tf if tf > 0 else math.nan, **w})
    return out


def planner_inputs(table: pd.DataFrame) -> dict[str, Any]:
    """Costing a plan: exact training FLOPs per 6ND FLOP, a testbed question's greedy FLOPs in
    2N-per-token units, and each strategy's cost per question as a multiple of greedy's."""
    models = table.groupby("model").first()
    kappa = float(np.nanmedian(models.C_train / models.C_train_6n))
    g = table[table.strategy == GREEDY]
    base = g if len(g) else table[table.n == table.n.min()]
    tokens = float(np.median(base.C_test / (2.0 * base.N.astype(float))))
    ref = base.groupby(["model", "difficulty"]).C_test.first()
    mult: dict[str, dict[str, float]] = {}
    for (s, n), sub in table.groupby(["strategy", "n"]):
        r = sub.set_index(["model", "difficulty"]).C_test / ref
        if r.notna().any():
            mult.setdefault(s, {})[str(int(n))] = float(np.nanmedian(r))
    return {"train_exact_per_6n": kappa, "test_tokens_2n": tokens, "multipliers": mult,
            "posttrain": {}}


def measure_exchange(runs_dir: str | Path, *, bootstrap: int = 200, seed: int = 0,
                     on_frontier: bool = True) -> dict[str, Any]:
    """The exchange document of a runs directory (see module docstring); `on_frontier` keeps only
    the models on the compute frontier (`frontier`)."""
    table, notices = testtime_table(runs_dir)
    if on_frontier and not table.empty:
        table, dropped = frontier(table)
        notices += dropped
    if table.empty or table.model.nunique() < 2:
        found = 0 if table.empty else table.model.nunique()
        raise InputError(f"{runs_dir}: test-time records of {found} pretrained model(s); exchange rates need 2 or more "
                         f"of different pretraining FLOPs; make them with `{MAKE}` for each model")
    strategies: dict[str, Any] = {}
    for s, sub in table.groupby("strategy"):
        slope = s != GREEDY
        entry = {"pooled": _fit(sub, test_slope=slope, bootstrap=bootstrap, seed=seed),
                 "by_difficulty": {str(d): _fit(sd, test_slope=slope, bootstrap=bootstrap, seed=seed)
                                   for d, sd in sub.groupby("difficulty")},
                 "oracle": s in ORACLES, "models": int(sub.model.nunique()), "points": int(len(sub))}
        strategies[s] = entry
    post = posttrain_worth(runs_dir, table, bootstrap=bootstrap, seed=seed)
    plan = planner_inputs(table)
    for row in (p for p in post if p["difficulty"] == "mean" and p["where"] == "inside"):
        plan["posttrain"].setdefault(row["technique"], []).append(
            {"multiplier": row["multiplier"], "posttrain_share": row["posttrain_share"], "run": row["run"]})
    lad = ladder(table)
    return {"law": "exchange", "scalelab": __version__, "source": str(runs_dir), "bootstrap": bootstrap, "seed": seed,
            "frontier": on_frontier,
            "ladder": lad.replace({np.nan: None}).to_dict(orient="records"), "strategies": strategies,
            "replacement": replacement(table), "posttrain": post, "planner": plan, "notices": notices}


def summary_lines(doc: dict[str, Any]) -> list[str]:
    """The exchange document as the command line prints it."""
    from scalelab.laws.render import fmt

    lines = [f"ladder: {len(doc['ladder'])} pretrained models, C_train "
             + ", ".join(fmt(m["C_train"]) for m in doc["ladder"]) + " FLOPs (exact)"]
    lines.append("train <-> test: test-time FLOPs multiplier worth 10x pretraining FLOPs (95% bootstrap interval)")
    lines.append(f"{'strategy':<12}{'steps':>6}{'multiplier':>12}  {'95% interval':<26}{'b':>7}{'c':>7}  replaces")
    for s, e in doc["strategies"].items():
        if s == GREEDY:
            continue
        for d, f in [("all", e["pooled"])] + list(e["by_difficulty"].items()):
            if "error" in f:
                lines.append(f"{s:<12}{d:>6}  not fitted: {f['error']}")
                continue
            p, ci = f["params"], f["ci95"].get("multiplier", [None, None])
            civ, mult = f"[{show(ci[0])}, {show(ci[1])}]", show(p["multiplier"])
            tag = {True: "yes", False: "no", None: "-"}[f.get("replaces")]
            lines.append(f"{s:<12}{d:>6}{mult:>12}  {civ:<26}{p['b']:>7.3f}{p['c']:>7.3f}  {tag}"
                         + ("  (oracle)" if e["oracle"] else ""))
    no = [r for r in doc["replacement"] if not r["replaced"]]
    lines.append(f"cannot replace: {len(no)} of {len(doc['replacement'])} (difficulty, neighbouring pair) cases where "
                 "the smaller model's best over every strategy and n stays below the larger one's greedy accuracy")
    for r in doc["replacement"]:
        if r["already"]:
            what = "the smaller model's greedy answer is already as accurate"
        elif r["replaced"]:
            what = f"x{fmt(r['test_multiplier'])} test-time FLOPs ({fmt(r['per_10x'])}x per 10x pretraining)"
        else:
            what = "NOT reached" + (" (within 2 se)" if -r["gap"] < r["two_se"] else "")
        lines.append(f"  d{r['difficulty']} {r['small']} ({fmt(r['small_best_accuracy'])}, {r['small_best_strategy']} "
                     f"n={r['small_best_n']}) vs {r['large']} greedy {fmt(r['large_accuracy'])}: {what}")
    if doc["posttrain"]:
        lines.append("post-train <-> pretrain: pretraining FLOPs multiplier at equal greedy accuracy "
                     "(mean over difficulties)")
        for r in (r for r in doc["posttrain"] if r["difficulty"] == "mean"):
            bound = {"above": " (at least: beyond the ladder)", "below": " (at most: below the ladder)"}.get(r["where"], "")
            lines.append(f"  {r['technique']:<22} {r['run']}: {fmt(r['parent_accuracy'])} -> {fmt(r['accuracy'])}, "
                         f"worth x{fmt(r['multiplier'])} [{fmt(r['ci95'][0])}, {fmt(r['ci95'][1])}]{bound}; "
                         f"post-training cost {fmt(100 * r['posttrain_share'])}% of the parent's pretraining")
    return lines + [f"note: {n}" for n in doc["notices"]]


def _num(v: Any) -> float:
    return math.nan if v is None else float(v)  # float("inf") reads the JSON form of infinity


def show(v: Any) -> str:
    """A number for the summary: 'inf' for infinity (test-time compute buys nothing), '-' for none."""
    from scalelab.laws.render import fmt

    x = _num(v)
    return "inf" if x == math.inf else fmt(x)
