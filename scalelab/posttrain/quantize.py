"""Quantization with torchao: smaller weights, and what that costs in accuracy and buys in speed.

    scalelab posttrain quantize --from RUN --method int8-weight|int8-dynamic|int4-weight --runs-dir DIR

  int8-weight   weights stored as int8 with one scale per output row; activations stay float
  int8-dynamic  int8 weights and int8 activations quantized per token at run time
  int4-weight   4-bit weights in groups of `--group-size`; torchao 0.18 has int4 kernels for CUDA
                only, so on a CPU this stops with a message that says so

The model is loaded through transformers' `TorchAoConfig`, so the child is a standard Hugging Face
checkpoint whose `config.json` names the quantization and whose `model.safetensors` holds the int8
data and scales (torchao's safetensors support: tensors plus a JSON description of each
quantized tensor, no pickle); `from_pretrained` on the child gives the quantized model back when
torchao is installed. Every decoder linear layer is checked to hold a quantized tensor after
loading, because a failed conversion inside `from_pretrained` leaves freshly initialised weights
behind with only a log message. transformers keeps embeddings and lm_head in float.

Reported: weights size on disk (model.safetensors, parent and child), latency (wall time per
generated token of greedy decoding and of one full forward, both models through the same
Hugging Face module path, median of `--repeats`, on a machine whose load is not controlled), and
accuracy by difficulty against the parent on the same problems. Quantizing does no forward or
backward pass, so this stage adds 0 post-training FLOPs; a quantized forward does the same number of
multiply-adds in int8 (the record's FLOPs convention counts multiply-adds, not their precision).
"""
from __future__ import annotations

import shutil
import statistics
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from scalelab.anatomy import in_out, projections
from scalelab.errors import ConfigError, InputError
from scalelab.posttrain.stage import StageConfig, StageContext, StageResult, Technique

METHODS = ("int8-weight", "int8-dynamic", "int4-weight")


class QuantizeConfig(StageConfig):
    method: Literal["int8-weight", "int8-dynamic", "int4-weight"] = "int8-weight"
    group_size: int = Field(32, ge=16, le=1024, description="int4: weights per scale")
    latency_prompts: int = Field(16, ge=1, le=4096, description="prompts in the latency batch")
    latency_tokens: int = Field(32, ge=1, le=4096, description="greedy tokens per prompt in the latency run")
    repeats: int = Field(3, ge=1, le=100)

    def check_inputs(self, parent: Any) -> None:
        from scalelab.inference.loading import skeleton

        check_layers(self, skeleton(parent.checkpoint))  # before the child's folder exists


def torchao_config(cfg: QuantizeConfig) -> Any:
    from torchao.quantization import Int4WeightOnlyConfig, Int8DynamicActivationInt8WeightConfig, Int8WeightOnlyConfig

    if cfg.method == "int8-weight":
        return Int8WeightOnlyConfig()
    if cfg.method == "int8-dynamic":
        return Int8DynamicActivationInt8WeightConfig()
    return Int4WeightOnlyConfig(group_size=cfg.group_size)


def check_layers(cfg: QuantizeConfig, model: Any) -> None:
    """torchao swaps the weights of nn.Linear only: a model whose projections are other layers
    (GPT-2's Conv1D) would be saved partly in float, unreported. Refused."""
    import torch

    conv = [(n, type(m).__name__) for n, m in projections(model) if not isinstance(m, torch.nn.Linear)]
    if conv:
        raise ConfigError(f"--method {cfg.method}: torchao quantizes nn.Linear layers, and this "
                          f"{model.config.model_type}'s projections are {conv[0][1]} layers ({conv[0][0]}, ...); "
                          "it cannot be quantized here")


def check_platform(conf: Any, cfg: QuantizeConfig, model: Any) -> None:
    """Quantize one small linear layer first, so an unsupported method fails with a clear message
    instead of inside `from_pretrained`; int4 also needs every input size divisible by the group."""
    import torch
    from torchao.quantization import quantize_

    n = 2 * cfg.group_size
    probe = torch.nn.Sequential(torch.nn.Linear(n, 32, bias=False))
    try:
        quantize_(probe, conf)
        probe(torch.zeros(1, n))
        if not _quantized(probe[0].weight):
            raise NotImplementedError("a probe layer was left in float")
    except (NotImplementedError, ImportError, AssertionError, RuntimeError, ValueError) as e:
        why = " ".join(str(e).split())[:160]
        raise ConfigError(f"--method {cfg.method}: torchao cannot run it on this platform ({type(e).__name__}: {why}); "
                          "int4 weight-only needs a CUDA GPU with torchao's int4 kernels; on a CPU use "
                          "int8-weight or int8-dynamic") from None
    check_layers(cfg, model)
    if cfg.method == "int4-weight":
        sizes = sorted({in_out(m)[0] for _, m in projections(model)})
        if any(k % cfg.group_size for k in sizes):
            raise ConfigError(f"--group-size {cfg.group_size}: must divide every layer's input size {sizes}")


def _quantized(w: Any) -> bool:
    import torch

    return type(w) is not torch.Tensor and type(getattr(w, "data", w)) is not torch.Tensor


def load_quantized(ckpt: Path, conf: Any) -> Any:
    import torch
    from transformers import AutoModelForCausalLM, TorchAoConfig

    from scalelab.inference.loading import quiet_transformers

    with quiet_transformers():
        try:
            model = AutoModelForCausalLM.from_pretrained(ckpt, quantization_config=TorchAoConfig(conf),
                                                         dtype=torch.float32, use_safetensors=True)
        except RuntimeError as e:
            raise InputError(f"{ckpt}: torchao could not convert the weights ({' '.join(str(e).split())[:160]})") from None
    plain = [n for n, m in projections(model) if not _quantized(m.weight)]
    if plain:
        raise InputError(f"{ckpt}: torchao left {len(plain)} linear layers unquantized (first: {plain[0]}); "
                         "refusing to save a partly converted model")
    try:  # a model's own layer code may use an operation torchao's tensors lack (Falcon's weight.T)
        with torch.inference_mode():
            model(input_ids=torch.zeros(1, 2, dtype=torch.long))
    except (NotImplementedError, RuntimeError, TypeError) as e:
        why = " ".join(str(e).split())[:160]
        raise ConfigError(f"{ckpt}: the {model.config.model_type} layers cannot run on torchao's quantized "
                          f"weights ({type(e).__name__}: {why})") from None
    return model.eval()


def latency(model: Any, tokenizer: Any, cfg: QuantizeConfig, data: Any) -> dict[str, float]:
    """Median wall time per generated token (greedy, a batch of the task's prompts) and of one full forward."""
    import torch

    from scalelab.inference.engine import Engine, SamplingParams

    prompts = data.latency_prompts(cfg.latency_prompts, cfg.seed)
    eng = Engine(model, tokenizer, backend="hf", max_batch=cfg.max_batch)
    params = SamplingParams(temperature=0.0, max_tokens=cfg.latency_tokens)
    ids = torch.tensor([eng.encode(prompts[0])] * len(prompts), dtype=torch.long)
    gen_t, fwd_t = [], []
    with torch.inference_mode():
        eng.generate(prompts[:2], 1, params)  # warm-up: first calls allocate and pick kernels
        for _ in range(cfg.repeats):
            g = eng.generate(prompts, 1, params)
            gen_t.append(g.wall_s / max(1, g.generated_tokens))
            t0 = time.perf_counter()
            model(input_ids=ids)
            fwd_t.append(time.perf_counter() - t0)
    return {"ms_per_generated_token": 1e3 * statistics.median(gen_t), "forward_ms": 1e3 * statistics.median(fwd_t)}


def transform(ctx: StageContext) -> StageResult:
    cfg: QuantizeConfig = ctx.cfg
    conf = torchao_config(cfg)
    parent = ctx.parent
    fp = parent.load_model(train=False)
    check_platform(conf, cfg, fp)
    model = load_quantized(parent.checkpoint, conf)
    staged = ctx.run_dir / ".quantized.tmp"
    shutil.rmtree(staged, ignore_errors=True)
    from scalelab.inference.loading import quiet_transformers

    with quiet_transformers():
        model.save_pretrained(staged, safe_serialization=True)
    size = sum(f.stat().st_size for f in staged.glob("*.safetensors"))
    parent_size = sum(f.stat().st_size for f in parent.checkpoint.glob("model*.safetensors"))
    ctx.progress("latency", 0, 2)
    lat_parent = latency(fp, parent.tokenizer, cfg, ctx.data)
    lat = latency(model, parent.tokenizer, cfg, ctx.data)
    metrics = {"method": cfg.method, "weights_bytes": size, "parent_weights_bytes": parent_size,
               "size_ratio": parent_size / size, **lat, **{f"parent_{k}": v for k, v in lat_parent.items()},
               "speedup_generate": lat_parent["ms_per_generated_token"] / lat["ms_per_generated_token"],
               "speedup_forward": lat_parent["forward_ms"] / lat["forward_ms"],
               "storage": "torchao tensors in safetensors (config.json quantization_config: torchao)"}

    def save(_: Any, out: Path) -> None:
        for f in staged.iterdir():
            shutil.move(str(f), out / f.name)
        shutil.rmtree(staged, ignore_errors=True)

    return StageResult(model=model, variant=f"quantize-{cfg.method}", metrics=metrics, tokens=0,
                       eval_backend="hf", save=save)


TECHNIQUE = Technique("quantize", QuantizeConfig, transform,
                      "torchao int8 weight-only / int8 dynamic (int4 weight-only on CUDA), size, latency, accuracy")
