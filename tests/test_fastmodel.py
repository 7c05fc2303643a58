"""FastLlama against transformers' LlamaForCausalLM: the same function, gradients and checkpoint files."""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file

from scalelab import checkpoint as ckpt, model as M
from scalelab.pretrain.fastllama import FastLlama, hf_names_of, hf_to_own, own_to_hf
from scalelab.pretrain.runmodel import checkpoint_view

V, T = 36, 48
CASES = {"d2": dict(name="d2"), "d4": dict(name="d4"), "d4-tied": dict(name="d4", tie=True),
         "d4-gqa": dict(name="d4", kv=2)}


def pair(name: str, tie: bool = False, kv: int | None = None, seed: int = 0):
    arch = M.parse_preset(name, V, T, tie_embeddings=tie)
    if kv:
        arch = dataclasses.replace(arch, n_kv_heads=kv)
    hf = M.build_model(arch, seed=seed, special_tokens={"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0})
    # HF's init leaves every norm at 1: perturb them so a swapped norm weight would show
    with torch.no_grad():
        for n, p in hf.named_parameters():
            if "norm" in n:
                p.add_(torch.randn_like(p) * 0.1)
    return hf, FastLlama.from_hf(hf)


def batch(seed: int = 1) -> torch.Tensor:
    return torch.randint(0, V, (3, T), generator=torch.Generator().manual_seed(seed))


def loss(model, x):
    logits = model(input_ids=x[:, :-1], use_cache=False).logits
    return F.cross_entropy(logits.reshape(-1, V), x[:, 1:].reshape(-1))


@pytest.mark.parametrize("case", CASES)
def test_logits_equal_hf(case):
    hf, fast = pair(**CASES[case])
    x = batch()
    with torch.no_grad():
        want, got = hf(input_ids=x, use_cache=False).logits, fast(input_ids=x).logits
    assert got.shape == want.shape == (3, T, V)
    assert (got - want).abs().max().item() < 1e-5


@pytest.mark.parametrize("case", ["d2", "d4-tied", "d4-gqa"])
def test_gradients_close(case):
    hf, fast = pair(**CASES[case])
    x = batch()
    loss(hf, x).backward()
    loss(fast, x).backward()
    want = {n: p.grad for n, p in hf.named_parameters()}
    got = own_to_hf({n: p.grad for n, p in fast.named_parameters()}, fast.config)
    assert set(got) == set(want)
    for n in want:
        scale = want[n].abs().max().item()
        assert (got[n] - want[n]).abs().max().item() <= 1e-5 * max(scale, 1e-3), n


def test_the_tolerance_would_catch_a_missing_rotary_embedding():
    hf, fast = pair("d2")
    x = batch()
    with torch.no_grad():
        want = hf(input_ids=x, use_cache=False).logits
        fast.rope[..., 0], fast.rope[..., 1] = 1.0, 0.0  # every angle 0: no rotation
        assert (fast(input_ids=x).logits - want).abs().max().item() > 1e-3


@pytest.mark.parametrize("case", ["d2", "d4-tied"])
def test_save_writes_hf_files_that_auto_model_loads(case, tmp_path):
    from transformers import AutoModelForCausalLM

    hf, fast = pair(**CASES[case])
    fast.save_pretrained(tmp_path / "fast")
    hf.save_pretrained(tmp_path / "hf")
    layout = {}
    for who in ("fast", "hf"):
        with safe_open(str(tmp_path / who / "model.safetensors"), "pt") as f:
            layout[who] = ({k: (tuple(f.get_slice(k).get_shape()), f.get_slice(k).get_dtype()) for k in f.keys()},
                           f.metadata())
    assert layout["fast"] == layout["hf"]
    for file in ("config.json", "generation_config.json"):
        a, b = (json.loads((tmp_path / who / file).read_text()) for who in ("fast", "hf"))
        assert a == b, file
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "fast", dtype=torch.float32)
    x = batch()
    with torch.no_grad():
        assert torch.equal(loaded(input_ids=x, use_cache=False).logits, hf(input_ids=x, use_cache=False).logits)


@pytest.mark.parametrize("case", ["d4", "d4-tied"])
def test_loads_an_hf_checkpoint(case, tmp_path):
    hf, _ = pair(**CASES[case])
    hf.save_pretrained(tmp_path)
    fast = FastLlama.from_pretrained(tmp_path)
    x = batch()
    with torch.no_grad():
        assert (fast(input_ids=x).logits - hf(input_ids=x, use_cache=False).logits).abs().max().item() < 1e-5
    assert fast.config.tie_word_embeddings == (case == "d4-tied")
    assert (fast.lm_head.weight is fast.embed_tokens.weight) == (case == "d4-tied")


def test_name_mapping_round_trips_and_refuses_strangers():
    hf, fast = pair("d4", kv=2)
    sd = {n: t.detach() for n, t in hf.state_dict().items()}
    back = own_to_hf(hf_to_own(sd, fast.config), fast.config)
    assert set(back) == set(sd) and all(torch.equal(back[n], sd[n]) for n in sd)
    with pytest.raises(KeyError, match="model.layers.9"):
        hf_to_own({**sd, "model.layers.9.mlp.up_proj.weight": sd["model.norm.weight"]}, fast.config)


def test_parameters_come_in_hf_order_within_each_weight_decay_group():
    """Optimizer state is restored by position within a group (`checkpoint.flat_to_optimizer`), so
    FastLlama's parameters, expanded to HF's, must come in the order of LlamaForCausalLM's."""
    for tie in (False, True):
        hf, fast = pair("d4", tie=tie)
        for matrices in (True, False):
            want = [n for n, p in hf.named_parameters() if (p.dim() >= 2) == matrices]
            got = [h for n, p in fast.named_parameters() if (p.dim() >= 2) == matrices
                   for h in hf_names_of(n, fast.config)]
            assert got == want


def _adamw(model):
    return torch.optim.AdamW([{"params": [p for p in model.parameters() if p.dim() >= 2], "weight_decay": 0.1},
                              {"params": [p for p in model.parameters() if p.dim() < 2], "weight_decay": 0.0}],
                             lr=1e-2, fused=True)


def test_a_checkpoint_of_the_hf_model_resumes_in_fastllama(tmp_path):
    """Weights and AdamW moments in checkpoint files keep HF's names, so a run checkpointed by either
    model resumes in the other: after the same next step both hold the same weights."""
    hf, fast = pair("d4")
    opt = _adamw(hf)
    for s in (1, 2):
        loss(hf, batch(s)).backward()
        opt.step()
        opt.zero_grad()
    ckpt.save(tmp_path, hf, None, opt, {"step": 2})
    resumed = FastLlama.from_pretrained(tmp_path / "checkpoint")
    ropt = _adamw(resumed)
    view_model, view_opt = checkpoint_view(resumed, ropt)
    ckpt.load(tmp_path / "checkpoint", view_opt, view_model)
    for model, o in ((hf, opt), (resumed, ropt)):
        loss(model, batch(3)).backward()
        o.step()
    want = hf.state_dict()
    got = own_to_hf(resumed.state_dict(), resumed.config)
    for n in got:
        assert (got[n] - want[n]).abs().max().item() < 1e-5, n
    # and back: FastLlama's checkpoint holds the same names and tensors as the HF model's
    (tmp_path / "again").mkdir()
    ckpt.save(tmp_path / "again", view_model, None, view_opt, {"step": 3})

    moments = load_file(str(tmp_path / "again" / "checkpoint" / ckpt.OPTIMIZER_FILE))
    assert "model.layers.0.self_attn.k_proj.weight.exp_avg" in moments
    assert moments["model.layers.0.mlp.up_proj.weight.exp_avg_sq"].shape == hf.model.layers[0].mlp.up_proj.weight.shape


def test_bf16_autocast_runs_and_agrees_with_hf():
    hf, fast = pair("d2")
    x = batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        want, got = loss(hf, x), loss(fast, x)
    got.backward()
    assert abs(got.item() - want.item()) < 2e-2 and all(p.grad is not None for p in fast.parameters())


def test_which_runs_train_fastllama():
    from scalelab.pretrain.runmodel import uses_fast

    dense, moe = M.parse_preset("d2", V, T), M.parse_preset("moe-d2", V, T)
    assert uses_fast(dense, "sdpa", "single") and uses_fast(dense, "sdpa", "ddp")
    assert not uses_fast(moe, "sdpa", "single")          # Mixtral stays HF's
    assert not uses_fast(dense, "eager", "single")       # HF's eager attention was asked for
    assert not uses_fast(dense, "sdpa", "fsdp")          # FSDP gathers into HF's classes
