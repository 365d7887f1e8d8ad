"""``--mode parallel``: one run across MPI ranks (mpirun / mpiexec / SLURM srun).

Rank 0 hosts the parameter server and the run's recorder; rank r >= 1 hosts
worker r-1 through :func:`parallel_dqn.training.driver.run_workers`, the same driver
and classes as single-process mode, wired through the MPI transport instead.

Failure rules: a user error found while planning (flags, stocks, dates, output
folder) is printed once, by rank 0, and every rank exits 2. After that, an
exception on any rank prints that rank's error once and calls ``MPI_Abort``, so
the whole job ends non-zero instead of hanging; a rank that waits longer than
``dist.timeout`` for another does the same.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import torch
from mpi4py import MPI

from parallel_dqn.run.single import RunStart, build_rank0, plan_start, prepare_output
from parallel_dqn.config import Config
from parallel_dqn.data.store import open_store
from parallel_dqn.data.synthetic import load_structure
from parallel_dqn.checkpoint.coordinator import load_worker_states
from parallel_dqn.training.driver import LocalShard, run_workers
from parallel_dqn.comm.mpi.transport import SERVER, CommTimeout, MPIServerLoop, MPIWorkerTransport
from parallel_dqn.training.server import ParameterServer
from parallel_dqn.errors import UserError
from parallel_dqn.evaluation.results import RunRecorder
from parallel_dqn.checkpoint.format import Checkpoint
from parallel_dqn.telemetry.logs import setup_logging
from parallel_dqn.telemetry.notify import Notifier, notifying
from parallel_dqn.telemetry.progress import Progress
from parallel_dqn.telemetry.status import RunEvents
from parallel_dqn.run.signals import EXIT_PREEMPTED, StopSignals, StoppedAfterCheckpoint
from parallel_dqn.checkpoint.resume import check_resume_flags
from parallel_dqn.training.plan import RunPlan, plan_training, resolve_symbols

log = logging.getLogger(__name__)


def train_parallel(
    cfg: Config, overwrite: bool = False, world: MPI.Comm | None = None, resume: str | None = None
) -> dict[str, Any] | None:
    """Train across the ranks of ``world`` (default COMM_WORLD); rank 0 returns the results."""
    comm = (world or MPI.COMM_WORLD).Dup()  # the framework's own traffic
    rank = comm.Get_rank()
    workers = comm.Split(color=0 if rank == SERVER else 1, key=rank)  # workers-only, for the exchange
    try:
        plan, store, start = _agree_on_plan(comm, cfg, overwrite, resume)
        if start.finished is not None:
            return start.finished if rank == SERVER else None
        output = Path(cfg.run.output)
        setup_logging(output / ("run.log" if rank == SERVER else f"logs/rank{rank}.log"), console=rank == SERVER)
        torch.set_num_threads(cfg.run.threads)
        notifier = Notifier.from_config(cfg.notify, output.name) if rank == SERVER else None
        with StopSignals() as signals:
            try:
                if rank == SERVER:
                    return _serve(comm, cfg, plan, output, notifier, signals, start.checkpoint)
                shard = LocalShard(rank - 1, plan.shards[rank - 1])
                log.info("rank %d (pid %d, node %s): worker %d owns %s", rank, os.getpid(), _node(), shard.worker_id,
                         " ".join(plan.symbols[i] for i in shard.stocks))
                saved = load_worker_states(start.checkpoint, [shard.worker_id]) if start.checkpoint else None
                transport = MPIWorkerTransport(comm, workers, cfg.dist.timeout)
                run_workers([shard], plan, store, transport, cfg, resume=saved, signals=signals)
                log.info("rank %d: done, sent %d bytes", rank, transport.bytes_sent)
                return None
            except StoppedAfterCheckpoint:
                if rank == SERVER:
                    raise  # the CLI says it, once
                log.info("rank %d: stopped after the checkpoint", rank)
                raise SystemExit(EXIT_PREEMPTED) from None
            except BaseException as exc:  # noqa: BLE001 - every failure must end the whole job
                _abort(comm, rank, exc, RunEvents(output, notifier) if notifier is not None else None)
    finally:
        if not MPI.Is_finalized():
            workers.Free()
            comm.Free()
    return None


def _node() -> str:
    """This rank's node: SLURM's name for it under srun, else the host name."""
    return os.environ.get("SLURMD_NODENAME") or socket.gethostname()


def _agree_on_plan(comm: MPI.Comm, cfg: Config, overwrite: bool, resume: str | None) -> tuple[RunPlan, Any, RunStart]:
    """Every rank plans; rank 0 decides how the run starts and prepares the output folder.

    A user error anywhere stops every rank, said once by rank 0. Rank 0 alone verifies the
    checkpoint to resume from; every rank is told which one it is.
    """
    rank, size = comm.Get_rank(), comm.Get_size()
    plan = store = None
    start = RunStart()
    error: str | None = None
    try:
        cfg.validate()
        check_resume_flags(overwrite, resume)
        n_workers = size - 1
        if n_workers < 1:
            raise UserError(
                "--mode parallel needs at least 2 MPI ranks (rank 0 serves, the others are workers)",
                "run it as mpirun -n N+1 parallel-dqn train --mode parallel ..., or use --mode single",
            )
        if cfg.dist.workers not in (0, n_workers):
            raise UserError(
                f"--workers {cfg.dist.workers} does not match the {n_workers} worker ranks",
                f"drop --workers, or start mpirun -n {cfg.dist.workers + 1}",
            )
        store = open_store(cfg.data.data)
        n_stocks = len(resolve_symbols(store, cfg.data.stocks))
        if n_workers > n_stocks:
            raise UserError(
                f"{n_workers} worker ranks but only {n_stocks} stocks",
                f"start at most mpirun -n {n_stocks + 1}, or add stocks",
            )
        cfg.dist.workers = n_workers
        plan = plan_training(cfg, store, structure=load_structure(cfg.data.data))
        if rank == SERVER:
            output = Path(cfg.run.output)
            start = plan_start(cfg, output, overwrite, resume)
            if start.finished is None:
                prepare_output(output, overwrite or resume is not None)
    except UserError as exc:
        error = exc.line()
    errors = comm.allgather(error)
    first = next((e for e in errors if e), None)
    if first is not None:
        if rank == SERVER:
            raise UserError(first)
        raise SystemExit(2)
    start = comm.bcast(start, root=SERVER)
    return plan, store, start


def _serve(
    comm: MPI.Comm,
    cfg: Config,
    plan: RunPlan,
    output: Path,
    notifier: Notifier,
    signals: StopSignals,
    checkpoint: Checkpoint | None,
) -> dict[str, Any]:
    n_workers = comm.Get_size() - 1
    log.info(
        "parallel run: %d ranks (rank 0 on %s), %d workers for %d stocks, train %s..%s, eval %s..%s, %d episodes -> %s",
        comm.Get_size(), _node(), n_workers, len(plan.symbols), plan.train_start, plan.train_end, plan.eval_start,
        plan.eval_end, plan.episodes, output,
    )
    for w, stocks in enumerate(plan.shards):
        log.info("worker %d (rank %d): %s", w, w + 1, " ".join(plan.symbols[i] for i in stocks))
    progress = Progress(total_steps=0, enabled=cfg.run.progress, without_terminal=True)
    rank0 = build_rank0(cfg, plan, output, n_workers, progress, notifier, signals, checkpoint)
    server, recorder, events = rank0.server, rank0.recorder, rank0.events
    loop = MPIServerLoop(server, comm, n_workers, cfg.dist.timeout, rank0.coordinator)
    started = time.perf_counter()
    events.started("parallel", plan.symbols, n_workers, plan.episodes, checkpoint.path if checkpoint else None)
    try:
        loop.run()
    except StoppedAfterCheckpoint as stop:
        events.stopped(stop.reason, stop.checkpoint)
        events.notifier.close()
        raise
    finally:
        progress.close()
    wall = time.perf_counter() - started
    c = server.counters
    log.info(
        "gradients: sent %d, received %d = applied %d + dropped as stale %d; %d messages, %.1f MB received",
        c.sent, c.received, c.applied, c.dropped_stale, loop.messages, loop.bytes_received / 1e6,
    )
    if not c.sent == c.received == c.applied + c.dropped_stale:
        raise RuntimeError(f"gradient accounting does not add up: {c.as_dict()}")
    result = recorder.finish(
        server,
        extra={"wall_seconds": round(wall, 2), "mode": "parallel", "ranks": comm.Get_size(),
               "messages": loop.messages, "bytes_received": loop.bytes_received},
    )
    events.finished(result)
    events.notifier.close()
    return result


def _abort(comm: MPI.Comm, rank: int, exc: BaseException, events: RunEvents | None = None) -> None:
    """Print this rank's error once, tell rank 0's status and notifier (if any), then end every rank of the job."""
    if isinstance(exc, SystemExit) and not exc.code:
        raise exc
    if isinstance(exc, (UserError, CommTimeout)):
        text = f"parallel-dqn: error: rank {rank}: {exc.line() if isinstance(exc, UserError) else exc}"
        code = 2 if isinstance(exc, UserError) else 1
    elif isinstance(exc, KeyboardInterrupt):
        text, code = f"parallel-dqn: rank {rank} interrupted", 130
    else:
        text = f"parallel-dqn: rank {rank} failed:\n" + "".join(traceback.format_exception(exc)).rstrip()
        code = 1
    log.debug("aborting: %s", text)
    print(text, file=sys.stderr, flush=True)
    if events is not None:  # rank 0
        events.failed(exc)
        events.notifier.close()  # a bounded wait: the message goes out before MPI_Abort ends the process
    comm.Abort(code)
