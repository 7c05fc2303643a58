"""The ladder's accounting checked against the built models: parameter counts against the
tensors, FLOPs against torch's own FlopCounterMode (an independent count of every matmul)."""
from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from scalelab import model as M
from scalelab.errors import ConfigError

VOCAB, T = 40, 32


def _counted_train_flops(arch: M.Arch, batch: int, seq: int) -> int:
    """FlopCounterMode over one forward + backward. Eager attention and eager experts, because
    the counter has no formula for CPU flash attention nor for grouped_mm (both would read 0)."""
    cfg = M.hf_config(arch, attn_implementation="eager")
    cfg._experts_implementation = "eager"
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg)
    x = torch.randint(0, arch.vocab_size, (batch, seq))
    with FlopCounterMode(display=False) as fc:
        model(input_ids=x, use_cache=False).logits.sum().backward()
    return fc.get_total_flops()


@pytest.mark.parametrize("name,tie", [("d1", False), ("d3", False), ("d2", True), ("moe-d2", False),
                                      ("moe-d3", True), ("d3w32", False)])
def test_param_counts_match_the_built_model(name, tie):
    arch = M.parse_preset(name, VOCAB, T, tie_embeddings=tie)
    model = M.build_model(arch, seed=0)
    counted = M.count_module_params(model)
    assert M.param_counts(arch) == counted
    unique = {id(p): p.numel() for p in model.parameters()}
    assert counted.total == sum(unique.values())
    assert (counted.unembedding == 0) == tie


@pytest.mark.parametrize("name", ["d1", "d3", "moe-d2", "d2w48"])
def test_training_flops_match_flop_counter(name):
    arch = M.parse_preset(name, VOCAB, T)
    batch = 3
    counted = _counted_train_flops(arch, batch, T)
    # A dense kernel computes all T x T scores, so the comparable count is the non-causal one.
    ours = M.train_flops_per_token(arch, T, causal=False) * batch * T
    # Tolerance 0.5%: the counter also sees the rotary-frequency matmul, which we leave out.
    # MoE: the router sends each token to exactly top_k experts, so the count is exact too.
    assert counted == pytest.approx(ours, rel=5e-3)


def test_causal_count_removes_the_masked_half_of_attention():
    arch = M.parse_preset("d3", VOCAB, 128)
    full, causal = M.forward_flops_per_token(arch, 128, causal=False), M.forward_flops_per_token(arch, 128)
    per_key = 2 * 2 * arch.depth * arch.n_heads * arch.head_dim
    assert full - causal == pytest.approx(per_key * (128 - 129 / 2))


def test_decode_flops_match_flop_counter_with_kv_cache():
    arch = M.parse_preset("d2", VOCAB, 64)
    cfg = M.hf_config(arch, attn_implementation="eager")
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_config(cfg).eval()
    prompt = torch.randint(0, VOCAB, (1, 20))
    with torch.no_grad():
        with FlopCounterMode(display=False) as fc:
            out = model(input_ids=prompt, use_cache=True, logits_to_keep=1)
        assert fc.get_total_flops() == pytest.approx(M.prefill_flops(arch, 20, logits="last")
                                                     + 2 * 2 * arch.depth * arch.width * (20 * 20 - 20 * 21 / 2),
                                                     rel=5e-3)  # the kernel scores all 20x20 pairs
        with FlopCounterMode(display=False) as fc:
            model(input_ids=torch.tensor([[3]]), cache=out.past_key_values, use_cache=True)
    assert fc.get_total_flops() == pytest.approx(M.decode_flops(arch, 21), rel=5e-3)


def test_prefill_equals_the_sum_of_decodes():
    arch = M.parse_preset("d4", 100, 64)
    assert M.prefill_flops(arch, 50, logits="all") == pytest.approx(
        sum(M.decode_flops(arch, c) for c in range(1, 51)))
    assert M.prefill_flops(arch, 50, logits="all") == pytest.approx(50 * M.forward_flops_per_token(arch, 50))


def test_six_n_is_six_times_active_params():
    for name in ("d5", "moe-d5"):
        arch = M.parse_preset(name, VOCAB, T)
        assert M.flops_6n_per_token(arch) == 6 * M.param_counts(arch).active


def test_cpu_ladder_spans_more_than_30x_and_grows_with_depth():
    ns = [M.param_counts(M.parse_preset(n, 64, 256)).nonembedding for n in M.CPU_LADDER]
    assert ns == sorted(ns) and ns[-1] / ns[0] >= 30
    assert 10_000 <= ns[0] and ns[-1] >= 1_000_000


def test_moe_counts_total_and_active_apart():
    dense, moe = M.parse_preset("d4", 64, 256), M.parse_preset("moe-d4", 64, 256)
    pd, pm = M.param_counts(dense), M.param_counts(moe)
    assert pm.active < pm.nonembedding  # 2 of 8 experts run per token
    assert pm.nonembedding > 2 * pd.nonembedding
    # Experts are 1/top_k of the dense MLP, so active compute stays within 2% of the dense model.
    assert M.train_flops_per_token(moe, 256) == pytest.approx(M.train_flops_per_token(dense, 256), rel=0.02)


def test_derived_shapes_follow_the_rules():
    a = M.parse_preset("d6", 64, 256)
    assert (a.width, a.n_heads, a.head_dim) == (96, 6, 16)
    assert a.ffn % 8 == 0 and 8 / 3 * a.width <= a.ffn < 8 / 3 * a.width + 8
    g = M.parse_preset("gpu-d12", 50_304, 1024)
    assert (g.width, g.n_heads) == (768, 12)


def test_a_width_suffix_makes_rungs_between_the_depths():
    a = M.parse_preset("d3w32", 64, 256)
    assert (a.name, a.depth, a.width, a.n_heads) == ("d3w32", 3, 32, 2)
    assert M.parse_preset("d3w48", 64, 256) == M.parse_preset("d3", 64, 256)  # the rule's width: plain name
    ns = [M.param_counts(M.parse_preset(n, 64, 256)).nonembedding for n in ("d2", "d3w32", "d2w48", "d3")]
    assert ns == sorted(ns) and all(1.3 < b / a < 1.6 for a, b in zip(ns, ns[1:]))


@pytest.mark.parametrize("bad", ["d0", "big", "moe-x3", "d999", "d3w33", "d3w0", "d3w512", "gpu-d2w100"])
def test_bad_preset_is_a_one_line_config_error(bad):
    with pytest.raises(ConfigError) as e:
        M.parse_preset(bad, 64, 256)
    assert "\n" not in str(e.value)
