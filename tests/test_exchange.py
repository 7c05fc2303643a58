"""Exchange rates (issue 7): the train <-> test law recovers a known rate from synthetic records,
the post-train <-> pretrain multiplier reads a known ladder, and `scalelab exchange` refuses bad
runs dirs with one line and exit code 2. CPU only, seconds."""
from __future__ import annotations

import json
import re
import math

import numpy as np
import pytest
from scipy.special import expit

from scalelab.errors import InputError
from scalelab.laws.exchange import ExchangeLaw, LadderCurve
from scalelab.records import RunRecord, write_record
from tests.test_cli_fit import assert_one_line_error, run

B, C = 1.2, 0.9          # true slopes: 10x pretraining = 10^(B/C) = 21.5x test-time FLOPs
INTERCEPT = {1: 1.0, 2: -0.5, 3: -1.5}
CHANCE = 0.01
MODELS = {"small": 1e11, "mid": 4e11, "large": 1.6e12}
BUDGETS = (1, 2, 4, 8, 16)
PROBLEMS = 200


def true_acc(c_train: float, c_test: float, d: int, slope_c: float = C) -> float:
    z = INTERCEPT[d] + B * (math.log10(c_train) - 11.5) + slope_c * (math.log10(c_test) - 7.5)
    return CHANCE + (1 - CHANCE) * float(expit(z))


def synthetic_points(seed: int = 0, slope_c: float = C):
    """Per-problem results drawn from the true law, on the same problems for every point of a difficulty."""
    rng = np.random.default_rng(seed)
    rows = []
    for d in INTERCEPT:
        u = rng.random(PROBLEMS)  # one latent draw per problem, shared across models and budgets
        for name, ct in MODELS.items():
            for n in BUDGETS:
                cte = 1e7 * n
                right = (u < true_acc(ct, cte, d, slope_c)).astype(float)
                rows.append(dict(model=name, C_train=ct, C_test=cte, d=d, n=n, per_problem=right.tolist()))
    return rows


def fit_rows(rows, **hyper):
    X = np.array([[r["C_train"], r["C_test"]] for r in rows])
    y = np.array([np.mean(r["per_problem"]) for r in rows])
    return ExchangeLaw(**hyper).fit(X, y, difficulty=[r["d"] for r in rows], weight=[PROBLEMS] * len(rows),
                                    chance=[CHANCE] * len(rows), per_problem=[r["per_problem"] for r in rows])


def test_recovers_a_known_exchange_rate():
    law = fit_rows(synthetic_points(), bootstrap=100)
    truth = 10 ** (B / C)
    assert law.converged_
    assert law.params_["multiplier"] == pytest.approx(truth, rel=0.3)
    lo, hi = law.ci_["multiplier"]
    assert lo < truth < hi
    assert law.params_["b"] == pytest.approx(B, rel=0.15) and law.params_["c"] == pytest.approx(C, rel=0.15)
    assert law.replaces_ is True
    # iso-accuracy: at the rate, 10x pretraining and 1/multiplier x test-time FLOPs predict the same accuracy
    a = law.predict([[1e11, 1e8]], difficulty=2)
    b = law.predict([[1e12, 1e8 / law.params_["multiplier"]]], difficulty=2)
    assert a == pytest.approx(b, abs=1e-9)


def test_no_test_time_effect_means_no_replacement():
    law = fit_rows(synthetic_points(seed=1, slope_c=0.0), bootstrap=100)
    assert law.replaces_ is False
    assert law.ci_["multiplier"][1] == math.inf  # some resamples have c <= 0: the interval is open above


def test_json_round_trip_keeps_predictions_and_infinities():
    law = fit_rows(synthetic_points(), bootstrap=20)
    back = ExchangeLaw.from_dict(json.loads(json.dumps(law.to_dict())))
    X = [[2e11, 3e7], [9e11, 1e8]]
    assert np.allclose(back.predict(X), law.predict(X)) and back.difficulties_ == [1, 2, 3]
    flat = fit_rows(synthetic_points(seed=1, slope_c=0.0), bootstrap=20)
    doc = json.loads(json.dumps(flat.to_dict()))
    assert ExchangeLaw.from_dict(doc).ci_["multiplier"][1] == math.inf


def test_bad_input_is_one_line():
    with pytest.raises(InputError, match="at least 2 pretraining budgets"):
        ExchangeLaw(bootstrap=0).fit([[1e11, 1e6], [1e11, 2e6], [1e11, 4e6], [1e11, 8e6]], [0.1, 0.2, 0.3, 0.4])
    with pytest.raises(InputError, match=r"accuracy must be in \[0, 1\]"):
        ExchangeLaw(bootstrap=0).fit([[1e11, 1e6], [2e11, 2e6], [4e11, 1e6], [8e11, 2e6]], [0.1, 1.2, 0.3, 0.4])


def test_ladder_curve_worth():
    # greedy accuracy rises 0.1 per doubling of pretraining FLOPs: 0.2 at 1e11 ... 0.5 at 8e11
    C = np.array([1e11, 2e11, 4e11, 8e11])
    curve = LadderCurve(bootstrap=50).fit(C, [0.2, 0.3, 0.4, 0.5], se=[0.01] * 4)
    w = curve.worth(2e11, 0.3, 0.4)           # a child of the 2e11 model gaining 0.1 is worth one doubling
    assert w["multiplier"] == pytest.approx(2.0) and w["where"] == "inside"
    assert w["ci95"][0] < 2.0 < w["ci95"][1]
    w = curve.worth(2e11, 0.31, 0.36)         # anchored at the ladder: only the gain (+0.05) counts
    assert w["multiplier"] == pytest.approx(2 ** 0.5)
    assert curve.worth(4e11, 0.4, 0.7)["where"] == "above"      # beyond the ladder: a lower bound
    # a non-monotone ladder is made monotone (pool adjacent violators) before it is inverted
    bumpy = LadderCurve(bootstrap=0).fit(C, [0.2, 0.4, 0.3, 0.5])
    assert np.all(np.diff(bumpy.acc_) >= 0)


# ---- from a runs directory, through the command line --------------------------------------------
def write_runs(root, *, models=MODELS, child=True):
    """Test-time records of a synthetic ladder (cot at n = 1 and majority at every n) and one SFT child."""
    for r in synthetic_points():
        if r["model"] not in models:
            continue
        ct, name = r["C_train"], r["model"]
        for strat in (("cot", "majority") if r["n"] == 1 else ("majority",)):
            rid = f"{name}-{strat}-d{r['d']}-n{r['n']}"
            rec = RunRecord(run_id=rid, parent_id=name, phase="testtime", technique=strat, task="testbed",
                            n_params_nonembedding=int(ct ** 0.5), tokens=int(ct ** 0.5 / 6),
                            flops={"pretrain": ct, "inference": r["C_test"] * PROBLEMS})
            # greedy records carry the true law's accuracy, so that the ladder curve is known exactly
            greedy = strat == "cot"
            acc = true_acc(ct, r["C_test"], r["d"]) if greedy else float(np.mean(r["per_problem"]))
            rec.complete(n=r["n"], steps=r["d"], accuracy=acc, accuracy_se=0.03, chance=CHANCE,
                         kind="single" if greedy else "parallel", flops_per_question=r["C_test"],
                         problems=PROBLEMS, **({} if greedy else {"per_problem": r["per_problem"]}))
            write_record(root / name / strat / f"d{r['d']}" / rid, rec)
    if child:  # an SFT child of "small" as accurate as "mid" at every difficulty: worth 4x pretraining
        acc = {str(d): true_acc(MODELS["mid"], 1e7, d) for d in INTERCEPT}
        par = {str(d): true_acc(MODELS["small"], 1e7, d) for d in INTERCEPT}
        rec = RunRecord(run_id="small-sft", parent_id="small", phase="posttrain", technique="sft", task="testbed",
                        flops={"pretrain": MODELS["small"], "posttrain": 2e10}, parent_flops={"pretrain": MODELS["small"]})
        rec.complete(accuracy=float(np.mean(list(acc.values()))), parent_accuracy=float(np.mean(list(par.values()))),
                     accuracy_by_difficulty=acc, parent_accuracy_by_difficulty=par,
                     accuracy_se_by_difficulty={d: 0.02 for d in acc}, chance_by_difficulty={d: CHANCE for d in acc})
        write_record(root / "post" / "small-sft", rec)


def test_exchange_verb_end_to_end(tmp_path, capsys):
    write_runs(tmp_path / "runs")
    out, fig = tmp_path / "fits" / "exchange.json", tmp_path / "frontier.png"
    code, stdout, err = run(["exchange", tmp_path / "runs", "--bootstrap", "50", "--out", out, "--plot", fig], capsys)
    assert code == 0, err
    assert "majority" in stdout and "cannot replace" in stdout and "post-train <-> pretrain" in stdout
    doc = json.loads(out.read_text())
    pooled = doc["strategies"]["majority"]["pooled"]
    assert pooled["params"]["multiplier"] == pytest.approx(10 ** (B / C), rel=0.35)
    assert doc["strategies"]["cot"]["pooled"]["params"]["c"] == 0.0   # greedy: a law in C_train only
    assert set(doc["strategies"]["majority"]["by_difficulty"]) == {"1", "2", "3"}
    mean = [r for r in doc["posttrain"] if r["difficulty"] == "mean"]
    assert len(mean) == 1 and mean[0]["multiplier"] == pytest.approx(4.0, rel=1e-6)
    assert mean[0]["ci95"][0] < 4.0 < mean[0]["ci95"][1] and mean[0]["where"] == "inside"
    assert doc["planner"]["multipliers"]["majority"]["16"] == pytest.approx(16.0)
    assert doc["planner"]["posttrain"]["sft"][0]["posttrain_share"] == pytest.approx(0.2)
    assert len(doc["replacement"]) == 3 * 2 and all("replaced" in r for r in doc["replacement"])
    assert fig.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_models_below_the_compute_frontier_are_left_out(tmp_path, capsys):
    write_runs(tmp_path / "runs", child=False)
    for d in INTERCEPT:  # a model with more pretraining FLOPs than "mid" that is right less often than "small"
        rec = RunRecord(run_id=f"bad-cot-d{d}", parent_id="bad", phase="testtime", technique="cot", task="testbed",
                        n_params_nonembedding=900_000, tokens=150_000, flops={"pretrain": 8e11})
        rec.complete(n=1, steps=d, accuracy=0.0, accuracy_se=0.0, chance=CHANCE, kind="single",
                     flops_per_question=1e7, problems=PROBLEMS)
        write_record(tmp_path / "runs" / "bad" / rec.run_id, rec)
    code, out, err = run(["exchange", tmp_path / "runs", "--bootstrap", "0", "--json"], capsys)
    doc = json.loads(out)
    assert code == 0 and [m["model"] for m in doc["ladder"]] == ["small", "mid", "large"]
    assert any("below the compute frontier): bad" in n for n in doc["notices"])
    code, out, err = run(["exchange", tmp_path / "runs", "--bootstrap", "0", "--json", "--all-models"], capsys)
    assert code == 0 and len(json.loads(out)["ladder"]) == 4


def test_exchange_verb_bad_input(tmp_path, capsys):
    code, _, err = run(["exchange", tmp_path / "nope"], capsys)
    assert_one_line_error(code, err, "no such runs directory")
    write_runs(tmp_path / "one", models={"small": MODELS["small"]}, child=False)
    code, _, err = run(["exchange", tmp_path / "one", "--bootstrap", "0"], capsys)
    assert_one_line_error(code, err, "1 pretrained model", "scalelab testtime")
    code, _, err = run(["exchange", tmp_path / "one", "--bootstrap", "-1"], capsys)
    assert_one_line_error(code, err, "--bootstrap")


def test_report_shows_exchange_rates_and_the_plan(tmp_path):
    from scalelab.pipeline.report import build_report

    root = tmp_path / "runs"
    write_runs(root)
    page = build_report(root, tmp_path / "r.html", bootstrap=8, n_jobs=1).read_text()
    assert 'id="exchange"' in page and "test-time multiplier per 10x pretraining" in page
    assert "<td>sft</td>" in page and 'id="plan"' in page
    assert "The planner needs a Chinchilla fit of pretraining records" in page  # no pretraining records here
    assert page.count("<img ") == 3  # post-training, test-time, the iso-accuracy frontier
    # with pretraining records on an exact Chinchilla law the planner answers the default question
    rng = np.random.default_rng(0)
    for c in (1e11, 1e12, 1e13):
        for j, n in enumerate(np.geomspace(c ** 0.5 / 400, c ** 0.5 / 25, 5)):
            n, d = int(n), int(c / (6 * n))
            loss = (0.3 + 40 / n ** 0.34 + 200 / d ** 0.4) * (1 + 0.003 * rng.standard_normal())
            rec = RunRecord(run_id=f"p{j}-{c:.0e}", phase="pretrain", technique="pretrain", task="testbed",
                            n_params_nonembedding=n, tokens=d, flops={"pretrain": 6.0 * n * d})
            write_record(root / "sweep" / rec.run_id, rec.complete(loss=loss, entropy_floor=0.3))
    page = build_report(root, tmp_path / "r2.html", bootstrap=8, n_jobs=1).read_text()
    assert 'id="plan"' in page and ("plan for " in page or "cannot reach" in page)
    assert "scalelab plan --budget" in page


def test_headlines_give_a_rate_only_where_it_is_reached_and_pinned_down():
    """A strategy that never lifts a smaller model to its neighbour's greedy accuracy is said not to
    replace 10x pretraining; a wide interval is not printed as a rate; the numbers stay in the doc."""
    from scalelab.laws.exchange_tables import headlines

    def doc(best, ci):
        rows = [{"large_accuracy": 0.5, "by_strategy": {"majority": {"best_accuracy": b, "max_n": 16}}} for b in best]
        pooled = {"params": {"multiplier": 30.0}, "ci95": {"multiplier": ci}, "replaces": True}
        return {"strategies": {"cot": {}, "majority": {"pooled": pooled, "oracle": False}}, "replacement": rows}

    never = headlines(doc([0.3, 0.45], [10.0, 90.0]))["majority"]
    assert never["text"] == "majority does not replace 10x pretraining within n <= 16" and never["reached"] == 0
    pinned = headlines(doc([0.3, 0.55], [10.0, 90.0]))["majority"]
    assert pinned["pinned"] and pinned["text"].startswith("majority: 10x pretraining is worth x30")
    assert pinned["text"].endswith("it reaches the next model in 1 of 2 cases within n <= 16")  # the rest fell short
    assert "reaches" not in headlines(doc([0.6, 0.55], [10.0, 90.0]))["majority"]["text"]  # reached in every case
    wide = headlines(doc([0.3, 0.55], [7.6e7, 8.7e10]))["majority"]
    assert not wide["pinned"] and "reaches the next model in 1 of 2 cases" in wide["text"]
    assert "not pinned down" in wide["text"]


def test_exchange_prints_headlines(tmp_path, capsys):
    write_runs(tmp_path / "runs")
    code, stdout, err = run(["exchange", tmp_path / "runs", "--bootstrap", "20"], capsys)
    assert code == 0, err
    assert re.search(r"^headline: majority", stdout, re.M), stdout
