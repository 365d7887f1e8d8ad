"""Every MPI call of parallel-dqn: the wire format, a worker's end, rank 0's pump, the world (Dup/Split/abort)."""

from parallel_dqn.comm.mpi.wire import SERVER, CommTimeout
from parallel_dqn.comm.mpi.world import World

__all__ = ["SERVER", "CommTimeout", "World"]
