"""``--mode parallel``: one run across MPI ranks (mpirun / mpiexec / SLURM srun).

The lifecycle is :mod:`parallel_dqn.run.lifecycle`'s; this module only wires it over MPI: rank 0 hosts
rank 0's part (:class:`~parallel_dqn.run.lifecycle.RankZero`) and pumps its endpoint; rank r >= 1 hosts
worker r-1 through :func:`parallel_dqn.training.driver.run_workers`, the same driver as single-process
mode, with the MPI transport.

Failure rules: a user error found while planning (flags, stocks, dates, output folder) is agreed by
every rank, printed once by rank 0, and every rank exits 2. After that, an exception on any rank prints
that rank's error once and calls ``MPI_Abort``, so the whole job ends non-zero instead of hanging; a
rank that waits longer than ``dist.timeout`` for another does the same.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import traceback
from pathlib import Path
from typing import Any

from mpi4py import MPI

from parallel_dqn import outputs
from parallel_dqn.checkpoint.coordinator import load_worker_states
from parallel_dqn.checkpoint.resume import check_resume_flags
from parallel_dqn.comm.mpi import CommTimeout, World
from parallel_dqn.config import Config
from parallel_dqn.data.store import open_store
from parallel_dqn.data.synthetic import load_structure
from parallel_dqn.errors import EXIT_PREEMPTED, StoppedAfterCheckpoint, UserError
from parallel_dqn.model.device import resolve_device
from parallel_dqn.run.cloud_output import StoreMirror, claim_output
from parallel_dqn.run.folder import FolderLock
from parallel_dqn.run.lifecycle import RankZero, RunStart, decide_start, open_process
from parallel_dqn.run.signals import StopSignals
from parallel_dqn.telemetry.status import StatusFile
from parallel_dqn.training.driver import LocalShard, run_workers
from parallel_dqn.training.plan import plan_training, resolve_symbols

log = logging.getLogger(__name__)


def train_parallel(
    cfg: Config,
    overwrite: bool = False,
    world: MPI.Comm | None = None,
    resume: str | None = None,
    mirror: StoreMirror | None = None,
) -> dict[str, Any] | None:
    """Train across the ranks of ``world`` (default COMM_WORLD); rank 0 returns the results.

    ``mirror``: a cloud ``--output``'s store copy (:func:`~parallel_dqn.run.cloud_output.stage`), used by rank 0.
    """
    mpi = World(world)
    lock: FolderLock | None = None
    try:
        plan, store, lock, start = mpi.agree(lambda: _plan_and_claim(mpi, cfg, overwrite, resume, mirror))
        start = mpi.bcast(start)
        if start.finished is not None:
            return start.finished if mpi.is_server else None
        output = Path(cfg.run.output)
        if not mpi.is_server:
            open_process(cfg, output / outputs.worker_log(mpi.rank), console=False)
        with StopSignals() as signals:
            try:
                if mpi.is_server:
                    return _serve(mpi, cfg, plan, start, stop_signal=lambda: signals.received, mirror=mirror)
                shard = LocalShard(mpi.rank - 1, plan.shards[mpi.rank - 1])
                log.info("rank %d (pid %d, node %s): worker %d owns %s", mpi.rank, os.getpid(), _node(),
                         shard.worker_id, " ".join(plan.symbols[i] for i in shard.stocks))
                saved = load_worker_states(start.checkpoint, [shard.worker_id]) if start.checkpoint else None
                transport = mpi.worker_transport(cfg.dist.timeout)
                run_workers([shard], plan, store, transport, cfg, resume=saved, stop_signal=lambda: signals.received)
                log.info("rank %d: done, sent %d bytes", mpi.rank, transport.bytes_sent)
                return None
            except StoppedAfterCheckpoint:
                if mpi.is_server:
                    raise  # the CLI says it, once
                log.info("rank %d: stopped after the checkpoint", mpi.rank)
                raise SystemExit(EXIT_PREEMPTED) from None
            except BaseException as exc:  # noqa: BLE001 - every failure must end the whole job
                _abort(mpi, exc, Path(cfg.run.output))
    finally:
        if lock is not None:
            lock.release()
        mpi.close()
    return None


def _plan_and_claim(
    mpi: World, cfg: Config, overwrite: bool, resume: str | None, mirror: StoreMirror | None
) -> tuple[Any, Any, Any, RunStart]:
    """Every rank plans; rank 0 claims the output folder and decides how the run starts."""
    check_resume_flags(overwrite, resume)
    n_workers = mpi.n_workers
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
    cfg.validate()
    resolve_device(cfg.run.device)
    store = open_store(cfg.data.data)
    n_stocks = len(resolve_symbols(store, cfg.data.stocks))
    if n_workers > n_stocks:
        raise UserError(
            f"{n_workers} worker ranks but only {n_stocks} stocks", f"start at most mpirun -n {n_stocks + 1}, or add stocks"
        )
    cfg.dist.workers = n_workers
    plan = plan_training(cfg, store, structure=load_structure(cfg.data.data))
    lock, start = None, RunStart()
    if mpi.is_server:
        output = Path(cfg.run.output)
        lock = claim_output(output, overwrite, resume, mirror=mirror)
        try:
            open_process(cfg, output / outputs.LOG)
            start = decide_start(cfg, output, overwrite, resume)
        except BaseException:
            lock.release()
            raise
    return plan, store, lock, start


def _serve(
    mpi: World, cfg: Config, plan: Any, start: RunStart, stop_signal: Any, mirror: StoreMirror | None
) -> dict[str, Any]:
    n_workers = mpi.n_workers
    log.info(
        "parallel run: %d ranks (rank 0 on %s), %d workers for %d stocks, train %s..%s, eval %s..%s, %d episodes -> %s",
        mpi.size, _node(), n_workers, len(plan.symbols), plan.train_start, plan.train_end, plan.eval_start,
        plan.eval_end, plan.episodes, cfg.run.output,
    )
    for w, stocks in enumerate(plan.shards):
        log.info("worker %d (rank %d): %s", w, w + 1, " ".join(plan.symbols[i] for i in stocks))
    rank0 = RankZero(cfg, plan, "parallel", n_workers, start, stop_signal, mirror=mirror)
    pump = mpi.server_pump(rank0.endpoint, cfg.dist.timeout)
    with rank0.watching():
        pump.run()
        log.info("%d messages, %.1f MB received", pump.messages, pump.bytes_received / 1e6)
        return rank0.finish({"ranks": mpi.size, "messages": pump.messages, "bytes_received": pump.bytes_received})


def _node() -> str:
    """This rank's node: SLURM's name for it under srun, else the host name."""
    return os.environ.get("SLURMD_NODENAME") or socket.gethostname()


def _abort(mpi: World, exc: BaseException, output: Path) -> None:
    """Print this rank's error once, record it (rank 0: status.json; the observers did), then end every rank."""
    if isinstance(exc, SystemExit) and not exc.code:
        raise exc
    if isinstance(exc, (UserError, CommTimeout)):
        text = f"parallel-dqn: error: rank {mpi.rank}: {exc.line() if isinstance(exc, UserError) else exc}"
        code = 2 if isinstance(exc, UserError) else 1
    elif isinstance(exc, KeyboardInterrupt):
        text, code = f"parallel-dqn: rank {mpi.rank} interrupted", 130
    else:
        text = f"parallel-dqn: rank {mpi.rank} failed:\n" + "".join(traceback.format_exception(exc)).rstrip()
        code = 1
    log.debug("aborting: %s", text)
    print(text, file=sys.stderr, flush=True)
    if not mpi.is_server and (output / outputs.STATUS).exists():
        try:  # rank 0 is about to be ended with the job: the run's status says which rank failed and why
            StatusFile(output).on_failure(RuntimeError(text.splitlines()[0].removeprefix("parallel-dqn: ")))
        except OSError:
            pass
    mpi.abort(code)
