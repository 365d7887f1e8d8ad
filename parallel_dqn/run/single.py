"""The run-level entry points behind the CLI: train and evaluate.

Each builds the plan, the parameter server with its recorder, and the workers,
wired through a transport: in-process for ``--mode single``, MPI for
``--mode parallel`` (``parallel_dqn.run.mpi``). The algorithm is the same,
and so are checkpoints and ``--resume``.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from parallel_dqn.config import Config
from parallel_dqn.data.store import open_store
from parallel_dqn.data.synthetic import load_structure
from parallel_dqn.checkpoint.coordinator import (
    CheckpointCoordinator,
    load_rank0_state,
    load_worker_states,
    make_coordinator,
)
from parallel_dqn.training.driver import LocalShard, run_workers
from parallel_dqn.training.server import ParameterServer
from parallel_dqn.comm.transport import InProcessTransport
from parallel_dqn.errors import UserError
from parallel_dqn.evaluation.results import RunRecorder
from parallel_dqn.model.saved import load_model
from parallel_dqn.checkpoint.format import CHECKPOINTS, Checkpoint, CheckpointStore
from parallel_dqn.telemetry.logs import setup_logging
from parallel_dqn.telemetry.notify import Notifier, notifying
from parallel_dqn.telemetry.progress import Progress
from parallel_dqn.telemetry.status import RunEvents
from parallel_dqn.run.signals import StopSignals, StoppedAfterCheckpoint
from parallel_dqn.checkpoint.resume import check_compatible, check_resume_flags, choose_checkpoint, finished_result, resume_target
from parallel_dqn.training.plan import RunPlan, plan_evaluation, plan_training

log = logging.getLogger(__name__)

RUN_FILES = ("trained_model.pth", "metrics.json", "metrics.jsonl")


def prepare_output(output: Path, overwrite: bool) -> None:
    """Create the output folder; refuse to mix a new run into an old one unless told to.

    Nothing of an earlier run is removed here: with ``--overwrite`` its files are
    replaced one by one as the new run writes them, so a run that fails on bad
    input leaves the earlier results as they were.
    """
    if output.exists() and not output.is_dir():
        raise UserError(f"--output {output} is a file", "give a folder path")
    old = [name for name in RUN_FILES if (output / name).exists()]
    if old and not overwrite:
        raise UserError(
            f"--output {output} already holds a run ({old[0]})", "choose another --output, or pass --overwrite"
        )
    output.mkdir(parents=True, exist_ok=True)


def train(cfg: Config, overwrite: bool = False, resume: str | None = None) -> dict[str, Any]:
    """Train on the training period, evaluate on the held-out one, write every output.

    ``resume`` (``--resume``): ``"auto"`` or a run / checkpoint folder (:mod:`parallel_dqn.checkpoint.resume`).
    """
    cfg.validate()
    check_resume_flags(overwrite, resume)
    store = open_store(cfg.data.data)
    plan = plan_training(cfg, store, structure=load_structure(cfg.data.data))
    output = Path(cfg.run.output)
    start = plan_start(cfg, output, overwrite, resume)
    if start.finished is not None:
        return start.finished
    prepare_output(output, overwrite or resume is not None)
    return _run_single(cfg, plan, store, output, initial_state=None, checkpoint=start.checkpoint)


@dataclass(frozen=True)
class RunStart:
    """How a training run starts: from scratch, from a checkpoint, or not at all (it finished already)."""

    checkpoint: Checkpoint | None = None
    finished: dict[str, Any] | None = None


def plan_start(cfg: Config, output: Path, overwrite: bool, resume: str | None) -> RunStart:
    """Decide how a training run into ``output`` starts.

    With ``--resume`` the folder is the run's own: what is decided (and any checkpoint skipped
    as corrupt) is logged to its ``run.log`` as well. Nothing is removed here: a fresh start
    retires an earlier run in the folder only once its own data have loaded
    (:func:`retire_earlier_run`), so a run refused for bad input leaves the folder as it was.
    """
    if resume is None:
        return RunStart()
    output.mkdir(parents=True, exist_ok=True)
    setup_logging(output / "run.log")
    finished = finished_result(output)
    if finished is not None:
        log.info("the run in %s has finished already (metrics.json): nothing to resume", output)
        return RunStart(finished=finished)
    checkpoint = choose_checkpoint(resume_target(resume, str(output)))
    if checkpoint is None:
        log.info("no checkpoint in %s: starting the run from the beginning", output / CHECKPOINTS)
        return RunStart()
    check_compatible(cfg, checkpoint)
    CheckpointStore(output / CHECKPOINTS).remove_staging()
    log.info("resuming from %s (%s)", checkpoint.path, checkpoint.manifest["reason"])
    return RunStart(checkpoint=checkpoint)


@dataclass
class Rank0:
    """Rank 0's part of a run (in one process, beside the workers): recorder, parameter server, checkpoints, events."""

    recorder: RunRecorder
    server: ParameterServer
    coordinator: CheckpointCoordinator | None  # None: an evaluation, which writes no checkpoints
    events: RunEvents


def build_rank0(
    cfg: Config,
    plan: RunPlan,
    output: Path,
    n_workers: int,
    progress: Progress,
    notifier: Notifier,
    signals: StopSignals | None,
    checkpoint: Checkpoint | None = None,
    initial_state: dict | None = None,
) -> Rank0:
    """The parameter server and what records, checkpoints and announces the run, restored from ``checkpoint``.

    ``initial_state``: a saved model to evaluate (no checkpoints then). A training run started
    afresh retires an earlier run in ``output`` once every worker has loaded its data.
    """
    training = initial_state is None
    saved = load_rank0_state(checkpoint) if checkpoint else None
    recorder = RunRecorder(cfg, output, progress)
    on_episode = notifying(recorder.on_episode, recorder.curve, notifier, cfg.notify.every, plan.episodes)
    server = ParameterServer(
        cfg, n_workers, on_episode, initial_state=initial_state, progress=progress,
        resume_state=saved["server"] if saved else None,
        on_setup=(lambda info: retire_earlier_run(output)) if training and checkpoint is None else None,
    )
    if saved:
        recorder.restore_checkpoint(saved["recorder"])
    coordinator = (
        make_coordinator(cfg, output, server, recorder, n_workers, signals, notifier, checkpoint) if training else None
    )
    return Rank0(recorder, server, coordinator, RunEvents(output, notifier, record=training))


def retire_earlier_run(output: Path) -> None:
    """A fresh run has loaded its data: the earlier run it replaces in ``output`` stops being resumable or finished.

    Its checkpoints and its ``metrics.json`` go (a later ``--resume auto`` would otherwise continue
    or report the old run); its other files are replaced as the new run writes them.
    """
    CheckpointStore(output / CHECKPOINTS).clear()
    (output / "metrics.json").unlink(missing_ok=True)


def evaluate(cfg: Config, model_path: str, overwrite: bool = False) -> dict[str, Any]:
    """Evaluate a saved model greedily on ``--eval_start``..``--eval_end``."""
    saved = load_model(model_path)
    model_cfg = Config.from_dict(saved["config"], source=str(model_path))
    # The model fixes the network and features; the data, period, costs and output come from the flags.
    model_cfg.data.data = cfg.data.data
    model_cfg.data.eval_start, model_cfg.data.eval_end = cfg.data.eval_start, cfg.data.eval_end
    model_cfg.market.cost_bps = cfg.market.cost_bps
    model_cfg.run = cfg.run
    model_cfg.dist.workers = 0
    model_cfg.validate()
    store = open_store(model_cfg.data.data)
    plan = plan_evaluation(model_cfg, store, tuple(saved["symbols"]), saved, structure=load_structure(model_cfg.data.data))
    output = Path(model_cfg.run.output)
    prepare_output(output, overwrite)
    return _run_single(model_cfg, plan, store, output, initial_state=saved)


def _run_single(
    cfg: Config,
    plan: RunPlan,
    store,
    output: Path,
    initial_state: dict | None,
    checkpoint: Checkpoint | None = None,
) -> dict[str, Any]:
    """Server and every worker in this process, through the in-process transport.

    Training runs write checkpoints and stop cleanly on SIGTERM/SIGUSR1; an evaluation does neither.
    """
    setup_logging(output / "run.log")
    torch.set_num_threads(cfg.run.threads)
    log.debug("resolved config:\n%s", cfg.to_toml())
    log.debug(
        "single-process run: %d stocks, %d workers, train %s..%s, eval %s..%s, %d episodes -> %s",
        len(plan.symbols), len(plan.shards), plan.train_start, plan.train_end, plan.eval_start, plan.eval_end,
        plan.episodes, output,
    )
    training = initial_state is None
    progress = Progress(total_steps=0, enabled=cfg.run.progress)
    notifier = Notifier.from_config(cfg.notify, output.name)
    with StopSignals() if training else contextlib.nullcontext() as signals:  # an evaluation just ends on a signal
        rank0 = build_rank0(cfg, plan, output, len(plan.shards), progress, notifier, signals, checkpoint, initial_state)
        transport = InProcessTransport(rank0.server, rank0.coordinator)
        shards = [LocalShard(i, stocks) for i, stocks in enumerate(plan.shards)]
        saved = load_worker_states(checkpoint, range(len(shards))) if checkpoint else None
        started = time.perf_counter()
        events = rank0.events
        events.started("single", plan.symbols, len(plan.shards), plan.episodes, checkpoint.path if checkpoint else None)
        try:
            try:
                run_workers(shards, plan, store, transport, cfg, resume=saved, signals=signals)
            finally:
                progress.close()
            result = rank0.recorder.finish(
                rank0.server, extra={"wall_seconds": round(time.perf_counter() - started, 2), "mode": "single"}
            )
            events.finished(result)
        except StoppedAfterCheckpoint as stop:
            last = rank0.coordinator.last.path if rank0.coordinator and rank0.coordinator.last else None
            events.stopped(stop.reason, last)
            raise StoppedAfterCheckpoint(stop.reason, str(last)) from None
        except UserError as exc:
            log.debug("stopped: %s", exc.line())  # the file records why; the CLI prints the line once
            events.failed(exc)
            raise
        except BaseException as exc:
            log.debug("failed", exc_info=True)
            events.failed(exc)
            raise
        finally:
            notifier.close()
    log.info("outputs written to %s", output)
    return result
