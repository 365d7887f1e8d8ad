"""The worker ranks of one node: they share one read-only copy of the cross-section.

:class:`NodeRanks` wraps a communicator of the workers on one node (``Split_type(COMM_TYPE_SHARED)``
of the workers' communicator, made by :class:`~parallel_dqn.comm.mpi.world.World`). Its lowest rank
leads: it checks the node's cache entry and writes it; the others wait for its word, then map the
same file (see :mod:`parallel_dqn.data.cache`).
"""

from __future__ import annotations

from typing import TypeVar

from mpi4py import MPI

from parallel_dqn.comm.mpi.wire import wait_until

T = TypeVar("T")


class NodeRanks:
    """The worker ranks on this node (a :class:`parallel_dqn.data.cache.NodeGroup`)."""

    def __init__(self, comm: MPI.Comm, timeout: float) -> None:
        self.comm = comm
        self.timeout = timeout

    @property
    def leader(self) -> bool:
        return self.comm.Get_rank() == 0

    @property
    def size(self) -> int:
        return self.comm.Get_size()

    def from_leader(self, value: T, timeout: float | None = None) -> T:
        """The leader's ``value`` on every rank of the node, once the leader has it (bounded by ``timeout``
        seconds, or by the ranks' timeout)."""
        if self.comm.Get_size() == 1:
            return value
        arrived = self.comm.Ibarrier()  # a polled wait: ranks may outnumber cores, and MPICH's waits spin
        wait_until(arrived.Test, self.timeout if timeout is None else timeout,
                   "waiting for this node's first worker (the cross-section cache)")
        return self.comm.bcast(value if self.leader else None, root=0)
