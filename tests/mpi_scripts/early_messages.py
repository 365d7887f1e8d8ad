"""Under mpiexec -n 3: worker 1's first gradient and decision records reach rank 0 before worker 0's SETUP
(worker 0 is slow on purpose), as happens when a run resumes from a checkpoint. Rank 0 must hold them back
until it knows the market, then apply them; it prints its counters as JSON.

    mpiexec -n 3 python tests/mpi_scripts/early_messages.py MARKET_DIR SYNC(0|1)
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np
from mpi4py import MPI

from parallel_dqn.comm.inprocess import InProcessTransport
from parallel_dqn.comm.messages import DecisionBlock, GradientMessage, SetupInfo
from parallel_dqn.comm.mpi import World
from parallel_dqn.config import Config
from parallel_dqn.data.store import open_store
from parallel_dqn.model.flat import n_params
from parallel_dqn.model.qnet import QNetwork
from parallel_dqn.training.driver import LocalShard, build_cross_section
from parallel_dqn.training.endpoint import ServerEndpoint
from parallel_dqn.training.observers import Observers
from parallel_dqn.training.plan import plan_training
from parallel_dqn.training.server import ParameterServer


def main() -> None:
    market, sync = sys.argv[1], sys.argv[2] == "1"
    cfg = Config()
    for key, value in {"data.data": market, "data.stocks": ["AAA", "BBB"], "dist.sync": sync,
                       "market.graph_window": 40}.items():
        cfg.set(key, value)
    world = World(MPI.COMM_WORLD)
    rank = world.rank
    if rank == 0:
        server = ParameterServer(cfg, 2, Observers(cfg.market.cost_bps))
        world.server_pump(ServerEndpoint(server, 2), timeout=60).run()
        print(json.dumps({**server.counters.as_dict(), "version": server.version, "set_up": server.info is not None}))
        return
    store = open_store(market)
    plan = plan_training(cfg, store)
    # every rank builds the whole cross-section in-process (no exchange needed for this test)
    local = InProcessTransport(ServerEndpoint(ParameterServer(cfg, 2, Observers(cfg.market.cost_bps)), 2))
    xs, stats = build_cross_section([LocalShard(i, s) for i, s in enumerate(plan.shards)], plan, store, local, cfg)
    transport = world.worker_transport(timeout=60)
    worker = rank - 1
    P = n_params(QNetwork(2, xs.features.shape[2], cfg.market.window, cfg.model))
    if worker == 0:
        time.sleep(1.0)  # worker 1's messages arrive first
        transport.send_setup(SetupInfo(
            symbols=plan.symbols, timestamps=xs.timestamps, close=xs.close, log_returns=xs.log_returns,
            tradeable=xs.tradeable, train_rows=(0, 20), eval_rows=(20, 20), bars_per_day=78.0, reward_scale=1.0,
            return_std=1.0, n_features=xs.features.shape[2], feature_stats=stats.to_dict(), shards=plan.shards,
            episodes=1,
        ))
    block = DecisionBlock(worker, 1, "train", np.array([0]), np.array([worker]), np.zeros((1, 3), np.float32),
                          np.array([1]), np.array([0.0]))
    transport.send_decisions(block)
    transport.push_gradient(GradientMessage(worker, 0, np.full(P, 1e-3, np.float32), 0.5, 0.1))
    transport.close({worker: 1})


if __name__ == "__main__":
    main()
