"""`scalelab tasks ...` as a user runs it: show, score, export (round trip), generate, bad input."""
from __future__ import annotations

import json

import pytest

from scalelab.tasks import load_task
from scalelab.tasks.wordproblems import generate
from scalelab.data.testbed import TestbedSource


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_show_json(cli, tmp_path):
    path = write_jsonl(tmp_path / "m.jsonl", [{"problem": "1/2?", "solution": "$\\boxed{\\frac{1}{2}}$", "level": "Level 1"}])
    r = cli("tasks", "show", path, "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["format"] == "math" and out["n_problems"] == 1 and out["splits"] == {"test": 1}
    assert out["examples"] == [{"id": "1", "prompt": "Question: 1/2?\nAnswer:", "answer": "\\frac{1}{2}"}]
    assert "detected math" in r.stderr


def test_score_by_order_and_by_id(cli, tmp_path):
    task = write_jsonl(tmp_path / "g.jsonl", [{"id": "a", "question": "q", "answer": "#### 1,000"},
                                              {"id": "b", "question": "r", "answer": "#### 3"}])
    comp = write_jsonl(tmp_path / "c.jsonl", [{"completion": "The answer is 1000.0"}, {"completion": "#### 4"}])
    r = cli("tasks", "score", task, "--completions", comp, "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"accuracy": 0.5, "correct": [True, False]}
    by_id = write_jsonl(tmp_path / "i.jsonl", [{"id": "b", "completion": "so 3"}])
    assert json.loads(cli("tasks", "score", task, "--completions", by_id, "--json").stdout)["correct"] == [True]
    short = write_jsonl(tmp_path / "s.jsonl", [{"completion": "3"}])
    r = cli("tasks", "score", task, "--completions", short)
    assert r.returncode == 2 and "1 completions for 2 problems" in r.stderr


def test_export_testbed_round_trip(cli, tmp_path):
    out = tmp_path / "tb.jsonl"
    r = cli("tasks", "export", "testbed", "--difficulties", "1-3", "--problems", "4", "--format", "gsm8k", "--out", out)
    assert r.returncode == 0, r.stderr
    task = load_task(out, template="{prompt}")
    assert task.format == "gsm8k" and len(task.all_problems) == 12
    src = TestbedSource()
    expected = [p for d in (1, 2, 3) for p in src.problems("test", 4, steps=d, seed=0)]
    for fp, tp in zip(task.all_problems, expected):
        assert task.prompt(fp) == tp.question() and int(fp.answer) == tp.answer and fp.difficulty == tp.steps
        assert task.verify(fp, task.reference(fp)).correct          # the worked solution scores right
    again = cli("tasks", "export", "testbed", "--difficulties", "1", "--problems", "1", "--out", out)
    assert again.returncode == 2 and "exists; use --force" in again.stderr


def test_generate_each_format_reads_back(cli, tmp_path):
    for fmt in ("gsm8k", "math", "choice"):
        out = tmp_path / f"{fmt}.jsonl"
        r = cli("tasks", "generate", "--format", fmt, "--problems", "60", "--out", out)
        assert r.returncode == 0, r.stderr
        task = load_task(out)
        assert task.format == fmt and set(task.splits()) == {"train", "test"}
        assert task.difficulty_bins() == {"1": 15, "2": 15, "3": 15, "4": 15}
        assert all(task.verify(p, task.reference(p)).correct for p in task.all_problems)
    assert any("\\frac" in p.answer for p in load_task(tmp_path / "math.jsonl").all_problems)
    assert generate("gsm8k", 10, seed=3) == generate("gsm8k", 10, seed=3) != generate("gsm8k", 10, seed=4)


@pytest.mark.parametrize("content, args, message", [
    ('{"question": "q", "answer": "#### 1"}\n{"question": oops}\n', [], "bad.jsonl line 2: not valid JSON"),
    ('{"question": "q", "answer": "#### 1"}\n{"question": "r", "answer": "2"}\n', [], "bad.jsonl line 2: mixed formats"),
    ('{"question": "q", "answer": ""}\n', ["--format", "exact"], "bad.jsonl: no answers"),
    ('{"question": "q", "answer": "#### 1"}\n', ["--field", "prompt=text"], "no column 'text' for prompt; columns found: question, answer"),
    ('{"question": "q", "choices": ["x", "y"], "answer": "z"}\n', [], "line 1: answer 'z' is not among the 2 choices"),
    ('{"question": "q", "answer": "#### 1"}\n', ["--field", "colour=x"], "unknown role 'colour'"),
    ('["not", "an", "object"]\n', [], "line 1: expected a JSON object"),
])
def test_bad_input_one_line_exit_2(cli, tmp_path, content, args, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    r = cli("tasks", "show", path, *args)
    assert r.returncode == 2 and message in r.stderr, r.stderr
    assert r.stderr.strip().count("\n") == 0 and "Traceback" not in r.stderr


def test_empty_split_and_out_checks(cli, tmp_path):
    path = write_jsonl(tmp_path / "e.jsonl", [{"question": "q", "answer": "a", "split": "dev"}])
    assert "no split 'test'" in str(pytest.raises(Exception, load_task(path).problems, "test", 1).value)
    r = cli("tasks", "show", path, "--split", "test")
    assert r.returncode == 2 and "no split 'test'; splits found: dev" in r.stderr
    r = cli("tasks", "generate", "--problems", "3", "--out", tmp_path / "missing" / "x.jsonl")
    assert r.returncode == 2 and "is not a directory" in r.stderr
