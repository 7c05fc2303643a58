"""Task files: each format read and detected, field mapping, splits, difficulty, prompts, steps."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from scalelab.errors import ConfigError, InputError
from scalelab.tasks import Task, load_task
from scalelab.tasks.prompting import Prompter


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


GSM = [{"question": "Tom has 3 apples and buys 4. How many?", "answer": "3 + 4 = 7\n#### 7"},
       {"question": "A pen costs $2. Cost of 500 pens?", "answer": "2 * 500 = 1000\n#### 1,000"}]
MATH = [{"problem": "What is 1/2 + 0?", "solution": "Clearly $\\boxed{\\frac{1}{2}}$.", "level": "Level 2",
         "type": "Algebra"},
        {"problem": "Nested?", "solution": "So \\boxed{1} no: $\\boxed{\\frac{a}{b^{2}}}$", "level": "Level 5"}]
CHOICE = [{"question": "Sky colour?", "choices": ["red", "blue", "green"], "answer": "B"},
          {"question": "Grass colour?", "choices": ["red", "blue", "green"], "answer": 2},
          {"question": "Blood colour?", "choices": ["red", "blue", "green"], "answer": "red"}]
EXACT = [{"question": "Capital of France?", "answer": "Paris", "split": "dev", "difficulty": "easy"},
         {"question": "Capital of Peru?", "answer": "Lima", "split": "test", "difficulty": "hard"}]


def test_each_format_is_detected_and_read(tmp_path):
    g = load_task(write_jsonl(tmp_path / "g.jsonl", GSM))
    assert g.format == "gsm8k" and "####" in g.detected and isinstance(g, Task)
    assert [p.answer for p in g.all_problems] == ["7", "1,000"] and g.all_problems[0].id == "1"
    assert g.reference(g.all_problems[0]) == GSM[0]["answer"]
    m = load_task(write_jsonl(tmp_path / "m.jsonl", MATH))
    assert m.format == "math" and [p.answer for p in m.all_problems] == ["\\frac{1}{2}", "\\frac{a}{b^{2}}"]
    assert m.difficulty_bins() == {"2": 1, "5": 1} and m.reference(m.all_problems[0]) == MATH[0]["solution"]
    c = load_task(write_jsonl(tmp_path / "c.jsonl", CHOICE))
    assert c.format == "choice" and [p.answer for p in c.all_problems] == ["B", "C", "A"]
    assert c.reference(c.all_problems[0]) == "The answer is (B)." and "B. blue" in c.prompt(c.all_problems[0])
    e = load_task(write_jsonl(tmp_path / "e.jsonl", EXACT))
    assert e.format == "exact" and e.splits() == {"dev": 1, "test": 1} and e.difficulty_bins() == {"easy": 1, "hard": 1}
    r = load_task(write_jsonl(tmp_path / "r.jsonl", [{"question": "q", "solution": "blah ANS=42"}]), regex=r"ANS=(\d+)")
    assert r.format == "regex" and r.all_problems[0].answer == "42"
    assert r.verify(r.all_problems[0], "so ANS=42.").correct and not r.verify(r.all_problems[0], "ANS=4").correct


def test_csv_and_parquet_with_field_mapping(tmp_path):
    frame = pd.DataFrame({"stem": ["2+2?", "3+3?"], "A": ["4", "5"], "B": ["3", "6"], "key": ["A", "B"],
                          "lvl": [1, 2], "part": ["test", "train"]})
    frame.to_csv(tmp_path / "mc.csv", index=False)
    frame.to_parquet(tmp_path / "mc.parquet")
    fields = ["prompt=stem", "choices=A,B", "answer=key", "difficulty=lvl", "split=part"]
    for name in ("mc.csv", "mc.parquet"):
        t = load_task(tmp_path / name, "choice", fields)
        assert [p.answer for p in t.all_problems] == ["A", "B"] and t.splits() == {"test": 1, "train": 1}
        assert [p.difficulty for p in t.all_problems] == [1, 2] and t.all_problems[1].choices == ("5", "6")
        assert t.problems("train", 5)[0].question == "3+3?"
    pd.DataFrame({"question": ["q1"], "answer": ["x\n#### 3"]}).to_parquet(tmp_path / "g.parquet")
    assert load_task(tmp_path / "g.parquet").format == "gsm8k"


def test_splits_difficulty_and_sampling(tmp_path):
    rows = [{"question": f"q{i}", "answer": f"#### {i}", "difficulty": i % 3, "split": "test"} for i in range(30)]
    t = load_task(write_jsonl(tmp_path / "g.jsonl", rows))
    got = t.problems("test", 5, seed=1)
    assert len(got) == 5 and got == t.problems("test", 5, seed=1) and got != t.problems("test", 5, seed=2)
    assert {p.difficulty for p in t.problems("test", 30, difficulty=2)} == {2}
    assert len({hash(p) for p in t.all_problems}) == 30  # problems are hashable
    with pytest.raises(InputError, match="no split 'train'"):
        t.problems("train", 5)


def test_plain_prompt_system_and_fewshot(tmp_path):
    write_jsonl(tmp_path / "shots.jsonl", GSM)
    t = load_task(write_jsonl(tmp_path / "g.jsonl", GSM[:1]), fewshot=tmp_path / "shots.jsonl", shots=1,
                  system="Solve it.")
    expected = ("Solve it.\n\nQuestion: Tom has 3 apples and buys 4. How many?\nAnswer: 3 + 4 = 7\n#### 7\n\n"
                "Question: Tom has 3 apples and buys 4. How many?\nAnswer:")
    assert t.prompt(t.all_problems[0]) == expected and t.stop == ("\nQuestion:",)
    assert t.max_tokens(t.all_problems[0]) == 512


class FakeChatTokenizer:
    chat_template = "{% for m in messages %}<{{m.role}}>{{m.content}}{% endfor %}"

    def apply_chat_template(self, messages, tokenize, add_generation_prompt):
        return "".join(f"<{m['role']}>{m['content']}" for m in messages) + ("<assistant>" if add_generation_prompt else "")


class NoTemplateTokenizer:
    chat_template = None


def test_chat_template_modes(tmp_path):
    path = write_jsonl(tmp_path / "e.jsonl", EXACT)
    t = load_task(path, tokenizer=FakeChatTokenizer(), system="Be brief.")
    assert t.prompt(t.all_problems[0]) == "<system>Be brief.<user>Capital of France?<assistant>" and t.stop == ()
    off = load_task(path, tokenizer=FakeChatTokenizer(), chat="off")
    assert off.prompt(off.all_problems[0]) == "Question: Capital of France?\nAnswer:"
    assert load_task(path, tokenizer=NoTemplateTokenizer()).prompter.uses_chat is False
    with pytest.raises(ConfigError, match="no chat template"):
        load_task(path, tokenizer=NoTemplateTokenizer(), chat="on")
    with pytest.raises(ConfigError, match="prompt"):
        Prompter(template="Q: {question}")
    custom = load_task(path, template="{prompt}")
    assert custom.prompt(custom.all_problems[0]) == "Capital of France?" and custom.stop == ()


def test_split_steps_and_answer_lines(tmp_path):
    t = load_task(write_jsonl(tmp_path / "g.jsonl", GSM), steps="paragraphs")
    text = "step one\nmore\n\nstep two\n\n#### 7"
    assert t.split_steps(text) == ["step one\nmore\n\n", "step two\n\n", "#### 7"]
    lines = load_task(tmp_path / "g.jsonl").split_steps("a\nb\n#### 7")
    assert lines == ["a\n", "b\n", "#### 7"] and t.is_answer_line("#### 7") and not t.is_answer_line("a\n")
    rx = load_task(tmp_path / "g.jsonl", steps=r"regex:\. ")
    assert "".join(rx.split_steps("One. Two. Three")) == "One. Two. Three" and len(rx.split_steps("One. Two. Three")) == 3
    with pytest.raises(ConfigError):
        load_task(tmp_path / "g.jsonl", steps="words")


@pytest.mark.parametrize("rows, kwargs, message", [
    (GSM + [{"question": "q", "answer": "7"}], {}, "line 3: mixed formats"),
    ([{"question": "q", "answer": ""}, {"question": "r", "answer": ""}], {"fmt": "exact"}, "no answers"),
    (GSM, {"fields": ["prompt=questoin"]}, "no column 'questoin' for prompt; columns found: question, answer"),
    ([{"question": "q", "choices": ["a", "b"], "answer": "C"}], {}, "line 1: answer 'C' is not among the 2 choices"),
    ([{"q": "x", "a": "y"}], {}, "cannot detect the format from the columns q, a"),
    ([{"problem": "p", "solution": "no box"}], {}, "line 1: no \\\\boxed"),
])
def test_bad_input_is_one_line(tmp_path, rows, kwargs, message):
    path = write_jsonl(tmp_path / "bad.jsonl", rows)
    with pytest.raises(InputError, match=message) as err:
        load_task(path, **kwargs)
    assert "\n" not in str(err.value) and "bad.jsonl" in str(err.value)


def test_score_cuts_completions_at_the_stop_string(tmp_path):
    """A completion that ran on into the next few-shot question is read only up to it."""
    from scalelab.tasks.files import load_task, score

    f = tmp_path / "t.jsonl"
    f.write_text(json.dumps({"id": "a", "question": "2+3?", "answer": "2 + 3 = 5\n#### 5"}) + "\n")
    comp = tmp_path / "c.jsonl"
    comp.write_text(json.dumps({"id": "a", "completion": " 2 + 3 = 5\nQuestion: 7+1?\nAnswer: 8"}) + "\n")
    assert score(load_task(f), comp)["correct"] == [True]       # the last number before the stop is 5
    assert score(load_task(f, stop=["\nNever"]), comp)["correct"] == [False]  # read to the end: 8
