"""The sampling engine: token-for-token agreement with `model.generate` at temperature 0 on every
backend and model family, sampling (seeds, top-k, top-p, the distribution), stop strings,
sessions (continue, duplicate, rewind), the FLOP meter against model.py, and bad input."""
from __future__ import annotations

import json
import math

import pytest
import torch

from scalelab import model as M
from scalelab.errors import ConfigError, InputError, ScalelabError
from scalelab.data.testbed import TestbedSource
from scalelab.inference.engine import Engine, SamplingParams
from scalelab.inference.flops import FlopMeter

SRC = TestbedSource()
TOK = SRC.tokenizer
SPECIAL = dict(pad_token_id=TOK.pad_token_id, bos_token_id=TOK.bos_token_id, eos_token_id=TOK.eos_token_id)
PROMPTS = ["<bos>" + p.question() for p in SRC.problems("test", 3, steps=2)] + ["<bos>Q7:1 a+1\n"]


def _llama(gqa: bool = False, ctx: int = 128):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(1)
    cfg = LlamaConfig(vocab_size=len(TOK), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2 if gqa else 4, max_position_embeddings=ctx, **SPECIAL)
    return LlamaForCausalLM(cfg).eval()


def _gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(2)
    return GPT2LMHeadModel(GPT2Config(vocab_size=len(TOK), n_embd=32, n_layer=2, n_head=2, n_positions=128, **SPECIAL)).eval()


def _mixtral():
    return M.build_model(M.parse_preset("moe-d2", len(TOK), 128), seed=3, special_tokens=SPECIAL).eval()


def _reference(model, prompt: str, max_new: int) -> list[int]:
    ids = TOK(prompt, return_tensors="pt", add_special_tokens=False).input_ids
    out = model.generate(ids, do_sample=False, max_new_tokens=max_new, eos_token_id=TOK.eos_token_id,
                         pad_token_id=TOK.pad_token_id)
    return out[0, ids.shape[1]:].tolist()


@pytest.mark.parametrize("family,backend", [("llama", "auto"), ("llama", "hf"), ("llama-gqa", "auto"),
                                            ("gpt2", "auto"), ("mixtral", "auto")])
def test_greedy_matches_generate_token_for_token(family, backend):
    model = {"llama": _llama, "llama-gqa": lambda: _llama(gqa=True), "gpt2": _gpt2, "mixtral": _mixtral}[family]()
    eng = Engine(model, TOK, backend=backend)
    assert eng.backend_name == ("llama" if family.startswith("llama") and backend == "auto" else "hf")
    # prompts of different lengths share one batch (left padding) and each is expanded to 2 samples
    gen = eng.generate(PROMPTS, 2, SamplingParams(temperature=0, max_tokens=24))
    for i, prompt in enumerate(PROMPTS):
        ref = _reference(model, prompt, 24)
        assert gen.completions[i][0].token_ids == ref, (family, i)
        assert gen.completions[i][1].token_ids == ref


def test_greedy_matches_generate_on_a_trained_checkpoint(tiny_run):
    eng = Engine.load(tiny_run)
    gen = eng.generate(PROMPTS, 1, SamplingParams(temperature=0, max_tokens=40))
    for i, prompt in enumerate(PROMPTS):
        assert gen.completions[i][0].token_ids == _reference(eng.model, prompt, 40)
    # a trained model ends its solution: <eos> is sampled, left out of the text, kept in the ids
    c = gen.completions[0][0]
    assert c.finish_reason == "eos" and c.token_ids[-1] == TOK.eos_token_id and "<eos>" not in c.text


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A Llama trained for a few seconds on a small testbed: it writes well-formed solutions."""
    from scalelab.pretrain.train import TrainConfig, train

    cfg = TrainConfig.build(model="d2", source="testbed", seq_len=64, batch_size=16, tokens=60_000, lr=0.01,
                            threads=1, eval_every=10**6, source_options={"max_steps": 2, "max_modulus": 7,
                                                                          "eval_docs": 20})
    runs = tmp_path_factory.mktemp("engine_runs")
    rec = train(cfg, runs)
    assert rec.status == "complete"
    return runs / rec.run_id


def test_sampling_is_seeded_and_cut_by_top_k_and_top_p():
    eng = Engine(_llama(), TOK)
    p = SamplingParams(temperature=1.0, max_tokens=12, seed=5)
    a, b = eng.generate(PROMPTS[:2], 4, p).texts(), eng.generate(PROMPTS[:2], 4, p).texts()
    assert a == b
    assert eng.generate(PROMPTS[:2], 4, SamplingParams(temperature=1.0, max_tokens=12, seed=6)).texts() != a
    greedy = eng.generate(PROMPTS[:2], 3, SamplingParams(temperature=0, max_tokens=12)).texts()
    assert eng.generate(PROMPTS[:2], 3, SamplingParams(temperature=1.5, top_k=1, max_tokens=12, seed=1)).texts() == greedy
    assert eng.generate(PROMPTS[:2], 3, SamplingParams(temperature=1.5, top_p=1e-6, max_tokens=12, seed=1)).texts() == greedy


def test_first_token_frequencies_follow_the_softmax():
    model = _llama()
    with torch.no_grad():  # sharpen the random model so that a few tokens carry most of the mass
        model.lm_head.weight.mul_(40)
    eng = Engine(model, TOK)
    ids = TOK(PROMPTS[0], return_tensors="pt", add_special_tokens=False).input_ids
    with torch.no_grad():
        probs = torch.softmax(model(ids).logits[0, -1] / 0.7, -1)
    n = 4000
    gen = eng.generate([PROMPTS[0]], n, SamplingParams(temperature=0.7, max_tokens=1, seed=0))
    counts = torch.bincount(torch.tensor([c.token_ids[0] for c in gen.completions[0]]), minlength=len(TOK)).double()
    expected = probs.double() * n
    big = expected > 20
    assert big.sum() >= 2
    # each frequent token within 5 binomial standard deviations of its expectation
    sd = (expected * (1 - probs.double())).sqrt()
    assert ((counts[big] - expected[big]).abs() <= 5 * sd[big]).all()
    assert counts[expected < 1e-3].sum() <= 5  # (almost) never a token of negligible probability


def test_stop_strings_single_and_multi_token():
    eng = Engine(_llama(), TOK)
    free = eng.generate(PROMPTS[:1], 1, SamplingParams(temperature=0, max_tokens=30)).completions[0][0]
    text = free.text
    assert len(text) >= 8 and free.finish_reason in ("length", "eos")
    ids = free.token_ids
    plain = [i for i in range(3, len(ids) - 1) if ids[i] > 2 and ids[i + 1] > 2]  # two plain characters
    j = plain[0]
    one, two = TOK.decode([ids[j]]), TOK.decode(ids[j:j + 2])
    for stop in (one, two):
        c = eng.generate(PROMPTS[:1], 1, SamplingParams(temperature=0, max_tokens=30, stop=(stop,))).completions[0][0]
        end = next(k for k in range(1, len(ids) + 1) if stop in TOK.decode(ids[:k]))  # first token completing it
        upto = TOK.decode(ids[:end])
        assert c.finish_reason == "stop" and c.token_ids == ids[:end]
        assert c.text == upto[:upto.find(stop) + len(stop)] and c.text.endswith(stop)


def test_batches_are_chunked_without_changing_results():
    eng = Engine(_llama(), TOK)
    p = SamplingParams(temperature=0, max_tokens=10)
    whole = eng.generate(PROMPTS, 5, p).texts()
    small = Engine(eng.model, TOK, max_batch=3)  # 5 samples per prompt split over batches of 3 rows
    assert small.generate(PROMPTS, 5, p).texts() == whole
    assert Engine(eng.model, TOK, max_batch=7).generate(PROMPTS, 2, p).texts() == eng.generate(PROMPTS, 2, p).texts()


def test_flops_follow_model_py_and_prefill_is_shared():
    model = _llama()
    eng = Engine(model, TOK)
    arch = eng.flop_model.arch
    assert arch is not None and eng.flop_model.source == "model.py (llama)"
    g1 = eng.generate(PROMPTS, 1, SamplingParams(temperature=1.0, max_tokens=9, seed=0))
    g8 = eng.generate(PROMPTS, 8, SamplingParams(temperature=1.0, max_tokens=9, seed=0))
    for i, prompt in enumerate(PROMPTS):
        P = len(TOK(prompt, add_special_tokens=False)["input_ids"])
        assert g1.flops_prefill[i] == g8.flops_prefill[i] == M.prefill_flops(arch, P)  # once, whatever n
        for c, f in zip(g8.completions[i], g8.flops_decode[i]):
            L = len(c.token_ids)  # every token but the last is fed back, token j attends to P + j keys
            assert f == pytest.approx(sum(M.decode_flops(arch, P + j) for j in range(1, L)), rel=1e-12)
    assert eng.meter.totals["inference"] == pytest.approx(g1.flops + g8.flops, rel=1e-12)
    # a session counts the same FLOPs as the formulas
    ids = [TOK(p, add_special_tokens=False)["input_ids"] for p in PROMPTS]
    sess = eng.session(len(ids), 64)
    sess.feed(ids)
    outs = sess.decode(SamplingParams(temperature=0, max_tokens=6), 6, None)
    expect = sum(M.prefill_flops(arch, len(x)) + sum(M.decode_flops(arch, len(x) + j) for j in range(1, len(t)))
                 for x, (t, _) in zip(ids, outs))
    assert sess.flops == pytest.approx(expect, rel=1e-12)


def test_generic_flop_model_counts_linear_weights():
    model = _gpt2()
    eng = Engine(model, TOK)
    fm = eng.flop_model
    assert fm.arch is None and fm.source == "generic (gpt2)"
    d, L, V = 32, 2, len(TOK)
    per_layer = d * 3 * d + d * d + d * 4 * d + 4 * d * d  # c_attn, c_proj, c_fc, mlp c_proj
    assert fm.body == 2 * L * per_layer and fm.head == 2 * V * d and fm.attn_per_key == 4 * L * d


def test_session_continues_duplicates_and_rewinds_like_one_shot_decoding():
    eng = Engine(_llama(), TOK)
    ids = [TOK(p, add_special_tokens=False)["input_ids"] for p in PROMPTS[:2]]
    greedy = SamplingParams(temperature=0, max_tokens=18)
    whole = [t for t, _ in _one_session(eng, ids).decode(greedy, 18, None)]
    # 1. three calls of 6 tokens continue exactly where the last one stopped (pending tokens)
    sess = _one_session(eng, ids)
    parts = [sess.decode(greedy, 6, None) for _ in range(3)]
    assert [sum((p[r][0] for p in parts), []) for r in range(2)] == whole
    # 2. a duplicated row continues exactly like its original
    sess = _one_session(eng, ids)
    first = sess.decode(greedy, 6, None)
    sess.select(torch.tensor([0, 0, 1]))
    rest = sess.decode(greedy, 12, None)
    assert first[0][0] + rest[0][0] == whole[0] and first[0][0] + rest[1][0] == whole[0]
    assert first[1][0] + rest[2][0] == whole[1]
    # 3. rewinding row 0 to 4 generated tokens and feeding its 5th again reproduces the rest
    sess = _one_session(eng, ids)
    sess.decode(greedy, 18, None)
    sess.drop_pending()
    sess.rewind(0, len(ids[0]) + 4)
    sess.feed([[whole[0][4]], []])
    again = sess.decode(greedy, 13, None, active=torch.tensor([True, False]))
    assert whole[0][:5] + again[0][0] == whole[0] and again[1][0] == []


def _one_session(eng, ids):
    sess = eng.session(len(ids), 8)  # small on purpose: the cache must grow
    sess.feed(ids)
    return sess


# ---- bad input ---------------------------------------------------------------------------------
def test_bad_requests_are_one_line_errors():
    eng = Engine(_llama(ctx=40), TOK)
    for n in (0, -1):
        with pytest.raises(ConfigError, match="positive integer"):
            eng.generate(PROMPTS[:1], n)
    with pytest.raises(ConfigError, match="no prompts"):
        eng.generate([], 1)
    with pytest.raises(ConfigError, match=r"prompt 0 has 4\d tokens but the model's context is 40"):
        eng.generate(["<bos>" + "Q7:1 " + "a+1 " * 10 + "\n"], 1)
    for bad in (dict(temperature=-1), dict(top_p=0), dict(top_k=-2), dict(max_tokens=0), dict(stop=("",))):
        with pytest.raises(ConfigError):
            SamplingParams(**bad)
    # a prompt that fits but leaves little room is generated up to the context, not past it
    long = "<bos>Q7:1 " + "a+1 " * 8 + "\n"
    g = eng.generate([long], 1, SamplingParams(temperature=0, max_tokens=100))
    assert g.max_tokens == 40 - len(TOK(long, add_special_tokens=False)["input_ids"])


def test_bad_checkpoints_are_refused(tmp_path):
    from transformers import LlamaConfig, LlamaForSequenceClassification

    with pytest.raises(InputError, match="no such run or checkpoint"):
        Engine.load(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no config.json"):
        Engine.load(tmp_path / "empty")
    cls_dir = tmp_path / "classifier"
    LlamaForSequenceClassification(LlamaConfig(vocab_size=len(TOK), hidden_size=32, intermediate_size=64,
                                               num_hidden_layers=1, num_attention_heads=2, **SPECIAL)).save_pretrained(cls_dir)
    TOK.save_pretrained(cls_dir)
    with pytest.raises(InputError, match="LlamaForSequenceClassification model, not a causal language model"):
        Engine.load(cls_dir)
    lm_dir = tmp_path / "no_tokenizer"
    _llama().save_pretrained(lm_dir)
    with pytest.raises(InputError, match="no tokenizer files"):
        Engine.load(lm_dir)
    TOK.save_pretrained(lm_dir)
    assert Engine.load(lm_dir).backend_name == "llama"
    (lm_dir / "model.safetensors").rename(lm_dir / "pytorch_model.bin")
    with pytest.raises(InputError, match="safetensors weights only"):
        Engine.load(lm_dir)
    assert all("\n" not in str(e) for e in [ScalelabError("a\nb")])


def test_llama_fused_weights_are_built_once_and_rebuilt_after_a_step():
    """Sessions share the fused weight copies of an unchanged model; an in-place update (an optimizer
    step) makes the next session build them from the new weights."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from scalelab.inference.backends import LlamaBackend

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                         num_attention_heads=2)).eval()
    a, b = LlamaBackend(model), LlamaBackend(model)
    assert a.w_qkv[0] is b.w_qkv[0]
    with torch.no_grad():
        model.model.layers[0].mlp.down_proj.weight.mul_(2.0)
    c = LlamaBackend(model)
    assert c.w_down[0] is not a.w_down[0]
    assert torch.equal(c.w_down[0], model.model.layers[0].mlp.down_proj.weight.t())
