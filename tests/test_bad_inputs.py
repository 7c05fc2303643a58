"""The error contract, verb by verb: bad input gives exactly one line on stderr naming what is wrong,
exit code 2, no traceback, and nothing written where it was not allowed.

The battery calls the command line in-process (`scalelab.cli.main`) on shared fixtures: a tiny
trained run, a truncated copy of its weights, an unfinished post-training child, a table, a fit, a
task file and a regular file to put output paths under. A few cases go through the real entry
point in a subprocess, to show that what a user sees is one line too.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from scalelab.cli import main
from tests.conftest import run_cli, train_tiny


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("world")
    run = train_tiny(root / "runs", "d2", 2000)
    trunc = root / "truncated"
    shutil.copytree(run, trunc)
    weights = trunc / "checkpoint" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    child = root / "children" / "d2-sft-unfinished"  # what a killed post-training stage leaves
    child.mkdir(parents=True)
    rec = json.loads((run / "record.json").read_text())
    rec.update(run_id=child.name, parent_id=rec["run_id"], phase="posttrain", technique="sft", status="running",
               metrics={}, finished_at=None)
    (child / "record.json").write_text(json.dumps(rec))
    (child / "config.json").write_text(json.dumps({"parent": str(run), "technique": "sft"}))
    rng = np.random.default_rng(0)
    N, D = (a.ravel() for a in np.meshgrid(np.logspace(7, 9, 4), np.logspace(9, 11, 4)))
    loss = (1.7 + 400 * N ** -0.34 + 410 * D ** -0.28) * np.exp(rng.normal(0, 0.003, N.size))
    table = root / "table.csv"
    pd.DataFrame({"N": N, "D": D, "loss": loss}).to_csv(table, index=False)
    (root / "noloss.csv").write_text("N,D\n1e7,1e9\n2e7,2e9\n")
    (root / "empty.csv").write_text("")
    (root / "garbage.csv").write_bytes(bytes(range(256)) * 4)
    fit = root / "fit.json"
    with pytest.raises(SystemExit) as e:
        main(["fit", str(table), "--law", "chinchilla", "--method", "vpnls", "--bootstrap", "0", "--out", str(fit)])
    assert e.value.code == 0
    (root / "corrupt.json").write_text('{"law": "chinchilla", "params": ')
    task = root / "task.jsonl"
    task.write_text("".join(json.dumps({"question": f"{i}+1?", "answer": f"#### {i + 1}"}) + "\n" for i in range(3)))
    (root / "file").write_text("a regular file\n")
    # files a user mistakes for the right kind: an empty JSONL, one broken line in the middle, lines without
    # the fields a stage reads, a fit that is a list, a downstream table with accuracies
    (root / "empty.jsonl").write_text("")
    (root / "broken.jsonl").write_text(task.read_text().splitlines()[0] + "\n{broken\n")
    (root / "nokeys.jsonl").write_text('{"foo": "bar"}\n')
    (root / "halfpair.jsonl").write_text('{"prompt": "1+1?", "chosen": "2"}\n')
    (root / "list.json").write_text("[]")
    down = pd.read_csv(table).assign(task_loss=lambda t: t.loss / 2)
    down.assign(accuracy=1 / (1 + np.exp(5 * (down.task_loss - 1.3)))).to_csv(root / "down.csv", index=False)
    (root / "emptydir").mkdir()
    return {"root": str(root), "run": str(run), "runs": str(root / "runs"), "trunc": str(trunc),
            "child": str(child), "table": str(table), "fit": str(fit), "task": str(task),
            "file": str(root / "file"), "under": str(root / "file" / "sub"), "empty": str(root / "emptydir"),
            "missing": str(root / "missing")}


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in Path(folder).rglob("*")
            if p.is_file() and p.name != ".lock"}


from tests.bad_input_cases import CASES  # noqa: E402  (a long table, kept apart)


@pytest.mark.parametrize("argv, needle", [pytest.param(c[1], c[2], id=c[0]) for c in CASES])
def test_bad_input_one_line_exit_2(world, argv, needle, capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # default output folders (runs/, report.html) would land here
    monkeypatch.setenv("SCALELAB_LOG_DIR", str(tmp_path / "logs"))
    before = snapshot(world["root"])
    code = 0
    try:
        main([a.format(**world) for a in argv])
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2, (code, err[-2000:])
    assert len(lines) == 1 and lines[0].startswith("error: "), err[-2000:]
    assert "Traceback" not in out + err
    assert needle.lower() in lines[0].lower(), (needle, lines[0])
    assert snapshot(world["root"]) == before, "a fixture was changed"
    assert list(tmp_path.iterdir()) == [], f"wrote {list(tmp_path.iterdir())}"


def test_battery_covers_every_verb():
    """`scalelab --help` lists the verbs; every one (and every subcommand) has bad input in the battery."""
    from scalelab.cli.app import app
    import typer

    group = typer.main.get_command(app)
    verbs = []
    for name, cmd in group.commands.items():
        subs = getattr(cmd, "commands", None)
        verbs += [f"{name} {s}" for s in subs] if subs else [name]
        if subs and getattr(cmd, "invoke_without_command", False):
            verbs.append(name)
    covered = {" ".join(c[1][:2]) for c in CASES} | {c[1][0] for c in CASES}
    assert [v for v in verbs if v not in covered] == []
    assert len(CASES) >= 100


@pytest.mark.parametrize("argv, needle", [
    (["fitt"], "did you mean 'fit'"),
    (["predict", "fit.json", "--params", "lots"], "--params"),
    (["train", "--preset", "d99"], "d99"),
])
def test_real_entry_point_prints_one_line(tmp_path, argv, needle):
    r = run_cli(*argv, cwd=tmp_path)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and needle in lines[0].lower(), r.stderr
    assert r.stdout == "" and list(tmp_path.iterdir()) == []


def test_internal_error_is_one_line_and_a_log(tmp_path, monkeypatch, capsys):
    """A bug is not bad input: one line naming a log file that holds the traceback, exit code 1."""
    import scalelab.laws.fitfile as fitfile

    def broken(*a, **k):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(fitfile, "load_law", broken)
    monkeypatch.setenv("SCALELAB_LOG_DIR", str(tmp_path))
    with pytest.raises(SystemExit) as e:
        main(["predict", str(tmp_path / "fit.json"), "--params", "1e6", "--tokens", "1e9"])
    err = capsys.readouterr().err
    assert e.value.code == 1 and err.count("\n") == 1 and "ZeroDivisionError" in err
    logs = list(tmp_path.glob("scalelab-error-*.log"))
    assert len(logs) == 1 and str(logs[0]) in err and "Traceback" in logs[0].read_text()
    assert "a bug" in logs[0].read_text() and os.stat(logs[0]).st_size > 0
