"""`scalelab report`: the HTML page of a runs directory, its numbers, its bad input, and how it renders
in a real headless Chromium (skipped where Chromium is missing unless SCALELAB_REQUIRE_BROWSER=1)."""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from scalelab.errors import InputError
from scalelab.records import RunRecord, append_metrics, write_record

FLOOR = 0.3  # the synthetic source's entropy floor, stated by every pretraining record
TRUE = {"A": 40.0, "B": 200.0, "alpha": 0.34, "beta": 0.4}


def _loss(N: float, D: float) -> float:
    return FLOOR + TRUE["A"] / N ** TRUE["alpha"] + TRUE["B"] / D ** TRUE["beta"]


def write_runs(root: Path) -> None:
    """A small IsoFLOP sweep on an exact Chinchilla law, two post-trained children and a test-time
    curve, in nested folders (the report searches recursively)."""
    rng = np.random.default_rng(0)
    for c in (1e11, 1e12, 1e13):
        for j, n in enumerate(np.geomspace(c ** 0.5 / 400, c ** 0.5 / 25, 5)):
            n, d = int(n), int(c / (6 * n))
            loss = _loss(n, d) * (1 + 0.003 * rng.standard_normal())
            rid = f"d{j + 2}-{c:.0e}"
            rec = RunRecord(run_id=rid, phase="pretrain", technique="pretrain", task="testbed",
                            n_params_nonembedding=n, tokens=d, flops={"pretrain": 6.0 * n * d},
                            config={"model": f"d{j + 2}"})
            write_record(root / "sweep" / rid, rec.complete(loss=loss, entropy_floor=FLOOR))
            for s in range(1, 11):
                append_metrics(root / "sweep" / rid, {"step": s, "flops": 6.0 * n * d * s / 10, "loss": loss + 1 / s,
                                                      "eval_loss": loss if s == 10 else None})
    for i, (tech, acc, ft) in enumerate((("sft", 0.6125, 3.25e10), ("quantize-int8-weight", 0.4875, 0.0))):
        rec = RunRecord(run_id=f"child-{tech}", parent_id="d4-1e+13", phase="posttrain", technique=tech,
                        task="testbed", n_params_nonembedding=1000, flops={"pretrain": 1e13, "posttrain": ft},
                        parent_flops={"pretrain": 1e13})
        rec.complete(accuracy=acc, parent_accuracy=0.5, accuracy_by_difficulty={"1": acc + 0.1, "2": acc - 0.1},
                     accuracy_se_by_difficulty={"1": 0.02, "2": 0.02}, chance_by_difficulty={"1": 0.1, "2": 0.01},
                     parent_accuracy_by_difficulty={"1": 0.6, "2": 0.4})
        write_record(root / "post" / rec.run_id, rec)
    for strat, ns in (("majority", (1, 4, 16)), ("cot", (1,))):
        for n in ns:
            rec = RunRecord(run_id=f"{strat}-n{n}", phase="testtime", technique=strat, task="testbed",
                            flops={"pretrain": 1e13, "inference": 1e9 * n})
            rec.complete(n=n, steps=3, accuracy=0.4 + 0.05 * np.log2(n), accuracy_se=0.03, chance=0.01,
                         kind="single" if strat == "cot" else "parallel", flops_per_question=1.25e7 * n, problems=40)
            write_record(root / "tt" / "d3" / rec.run_id, rec)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    from scalelab.pipeline.report import build_report

    root = tmp_path_factory.mktemp("runs")
    write_runs(root)
    out = build_report(root, root.parent / "report" / "report.html", bootstrap=8, n_jobs=1)
    return root, out, out.read_text()


def test_the_report_holds_the_fitted_numbers_and_embeds_every_figure(report):
    from scalelab.laws import make_law
    from scalelab.laws.table import prepare
    from scalelab.tables import load_runs, records_to_frame
    from scalelab.pipeline.report import FRONTIER_WEIGHT, fmt

    root, out, page = report
    # the point estimates do not depend on the bootstrap: refit without it and look for the numbers
    # (the Chinchilla fits weight runs towards the largest budget, as --law auto does)
    frame = records_to_frame([r for r in load_runs(root).records if r.phase == "pretrain"])
    weighted = {"frontier_weight": FRONTIER_WEIGHT}
    for name, hyper in (("chinchilla", {"E_fixed": FLOOR, **weighted}), ("chinchilla", weighted), ("isoflop", {})):
        est = make_law(name, bootstrap=0, n_jobs=1, **hyper)
        prep = prepare(frame, est)
        est.fit(prep.X, prep.y)
        for k, v in est.params_.items():
            assert f"<td>{fmt(v)}</td>" in page, (name, hyper, k, fmt(v))
    free = make_law("chinchilla", bootstrap=0, n_jobs=1)
    free.fit(*(lambda p: (p.X, p.y))(prepare(frame, free)))
    assert free.params_["alpha"] == pytest.approx(TRUE["alpha"], rel=0.25)  # the data are a Chinchilla law
    assert f"E held at the entropy floor ({fmt(FLOOR)})" in page and "E fitted freely" in page
    # post-training and test-time tables come from the records
    assert all(s in page for s in ("<td>child-sft</td>", "<td>0.6125</td>", f"<td>{fmt(3.25e10)}</td>"))
    assert f"<td>{fmt(1.25e7 * 16)}</td>" in page and "<td>majority</td>" in page
    assert re.search(r"frontier: L - 0\.3000 = ", page)
    # the fit predicting its own largest budget; no post-training law from one child without a curve
    assert "Backtest: the fit predicting its own largest budget" in page and "<td>fixed-e</td>" in page
    assert "no law: sft" in page
    # the 10x prediction names its interval: of one new run (residual noise; with >= 20 bootstrap
    # draws the interval of the law's mean is printed before it)
    assert re.search(r"predicted loss of [\d.]+ \((95% interval of the mean \[[\d.]+, [\d.]+\]; )?"
                     r"95% prediction interval of one new run \[[\d.]+, [\d.]+\]\)", page)
    # every section found, five figures inlined, nothing fetched from elsewhere
    assert page.count('class="found"') == 3 and "not found" not in page
    imgs = re.findall(r'<img [^>]*src="([^"]+)"', page)
    assert len(imgs) == 5 and all(s.startswith("data:image/png;base64,iVBOR") for s in imgs)
    assert "<script" not in page and not re.search(r'(src|href)="(https?:)?//', page)


def test_a_missing_section_names_the_command_that_makes_it(tmp_path):
    from scalelab.pipeline.report import build_report

    write_runs(tmp_path / "all")
    page = build_report(tmp_path / "all" / "tt", tmp_path / "tt.html").read_text()
    assert "test-time</a>: found (4 records)" in page
    assert "scalelab sweep --preset quick --runs-dir DIR" in page and "scalelab posttrain sft" in page
    assert "<h2 id=\"pretraining\"" not in page and page.count("<img ") == 1


def test_bad_input_is_one_line_with_exit_code_2(tmp_path, cli):
    from scalelab.pipeline.report import build_report

    with pytest.raises(InputError, match="no such runs directory"):
        build_report(tmp_path / "nope", tmp_path / "r.html")
    (tmp_path / "empty" / "junk").mkdir(parents=True)
    with pytest.raises(InputError, match="no complete run records"):
        build_report(tmp_path / "empty", tmp_path / "r.html")
    rec = RunRecord(run_id="x", phase="pretrain", technique="pretrain", task="testbed").fail("out of memory")
    write_record(tmp_path / "failed" / "x", rec)
    r = cli("report", tmp_path / "failed", "--out", tmp_path / "r.html")
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0
    assert "no complete run records" in r.stderr and "1 unreadable or failed" in r.stderr
    assert not (tmp_path / "r.html").exists()


# Run in the page: every <img> decoded; the page, and every element outside a box that scrolls
# (.scroll, pre), within the window; each table as wide as its box or narrower.
LAYOUT_JS = """
const W = window.innerWidth, wide = [];
for (const e of document.querySelectorAll('body *')) {
  const box = e.parentElement && e.parentElement.closest('.scroll, pre');
  const r = e.getBoundingClientRect();
  if (!box && (r.left < -0.5 || r.right > W + 0.5)) wide.push([e.tagName, Math.round(r.left), Math.round(r.right)]);
}
return {imgs: Array.from(document.images).map(i => [i.complete, i.naturalWidth]), wide: wide,
        scroll: document.documentElement.scrollWidth, inner: W,
        tables: Array.from(document.querySelectorAll('table')).map(t => [t.offsetWidth, t.parentElement.clientWidth])}
"""


def test_the_report_renders_in_headless_chromium(report, tmp_path):
    """Every figure decodes and nothing is wider than the window at 1280, 800 and 420 pixels; at
    1280 and 800 every table fits without scrolling (long cells wrap), at 420 wide ones scroll."""
    chromium, driver = shutil.which("chromium") or "/usr/bin/chromium", shutil.which("chromedriver") or "/usr/bin/chromedriver"
    missing = [p for p in (chromium, driver) if not Path(p).is_file()]
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        missing.append("selenium")
    if missing:
        if os.environ.get("SCALELAB_REQUIRE_BROWSER") == "1":
            pytest.fail(f"SCALELAB_REQUIRE_BROWSER=1 but missing: {', '.join(missing)}")
        pytest.skip(f"no headless browser: missing {', '.join(missing)}")
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for a in ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
              "--disable-component-update", "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}",
              "--window-size=1280,900"):
        opts.add_argument(a)
    browser = webdriver.Chrome(service=Service(driver), options=opts)
    try:
        browser.set_page_load_timeout(20)
        browser.get(report[1].resolve().as_uri())
        for width in (1280, 800, 420):
            browser.set_window_size(width, 900)
            state = browser.execute_script(LAYOUT_JS)
            assert len(state["imgs"]) == 5 and all(ok and w > 0 for ok, w in state["imgs"]), state["imgs"]
            assert state["scroll"] <= state["inner"] and not state["wide"], (width, state)
            assert len(state["tables"]) == 6  # chinchilla, backtest, isoflop x2, post-training, test-time
            if width >= 800:
                assert all(t <= box for t, box in state["tables"]), (width, state["tables"])
    finally:
        browser.quit()


def _tt_record(model: str, c_train: float, strat: str, n: int, steps: int, acc: float) -> RunRecord:
    rec = RunRecord(run_id=f"{model}-{strat}-{steps}-n{n}", parent_id=model, phase="testtime", technique=strat,
                    task="testbed", flops={"pretrain": c_train, "inference": 1e9 * n})
    return rec.complete(n=n, steps=steps, accuracy=acc, accuracy_se=0.03, chance=0.01, problems=40,
                        kind="single" if strat == "cot" else "parallel", flops_per_question=c_train / 1e4 * n)


def _assert_readable(axis, fig) -> None:
    """At least two tick labels in view on the axis, and no two of them overlapping."""
    r = fig.canvas.get_renderer()
    lo, hi = sorted(axis.get_view_interval())
    k = 1 if axis.axis_name == "y" else 0
    boxes = sorted((t.get_window_extent(r) for t in axis.get_ticklabels(which="both")
                    if t.get_text() and t.get_visible() and lo <= t.get_position()[k] <= hi),
                   key=lambda b: (b.x0, b.y0))
    assert len(boxes) >= 2, [t.get_text() for t in axis.get_ticklabels(which="both")]
    assert not any(a.overlaps(b) for a, b in zip(boxes, boxes[1:])), [(b.x0, b.x1, b.y0, b.y1) for b in boxes]


def test_the_test_time_figure_draws_one_line_per_model_and_strategy():
    """Two models evaluated at the same n interleave on the FLOPs axis; joining them made a sawtooth."""
    import matplotlib.pyplot as plt

    from scalelab.testtime.plots import accuracy_figure

    models = (("small", 1e10), ("big", 3e10))
    recs = [_tt_record(m, c, s, n, d, 0.1 * i + 0.02 * n) for i, (m, c) in enumerate(models)
            for s, ns in (("majority", (1, 2, 4, 8)), ("cot", (1,))) for n in ns for d in (1, 2)]
    fig = accuracy_figure(recs)
    try:
        fig.canvas.draw()
        axes = [ax for ax in fig.axes if ax.has_data()]
        assert len(axes) == 2  # one per difficulty
        for ax in axes:
            joined = [ln for ln in ax.lines if ln.get_linestyle() == "-" and len(ln.get_xdata()) > 1]  # not caps, chance
            # majority once per model, each through that model's points in order; cot: one point per model
            assert sorted(tuple(ln.get_xdata()) for ln in joined) == sorted(
                tuple(c / 1e4 * n for n in (1, 2, 4, 8)) for _, c in models)
            _assert_readable(ax.xaxis, fig)
        legend = [t.get_text() for t in fig.legends[0].get_texts()]
        assert {"majority", "cot"} <= set(legend), legend
        assert any(t.startswith("small (1e+10") for t in legend) and any(t.startswith("big (3e+10") for t in legend)
    finally:
        plt.close(fig)


@pytest.mark.parametrize("lo,hi", [(1.1e6, 3.9e6), (3e10, 2e11), (1.3e4, 7e5), (7e3, 1.3e4), (1e-3, 1e12)])
def test_log_axes_get_few_labels_that_do_not_collide(lo, hi):
    """matplotlib's defaults fail this at (3e10, 2e11) and (1.3e4, 7e5): their minor labels collide."""
    import matplotlib.pyplot as plt

    from scalelab.laws.plot import readable_log_ticks

    fig, ax = plt.subplots(figsize=(3.5, 3))
    try:
        ax.set(xscale="log", yscale="log", xlim=(lo, hi), ylim=(lo, hi))
        readable_log_ticks(ax.xaxis)
        readable_log_ticks(ax.yaxis)
        fig.canvas.draw()
        for axis in (ax.xaxis, ax.yaxis):
            _assert_readable(axis, fig)
    finally:
        plt.close(fig)
