"""train(config): records, metrics rows, checkpoints, resume, crash safety, determinism."""
from __future__ import annotations

import errno
import json
import math
from pathlib import Path

import pytest

from scalelab import checkpoint as ckpt
from scalelab.pretrain import train as T
from scalelab.errors import ConfigError
from scalelab.records import read_metrics, read_record
from scalelab.tables import load_table

SOURCE = "tests.test_train_source:MarkovSource"
GOLDEN = Path(__file__).parent / "golden" / "train_d1_markov.json"


def tiny(**kw) -> T.TrainConfig:
    base = dict(model="d1", source=SOURCE, seq_len=16, batch_size=4, tokens=64 * 300, threads=1,
                eval_every=50, log_every=10, checkpoint_every=100)
    return T.TrainConfig.build({**base, **kw})


def _curve(run_dir: Path) -> list[tuple]:
    return [(r["step"], r["tokens"], r["flops"], r["loss"], r["eval_loss"], r["lr"]) for r in read_metrics(run_dir)]


# ---- config and rules --------------------------------------------------------------------------
def test_out_of_range_value_names_field_and_range():
    with pytest.raises(ConfigError) as e:
        T.TrainConfig.build(warmup_frac=0.9)
    assert "warmup_frac=0.9" in str(e.value) and "0.5" in str(e.value) and "\n" not in str(e.value)


def test_unknown_set_key_lists_close_names():
    with pytest.raises(ConfigError, match="did you mean.*seq_len"):
        T.TrainConfig.build().override(["seqlen=64"])


def test_bad_model_name_is_a_config_error():
    with pytest.raises(ConfigError, match="model='d4x'"):
        T.plan_run(T.TrainConfig.build(model="d4x"), 64)


def test_schedules_warm_up_then_decay_to_the_floor():
    c = T.TrainConfig.build(min_lr_frac=0.1)
    lrs = [T.lr_at(s, 1.0, 100, 10, c) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:])) and lrs[-1] == pytest.approx(0.1, abs=1e-3)
    w = T.TrainConfig.build(schedule="wsd", decay_frac=0.2)
    lw = [T.lr_at(s, 1.0, 100, 10, w) for s in range(100)]
    assert lw[10:80] == [1.0] * 70 and lw[-1] == pytest.approx(0.1) and lw[85] < 1.0


def test_rule_lr_falls_with_size_and_batch_grows_with_compute():
    assert T.rule_lr(25_000) > T.rule_lr(1_500_000) > 0
    small, big = T.rule_batch(1e11, 256, 10**6), T.rule_batch(1e15, 256, 10**9)
    assert small < big and math.log2(big).is_integer()
    # capped so that a run takes at least min_steps steps
    assert T.rule_batch(1e15, 256, 256 * 200) <= 200 // T.RULE["min_steps"] + 1


def test_run_id_ignores_execution_knobs_only():
    a = tiny()
    assert T.run_id_for(a) == T.run_id_for(a.override(["threads=2", "checkpoint_every=7"]))
    assert T.run_id_for(a) != T.run_id_for(a.override(["seed=1"]))
    assert T.run_id_for(a).startswith("d1-19.2k-")


# ---- a run -----------------------------------------------------------------------------------
def test_a_run_writes_a_full_record_and_learns(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    rec = T.train(tiny(model="d2"), tmp_path)
    run = tmp_path / rec.run_id
    assert rec.status == "complete" and read_record(run).status == "complete"
    rows = read_metrics(run)
    assert set(rows[0]) >= {"step", "tokens", "flops", "flops_6n", "wall_s", "loss", "eval_loss", "bpb", "lr"}
    first, last = rows[0]["eval_loss"], rows[-1]["eval_loss"]
    assert first == pytest.approx(math.log(15), rel=0.1)  # untrained: uniform over the vocabulary
    assert last < 0.8 * first and last == rec.metrics["loss"]
    assert rec.metrics["loss"] > rec.metrics["entropy_floor"] - 0.02  # nobody beats Bayes
    assert rec.tokens == 300 * 64 == rows[-1]["tokens"]
    assert rec.flops["pretrain"] == pytest.approx(rec.tokens * rec.hparams["flops_per_token"])
    assert rec.flops_6n["pretrain"] == 6 * rec.n_params_active * rec.tokens
    assert rec.source["name"] == "markov" and rec.model["depth"] == 2
    # The checkpoint is a plain Hugging Face model that reproduces the recorded loss.
    model = AutoModelForCausalLM.from_pretrained(run / "checkpoint")
    tok = AutoTokenizer.from_pretrained(run / "checkpoint")
    assert tok("abc", add_special_tokens=False)["input_ids"] == [3, 4, 5]
    src = T.resolve_source(SOURCE, {})
    evals, _ = T._eval_set(src, tiny())
    import contextlib

    assert T.evaluate(model, evals, "cpu", contextlib.nullcontext) == pytest.approx(rec.metrics["loss"], rel=1e-5)
    # The ledger's standard columns are there for `scalelab fit`.
    row = load_table(tmp_path).frame.iloc[0]
    assert (row.N, row.D, row.C, row.loss) == (rec.n_params_nonembedding, rec.tokens, rec.flops["pretrain"],
                                                rec.metrics["loss"])


def test_second_call_returns_the_finished_record_without_training(tmp_path):
    rec = T.train(tiny(tokens=64 * 50), tmp_path)
    again = T.train(tiny(tokens=64 * 50, threads=2), tmp_path)  # execution knobs: same run
    assert again.finished_at == rec.finished_at and again.run_id == rec.run_id


def test_same_seed_same_curve_other_seed_other_curve(tmp_path):
    a = T.train(tiny(tokens=64 * 60), tmp_path / "a")
    b = T.train(tiny(tokens=64 * 60), tmp_path / "b")
    c = T.train(tiny(tokens=64 * 60, seed=1), tmp_path / "c")
    assert _curve(tmp_path / "a" / a.run_id) == _curve(tmp_path / "b" / b.run_id)
    assert _curve(tmp_path / "a" / a.run_id) != _curve(tmp_path / "c" / c.run_id)


def test_moe_run_counts_active_parameters(tmp_path):
    rec = T.train(tiny(model="moe-d1", tokens=64 * 30), tmp_path)
    assert rec.status == "complete" and rec.n_params_active < rec.n_params_nonembedding
    assert rec.flops_6n["pretrain"] == 6 * rec.n_params_active * rec.tokens


def test_golden_curve(tmp_path):
    """A tiny model's loss curve against a checked-in one (STYLE 11). Regenerate deliberately with
    `python -m tests.test_train` after a change that is meant to alter training."""
    rec = T.train(tiny(tokens=64 * 100, eval_every=25), tmp_path)
    got = [(r["step"], r["loss"], r["eval_loss"]) for r in read_metrics(tmp_path / rec.run_id)]
    want = json.loads(GOLDEN.read_text())
    assert [g[0] for g in got] == [w[0] for w in want["rows"]]
    for (_, l1, e1), (_, l2, e2) in zip(got, want["rows"]):
        for x, y in ((l1, l2), (e1, e2)):
            assert (x is None) == (y is None)
            if x is not None:
                assert x == pytest.approx(y, rel=2e-3)


# ---- resume and crash safety -----------------------------------------------------------------
class _StopAt(Exception):
    pass


def _stop_at(step):
    def progress(ev):
        if ev["step"] >= step:
            raise _StopAt(f"stopped at {ev['step']}")
    return progress


def test_resume_reproduces_the_uninterrupted_run(tmp_path):
    cfg = tiny(tokens=64 * 2000, eval_every=200, log_every=20, checkpoint_every=250)
    straight = T.train(cfg, tmp_path / "straight")
    with pytest.raises(_StopAt):
        T.train(cfg, tmp_path / "resumed", progress=_stop_at(1100))  # last checkpoint: 1000
    run = tmp_path / "resumed" / straight.run_id
    assert read_record(run).status == "failed" and ckpt.latest(run).name == "checkpoint"
    assert max(r["step"] for r in read_metrics(run)) == 1100
    resumed = T.train(cfg, tmp_path / "resumed")
    assert resumed.status == "complete" and resumed.resumed_from_step == 1000
    assert _curve(run) == _curve(tmp_path / "straight" / straight.run_id)  # bit-identical
    assert resumed.metrics["loss"] == straight.metrics["loss"]


def test_moe_resume_is_exact_too(tmp_path):
    """Mixtral's fused expert tensors go through save_pretrained / from_pretrained unchanged."""
    cfg = tiny(model="moe-d1", tokens=64 * 80, eval_every=40, checkpoint_every=30)
    straight = T.train(cfg, tmp_path / "a")
    with pytest.raises(_StopAt):
        T.train(cfg, tmp_path / "b", progress=_stop_at(40))
    resumed = T.train(cfg, tmp_path / "b")
    assert resumed.resumed_from_step == 30
    assert _curve(tmp_path / "b" / resumed.run_id) == _curve(tmp_path / "a" / straight.run_id)


def test_failed_checkpoint_write_keeps_the_previous_one(tmp_path, monkeypatch):
    from safetensors.torch import save_file as real_save

    cfg = tiny(tokens=64 * 300, checkpoint_every=100)
    calls = {"n": 0}

    def flaky(tensors, path, *a, **k):  # the optimizer file of the second checkpoint: disk full
        calls["n"] += 1
        if calls["n"] == 2:
            real_save({k: v[: v.numel() // 2] if v.dim() else v for k, v in tensors.items()}, path)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(tensors, path, *a, **k)

    monkeypatch.setattr("safetensors.torch.save_file", flaky)
    with pytest.raises(OSError, match="No space"):
        T.train(cfg, tmp_path)
    run = tmp_path / T.run_id_for(cfg)
    rec = read_record(run)
    assert rec.status == "failed" and "No space" in rec.error
    good = ckpt.latest(run)
    assert json.loads((good / ckpt.STATE_FILE).read_text())["step"] == 100
    assert not list(run.glob(ckpt.TMP_PREFIX + "*"))  # the half-written one is gone
    monkeypatch.setattr("safetensors.torch.save_file", real_save)
    resumed = T.train(cfg, tmp_path)
    assert resumed.resumed_from_step == 100
    straight = T.train(cfg, tmp_path / "straight")
    assert resumed.metrics["loss"] == straight.metrics["loss"]


def test_kill_between_the_two_renames_falls_back_to_the_old_checkpoint(tmp_path):
    cfg = tiny(tokens=64 * 200, checkpoint_every=100)
    with pytest.raises(_StopAt):
        T.train(cfg, tmp_path, progress=_stop_at(150))
    run = tmp_path / T.run_id_for(cfg)
    # what a kill leaves after `checkpoint -> checkpoint.old` and before `tmp -> checkpoint`
    (run / "checkpoint").rename(run / "checkpoint.old")
    (run / (ckpt.TMP_PREFIX + "dead")).mkdir()
    (run / (ckpt.TMP_PREFIX + "dead") / "model.safetensors").write_bytes(b"\0" * 10)
    assert ckpt.latest(run).name == "checkpoint.old"
    rec = T.train(cfg, tmp_path)
    assert rec.status == "complete" and rec.resumed_from_step == 100
    assert (run / "checkpoint").is_dir() and not (run / "checkpoint.old").exists()
    assert not list(run.glob(ckpt.TMP_PREFIX + "*"))


def test_a_locked_run_is_not_trained_twice(tmp_path):
    cfg = tiny()
    run = tmp_path / T.run_id_for(cfg)
    with T.run_lock(run):
        with pytest.raises(T.RunBusy):
            T.train(cfg, tmp_path)


def test_corrupt_record_is_a_one_line_error(tmp_path):
    cfg = tiny()
    run = tmp_path / T.run_id_for(cfg)
    run.mkdir(parents=True)
    (run / "record.json").write_text("{ not json")
    with pytest.raises(Exception) as e:
        T.train(cfg, tmp_path)
    assert "corrupt record" in str(e.value) and "\n" not in str(e.value)


def _write_golden() -> None:  # python -m tests.test_train
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        rec = T.train(tiny(tokens=64 * 100, eval_every=25), d)
        rows = [(r["step"], r["loss"], r["eval_loss"]) for r in read_metrics(Path(d) / rec.run_id)]
    GOLDEN.parent.mkdir(exist_ok=True)
    GOLDEN.write_text(json.dumps({"config": tiny(tokens=64 * 100, eval_every=25).model_dump(),
                                  "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    _write_golden()


# ---- command line ------------------------------------------------------------------------------
def test_cli_trains_from_a_config_file(tmp_path, cli):
    from tests.conftest import REPO

    cfg = tmp_path / "run.json"
    cfg.write_text(tiny(tokens=64 * 40).model_dump_json())
    r = cli("train", cfg, "--set", "seed=3", "--runs-dir", tmp_path / "runs", cwd=REPO)
    assert r.returncode == 0, r.stderr
    rec = read_record(next((tmp_path / "runs").iterdir()))
    assert rec.status == "complete" and rec.config["seed"] == 3 and rec.run_id in r.stdout
    assert "nats/token" in r.stdout and "Traceback" not in r.stderr


@pytest.mark.parametrize("args,expect", [
    (["--set", "sed=1"], "did you mean seed"),
    (["--set", "tokens=5"], "tokens=5"),
    (["--preset", "d4x"], "model='d4x'"),
    (["missing.json"], "config file not found"),
])
def test_cli_bad_input_is_one_line_exit_2(tmp_path, cli, args, expect):
    r = cli("train", *args, "--runs-dir", tmp_path)
    assert r.returncode == 2 and expect in r.stderr
    assert r.stderr.strip().count("\n") == 0 and r.stderr.startswith("error:")
