"""Every post-training technique on a user-shaped model and task file: plain Hugging Face
directories (a Qwen2 with a chat template, a Llama without one, sharing one BPE vocabulary; a
third model with another vocabulary), trained a few hundred steps on a generated GSM8K-format file.
Each child is evaluated on the file's test split, by its difficulty bins, with its ledger; training
data, samples and verdicts come from the file, not the testbed; bad input is one line, exit 2,
nothing written."""
from __future__ import annotations

import json
import math

import pytest

from scalelab.errors import ConfigError, InputError
from scalelab.posttrain import run
from scalelab.posttrain.stage import dir_digest

CHAT = ("{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>\n{% endif %}")
EVAL = {"eval_problems": 3, "threads": 1, "max_new_tokens": 24}


def _model(arch: str, tok, seed: int = 0, width: int = 32):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    cls, conf = {"llama": (LlamaForCausalLM, LlamaConfig), "qwen2": (Qwen2ForCausalLM, Qwen2Config)}[arch]
    return cls(conf(vocab_size=len(tok), hidden_size=width, intermediate_size=2 * width, num_hidden_layers=2,
                     num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256,
                     tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                     pad_token_id=tok.pad_token_id))


def _pretrain(model, tok, texts, steps: int = 100):
    """A few hundred steps on the file's training texts, so that some samples are right."""
    import random

    import torch

    rng = random.Random(0)
    enc = [tok(t)["input_ids"] + [tok.eos_token_id] for t in texts]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(steps):
        rows = [enc[rng.randrange(len(enc))] for _ in range(16)]
        w = max(map(len, rows))
        x = torch.full((16, w), tok.pad_token_id)
        y = torch.full((16, w), -100)
        for i, r in enumerate(rows):
            x[i, :len(r)], y[i, :len(r)] = torch.tensor(r), torch.tensor(r)
        loss = model(input_ids=x, attention_mask=(y != -100).long(), labels=y).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    """models/{qwen,llama,other}, tasks/{gsm8k,testonly,trainonly}.jsonl and a chat SFT file."""
    import copy

    import torch

    from scalelab.data.tokenizer import train_bpe
    from scalelab.tasks.files import load_task
    from scalelab.tasks.wordproblems import generate, write_jsonl

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("user")
    (root / "tasks").mkdir()
    rows = generate("gsm8k", 120, seed=0, max_ops=2)
    task = write_jsonl(root / "tasks" / "gsm8k.jsonl", rows)
    write_jsonl(root / "tasks" / "testonly.jsonl", [r for r in rows if r["split"] == "test"])
    write_jsonl(root / "tasks" / "trainonly.jsonl", [r for r in rows if r["split"] == "train"])
    texts = [json.dumps(r) for r in rows] + ["Question: \nAnswer: <|user|>\n<|assistant|>\n"]
    tok = train_bpe(texts, 320)
    chat = copy.deepcopy(tok)
    chat.chat_template = CHAT
    out = {}
    for name, arch, t in (("qwen", "qwen2", chat), ("llama", "llama", tok)):
        ft = load_task(task, tokenizer=t)
        sep = "" if ft.prompter.uses_chat else " "
        m = _pretrain(_model(arch, t), t, [ft.prompt(p) + sep + ft.reference(p) for p in ft.problems("train", 999)])
        m.save_pretrained(root / "models" / name)
        t.save_pretrained(root / "models" / name)
        out[name] = root / "models" / name
    other = train_bpe(texts, 300)
    _model("llama", other).save_pretrained(root / "models" / "other")
    other.save_pretrained(root / "models" / "other")
    out["other"] = root / "models" / "other"
    msgs = root / "chat.jsonl"
    msgs.write_text("".join(json.dumps({"messages": [{"role": "user", "content": r["question"]},
                                                     {"role": "assistant", "content": r["answer"]}]}) + "\n"
                            for r in rows[:12]))
    out["tokenizer"] = chat
    return {**out, "task": task, "testonly": root / "tasks" / "testonly.jsonl",
            "trainonly": root / "tasks" / "trainonly.jsonl", "chat": msgs, "runs": root / "runs"}


def test_a_saved_tokenizer_loads_with_its_own_pipeline(user):
    """transformers picks Qwen2Tokenizer for a Qwen2 directory and it splits digits by its own rule;
    the BPE the model was trained with must come back as saved (checkpoint.load_tokenizer)."""
    from transformers import AutoTokenizer

    from scalelab.posttrain.stage import open_run

    text = "Hana has 11 coins. Then Hana gets 120 more.\n11 + 120 = 131\n#### 131"
    want = user["tokenizer"](text)["input_ids"]
    assert open_run(user["qwen"]).tokenizer(text)["input_ids"] == want
    auto = AutoTokenizer.from_pretrained(user["qwen"])
    if type(auto).__name__ == "Qwen2Tokenizer":  # the trap itself, where this transformers has it
        assert auto(text)["input_ids"] != want


def _on_task(rec, user, technique):
    m = rec.metrics
    assert rec.status == "complete" and rec.task == "gsm8k.jsonl" and rec.technique == technique
    assert rec.parent_id == "qwen" and rec.config["task"] == str(user["task"])
    assert set(m["accuracy_by_difficulty"]) == {"1", "2"} == set(m["parent_accuracy_by_difficulty"])
    assert m["eval_problems_by_difficulty"] == {"1": 3, "2": 3} and m["chance_by_difficulty"] == {"1": 0.0, "2": 0.0}
    assert all(0 <= v <= 1 for v in m["accuracy_by_difficulty"].values())
    assert math.isfinite(m["eval_loss"]) and rec.flops_eval > 0
    assert rec.flops["posttrain"] == pytest.approx(sum(rec.posttrain_ledger.values()))


def _go(tech, user, **cfg):
    return run(tech, {"parent": str(user["qwen"]), "task": str(user["task"]), **EVAL, **cfg}, user["runs"])


def test_sft_full_lora_and_chat_messages(user):
    digest = dir_digest(user["qwen"])
    full = _go("sft", user, examples=16, batch_size=8)
    _on_task(full, user, "sft")
    assert full.metrics["train_examples"] == 16 and full.metrics["data"] == "gsm8k.jsonl"
    lora = _go("sft", user, examples=16, batch_size=8, lora_rank=2)
    _on_task(lora, user, "sft-lora")
    assert lora.metrics["trainable_params"] < full.metrics["trainable_params"]
    chat = _go("sft", user, data=str(user["chat"]), batch_size=4)
    assert chat.metrics["train_examples"] == 12 and chat.metrics["data"] == "chat.jsonl"
    assert len({full.run_id, lora.run_id, chat.run_id}) == 3
    with pytest.raises(InputError, match="need a tokenizer with a chat template"):
        run("sft", {"parent": str(user["llama"]), "data": str(user["chat"]), "task": str(user["task"]), **EVAL},
            user["runs"])
    assert dir_digest(user["qwen"]) == digest


def test_distill_from_a_teacher_with_its_own_prompt_format(user):
    off = _go("distill", user, teacher=str(user["llama"]), mode="offline", examples=8, batch_size=4)
    _on_task(off, user, "distill-offline")
    assert off.teacher_id == "llama" and off.metrics["teacher_samples"] == 8
    assert set(off.posttrain_ledger) == {"teacher_generate", "student_train"} or off.metrics["teacher_kept"] == 0
    logit = _go("distill", user, teacher=str(user["llama"]), data="corpus", tokens=512, batch_size=2)
    _on_task(logit, user, "distill-logit")
    assert set(logit.posttrain_ledger) == {"teacher_forward", "student_train"}


def test_prune_and_quantize_on_the_task(user):
    wanda = _go("prune", user, method="wanda", calibration_rows=4)
    _on_task(wanda, user, "prune-wanda")
    assert set(wanda.posttrain_ledger) == {"calibration"} and wanda.metrics["sparsity"] == pytest.approx(0.5, abs=0.05)
    q = _go("quantize", user, latency_prompts=2, latency_tokens=2, repeats=1)
    _on_task(q, user, "quantize-int8-weight")
    assert q.metrics["size_ratio"] > 1


def test_rlvr_rft_and_synth_learn_from_the_task_verifier(user):
    rl = _go("rlvr", user, steps=2, prompts_per_step=3, group_size=3, eval_every=1, curve_problems=2,
             max_new_tokens=16)
    assert rl.metrics["reward_source"] == "verifier" and len(rl.metrics["curve"]) == 3
    assert {"policy_generate", "policy_train"} <= set(rl.posttrain_ledger)
    assert rl.task == "gsm8k.jsonl" and set(rl.metrics["accuracy_by_difficulty"]) == {"1", "2"}
    rft = _go("rft", user, rounds=1, questions=6, samples=3, curve_problems=2, batch_size=4, temperature=1.0)
    _on_task(rft, user, "rft")
    assert rft.metrics["curve"][1]["sampled"] == 18
    synth = _go("synth", user, examples=8, synth_problems=4, samples=2, batch_size=4)
    _on_task(synth, user, "synth")
    assert synth.metrics["target_steps"] == [2] and synth.metrics["real_steps"] == [1]
    with pytest.raises(ConfigError, match="reward_level=step checks testbed step lines"):
        _go("rlvr", user, reward_level="step")


def test_reward_model_rlhf_and_dpo_on_pairs_of_the_policys_own_samples(user):
    rm = _go("reward-model", user, problems=12, samples=6, temperature=1.2, heldout=0.25)
    assert rm.task == "gsm8k.jsonl" and rm.metrics["feedback"].startswith("gsm8k.jsonl pairs")
    assert rm.metrics["train_pairs"] > 0 and set(rm.posttrain_ledger) == {"policy_generate", "reward_model_forward"}
    hf = _go("rlhf", user, reward_model=str(user["runs"] / rm.run_id), steps=1, prompts_per_step=3, group_size=2,
             eval_every=0, curve_problems=2, max_new_tokens=16)
    assert hf.task == "gsm8k.jsonl" and hf.metrics["reward_source"] == "reward-model"
    assert {"policy_generate", "reward_model", "policy_train"} <= set(hf.posttrain_ledger)
    dpo = _go("dpo", user, problems=12, samples=6, temperature=1.2, epochs=1, batch_size=4, curve_problems=2)
    _on_task(dpo, user, "dpo")
    assert dpo.metrics["pairs"] > 0 and len(dpo.metrics["curve"]) == 2


def test_testbed_run_ids_are_the_ones_written_before_task_files():
    """The task options enter a run id only for a task file: testbed children keep their ids."""
    from scalelab.posttrain import get_technique
    from scalelab.posttrain.stage import run_id_for

    before = {"sft": "sft-9fb28b6f", "distill": "distill-ac1f3837", "prune": "prune-1573e0cb",
              "quantize": "quantize-d970a769", "rlvr": "rlvr-c8ee61ab", "rft": "rft-43ab3b97", "dpo": "dpo-3b72157c",
              "reward-model": "reward-model-a40981c3", "synth": "synth-e4ac5dae"}
    for name, rid in before.items():
        tech = get_technique(name)
        cfg = tech.config.build({"parent": "p", **({"teacher": "t"} if name == "distill" else {})})
        assert run_id_for(tech, cfg, "d3-2M-f18c1a8f", "t" if name == "distill" else None) == f"d3-2M-f18c1a8f-{rid}"
        on_file = cfg.model_copy(update={"task": __file__})
        assert run_id_for(tech, on_file, "d3-2M-f18c1a8f", None) != f"d3-2M-f18c1a8f-{rid}"


def _cli(capsys, *args):
    from scalelab.cli import main

    with pytest.raises(SystemExit) as e:
        main(list(map(str, args)))
    return e.value.code, capsys.readouterr().err.strip()


def test_bad_input_is_one_line_exit_2_and_nothing_written(capsys, user, tmp_path):
    out = tmp_path / "out"
    q, task = user["qwen"], user["task"]
    cases = [
        (["distill", "--from", q, "--teacher", user["other"], "--task", task], "uses another tokenizer"),
        (["sft", "--from", q, "--task", user["trainonly"]], "no split 'test'; splits found: train"),
        (["sft", "--from", q, "--task", user["testonly"]], "no split 'train'; splits found: test"),
        (["rlvr", "--from", q, "--task", user["testonly"]], "no split 'train'"),
        (["quantize", "--from", q, "--task", user["trainonly"]], "no split 'test'"),
        (["sft", "--from", q, "--task", task, "--eval-difficulties", "7"], "not among gsm8k.jsonl's difficulties"),
        (["sft", "--from", q, "--shots", "2"], "--shots applies to a task file"),
        (["sft", "--from", q, "--task", tmp_path / "missing.jsonl"], "no such file"),
    ]
    for args, msg in cases:
        code, err = _cli(capsys, "posttrain", *args, "--runs-dir", out, "--threads", "1")
        assert code == 2 and msg in err and "\n" not in err, (args, err)
        assert not out.exists(), args
