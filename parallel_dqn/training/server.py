"""Rank 0: the parameter server.

It holds the global Q-network (with its cross-stock attention module) and the
target network, the one optimizer, and the portfolio meta-policy, which it also
trains. It never touches a transport: rank 0's protocol
(:mod:`parallel_dqn.training.endpoint`) calls its ``on_*`` methods and asks it for
parameters. Gradients are applied as they arrive (asynchronous), or, with
``--sync``, once one has come from every worker, as their mean in worker order
(deterministic for a seed and worker count).

**Staleness** is counted in server versions (applies) between the parameters a
gradient was computed on and now, and bounded in *rounds*: a gradient is dropped
(and counted) when more than ``dist.staleness_bound`` x N versions were applied
since, N being the number of workers. With N workers acting at the same pace, each
round of N gradients is inherently up to N-1 versions stale, so a bound in versions
would silently drop every gradient of the workers past the bound; a bound in rounds
treats every worker alike, whatever N.

After each episode it maps the cross-section of the workers' decisions to capital
weights with the meta-policy and, after a training episode, trains the meta-policy
on that episode's realised portfolio outcome. Listeners only receive the outcome.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import logging
import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch

from parallel_dqn.comm.messages import DecisionBlock, EpisodeDone, GradientMessage, ParamsMessage, SetupInfo
from parallel_dqn.config import Config
from parallel_dqn.data.regimes import RegimePath
from parallel_dqn.errors import UserError
from parallel_dqn.evaluation.episode import EpisodeBook, EpisodeOutcome, account_episode
from parallel_dqn.market.step import POSITIONS
from parallel_dqn.model.adamw import FlatAdamW
from parallel_dqn.model.device import resolve_device
from parallel_dqn.model.flat import flatten_parameters, get_flat_params
from parallel_dqn.model.meta_policy import MetaPolicy, decision_features
from parallel_dqn.model.qnet import QNetwork
from parallel_dqn.model.saved import load_model
from parallel_dqn.training import ensemble
from parallel_dqn.training.directive import EpisodeDirector
from parallel_dqn.training.lr_schedule import LearningRate
from parallel_dqn.training.monitor import STATE_CODES, ConvergenceMonitor, Verdict

log = logging.getLogger(__name__)


@dataclass
class GradientCounters:
    """Every gradient message is either applied or dropped: sent = received = applied + dropped (per worker too)."""

    sent: int = 0  # as counted by the workers, reported when they stop
    received: int = 0
    applied: int = 0
    dropped_stale: int = 0
    staleness_sum: int = 0
    loss_sum: float = 0.0
    q_sum: float = 0.0
    per_worker: dict[int, dict[str, int]] = field(default_factory=dict)  # worker -> sent/received/applied/dropped

    def count(self, worker: int, what: str, n: int = 1) -> None:
        """Add ``n`` to worker ``worker``'s ``what`` (sent, received, applied, dropped_stale)."""
        row = self.per_worker.setdefault(worker, {"sent": 0, "received": 0, "applied": 0, "dropped_stale": 0})
        row[what] += n

    def as_dict(self) -> dict[str, float]:
        n = max(self.received, 1)
        return {
            "gradients_sent": self.sent,
            "gradients_received": self.received,
            "gradients_applied": self.applied,
            "gradients_dropped_stale": self.dropped_stale,
            "mean_staleness": self.staleness_sum / n,
        }

    def per_worker_dict(self) -> dict[str, dict[str, int]]:
        """``{"0": {"sent", "received", "applied", "dropped_stale"}, ...}`` in worker order (JSON keys)."""
        return {str(w): dict(self.per_worker[w]) for w in sorted(self.per_worker)}

    def balanced(self) -> bool:
        """Nothing lost: sent = received = applied + dropped, in total and for every worker."""
        rows = [(self.sent, self.received, self.applied, self.dropped_stale)]
        rows += [(r["sent"], r["received"], r["applied"], r["dropped_stale"]) for r in self.per_worker.values()]
        return all(s == r == a + d for s, r, a, d in rows)


class ServerListener(Protocol):
    """What the server tells the run about (rank 0's run lifecycle implements it)."""

    def on_market(self, info: SetupInfo) -> None:
        """Every worker has loaded its data; the market is known."""

    def on_decisions(self, block: DecisionBlock, counters: GradientCounters, loss: float) -> None:
        """A block of decision records arrived (progress)."""

    def on_episode(self, outcome: EpisodeOutcome) -> None:
        """An episode is complete: every worker's decisions, the capital weights, the meta-policy's training."""


class ParameterServer:
    """Global weights, optimizer, target network, meta-policy, episode books."""

    def __init__(
        self,
        cfg: Config,
        n_workers: int,
        listener: ServerListener,
        initial_state: dict | None = None,
        resume_state: dict | None = None,
    ) -> None:
        self.cfg = cfg
        self.n_workers = n_workers
        self.listener = listener
        self.initial_state = initial_state  # a saved model's weights (evaluation)
        self.resume_state = resume_state  # a checkpoint's server state (--resume), applied at set-up
        self.loss_ema = float("nan")
        self.info: SetupInfo | None = None
        self.qnet: QNetwork | None = None
        self.meta: MetaPolicy | None = None
        self.version = 0
        self.target_version = 0
        self.counters = GradientCounters()
        self._pending: dict[int, deque[GradientMessage]] = {}
        self._books: dict[tuple[int, str], EpisodeBook] = {}
        self._done: dict[tuple[int, str], list[EpisodeDone]] = {}
        self.attention: np.ndarray | None = None
        self.loss_window: list[float] = []
        self.director = EpisodeDirector(cfg)  # the word to the workers before each training episode
        self.lr = LearningRate(cfg.dqn.lr, cfg.optim)  # the schedule (constant by default: dqn.lr)
        self.monitor = ConvergenceMonitor(cfg.monitor) if cfg.monitor.enabled else None
        self.monitor_stop_requested = False  # the monitor's `stop`: train no more (the director carries it out)
        self._best: dict[str, Any] | None = None  # the best episode's weights and optimizer state (restore_best)

    # ---- setup --------------------------------------------------------------------
    def setup(self, info: SetupInfo) -> None:
        """Build the networks for this market (from the saved model, if one was given)."""
        self.info = info
        self.setup_time = time.perf_counter()  # the market is loaded; episodes start now
        state = self.initial_state
        if state is None and self.cfg.run.warm_start:  # training from a saved model's weights (checked at planning)
            state = load_model(self.cfg.run.warm_start)
        torch.manual_seed(self.cfg.run.seed)
        S = len(info.symbols)
        self.qnet = QNetwork(S, info.n_features, self.cfg.market.window, self.cfg.model, self.cfg.ensemble.members)
        self.meta = MetaPolicy(S, self.cfg.meta)
        if state is not None:
            self.qnet.load_state_dict(state["q_state"])
            self.meta.load_state_dict(state["meta_state"])
        self.device = resolve_device(self.cfg.run.device)
        self.qnet.to(self.device)
        self.target = copy.deepcopy(self.qnet)
        # One flat vector holds every weight (the network's parameters are views of it): an apply is a few
        # large operations, not one per tensor, and the parameters leave as one copy.
        self._flat = flatten_parameters(self.qnet)
        self.optimizer = FlatAdamW(self._flat.data, lr=self.cfg.dqn.lr, weight_decay=self.cfg.dqn.weight_decay)
        self.market_digest = market_digest(info)
        self.validates = info.valid_rows[1] - info.valid_rows[0] >= 2
        if self.monitor is not None:
            self.monitor.q_bound = q_bound(info, self.cfg)
        if self.resume_state is not None:
            self._restore(self.resume_state)
        self._online_flat = get_flat_params(self.qnet)
        self._target_flat = get_flat_params(self.target)
        self.listener.on_market(info)

    # ---- gradients and parameters -------------------------------------------------
    def on_gradient(self, msg: GradientMessage) -> None:
        c = self.counters
        c.received += 1
        c.count(msg.worker, "received")
        c.loss_sum += msg.loss
        c.q_sum += msg.q_mean
        self.loss_window.append(msg.loss)
        self.loss_ema = msg.loss if self.loss_ema != self.loss_ema else 0.98 * self.loss_ema + 0.02 * msg.loss
        if self.cfg.dist.sync:
            self._pending.setdefault(msg.worker, deque()).append(msg)
            while len(self._pending) == self.n_workers and all(self._pending.values()):
                round_ = [self._pending[w].popleft() for w in sorted(self._pending)]
                self._observe(round_)  # in worker order: the monitor's figures do not depend on arrival order
                self._apply(np.mean(np.stack([m.grad for m in round_]), axis=0), _round_scale(round_))
                c.applied += self.n_workers
                for w in self._pending:
                    c.count(w, "applied")
            return
        self._observe([msg])
        staleness = self.version - msg.version
        c.staleness_sum += staleness
        if staleness > self.cfg.dist.staleness_bound * self.n_workers:  # the bound is in rounds of N gradients
            c.dropped_stale += 1
            c.count(msg.worker, "dropped_stale")
            return
        self._apply(msg.grad, msg.lr_scale)
        c.applied += 1
        c.count(msg.worker, "applied")

    def _observe(self, messages: list[GradientMessage]) -> None:
        """Gradient health for the convergence monitor (when on): one pass over each gradient, on rank 0."""
        if self.monitor is not None:
            for m in messages:
                self.monitor.observe(float(np.linalg.norm(m.grad)), m.loss, m.q_mean)

    def _apply(self, grad: np.ndarray, lr_scale: float = 1.0) -> None:
        assert self.qnet is not None
        # The schedule's learning rate for this apply (dqn.lr itself when it is constant), then it moves on;
        # times the gradient's regime factor ([regime] lr_scale; 1 without regimes: the rate as it is)
        self.optimizer.lr = self.lr.value if lr_scale == 1.0 else self.lr.value * lr_scale
        self.optimizer.step(torch.from_numpy(np.asarray(grad, dtype=np.float32)).to(self.device))
        self.lr.after_apply()
        self.version += 1
        self._online_flat = self._flat.detach().cpu().numpy().copy()
        if self.version % self.cfg.dqn.target_update == 0:
            self.target.load_state_dict(self.qnet.state_dict())
            self._target_flat = self._online_flat.copy()
            self.target_version = self.version

    def params_ready(self, min_version: int, worker: int | None = None) -> bool:
        """Whether a pull that needs ``min_version`` can be answered now (never before the set-up).

        A pull of ``worker`` that has finished an episode after which rank 0 decides (a validation; a
        training episode when the monitor judges it without one) waits until every worker has finished it:
        what the decision changes (restored weights) reaches every worker at the same point, under MPI too.
        """
        if self.qnet is None or self.version < min_version:
            return False
        return worker is None or not any(
            self._decides_after(phase) and any(d.worker == worker for d in dones)
            for (_, phase), dones in self._done.items()
        )

    def _decides_after(self, phase: str) -> bool:
        """Whether rank 0 decides something once every worker has finished an episode of ``phase``."""
        return phase == "valid" or (phase == "train" and self.monitor is not None and not self.validates)

    def params(self) -> ParamsMessage:
        return ParamsMessage(self.version, self.target_version, self._online_flat, self._target_flat)

    # ---- decision records and episodes --------------------------------------------
    def on_decisions(self, block: DecisionBlock) -> None:
        self._book(block.episode, block.phase).add(block)
        self.listener.on_decisions(block, self.counters, self.loss_ema)

    def _book(self, episode: int, phase: str) -> EpisodeBook:
        key = (episode, phase)
        if key not in self._books:
            assert self.info is not None
            rows = {"train": self.info.train_rows, "valid": self.info.valid_rows, "eval": self.info.eval_rows}
            start, stop = rows[phase]
            self._books[key] = EpisodeBook(start, stop - 1, len(self.info.symbols))
        return self._books[key]

    def on_episode_done(self, msg: EpisodeDone) -> None:
        key = (msg.episode, msg.phase)
        self._done.setdefault(key, []).append(msg)
        if len(self._done[key]) < self.n_workers:
            return
        dones = self._done.pop(key)
        book = self._book(*key)
        del self._books[key]
        missing = book.missing()
        if missing:
            raise RuntimeError(f"episode {key}: {missing} decision records never arrived")
        if msg.phase == "eval":
            self.attention = self._gather_attention(dones)
        # gradients_sent grows only when a worker stops (its WorkerStopped), which under MPI may arrive before or
        # after this episode's last EpisodeDone: it is a final figure (metrics.json's counters), not an episode's
        counters = {k: v for k, v in self.counters.as_dict().items() if k != "gradients_sent"}
        summary = {"steps": sum(d.steps for d in dones), **counters, **self.director.line(msg.episode, msg.phase)}
        outcome = self._outcome(msg.episode, msg.phase, book, summary)
        if self.cfg.ensemble.members > 1:  # diversity; in the evaluation every member's own result
            outcome.extra.update(ensemble.episode_line(dones, book, self.info, self.meta, self.cfg, outcome.weights))
        if msg.phase != "eval":
            outcome.extra.update(self._control(outcome))
        self.listener.on_episode(outcome)
        self.director.on_outcome(outcome, self.info)

    def _outcome(self, episode: int, phase: str, book: EpisodeBook, summary: dict) -> EpisodeOutcome:
        """Capital weights for the episode's decisions; after a training episode, the meta-policy learns from it."""
        assert self.info is not None and self.meta is not None
        info, meta_cfg = self.info, self.cfg.meta
        log_returns = info.log_returns[book.start : book.stop]
        # The meta-policy sees, per stock and bar, only the decision and that stock's decisions' trailing record.
        feats = decision_features(book.q, book.actions, log_returns, meta_cfg.perf_halflife, info.return_std)
        sizes = ensemble.sizes(book, self.cfg)  # an ensemble's agreement (None: full size)
        # The episode's portfolio uses the weights as they were during the episode (before it is learned from).
        if meta_cfg.enabled:
            weights = self.meta.weights(feats, book.actions, sizes)
        else:
            weights = POSITIONS[book.actions] / len(info.symbols)
            weights = weights if sizes is None else weights * sizes
        regime = info.extra.get("regime")
        if regime is not None and self.cfg.regime.adaptive:  # [regime] position_cap of the most likely regime at t
            labels = RegimePath.of(regime["probs"][book.start : book.stop]).labels
            weights = weights * np.asarray(self.cfg.regime.position_cap)[labels][:, None]
        meta_sharpe = None
        if phase == "train":
            loss = self.recent_loss()
            if meta_cfg.enabled:  # learn capital allocation from the realised outcome of this episode
                meta_sharpe = self.meta.fit(feats, book.actions, log_returns, self.cfg.market.cost_bps, sizes)
        else:
            loss = float("nan")
        return EpisodeOutcome(episode, phase, book, weights, summary, loss, meta_sharpe,
                              time.perf_counter() - self.setup_time)

    # ---- learning rate and convergence monitor ------------------------------------
    def _control(self, outcome: EpisodeOutcome) -> dict[str, Any]:
        """After a training episode or its validation: step the plateau schedule, judge the episode, intervene.

        Returns what the episode's line of the training curve adds (nothing with every component off).
        """
        line: dict[str, Any] = {}
        monitor = self.monitor
        if outcome.phase == "train" and monitor is not None:
            line.update(monitor.end_training().line())
        score = None
        if outcome.phase == "valid":
            assert self.info is not None
            score = account_episode(outcome, self.info, self.cfg.market.cost_bps).metrics["sharpe"]
            self.lr.after_validation(score)
        elif monitor is not None and not self.validates:  # without validation, a falling loss is progress
            score = -outcome.loss
        if monitor is not None and score is not None:
            verdict = monitor.verdict(outcome.episode, score)
            if verdict.best and self._keeps_best():
                self._best = self._snapshot(outcome.episode)
            line.update(monitor=verdict.state, monitor_code=STATE_CODES[verdict.state], monitor_reasons=verdict.reasons)
            action = self._intervene(verdict)
            if action is not None:
                line["intervention"], line["monitor_message"] = action
        if self.lr.changes or monitor is not None:
            line["lr"] = self.lr.value
        return line

    def _intervene(self, verdict: Verdict) -> tuple[str, str] | None:
        """Carry out the verdict's intervention: (what was done, in short; the sentence a notification says)."""
        if verdict.action is None:
            return None
        if verdict.action == "reduce_lr":
            before, after = self.lr.cut(self.cfg.optim.plateau_factor)
            done, said = f"reduce_lr {before:.3g} -> {after:.3g}", f"learning rate {before:.3g} -> {after:.3g}"
        elif verdict.action == "restore_best":
            best = self._best["episode"] if self._best is not None else None
            if best is not None:
                self._restore_best()
            done = f"restore_best {best}" if best is not None else "restore_best: no earlier best, weights kept"
            said = f"weights of episode {best} restored" if best is not None else "no earlier best to restore"
        elif verdict.action == "stop":
            self.monitor_stop_requested = True
            self.request_early_stop(f"{verdict.state} at episode {verdict.episode}")
            done, said = "stop", "training stops; on to the evaluation"
        else:
            done, said = "warn", "; ".join(verdict.reasons)
        message = f"{verdict.state} at episode {verdict.episode}: {said}"
        log.warning("%s (%s)", message, "; ".join(verdict.reasons))
        return done, message

    def _keeps_best(self) -> bool:
        """Whether an intervention may restore the best episode's weights (only then are they kept)."""
        m = self.cfg.monitor
        return "restore_best" in (m.on_plateau, m.on_diverge)

    def _snapshot(self, episode: int) -> dict[str, Any]:
        """The weights (online, target) and optimizer state after training episode ``episode``."""
        assert self.qnet is not None
        return {
            "episode": episode,
            "q_state": {k: v.detach().clone() for k, v in self.qnet.state_dict().items()},
            "target_state": {k: v.detach().clone() for k, v in self.target.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
        }

    def _restore_best(self) -> None:
        """Back to the best episode's weights and optimizer moments; the version goes on (the workers' next
        pull brings them; the meta-policy and the learning rate stay as they are)."""
        assert self.qnet is not None and self._best is not None
        self.qnet.load_state_dict(self._best["q_state"])  # copies into the flat vector the parameters view
        self.target.load_state_dict(self._best["target_state"])
        self.optimizer.load_state_dict(self._best["optimizer"])
        self._online_flat = get_flat_params(self.qnet)
        self._target_flat = get_flat_params(self.target)

    def _gather_attention(self, dones: list[EpisodeDone]) -> np.ndarray | None:
        assert self.info is not None
        S = len(self.info.symbols)
        if any(d.attention is None for d in dones):
            return None
        att = np.zeros((S, S))
        for d in dones:
            att[d.stocks] = d.attention
        return att

    def request_early_stop(self, reason: str) -> None:
        """Train no more (the convergence monitor's ``stop``): the workers skip to the evaluation before the next
        training episode (:mod:`parallel_dqn.training.directive`; they ask only when a setting can stop)."""
        self.director.request_stop(reason)

    def on_worker_stopped(self, worker: int, gradients_sent: int) -> None:
        """A worker finished; count what it says it sent, to check nothing was lost."""
        self.counters.sent += gradients_sent
        self.counters.count(worker, "sent", gradients_sent)

    def recent_loss(self) -> float:
        """Mean loss of the gradients received since the last call (NaN if none)."""
        value = float(np.mean(self.loss_window)) if self.loss_window else float("nan")
        self.loss_window.clear()
        return value

    def state(self) -> dict:
        """What a saved model needs from the server."""
        assert self.qnet is not None and self.meta is not None
        q_state = {k: v.cpu() for k, v in self.qnet.state_dict().items()}  # a model file loads anywhere
        return {"q_state": q_state, "meta_state": self.meta.state_dict(), "version": self.version}

    # ---- checkpoints --------------------------------------------------------------
    def checkpoint_state(self) -> dict[str, Any]:
        """Everything needed to continue exactly from here: weights, optimizer, queues, partial episodes."""
        assert self.qnet is not None and self.meta is not None
        return {
            "market_digest": self.market_digest,
            "q_state": self.qnet.state_dict(),
            "target_state": self.target.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "meta_state": self.meta.state_dict(),
            "version": self.version,
            "target_version": self.target_version,
            "counters": dataclasses.asdict(self.counters),
            "loss_ema": self.loss_ema,
            "loss_window": list(self.loss_window),
            "pending": {w: [dataclasses.asdict(m) for m in queue] for w, queue in self._pending.items()},
            "books": [(key, book.state_dict()) for key, book in self._books.items()],
            "done": [(key, [dataclasses.asdict(d) for d in dones]) for key, dones in self._done.items()],
            "attention": self.attention,
            "torch_rng": torch.get_rng_state(),
            "director": self.director.state_dict(),
            "lr": self.lr.state_dict(),
            "monitor": self.monitor.state_dict() if self.monitor is not None else None,
            "monitor_stop_requested": self.monitor_stop_requested,
            "best": self._best,
        }

    def _restore(self, state: dict[str, Any]) -> None:
        """Apply a checkpoint's state on top of the freshly built networks (at set-up, on resume)."""
        assert self.qnet is not None and self.meta is not None
        if state["market_digest"] != self.market_digest:
            raise UserError(
                "the market data differ from those the checkpoint was trained on (bars, stocks or periods changed)",
                "resume with the same data, or start a new run with another --output",
            )
        self.qnet.load_state_dict(state["q_state"])
        self.target.load_state_dict(state["target_state"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.meta.load_state_dict(state["meta_state"])
        self.version, self.target_version = int(state["version"]), int(state["target_version"])
        counters = dict(state["counters"])
        counters["per_worker"] = {int(w): dict(row) for w, row in counters["per_worker"].items()}
        self.counters = GradientCounters(**counters)
        self.loss_ema = float(state["loss_ema"])
        self.loss_window = list(state["loss_window"])
        self._pending = {int(w): deque(GradientMessage(**m) for m in queue) for w, queue in state["pending"].items()}
        self._books = {tuple(key): EpisodeBook.from_state_dict(book) for key, book in state["books"]}
        self._done = {tuple(key): [EpisodeDone(**d) for d in dones] for key, dones in state["done"]}
        self.attention = state["attention"]
        torch.set_rng_state(state["torch_rng"])
        self.director.load_state_dict(state.get("director"))
        if "lr" in state:  # checkpoints from before the schedules have none of these
            self.lr.load_state_dict(state["lr"])
            if self.monitor is not None and state["monitor"] is not None:
                self.monitor.load_state_dict(state["monitor"])
            self.monitor_stop_requested = bool(state["monitor_stop_requested"])
            self._best = state["best"]
        log.info("resumed the server at version %d (%d gradients applied)", self.version, self.counters.applied)


def _round_scale(round_: list[GradientMessage]) -> float:
    """The learning-rate factor of a ``--sync`` round: its gradients' mean (the workers share one clock bar, so
    one regime: every factor is the same)."""
    scales = [m.lr_scale for m in round_]
    return scales[0] if all(x == scales[0] for x in scales) else float(np.mean(scales))


def market_digest(info: SetupInfo) -> str:
    """A fingerprint of the market a run trains on: a checkpoint resumes only on the same one."""
    digest = hashlib.sha256()
    digest.update(" ".join(info.symbols).encode())
    periods: tuple = (info.train_rows, info.eval_rows, info.episodes)
    if info.valid_rows[1] > info.valid_rows[0]:  # without validation, the digest of the runs before it
        periods += (info.valid_rows,)
    digest.update(repr(periods).encode())
    for array in (info.timestamps, info.close, info.tradeable):
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def q_bound(info: SetupInfo, cfg: Config) -> float:
    """The largest Q-value any policy can have on the training period: the largest scaled reward (a full
    position on the largest move, plus the cost of a reversal) over 1 - gamma. A mean Q-value beyond it
    is divergence, not learning."""
    rows = slice(info.train_rows[0] + 1, info.train_rows[1])
    moves = np.abs(info.log_returns[rows])
    largest = float(moves.max()) if moves.size else 0.0
    reward = info.reward_scale * (largest + 2 * cfg.market.cost_bps * 1e-4)
    return reward / (1 - cfg.dqn.gamma) if cfg.dqn.gamma < 1 else math.inf
