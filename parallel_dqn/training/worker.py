"""Ranks 1..N: a worker acting and learning for its shard of stocks.

A worker steps all of its stocks together on the shared market clock, keeps its own replay buffer of *indices* into
the cross-section, computes double-DQN gradients on its local copy of the
parameters and pushes them to the parameter server; it pulls fresh parameters
every ``pull_every`` gradient steps. It talks only to a transport, never to MPI.

A driver calls, for every clock step and in this order, :meth:`sync_params`,
:meth:`act` (with the Q-values of every stock at the bar, from an :class:`ActingPass` over the bars of
:meth:`acting_span`, computed once for all the hosted workers that hold the same parameters), :meth:`learn`;
under ``--sync`` the pull at the start of a step
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
from parallel_dqn.data.regimes import RegimePath
from parallel_dqn.market.step import FLAT, market_step
from parallel_dqn.model.device import resolve_device
from parallel_dqn.model.ensemble import DiversityStats, combine, record_columns
from parallel_dqn.model.flat import clip_by_norm_, flat_gradient_buffer, flatten_parameters
from parallel_dqn.model.precision import LossScaler, autocast, check_precision
from parallel_dqn.model.qnet import QNetwork
from parallel_dqn.rl.augment import Augmenter, FeatureScales
from parallel_dqn.rl.bootstrap import bootstrap_masks, masked_td_loss
from parallel_dqn.rl.dqn import double_dqn_targets, td_loss
from parallel_dqn.rl.nstep import NStepBuilder
from parallel_dqn.rl.observations import Observations
from parallel_dqn.rl.priorities import PriorityMix, Rarity
from parallel_dqn.rl.replay import ReplaySample, make_replay, rng_state, set_rng_state
from parallel_dqn.rl.schedules import GradientCadence, LinearSchedule

EVAL_SPAN = 64  # bars per acting pass in evaluation (the parameters never change there): bounds its memory


@dataclass(frozen=True)
class ActingValues:
    """What one acting pass gives the workers that act at one bar."""

    q: np.ndarray  # [S, 3, 3] Q-values of every stock for each position it could hold (position, action)
    neighbours: np.ndarray  # [S, k] the stocks each stock attended over
    attention: np.ndarray | None  # [S, k] its attention weights, averaged over heads (None without attention)
    members: np.ndarray | None = None  # [S, 3, K, 3] an ensemble's members' Q-values (None without one)


@dataclass(frozen=True)
class ActingPass:
    """One forward pass over every stock at bars ``[start, stop)`` under parameters ``version``.

    Between two pulls a worker's parameters do not change and a stock's Q-values depend on nothing an action
    changes but the position held, so one pass computes them for every bar of the span and every position,
    and each step only looks its values up: a batched forward per span instead of one per bar.
    """

    version: int
    start: int
    stop: int
    q: np.ndarray  # [n, S, 3, 3]
    neighbours: np.ndarray  # [n, S, k]
    attention: np.ndarray | None  # [n, S, k]
    members: np.ndarray | None = None  # [n, S, 3, K, 3] an ensemble's members' Q-values (``q``: their mean)

    def at(self, t: int) -> ActingValues:
        """The values at bar ``t`` (``start <= t < stop``)."""
        i = t - self.start
        return ActingValues(self.q[i], self.neighbours[i], None if self.attention is None else self.attention[i],
                            None if self.members is None else self.members[i])


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
        scales: FeatureScales | None = None,
        regime: RegimePath | None = None,
    ) -> None:
        """``obs``: the process's view of the cross-section, shared by every worker it hosts (made if None);
        ``scales``: the training period's feature statistics that ``[augment]`` needs (None: no augmentation)."""
        self.id = worker_id
        self.cfg = cfg
        self.xs = xs
        self.transport = transport
        self.reward_scale = reward_scale
        self.stocks = np.array(stocks, dtype=np.int64)  # sorted: shards are contiguous
        self.stocks.flags.writeable = False  # fixed for the run (the n-step builder relies on it)
        self.rng = np.random.default_rng([cfg.run.seed, worker_id])
        S, F = xs.n_stocks, xs.features.shape[2]
        self.device = obs.device if obs is not None else resolve_device(cfg.run.device)
        # Local copies; their weights come from the server with the first pull.
        K = self.members = cfg.ensemble.members  # Q-heads of the ensemble (1: none)
        self.net = QNetwork(S, F, cfg.market.window, cfg.model, K).to(self.device)
        self.target = QNetwork(S, F, cfg.market.window, cfg.model, K).requires_grad_(False).to(self.device)
        # each network's weights in one flat vector (its parameters are views): a pull is one copy per network
        self._online = flatten_parameters(self.net).data
        self._target = flatten_parameters(self.target).data
        self._grad = flat_gradient_buffer(self.net)  # the parameters' .grad are slices of it
        self.obs = obs if obs is not None else Observations(xs, cfg.market.window, self.device)
        self._own_index = torch.tensor(self.stocks, device=self.device)
        q = cfg.dqn
        # batch and capacity are per stock of the shard: the replay ratio does not depend on how stocks are sharded
        self.batch_size = q.batch_size * len(self.stocks)
        rare = cfg.replay.prioritized and "rare" in PriorityMix(cfg.replay.priority).parts
        self.replay = make_replay(
            cfg.replay.capacity * len(self.stocks), cfg.replay.prioritized, cfg.replay.alpha, cfg.replay.beta_start,
            self.rng, cfg.replay.priority,
            Rarity(xs.log_returns, self.stocks, cfg.market.window, cfg.market.graph_window) if rare else None,
        )
        # pushes per learning opportunity (replay.ratio), each of optim.grad_accum micro-batches
        self.cadence = GradientCadence(cfg.replay.ratio, q.batch_size, q.train_freq, cfg.optim.grad_accum)
        check_precision(cfg.optim.precision, self.device)
        self.scaler = LossScaler() if cfg.optim.precision == "fp16" else None
        self.epsilon = LinearSchedule(q.eps_start, q.eps_end, max(1, int(q.eps_fraction * total_train_steps)))
        self.beta = LinearSchedule(cfg.replay.beta_start, 1.0, max(1, total_train_steps))
        self.version = -1
        self.train_steps = 0  # clock steps acted in training, over all episodes
        self.grad_steps = 0
        self.grads_since_pull = 0
        self.pull_due = True  # pull before the next step whatever the count (start of an episode)
        self.anchor = 0  # the bar acting spans are counted from: the first of the episode, or of the last pull
        self.attention_sum = np.zeros((len(self.stocks), S))
        self.diversity = DiversityStats(K) if K > 1 else None  # the episode's member diversity (ensemble only)
        # training-only augmentation of the windows learning embeds (none, and no draws, when [augment] is off)
        self.augment = Augmenter(cfg.augment, scales, cfg.run.seed, worker_id, self.device) if scales is not None else None
        # [regime] adaptive settings: epsilon and learning-rate factors of the most likely regime at the bar (None: off)
        self.regime = regime
        self.bar = 0  # the bar acted last: its regime sets the factor of the gradients learned at the step
        self.begin_episode(0, "train", (0, 0))  # an empty episode until the driver begins the first one

    # ---- episode ------------------------------------------------------------------
    def begin_episode(
        self, episode: int, phase: str, rows: tuple[int, int], learn_rows: np.ndarray | None = None
    ) -> None:
        """Start an episode over clock rows ``[start, stop)``: flat positions, empty n-step tails.

        ``learn_rows``: bool per clock row, the bars a training episode learns from (a curriculum stage's
        days; None: all). On the others the worker acts greedily, stores no transition starting there and
        neither learns nor counts the step (exploration and learning cadence advance on learned bars only).
        """
        self.episode, self.phase = episode, phase
        self.training = phase == "train"
        self.learn_rows = learn_rows if self.training else None
        self.learning = False  # whether the bar acted last is learned from (set by act)
        self.last_t = rows[1] - 2  # the last bar has no next return: no decision there
        self.position = np.full(len(self.stocks), FLAT, dtype=np.int64)
        self.nstep = NStepBuilder(self.cfg.dqn.n_step, self.cfg.dqn.gamma, len(self.stocks))
        self.steps = 0
        self.attention_sum[:] = 0.0
        if self.diversity is not None:
            self.diversity.reset()
        # in the evaluation each member also acts alone, from flat: its own positions [K, own stocks]
        self.member_position = np.full((self.members, len(self.stocks)), FLAT, dtype=np.int64)
        self._records: list[tuple] = []
        self.pull_due = True
        self.anchor = rows[0]

    def sync_params(self, t: int) -> bool:
        """Pull parameters when due, before acting at bar ``t``; under ``--sync``, those of the round just pushed.

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
        if msg.version != self.version:
            self.anchor = t
        self.version = msg.version
        self.grads_since_pull = 0
        self.pull_due = False
        return True

    def acting_span(self, t: int) -> tuple[int, int]:
        """The bars ``[start, stop)`` of the acting pass that serves bar ``t``.

        Spans are counted from the anchor (the episode's first bar, or the bar of the last pull that brought
        new parameters) in steps of ``dqn.train_freq`` in training (a pull can follow every gradient) and
        :data:`EVAL_SPAN` in evaluation; the anchor is in the checkpoint, so a resumed run computes the very
        passes of the run it continues, and every MPI rank those of single mode.
        """
        length = self.cfg.dqn.train_freq if self.training else EVAL_SPAN
        start = self.anchor + (t - self.anchor) // length * length
        return start, min(start + length, self.last_t + 1)

    def acting_pass(self, start: int, stop: int) -> ActingPass:
        """Q-values of every stock at bars ``[start, stop)`` for every position, under this worker's parameters;
        attention weights when evaluating.

        One pass serves every hosted worker at this parameters version: each row is computed alone, so every
        worker gets for its stocks what it would compute for them alone (an MPI worker runs the same pass).
        """
        with torch.no_grad():
            own, ctx, neighbours, weights = self._bar_context(self.net, torch.arange(start, stop, device=self.device))
            q = self.net.q_every_position(own, ctx)
        attention = weights.mean(dim=1).cpu().numpy() if weights is not None and not self.training else None
        members = None
        if self.members > 1:  # [n, S, 3, K, 3]: each member's; the pass's q is their mean
            members = q.cpu().numpy()
            q = q.mean(dim=-2)
        return ActingPass(self.version, start, stop, q.cpu().numpy(), neighbours.cpu().numpy(), attention, members)

    def act(self, t: int, values: ActingValues) -> None:
        """Choose positions for all own stocks at bar ``t`` from ``values`` (an :class:`ActingPass` at this
        worker's parameters version) and record the outcome."""
        q = values.q[self.stocks, self.position]  # [own stocks, 3]: at the position each holds
        ensemble = None
        if values.members is not None:  # an ensemble: its combination rule decides, the agreement is recorded
            member_q = values.members[self.stocks, self.position]  # [own stocks, K, 3]
            combined = combine(member_q, self.cfg.ensemble.combine)
            q, actions = combined.q, combined.action
            self.diversity.add(member_q)
            alone = self._members_alone(t, values.members) if self.phase == "eval" else None
            ensemble = record_columns(combined.agreement, alone)
        else:
            actions = q.argmax(axis=1)
        self.learning = self.training and (self.learn_rows is None or bool(self.learn_rows[t]))
        eps = self.epsilon(self.train_steps) if self.learning else 0.0
        self.bar = t
        if self.regime is not None and self.learning:
            eps = min(1.0, eps * self.regime.scale(self.cfg.regime.epsilon_scale, t))
        if self.learning:
            explore = self.rng.random(len(actions)) < eps
            actions = np.where(explore, self.rng.integers(0, 3, len(actions)), actions)
        actions, raw = market_step(
            self.position, actions, self.xs.tradeable[t, self.stocks], self.xs.log_returns[t + 1, self.stocks],
            self.cfg.market.cost_bps,
        )
        done = t >= self.last_t
        if self.training:
            batch = self.nstep.push(t, self.stocks, self.position, actions, raw * self.reward_scale, done)
            if self.learn_rows is not None:  # a curriculum stage: only transitions that start on its days
                batch = type(batch)(*(field[self.learn_rows[batch.t]] for field in batch))
            if len(batch.t):
                self.replay.add(batch)
            if self.learning:
                self.train_steps += 1
        elif values.attention is not None:
            own = np.arange(len(self.stocks))[:, None]
            self.attention_sum[own, values.neighbours[self.stocks]] += values.attention[self.stocks]
        self._records.append((t, q, actions, raw, eps, ensemble))
        self.position = actions
        self.steps += 1
        if len(self._records) >= self.cfg.dist.record_block or done:
            self.flush_records()

    def _members_alone(self, t: int, members: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Each member acting alone at bar ``t`` (evaluation): greedy on its own Q-values at its own positions,
        stepped by the market's rule; its actions and raw rewards ``[own stocks, K]``, Q-values ``[own, K, 3]``."""
        K, n = self.members, len(self.stocks)
        q = members[self.stocks[None, :], self.member_position, np.arange(K)[:, None]]  # [K, own, 3]
        actions, raw = market_step(
            self.member_position.reshape(-1), q.argmax(axis=-1).reshape(-1),
            np.tile(self.xs.tradeable[t, self.stocks], K), np.tile(self.xs.log_returns[t + 1, self.stocks], K),
            self.cfg.market.cost_bps,
        )
        self.member_position = actions.reshape(K, n)
        return actions.reshape(K, n).T, raw.reshape(K, n).T, q.transpose(1, 0, 2)

    def learn(self) -> None:
        """Compute and push the gradients due at this step (training only): one per ``dqn.train_freq`` steps by
        default, as many as ``replay.ratio`` asks otherwise (:class:`GradientCadence`)."""
        q = self.cfg.dqn
        if not self.training or self.train_steps < q.learning_starts or self.train_steps % q.train_freq:
            return
        if len(self.replay) < self.batch_size:
            return
        self.replay.beta = self.beta(self.train_steps)
        for _ in range(self.cadence.pushes(self.train_steps // q.train_freq)):
            self._push_gradient()

    def _push_gradient(self) -> None:
        """One gradient over ``optim.grad_accum`` micro-batches (their mean: the gradient of the concatenated
        batch), clipped once and pushed unscaled; under fp16 a gradient with an inf or nan is skipped instead."""
        accum = self.cfg.optim.grad_accum
        self._grad.zero_()
        losses, q_means, replayed = [], [], []
        for _ in range(accum):
            # whole bars of the shard (uniform replay): the batch needs the windows of batch_size bars only
            s = self.replay.sample(self.batch_size, group=len(self.stocks))
            loss, td, q_taken = self._loss(s)
            # the mean over micro-batches, summed into the one buffer; scaled up under fp16 so it cannot underflow
            if accum > 1:
                loss = loss / accum
            (loss * self.scaler.scale if self.scaler is not None else loss).backward()
            losses.append(loss.detach())
            q_means.append(q_taken.detach().mean())
            replayed.append((s.indices, td))
        if self.scaler is not None:
            finite = self.scaler.unscale_(self._grad)
            self.scaler.update(finite)
            if not finite:  # the step is skipped (and counted); the next one runs at half the scale
                return
        clip_by_norm_(self._grad, self.cfg.dqn.grad_clip)  # one norm over the whole gradient, as clip_grad_norm_
        # every micro-batch was drawn under the same priorities, as one batch of them all would be
        for indices, td in replayed:
            self.replay.update_priorities(indices, td.cpu().numpy())
        grads = self._grad.cpu().numpy().copy()  # the message owns its copy: the buffer is reused
        loss_value = float(losses[0]) if accum == 1 else float(torch.stack(losses).sum())
        q_mean = float(q_means[0]) if accum == 1 else float(torch.stack(q_means).mean())
        # float32, as the MPI wire carries it: single mode applies the same rate
        lr_scale = 1.0 if self.regime is None else float(np.float32(self.regime.scale(self.cfg.regime.lr_scale, self.bar)))
        self.transport.push_gradient(GradientMessage(self.id, self.version, grads, loss_value, q_mean, lr_scale))
        self.grad_steps += 1
        self.grads_since_pull += 1

    def _loss(self, s: ReplaySample) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The double-DQN loss of the sampled batch ``s``, its TD errors and the Q-values of the actions taken:
        the forward passes in ``optim.precision``, the loss in fp32."""
        B, dev = len(s.t), self.device
        # Each transition's bar and the next one, in one batch: online Q at both (double DQN), target at the next.
        t = torch.from_numpy(np.concatenate([s.t, s.next_t]).astype(np.int64)).to(dev)
        stock = torch.from_numpy(np.concatenate([s.stock, s.stock]).astype(np.int64)).to(dev)
        pos = torch.from_numpy(np.concatenate([s.position, s.next_position]).astype(np.int64)).to(dev)
        # uniform replay draws whole bars of the shard, each in the shard's stock order (prioritized: single ones)
        inputs = self._sample_inputs(t, stock, whole_bars=not self.cfg.replay.prioritized)
        if self.augment is not None:  # training only: a sample's s and s' augmented alike, its reward with them
            s, inputs = self._augmented(s, inputs)
        now, following = slice(None, B), slice(B, None)
        with autocast(self.cfg.optim.precision, dev):  # fp32: no context at all
            q_now = self._q(self.net, inputs, pos, now)  # the only pass the gradient flows through
            with torch.no_grad():
                q_next_online = self._q(self.net, inputs, pos, following)
                q_next_target = self._q(self.target, inputs, pos, following)
        actions = torch.from_numpy(s.action.astype(np.int64))[:, None].to(dev)
        if self.members > 1:  # [B, K, 3]: every head its own double-DQN target from its own target head
            return self._ensemble_loss(s, q_now.float(), q_next_online.float(), q_next_target.float(), actions)
        q_taken = q_now.float().gather(1, actions)[:, 0]  # the loss in fp32 (.float() returns fp32 tensors as they are)
        # Double DQN: the online network picks the next action, the target network values it.
        targets = double_dqn_targets(
            q_next_online.float(), q_next_target.float(), torch.from_numpy(s.reward).to(dev),
            torch.from_numpy(s.discount).to(dev),
        )
        loss, td = td_loss(q_taken, targets, torch.from_numpy(s.weights).to(dev), self.cfg.dqn.huber_delta)
        return loss, td, q_taken

    def _ensemble_loss(
        self, s: ReplaySample, q_now: torch.Tensor, q_next_online: torch.Tensor, q_next_target: torch.Tensor,
        actions: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """:meth:`_loss` of an ensemble's heads (Q-values ``[B, K, 3]``): each head's double-DQN loss on the
        samples its bootstrap mask keeps (:mod:`parallel_dqn.rl.bootstrap`); the TD errors are the heads' mean."""
        dev, K = self.device, self.members
        q_taken = q_now.gather(2, actions[:, :, None].expand(-1, K, 1))[..., 0]  # [B, K]
        targets = double_dqn_targets(
            q_next_online, q_next_target, torch.from_numpy(s.reward).to(dev)[:, None],
            torch.from_numpy(s.discount).to(dev)[:, None],
        )
        masks = bootstrap_masks(s.indices, K, self.cfg.ensemble.bootstrap, self.cfg.run.seed, self.id)
        loss, td = masked_td_loss(
            q_taken, targets, torch.from_numpy(s.weights).to(dev), torch.from_numpy(masks).to(dev),
            self.cfg.dqn.huber_delta,
        )
        return loss, td, q_taken

    def _sample_inputs(self, t: torch.Tensor, stock: torch.Tensor, whole_bars: bool) -> dict[str, torch.Tensor]:
        """What the networks need for the transitions at bars ``t [N]`` of ``stock [N]``; ``whole_bars``: the
        samples are whole bars of the shard, one after the other, each in the shard's stock order.

        Two ways give the same Q-values; the one that embeds fewer windows is taken:

        * per sample: the windows of its stock's neighbours (a shard of few stocks, no attention, or samples
          scattered over bars as prioritized replay draws them);
        * per bar: every stock's window once at each sampled bar, the shard's stocks attend over their
          neighbours as in acting, and the head runs on the samples (whole bars of a shard whose neighbours
          span the market: one window per stock and bar instead of k + 1 per sample).
        """
        own = len(self.stocks)
        k = min(self.cfg.model.neighbors, self.obs.n_stocks) if self.net.attention is not None else 1
        if whole_bars and self.obs.n_stocks < own * k:
            return {"bars": t[::own]}  # one bar per group of samples
        if self.net.attention is not None:
            neighbours, edges = self.obs.neighbours(t, stock)
        else:
            neighbours, edges = stock[:, None], torch.zeros(len(stock), 1, 2, device=self.device)
        own_slot = (neighbours == stock[:, None]).int().argmax(dim=1)
        return {"t": t, "neighbours": neighbours, "edges": edges, "own_slot": own_slot}

    def _augmented(
        self, s: ReplaySample, inputs: dict[str, torch.Tensor]
    ) -> tuple[ReplaySample, dict[str, torch.Tensor]]:
        """``s`` and its :meth:`_sample_inputs` with the windows of both halves gathered and augmented
        (:class:`Augmenter`: one draw per sample, or per bar when whole bars are embedded), and the rewards
        rescaled by the units' scenario factors."""
        stocks = None if "bars" in inputs else inputs["neighbours"]
        windows = self.obs.windows(inputs["bars"]) if stocks is None else self.obs.windows(inputs["t"], stocks)
        windows, factor = self.augment(windows, stocks)
        if factor is not None:  # a bar's factor for each of its samples (whole bars: the shard's stocks in turn)
            per_sample = factor.cpu().numpy().repeat(len(s.reward) // len(factor))
            s = s._replace(reward=(s.reward * per_sample).astype(s.reward.dtype))
        return s, {**inputs, "windows": windows}

    def _q(
        self, net: QNetwork, inputs: dict[str, torch.Tensor], positions: torch.Tensor, half: slice = slice(None)
    ) -> torch.Tensor:
        """``net``'s Q-values ``[N, 3]`` of the samples ``half`` of :meth:`_sample_inputs` at ``positions``."""
        if "bars" not in inputs:
            windows = inputs["windows"][half] if "windows" in inputs else None  # augmented ones, in training
            if windows is None:
                windows = self.obs.windows(inputs["t"][half], inputs["neighbours"][half])
            emb = net.embed(windows, inputs["neighbours"][half])
            return net.from_embeddings(emb, inputs["own_slot"][half], inputs["edges"][half], positions[half])[0]
        groups = slice(*(None if x is None else x // len(self.stocks) for x in (half.start, half.stop)))
        windows = inputs["windows"][groups] if "windows" in inputs else None  # augmented ones, in training
        own, ctx, _, _ = self._bar_context(net, inputs["bars"][groups], self._own_index, windows)  # [G, own, D]
        D = own.shape[-1]
        return net.q_head(own.reshape(-1, D), ctx.reshape(-1, D), positions[half])  # the samples, in their order

    def _bar_context(
        self, net: QNetwork, bars: torch.Tensor, stocks: torch.Tensor | None = None,
        windows: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """``net``'s embeddings and cross-stock contexts ``[U, K, D]`` of ``stocks [K]`` (None: all) at
        ``bars [U]``, their neighbours ``[U, K, k]`` and attention weights ``[U, H, K, k]``; ``windows``:
        every stock's at those bars (None: the market's own, as acting sees them).

        Every stock of the market is embedded once per bar, then the asked stocks attend over their neighbours;
        each row is computed alone, so a stock gets the same values whichever others are asked with it.
        """
        emb = net.embed(self.obs.windows(bars) if windows is None else windows, None)  # [U, S, D]
        neighbours, edges = self.obs.neighbours_at(bars)  # [U, S, k], [U, S, k, C]
        own = emb
        if stocks is not None and len(stocks) < self.obs.n_stocks:  # a shard: its own stocks ask
            own, neighbours, edges = emb[:, stocks], neighbours[:, stocks], edges[:, stocks]
        # the dense graph (S <= k) lists every stock in order: each attends over all of them, nothing gathered
        dense = neighbours.shape[-1] == self.obs.n_stocks
        ctx, weights = net.context(own, emb, edges, index=None if dense else neighbours)
        return own, ctx, neighbours, weights

    def end_episode(self) -> None:
        """Send the last records and the episode summary."""
        self.flush_records()
        attention = self.attention_sum / max(self.steps, 1) if self.phase == "eval" and self.net.attention else None
        diversity = self.diversity.sums.copy() if self.diversity is not None else None
        self.transport.episode_done(
            EpisodeDone(self.id, self.episode, self.phase, self.steps, attention, self.stocks.copy(), diversity)
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
            ensemble=np.concatenate([r[5] for r in self._records]) if self.members > 1 else None,
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
            "anchor": self.anchor,
            "episode": self.episode,
            "phase": self.phase,
            "last_t": self.last_t,
            "position": self.position.copy(),
            "nstep": self.nstep.state_dict(),
            "steps": self.steps,
            "attention_sum": self.attention_sum.copy(),
            **({"loss_scaler": self.scaler.state()} if self.scaler is not None else {}),  # fp16 only
            **({"learn_rows": self.learn_rows.copy()} if self.learn_rows is not None else {}),
            **({"augment": self.augment.state_dict()} if self.augment is not None else {}),
            **({"diversity": self.diversity.sums.copy(), "member_position": self.member_position.copy()}
               if self.diversity is not None else {}),  # an ensemble's
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
        self.anchor = int(state["anchor"])
        self.episode, self.phase = int(state["episode"]), str(state["phase"])
        self.training = self.phase == "train"
        self.last_t = int(state["last_t"])
        self.position = np.asarray(state["position"], dtype=np.int64).copy()
        self.nstep.load_state_dict(state["nstep"])
        self.steps = int(state["steps"])
        self.attention_sum[:] = state["attention_sum"]
        if self.scaler is not None:
            self.scaler.load(state["loss_scaler"])
        self.learn_rows = state.get("learn_rows")
        if self.augment is not None:
            self.augment.load_state_dict(state["augment"])
        if self.diversity is not None:
            self.diversity.sums[:] = state["diversity"]
            self.member_position = np.asarray(state["member_position"], dtype=np.int64).copy()
        self._records = []
