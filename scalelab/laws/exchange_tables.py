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

A user's own models (plain Hugging Face directories, no scalelab record) get their pretraining
compute from `pretraining=CSV` (`laws.pretraining_csv`: model, N, and D or C); a model in the CSV
takes its row, one without a row its record's `flops.pretrain`, and one with neither is an error
naming it. The records must be of one task (`task=` picks one when the folder holds several).

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
from scalelab.laws.pretraining_csv import CONVENTION
from scalelab.tables import load_runs

GREEDY = "cot"
ORACLES = ("coverage",)  # pass@n: right if any sample is right, which needs the exact verifier
MAKE = "scalelab testtime --model RUN --strategies cot,majority --n 1,2,4,8,16 --runs-dir DIR"


def testtime_table(runs_dir: str | Path, *, pretraining: str | Path | None = None,
                   task: str | None = None) -> tuple[pd.DataFrame, list[str]]:
    """One row per complete test-time evaluation point of a pretrained (not post-trained) model."""
    from scalelab.laws.pretraining_csv import PretrainingTable

    runs = load_runs(runs_dir)
    table = PretrainingTable.read(pretraining) if pretraining is not None else None
    records = _one_task(runs.records, task, runs_dir)
    rows, posttrained, seen, copies, bare, used = [], set(), set(), 0, set(), set()
    for r in records:
        m = r.metrics
        if r.run_id in seen:  # the same evaluation (its id hashes its config) under two folders: count it once
            copies += 1
            continue
        seen.add(r.run_id)
        if r.phase != "testtime" or m.get("kind") == "adaptive" or "flops_per_question" not in m:
            continue
        if "steps" not in m or m.get("accuracy") is None:
            continue
        if r.flops.get("posttrain"):
            posttrained.add(r.parent_id)
            continue
        row = table.find((r.config or {}).get("model"), r.parent_id) if table is not None else None
        if row is not None:
            used.add(row.model)
            C, C6, N, D = row.C, row.C_6n, row.N, row.D
        elif r.flops.get("pretrain"):
            N, D = r.n_params_nonembedding, r.tokens
            C, C6 = float(r.flops["pretrain"]), 6.0 * N * D if N and D else math.nan
        else:
            bare.add((r.parent_id, (r.config or {}).get("model")))
            continue
        rows.append({"model": r.parent_id, "task": r.task or "testbed", "C_train": float(C), "C_train_6n": C6,
                     "N": N, "D": D,
                     "strategy": r.technique, "kind": m.get("kind"), "difficulty": int(m["steps"]),
                     "n": int(m.get("n") or 1), "C_test": float(m["flops_per_question"]),
                     "accuracy": float(m["accuracy"]), "se": float(m.get("accuracy_se") or 0.0),
                     "problems": int(m.get("problems") or len(m.get("per_problem") or []) or 1),
                     "chance": float(m.get("chance") or 0.0), "per_problem": m.get("per_problem")})
    if bare and table is not None:
        pid, spec = sorted(bare, key=str)[0]
        raise InputError(f"--pretraining {table.path}: no row for model {spec or pid!r} (policy {pid}, "
                         f"{len(bare)} model(s) without one); add a line model,N,D for it")
    notices = [f"left out of the ladder (no pretraining FLOPs; give --pretraining CSV): {p}" for p, _ in sorted(bare)]
    notices += [f"left out of the ladder (post-trained): {p}" for p in sorted(posttrained)]
    if table is not None:
        notices += [f"--pretraining row without test-time records: {r.model}" for r in table.rows if r.model not in used]
    notices += [f"{copies} records found twice (same run id in another folder) counted once"] if copies else []
    notices += [f"run left out: {p}" for p in runs.problems]
    return pd.DataFrame(rows), notices


def _one_task(records: list[Any], task: str | None, runs_dir: str | Path) -> list[Any]:
    """The test-time records of one task: a ladder across tasks would compare unlike accuracies."""
    tt = [r for r in records if r.phase == "testtime"]
    tasks = sorted({r.task or "testbed" for r in tt})
    if task is not None:
        task = task if task in tasks else Path(task).name  # a task file's records carry its file name
        if task not in tasks:
            raise InputError(f"--task {task}: no test-time records of it under {runs_dir}; tasks found: "
                             f"{', '.join(tasks) or 'none'}")
        return [r for r in records if r.phase != "testtime" or (r.task or "testbed") == task]
    if len(tasks) > 1:
        raise InputError(f"{runs_dir}: test-time records of {len(tasks)} tasks ({', '.join(tasks)}); exchange rates "
                         "compare models on one task: give --task NAME")
    return records


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
            every = table[(table.difficulty == d) & (table.model == small)]  # oracles too, for their headline
            row["by_strategy"] = {str(k): {"best_accuracy": float(g.accuracy.max()), "max_n": int(g.n.max())}
                                  for k, g in every.groupby("strategy")}
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
    # a parent that is not a scalelab run has no pretraining FLOPs in its children's records: where it
    # is a model of the ladder, its FLOPs are the ladder's (from --pretraining)
    on_ladder = lad.set_index("model").C_train
    post = post[post.task == table.task.iloc[0]] if "task" in table else post
    out = []
    for run, rows in post[post.difficulty != "mean"].groupby("run_id"):
        r0 = rows.iloc[0].copy()
        if not (r0.pretrain_flops > 0):
            r0["pretrain_flops"] = float(on_ladder.get(r0.parent_id, math.nan))
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


def measure_exchange(runs_dir: str | Path, *, bootstrap: int = 200, seed: int = 0, on_frontier: bool = True,
                     pretraining: str | Path | None = None, task: str | None = None) -> dict[str, Any]:
    """The exchange document of a runs directory (see module docstring); `on_frontier` keeps only
    the models on the compute frontier (`frontier`); `pretraining` and `task` as `testtime_table`."""
    table, notices = testtime_table(runs_dir, pretraining=pretraining, task=task)
    if on_frontier and not table.empty:
        table, dropped = frontier(table)
        notices += dropped
    if table.empty or table.model.nunique() < 2:
        found = 0 if table.empty else table.model.nunique()
        bare = [n.split(": ", 1)[1] for n in notices if n.startswith("left out of the ladder (no pretraining")]
        below = [n.split(": ", 1)[1] for n in notices if "below the compute frontier" in n]
        hint = (f"; without pretraining FLOPs: {', '.join(bare)} (give --pretraining CSV with model,N,D)" if bare
                else f"; below the compute frontier (greedy accuracy no better than a cheaper model's): "
                     f"{', '.join(below)} (--all-models keeps them)" if below
                else f"; make them with `{MAKE}` for each model")
        raise InputError(f"{runs_dir}: test-time records of {found} pretrained model(s); exchange rates need 2 or more "
                         f"of different pretraining FLOPs{hint}")
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
            "frontier": on_frontier, "task": str(table.task.iloc[0]),
            "pretraining": {"file": str(pretraining), "convention": CONVENTION} if pretraining is not None else None,
            "ladder": lad.replace({np.nan: None}).to_dict(orient="records"), "strategies": strategies,
            "replacement": replacement(table), "posttrain": post, "planner": plan,
            "reach": reach(lad, strategies), "notices": notices}


def reach(lad: pd.DataFrame, strategies: dict[str, Any]) -> dict[str, Any]:
    """What the exchange law can and cannot say from this ladder, in numbers and in words."""
    k = len(lad)
    lo, hi = float(lad.C_train.min()), float(lad.C_train.max())
    span = math.log10(hi / lo) if lo > 0 else 0.0
    words = [f"{k} models over {span:.2f} decades of pretraining FLOPs ({lo:.3g} to {hi:.3g}): accuracy between "
             "them is interpolated along the fitted sigmoid; beyond them it is an extrapolation, trustworthy at "
             f"most about as far again as the ladder spans (to ~{hi * 10 ** span:.3g}) and only if the law's "
             "shape holds there"]
    if k < 3:
        words.append("with 2 models the pretraining slope b is fixed by two points: nothing checks the log-linear "
                     "shape in C_train, and the interval comes from problem resampling only")
    elif k < 5:
        words.append(f"with {k} models the slope b rests on {k} pretraining points (one intercept per difficulty "
                     "on top): the shape is checked by at most a few degrees of freedom, so a bend (a model "
                     "trained differently, another architecture) moves b and the exchange rate with it")
    words.append("the test-time slope c is measured within each model's budgets n (one pool subsampled); budgets "
                 "beyond the largest n measured are extrapolated, and the ceiling is taken as 1")
    words.append("post-training multipliers are read off this ladder's greedy accuracy: a child beyond the "
                 "largest model's accuracy gets a lower bound only, and every multiplier assumes the ladder's "
                 "models differ by pretraining compute alone (here also by architecture and data, if they do)")
    return {"models": k, "C_train_range": [lo, hi], "decades": span, "statements": words}


def headlines(doc: dict[str, Any], *, max_ratio: float = 100.0) -> dict[str, dict[str, Any]]:
    """Per strategy, what can honestly be said of "10x pretraining is worth x test-time FLOPs":
    the multiplier only where the strategy lets a smaller model reach its larger neighbour's greedy
    accuracy somewhere on the ladder, the fit says c > 0, and the 95% interval spans at most
    `max_ratio` (hi/lo); "does not replace" where it never reaches it within the budgets measured;
    otherwise how often it reached it and that the rate is not pinned down. Numbers stay in `doc`."""
    from scalelab.laws.render import fmt

    out = {}
    for s, e in doc["strategies"].items():
        if s == GREEDY:
            continue
        rows = [r for r in doc["replacement"] if s in r.get("by_strategy", {})]
        reached = sum(r["by_strategy"][s]["best_accuracy"] >= r["large_accuracy"] for r in rows)
        max_n = max((r["by_strategy"][s]["max_n"] for r in rows), default=0)
        p = e["pooled"]
        mult = (p.get("params") or {}).get("multiplier")
        lo, hi = ((p.get("ci95") or {}).get("multiplier") or [None, None])[:2]
        pinned = (p.get("replaces") is True and mult is not None and lo is not None and hi is not None
                  and 0 < _num(lo) and _num(hi) < math.inf and _num(hi) / _num(lo) <= max_ratio)
        if rows and not reached:
            text = f"{s} does not replace 10x pretraining within n <= {max_n}"
        elif pinned and reached:
            text = f"{s}: 10x pretraining is worth x{fmt(mult)} [{fmt(lo)}, {fmt(hi)}] test-time FLOPs"
            if reached < len(rows):  # the rate is fitted, but the measured budgets mostly fall short of it
                text += f"; it reaches the next model in {reached} of {len(rows)} cases within n <= {max_n}"
        else:
            text = (f"{s} reaches the next model in {reached} of {len(rows)} cases within n <= {max_n}; the rate is "
                    f"not pinned down (x{show(mult)}, 95% [{show(lo)}, {show(hi)}])")
        out[s] = {"reached": int(reached), "cases": len(rows), "max_n": int(max_n), "pinned": bool(pinned),
                  "text": text + (" (oracle)" if e["oracle"] else "")}
    return out


def summary_lines(doc: dict[str, Any]) -> list[str]:
    """The exchange document as the command line prints it."""
    from scalelab.laws.render import fmt

    lines = [f"ladder: {len(doc['ladder'])} pretrained models, C_train "
             + ", ".join(fmt(m["C_train"]) for m in doc["ladder"])
             + (" FLOPs (exact, or 6ND from --pretraining)" if doc.get("pretraining") else " FLOPs (exact)")]
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
    lines += [f"headline: {h['text']}" for h in headlines(doc).values()]
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
    if doc.get("pretraining"):
        lines.append(f"pretraining FLOPs of models without a scalelab record: {doc['pretraining']['convention']}, "
                     f"from {doc['pretraining']['file']}")
    lines += [f"reach: {w}" for w in (doc.get("reach") or {}).get("statements", [])]
    return lines + [f"note: {n}" for n in doc["notices"]]


def _num(v: Any) -> float:
    return math.nan if v is None else float(v)  # float("inf") reads the JSON form of infinity


def show(v: Any) -> str:
    """A number for the summary: 'inf' for infinity (test-time compute buys nothing), '-' for none."""
    from scalelab.laws.render import fmt

    x = _num(v)
    return "inf" if x == math.inf else fmt(x)
