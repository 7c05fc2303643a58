"""`scalelab train` (one run) and `scalelab sweep` (a plan of runs): parse, call, print."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import typer

from scalelab.cli.app import TRACKER, app
from scalelab.errors import ConfigError, InputError

_SET = typer.Option([], "--set", help="override a TrainConfig field: key=value (repeatable)")
_CORPUS = typer.Option(None, "--corpus", help="testbed | stdlib | PATH (text files, glob or JSONL)")


def _err(msg: str) -> None:
    print(msg, file=sys.stderr)


def _base(config: Path | None, corpus: str | None, sets: list[str], first: list[str]):
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch starts its threads
    from scalelab.pretrain.train import TrainConfig, quiet_import_noise, resolve_source, source_options

    quiet_import_noise()

    if corpus is not None and not corpus.strip():
        raise InputError("--corpus '': empty; give testbed, stdlib or a PATH")
    cfg = TrainConfig.from_json(config) if config else TrainConfig.build()
    cfg = cfg.override(first + ([f"source={corpus}"] if corpus is not None else []) + list(sets))
    return cfg, resolve_source(cfg.source, source_options(cfg))


@app.command("train")
def train_cmd(
    config: Path = typer.Argument(None, help="a TrainConfig JSON file (else defaults)"),
    preset: str = typer.Option(None, "--preset", help="model preset: d2..d8, moe-d4, gpu-d12, ..."),
    sets: list[str] = _SET, corpus: str = _CORPUS,
    runs_dir: Path = typer.Option(Path("runs"), "--runs-dir", help="where run directories go"),
    nproc: int = typer.Option(1, "--nproc", min=1, help="processes on this node under torchrun (DDP/FSDP)"),
    parallel: str = typer.Option("auto", "--parallel", help="with --nproc: ddp | fsdp | auto (FSDP if a GPU is too small)"),
    nnodes: int = typer.Option(1, "--nnodes", min=1, help="with --nproc: nodes taking part (run this on each)"),
    rdzv: str = typer.Option(None, "--rdzv-endpoint", help="with --nnodes > 1: HOST:PORT of the rendezvous"),
    rdzv_timeout: float = typer.Option(60.0, "--rdzv-timeout", help="seconds to wait for the other nodes"),
    tracker: str = TRACKER,
    as_json: bool = typer.Option(False, "--json", help="print the run record as JSON"),
) -> None:
    """Train one model and write its run record."""
    from scalelab.pretrain.train import plan_run, run_id_for, train
    from scalelab.records import check_output_dir

    check_output_dir(runs_dir, "--runs-dir")
    if nproc > 1 or nnodes > 1:
        from scalelab.pretrain.launch import check_launch

        check_launch(nproc, nnodes, rdzv, rdzv_timeout)
    cfg, source = _base(config, corpus, sets, ([f"model={preset}"] if preset is not None else []) + _tracking(tracker))
    p = plan_run(cfg, source.vocab_size)
    mode = None
    if nproc > 1 or nnodes > 1:
        from scalelab.pretrain.launch import choose_mode

        mode = choose_mode(parallel, cfg, source.vocab_size)
    _err(f"run {run_id_for(cfg)}: {p['arch'].name} width {p['arch'].width} heads {p['arch'].n_heads}, "
         f"batch {p['batch_size']}x{cfg.seq_len}, {p['steps']} steps, lr {p['lr']:.3g} ({cfg.schedule}), "
         f"{p['flops_per_token'] * cfg.tokens:.3g} FLOPs on {source.name}")
    if mode is not None:
        from scalelab.pretrain.launch import launch
        from scalelab.records import read_record

        _err(f"  torchrun: {nnodes} node(s) x {nproc} process(es), {mode}: {p['batch_size']} sequences per step "
             f"split over {nproc * nnodes} processes")
        rec = read_record(launch(cfg, runs_dir, nproc, mode=mode, nnodes=nnodes, rdzv_endpoint=rdzv,
                                 rdzv_timeout_s=rdzv_timeout, echo=_err))
    else:
        rec = train(cfg, runs_dir, source=source,
                    progress=lambda e: _err(f"  step {e['step']}/{e['steps']}  eval loss {e['eval_loss']:.4f}")
                    if e["eval_loss"] is not None else None)
    if rec.status != "complete":
        _err(f"run {rec.run_id} {rec.status}: {rec.error}")
        raise typer.Exit(1)
    if as_json:
        from scalelab.records import dumps_json

        print(dumps_json(rec.model_dump()))
        return
    print(f"{rec.run_id}: loss {rec.metrics['loss']:.4f} nats/token, {rec.metrics['bpb']:.4f} bits/byte, "
          f"{rec.tokens:,} tokens, {rec.flops['pretrain']:.3g} FLOPs, {rec.wall_s:.1f} s -> {runs_dir / rec.run_id}")


@app.command("sweep")
def sweep_cmd(
    runs_dir: Path = typer.Option(..., "--runs-dir", help="the sweep's runs directory"),
    plan: str = typer.Option(None, "--plan", help="isoflop | grid"),
    budgets: str = typer.Option(None, "--budgets", help="isoflop: training FLOPs, e.g. 1e12,3e12"),
    points: int = typer.Option(None, "--points-per-budget", help="isoflop: model sizes per budget"),
    ratio: float = typer.Option(None, "--tokens-per-param", help="isoflop: centre of the sizes (default 20)"),
    sizes: str = typer.Option(None, "--sizes", help="grid: presets, e.g. d2,d4,d6; isoflop: the ladder to "
                              "choose from, e.g. d2,d3w32,d2w48,d3 (default: every depth)"),
    tokens: str = typer.Option(None, "--tokens", help="grid: token counts, e.g. 1e5,1e6"),
    workers: int = typer.Option(1, "--workers", min=1, help="local processes (one torch thread each)"),
    preset: str = typer.Option(None, "--preset", help="quick (~2 min) | default (~20 min)"),
    executor: str = typer.Option("local", "--executor", help="local (processes here) | ray (one Ray task per member)"),
    address: str = typer.Option(None, "--address", help="ray: the cluster's HOST:PORT (default: start Ray here)"),
    cpus: float = typer.Option(1.0, "--cpus-per-member", help="ray: CPUs each member asks for (= torch threads)"),
    gpus: float = typer.Option(0.0, "--gpus-per-member", help="ray: GPUs each member asks for"),
    sets: list[str] = _SET, corpus: str = _CORPUS, tracker: str = TRACKER,
    as_json: bool = typer.Option(False, "--json", help="print the members' outcomes as JSON"),
) -> None:
    """Run a grid or IsoFLOP sweep; re-running it skips finished members and resumes the rest."""
    import json

    from scalelab.tables import load_runs
    from scalelab.pretrain.sweep import plan_grid, plan_isoflop, read_budgets, run_sweep, sweep_preset

    from scalelab.records import check_output_dir

    check_output_dir(runs_dir, "--runs-dir")
    pre = sweep_preset(preset, corpus or "testbed") if preset is not None else {}
    kind = plan or pre.get("plan")
    _check_plan_options(kind, {"--budgets": budgets, "--points-per-budget": points, "--tokens-per-param": ratio},
                        {"--tokens": tokens})
    runner = _executor(executor, address, cpus, gpus)
    if runner is None:  # local processes; Ray's workers are the cluster's to size
        from scalelab.pretrain.launch import check_workers

        check_workers(workers)
    base_sets = [f"{k}={json.dumps(v) if isinstance(v, dict) else v}" for k, v in pre.get("base", {}).items()]
    base, source = _base(None, corpus, sets, base_sets + _tracking(tracker))
    from scalelab import trackers

    trackers.make(base.tracker)  # opens (and creates) the store once, before any worker starts
    if kind == "isoflop":
        cs = read_budgets(budgets) if budgets else pre.get("budgets")
        if not cs:
            raise InputError("--plan isoflop needs --budgets (or --preset quick|default)")
        configs = plan_isoflop(base, cs, points or pre.get("points", 3), vocab_size=source.vocab_size,
                               tokens_per_param=ratio or pre.get("tokens_per_param", 20.0),
                               min_depth=pre.get("min_depth", 2),
                               max_tokens_per_param=pre.get("max_tokens_per_param"),
                               sizes=sizes.split(",") if sizes else None)
    elif kind == "grid":
        if not sizes or not tokens:
            raise InputError("--plan grid needs --sizes and --tokens")
        configs = plan_grid(base, sizes.split(","), [int(t) for t in read_budgets(tokens, "tokens")])
    else:
        raise ConfigError(f"--plan {kind!r}: expected isoflop or grid (or give --preset quick|default)")
    source.eval_batches(16, base.seq_len)  # bad input (e.g. seq_len too short) fails here, once
    problems = load_runs(runs_dir, status=None).problems if runs_dir.is_dir() else []
    for p in problems:
        _err(f"warning: {p} (skipped)")
    where = f"Ray ({address or 'local instance'})" if runner else f"{workers} worker(s)"
    _err(f"sweep: {len(configs)} members on {source.name}, {where} -> {runs_dir}")
    outcomes = run_sweep(configs, runs_dir, workers=workers, executor=runner, vocab_size=source.vocab_size,
                         show_progress=True,
                         plan={"plan": kind, "preset": preset, "budgets": budgets, "sizes": sizes, "tokens": tokens})
    if as_json:
        from dataclasses import asdict

        from scalelab.records import dumps_json

        print(dumps_json([asdict(o) for o in outcomes]))
    for o in ([] if as_json else outcomes):
        loss = f"loss {o.loss:.4f}" if o.loss is not None else (o.error or "")
        print(f"{o.run_id:<28} {o.status:<9} {loss}")
    failed = [o for o in outcomes if o.status in ("failed", "busy")]
    if problems:
        raise InputError(f"{len(problems)} unreadable record(s) under {runs_dir} were skipped, "
                         f"first: {problems[0]}")
    if failed:
        _err(f"{len(failed)} of {len(outcomes)} members did not complete; re-run the same command to resume")
        raise typer.Exit(1)


def _tracking(tracker: str | None) -> list[str]:
    """--tracker as the config's field, so that sweep workers (processes, Ray tasks) track too."""
    return [f"tracker={tracker}"] if tracker is not None else []


def _check_plan_options(kind: str | None, isoflop: dict, grid: dict) -> None:
    """An option of the other plan would be ignored without a word: refuse it instead."""
    other = {"isoflop": grid, "grid": isoflop}.get(kind or "", {})
    given = [flag for flag, value in other.items() if value is not None]
    if given:
        raise InputError(f"{', '.join(given)} belong(s) to the {'grid' if kind == 'isoflop' else 'isoflop'} plan, "
                         f"not --plan {kind}; leave {'it' if len(given) == 1 else 'them'} out")
    for flag, value in isoflop.items():
        if isinstance(value, (int, float)) and not value > 0:
            raise InputError(f"{flag} {value}: expected a positive number")


def _executor(kind: str, address: str | None, cpus: float, gpus: float):
    """None for the local executors (run_sweep picks one from --workers), else a RayExecutor."""
    if kind == "local":
        if address is not None:
            raise ConfigError("--address needs --executor ray")
        return None
    if kind != "ray":
        raise ConfigError(f"--executor {kind!r}: expected local or ray")
    from scalelab.pretrain.ray_sweep import RayExecutor

    return RayExecutor(address, num_cpus=cpus, num_gpus=gpus)
