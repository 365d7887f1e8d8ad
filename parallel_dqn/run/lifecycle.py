"""One run lifecycle, for both modes: plan, claim the folder, start, watch, stop or fail, finish.

Single-process mode (:mod:`parallel_dqn.run.single`) and MPI mode (:mod:`parallel_dqn.run.mpi`) differ
only in wiring: who hosts the workers and what carries the messages. Everything else happens here,
once:

1. **Plan** (every process, every rank): validate the settings, open the store, plan stocks, shards and
   periods (:func:`plan_run`).
2. **Claim** (the writing process): lock the output folder for the run and check it may be written
   (:func:`parallel_dqn.run.folder.claim`); then decide how the run starts: afresh, from a checkpoint,
   or not at all because it has finished (:func:`decide_start`, logged to the run's ``run.log``).
3. **Open** (:class:`RankZero`): logging, the parameter server (restored from the checkpoint), rank 0's
   protocol endpoint, the checkpoint coordinator, and the observers: the recorder, TensorBoard,
   ``status.json``, notifications, the progress bar, and last, for an output in object storage, the
   store's mirror the caller passes (:mod:`parallel_dqn.run.cloud_output`).
4. **Run** the workers through the wiring, inside :meth:`RankZero.watching`, which tells the observers
   how it ended: a stop after a checkpoint, a failure (one line in ``status.json`` and the
   notification), or
5. **Finish**: the gradient accounting check (every gradient sent was applied or dropped, per
   worker), the run record, ``metrics.json`` and the model.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from parallel_dqn import outputs
from parallel_dqn.checkpoint.coordinator import CheckpointCoordinator, load_rank0_state, make_coordinator
from parallel_dqn.checkpoint.format import Checkpoint, CheckpointStore
from parallel_dqn.checkpoint.resume import (
    check_compatible,
    check_resume_flags,
    choose_checkpoint,
    finished_result,
    resume_target,
)
from parallel_dqn.config import Config
from parallel_dqn.data.snapshot import ListedOnce
from parallel_dqn.data.store import Store, open_store
from parallel_dqn.data.synthetic import load_structure
from parallel_dqn.errors import StoppedAfterCheckpoint, UserError
from parallel_dqn.evaluation.results import RunRecorder
from parallel_dqn.model.device import resolve_device
from parallel_dqn.model.saved import load_model
from parallel_dqn.run.cloud_output import StoreMirror
from parallel_dqn.run.folder import holds_run, retire_earlier_run
from parallel_dqn.telemetry.logs import setup_logging
from parallel_dqn.telemetry.notify import Notifier, NotifyingObserver
from parallel_dqn.telemetry.progress import Progress
from parallel_dqn.telemetry.record import run_record, stock_day_files
from parallel_dqn.telemetry.status import StatusFile
from parallel_dqn.telemetry.tensorboard import ScalarLog
from parallel_dqn.training.endpoint import ServerEndpoint
from parallel_dqn.training.observers import Observers, RunStarted
from parallel_dqn.training.plan import RunPlan, plan_training
from parallel_dqn.training.server import ParameterServer

log = logging.getLogger(__name__)

#: environment variables that say this process is one of several of an MPI or SLURM launch
_LAUNCH_SIZE = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "SLURM_STEP_NUM_TASKS")


@dataclass(frozen=True)
class RunStart:
    """How a training run starts: from scratch, from a checkpoint, or not at all (it finished already)."""

    checkpoint: Checkpoint | None = None
    finished: dict[str, Any] | None = None
    replaces: bool = False  # a fresh start into a folder that may hold an earlier run: retire it once loaded


def plan_run(cfg: Config) -> tuple[RunPlan, Store]:
    """Validated settings -> the store and the run's plan (every process computes the same)."""
    cfg.validate()
    resolve_device(cfg.run.device)  # a device that is not there is refused before any data are read
    store = ListedOnce(open_store(cfg.data.data))  # the plan, the cache key and the loader list it once
    plan = plan_training(cfg, store, structure=load_structure(cfg.data.data))
    if cfg.run.warm_start:
        check_warm_start(cfg, plan)
    return plan, store


def check_warm_start(cfg: Config, plan: RunPlan) -> None:
    """``run.warm_start`` must be a model of the same stocks and network, refused in one line before any data
    are read (the server loads its weights when the market is known)."""
    path = cfg.run.warm_start
    if not Path(path).is_file():
        raise UserError(f"run.warm_start: {path} does not exist",
                        "give a training run's trained_model.pth (a warm-started fold needs the previous fold's: "
                        "run the folds in order)")
    saved = load_model(path)
    if tuple(saved["symbols"]) != tuple(plan.symbols):
        raise UserError(f"run.warm_start: {path} was trained on {' '.join(saved['symbols'])}, not on "
                        f"{' '.join(plan.symbols)}", "warm-start from a model of the same stocks")
    model = Config.from_dict(saved["config"], source=path)
    if model.model != cfg.model or model.market.window != cfg.market.window:
        raise UserError(f"run.warm_start: {path} has another network (model.* or market.window) than this run",
                        "warm-start from a model with the same model.* settings and market.window")


def refuse_mpi_launch(mode: str) -> None:
    """Single mode started as several processes of an MPI (or srun) launch would run that many separate
    trainings into one folder: refuse it in one line."""
    for name in _LAUNCH_SIZE:
        value = os.environ.get(name, "")
        if value.isdigit() and int(value) > 1:
            raise UserError(
                f"--mode {mode} was started as one of {value} processes ({name}={value}): each would train on its own",
                "add --mode parallel to train as one job across the ranks, or start a single process",
            )


def decide_start(cfg: Config, output: Path, overwrite: bool, resume: str | None) -> RunStart:
    """How a training run into ``output`` starts (nothing is written here).

    ``--resume RUN_DIR`` or a checkpoint with another ``--output``: a fork into that folder, which must not
    hold a run. With ``--resume`` into the run's own folder, a finished run is not trained again.
    """
    check_resume_flags(overwrite, resume)
    if resume is None:
        return RunStart(replaces=overwrite)
    target = resume_target(resume, str(output))
    fork = target.run_dir.resolve() != output.resolve()
    if fork:
        earlier = holds_run(output)
        if earlier:
            raise UserError(
                f"--output {output} already holds a run ({earlier}); resuming {resume} into it would replace it",
                f"choose an empty --output for the continued run, or --resume {output} to continue that run",
            )
    else:
        finished = finished_result(output)
        if finished is not None:
            log.info("the run in %s has finished already (%s): nothing to resume", output, outputs.METRICS)
            return RunStart(finished=finished)
    checkpoint = choose_checkpoint(target)
    if checkpoint is None:
        log.info("no checkpoint in %s: starting the run from the beginning", output / outputs.CHECKPOINTS)
        return RunStart(replaces=True)
    check_compatible(cfg, checkpoint)
    log.info("resuming from %s (%s)%s", checkpoint.path, checkpoint.manifest["reason"],
             f" into {output}" if fork else "")
    return RunStart(checkpoint=checkpoint)


class RankZero:
    """Rank 0's part of a run (in one process, beside the workers): server, endpoint, checkpoints, observers.

    ``initial_state``: a saved model to evaluate (then no checkpoints, no ``status.json``). ``mirror``: a cloud
    ``--output``'s store copy (:func:`~parallel_dqn.run.cloud_output.stage`), told of the run's events last.
    """

    def __init__(
        self,
        cfg: Config,
        plan: RunPlan,
        mode: str,
        n_workers: int,
        start: RunStart,
        stop_signal: Callable[[], str | None] = lambda: None,
        initial_state: dict | None = None,
        mirror: StoreMirror | None = None,
    ) -> None:
        self.cfg, self.plan, self.mode, self.n_workers, self.start = cfg, plan, mode, n_workers, start
        self.output = Path(cfg.run.output)
        log.debug("resolved config:\n%s", cfg.to_toml())
        self.training = initial_state is None
        self.started = time.perf_counter()
        saved = load_rank0_state(start.checkpoint) if start.checkpoint else None

        # Observers, told of every event in this order: the earlier run goes before anything is written.
        self.observers = Observers(cfg.market.cost_bps)
        if self.training and start.replaces:
            self.observers.register(_RetireEarlierRun(self.output))
        self.recorder = RunRecorder(cfg, self.output)
        self.observers.register(self.recorder)
        tensorboard = ScalarLog(self.output / outputs.TENSORBOARD)
        self.observers.register(tensorboard)
        if self.training:
            self.observers.register(StatusFile(self.output))
        self.observers.register(NotifyingObserver(Notifier.from_config(cfg.notify, self.output.name), cfg.notify.every))
        self.observers.register(Progress(total_steps=0, enabled=cfg.run.progress, without_terminal=mode == "parallel"))
        if mirror is not None:  # a cloud --output: last, once every other observer has written its files
            self.observers.register(mirror)

        self.server = ParameterServer(
            cfg, n_workers, self.observers, initial_state=initial_state, resume_state=saved["server"] if saved else None
        )
        if saved:
            self.recorder.restore_checkpoint(saved["recorder"])
            tensorboard.resume_at(len(self.recorder.curve))
        self.checkpoints: CheckpointCoordinator | None = None
        if self.training:
            self.checkpoints = make_coordinator(
                cfg, self.output, self.server, self.recorder, n_workers, stop_signal, self.observers.on_checkpoint,
                start.checkpoint,
            )
            if start.checkpoint is not None:
                CheckpointStore(self.output / outputs.CHECKPOINTS).remove_staging()
        self.endpoint = ServerEndpoint(self.server, n_workers, self.checkpoints)

    @contextlib.contextmanager
    def watching(self) -> Iterator[None]:
        """Tell the observers the run started, and how it ended unless :meth:`finish` did."""
        checkpoint = self.start.checkpoint
        self.observers.on_start(RunStarted(
            self.mode, self.plan.symbols, self.n_workers, self.plan.episodes, self.output,
            checkpoint.path if checkpoint else None, self.training,
        ))
        try:
            yield
        except StoppedAfterCheckpoint as stop:
            last = self.checkpoints.last.path if self.checkpoints and self.checkpoints.last else None
            self.observers.on_stop(stop.reason, last)
            raise StoppedAfterCheckpoint(stop.reason, str(last)) from None
        except UserError as exc:
            log.debug("stopped: %s", exc.line())  # the file records why; the CLI prints the line once
            self.observers.on_failure(exc)
            raise
        except BaseException as exc:
            log.debug("failed", exc_info=True)
            self.observers.on_failure(exc)
            raise
        finally:
            self.observers.close()

    def finish(self, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """Every worker is done: check nothing was lost, write the results, tell the observers."""
        self.endpoint.check_finished()
        c = self.server.counters
        log.info("gradients: sent %d, received %d = applied %d + dropped as stale %d",
                 c.sent, c.received, c.applied, c.dropped_stale)
        if not c.balanced():
            raise RuntimeError(f"gradient accounting does not add up: {c.as_dict()}, per worker {c.per_worker_dict()}")
        extra = {"wall_seconds": round(time.perf_counter() - self.started, 2), "mode": self.mode,
                 **self.server.director.result(), **(extra or {})}  # early_stop: where training stopped, and why
        result = self.recorder.finish(self.server, self._record(), extra)
        self.observers.on_finish(result)
        log.info("outputs written to %s", self.output)
        return result

    def _record(self) -> dict[str, Any]:
        """The run record over the stock-day files of every day on the market clock."""
        info = self.server.info
        assert info is not None
        days = np.asarray(info.timestamps).astype("datetime64[D]")
        first, last = (days.min().item(), days.max().item()) if len(days) else (None, None)
        files = stock_day_files(open_store(self.cfg.data.data), info.symbols, first, last) if first else []
        period = (_stamp(info.timestamps[0]), _stamp(info.timestamps[-1])) if len(days) else None
        return run_record(self.cfg, info.symbols, files, period, self.recorder.started, time.time())


class _RetireEarlierRun:
    """Observer: once every worker has loaded its data, the earlier run in the folder goes."""

    def __init__(self, output: Path) -> None:
        self.output = output

    def on_market(self, info: Any) -> None:
        retire_earlier_run(self.output)


def open_process(cfg: Config, log_file: Path, console: bool = True) -> None:
    """Per-process set-up: the log file (appended across restarts) and torch's threads."""
    setup_logging(log_file, console=console)
    torch.set_num_threads(cfg.run.threads)


def _stamp(ts: np.datetime64) -> str:
    return str(np.datetime_as_string(ts, unit="m")) + "Z"
