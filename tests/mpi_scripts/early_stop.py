"""Under mpiexec: ``parallel-dqn train`` whose rank 0 asks for an early stop once training episode 1 is accounted
(as the convergence monitor's ``stop`` would), to check that every worker rank skips to the evaluation.

    mpiexec -n 3 python tests/mpi_scripts/early_stop.py TRAIN_FLAGS...
"""

from __future__ import annotations

import sys

from parallel_dqn.cli import main
from parallel_dqn.training.directive import EpisodeDirector

complete = EpisodeDirector.on_outcome


def stop_after_episode_1(self, outcome, info) -> None:
    complete(self, outcome, info)
    if (outcome.episode, outcome.phase) == (1, "train"):
        self.request_stop("scripted: stop after episode 1")


EpisodeDirector.on_outcome = stop_after_episode_1  # type: ignore[method-assign]
sys.exit(main(sys.argv[1:]))
