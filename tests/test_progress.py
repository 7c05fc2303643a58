"""Long verbs report progress in a log too: plain periodic lines where stderr is not a terminal."""
from __future__ import annotations

import re


def test_plain_lines_with_count_elapsed_and_eta_where_stderr_is_not_a_terminal(capsys, monkeypatch):
    from scalelab.progress import progress_bars

    monkeypatch.setenv("SCALELAB_PROGRESS_EVERY", "0")
    with progress_bars() as bars:  # stderr is captured: not a terminal
        task = bars.add_task("sampling", total=40)
        for done in (10, 20, 40):
            bars.update(task, completed=done)
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("sampling:")]
    assert len(lines) >= 2, lines
    assert re.fullmatch(r"sampling: 20/40 \(50%\), \d+:\d\d elapsed, ETA \d+:\d\d", lines[1])


def test_lines_are_spaced_in_time_and_can_be_turned_off(capsys, monkeypatch):
    from scalelab.progress import progress_bars

    monkeypatch.setenv("SCALELAB_PROGRESS_EVERY", "3600")
    with progress_bars() as bars:
        task = bars.add_task("sweep", total=100)
        for done in range(1, 101):
            bars.update(task, completed=done)
    assert capsys.readouterr().err.count("sweep:") == 0  # an hour between lines: none in a fast loop
    monkeypatch.setenv("SCALELAB_PROGRESS_EVERY", "0")
    with progress_bars(plain=False) as bars:
        bars.update(bars.add_task("quiet", total=2), completed=1)
    assert "quiet:" not in capsys.readouterr().err


def test_a_sweep_logs_progress_before_it_ends(tmp_path, monkeypatch):
    """`scalelab sweep 2> log`: the log has progress lines, not only the final table."""
    import os
    import subprocess
    import sys

    from tests.conftest import SMALL_TESTBED
    import json

    env = {**os.environ, "SCALELAB_PROGRESS_EVERY": "0", "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "scalelab", "sweep", "--plan", "grid", "--sizes", "d1", "--tokens",
                        "3000,6000", "--set", "seq_len=64", "--set", "batch_size=8", "--set", "threads=1",
                        "--set", f"source_options={json.dumps(SMALL_TESTBED)}", "--runs-dir", str(tmp_path)],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert re.search(r"sweep \d/2 members: [\d.e+]+/[\d.e+]+ \(\d+%\)", r.stderr), r.stderr[-2000:]
