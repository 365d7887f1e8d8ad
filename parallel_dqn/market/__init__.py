"""The market as an agent sees it: the step rule (positions, actions, costs, tradeable) and the Gymnasium envs.

Importing this package registers the environments with Gymnasium by module path::

    gymnasium.make("parallel_dqn/Market-v0", features=..., log_returns=..., tradeable=..., window=8, cost_bps=1.0)
    gymnasium.make("parallel_dqn/Trading-v0", ..., stock=0)
    gymnasium.make("parallel_dqn.market:parallel_dqn/Market-v0", ...)   # imports this package first

build a :class:`MarketEnv` (every stock on one clock) or a :class:`TradingEnv` (one stock). Both step
through :func:`parallel_dqn.market.step.market_step`, the rule the workers use too.
"""

from __future__ import annotations

import gymnasium

from parallel_dqn.market.market_env import MarketEnv, observation
from parallel_dqn.market.trading_env import TradingEnv

__all__ = ["MarketEnv", "TradingEnv", "observation", "MARKET_ENV_ID", "TRADING_ENV_ID"]

MARKET_ENV_ID = "parallel_dqn/Market-v0"
TRADING_ENV_ID = "parallel_dqn/Trading-v0"
_ENTRY_POINTS = {
    MARKET_ENV_ID: "parallel_dqn.market.market_env:MarketEnv",
    TRADING_ENV_ID: "parallel_dqn.market.trading_env:TradingEnv",
}

for _env_id, _entry in _ENTRY_POINTS.items():  # idempotent: a second import registers nothing
    if _env_id not in gymnasium.registry:
        gymnasium.register(id=_env_id, entry_point=_entry)
