"""Subcommands of ``parallel-dqn data``, one module per group; each has ``register(subparsers, flag)``."""
