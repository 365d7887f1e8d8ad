"""The job's MPI world as parallel-dqn uses it: its own communicators, agreement on bad input, abort.

:class:`World` ``Dup()``s the communicator it is given (COMM_WORLD by default), so the
framework's traffic never collides with anything else on it, ``Split``s a workers-only
communicator for the cross-section exchange and, from it, one of the workers on each node (they
share one read-only copy of the cross-section: :mod:`parallel_dqn.comm.mpi.node`), and frees them
when closed. Every MPI call of the package lives under :mod:`parallel_dqn.comm.mpi`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from mpi4py import MPI

from parallel_dqn.comm.mpi.node import NodeRanks
from parallel_dqn.comm.mpi.server_pump import Endpoint, ServerPump
from parallel_dqn.comm.mpi.wire import SERVER
from parallel_dqn.comm.mpi.worker_end import MPIWorkerTransport
from parallel_dqn.errors import UserError

T = TypeVar("T")


class World:
    """Rank 0 serves, ranks 1..N are workers 0..N-1."""

    def __init__(self, comm: MPI.Comm | None = None) -> None:
        self.comm = (comm or MPI.COMM_WORLD).Dup()
        self.rank = self.comm.Get_rank()
        self.size = self.comm.Get_size()
        self.workers = self.comm.Split(color=0 if self.rank == SERVER else 1, key=self.rank)
        self.node = self.workers.Split_type(MPI.COMM_TYPE_SHARED, key=self.rank)  # this node's workers

    @property
    def is_server(self) -> bool:
        return self.rank == SERVER

    @property
    def n_workers(self) -> int:
        return self.size - 1

    def agree(self, step: Callable[[], T]) -> T:
        """Run ``step`` on every rank; if it raised a UserError on any rank, every rank stops.

        The first error (by rank) is raised on rank 0, to be printed once; the other ranks exit 2
        silently.
        """
        result: Any = None
        error: str | None = None
        try:
            result = step()
        except UserError as exc:
            error = exc.line()
        first = next((e for e in self.comm.allgather(error) if e), None)
        if first is not None:
            if self.is_server:
                raise UserError(first)
            raise SystemExit(2)
        return result

    def bcast(self, obj: T) -> T:
        """Rank 0's ``obj`` on every rank."""
        return self.comm.bcast(obj, root=SERVER)

    def worker_transport(self, timeout: float) -> MPIWorkerTransport:
        return MPIWorkerTransport(self.comm, self.workers, timeout, node=NodeRanks(self.node, timeout))

    def server_pump(self, endpoint: Endpoint, timeout: float) -> ServerPump:
        return ServerPump(endpoint, self.comm, timeout)

    def abort(self, code: int) -> None:
        """End every rank of the job now (no rank is left waiting for this one)."""
        self.comm.Abort(code)

    def close(self) -> None:
        if not MPI.Is_finalized():
            self.node.Free()
            self.workers.Free()
            self.comm.Free()
