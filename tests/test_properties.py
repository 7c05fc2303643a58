"""Property-based tests of every loader and parser (Hypothesis): random and hostile inputs give a
result or one of the project's own errors (InputError, ConfigError: one line on the command line),
never another exception, and never hang (each example has a deadline).

Loaders: tables of runs (CSV) through to a fit's inputs, run records, FIT.json, task files (JSONL,
CSV, Parquet), safetensors headers. Parsers of model output: the task-file answer extractors, the
MATH-answer equivalence, the testbed's verifier.
"""
from __future__ import annotations

import json
import tempfile
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scalelab.errors import ScalelabError

SETTINGS = settings(max_examples=60, deadline=timedelta(seconds=5), suppress_health_check=[HealthCheck.too_slow],
                    derandomize=True)  # the same examples on every run: a failure is reproducible

json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-10**20, 10**20),
                      st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=30))
json_value = st.recursive(json_leaf, lambda kids: st.one_of(st.lists(kids, max_size=4),
                                                            st.dictionaries(st.text(max_size=12), kids, max_size=4)),
                          max_leaves=12)
cell = st.one_of(st.floats(allow_nan=True, allow_infinity=True).map(str), st.integers().map(str),
                 st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12),
                 st.sampled_from(["", "nan", "inf", "-1", "0", "1e300", "1e-300", '"', "\\", "1,5"]))
columns = st.lists(st.sampled_from(["N", "D", "C", "loss", "params", "tokens", "U", "", "N", "x y", "metrics.loss"]),
                   min_size=1, max_size=6)
raw = st.one_of(st.binary(max_size=600), st.text(max_size=600).map(str.encode))


def _tmp() -> Path:
    return Path(tempfile.mkdtemp(prefix="scalelab-prop-"))


def _only_our_errors(fn, *args, **kw):
    """Call fn; an exception other than the project's own is the failure this file looks for."""
    try:
        return fn(*args, **kw)
    except ScalelabError as e:
        assert "\n" not in str(e) and str(e).strip(), repr(e)
        return None


@st.composite
def csv_text(draw) -> bytes:
    cols = draw(columns)
    rows = draw(st.lists(st.lists(cell, min_size=len(cols), max_size=len(cols)), max_size=8))
    sep = draw(st.sampled_from([",", ",", ";", "\t"]))
    lines = [sep.join(cols)] + [sep.join(r) for r in rows]
    return "\n".join(lines).encode("utf-8", "surrogatepass")


# ---- tables of runs -> a fit's inputs -------------------------------------------------------------
@SETTINGS
@given(st.one_of(csv_text(), raw))
def test_a_table_loads_and_prepares_or_is_refused_in_one_line(data):
    from scalelab.laws import LAWS
    from scalelab.laws.table import prepare
    from scalelab.laws.tables_io import load_runs_table

    path = _tmp() / "runs.csv"
    path.write_bytes(data)
    table = _only_our_errors(load_runs_table, path)
    if table is not None:
        for law in LAWS.values():
            _only_our_errors(prepare, table.frame, law())


# ---- run records, FIT.json -----------------------------------------------------------------------
def _valid_record() -> dict:
    from scalelab.records import RunRecord

    return json.loads(RunRecord(run_id="r", phase="pretrain", technique="pretrain", task="testbed").complete(
        loss=1.0).model_dump_json())


@SETTINGS
@given(st.one_of(raw, json_value.map(lambda v: json.dumps(v).encode()),
                 st.dictionaries(st.sampled_from(list(_valid_record())), json_value, max_size=4).map(
                     lambda patch: json.dumps({**_valid_record(), **patch}).encode())))
def test_a_run_record_reads_or_is_refused_in_one_line(data):
    from scalelab.records import read_record
    from scalelab.tables import load_table

    run = _tmp() / "runs" / "r"
    run.mkdir(parents=True)
    (run / "record.json").write_bytes(data)
    _only_our_errors(read_record, run)
    _only_our_errors(load_table, run.parent)


def _valid_fit() -> dict:
    return {"law": "chinchilla", "params": {"E": 1.7, "A": 400.0, "B": 410.0, "alpha": 0.34, "beta": 0.28},
            "ci95": {}, "n_points": 16, "objective": 0.1, "converged": True}


@SETTINGS
@given(st.one_of(raw, json_value.map(lambda v: json.dumps(v).encode()),
                 st.dictionaries(st.sampled_from(list(_valid_fit()) + ["settings", "range", "draws", "noise"]),
                                 json_value, max_size=3).map(lambda p: json.dumps({**_valid_fit(), **p}).encode()),
                 st.dictionaries(st.sampled_from(["E", "A", "B", "alpha", "beta"]), json_leaf, max_size=3).map(
                     lambda p: json.dumps({**_valid_fit(), "params": {**_valid_fit()["params"], **p}}).encode())))
def test_a_fit_file_loads_and_predicts_or_is_refused_in_one_line(data):
    from scalelab.laws.fitfile import load_law
    from scalelab.laws.predict import optimal_point, predict_point

    path = _tmp() / "FIT.json"
    path.write_bytes(data)
    law = _only_our_errors(load_law, path, verb="predict")
    if law is not None:
        _only_our_errors(predict_point, law, N=1e8, D=1e10, U=None)
        _only_our_errors(optimal_point, law, compute=1e20, inference_tokens=None, U=None)


# ---- task files ----------------------------------------------------------------------------------
task_keys = st.sampled_from(["question", "answer", "problem", "solution", "choices", "id", "split", "level",
                             "difficulty", "prompt", "target", "label"])
task_value = st.one_of(json_leaf, st.lists(st.text(max_size=8), max_size=5),
                       st.sampled_from(["#### 12", "$\\boxed{\\frac{1}{2}}$", "Level 3", "A", "test", "train",
                                        "#### 1,000", "\\boxed{", "#### -"]))
task_rows = st.lists(st.dictionaries(task_keys, task_value, max_size=5), max_size=6)


@SETTINGS
@given(task_rows, st.sampled_from(["jsonl", "csv", "parquet", "jsonl-raw"]), raw,
       st.sampled_from(["auto", "gsm8k", "math", "choice", "exact", "regex"]))
def test_a_task_file_loads_or_is_refused_in_one_line(rows, kind, junk, fmt):
    import pandas as pd

    from scalelab.tasks.files import load_task, summary

    path = _tmp() / f"task.{kind.split('-')[0]}"
    if kind == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif kind == "jsonl-raw":
        path.write_bytes(junk)
    else:
        frame = pd.DataFrame([{k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in r.items()}
                              for r in rows])
        try:
            frame.to_csv(path, index=False) if kind == "csv" else frame.astype(str).to_parquet(path)
        except (ValueError, TypeError):  # pandas cannot write this frame: nothing to read back
            return
    task = _only_our_errors(load_task, path, fmt, (), r"(\d+)" if fmt == "regex" else None)
    if task is not None:
        _only_our_errors(summary, task, 2)
        for p in task.all_problems[:3]:
            task.verify(p, "#### 12 \\boxed{1} A")


# ---- parsers of model output ---------------------------------------------------------------------
hostile = st.one_of(st.text(max_size=300),
                    st.text(alphabet="\\{}()^_0123456789.,-+*/$ #boxedfrac sqrt", max_size=300),
                    st.sampled_from(["\\boxed{" * 200, "(" * 5000, "9" * 5000, "1e999999", "\\frac{1}{0}", "0^0",
                                     "2^2^2^2^2^2", "\\sqrt{-1}", "#### " + "9" * 400, "A:" + "9" * 100]))


@SETTINGS
@given(hostile, hostile)
def test_answer_extractors_and_equivalence_never_raise(completion, reference):
    from scalelab.tasks import answers as A
    from scalelab.tasks import mathanswer

    for fn in (A.parse_number, A.gsm8k_reference, A.gsm8k_extract, A.last_boxed, A.math_extract, A.exact_extract,
               A.normalize_exact, A.canonical_number, mathanswer.normalize, mathanswer.value, mathanswer.canonical):
        fn(completion)
    A.choice_extract(completion, ("A", "B", "C"))
    A.choice_reference(reference, ("A", "B", "C"))
    assert isinstance(mathanswer.equivalent(completion, reference), bool)
    assert mathanswer.equivalent(reference, reference) in (True, False)
    for mode in ("lines", "paragraphs"):
        _only_our_errors(lambda: A.step_splitter(mode)(completion))


@SETTINGS
@given(st.text(max_size=30))
def test_a_user_regex_compiles_or_is_refused_in_one_line(pattern):
    from scalelab.tasks import answers as A

    compiled = _only_our_errors(A.compile_regex, pattern)
    if compiled is not None:
        A.regex_extract(compiled, "the answer is 42")


@SETTINGS
@given(st.one_of(hostile, st.lists(st.sampled_from(["a:1+2=3", "!a:1+2=3", "A:3", "A:", "b:99*99=9801", "A:-1",
                                                     "a:0+0=0", "\n", "A:0003", "x"]), max_size=8).map("\n".join)))
def test_the_testbed_verifier_never_raises(completion):
    from scalelab.tasks.testbed import TestbedTask, verify

    task = TestbedTask()
    for p in task.problems("test", 1, difficulty=1, seed=0) + task.problems("test", 1, difficulty=4, seed=0):
        v = verify(p, completion)
        assert v.correct in (True, False)
        verify(p, completion, direct=True)


@SETTINGS
@given(st.binary(max_size=300), st.integers(0, 2**64 - 1))
def test_a_safetensors_file_is_checked_or_refused_in_one_line(body, header_len):
    from scalelab.inference.loading import check_safetensors

    path = _tmp() / "model.safetensors"
    path.write_bytes(header_len.to_bytes(8, "little") + body)
    _only_our_errors(check_safetensors, path)
    path.write_bytes(body)
    _only_our_errors(check_safetensors, path)


def test_a_whole_safetensors_file_passes_and_every_cut_of_it_is_refused(tmp_path):
    import torch
    from safetensors.torch import save_file

    from scalelab.inference.loading import check_safetensors

    path = tmp_path / "model.safetensors"
    save_file({"w": torch.arange(12.0).reshape(3, 4), "b": torch.zeros(4)}, str(path))
    check_safetensors(path)  # whole: no error
    whole = path.read_bytes()
    for cut in (0, 7, 8, 20, len(whole) // 2, len(whole) - 1):
        path.write_bytes(whole[:cut])
        with pytest.raises(ScalelabError):
            check_safetensors(path)
    path.write_bytes(whole + b"\0")
    with pytest.raises(ScalelabError, match="trailing"):
        check_safetensors(path)
