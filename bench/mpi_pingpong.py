"""MPI latency and bandwidth between rank 0 and rank 1 (buffer Send/Recv ping-pong).

    mpiexec -n 2 python bench/mpi_pingpong.py [extra sizes in bytes...]
Prints one JSON line: {size_bytes: {"one_way_us": ..., "MB_per_s": ...}}.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np
from mpi4py import MPI


def main() -> None:
    comm = MPI.COMM_WORLD.Dup()
    rank = comm.Get_rank()
    sizes = [8, 1024, 64 * 1024, 1024 * 1024] + [int(x) for x in sys.argv[1:]]
    out = {}
    for size in sizes:
        buf = np.zeros(size, dtype=np.uint8)
        reps = 2000 if size <= 65536 else 200
        for phase in ("warm", "timed"):
            comm.Barrier()
            start = time.perf_counter()
            for _ in range(reps if phase == "timed" else 20):
                if rank == 0:
                    comm.Send(buf, dest=1, tag=1)
                    comm.Recv(buf, source=1, tag=1)
                elif rank == 1:
                    comm.Recv(buf, source=0, tag=1)
                    comm.Send(buf, dest=0, tag=1)
            elapsed = time.perf_counter() - start
        one_way = elapsed / reps / 2
        out[size] = {"one_way_us": round(one_way * 1e6, 2), "MB_per_s": round(size / one_way / 1e6, 1)}
    if rank == 0:
        print(json.dumps(out))


if __name__ == "__main__":
    main()
