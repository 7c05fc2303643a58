"""Training checkpoints that survive crashes, written without pickle.

A checkpoint is a directory `RUN_DIR/checkpoint/` holding

    model.safetensors, config.json, generation_config.json   `save_pretrained` (HF format)
    tokenizer.json, tokenizer_config.json, ...               the source's tokenizer
    optimizer.safetensors                                    AdamW moments + the torch RNG state
    trainer_state.json                                       step, tokens, FLOPs, wall time, the
                                                             optimizer's scalars; written last,
                                                             so its presence marks completeness

so `AutoModelForCausalLM.from_pretrained(RUN_DIR / "checkpoint")` loads the model, and nothing
is ever read back with `torch.load` (unpickling an untrusted file runs arbitrary code).

Crash safety: a new checkpoint is written in full to a temporary sibling directory, flushed to
disk, and then renamed into place. The previous good checkpoint is renamed to `checkpoint.old`
just before and removed just after; `latest()` falls back to it, so a kill or a full disk at any
moment leaves at least one complete checkpoint.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

from scalelab.records import CHECKPOINT_DIR, atomic_write_json, fsync_dir

STATE_FILE = "trainer_state.json"
OPTIMIZER_FILE = "optimizer.safetensors"
OLD_SUFFIX = ".old"
TMP_PREFIX = ".checkpoint.tmp-"


def is_complete(path: Path) -> bool:
    return (path / STATE_FILE).is_file() and (path / OPTIMIZER_FILE).is_file()


def latest(run_dir: str | Path, name: str = CHECKPOINT_DIR) -> Path | None:
    """The newest complete checkpoint of a run (`name`: post-training keeps its training state
    apart from the child model, in `resume/`), or None."""
    run_dir = Path(run_dir)
    for p in (run_dir / name, run_dir / (name + OLD_SUFFIX)):
        if p.is_dir() and is_complete(p):
            return p
    return None


def remove_stale_temporaries(run_dir: str | Path) -> None:
    """Delete half-written checkpoints left by a killed process (call while holding the run lock)."""
    for p in Path(run_dir).glob(TMP_PREFIX + "*"):
        shutil.rmtree(p, ignore_errors=True)


def save(run_dir: str | Path, model: Any, tokenizer: Any, optimizer: Any, state: dict[str, Any]) -> Path:
    """Write a complete checkpoint, then swap it in; on any error the previous one is untouched."""
    def write(tmp: Path) -> None:
        with quiet_hf():
            model.save_pretrained(tmp, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)

    return swap_in(run_dir, CHECKPOINT_DIR, write, model, optimizer, state)


def swap_in(run_dir: str | Path, name: str, write: Callable[[Path], None], model: Any, optimizer: Any,
            state: dict[str, Any]) -> Path:
    """`write(tmp)` the weights, add the optimizer moments, the RNG state and `state`, then rename
    the whole directory into `run_dir/name` (the previous one kept as `name.old` until then)."""
    import torch
    from safetensors.torch import save_file

    run_dir = Path(run_dir)
    final, old = run_dir / name, run_dir / (name + OLD_SUFFIX)
    tmp = Path(tempfile.mkdtemp(prefix=TMP_PREFIX, dir=run_dir))
    try:
        write(tmp)
        tensors, scalars = optimizer_to_flat(optimizer, model)
        tensors["rng.torch_cpu"] = torch.get_rng_state()
        save_file(tensors, str(tmp / OPTIMIZER_FILE))
        _fsync_tree(tmp)
        atomic_write_json(tmp / STATE_FILE, {**state, "optimizer": scalars})  # the completeness mark
        if final.is_dir() and is_complete(final):
            if old.exists():
                shutil.rmtree(old)  # `final` is complete, so an older fallback is no longer needed
            os.rename(final, old)
        elif final.exists():
            shutil.rmtree(final)  # incomplete (tampered with); `old`, if any, stays the fallback
        os.rename(tmp, final)
        fsync_dir(run_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)
    return final


@contextlib.contextmanager
def quiet_hf():
    """No "Writing model shards" / "Loading weights" bars per checkpoint; the caller's setting is restored."""
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()


def load(path: Path, optimizer: Any, model: Any) -> dict[str, Any]:
    """Restore optimizer moments and the RNG state from `path` into `optimizer`; return the
    trainer state. (The model itself is loaded with `from_pretrained` by the caller.)"""
    import torch
    from safetensors.torch import load_file

    state = json.loads((path / STATE_FILE).read_text())
    tensors = load_file(str(path / OPTIMIZER_FILE))
    torch.set_rng_state(tensors.pop("rng.torch_cpu"))
    optimizer.load_state_dict(flat_to_optimizer(tensors, state["optimizer"], model))
    return state


# ---- optimizer state <-> (safetensors, JSON) ------------------------------------------------
def optimizer_to_flat(optimizer: Any, model: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Tensors keyed `param_name.slot`, scalars as JSON. Keys use parameter names, not indices,
    so a reordering of the groups cannot silently pair moments with the wrong weights."""
    sd = optimizer.state_dict()
    names = _index_to_name(optimizer, model)
    tensors, scalars = {}, {"param_groups": [], "state": {}}
    for idx, slots in sd["state"].items():
        for slot, v in slots.items():
            if hasattr(v, "shape") and v.dim() > 0:
                tensors[f"{names[idx]}.{slot}"] = v.detach().cpu().contiguous().clone()  # safetensors: host memory
            else:
                scalars["state"].setdefault(names[idx], {})[slot] = float(v)
    for g in sd["param_groups"]:
        scalars["param_groups"].append(
            {k: ([names[i] for i in v] if k == "params" else v) for k, v in g.items()}
        )
    return tensors, scalars


def flat_to_optimizer(tensors: dict[str, Any], scalars: dict[str, Any], model: Any) -> dict[str, Any]:
    import torch

    groups, state, index = [], {}, {}
    for g in scalars["param_groups"]:
        ids = []
        for name in g["params"]:
            index[name] = len(index)
            ids.append(index[name])
        groups.append({**g, "params": ids})
    for name, idx in index.items():
        slots = {k: torch.tensor(v, dtype=torch.float32) for k, v in scalars["state"].get(name, {}).items()}
        for key, t in tensors.items():
            if key.rsplit(".", 1)[0] == name:
                slots[key.rsplit(".", 1)[1]] = t
        if slots:
            state[idx] = slots
    return {"state": state, "param_groups": groups}


def _index_to_name(optimizer: Any, model: Any) -> dict[int, str]:
    by_id = {id(p): n for n, p in model.named_parameters()}
    names, i = {}, 0
    for g in optimizer.param_groups:
        for p in g["params"]:
            names[i] = by_id[id(p)]
            i += 1
    return names


def _fsync_tree(root: Path) -> None:
    for dirpath, _, files in os.walk(root):
        for f in files:
            fd = os.open(os.path.join(dirpath, f), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(Path(dirpath))


GENERIC_TOKENIZERS = ("TokenizersBackend", "PreTrainedTokenizerFast")


def load_tokenizer(path: str | Path) -> Any:
    """The tokenizer saved in `path`, with the pipeline it was saved with. transformers 5's
    AutoTokenizer picks a class from config.json's model type (a Qwen2 directory gets
    Qwen2Tokenizer), and such a class builds its pre-tokenizer in code (Qwen2's splits every digit)
    instead of reading the saved tokenizer.json's: a BPE trained and saved as a generic fast
    tokenizer then encodes numbers otherwise than the model was trained on (measured on a Qwen2
    trained here: '11' one token when saved, two when reloaded). When tokenizer_config.json names the
    generic class, that class loads it."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    p = Path(path)
    try:
        saved = json.loads((p / "tokenizer_config.json").read_text()).get("tokenizer_class")
    except (OSError, ValueError, AttributeError):
        saved = None
    if saved in GENERIC_TOKENIZERS and (p / "tokenizer.json").is_file():
        return PreTrainedTokenizerFast.from_pretrained(p)
    return AutoTokenizer.from_pretrained(p)
