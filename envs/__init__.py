"""The Gymnasium environments, under the folder name the project was specified with.

A thin re-export of :mod:`parallel_dqn.market` (where the environments live and are registered);
it is not installed as a package of its own, so it never collides with another project's ``envs``.
"""

from parallel_dqn.market import MARKET_ENV_ID, TRADING_ENV_ID, MarketEnv, TradingEnv, observation

__all__ = ["MarketEnv", "TradingEnv", "observation", "MARKET_ENV_ID", "TRADING_ENV_ID"]
