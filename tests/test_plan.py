"""The budget planner (issue 7) on hand-made fits whose answers are known in closed form: the
training / post-training / serving split, the choice between greedy decoding and voting as the
number of queries grows, a post-training recipe, Sardana et al.'s optimum for a target loss, an
unreachable target (exit 1, the best reachable value) and bad input (exit 2, one line)."""
from __future__ import annotations

import json
import math

import pytest
from scipy.special import expit

from scalelab.laws.chinchilla import ChinchillaLaw
from scalelab.pipeline.plan import PlanConfig, explain, load_fits, make_plan
from tests.test_cli_fit import assert_one_line_error, run

CHIN = {"E": 0.3, "A": 40.0, "B": 200.0, "alpha": 0.34, "beta": 0.4}
T = 50.0        # a testbed question's greedy FLOPs in 2N units
SLOPE_B = 2.0   # greedy: acc = sigmoid(2 (log10 C_train - 12)), 0.5 at C = 1e12 (exact = 6ND here)
GRID = 10 ** (1 / 100)  # the planner's training budgets are 1% of a decade apart


def chin_law(**params) -> ChinchillaLaw:
    return ChinchillaLaw.from_dict({"law": "chinchilla", "params": {**CHIN, **params}, "converged": True})


def N_of(C: float) -> float:
    return chin_law().compute_optimal(C).N


def law_doc(a: float, b: float, c: float | None) -> dict:
    """An exchange-law fit as `ExchangeLaw.to_dict` writes it (c None: greedy, no test-time slope)."""
    return {"law": "exchange", "params": {"a[1]": a, "b": b, "c": c or 0.0, "multiplier": None, "log10_multiplier": None},
            "ci95": {}, "n_points": 10, "converged": True, "difficulties": [1], "chance": {"1": 0.0},
            "range": {"C_train": [1e10, 1e14], "C_test": [1e3, 1e12]},
            "settings": {"test_slope": c is not None, "ceiling": 1.0, "bootstrap": 0, "seed": 0}}


def majority_intercept(C_needed: float, m: float) -> float:
    """Intercept such that majority at cost multiplier m reaches 0.5 exactly at training FLOPs C_needed."""
    return -SLOPE_B * math.log10(C_needed) - math.log10(m * 2 * N_of(C_needed) * T)


def write_fits(d, *, majority: bool = False, posttrain: dict | None = None, chin: dict | None = None):
    d.mkdir(parents=True, exist_ok=True)
    (d / "chinchilla.json").write_text(json.dumps({"law": "chinchilla", "params": {**CHIN, **(chin or {})},
                                                   "converged": True}))
    strategies = {"cot": {"pooled": law_doc(-12 * SLOPE_B, SLOPE_B, None), "oracle": False, "points": 4}}
    mult = {"cot": {"1": 1.0}}
    if majority:  # n = 4 reaches 0.5 with 10x less pretraining than greedy (100x test per 10x train)
        strategies["majority"] = {"pooled": law_doc(majority_intercept(1e11, 4.0), SLOPE_B, 1.0), "oracle": False, "points": 20}
        mult["majority"] = {"4": 4.0}  # n = 4 only, so that the closed forms below cover every option
    doc = {"law": "exchange", "strategies": strategies,
           "planner": {"train_exact_per_6n": 1.0, "test_tokens_2n": T, "multipliers": mult, "posttrain": posttrain or {}}}
    (d / "exchange.json").write_text(json.dumps(doc))
    return d


def plan(fits, **kw):
    return make_plan(PlanConfig.build(**kw), load_fits(fits, need_exchange="target_accuracy" in kw))


def test_no_queries_greedy_split(tmp_path):
    p = plan(write_fits(tmp_path / "f"), budget=1e13, queries=0, target_accuracy=0.5)
    assert p.reachable and p.strategy == "greedy" and p.recipe == "none"
    assert 1e12 <= p.train_flops <= 1e12 * GRID and p.serving_flops == 0 and p.posttrain_flops == 0
    opt = chin_law().compute_optimal(p.train_flops)
    assert p.N == pytest.approx(opt.N) and p.D == pytest.approx(opt.D)
    assert p.predicted >= 0.5 and "training dominates" in "\n".join(explain(p))


@pytest.mark.parametrize("scale, winner", [(0.1, "majority"), (10.0, "greedy")])
def test_queries_decide_between_voting_and_a_larger_model(tmp_path, scale, winner):
    # greedy: train 1e12, serve 2 N(1e12) T per query; majority n = 4: train 1e11, serve 4 x 2 N(1e11) T
    extra_per_query = T * (8 * N_of(1e11) - 2 * N_of(1e12))  # voting's extra serving FLOPs per query
    q_star = (1e12 - 1e11) / extra_per_query                  # queries at which both plans cost the same
    q = scale * q_star
    p = plan(write_fits(tmp_path / "f", majority=True), budget=1e16, queries=q, tokens_per_query=T, target_accuracy=0.5)
    assert p.strategy == winner
    if winner == "majority":
        assert p.n == 4 and 1e11 <= p.train_flops <= 1e11 * GRID
        expect = 1e11 + q * T * 8 * N_of(1e11)
    else:
        assert 1e12 <= p.train_flops <= 1e12 * GRID
        expect = 1e12 + q * T * 2 * N_of(1e12)
    assert p.total_flops == pytest.approx(expect, rel=0.03)
    assert p.serving_flops == pytest.approx(q * T * 2 * p.N * p.test_multiplier)


def test_post_training_recipe_is_chosen_when_it_is_cheaper(tmp_path):
    recipe = {"sft": [{"multiplier": 4.0, "posttrain_share": 0.1, "run": "x"}]}
    p = plan(write_fits(tmp_path / "f", posttrain=recipe), budget=1e13, queries=0, target_accuracy=0.5)
    assert p.recipe == "sft" and p.recipe_multiplier == 4.0
    assert 2.5e11 <= p.train_flops <= 2.5e11 * GRID and p.posttrain_flops == pytest.approx(0.1 * p.train_flops)
    assert p.compare["greedy_total_flops"] == pytest.approx(1e12, rel=0.03)


def test_target_loss_is_sardanas_optimum(tmp_path):
    from scalelab.laws.inference import inference_optimal

    fits = write_fits(tmp_path / "f")
    p = plan(fits, budget=1e16, queries=1e4, tokens_per_query=100, target_loss=0.6)
    opt = inference_optimal(chin_law(), inference_tokens=1e6, target_loss=0.6)
    assert p.reachable and p.N == pytest.approx(opt.N) and p.D == pytest.approx(opt.D_train)
    assert p.serving_flops == pytest.approx(2 * opt.N * 1e6)
    small = plan(fits, budget=1e10, queries=1e4, tokens_per_query=100, target_loss=0.6)
    assert not small.reachable and small.predicted > 0.6 and small.total_flops <= 1e10 * (1 + 1e-9)


def test_unreachable_target_gives_the_best_reachable(tmp_path, capsys):
    fits = write_fits(tmp_path / "f")
    p = plan(fits, budget=5e11, queries=0, target_accuracy=0.5)
    best = float(expit(SLOPE_B * (math.log10(5e11) - 12)))  # the whole budget into training
    assert not p.reachable and p.predicted == pytest.approx(best) and p.train_flops == pytest.approx(5e11)
    code, out, err = run(["plan", "--budget", "5e11", "--queries", "1", "--target-accuracy", "0.5", "--fits", fits], capsys)
    one = plan(fits, budget=5e11, queries=1, target_accuracy=0.5).predicted  # serving one query costs a little
    assert one <= best
    assert code == 1 and "cannot reach the target accuracy 0.5" in out and f"best reachable accuracy within it is {one:.4g}" in out
    none = plan(fits, budget=1e13, queries=1e15, target_accuracy=0.5)  # serving alone is over the budget
    assert not none.reachable and math.isnan(none.predicted) and none.notes[0].startswith("nothing fits")
    code, out, _ = run(["plan", "--budget", "1e13", "--queries", "1", "--target-accuracy", "0.5", "--fits", fits, "--json"], capsys)
    doc = json.loads(out)
    assert code == 0 and doc["reachable"] and doc["total_flops"] == pytest.approx(doc["train_flops"] + doc["serving_flops"])
    assert 0 < doc["serving_flops"] < 1e-3 * doc["train_flops"]


def test_bad_input(tmp_path, capsys):
    fits = write_fits(tmp_path / "f")
    base = ["plan", "--budget", "1e13", "--queries", "10", "--fits", fits]
    for argv, needles in [
        (base, ("exactly one of --target-accuracy and --target-loss",)),
        (base + ["--target-accuracy", "0.5", "--target-loss", "0.4"], ("exactly one",)),
        (["plan", "--budget", "-1", "--queries", "1", "--target-accuracy", "0.5", "--fits", fits], ("budget",)),
        (base + ["--target-accuracy", "1.5"], ("target_accuracy",)),
        (base + ["--target-accuracy", "0.5", "--difficulty", "7"], ("--difficulty 7",)),
        (["plan", "--budget", "1e13", "--queries", "1", "--target-loss", "0.4", "--fits", tmp_path / "none"],
         ("no such directory", "scalelab fit")),
    ]:
        code, _, err = run(argv, capsys)
        assert_one_line_error(code, err, *needles)
    only_chin = tmp_path / "c"
    only_chin.mkdir()
    (only_chin / "chinchilla.json").write_text((fits / "chinchilla.json").read_text())
    code, _, err = run(["plan", "--budget", "1e13", "--queries", "1", "--target-accuracy", "0.5", "--fits", only_chin], capsys)
    assert_one_line_error(code, err, "no exchange fit", "scalelab exchange")
    code, _, err = run(["plan", "--budget", "1e13", "--queries", "1", "--target-loss", "0.4", "--fits", only_chin], capsys)
    assert_one_line_error(code, err, "--tokens-per-query")
    (fits / "chinchilla.json").unlink()
    code, _, err = run(base + ["--target-loss", "0.4"], capsys)
    assert_one_line_error(code, err, "no chinchilla fit", "scalelab fit")
    bad = write_fits(tmp_path / "b", chin={"alpha": -1.2})
    code, _, err = run(["plan", "--budget", "1e13", "--queries", "1", "--target-loss", "0.4", "--fits", bad], capsys)
    assert_one_line_error(code, err, "alpha = -1.2")
