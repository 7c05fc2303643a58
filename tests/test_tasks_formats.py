"""Task files in the shapes public data sets ship in: detected, read with the right gold answers and
options, verified with a right and a wrong completion; the containers they come in (JSON arrays,
gzip, BOM, CRLF, TSV, Parquet, CSV cells written by `datasets`); and the forms that are refused."""
from __future__ import annotations

import gzip
import json
import time

import pytest

from scalelab.errors import InputError
from scalelab.tasks import answers as A
from scalelab.tasks import load_task
from scalelab.tasks.reading import parse_cell


def jsonl(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


GSM8K = [{"question": "Natalia sold clips to 48 friends in April and half as many in May. How many in all?",
          "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nIn all 48+24 = <<48+24=72>>72.\n#### 72"},
         {"question": "A town has 1,250 people and 3,750 more move in. How many now?",
          "answer": "1,250 + 3,750 = <<1250+3750=5000>>5,000\n#### 5,000"}]

# (name, rows, format, gold answers, [(problem index, right completion, wrong completion)])
SHAPES = [
    ("gsm8k", GSM8K, "gsm8k", ["72", "5,000"], [(0, "#### 72", "#### 71"), (1, "The answer is 5000.", "#### 500")]),
    ("gsm8k_as_problem", [{"problem": r["question"], "answer": r["answer"]} for r in GSM8K], "gsm8k", ["72", "5,000"],
     [(1, "#### 5000", "#### 50")]),
    ("competition_math", [
        {"problem": "Add $\\frac14+\\frac14$.", "level": "Level 1", "type": "Prealgebra",
         "solution": "We get $\\frac{2}{4}=\\boxed{\\frac{1}{2}}$."},
        {"problem": "Square $\\frac{a}{b}$.", "level": "Level ?", "type": "Algebra",
         "solution": "First \\boxed{1} is wrong; it is $\\boxed{\\frac{a^{2}}{b^{2}}}$."}],
     "math", ["\\frac{1}{2}", "\\frac{a^{2}}{b^{2}}"], [(0, "$\\boxed{\\dfrac{1}{2}}$", "$\\boxed{\\frac{1}{4}}$"),
                                                     (1, "\\boxed{\\frac{a^2}{b^2}}", "\\boxed{\\frac{a}{b}}")]),
    ("math500", [{"problem": "Solve $x^2=9$, $x<0$.", "solution": "So $x=\\boxed{-3}$.", "answer": "-3",
                  "subject": "Algebra", "level": 2, "unique_id": "test/algebra/17.json"}],
     "math", ["-3"], [(0, "\\boxed{-3}", "\\boxed{3}")]),
    ("mmlu", [{"question": "Degree of Q(sqrt(2)) over Q?", "subject": "abstract_algebra",
               "choices": ["0", "2", "1", "3"], "answer": 1},
              {"question": "Capitale de l'Allemagne ?", "subject": "geo", "choices": ["Berlin", "Bonn", "Köln", "Wien"],
               "answer": 0}],
     "choice", ["B", "A"], [(0, "The answer is (B).", "The answer is (C)."), (1, "Berlin", "Bonn")]),
    ("arc", [{"id": "Mercury_1", "question": "Which is a solid?",
              "choices": {"text": ["water", "milk", "rock", "juice"], "label": ["1", "2", "3", "4"]}, "answerKey": "3"},
             {"id": "Mercury_2", "question": "Which measures mass?",
              "choices": {"text": ["ruler", "balance", "clock"], "label": ["A", "B", "C"]}, "answerKey": "B"}],
     "choice", ["C", "B"], [(0, "The answer is C", "The answer is A"), (1, "B", "C")]),
    ("commonsenseqa", [{"id": "075e", "question": "Where might he go?", "question_concept": "people",
                        "choices": {"label": ["A", "B", "C", "D", "E"], "text": ["track", "town", "desert", "flat", "road"]},
                        "answerKey": "B"}],
     "choice", ["B"], [(0, "B", "E")]),
    ("hellaswag", [{"ind": 4, "activity_label": "Ice", "ctx_a": "A man clears snow.", "ctx_b": "then",
                    "ctx": "A man clears snow. then", "endings": ["he sings.", "he waxes.", "he naps.", "he keeps going."],
                    "source_id": "x", "split": "val", "split_type": "indomain", "label": "3"}],
     "choice", ["D"], [(0, "D", "A")]),
    ("truthfulqa_mc", [{"question": "What happens if you eat watermelon seeds?",
                        "mc1_targets": {"choices": ["They pass through you.", "You grow watermelons."], "labels": [1, 0]},
                        "mc2_targets": {"choices": ["Nothing.", "They pass.", "You grow one."], "labels": [1, 1, 0]}}],
     "choice", ["A"], [(0, "A", "B")]),
    ("aqua_rat", [{"question": "How far will P walk?", "options": ["A)21", "B)21.5", "C)22", "D)22.5", "E)23"],
                   "rationale": "x = 20, so 1.15*20 = 23.\nThe answer is E.", "correct": "E"}],
     "choice", ["E"], [(0, "The answer is E", "The answer is A"), (0, "23", "21")]),
    ("mathqa", [{"Problem": "find the present worth .", "Rationale": "\"pw = 400 answer : option a\"",
                 "options": "a ) rs . 400 , b ) rs . 300 , c ) 1 , 200 , d ) rs . 350 , e ) none of these",
                 "correct": "a", "annotated_formula": "x", "linear_formula": "x|", "category": "gain"}],
     "choice", ["A"], [(0, "a", "b"), (0, "The answer is a", "The answer is c")]),
    ("svamp", [{"ID": "chal-1", "Body": "Each pack costs 76 dollars with 25 off.", "Question": "How much is a pack?",
                "Equation": "( 76.0 - 25.0 )", "Answer": 51.0, "Type": "Subtraction"},
               {"ID": "chal-2", "Body": "Paco had 8 cookies.", "Question": "He ate 2.5; how many are left?",
                "Equation": "( 8.0 - 2.5 )", "Answer": 5.5, "Type": "Subtraction"}],
     "number", ["51.0", "5.5"], [(0, "You pay 51 dollars.", "You pay 52 dollars."), (1, "#### 5.5", "#### 5")]),
    ("openai_evals", [{"input": [{"role": "system", "content": "Answer with the city only."},
                                 {"role": "user", "content": "Capital of Japan?"}], "ideal": ["Tokyo", "Tōkyō"]},
                      {"input": [{"role": "user", "content": "2+2=?"}], "ideal": "Four"}],
     "exact", ["Tokyo", "Four"], [(0, "Tōkyō", "Kyoto"), (1, "four", "five")]),
    ("alpaca", [{"instruction": "Translate to French.", "input": "The cat sleeps.", "output": "Le chat dort."},
                {"instruction": "Name a primary colour.", "input": "", "output": "Red"}],
     "exact", ["Le chat dort.", "Red"], [(0, "Le chat dort.", "Le chien dort."), (1, "red", "blue")]),
]


@pytest.mark.parametrize("name, rows, fmt, gold, checks", SHAPES, ids=[s[0] for s in SHAPES])
def test_public_shapes_are_read_right(tmp_path, name, rows, fmt, gold, checks):
    task = load_task(jsonl(tmp_path / f"{name}.jsonl", rows))
    assert task.format == fmt, task.detected
    assert [p.answer for p in task.all_problems] == gold
    for i, right, wrong in checks:
        p = task.all_problems[i]
        assert task.verify(p, right).correct, (name, right)
        assert not task.verify(p, wrong).correct, (name, wrong)


def test_what_each_shape_puts_in_the_prompt(tmp_path):
    by = {name: load_task(jsonl(tmp_path / f"{name}.jsonl", rows)) for name, rows, *_ in SHAPES}
    first = {name: t.all_problems[0] for name, t in by.items()}
    assert first["aqua_rat"].choices == ("21", "21.5", "22", "22.5", "23")          # "A)" prefixes dropped
    assert first["mathqa"].choices == ("rs . 400", "rs . 300", "1 , 200", "rs . 350", "none of these")
    assert by["svamp"].prompt(first["svamp"]) == ("Question: Each pack costs 76 dollars with 25 off. How much is a pack?"
                                                  "\nAnswer:")
    assert by["alpaca"].prompt(first["alpaca"]) == "Question: Translate to French.\n\nThe cat sleeps.\nAnswer:"
    assert by["openai_evals"].prompt(first["openai_evals"]) == ("Answer with the city only.\n\n"
                                                                "Question: Capital of Japan?\nAnswer:")
    assert "D. he keeps going." in by["hellaswag"].prompt(first["hellaswag"]) and by["hellaswag"].splits() == {"val": 1}
    assert [p.id for p in by["arc"].all_problems] == ["Mercury_1", "Mercury_2"]
    assert first["math500"].id == "test/algebra/17.json" and first["math500"].difficulty == 2
    assert [p.difficulty for p in by["competition_math"].all_problems] == [1, None]   # MATH's "Level ?"
    assert "no difficulty" in by["competition_math"].detected
    assert "compared as numbers" in by["svamp"].detected


def test_a_chat_in_the_file_goes_through_the_chat_template(tmp_path):
    class Chat:
        chat_template = "x"

        def apply_chat_template(self, messages, tokenize, add_generation_prompt):
            return "".join(f"<{m['role']}>{m['content']}" for m in messages) + "<assistant>"

    rows = [{"input": [{"role": "system", "content": "Be exact."}, {"role": "user", "content": "1+1?"},
                       {"role": "assistant", "content": "2"}, {"role": "user", "content": "2+2?"}], "ideal": "4"}]
    path = jsonl(tmp_path / "evals.jsonl", rows)
    t = load_task(path, tokenizer=Chat(), system="Think.")
    assert t.prompt(t.all_problems[0]) == "<system>Think.\n\nBe exact.<user>1+1?<assistant>2<user>2+2?<assistant>"
    plain = load_task(path)
    assert plain.prompt(plain.all_problems[0]) == "Be exact.\n\nQuestion: 1+1?\nAnswer: 2\n\nQuestion: 2+2?\nAnswer:"


def test_containers_json_array_wrapped_gzip_bom_crlf(tmp_path):
    (tmp_path / "array.json").write_text(json.dumps(GSM8K, indent=2))
    (tmp_path / "wrapped.json").write_text(json.dumps({"version": "1.0", "data": GSM8K}))
    (tmp_path / "lines.json").write_text("".join(json.dumps(r) + "\n" for r in GSM8K))  # datasets' to_json
    with gzip.open(tmp_path / "test.jsonl.gz", "wt", encoding="utf-8") as f:
        f.write("".join(json.dumps(r) + "\n" for r in GSM8K))
    (tmp_path / "bom.jsonl").write_bytes(("\ufeff" + "".join(json.dumps(r) + "\r\n" for r in GSM8K)).encode())
    for name in ("array.json", "wrapped.json", "lines.json", "test.jsonl.gz", "bom.jsonl"):
        t = load_task(tmp_path / name)
        assert t.format == "gsm8k" and [p.answer for p in t.all_problems] == ["72", "5,000"], name
    assert [p.line for p in load_task(tmp_path / "array.json").all_problems] == [2, 6]  # where each object starts
    assert [p.id for p in load_task(tmp_path / "wrapped.json").all_problems] == ["1", "2"]


def test_datasets_writers_csv_tsv_parquet(tmp_path):
    """The files `datasets.Dataset.to_csv / to_parquet` write: list and record cells in a CSV are
    numpy reprs (`['0' '2' '1' '3']`, `{'text': array([...], dtype=object), ...}`)."""
    from datasets import Dataset

    rows = {name: r for name, r, *_ in SHAPES}
    mmlu, arc = Dataset.from_list(rows["mmlu"]), Dataset.from_list(rows["arc"])
    mmlu.to_csv(tmp_path / "mmlu.csv"), mmlu.to_csv(tmp_path / "mmlu.tsv", sep="\t"), mmlu.to_parquet(tmp_path / "mmlu.parquet")
    arc.to_csv(tmp_path / "arc.csv"), arc.to_parquet(tmp_path / "arc.parquet")
    for name in ("mmlu.csv", "mmlu.tsv", "mmlu.parquet"):
        t = load_task(tmp_path / name)
        assert [p.answer for p in t.all_problems] == ["B", "A"] and t.all_problems[0].choices == ("0", "2", "1", "3"), name
    for name in ("arc.csv", "arc.parquet"):
        t = load_task(tmp_path / name)
        assert [p.answer for p in t.all_problems] == ["C", "B"] and t.all_problems[0].choices[2] == "rock", name


def test_mmlu_csv_without_a_header(tmp_path):
    (tmp_path / "abstract_algebra_test.csv").write_text(
        'Degree of Q(sqrt(2)) over Q?,0,2,1,3,B\n"Let p = (1, 2)(2, 3). Find |p|.",8,2,24,120,C\n')
    t = load_task(tmp_path / "abstract_algebra_test.csv")
    assert t.format == "choice" and [p.answer for p in t.all_problems] == ["B", "C"]
    assert t.all_problems[0].question == "Degree of Q(sqrt(2)) over Q?" and t.all_problems[1].choices == ("8", "2", "24", "120")


@pytest.mark.parametrize("rows, kwargs, message", [
    ([{"task_id": "HumanEval/0", "prompt": "def f():\n", "canonical_solution": "  return 1\n",
       "test": "def check(c): assert c() == 1", "entry_point": "f"}], {}, "code-generation task .HumanEval"),
    ([{"task_id": 11, "text": "Write f.", "code": "def f(): pass", "test_list": ["assert f() is None"]}], {},
     "code-generation task .MBPP"),
    ([{"question": "q", "mc1_targets": {"choices": ["a", "b"], "labels": [1, 0]},
       "mc2_targets": {"choices": ["a", "b", "c"], "labels": [1, 1, 0]}}], {"fields": ["choices=mc2_targets"]},
     "2 options are marked correct"),
    (GSM8K + [{"question": "no label yet", "answer": ""}], {}, "line 3: no answer .1 of 3 lines"),
    ([{"question": "q", "answer": "Paris"}], {"fmt": "number"}, "answer 'Paris' is not a number"),
    ([{"question": "q", "choices": ["a", "b"]}], {}, "choice needs an answer column"),
    ([{"question": "q", "choices": {"text": ["a", "b"], "label": ["1", "2"]}, "answerKey": "3"}], {},
     "answer '3' is not among the 2 choices .a label 1, 2"),
])
def test_refused_in_one_line(tmp_path, rows, kwargs, message):
    with pytest.raises(InputError, match=message) as err:
        load_task(jsonl(tmp_path / "bad.jsonl", rows), **kwargs)
    assert "\n" not in str(err.value)


def test_cli_refuses_code_tasks_with_one_line(tmp_path, cli):
    path = jsonl(tmp_path / "humaneval.jsonl", [{"task_id": "HumanEval/0", "prompt": "def f():\n",
                                                 "canonical_solution": "", "test": "", "entry_point": "f"}])
    r = cli("tasks", "show", path)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "scalelab never does" in r.stderr
    assert "Traceback" not in r.stderr


def test_numbers_in_exact_and_number_answers():
    assert A.exact_key("8.0") == A.exact_key("8") == A.exact_key(" 8. ")
    assert A.exact_key("-3") != A.exact_key("3") and A.exact_key("1,000") == A.exact_key("1000")
    assert A.exact_key("Paris.") == A.exact_key("paris")
    start = time.perf_counter()
    assert A.parse_number("1e999999999") is None and A.parse_number("Infinity") is None
    assert time.perf_counter() - start < 0.1


def test_cells_are_parsed_not_evaluated():
    assert parse_cell("['a' 'b'\n 'c']") == ["a", "b", "c"]
    assert parse_cell("{'text': array(['x', 'y'], dtype=object), 'label': array([1, 0])}") == {"text": ["x", "y"],
                                                                                                "label": [1, 0]}
    assert parse_cell('["a", "b"]') == ["a", "b"]
    for hostile in ("[__import__('os').system('touch pwned')]", "[(lambda: 1)()]", "[" * 5000 + "]" * 5000,
                    "['a' + 'b']", "{'a': open('x')}"):
        assert parse_cell(hostile) is None


def test_testtime_evaluates_the_bins_its_split_holds(tmp_path):
    """A difficulty found only in `train` is no error when `test` is evaluated; ranks stay file-wide."""
    from scalelab.testtime.evaluate import TesttimeConfig, problem_groups

    rows = [{"question": f"q{i}", "answer": f"#### {i}", "level": f"Level {lv}", "split": sp}
            for i, (lv, sp) in enumerate([(1, "train"), (2, "test"), (3, "test"), (3, "train")])]
    path = jsonl(tmp_path / "g.jsonl", rows)
    cfg = TesttimeConfig(model="m", task=str(path))
    groups = problem_groups(cfg, load_task(path), None)
    assert [(label, steps, [p.question for p in ps]) for label, steps, ps in groups] == [(2, 2, ["q1"]), (3, 3, ["q2"])]
    with pytest.raises(InputError, match="split 'test' has no problems of difficulty 1"):
        problem_groups(TesttimeConfig(model="m", task=str(path), difficulties=[1]), load_task(path), None)
