"""Loading a causal LM and its tokenizer from a run directory or a Hugging Face checkpoint
directory, with one-line errors for everything a user can get wrong.

Weights are read from safetensors only (`use_safetensors=True`): a `pytorch_model.bin` is a
pickle, and unpickling a file runs whatever code it holds.
"""
from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

from scalelab.errors import InputError

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


def resolve_checkpoint(path: str | Path) -> Path:
    """A run directory (its `checkpoint/`) or a checkpoint directory itself."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such run or checkpoint directory")
    if not p.is_dir():
        raise InputError(f"{p}: not a directory (expected a run directory or a Hugging Face checkpoint)")
    # A run directory names the run's result: refused until the run finishes. A checkpoint directory
    # given as such is loaded as it is (a stage validating the model it has just saved does that).
    record = parent_record(p) if (p / "record.json").is_file() else None
    if record is not None and record.status != "complete":
        raise InputError(f"{p}: {unfinished(record)}")
    if (p / "checkpoint" / "config.json").is_file():  # a run directory (its config.json is the run's)
        return p / "checkpoint"
    if (p / "config.json").is_file():
        return p
    if (p / "record.json").is_file():
        raise InputError(f"{p}: this run has no checkpoint/ (it made no model, or it failed before saving one)")
    raise InputError(f"{p}: no config.json here or in {p / 'checkpoint'}: not a model checkpoint")


def unfinished(record: Any) -> str:
    """What to say about a run whose record is not complete: its weights are not the result."""
    why = f"failed: {record.error}" if record.status == "failed" else "stopped or still going"
    return (f"run {record.run_id} did not finish ({why}); re-run the command that made it (it picks up where "
            "it stopped), then use the finished run")


def check_weights(ckpt: Path, role: str = "") -> None:
    """The checkpoint's safetensors files exist and are whole: each header parses and describes
    exactly the bytes on disk. Checked before loading, so that a truncated copy or an interrupted
    download is one line naming the file rather than a deserialiser's traceback."""
    label = f"{role} " if role else ""
    index = ckpt / "model.safetensors.index.json"
    if index.is_file():
        try:
            files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError):
            raise InputError(f"{label}{index}: not a valid safetensors index (no weight_map)") from None
    elif (ckpt / "model.safetensors").is_file():
        files = ["model.safetensors"]
    else:
        raise InputError(f"{label}{ckpt}: no model.safetensors; scalelab loads safetensors weights only "
                         "(a .bin file is a pickle and is never loaded)")
    for name in files:
        check_safetensors(ckpt / str(name), label)


def check_safetensors(path: Path, label: str = "") -> None:
    """One safetensors file: an 8-byte little-endian header length, a JSON header whose tensors'
    data_offsets cover the rest of the file exactly (the format's own rule)."""
    where = f"{label}{path}"
    if not path.is_file():
        raise InputError(f"{where}: missing (named by the checkpoint's index)")
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        n = int.from_bytes(head, "little") if len(head) == 8 else -1
        if n < 2 or n > size - 8 or n > 100_000_000:
            raise InputError(f"{where}: not a whole safetensors file ({size} bytes; truncated or not safetensors)")
        try:
            header = json.loads(f.read(n))
            ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"]
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError, IndexError,
                AttributeError):
            raise InputError(f"{where}: corrupt safetensors header") from None
    expected = 8 + n + max(ends, default=0)
    if expected != size:
        cut = "truncated" if size < expected else "has trailing bytes"
        raise InputError(f"{where}: {cut}: {size} bytes on disk, its header describes {expected}; "
                         "copy or save the checkpoint again")


def check_causal_lm(ckpt: Path) -> dict[str, Any]:
    """The config as a dict, after checking it describes a causal language model."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    try:
        cfg = json.loads((ckpt / "config.json").read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{ckpt / 'config.json'}: not valid JSON ({e})") from None
    mtype = cfg.get("model_type")
    archs = cfg.get("architectures") or []
    causal_heads = ("ForCausalLM", "LMHeadModel")
    if mtype not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES or (archs and not any(a.endswith(causal_heads) for a in archs)):
        what = ", ".join(archs) or str(mtype)
        raise InputError(f"{ckpt}: holds a {what} model, not a causal language model (expected e.g. LlamaForCausalLM)")
    return cfg


def check_tokenizer(ckpt: Path) -> None:
    if not any((ckpt / f).is_file() for f in TOKENIZER_FILES):
        raise InputError(f"{ckpt}: no tokenizer files ({', '.join(TOKENIZER_FILES)}); save the tokenizer next to "
                         "the model with tokenizer.save_pretrained(dir)")


@contextlib.contextmanager
def quiet_transformers():
    """No weight-loading progress bars or info logs on the command line; settings restored."""
    from transformers.utils import logging as hf_logging

    bars, level = hf_logging.is_progress_bar_enabled(), hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def load_causal_lm(path: str | Path, *, device: str = "cpu", model_class: Any = None) -> tuple[Any, Any, Path]:
    """(model in eval mode, tokenizer, checkpoint dir). `model_class` defaults to
    AutoModelForCausalLM."""
    import torch
    from transformers import AutoModelForCausalLM

    from scalelab.checkpoint import load_tokenizer

    ckpt = resolve_checkpoint(path)
    check_causal_lm(ckpt)
    check_tokenizer(ckpt)
    check_weights(ckpt)
    with quiet_transformers():
        try:
            tok = load_tokenizer(ckpt)
        except (OSError, ValueError) as e:
            raise InputError(f"{ckpt}: cannot load the tokenizer ({' '.join(str(e).split())[:200]})") from None
        try:
            model = (model_class or AutoModelForCausalLM).from_pretrained(
                ckpt, dtype=torch.float32, use_safetensors=True)
        except (OSError, ValueError, KeyError) as e:
            raise InputError(f"{ckpt}: cannot load the model ({' '.join(str(e).split())[:200]})") from None
    return model.to(device).eval(), tok, ckpt


def skeleton(ckpt: str | Path) -> Any:
    """The checkpoint's model built on the meta device from its config: its modules and shapes, no
    weights read and no memory taken. What a stage checks about a model's layout before it starts."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    ckpt = resolve_checkpoint(ckpt)
    check_causal_lm(ckpt)
    with quiet_transformers(), torch.device("meta"):
        try:
            return AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(ckpt))
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise InputError(f"{ckpt}: cannot build the model from its config ({' '.join(str(e).split())[:200]})") from None


def parent_record(path: str | Path) -> Any:
    """The run record of a run directory (None for a bare checkpoint directory)."""
    from scalelab.records import read_record

    p = Path(path)
    if (p / "record.json").is_file():
        return read_record(p)
    if p.name == "checkpoint" and (p.parent / "record.json").is_file():
        return read_record(p.parent)
    return None


def run_name(path: str | Path, record: Any) -> str:
    if record is not None:
        return record.run_id
    p = Path(path).resolve()
    return p.parent.name if p.name == "checkpoint" else p.name


def testbed_for(record: Any) -> Any:
    """The testbed the policy was trained on (its moduli, steps and splits), else the default."""
    from scalelab.tasks.testbed import TestbedConfig
    from scalelab.data.testbed import TestbedSource

    src = getattr(record, "source", None) if record is not None else None
    if isinstance(src, dict) and src.get("name") == "testbed" and isinstance(src.get("config"), dict):
        return TestbedSource(TestbedConfig.build(src["config"]))
    return TestbedSource()
