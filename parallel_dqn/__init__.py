"""parallel-dqn: distributed Deep Q-Network trading on intraday bars of many stocks."""

__version__ = "0.1.0"
