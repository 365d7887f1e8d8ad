"""Under mpiexec: every worker builds the cross-section through the MPI transport, twice
(original market, and a copy changed after CUT); rank 0 prints what each worker holds as JSON.

    mpiexec -n N+1 python tests/mpi_scripts/cross_section.py ORIGINAL PERTURBED CUT_ISO SETTINGS_JSON

SETTINGS_JSON maps config keys (``section.key``) to values, e.g. the stocks and dates.
"""

from __future__ import annotations

import hashlib
import json
import sys

import numpy as np
from mpi4py import MPI

from parallel_dqn.comm.mpi import World
from parallel_dqn.config import Config
from parallel_dqn.data.store import open_store
from parallel_dqn.training.driver import LocalShard, build_cross_section
from parallel_dqn.training.plan import plan_training


def digest(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def main() -> None:
    original, perturbed, cut, settings = sys.argv[1:]
    world = World(MPI.COMM_WORLD)
    comm, rank = world.comm, world.rank
    result = None
    if rank > 0:
        held = []
        for data in (original, perturbed):
            cfg = Config()
            for key, value in json.loads(settings).items():
                cfg.set(key, value)
            cfg.set("data.data", data)
            cfg.set("dist.workers", comm.Get_size() - 1)
            store = open_store(data)
            plan = plan_training(cfg, store)
            transport = world.worker_transport(timeout=60)
            shard = LocalShard(rank - 1, plan.shards[rank - 1])
            xs, _ = build_cross_section([shard], plan, store, transport, cfg)
            held.append(xs)
        a, b = held
        t = int(np.searchsorted(a.timestamps, np.datetime64(cut), side="right"))  # rows at or before CUT
        graph_a, graph_b = a.dense_graph[a.graph_index], b.dense_graph[b.graph_index]
        result = {
            "rank": rank,
            "digest": digest(a.features, a.log_returns, a.tradeable, graph_a),
            "rows_before_cut": t,
            "same_up_to_cut": bool(
                np.array_equal(a.features[:t], b.features[:t])
                and np.array_equal(a.log_returns[:t], b.log_returns[:t])
                and np.array_equal(graph_a[:t], graph_b[:t])
            ),
            "differs_after_cut": not np.array_equal(a.features[t:], b.features[t:]),
        }
    results = comm.gather(result, root=0)
    if rank == 0:
        print(json.dumps(results[1:]))


if __name__ == "__main__":
    main()
