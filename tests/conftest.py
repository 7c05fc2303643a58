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


# ---- a user-shaped model and task file (no scalelab run record, no testbed) ------------------------
def write_user_model(out: Path, texts: list[str], *, arch: str = "llama", chat_template: str | None = None) -> Path:
    """A plain Hugging Face model directory, as a user brings one: a byte-level BPE tokenizer trained on
    `texts` and an untrained tiny causal LM of `arch` (llama, qwen2 or gpt2), saved with save_pretrained."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    from scalelab.data.tokenizer import train_bpe

    tok = train_bpe(texts, 300)
    if chat_template:
        tok.chat_template = chat_template
    ids = dict(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    if arch == "gpt2":
        model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_embd=16, n_layer=1, n_head=2, n_positions=256, **ids))
    else:
        cls, cfg = {"llama": (LlamaForCausalLM, LlamaConfig), "qwen2": (Qwen2ForCausalLM, Qwen2Config)}[arch]
        model = cls(cfg(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256, **ids))
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def user_task(tmp_path_factory) -> Path:
    """A GSM8K-format task file of generated word problems (train and test splits, difficulty 1..2)."""
    from scalelab.tasks.wordproblems import generate, write_jsonl

    return write_jsonl(tmp_path_factory.mktemp("user_task") / "gsm8k.jsonl", generate("gsm8k", 60, seed=0, max_ops=2))


@pytest.fixture(scope="session")
def user_model(tmp_path_factory, user_task) -> Path:
    """An untrained tiny Llama directory with a BPE tokenizer that reads the user task's text."""
    return write_user_model(tmp_path_factory.mktemp("user_model") / "llama", user_task.read_text().splitlines())
