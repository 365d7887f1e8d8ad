"""Rank 0's word before each training episode: the :class:`EpisodeDirective` (curriculum stage, or stop).

Rank 0 learns how an episode went only when every worker's records of it are in, while the workers run the
schedule on their own. Where a setting needs rank 0 to steer the next training episode (a curriculum, or a
convergence monitor that may stop early: :func:`needs_directive`), each worker asks before it starts
training episode ``e`` (:class:`~parallel_dqn.comm.messages.DirectiveRequest`, naming the schedule entry it
finished last) and waits. :class:`EpisodeDirector` answers once rank 0 has that entry's outcome, and decides
each episode once: every worker gets the same word, whenever it asks, in single-process mode as under
MPI. Its decisions and what they rest on are in the server's checkpoint, so a resumed run asks again and
gets the same answer. With neither setting on, no worker asks and nothing waits.
"""

from __future__ import annotations

import logging
from typing import Any

from parallel_dqn.comm.messages import DirectiveRequest, EpisodeDirective, SetupInfo
from parallel_dqn.config import Config
from parallel_dqn.evaluation.episode import EpisodeOutcome, account_episode
from parallel_dqn.training.curriculum import next_stage

log = logging.getLogger(__name__)


def needs_directive(cfg: Config) -> bool:
    """Whether the workers wait for rank 0's directive before each training episode."""
    m = cfg.monitor
    return cfg.curriculum.enabled or (m.enabled and "stop" in (m.on_plateau, m.on_diverge))


class EpisodeDirector:
    """Decides each training episode's directive from the outcomes before it; remembers what it decided."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.stages = cfg.curriculum.stages if cfg.curriculum.enabled else 1
        self.decided: dict[int, EpisodeDirective] = {}
        self.completed: set[tuple[int, str]] = set()  # schedule entries whose outcome rank 0 has
        self.validation: dict[int, float] = {}  # validation Sharpe after each training episode
        self.stop_reason: str | None = None  # asked for (by the monitor); acted on at the next training episode
        self.stopped: dict[str, Any] | None = None  # {"after_episode", "reason"} once a directive said stop

    def request_stop(self, reason: str) -> None:
        """Train no more: the next training episode's directive says stop (the first reason is kept)."""
        if self.stop_reason is None:
            self.stop_reason = reason
            log.info("early stop requested: %s", reason)

    def on_outcome(self, outcome: EpisodeOutcome, info: SetupInfo) -> None:
        """An episode is complete on rank 0; a validation's Sharpe is what the curriculum's progression reads."""
        sharpe = None
        if outcome.phase == "valid" and self.cfg.curriculum.enabled:
            sharpe = account_episode(outcome, info, self.cfg.market.cost_bps).metrics["sharpe"]
        self.complete(outcome.episode, outcome.phase, sharpe)

    def complete(self, episode: int, phase: str, validation_sharpe: float | None = None) -> None:
        """Schedule entry ``(episode, phase)`` is complete; a validation's Sharpe, if one was scored."""
        self.completed.add((episode, phase))
        if validation_sharpe is not None:
            self.validation[episode] = float(validation_sharpe)

    def directive(self, request: DirectiveRequest) -> EpisodeDirective | None:
        """The directive for ``request.episode``, or None while the entry the worker finished is not complete."""
        episode = request.episode
        if episode in self.decided:
            return self.decided[episode]
        if request.after is not None and tuple(request.after) not in self.completed:
            return None
        if self.stop_reason is not None:
            decision = EpisodeDirective(episode, self.stage_of(episode - 1) or 1, stop=True)
            self.stopped = {"after_episode": episode - 1, "reason": self.stop_reason}
            log.info("training stops early after episode %d (%s): on to the evaluation", episode - 1, self.stop_reason)
        else:
            before = self.decided.get(episode - 1)
            cur = self.cfg.curriculum
            stage = 1 if before is None else next_stage(
                before.stage, self.stages, self.validation.get(episode - 1), cur.threshold,
                self._episodes_at(before.stage, episode - 1), cur.patience,
            )
            if before is not None and stage > before.stage:
                log.info("curriculum: stage %d of %d from episode %d (validation Sharpe %s, threshold %g, "
                         "%d episodes at stage %d)", stage, self.stages, episode,
                         f"{self.validation.get(episode - 1, float('nan')):.3f}", cur.threshold,
                         self._episodes_at(before.stage, episode - 1), before.stage)
            decision = EpisodeDirective(episode, stage)
        self.decided[episode] = decision
        return decision

    def _episodes_at(self, stage: int, last: int) -> int:
        """How many training episodes up to ``last`` in a row ran at ``stage``."""
        count = 0
        while last in self.decided and self.decided[last].stage == stage and not self.decided[last].stop:
            count, last = count + 1, last - 1
        return count

    def stage_of(self, episode: int) -> int | None:
        """The curriculum stage training episode ``episode`` ran at (None: not decided)."""
        decision = self.decided.get(episode)
        return decision.stage if decision is not None else None

    def line(self, episode: int, phase: str) -> dict[str, Any]:
        """What an episode's line of the training curve says about the directives: a training episode's stage
        (with a curriculum), and on the evaluation's line an early stop."""
        if phase == "train" and self.cfg.curriculum.enabled and episode in self.decided:
            return {"stage": self.decided[episode].stage}
        if phase == "eval" and self.stopped is not None:
            return {"early_stop": dict(self.stopped)}
        return {}

    def result(self) -> dict[str, Any]:
        """metrics.json's word on it: ``early_stop`` (the last episode trained, and why), when it happened."""
        return {"early_stop": dict(self.stopped)} if self.stopped is not None else {}

    # ---- checkpoints --------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "decided": {e: (d.stage, d.stop) for e, d in self.decided.items()},
            "completed": sorted(self.completed),
            "validation": dict(self.validation),
            "stop_reason": self.stop_reason,
            "stopped": self.stopped,
        }

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        """Continue from :meth:`state_dict` (None: a checkpoint from before directives; nothing decided)."""
        if state is None:
            return
        self.decided = {int(e): EpisodeDirective(int(e), int(s), bool(stop)) for e, (s, stop) in state["decided"].items()}
        self.completed = {(int(e), str(p)) for e, p in state["completed"]}
        self.validation = {int(e): float(v) for e, v in state["validation"].items()}
        self.stop_reason = state["stop_reason"]
        self.stopped = state["stopped"]

