"""The one shape of every post-training stage (STYLE.md item 7):

    load a parent run -> transform -> evaluate -> save a child run with lineage and its own ledger

A technique is a `Technique(name, config, transform)`; `run_stage(technique, config, runs_dir)`
does everything around `transform`, so a technique only says what it does to the model:

    def transform(ctx: StageContext) -> StageResult:
        model = ctx.parent.load_model()                      # fp32, train mode
        teacher = ctx.open_run(ctx.cfg.teacher, role="--teacher")   # tokenizer checked
        fit(model, examples, ctx=ctx, ...)                   # counts student passes in ctx.ledger
        gen = ctx.generate(engine, prompts, n, params, part="teacher_generate")  # metered
        return StageResult(model=model, variant="sft-lora", metrics={...})

`run_stage` then evaluates the returned model and the parent on the same test problems of the
stage's task (greedy solutions through the test-time engine, `scalelab.posttrain.accuracy`), saves
the model as a Hugging Face checkpoint next to `record.json`, and writes the record:

    run_id       <parent id>-<variant>-<config hash>     (the same config finds the same run)
    parent_id    the run it came from; `teacher_id` when a teacher was used
    phase        "posttrain"; technique = the variant ("sft-lora", "prune-wanda", ...)
    flops        the parent's ledger carried forward, `posttrain` increased by this stage's total
    posttrain_ledger   this stage's FLOPs by part (student_train, teacher_forward,
                 teacher_generate, calibration, ...): every forward and backward pass of every model
    flops_eval   evaluation passes, kept out of the ledger (as train.py does)

The task (`ctx.data`, `taskdata.py`): the parent's testbed or a task file (`--task FILE`). Input
that cannot work (no split a stage needs, a teacher with another tokenizer) is refused up front.

The parent is only ever read: nothing is written under its directory (a child inside it is refused),
which tests check by hashing the parent directory before and after every stage.
"""
from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Literal, Union

from pydantic import Field

from scalelab import trackers
from scalelab.errors import ConfigError, InputError
from scalelab.records import CHECKPOINT_DIR, CONFIG_FILE, RunRecord, append_metrics, atomic_write_json, \
    check_output_dir, read_record, write_record
from scalelab.runs import run_id
from scalelab.tasks.options import TASK_FIELDS, TaskOptions

# change how fast (or how much a kill loses), never what: left out of the run id
EXECUTION_FIELDS = {"threads", "max_batch", "tracker", "checkpoint_interval_s"}
LEDGER_CONVENTION = (
    "exact (scalelab.model): matmul FLOPs, 2 per multiply-add, attention over the causal context; a training "
    "pass = 3 x forward minus the weight gradients of frozen matrices (2 x frozen weights per token); teacher "
    "and calibration forwards = 1 x forward with logits at every position; generation = prefill + decode as "
    "metered by the test-time engine; padding excluded")


class StageConfig(TaskOptions):
    """Fields every stage shares: the parent, its task, how it is evaluated, seeds and threads."""

    parent: str = Field(..., description="the run (or Hugging Face checkpoint directory) to post-train")
    eval_difficulties: list[Union[int, str]] | None = Field(
        None, description="testbed: steps per problem; task file: difficulty bins (default: all)")
    eval_problems: int = Field(50, ge=1, le=100_000, description="test problems per difficulty")
    eval_split: Literal["val", "test"] = "test"
    eval_parent: bool = Field(True, description="also evaluate the parent on the same problems")
    seed: int = Field(0, ge=0, le=2**31 - 1)
    threads: int | None = Field(None, ge=1, le=1024)
    max_batch: int = Field(256, ge=1, le=1_000_000, description="engine rows per batch (sampling, evaluation)")
    tracker: Literal["none", "mlflow", "tensorboard"] | None = Field(
        None, description="mirror rows and record to MLflow or TensorBoard (default: $SCALELAB_TRACKER)")
    checkpoint_interval_s: float = Field(
        120.0, ge=0, le=1e6, description="save the training state after this long (what a kill loses; 0: every step)")

    def needs_train_split(self) -> bool:  # draws training questions or examples from the task
        return False

    def check_inputs(self, parent: RunRef) -> None:
        """A technique's own inputs, refused before the child's folder exists (a data file's lines, a
        reward model, a target the parent cannot meet): bad input leaves no failed child behind."""

    evaluates: ClassVar[bool] = True  # a policy to score on the task's test split (a reward model is not)


# ---- runs: the parent, a teacher ----------------------------------------------------------------------
@dataclass
class RunRef:
    """A run (or bare checkpoint) that a stage reads: never written to."""

    path: Path
    checkpoint: Path
    record: RunRecord | None
    run_id: str
    tokenizer: Any

    @property
    def run_dir(self) -> Path:
        return self.checkpoint.parent if self.checkpoint.name == CHECKPOINT_DIR else self.checkpoint

    def load_model(self, *, train: bool = True, **kw: Any) -> Any:
        """A fresh fp32 copy of the weights (safetensors only), in train mode unless told."""
        from scalelab.inference.loading import load_causal_lm

        model, _, _ = load_causal_lm(self.checkpoint, **kw)
        return model.train(train)

    def testbed(self) -> Any:
        from scalelab.inference.loading import testbed_for

        return testbed_for(self.record)

    # What a pretraining record states and a post-training child carries forward (`inherited`), so
    # that a chain of stages keeps the first run's testbed, sequence length, corpus and lr.
    def _get(self, key: str) -> Any:
        return getattr(self.record, key, None) if self.record is not None else None

    def seq_len(self) -> int:
        cfg = self.record.config if self.record is not None else {}
        return int(self._get("seq_len") or cfg.get("seq_len") or 256)

    def pretrain_source(self) -> dict[str, Any]:
        cfg = self.record.config if self.record is not None else {}
        return self._get("pretrain_source") or {"source": cfg.get("source", "testbed"),
                                                "source_options": dict(cfg.get("source_options") or {})}

    def pretrain_lr(self) -> float | None:
        return self._get("pretrain_lr") or (self._get("hparams") or {}).get("lr")

    def inherited(self) -> dict[str, Any]:
        return {"source": self._get("source"), "seq_len": self.seq_len(), "pretrain_source": self.pretrain_source(),
                "pretrain_lr": self.pretrain_lr()}

    def corpus(self) -> Any:
        """The parent's pretraining source (same seed streams), for distillation on corpus text."""
        spec = self.pretrain_source()
        if spec["source"] == "testbed":
            return self.testbed()
        from scalelab.pretrain.train import resolve_source

        return resolve_source(spec["source"], dict(spec["source_options"]))

    def flops(self) -> dict[str, float]:
        return dict(self.record.flops) if self.record is not None else {}


def open_run(path: str | Path, *, role: str = "--from") -> RunRef:
    """Check that `path` is a finished run with a causal-LM checkpoint and a tokenizer; one-line errors."""
    from scalelab.inference.loading import (check_causal_lm, check_tokenizer, check_weights, parent_record,
                                           quiet_transformers, resolve_checkpoint, run_name, unfinished)

    p = Path(path)
    if not p.exists():
        raise InputError(f"{role} {p}: no such run or checkpoint directory")
    record = parent_record(p)
    if record is not None and record.status != "complete":
        raise InputError(f"{role} {p}: {unfinished(record)}")
    try:
        ckpt = resolve_checkpoint(p)
    except InputError as e:
        raise InputError(f"{role} {e}") from None
    check_causal_lm(ckpt)
    check_tokenizer(ckpt)
    check_weights(ckpt, role)
    from scalelab.checkpoint import load_tokenizer

    with quiet_transformers():
        tok = load_tokenizer(ckpt)
    return RunRef(p, ckpt, record, run_name(p, record), tok)


def same_tokenizer(a: RunRef, b: RunRef, *, role: str = "--teacher") -> None:
    """Token-level training (logits, KL, reference log-probabilities) needs one vocabulary: the same token
    at every id either model can produce. Special tokens a tokenizer class adds past both output layers
    (Qwen2Tokenizer's "<|endoftext|>") are never produced from text; an ordinary token there counts."""
    from scalelab.rewards.models import vocab_hash

    if vocab_hash(a.tokenizer) == vocab_hash(b.tokenizer):
        return
    from transformers import AutoConfig

    rows = [getattr(AutoConfig.from_pretrained(r.checkpoint), "vocab_size", None) for r in (a, b)]
    producible = [{t: i for t, i in r.tokenizer.get_vocab().items() if i < (rows[0] or 0)} for r in (a, b)]
    only_special = all(i < (rows[0] or 0) or getattr(r.tokenizer.added_tokens_decoder.get(i), "special", False)
                       for r in (a, b) for i in r.tokenizer.get_vocab().values())
    if rows[0] is not None and rows[0] == rows[1] and producible[0] == producible[1] and only_special:
        return
    raise InputError(f"{role} {b.run_id} uses another tokenizer than {a.run_id} (vocabularies of "
                     f"{len(b.tokenizer)} and {len(a.tokenizer)} tokens differ): token-level training needs one vocabulary")


# ---- the ledger ---------------------------------------------------------------------------------------
@dataclass
class Ledger:
    """This stage's FLOPs by part, exact and by the 6N convention, plus tokens by part."""

    exact: dict[str, float] = field(default_factory=dict)
    six_n: dict[str, float] = field(default_factory=dict)
    tokens: dict[str, int] = field(default_factory=dict)
    eval_flops: float = 0.0  # evaluation: reported, never in the ledger

    def add(self, part: str, flops: float, flops_6n: float = 0.0, tokens: int = 0) -> None:
        self.exact[part] = self.exact.get(part, 0.0) + float(flops)
        self.six_n[part] = self.six_n.get(part, 0.0) + float(flops_6n)
        self.tokens[part] = self.tokens.get(part, 0) + int(tokens)

    @property
    def total(self) -> float:
        return float(sum(self.exact.values()))

    @property
    def total_6n(self) -> float:
        return float(sum(self.six_n.values()))


# ---- stage context and result -------------------------------------------------------------------------
@dataclass
class StageResult:
    model: Any                                 # the child model (a plain HF causal LM) to evaluate and save
    variant: str                               # the technique as recorded: "sft", "sft-lora", "prune-wanda", ...
    metrics: dict[str, Any] = field(default_factory=dict)
    tokens: int | None = None                  # student training tokens
    teacher: RunRef | None = None
    carry_pretrain: bool = True                # False when the weights were re-initialised (no parent compute inside)
    eval_backend: str = "auto"                 # "hf" for models the plain-torch engine path cannot run (quantized)
    save: Callable[[Any, Path], None] | None = None   # custom writer (default: save_pretrained + tokenizer)
    evaluate: bool = True                      # False for models that are not policies (reward models)
    extra: dict[str, Any] = field(default_factory=dict)  # extra record fields


@dataclass
class StageContext:
    cfg: Any
    parent: RunRef
    run_dir: Path
    ledger: Ledger
    progress: Callable[[str, int, int], None]
    resume: Any                                # resume.Resume: saves the training state, restores a killed one
    data: Any = None                           # taskdata.TestbedData or FileData: the stage's task
    t0: float = field(default_factory=time.perf_counter)

    def open_run(self, path: str | Path, *, role: str) -> RunRef:
        ref = open_run(path, role=role)
        same_tokenizer(self.parent, ref, role=role)
        return ref

    def log(self, row: dict[str, Any]) -> None:
        if not self.resume.keep_row():
            return  # written by the attempt this one resumes
        append_metrics(self.run_dir, {**row, "posttrain_flops": self.ledger.total,
                                      "wall_s": round(time.perf_counter() - self.t0, 3)})

    def engine(self, model: Any, *, backend: str = "auto") -> Any:
        from scalelab.inference.engine import Engine

        return Engine(model, self.parent.tokenizer, max_batch=self.cfg.max_batch, backend=backend)

    def generate(self, engine: Any, prompts: list[str], n: int, params: Any, *, part: str) -> Any:
        """`engine.generate`, with its FLOPs (the engine's meter: prefill once + decode) in the ledger."""
        gen = engine.generate(prompts, n, params, progress=lambda d, t: self.progress(part, d, t))
        n_params = engine.flop_model.body / 2  # the matmul weights below the head
        toks = sum(gen.prompt_tokens) + gen.generated_tokens
        self.ledger.add(part, gen.flops, 2 * n_params * toks, toks)
        return gen


@dataclass(frozen=True)
class Technique:
    name: str
    config: type[StageConfig]
    transform: Callable[[StageContext], StageResult]
    summary: str


# ---- the stage --------------------------------------------------------------------------------------
def run_id_for(technique: Technique, cfg: StageConfig, parent_id: str, teacher_id: str | None) -> str:
    # the task enters as `task_key()`: nothing on the testbed, so testbed run ids are as before task files
    quiet = set(getattr(cfg, "id_quiet_without_curve", ())) if not getattr(cfg, "curve_points", 0) else set()
    key = {**cfg.model_dump(exclude=EXECUTION_FIELDS | {"parent", "teacher"} | set(TASK_FIELDS) | quiet), **cfg.task_key(),
           "technique": technique.name, "parent": parent_id, "teacher": teacher_id}
    return run_id(parent_id, technique.name, key=key)


def run_stage(technique: Technique, cfg: StageConfig, runs_dir: str | Path, *,
              progress: Callable[[str, int, int], None] | None = None) -> RunRecord:
    """Load the parent, transform, evaluate, save the child (see the module docstring)."""
    from scalelab.runs import run_lock, torch_threads

    check_output_dir(runs_dir, "--runs-dir")
    data = getattr(cfg, "data", None)  # its lines are read by `check_inputs`, in `preflight`
    if isinstance(data, str) and data not in ("testbed", "corpus") and not Path(data).is_file():
        raise InputError(f"--data {data}: no such file (expected testbed, or a JSONL file)")
    parent = open_run(cfg.parent)
    teacher_path = getattr(cfg, "teacher", None)
    teacher_id = open_run(teacher_path, role="--teacher").run_id if teacher_path else None
    data = preflight(cfg, parent)
    run_dir = Path(runs_dir) / run_id_for(technique, cfg, parent.run_id, teacher_id)
    inside = parent.run_dir.resolve()
    if inside == run_dir.resolve() or inside in run_dir.resolve().parents:
        raise ConfigError(f"--runs-dir {runs_dir}: is inside the parent run {parent.run_id}; a stage never writes "
                          "into its parent, choose a directory outside it")
    with run_lock(run_dir), trackers.use(cfg.tracker):
        if (run_dir / "record.json").is_file():
            old = read_record(run_dir)
            if old.status == "complete":
                return old
        with torch_threads(cfg.threads):
            return _run(technique, cfg, parent, data, run_dir, progress or (lambda *a: None))


def preflight(cfg: StageConfig, parent: RunRef) -> Any:
    """Refuse what cannot work before anything is written: another tokenizer for a model the stage
    trains against, a task file without the split the stage evaluates on or trains from."""
    from scalelab.posttrain.taskdata import stage_data

    for role in ("teacher", "reference"):
        path = getattr(cfg, role, None)
        if path:
            same_tokenizer(parent, open_run(path, role=f"--{role}"), role=f"--{role}")
    data = stage_data(cfg, parent)
    if not data.on_testbed:
        if cfg.evaluates:
            data.eval_groups(cfg)
        if cfg.needs_train_split():
            data.split("train")
    cfg.check_inputs(parent)
    return data


def _run(technique: Technique, cfg: StageConfig, parent: RunRef, data: Any, run_dir: Path,
         progress: Any) -> RunRecord:
    from scalelab.checkpoint import remove_stale_temporaries
    from scalelab.model import count_module_params
    from scalelab.posttrain.accuracy import evaluate_model
    from scalelab.posttrain.resume import Resume

    shutil.rmtree(run_dir / CHECKPOINT_DIR, ignore_errors=True)  # left by a failed or killed attempt
    remove_stale_temporaries(run_dir)
    resume = Resume.open(run_dir, cfg.checkpoint_interval_s)  # metrics.jsonl kept only up to its state
    record = RunRecord(run_id=run_dir.name, parent_id=parent.run_id, phase="posttrain", technique=technique.name,
                       task=cfg.task_name(), config={**cfg.model_dump(), "technique": technique.name},
                       flops_convention=LEDGER_CONVENTION)
    atomic_write_json(run_dir / CONFIG_FILE, record.config)
    write_record(run_dir, record)
    ctx = StageContext(cfg=cfg, parent=parent, run_dir=run_dir, ledger=Ledger(), progress=progress, data=data,
                       resume=resume)
    try:
        result = technique.transform(ctx)
        ev: dict[str, Any] = {}
        parent_ev: dict[str, Any] = {}
        if result.evaluate:  # a reward model is not a policy: its technique reports its own metrics
            progress("evaluating", 0, 1)
            ev = evaluate_model(result.model, parent.tokenizer, data, cfg, backend=result.eval_backend)
            ctx.ledger.eval_flops += ev.pop("flops")
            if cfg.eval_parent:
                parent_ev = evaluate_model(parent.load_model(train=False), parent.tokenizer, data, cfg)
                ctx.ledger.eval_flops += parent_ev.pop("flops")
        _save(result, parent, run_dir)
        resume.finish()
    except BaseException as err:
        record.fail(err)
        write_record(run_dir, record)
        raise
    counts = count_module_params(result.model)
    record.technique = result.variant
    record.n_params, record.n_params_nonembedding = counts.total, counts.nonembedding
    record.n_params_embedding, record.n_params_active = counts.embedding + counts.unembedding, counts.active
    record.tokens = result.tokens
    base = parent.flops() if result.carry_pretrain else {}
    base6 = dict(parent.record.flops_6n) if (parent.record is not None and result.carry_pretrain) else {}
    record.flops = {**base, "posttrain": base.get("posttrain", 0.0) + ctx.ledger.total}
    record.flops_6n = {**base6, "posttrain": base6.get("posttrain", 0.0) + ctx.ledger.total_6n}
    record.wall_s = time.perf_counter() - ctx.t0
    extra = {"posttrain_ledger": ctx.ledger.exact, "posttrain_ledger_6n": ctx.ledger.six_n,
             "posttrain_tokens": ctx.ledger.tokens, "flops_eval": ctx.ledger.eval_flops,
             "teacher_id": result.teacher.run_id if result.teacher else None,
             "teacher_flops": result.teacher.flops() if result.teacher else None,
             "parent_flops": parent.flops(), **parent.inherited(), **result.extra,
             "resumed_from_step": (resume.restored or {}).get("step")}
    for k, v in extra.items():
        setattr(record, k, v)
    metrics = {**result.metrics, **ev}
    if parent_ev:
        metrics.update({f"parent_{k}": v for k, v in parent_ev.items()
                        if k in ("accuracy", "accuracy_by_difficulty", "eval_loss")})
    record.complete(**metrics)
    write_record(run_dir, record)
    return record


def _save(result: StageResult, parent: RunRef, run_dir: Path) -> None:
    """The child checkpoint, written whole to a temporary directory and renamed into place."""
    from scalelab.inference.loading import quiet_transformers

    tmp = run_dir / ".checkpoint.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    with quiet_transformers():
        if result.save is not None:
            result.save(result.model, tmp)
        else:
            result.model.save_pretrained(tmp, safe_serialization=True)
        parent.tokenizer.save_pretrained(tmp)
    os.replace(tmp, run_dir / CHECKPOINT_DIR)


def dir_digest(path: str | Path) -> str:
    """A hash of every file's name, size and bytes under `path` (tests: the parent is never modified)."""
    import hashlib

    h = hashlib.sha256()
    root = Path(path)
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()
