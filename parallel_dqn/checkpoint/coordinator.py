"""Rank 0's side of checkpoints: when one is due, and completing it once every worker has written its part.

A checkpoint is a consistent cut of the whole job, taken without stopping the world for
long and without MPI in this module:

1. :meth:`CheckpointCoordinator.due` says a checkpoint is due: every ``checkpoint.every_applies``
   gradient applies, every ``checkpoint.every_seconds``, after each training episode, or at once
   when a stop signal (SIGTERM/SIGUSR1) reached any rank. The request names a sequence number
   and whether the job stops after it.
2. Each worker sees the request between two clock steps (or as the answer to a parameter pull
   that would otherwise wait), sends its unsent decision records, writes its state file into the
   checkpoint's staging folder, reports the file's digest, and waits. At the end of a training
   episode the workers wait for the episode's checkpoint (rank 0 asks for it as soon as it has
   every worker's records of the episode), so that one lies exactly between two episodes.
3. When every worker has reported, the server has handled every message the workers sent
   before their snapshots (messages from one rank arrive in order) and none sent after; it
   writes its own state and the recorder's, and the manifest commits the folder atomically.
   The workers then go on, or, for a stop signal, every rank exits with
   :data:`~parallel_dqn.run.signals.EXIT_PREEMPTED`.

Rank 0's protocol (:mod:`parallel_dqn.training.endpoint`) carries steps 2 and 3 over either transport.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from parallel_dqn.checkpoint.format import (
    CHECKPOINTS,
    SERVER_FILE,
    Checkpoint,
    CheckpointStore,
    read_state,
    worker_file,
    write_state,
)
from parallel_dqn.comm.messages import CheckpointRequest
from parallel_dqn.config import Config
from parallel_dqn.errors import UserError

log = logging.getLogger(__name__)


class CheckpointCoordinator:
    """Decides when to checkpoint and commits a checkpoint once every worker's file is in."""

    def __init__(
        self,
        cfg: Config,
        store: CheckpointStore,
        server: Any,
        recorder: Any,
        n_workers: int,
        stop_signal: Callable[[], str | None] = lambda: None,
        on_commit: Callable[[Checkpoint, int, str], None] | None = None,
        first_seq: int = 1,
    ) -> None:
        """``server``: the ParameterServer; ``recorder``: the RunRecorder; ``stop_signal``: the name of a stop
        signal this process received, or None; ``on_commit(checkpoint, episodes_done, reason)``: told of each
        checkpoint written."""
        self.cfg = cfg
        self.store = store
        self.server = server
        self.recorder = recorder
        self.n_workers = n_workers
        self.stop_signal = stop_signal
        self.on_commit = on_commit
        self.next_seq = first_seq
        self.pending: CheckpointRequest | None = None
        self.abandoned: set[int] = set()
        self.stop_reason: str | None = None
        self.finishing = False  # a worker has finished the run: no new checkpoints
        self.last: Checkpoint | None = None  # the newest checkpoint this run wrote
        self._files: dict[str, dict[str, Any]] = {}
        self._reported: list[int] = []
        self._last_applied = 0
        self._last_time = time.monotonic()
        self._episodes_seen = 0
        self._started_at = 0.0

    def resumed_from(self, applied: int, episodes: int) -> None:
        """Start counting from a checkpoint's progress (no checkpoint is due just for resuming)."""
        self._last_applied, self._episodes_seen = applied, episodes

    # ---- when ---------------------------------------------------------------------------------
    def request_stop(self, reason: str) -> None:
        """A rank received a stop signal: checkpoint at the next chance, then stop."""
        if self.stop_reason is None:
            self.stop_reason = reason
            log.info("%s received: checkpointing, then stopping", reason)

    def due(self) -> CheckpointRequest | None:
        """A new request if a checkpoint is due now (and none is being taken), else None."""
        if self.pending is not None or self.finishing or self.server.info is None:
            return None
        received = self.stop_signal()
        if self.stop_reason is None and received:
            self.request_stop(received)
        why = self._reason()
        if why is None:
            return None
        reason, episode = why
        self.pending = CheckpointRequest(self.next_seq, self.stop_reason is not None, reason, episode)
        self.next_seq += 1
        self._files, self._reported = {}, []
        self._last_applied = self.server.counters.applied
        self._last_time = time.monotonic()
        self._episodes_seen = len(self.recorder.curve)
        self._started_at = time.perf_counter()
        self.store.staging(self.pending.seq)
        log.debug("checkpoint %d requested (%s)", self.pending.seq, reason)
        return self.pending

    def _reason(self) -> tuple[str, int] | None:
        """Why a checkpoint is due now, and the training episode it ends (0: none), or None."""
        c = self.cfg.checkpoint
        if self.stop_reason is not None:
            return self.stop_reason, 0
        episodes = len(self.recorder.curve)
        if c.episode_end and episodes > self._episodes_seen:
            return f"after episode {episodes}", episodes
        applied = self.server.counters.applied
        if c.every_applies and applied - self._last_applied >= c.every_applies:
            return f"after {applied} gradient applies", 0
        if c.every_seconds and time.monotonic() - self._last_time >= c.every_seconds:
            return f"every {c.every_seconds:g} s", 0
        return None

    # ---- completing ---------------------------------------------------------------------------
    def worker_done(self, seq: int, worker: int, files: dict[str, dict[str, Any]]) -> Checkpoint | None:
        """Worker ``worker`` wrote ``files`` for checkpoint ``seq``; the checkpoint once every worker did.

        A report for an abandoned request returns None (the worker just goes on).
        """
        if self.pending is None or seq != self.pending.seq:
            if seq not in self.abandoned:
                raise RuntimeError(f"worker {worker} reported checkpoint {seq}, which was never requested")
            return None
        self._files.update(files)
        self._reported.append(worker)
        if len(self._reported) < self.n_workers:
            return None
        return self._commit()

    def _commit(self) -> Checkpoint:
        request = self.pending
        assert request is not None
        staging = self.store.staging_path(request.seq)
        state = {"server": self.server.checkpoint_state(), "recorder": self.recorder.checkpoint_state()}
        with self.store.writing(request.seq):  # a full disk: the staging folder goes, one line says why
            files = {**self._files, SERVER_FILE: write_state(staging / SERVER_FILE, state)}
        counters = self.server.counters
        episodes = len(self.recorder.curve)
        info = {
            "reason": request.reason,
            "stop": request.stop,
            "episodes_done": episodes,
            "gradients_applied": counters.applied,
            "version": self.server.version,
            "n_workers": self.n_workers,
            "config": self.cfg.to_dict(),
        }
        with self.store.writing(request.seq):
            checkpoint = self.store.commit(request.seq, files, info)
        self.pending = None
        self.last = checkpoint
        size = sum(f["bytes"] for f in files.values())
        log.info(
            "checkpoint %d written (%s): %s, %.1f MB in %.2f s",
            request.seq, request.reason, checkpoint.path, size / 1e6, time.perf_counter() - self._started_at,
        )
        if self.on_commit is not None:
            self.on_commit(checkpoint, episodes, request.reason)
        return checkpoint

    def workers_finishing(self) -> tuple[int, list[int]]:
        """A worker finished the run: no new checkpoints; give up the pending one.

        Returns its number and the workers that already reported to it: they are waiting, and must
        be told to go on (``(0, [])`` when none was pending).
        """
        self.finishing = True
        if self.pending is None:
            return 0, []
        seq = self.pending.seq
        log.debug("checkpoint %d abandoned: the workers are finishing", seq)
        self.abandoned.add(seq)
        self.store.abandon(seq)
        self.pending = None
        waiting, self._reported = self._reported, []
        return seq, waiting


def load_rank0_state(checkpoint: Checkpoint) -> dict[str, Any]:
    """Rank 0's part of a checkpoint, ``{"server", "recorder"}``, checked against the manifest again."""
    return read_state(checkpoint.file(SERVER_FILE), checkpoint.manifest["files"][SERVER_FILE])


def load_worker_states(checkpoint: Checkpoint, workers: Iterable[int]) -> dict[int, dict[str, Any]]:
    """The states of ``workers`` in a checkpoint (each file checked against the manifest again)."""
    files = checkpoint.manifest["files"]
    states = {}
    for worker in workers:
        name = worker_file(worker)
        if name not in files:
            raise UserError(
                f"checkpoint {checkpoint.path} has no state for worker {worker}: it was taken with "
                f"{checkpoint.manifest['n_workers']} workers",
                f"resume it with as many (mpirun -n {checkpoint.manifest['n_workers'] + 1} in parallel mode)",
            )
        states[worker] = read_state(checkpoint.file(name), files[name])
    return states


def make_coordinator(
    cfg: Config,
    output: Path,
    server: Any,
    recorder: Any,
    n_workers: int,
    stop_signal: Callable[[], str | None],
    on_commit: Callable[[Checkpoint, int, str], None] | None,
    resumed: Checkpoint | None,
) -> CheckpointCoordinator:
    """Rank 0's coordinator for a run into ``output``, counting on from the checkpoint it resumed, if any."""
    store = CheckpointStore(output / CHECKPOINTS, cfg.checkpoint.keep)
    coordinator = CheckpointCoordinator(
        cfg, store, server, recorder, n_workers, stop_signal, on_commit, first_seq=store.last_seq() + 1
    )
    if resumed is not None:
        m = resumed.manifest
        coordinator.resumed_from(int(m["gradients_applied"]), int(m["episodes_done"]))
    return coordinator
