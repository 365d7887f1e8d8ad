"""Gymnasium environments of parallel-dqn, usable by any RL library.

Importing this package registers them, so that::

    gymnasium.make("parallel_dqn/Market-v0", features=..., log_returns=..., tradeable=..., window=8, cost_bps=1.0)
    gymnasium.make("parallel_dqn/Trading-v0", ..., stock=0)

build a :class:`MarketEnv` (all stocks on one clock) or a :class:`TradingEnv` (one stock).
"""

from __future__ import annotations

import gymnasium

from envs.market_env import MarketEnv, observation
from envs.trading_env import TradingEnv

__all__ = ["MarketEnv", "TradingEnv", "observation", "MARKET_ENV_ID", "TRADING_ENV_ID"]

MARKET_ENV_ID = "parallel_dqn/Market-v0"
TRADING_ENV_ID = "parallel_dqn/Trading-v0"


def _register() -> None:
    """Register both envs with Gymnasium (idempotent)."""
    entries = {MARKET_ENV_ID: "envs.market_env:MarketEnv", TRADING_ENV_ID: "envs.trading_env:TradingEnv"}
    for env_id, entry in entries.items():
        if env_id not in gymnasium.registry:
            gymnasium.register(id=env_id, entry_point=entry)


_register()
