"""Post-training stages on a tiny parent: lineage and FLOPs ledgers checked against model.py's
counts, LoRA's trainable parameters and merge, structured pruning against identity slices, Wanda's
mask rule, int8 checkpoints that reload, verifier filtering, the curves table, and every bad input
as a one-line exit-2 error that leaves the parent's bytes unchanged."""
from __future__ import annotations

import json
import math
import shutil

import pytest

from scalelab.errors import ConfigError, InputError
from scalelab.posttrain import run
from scalelab.posttrain.stage import dir_digest

SMALL = {"max_steps": 3, "max_modulus": 7, "eval_docs": 20}
EVAL = {"eval_problems": 4, "threads": 1}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return tmp_path_factory.mktemp("post_runs")


@pytest.fixture(scope="module")
def parent(tiny_parent):
    return tiny_parent  # conftest.py: a d3 trained once per session


@pytest.fixture(scope="module")
def digest(parent):
    return dir_digest(parent)


def _arch(path):
    from transformers import AutoConfig

    from scalelab.inference.flops import arch_from_config

    return arch_from_config(AutoConfig.from_pretrained(path / "checkpoint"))


def _lineage(rec, parent, technique):
    from scalelab.records import read_record

    p = read_record(parent)
    assert rec.status == "complete" and rec.phase == "posttrain" and rec.technique == technique
    assert rec.parent_id == p.run_id and rec.flops["pretrain"] == p.flops["pretrain"]
    assert rec.flops["posttrain"] == pytest.approx(sum(rec.posttrain_ledger.values()))
    m = rec.metrics
    assert set(m["accuracy_by_difficulty"]) == {"1", "2", "3"} == set(m["parent_accuracy_by_difficulty"])
    assert all(0 <= v <= 1 for v in m["accuracy_by_difficulty"].values())
    assert 0 < m["chance_by_difficulty"]["3"] < m["chance_by_difficulty"]["1"] < 1
    assert math.isfinite(m["eval_loss"]) and math.isfinite(m["parent_eval_loss"]) and rec.flops_eval > 0


# ---- fine-tuning ------------------------------------------------------------------------------------
def test_sft_full_and_lora_ledger_and_merge(parent, digest, runs):
    from transformers import AutoModelForCausalLM

    from scalelab import model as M

    full = run("sft", {"parent": str(parent), "examples": 24, "batch_size": 8, **EVAL}, runs / "post")
    lora = run("sft", {"parent": str(parent), "examples": 24, "batch_size": 8, "lora_rank": 2, **EVAL}, runs / "post")
    _lineage(full, parent, "sft")
    _lineage(lora, parent, "sft-lora")
    a = _arch(parent)
    # LoRA on all 7 linear maps of each layer: r (in + out) each (Hu et al. 2021)
    per_layer = 4 * (a.width + a.n_heads * a.head_dim) + 2 * (a.width + a.ffn) + (a.ffn + a.width)
    assert lora.metrics["trainable_params"] == 2 * per_layer * a.depth
    assert full.metrics["trainable_params"] == full.n_params
    # same examples, same tokens: LoRA skips the weight gradients of every frozen base matrix (2W per
    # token, lm_head included) and adds its adapters' three passes (6 x adapter weights per token)
    tokens = full.metrics["train_tokens"]
    assert lora.metrics["train_tokens"] == tokens
    adapters = lora.metrics["trainable_params"]
    expect = full.posttrain_ledger["student_train"] - 2 * M._matmul_weights(a) * tokens + 6 * adapters * tokens
    assert lora.posttrain_ledger["student_train"] == pytest.approx(expect, rel=1e-9)
    merged = AutoModelForCausalLM.from_pretrained(runs / "post" / lora.run_id / "checkpoint", use_safetensors=True)
    assert not any("lora" in n for n, _ in merged.named_parameters()) and _arch(runs / "post" / lora.run_id) == a
    # a child of the child keeps the first run's testbed, sequence length and lr, and adds to the ledger
    child = run("prune", {"parent": str(runs / "post" / full.run_id), "method": "magnitude", "sparsity": 0.2, **EVAL},
                runs / "post")
    assert child.parent_id == full.run_id and set(child.metrics["accuracy_by_difficulty"]) == {"1", "2", "3"}
    assert child.seq_len == 64 and child.pretrain_lr == 0.01 and child.source["config"]["max_modulus"] == 7
    assert child.flops == full.flops  # magnitude pruning runs no forward pass
    # the same config again is found, not retrained; the parent's bytes never change
    assert run("sft", {"parent": str(parent), "examples": 24, "batch_size": 8, **EVAL}, runs / "post").created_at == full.created_at
    assert dir_digest(parent) == digest


def test_sft_on_a_user_jsonl(parent, runs, tmp_path):
    from scalelab.data.testbed import TestbedSource

    src = TestbedSource(**SMALL)
    probs = src.problems("train", 6, steps=2)
    f = tmp_path / "pairs.jsonl"
    f.write_text("".join(json.dumps({"prompt": "<bos>" + p.question(), "completion": p.solution()}) + "\n" for p in probs))
    rec = run("sft", {"parent": str(parent), "data": str(f), "batch_size": 4, **EVAL}, runs / "post")
    assert rec.metrics["data"] == "pairs.jsonl" and rec.metrics["train_examples"] == 6
    # loss on completions only: the loss-bearing tokens are the completions' characters plus <eos>
    assert rec.metrics["train_target_tokens"] == sum(len(p.solution()) + 1 for p in probs)
    assert rec.metrics["train_tokens"] == sum(len(p.question()) + 1 + len(p.solution()) for p in probs)


# ---- distillation and synthetic data ----------------------------------------------------------------
def test_distill_logit_offline_and_scratch_ledgers(parent, digest, runs):
    from scalelab import model as M

    common = {"parent": str(parent), "teacher": str(parent), **EVAL}
    logit = run("distill", {**common, "examples": 16, "batch_size": 8}, runs / "post")
    _lineage(logit, parent, "distill-logit")
    assert logit.teacher_id == logit.parent_id and logit.posttrain_ledger["teacher_forward"] > 0
    off = run("distill", {**common, "mode": "offline", "examples": 8, "batch_size": 8}, runs / "post")
    _lineage(off, parent, "distill-offline")
    assert off.metrics["teacher_samples"] == 8 and off.posttrain_ledger["teacher_generate"] > 0
    # scratch student on corpus rows of one length T: the ledger equals model.py's per-token counts
    scratch = run("distill", {**common, "data": "corpus", "tokens": 640, "init": "scratch", "batch_size": 5},
                  runs / "post")
    a, T, n = _arch(parent), 64, scratch.metrics["train_tokens"]
    assert n == 640 and "pretrain" not in scratch.flops and scratch.technique == "distill-logit-scratch"
    assert scratch.posttrain_ledger["student_train"] == pytest.approx(M.train_flops_per_token(a, T) * n, rel=1e-9)
    assert scratch.posttrain_ledger["teacher_forward"] == pytest.approx(M.forward_flops_per_token(a, T) * n, rel=1e-9)
    assert scratch.posttrain_ledger_6n["student_train"] == pytest.approx(6 * M.param_counts(a).nonembedding * n)
    assert scratch.metrics["eval_loss"] > logit.metrics["eval_loss"]  # fresh weights, 640 tokens
    assert dir_digest(parent) == digest


def test_generated_examples_keep_only_verified_finished_solutions():
    from types import SimpleNamespace

    from scalelab.posttrain.data import generated_examples
    from scalelab.posttrain.stage import Ledger
    from scalelab.data.testbed import TestbedSource
    from scalelab.inference.engine import Completion, Generation

    src = TestbedSource(**SMALL)
    p = src.problems("train", 1, steps=2)[0]
    right, wrong = p.solution(), p.solution().replace(f"A:{p.answer}", f"A:{(p.answer + 1) % p.modulus}")
    comps = [Completion(right, [0], "eos"), Completion(right, [0], "eos"), Completion(wrong, [0], "eos"),
             Completion(right, [0], "length")]
    gen = Generation([comps], [10], [1.0], [[2.0] * 4])
    tok = src.tokenizer
    engine = SimpleNamespace(tokenizer=tok)
    ctx = SimpleNamespace(ledger=Ledger(), generate=lambda eng, prompts, n, params, part: gen)
    g = generated_examples(ctx, engine, [p], 4, None, part="teacher_generate", distinct=True)
    assert g.kept == 1 and g.samples == 4 and g.kept_by_steps == {"2": [1, 4]}
    assert tok.decode(list(g.examples[0].ids[g.examples[0].n_prompt:])) == right + "<eos>"
    assert generated_examples(ctx, engine, [p], 4, None, part="t", keep="all").kept == 3  # finished ones


def test_synth_mixes_verified_teacher_solutions_for_the_target_bins(parent, runs):
    rec = run("synth", {"parent": str(parent), "examples": 16, "synth_problems": 6, "samples": 2, "batch_size": 8,
                        **EVAL}, runs / "post")
    _lineage(rec, parent, "synth")
    m = rec.metrics
    assert m["target_steps"] == [3] and m["real_steps"] == [1, 2] and set(m["synth_kept_by_steps"]) == {"3"}
    assert m["synth_samples"] == 12 and m["train_examples"] == m["real_examples"] + m["synth_kept"]
    assert rec.posttrain_ledger["teacher_generate"] > 0


# ---- pruning ------------------------------------------------------------------------------------------
def test_wanda_mask_weighs_magnitudes_by_input_norms():
    import torch

    from scalelab.posttrain.prune import wanda_mask

    w = torch.ones(3, 4)
    w[:, 0] = 2.0  # the largest weights ...
    in_sq = torch.tensor([0.01, 1.0, 4.0, 9.0])  # ... on the quietest input
    mask = wanda_mask(w, in_sq, 0.5)
    # |W| x ||X||: 0.2, 1, 2, 3 -> keep the two largest per row; magnitude alone would keep column 0
    assert mask.tolist() == [[0, 0, 1, 1]] * 3
    equal = wanda_mask(w, torch.ones(4), 0.25)  # equal input norms: Wanda is magnitude pruning per row
    assert equal[:, 0].tolist() == [1, 1, 1] and (equal == 0).sum(1).tolist() == [1, 1, 1]
    # at least the asked share: 0.502 of 48 inputs is 24.1 -> 25 zeros per row (round gave 24, i.e.
    # 49.8% on a d3 asked for 50%, and the prune acceptance check failed on it)
    assert (wanda_mask(torch.ones(2, 48), torch.ones(48), 0.502) == 0).sum(1).tolist() == [25, 25]
    assert (wanda_mask(torch.ones(2, 48), torch.ones(48), 0.5) == 0).sum(1).tolist() == [24, 24]


def test_structured_slices_keep_the_function_when_nothing_is_removed(parent):
    import dataclasses

    import torch

    from scalelab.posttrain.prune import prune_structured
    from scalelab.inference.loading import load_causal_lm

    model, _, _ = load_causal_lm(parent)
    a = _arch(parent)
    imp = {"hidden": torch.rand(a.width), **{f"heads.{i}": torch.rand(a.n_heads) for i in range(a.depth)},
           **{f"mlp.{i}": torch.rand(a.ffn) for i in range(a.depth)}, **{f"layer.{i}": torch.rand(()) for i in range(a.depth)}}
    x = torch.randint(3, 30, (2, 12))
    ref = model(input_ids=x).logits
    for method in ("width", "depth"):
        same = prune_structured(model, imp, a, method).eval()
        assert torch.allclose(same(input_ids=x).logits, ref, atol=1e-5)
    # one head and one MLP channel fewer per layer: the config shrinks and the rest are the parent's weights
    small = prune_structured(model, imp, dataclasses.replace(a, n_heads=2, n_kv_heads=2, ffn=a.ffn - 1), "width")
    assert small.config.num_attention_heads == 2 and small.config.intermediate_size == a.ffn - 1
    keep = small.kept["heads"][0]
    q = model.model.layers[0].self_attn.q_proj.weight.view(a.n_heads, a.head_dim, a.width)[keep].reshape(-1, a.width)
    assert torch.equal(small.model.layers[0].self_attn.q_proj.weight, q)


def test_width_plan_is_a_valid_llama_config(parent):
    """Minitron width pruning of the hidden axis keeps the residual width a multiple of the heads
    (LlamaConfig refuses anything else: 48 x 0.65 = 31 channels over 3 heads failed before)."""
    from transformers import LlamaConfig

    from scalelab import model as M
    from scalelab.posttrain.prune import PruneConfig, plan_shape

    a = _arch(parent)
    before = M.param_counts(a).nonembedding
    for axes in (["mlp", "hidden"], ["heads", "mlp", "hidden"]):
        for s in (0.3, 0.4, 0.5, 0.6, 0.7):
            cfg = PruneConfig(parent=str(parent), method="width", sparsity=s, axes=axes)
            new = plan_shape(a, cfg, (1 - s) * before)
            assert new.width % new.n_heads == 0 and M.param_counts(new).nonembedding <= (1 - s) * before
            LlamaConfig(hidden_size=new.width, num_attention_heads=new.n_heads, head_dim=a.head_dim)


def test_prune_unstructured_and_structured(parent, digest, runs):
    import torch
    from transformers import AutoModelForCausalLM

    c = {"parent": str(parent), "calibration_rows": 4, "batch_size": 4, **EVAL}
    wanda = run("prune", {**c, "method": "wanda", "sparsity": 0.5, "recover_tokens": 256}, runs / "post")
    _lineage(wanda, parent, "prune-wanda")
    assert {"calibration", "teacher_forward", "student_train"} <= set(wanda.posttrain_ledger)
    assert wanda.metrics["sparsity"] == pytest.approx(0.5, abs=0.02)
    m = AutoModelForCausalLM.from_pretrained(runs / "post" / wanda.run_id / "checkpoint", use_safetensors=True)
    w = m.model.layers[1].mlp.down_proj.weight  # [48, 128]: 64 pruned per row, still zero after recovery
    assert ((w == 0).sum(1) >= 62).all()
    mag = run("prune", {**c, "method": "magnitude", "sparsity": 0.3}, runs / "post")
    assert mag.posttrain_ledger == {} and mag.flops["posttrain"] == 0 and mag.metrics["sparsity"] == pytest.approx(0.3, abs=0.01)
    width = run("prune", {**c, "method": "width", "sparsity": 0.5, "axes": ["heads", "mlp", "hidden"],
                          "recover_tokens": 256}, runs / "post")
    _lineage(width, parent, "prune-width")
    before = width.metrics["nonembedding_before"]
    assert width.n_params_nonembedding <= 0.5 * before and width.metrics["sparsity"] >= 0.5
    small = AutoModelForCausalLM.from_pretrained(runs / "post" / width.run_id / "checkpoint", use_safetensors=True)
    shape = width.metrics["shape"]
    assert (small.config.hidden_size, small.config.num_attention_heads, small.config.intermediate_size) == \
           (shape["width"], shape["heads"], shape["ffn"])
    assert small(input_ids=torch.tensor([[1, 5, 6]])).logits.shape == (1, 3, 36)
    depth = run("prune", {**c, "method": "depth", "target_params": before * 3 // 4, "recover_tokens": 0}, runs / "post")
    assert depth.metrics["shape"]["depth"] == 2 and len(depth.metrics["kept"]["layers"]) == 2
    assert dir_digest(parent) == digest


# ---- quantization -----------------------------------------------------------------------------------
def test_quantize_int8_is_smaller_reloads_and_int4_says_why(parent, digest, runs):
    import torch
    from transformers import AutoModelForCausalLM

    from scalelab.inference.loading import load_causal_lm

    rec = run("quantize", {"parent": str(parent), "repeats": 1, "latency_prompts": 2, "latency_tokens": 4, **EVAL},
              runs / "post")
    _lineage(rec, parent, "quantize-int8-weight")
    m = rec.metrics
    assert m["size_ratio"] >= 2 and m["weights_bytes"] == (runs / "post" / rec.run_id / "checkpoint" / "model.safetensors").stat().st_size
    assert rec.flops["posttrain"] == 0 and m["ms_per_generated_token"] > 0 and m["parent_forward_ms"] > 0
    q = AutoModelForCausalLM.from_pretrained(runs / "post" / rec.run_id / "checkpoint", use_safetensors=True)
    assert type(q.model.layers[0].mlp.up_proj.weight).__name__ == "Int8Tensor"
    fp, _, _ = load_causal_lm(parent)
    x = torch.randint(3, 30, (2, 10))
    diff = (q(input_ids=x).logits - fp(input_ids=x).logits).abs().max()
    assert 0 < diff < 0.1  # rounded weights: close to the parent, not identical
    assert abs(m["eval_loss"] - m["parent_eval_loss"]) < 0.01
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="int4-weight: torchao cannot run it on this platform"):
            run("quantize", {"parent": str(parent), "method": "int4-weight", **EVAL}, runs / "post")
    assert dir_digest(parent) == digest


# ---- curves -------------------------------------------------------------------------------------------
def test_curves_table_and_figure(tmp_path):
    from scalelab.records import RunRecord, write_record
    from scalelab.posttrain.plots import plot_posttrain
    from scalelab.tables import posttrain_table

    for i, (tech, flops, acc) in enumerate([("sft", 1e9, 0.5), ("sft", 4e9, 0.6), ("quantize-int8-weight", 0.0, 0.38),
                                            ("prune-width", 2e9, 0.3)]):
        r = RunRecord(run_id=f"c{i}", parent_id="p", phase="posttrain", technique=tech, task="testbed",
                      flops={"pretrain": 1e12, "posttrain": flops})
        r.posttrain_ledger, r.parent_flops = {"student_train": flops}, {"pretrain": 1e12}
        r.complete(accuracy=acc, accuracy_by_difficulty={"1": acc + 0.2, "2": acc - 0.2}, parent_accuracy=0.4,
                   parent_accuracy_by_difficulty={"1": 0.6, "2": 0.2}, chance_by_difficulty={"1": 0.1, "2": 0.01})
        write_record(tmp_path / r.run_id, r)
    df = posttrain_table(tmp_path)
    assert len(df) == 4 * 3 and set(df.technique) == {"sft", "quantize-int8-weight", "prune-width"}
    row = df[(df.run_id == "c1") & (df.difficulty == "2")].iloc[0]
    assert (row.accuracy, row.parent_accuracy, row.posttrain_flops, row.pretrain_flops) == pytest.approx((0.4, 0.2, 4e9, 1e12))
    out = plot_posttrain(tmp_path, tmp_path / "fig.png")
    assert out.stat().st_size > 10_000
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no complete post-training records"):
        posttrain_table(tmp_path / "empty")


# ---- acceptance checks ------------------------------------------------------------------------------
def test_acceptance_standard_errors_and_a_check(parent, runs):
    from scalelab.posttrain.acceptance import _mean, _se, check

    assert _se(0.5, 100) == pytest.approx(0.05) and _se(0.0, 100) == _se(1.0, 100) == pytest.approx(math.sqrt(0.99) / 100)
    assert _mean({"1": 0.2, "2": 0.6}, ["1", "2"], {"1": 100, "2": 100}) == pytest.approx(
        (0.4, math.hypot(0.04, math.sqrt(0.24) / 10) / 2))
    lines: list[str] = []
    ok = check("quantize", str(parent), str(runs / "accept"), sets={"eval_problems": 4, "repeats": 1, "threads": 1},
               out=lines.append)
    assert ok and lines[-1].startswith("PASS") and "x smaller" in lines[-2]
    with pytest.raises(InputError, match="known checks: sft, distill, prune, quantize, synth"):
        check("lora", str(parent), str(runs / "accept"))


def test_standard_errors_use_the_problems_actually_scored(parent):
    """A split can hold fewer distinct short problems than eval_problems asks for: the record says
    how many were scored, and the acceptance standard errors use that count, not the request."""
    from types import SimpleNamespace

    from scalelab.records import read_record
    from scalelab.posttrain.acceptance import _n, _se
    from scalelab.posttrain.accuracy import evaluate_model
    from scalelab.posttrain.stage import open_run
    from scalelab.inference.loading import testbed_for

    ref = open_run(parent)
    src = testbed_for(read_record(parent))
    have = len(src.problems("test", 10_000, steps=1, seed=0))
    assert have < 10_000
    cfg = SimpleNamespace(eval_difficulties=[1], eval_problems=10_000, eval_split="test", seed=0, max_batch=256)
    ev = evaluate_model(ref.load_model(train=False), ref.tokenizer, src, cfg)
    assert ev["eval_problems_by_difficulty"] == {"1": have}
    assert _se(0.5, _n(ev)["1"]) == pytest.approx(0.5 / math.sqrt(have))
    assert _n({"eval_problems": 50, "accuracy_by_difficulty": {"1": 0.5}}) == {"1": 50}  # records from before


# ---- bad input --------------------------------------------------------------------------------------------
def _cli(capsys, *args):
    from scalelab.cli import main

    with pytest.raises(SystemExit) as e:
        main(list(map(str, args)))
    return e.value.code, capsys.readouterr().err.strip()


def test_bad_input_is_one_line_exit_2_and_leaves_the_parent_alone(capsys, parent, digest, runs, tmp_path):
    from scalelab.data.tokenizer import char_tokenizer

    no_ckpt = tmp_path / "no_ckpt"
    no_ckpt.mkdir()
    shutil.copy(parent / "record.json", no_ckpt / "record.json")
    running = tmp_path / "running"
    shutil.copytree(parent, running)
    rec = json.loads((running / "record.json").read_text())
    (running / "record.json").write_text(json.dumps({**rec, "status": "running"}))
    other = tmp_path / "other_tok"
    shutil.copytree(parent, other)
    char_tokenizer("0123456789QDA!:= \n+-*abcdefghijklxyz").save_pretrained(other / "checkpoint")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "<bos>Q5+:1 a2\\n", "completion": "a:1+2=3\\nA:3\\n"}\n{"prompt": "<bos>Q5+:1 a3\\n"}\n')
    out = tmp_path / "out"
    cases = [
        (["sft", "--from", no_ckpt], "has no checkpoint"),
        (["sft", "--from", running], "did not finish"),
        (["sft", "--from", tmp_path / "missing"], "no such run"),
        (["distill", "--from", parent, "--teacher", other], "uses another tokenizer"),
        (["synth", "--from", parent, "--teacher", other], "uses another tokenizer"),
        (["prune", "--from", parent, "--sparsity", "1.5"], "sparsity=1.5: Input should be less than 1"),
        (["prune", "--from", parent, "--sparsity", "1"], "sparsity=1.0: Input should be less than 1"),
        (["prune", "--from", parent, "--sparsity", "-0.1"], "greater than or equal to 0"),
        (["sft", "--from", parent, "--data", bad], "bad.jsonl line 2: missing field \"completion\""),
        (["finetune", "--from", parent], "unknown technique 'finetune'; known techniques: sft, distill, synth, prune, quantize"),
        (["accept", "lora", "--base", parent], "unknown check 'lora'"),
        (["quantize", "--from", parent, "--method", "int3"], "method"),
        (["sft", "--from", parent, "--examples", "8", "--runs-dir", parent / "children"], "inside the parent run"),
    ]
    for args, message in cases:
        if args[-2:] != ["--runs-dir", parent / "children"]:
            args = args + ["--runs-dir", out]
        code, err = _cli(capsys, "posttrain", *args)
        assert code == 2, (args, err)
        assert err.startswith("error:") and message in err and "\n" not in err, (args, err)
    assert dir_digest(parent) == digest


def test_trl_trainer_matches_the_own_loop(parent, runs):
    c = {"parent": str(parent), "examples": 64, "batch_size": 8, **EVAL}
    own = run("sft", c, runs / "post")
    trl = run("sft", {**c, "trainer": "trl"}, runs / "post")
    assert trl.metrics["trainer"] == "trl" and trl.metrics["train_steps"] == own.metrics["train_steps"]
    assert trl.metrics["eval_loss"] == pytest.approx(own.metrics["eval_loss"], abs=0.05)
