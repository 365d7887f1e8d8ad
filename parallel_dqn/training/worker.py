"""Ranks 1..N: a worker acting and learning for its shard of stocks.

A worker steps all of its stocks together on the shared market clock, keeps its own replay buffer of *indices* into
the cross-section, computes double-DQN gradients on its local copy of the
parameters and pushes them to the parameter server; it pulls fresh parameters
every ``pull_every`` gradient steps. It talks only to a transport, never to MPI.

A driver calls, for every clock step and in this order, :meth:`sync_params`,
:meth:`act` (with the Q-values of every stock at the bar, :meth:`values_at`, computed once for all the
hosted workers that hold the same parameters), :meth:`learn`; under ``--sync`` the pull at the start of a step
waits for the round the worker pushed at the end of the previous one. Between
two steps the driver may take a checkpoint: :meth:`checkpoint_state` holds
everything the worker needs to continue exactly from there.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from parallel_dqn.comm.messages import DecisionBlock, EpisodeDone, GradientMessage
from parallel_dqn.comm.transport import Transport
from parallel_dqn.config import Config
from parallel_dqn.data.crosssection import CrossSection
from parallel_dqn.market.step import FLAT, market_step
from parallel_dqn.model.device import resolve_device
from parallel_dqn.model.flat import clip_by_norm_, flat_gradient_buffer, flatten_parameters
from parallel_dqn.model.qnet import QNetwork
from parallel_dqn.rl.dqn import double_dqn_targets, td_loss
from parallel_dqn.rl.nstep import NStepBuilder
from parallel_dqn.rl.observations import Observations
from parallel_dqn.rl.replay import make_replay, rng_state, set_rng_state
from parallel_dqn.rl.schedules import LinearSchedule


@dataclass(frozen=True)
class ActingValues:
    """What one forward pass over every stock at a bar gives the workers that act on it."""

    q: np.ndarray  # [S, 3] Q-values of every stock, each at the position its worker holds
    neighbours: np.ndarray  # [S, k] the stocks each stock attended over
    attention: np.ndarray | None  # [S, k] its attention weights, averaged over heads (None without attention)


class Worker:
    """One worker: its stocks, its replay, its copy of the networks."""

    def __init__(
        self,
        worker_id: int,
        stocks: list[int],
        cfg: Config,
        xs: CrossSection,
        transport: Transport,
        reward_scale: float,
        total_train_steps: int,
        obs: Observations | None = None,
    ) -> None:
        """``obs``: the process's view of the cross-section, shared by every worker it hosts (made if None)."""
        self.id = worker_id
        self.cfg = cfg
        self.xs = xs
        self.transport = transport
        self.reward_scale = reward_scale
        self.stocks = np.asarray(stocks, dtype=np.int64)
        self.rng = np.random.default_rng([cfg.run.seed, worker_id])
        S, F = xs.n_stocks, xs.features.shape[2]
        self.device = obs.device if obs is not None else resolve_device(cfg.run.device)
        # Local copies; their weights come from the server with the first pull.
        self.net = QNetwork(S, F, cfg.market.window, cfg.model).to(self.device)
        self.target = QNetwork(S, F, cfg.market.window, cfg.model).requires_grad_(False).to(self.device)
        # each network's weights in one flat vector (its parameters are views): a pull is one copy per network
        self._online = flatten_parameters(self.net).data
        self._target = flatten_parameters(self.target).data
        self._grad = flat_gradient_buffer(self.net)  # the parameters' .grad are slices of it
        self.obs = obs if obs is not None else Observations(xs, cfg.market.window, self.device)
        q = cfg.dqn
        self.replay = make_replay(
            cfg.replay.capacity, cfg.replay.prioritized, cfg.replay.alpha, cfg.replay.beta_start, self.rng
        )
        self.epsilon = LinearSchedule(q.eps_start, q.eps_end, max(1, int(q.eps_fraction * total_train_steps)))
        self.beta = LinearSchedule(cfg.replay.beta_start, 1.0, max(1, total_train_steps))
        self.version = -1
        self.train_steps = 0  # clock steps acted in training, over all episodes
        self.grad_steps = 0
        self.grads_since_pull = 0
        self.pull_due = True  # pull before the next step whatever the count (start of an episode)
        self.attention_sum = np.zeros((len(self.stocks), S))
        self.begin_episode(0, "train", (0, 0))  # an empty episode until the driver begins the first one

    # ---- episode ------------------------------------------------------------------
    def begin_episode(self, episode: int, phase: str, rows: tuple[int, int]) -> None:
        """Start an episode over clock rows ``[start, stop)``: flat positions, empty n-step tails."""
        self.episode, self.phase = episode, phase
        self.training = phase == "train"
        self.last_t = rows[1] - 2  # the last bar has no next return: no decision there
        self.position = np.full(len(self.stocks), FLAT, dtype=np.int64)
        self.nstep = NStepBuilder(self.cfg.dqn.n_step, self.cfg.dqn.gamma, len(self.stocks))
        self.steps = 0
        self.attention_sum[:] = 0.0
        self._records: list[tuple] = []
        self.pull_due = True

    def sync_params(self) -> bool:
        """Pull parameters when due; under ``--sync``, those of the round just pushed.

        False when the server answered "checkpoint first": the driver takes the checkpoint
        it asked for, then calls this again.
        """
        if not self.pull_due and self.grads_since_pull < self.cfg.dist.pull_every:
            return True
        min_version = self.grad_steps if self.cfg.dist.sync else 0
        msg = self.transport.pull_params(self.id, min_version)
        if msg is None:
            return False
        self._online.copy_(torch.from_numpy(msg.online))
        self._target.copy_(torch.from_numpy(msg.target))
        self.version = msg.version
        self.grads_since_pull = 0
        self.pull_due = False
        return True

    def values_at(self, t: int, positions: np.ndarray) -> ActingValues:
        """Q-values of every stock at bar ``t`` under this worker's parameters, each stock holding
        ``positions [S]`` (action indices); attention weights when evaluating.

        One forward pass serves every hosted worker at this parameters version: a stock's Q-values depend
        only on its own position and each row is computed alone, so every worker gets for its stocks exactly
        what it would compute for them alone (an MPI worker runs the same pass: --sync single == mpiexec).
        """
        with torch.no_grad():
            everyone = torch.arange(self.obs.n_stocks, device=self.device)[None]
            emb = self.net.embed(self.obs.all_windows(t), everyone)  # [1, S, D]
            neighbours, edges = self.obs.all_neighbours(t)  # [S, k], [S, k, C]
            q, weights = self.net.decide(emb, emb, edges[None], torch.from_numpy(positions)[None].to(self.device),
                                         index=neighbours[None])
        attention = weights[0].mean(dim=0).cpu().numpy() if weights is not None and not self.training else None
        return ActingValues(q[0].cpu().numpy(), neighbours.cpu().numpy(), attention)

    def act(self, t: int, values: ActingValues) -> None:
        """Choose positions for all own stocks at bar ``t`` from ``values`` (:meth:`values_at` at this worker's
        parameters version) and record the outcome."""
        q = values.q[self.stocks]
        actions = q.argmax(axis=1)
        eps = self.epsilon(self.train_steps) if self.training else 0.0
        if self.training:
            explore = self.rng.random(len(actions)) < eps
            actions = np.where(explore, self.rng.integers(0, 3, len(actions)), actions)
        actions, raw = market_step(
            self.position, actions, self.xs.tradeable[t, self.stocks], self.xs.log_returns[t + 1, self.stocks],
            self.cfg.market.cost_bps,
        )
        done = t >= self.last_t
        if self.training:
            batch = self.nstep.push(t, self.stocks, self.position, actions, raw * self.reward_scale, done)
            if len(batch.t):
                self.replay.add(batch)
            self.train_steps += 1
        elif values.attention is not None:
            own = np.arange(len(self.stocks))[:, None]
            self.attention_sum[own, values.neighbours[self.stocks]] += values.attention[self.stocks]
        self._records.append((t, q, actions, raw, eps))
        self.position = actions
        self.steps += 1
        if len(self._records) >= self.cfg.dist.record_block or done:
            self.flush_records()

    def learn(self) -> None:
        """Compute and push one gradient when due (training only)."""
        q = self.cfg.dqn
        if not self.training or self.train_steps < q.learning_starts or self.train_steps % q.train_freq:
            return
        if len(self.replay) < q.batch_size:
            return
        self.replay.beta = self.beta(self.train_steps)
        s = self.replay.sample(q.batch_size)
        B = q.batch_size
        dev = self.device
        # Each transition's bar and the next one, in one batch: online Q at both (double DQN), target at the next.
        t = torch.from_numpy(np.concatenate([s.t, s.next_t]).astype(np.int64)).to(dev)
        stock = torch.from_numpy(np.concatenate([s.stock, s.stock]).astype(np.int64)).to(dev)
        pos = torch.from_numpy(np.concatenate([s.position, s.next_position]).astype(np.int64)).to(dev)
        # Only the stock's own window and its neighbours' are encoded (none but its own without attention).
        if self.net.attention is not None:
            neighbours, edges = self.obs.neighbours(t, stock)
        else:
            neighbours, edges = stock[:, None], torch.zeros(len(stock), 1, 2, device=dev)
        own_slot = (neighbours == stock[:, None]).int().argmax(dim=1)
        windows = self.obs.windows(t, neighbours)
        self._grad.zero_()
        q_all, _ = self.net(windows, neighbours, own_slot, edges, pos)
        with torch.no_grad():
            q_next_target, _ = self.target(windows[B:], neighbours[B:], own_slot[B:], edges[B:], pos[B:])
        actions = torch.from_numpy(s.action.astype(np.int64))[:, None].to(dev)
        q_taken = q_all[:B].gather(1, actions)[:, 0]
        # Double DQN: the online network picks the next action, the target network values it.
        targets = double_dqn_targets(
            q_all[B:].detach(), q_next_target, torch.from_numpy(s.reward).to(dev), torch.from_numpy(s.discount).to(dev)
        )
        loss, td = td_loss(q_taken, targets, torch.from_numpy(s.weights).to(dev), q.huber_delta)
        loss.backward()
        clip_by_norm_(self._grad, q.grad_clip)  # one norm over the whole gradient, as clip_grad_norm_ takes it
        self.replay.update_priorities(s.indices, td.cpu().numpy())
        grads = self._grad.cpu().numpy().copy()  # the message owns its copy: the buffer is reused
        msg = GradientMessage(self.id, self.version, grads, float(loss.detach()), float(q_taken.detach().mean()))
        self.transport.push_gradient(msg)
        self.grad_steps += 1
        self.grads_since_pull += 1

    def end_episode(self) -> None:
        """Send the last records and the episode summary."""
        self.flush_records()
        attention = self.attention_sum / max(self.steps, 1) if self.phase == "eval" and self.net.attention else None
        self.transport.episode_done(
            EpisodeDone(self.id, self.episode, self.phase, self.steps, attention, self.stocks.copy())
        )

    def flush_records(self) -> None:
        """Send the decision records not sent yet (at the end of a block, an episode, or before a checkpoint)."""
        if not self._records:
            return
        k = len(self.stocks)
        ts = np.array([r[0] for r in self._records], dtype=np.int64)
        block = DecisionBlock(
            worker=self.id,
            episode=self.episode,
            phase=self.phase,
            t=np.repeat(ts, k),
            stock=np.tile(self.stocks, len(ts)),
            q=np.concatenate([r[1] for r in self._records]).astype(np.float32),
            action=np.concatenate([r[2] for r in self._records]).astype(np.int64),
            reward=np.concatenate([r[3] for r in self._records]).astype(np.float64),
            epsilon=float(self._records[-1][4]),
        )
        self._records.clear()
        self.transport.send_decisions(block)

    # ---- checkpoints --------------------------------------------------------------
    def checkpoint_state(self) -> dict:
        """Everything to continue exactly from between two steps (records must be flushed first)."""
        if self._records:
            raise RuntimeError("flush the decision records before taking a checkpoint")
        return {
            "worker": self.id,
            "stocks": self.stocks.copy(),
            "net": self._online.cpu().numpy().copy(),
            "target": self._target.cpu().numpy().copy(),
            "version": self.version,
            "rng": rng_state(self.rng),
            "replay": self.replay.state_dict(),
            "train_steps": self.train_steps,
            "grad_steps": self.grad_steps,
            "grads_since_pull": self.grads_since_pull,
            "pull_due": self.pull_due,
            "episode": self.episode,
            "phase": self.phase,
            "last_t": self.last_t,
            "position": self.position.copy(),
            "nstep": self.nstep.state_dict(),
            "steps": self.steps,
            "attention_sum": self.attention_sum.copy(),
        }

    def restore_checkpoint(self, state: dict) -> None:
        """Continue from :meth:`checkpoint_state`'s snapshot (same stocks, same config)."""
        if int(state["worker"]) != self.id or not np.array_equal(state["stocks"], self.stocks):
            raise ValueError(f"checkpoint of worker {state['worker']} does not fit worker {self.id}")
        self._online.copy_(torch.from_numpy(np.asarray(state["net"], dtype=np.float32)))
        self._target.copy_(torch.from_numpy(np.asarray(state["target"], dtype=np.float32)))
        self.version = int(state["version"])
        self.replay.load_state_dict(state["replay"])
        set_rng_state(self.rng, state["rng"])
        self.train_steps, self.grad_steps = int(state["train_steps"]), int(state["grad_steps"])
        self.grads_since_pull, self.pull_due = int(state["grads_since_pull"]), bool(state["pull_due"])
        self.episode, self.phase = int(state["episode"]), str(state["phase"])
        self.training = self.phase == "train"
        self.last_t = int(state["last_t"])
        self.position = np.asarray(state["position"], dtype=np.int64).copy()
        self.nstep.load_state_dict(state["nstep"])
        self.steps = int(state["steps"])
        self.attention_sum[:] = state["attention_sum"]
        self._records = []
