"""Shared fixtures. Tests are small, hermetic and CPU-only; slow ones carry @pytest.mark.slow."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

# One torch thread per test process: two busy processes with two threads each run 5-15x slower.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Published scaling-law data sets (read in place, never copied into the project)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"published fixtures not present at ../shared/data")
    return SHARED_DATA


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the real command line in a subprocess (exit codes and stderr as a user sees them)."""
    return subprocess.run(
        [sys.executable, "-m", "scalelab", *map(str, args)],
        capture_output=True, text=True, cwd=cwd, timeout=timeout,
    )


@pytest.fixture
def cli():
    return run_cli


# ---- a tiny trained policy (post-training and test-time tests share it) ----------------------------
SMALL_TESTBED = {"max_steps": 3, "max_modulus": 7, "eval_docs": 20}


def train_tiny(runs_dir: Path, model: str = "d3", tokens: int = 30_000, source_options: dict | None = None) -> Path:
    """A Llama of the ladder trained for a few seconds on a small testbed; returns its run folder.
    It writes well-formed, mostly wrong solutions: room for every technique and strategy to act."""
    from scalelab.pretrain.train import TrainConfig, train

    cfg = TrainConfig.build(model=model, source="testbed", seq_len=64, batch_size=16, tokens=tokens, lr=0.01,
                            threads=1, eval_every=10**6, source_options=source_options or SMALL_TESTBED)
    rec = train(cfg, runs_dir)
    assert rec.status == "complete"
    return Path(runs_dir) / rec.run_id


@pytest.fixture(scope="session")
def tiny_parent(tmp_path_factory) -> Path:
    """A d3 (3 layers, 3 heads, width 48) trained once per test session; tests must not modify it."""
    return train_tiny(tmp_path_factory.mktemp("tiny_parent"), "d3", 30_000)
