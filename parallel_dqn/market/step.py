"""The market step, once: the rule the workers and the Gymnasium envs both step by.

A decision at bar ``t`` sets the position held from ``t`` to ``t+1`` and earns

    reward = position * r[t+1] - cost * |position - previous position|

with ``r`` the log-return of the close and ``cost = cost_bps / 1e4``. On a bar where a stock is
not tradeable (a forward-filled bar: halted, or no trade at that time) its position cannot
change: the action is overridden by the position held. Actions are indices into
:data:`POSITIONS`: 0 = short, 1 = flat, 2 = long.
"""

from __future__ import annotations

import numpy as np

POSITIONS = np.array([-1.0, 0.0, 1.0])
N_ACTIONS = 3
FLAT = 1


def action_to_position(action: np.ndarray | int) -> np.ndarray | float:
    """Map action indices {0, 1, 2} to positions {-1, 0, +1}."""
    return POSITIONS[action]


def step_reward(prev_position, position, next_log_return, cost_bps: float):
    """Reward of holding ``position`` over the next bar after holding ``prev_position``.

    Works elementwise on numpy arrays or scalars.
    """
    cost = cost_bps * 1e-4
    return position * next_log_return - cost * np.abs(position - prev_position)


def market_step(
    position: np.ndarray, action: np.ndarray, tradeable: np.ndarray, next_log_return: np.ndarray, cost_bps: float
) -> tuple[np.ndarray, np.ndarray]:
    """Apply one action per stock at bar ``t``: the positions held from ``t`` to ``t+1`` and their rewards.

    ``position`` and ``action`` are action indices ``[k]``, ``tradeable`` the stocks' flags at ``t``,
    ``next_log_return`` their log-returns into ``t+1``. Returns (new position indices, rewards ``[k]``).
    """
    new = np.where(tradeable, action, position)
    return new, step_reward(POSITIONS[position], POSITIONS[new], next_log_return, cost_bps)
