"""One typed configuration tree for a run.

Every setting lives here, grouped by concern. A run's configuration is built in
three layers, later layers winning: the defaults below, a TOML file
(``--config FILE.toml``, sections named like the dataclasses' fields of
:class:`Config`), and command-line flags. It is validated once, at start
(:meth:`Config.validate`), and the resolved tree is written to the output folder
as ``config.toml`` so a run can be repeated exactly.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import math
import os
import re
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from parallel_dqn.errors import UserError


@dataclass
class DataConfig:
    """Where the bars come from and which stocks and dates to use."""

    data: str = "data/market"  # a local folder in the key layout (or local:DIR)
    stocks: list[str] = field(default_factory=list)  # empty: every stock in the store
    start_date: str = ""  # training period, inclusive (YYYY-MM-DD); empty: first available day
    end_date: str = ""
    eval_start: str = ""  # held-out evaluation period, inclusive
    eval_end: str = ""
    # built cross-sections kept for the next run of the same data (parallel_dqn.data.cache): auto (node-local:
    # $PARALLEL_DQN_CACHE/crosssections, else $SLURM_TMPDIR, $TMPDIR or ~/.cache + /parallel-dqn/crosssections),
    # off, or a folder
    cache: str = "auto"


@dataclass
class MarketConfig:
    """How the market turns into observations and rewards."""

    cost_bps: float = 1.0  # cost per unit of position change, in basis points
    window: int = 8  # bars of own-stock features the encoder sees
    graph_window: int = 120  # bars of the trailing window of the correlation graph


@dataclass
class ModelConfig:
    """The Q-network: encoder, cross-stock attention, dueling head."""

    embed_dim: int = 32
    hidden: int = 64
    heads: int = 2
    cross_attention: bool = True  # False: each stock sees only itself (the ablation)
    stock_embeddings: bool = True  # a learned identity vector per stock
    # each stock attends over its k most related stocks (itself included), chosen from the trailing correlation
    # graph; dense attention over every stock when there are no more than k
    neighbors: int = 16


@dataclass
class DQNConfig:
    """Double DQN with n-step returns."""

    episodes: int = 4
    gamma: float = 0.5
    n_step: int = 1
    lr: float = 2e-3
    weight_decay: float = 0.0  # AdamW decoupled weight decay at the server
    batch_size: int = 128  # transitions per stock of a worker's shard per gradient (bars of the shard, uniform replay)
    train_freq: int = 32  # clock steps between gradient computations on a worker
    learning_starts: int = 500  # clock steps before the first gradient
    target_update: int = 62  # server versions between target-network copies
    grad_clip: float = 10.0
    huber_delta: float = 1.0
    eps_start: float = 1.0
    eps_end: float = 0.02
    eps_fraction: float = 0.3  # share of all training steps over which epsilon decays


@dataclass
class ReplayConfig:
    """Replay buffer of each worker (sized per stock of its shard)."""

    capacity: int = 100_000  # transitions per stock of the worker's shard
    prioritized: bool = False
    # what a prioritized replay's priorities measure: td (|TD error|), pnl (|reward|: the sample's profit or loss),
    # rare (tail returns and volatility spikes of the sample's bar), or a mixture such as "td:0.5,rare:0.5"
    priority: str = "td"
    alpha: float = 0.6
    beta_start: float = 0.4
    # gradient samples per transition; 0: what dqn.batch_size / dqn.train_freq give (4 with the defaults)
    ratio: float = 0.0


@dataclass
class OptimConfig:
    """How the server's optimizer steps: learning-rate schedule, effective batch, numeric precision."""

    # constant | warmup (linear from lr/100 over warmup_applies) | cosine (annealing with warm restarts) |
    # plateau (reduce on a validation plateau: needs validation.days); torch's schedulers
    lr_schedule: str = "constant"
    warmup_applies: int = 0  # applies of linear warm-up (also before cosine and plateau)
    cosine_period: int = 1000  # applies until the first warm restart (T_0)
    cosine_mult: int = 1  # each period is this many times the last (T_mult)
    lr_min: float = 1e-5  # cosine's floor and plateau's lowest learning rate
    plateau_factor: float = 0.5  # plateau: the learning rate is multiplied by this
    plateau_patience: int = 1  # plateau: validations without improvement before it is cut
    grad_accum: int = 1  # micro-batches summed into one pushed gradient (effective batch = grad_accum x batch)
    precision: str = "fp32"  # fp32 | bf16 (autocast, CPU or CUDA) | fp16 (CUDA only, with a gradient scaler)


@dataclass
class ValidationConfig:
    """A validation period held out at the end of each run's training period (never the evaluation period)."""

    days: int = 0  # the last trading days of the training period, scored after every training episode (0: none)


@dataclass
class MonitorConfig:
    """The convergence monitor on rank 0: a state per training episode and what to do about it."""

    enabled: bool = False
    window: int = 200  # gradients in the loss trend's window
    patience: int = 2  # training episodes without a better validation score before a plateau
    on_plateau: str = "warn"  # warn | reduce_lr | restore_best | stop
    on_diverge: str = "restore_best"  # warn | reduce_lr | restore_best | stop
    explode_norm: float = 1e3  # gradient norm above which gradients are exploding
    vanish_norm: float = 1e-8  # gradient norm below which they are vanishing


@dataclass
class CurriculumConfig:
    """Training days in stages of rising difficulty, measured on the training period only."""

    enabled: bool = False
    stages: int = 3
    by: str = "volatility"  # volatility | trend (its clarity, inverted) | noise | mixed
    threshold: float = 0.0  # validation Sharpe that passes a stage (needs validation.days)
    patience: int = 2  # training episodes at one stage after which the run moves up anyway (0: by threshold only)


@dataclass
class AugmentConfig:
    """Training-only changes to replayed samples (never to acting, validation or evaluation)."""

    noise: float = 0.1  # Gaussian noise, as a fraction of each feature's spread over the training period
    feature_dropout: float = 0.05  # probability that a feature is zeroed in a sample's window
    time_warp: float = 0.2  # probability that a sample's window is resampled in time (past bars only)
    scenarios: float = 0.2  # share of samples from a volatility-rescaled scenario (window and reward rescaled)


@dataclass
class EnsembleConfig:
    """K Q-heads on the one shared encoder and attention, trained in one run (bootstrapped DQN); 1: off."""

    members: int = 1  # Q-heads (each with its own target head); 1: one head, no ensemble
    combine: str = "mean"  # how the members act together: mean (Q) | vote (majority) | confidence (agreement-weighted Q)
    bootstrap: float = 0.5  # probability that a head learns from a replayed transition (1.0: every head from every one)
    size_down: bool = True  # capital weights times the share of members that agree with the ensemble's action


@dataclass
class RegimeConfig:
    """Market regimes: a causal HMM detector fitted on the training rows, as features and as adaptive settings."""

    enabled: bool = False  # detect regimes (filtered probabilities per bar, logged and plotted)
    states: int = 2  # HMM states, sorted by volatility: 0 is the calmest
    window: int = 60  # bars of the trailing windows of the detector's inputs (volatility, trend, correlation)
    features: bool = True  # the regime probabilities as model features (appended to every stock's row)
    adaptive: bool = True  # the tables below, indexed by the most likely regime at t
    epsilon_scale: list[float] = field(default_factory=lambda: [1.0, 2.0])  # exploration: epsilon times this
    position_cap: list[float] = field(default_factory=lambda: [1.0, 0.5])  # capital weights times this (<= 1)
    lr_scale: list[float] = field(default_factory=lambda: [1.0, 0.5])  # learning rate (after the schedule) times this


@dataclass
class DistConfig:
    """Parameter server and workers."""

    mode: str = "single"  # single: one process; parallel: under MPI (mpirun / srun)
    # single mode: how many workers to simulate, each with a shard of the stocks (0: one worker for all of them,
    # one learner like a vectorised environment's); under MPI it is the number of worker ranks
    workers: int = 0
    sync: bool = False  # wait for every worker's gradient each round and apply the mean
    staleness_bound: int = 8  # async: drop gradients computed on params older than this
    pull_every: int = 1  # gradient steps between parameter pulls
    record_block: int = 256  # clock steps per block of decision records sent to rank 0
    timeout: float = 600.0  # seconds a rank waits for another before it aborts the job (MPI)


@dataclass
class MetaConfig:
    """Portfolio meta-policy on rank 0."""

    enabled: bool = True  # False: equal capital across stocks
    max_weight: float = 0.5  # per-stock cap on |weight|
    lr: float = 5e-3
    epochs: int = 20
    perf_halflife: int = 390  # bars; half-life of the trailing decision-performance features


@dataclass
class RunConfig:
    """Where results go and how the run reports."""

    output: str = "runs/latest"
    seed: int = 0
    threads: int = 1  # torch threads per process
    device: str = "cpu"  # the networks of workers and server: cpu, cuda, or auto (cuda when torch sees a GPU)
    progress: bool = True  # progress bar on a terminal
    # a trained_model.pth whose Q-network and meta-policy weights training starts from (same stocks and network;
    # walk-forward --warm_start: the previous fold's); empty: from scratch
    warm_start: str = ""


@dataclass
class NotifyConfig:
    """Telegram messages from rank 0 (parallel_dqn.telemetry.notify); on only when the bot's env variables are set."""

    enabled: bool = True  # False: never send, even with TELEGRAM_BOT_TOKEN and TELEGRAM_CHAT_ID set
    base_url: str = "https://api.telegram.org"
    every: int = 1  # training episodes between progress messages (0: none)
    min_interval: float = 3.0  # seconds between messages at least; progress over the rate is coalesced
    timeout: float = 5.0  # seconds one request may take


@dataclass
class CheckpointConfig:
    """Checkpoints of the whole run state, written by rank 0 with every worker's part (resume: --resume)."""

    every_applies: int = 1000  # gradient applies between checkpoints (0: not by count)
    every_seconds: float = 1800.0  # seconds between checkpoints (0: not by time)
    episode_end: bool = True  # also after every training episode
    keep: int = 3  # newest checkpoints kept; older ones are removed


@dataclass
class Config:
    """The whole configuration of a run."""

    data: DataConfig = field(default_factory=DataConfig)
    market: MarketConfig = field(default_factory=MarketConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    dqn: DQNConfig = field(default_factory=DQNConfig)
    replay: ReplayConfig = field(default_factory=ReplayConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    curriculum: CurriculumConfig = field(default_factory=CurriculumConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    ensemble: EnsembleConfig = field(default_factory=EnsembleConfig)
    regime: RegimeConfig = field(default_factory=RegimeConfig)
    dist: DistConfig = field(default_factory=DistConfig)
    meta: MetaConfig = field(default_factory=MetaConfig)
    run: RunConfig = field(default_factory=RunConfig)
    notify: NotifyConfig = field(default_factory=NotifyConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)

    # ---- construction -------------------------------------------------------------
    @classmethod
    def from_dict(cls, tree: dict[str, Any], source: str = "config", base: Config | None = None) -> Config:
        """Build from a nested dict (a parsed TOML file) over ``base`` (default: the defaults); unknown keys are an error."""
        cfg = copy.deepcopy(base) if base is not None else cls()
        for section, values in tree.items():
            if section not in _SECTIONS:
                raise UserError(
                    f"{source}: unknown section [{section}]", f"known sections: {', '.join(_SECTIONS)}"
                )
            if not isinstance(values, dict):
                raise UserError(f"{source}: [{section}] must be a table of settings")
            for key, value in values.items():
                cfg.set(f"{section}.{key}", value, source=source)
        return cfg

    @classmethod
    def load(cls, path: str | Path, base: Config | None = None) -> Config:
        """Read a TOML file (its settings over ``base``, default: the defaults)."""
        _, tree = read_toml(path, "config file", "check the --config path")
        return cls.from_dict(tree, source=str(path), base=base)

    def set(self, dotted: str, value: Any, source: str = "flag") -> None:
        """Set ``section.key`` to ``value``, converted to the field's type."""
        section, _, key = dotted.partition(".")
        if section not in _SECTIONS or not key:
            raise UserError(f"{source}: unknown setting '{dotted}'", "settings are named section.key, e.g. dqn.lr")
        obj = getattr(self, section)
        types = typing.get_type_hints(type(obj))
        if key not in types:
            known = ", ".join(f.name for f in dataclasses.fields(obj))
            raise UserError(f"{source}: unknown setting '{dotted}'", f"[{section}] has: {known}")
        setattr(obj, key, _convert(value, types[key], f"{source}: {dotted}"))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_toml(self) -> str:
        return tomli_w.dumps(self.to_dict())

    def write(self, path: str | Path) -> None:
        Path(path).write_text(self.to_toml())

    # ---- validation ---------------------------------------------------------------
    def validate(self) -> Config:
        """Check every setting once; raise UserError naming the first bad one."""
        d = self.data
        start, end, eval_start, eval_end = (
            _parse_date(getattr(d, name), f"--{name}") if getattr(d, name) else None
            for name in ("start_date", "end_date", "eval_start", "eval_end")
        )
        if start and end and start > end:
            raise UserError(f"--start_date {d.start_date} is after --end_date {d.end_date}", "swap them")
        if eval_start and eval_end and eval_start > eval_end:
            raise UserError(f"--eval_start {d.eval_start} is after --eval_end {d.eval_end}", "swap them")
        if end and eval_start and eval_start <= end:
            raise UserError(
                f"evaluation period starts {d.eval_start}, on or before the training end {d.end_date}",
                "evaluate on days after training (held-out data)",
            )
        if len(set(d.stocks)) != len(d.stocks):
            raise UserError(f"--stocks names a stock twice: {' '.join(d.stocks)}")
        self._check_cache()
        self._check_finite()
        _check(self.market.cost_bps >= 0, "--cost_bps must be >= 0")
        _check(self.market.window >= 1, "market.window must be >= 1")
        _check(self.market.graph_window >= 2, "market.graph_window must be >= 2")
        m = self.model
        _check(m.embed_dim >= 1, f"model.embed_dim must be >= 1, not {m.embed_dim}")
        _check(m.hidden >= 1, f"model.hidden must be >= 1, not {m.hidden}")
        _check(m.heads >= 1, f"model.heads must be >= 1, not {m.heads}")
        _check(m.neighbors >= 1, f"model.neighbors must be >= 1 (the stock itself is always one), not {m.neighbors}")
        _check(m.embed_dim % m.heads == 0, "model.embed_dim must be a multiple of model.heads")
        q = self.dqn
        _check(q.episodes >= 1, "--episodes must be >= 1")
        _check(0.0 <= q.gamma < 1.0, "dqn.gamma must be in [0, 1)")
        _check(q.n_step >= 1, "dqn.n_step must be >= 1")
        _check(q.lr > 0, "dqn.lr must be > 0")
        _check(q.batch_size >= 1 and q.train_freq >= 1 and q.target_update >= 1, "dqn batch/train_freq/target_update >= 1")
        _check(q.learning_starts >= 0, f"dqn.learning_starts must be >= 0, not {q.learning_starts}")
        _check(q.grad_clip > 0, f"dqn.grad_clip must be > 0, not {q.grad_clip} (it is the largest gradient norm applied)")
        _check(q.huber_delta > 0, f"dqn.huber_delta must be > 0, not {q.huber_delta}")
        _check(q.weight_decay >= 0, f"dqn.weight_decay must be >= 0, not {q.weight_decay}")
        _check(0.0 <= q.eps_end <= q.eps_start <= 1.0, "need 0 <= dqn.eps_end <= dqn.eps_start <= 1")
        r = self.replay
        _check(r.alpha >= 0, f"replay.alpha must be >= 0, not {r.alpha}")
        _check(0.0 <= r.beta_start <= 1.0, f"replay.beta_start must be in [0, 1], not {r.beta_start}")
        _check(r.ratio >= 0, f"replay.ratio must be >= 0 (0: from dqn.batch_size / dqn.train_freq), not {r.ratio}")
        parse_priority(r.priority)
        if r.priority != "td" and not r.prioritized:
            raise UserError(f"replay.priority = {r.priority} needs prioritized replay", "set replay.prioritized = true")
        self._check_optimisation()
        e = self.ensemble
        _check(1 <= e.members <= 64, f"ensemble.members must be in [1, 64] (1: off), not {e.members}")
        _check(e.combine in COMBINE_RULES, f"ensemble.combine must be one of {', '.join(COMBINE_RULES)}, not {e.combine!r}")
        _check(0 < e.bootstrap <= 1, f"ensemble.bootstrap must be in (0, 1] (1: no masks), not {e.bootstrap}")
        self._check_regime()
        self._check_memory()
        _check(r.capacity >= q.batch_size, "replay.capacity must be >= dqn.batch_size")
        _check(self.dist.mode in ("single", "parallel"), "--mode must be 'single' or 'parallel'")
        _check(self.dist.workers >= 0, "--workers must be >= 0 (0: one worker for all the stocks)")
        _check(self.dist.staleness_bound >= 0, f"dist.staleness_bound must be >= 0, not {self.dist.staleness_bound}")
        _check(self.dist.pull_every >= 1, f"dist.pull_every must be >= 1, not {self.dist.pull_every}")
        _check(self.dist.timeout > 0 and self.dist.record_block >= 1, "dist.timeout and dist.record_block must be > 0")
        _check(0.0 < self.meta.max_weight <= 1.0, "meta.max_weight must be in (0, 1]")
        _check(self.meta.lr > 0, f"meta.lr must be > 0, not {self.meta.lr}")
        _check(self.meta.epochs >= 0, f"meta.epochs must be >= 0, not {self.meta.epochs}")
        _check(0 <= self.run.seed < 2**32, f"run.seed (--seed) must be >= 0 and < 2**32, not {self.run.seed}")
        _check(self.run.threads >= 1, "run.threads must be >= 1")
        _check(self.run.device in ("cpu", "cuda", "auto"), "run.device must be cpu, cuda or auto")
        n = self.notify
        _check(n.base_url.startswith(("http://", "https://")), "notify.base_url must start with http:// or https://")
        _check(n.every >= 0 and n.min_interval >= 0 and n.timeout > 0, "need notify.every, min_interval >= 0, timeout > 0")
        c = self.checkpoint
        _check(c.every_applies >= 0 and c.every_seconds >= 0, "checkpoint.every_applies and every_seconds must be >= 0")
        _check(c.keep >= 1, "checkpoint.keep must be >= 1")
        return self

    def _check_optimisation(self) -> None:
        """The training-optimisation settings (optim, validation, monitor, curriculum, augment)."""
        o, v, mon, cur, aug = self.optim, self.validation, self.monitor, self.curriculum, self.augment
        _check(o.lr_schedule in LR_SCHEDULES, f"optim.lr_schedule must be one of {', '.join(LR_SCHEDULES)}, not {o.lr_schedule!r}")
        _check(o.warmup_applies >= 0, f"optim.warmup_applies must be >= 0, not {o.warmup_applies}")
        _check(o.cosine_period >= 1 and o.cosine_mult >= 1, "optim.cosine_period and optim.cosine_mult must be >= 1")
        _check(o.lr_min >= 0, f"optim.lr_min must be >= 0, not {o.lr_min}")
        # the floor matters only where something lowers the rate: a cosine or plateau schedule, the monitor's cut
        cut = mon.enabled and "reduce_lr" in (mon.on_plateau, mon.on_diverge)
        if (o.lr_schedule in ("cosine", "plateau") or cut) and o.lr_min >= self.dqn.lr:
            raise UserError(f"optim.lr_min ({o.lr_min:g}) must be below dqn.lr ({self.dqn.lr:g})", "lower optim.lr_min")
        _check(0 < o.plateau_factor < 1, f"optim.plateau_factor must be in (0, 1), not {o.plateau_factor}")
        _check(o.plateau_patience >= 0, f"optim.plateau_patience must be >= 0, not {o.plateau_patience}")
        _check(o.grad_accum >= 1, f"optim.grad_accum must be >= 1, not {o.grad_accum}")
        _check(o.precision in PRECISIONS, f"optim.precision must be one of {', '.join(PRECISIONS)}, not {o.precision!r}")
        if o.precision == "fp16" and self.run.device == "cpu":
            raise UserError("optim.precision = fp16 needs a CUDA GPU (run.device is cpu)",
                            "use optim.precision = bf16 on a CPU, or run.device = cuda on a GPU")
        if o.precision == "fp16" and self.dist.sync:
            raise UserError("optim.precision = fp16 skips the steps whose gradient overflowed, which --sync's rounds "
                            "of one gradient per worker cannot", "use optim.precision = bf16 with --sync")
        _check(v.days >= 0, f"validation.days must be >= 0, not {v.days}")
        if o.lr_schedule == "plateau" and not v.days:
            raise UserError("optim.lr_schedule = plateau needs a validation period", "set validation.days, e.g. 2")
        _check(mon.window >= 2 and mon.patience >= 1, "monitor.window must be >= 2 and monitor.patience >= 1")
        for name in ("on_plateau", "on_diverge"):
            action = getattr(mon, name)
            _check(action in INTERVENTIONS, f"monitor.{name} must be one of {', '.join(INTERVENTIONS)}, not {action!r}")
        _check(0 <= mon.vanish_norm < mon.explode_norm, "need 0 <= monitor.vanish_norm < monitor.explode_norm")
        _check(cur.stages >= 1, f"curriculum.stages must be >= 1, not {cur.stages}")
        _check(cur.patience >= 0, f"curriculum.patience must be >= 0 (0: move up by the threshold only), not {cur.patience}")
        _check(cur.by in CURRICULUM_MEASURES, f"curriculum.by must be one of {', '.join(CURRICULUM_MEASURES)}, not {cur.by!r}")
        if cur.enabled and not v.days:
            raise UserError("curriculum.enabled needs a validation period to decide progression", "set validation.days, e.g. 2")
        for name in ("noise", "feature_dropout", "time_warp", "scenarios"):
            value = getattr(aug, name)
            limit = 1.0 if name != "noise" else 10.0
            _check(0 <= value <= limit, f"augment.{name} must be in [0, {limit:g}], not {value}")

    def _check_regime(self) -> None:
        """[regime]: the detector's size and window, and one entry per state in each table."""
        g = self.regime
        _check(2 <= g.states <= 8, f"regime.states must be in [2, 8], not {g.states}")
        # the evaluation of a saved model loads graph_window bars of warm-up before its first day, at least
        _check(2 <= g.window <= (self.market.graph_window if g.enabled else 10**9),
               f"regime.window must be in [2, market.graph_window = {self.market.graph_window}], not {g.window}")
        bounds = {"epsilon_scale": (0.0, 100.0), "position_cap": (0.0, 1.0), "lr_scale": (1e-6, 100.0)}
        for name, (lo, hi) in bounds.items():
            table = getattr(g, name)
            _check(len(table) == g.states, f"regime.{name} needs one value per regime state ({g.states}), not {table}")
            _check(all(math.isfinite(x) and lo <= x <= hi for x in table),
                   f"regime.{name} values must lie in [{lo:g}, {hi:g}], not {table}")

    def _check_cache(self) -> None:
        """data.cache: auto, off, or a folder (made when first used) that is not a file."""
        cache = self.data.cache
        fix = "set data.cache to auto, off, or a folder"
        if not cache.strip():
            raise UserError("data.cache is empty", fix)
        folder = Path(cache).expanduser()
        if cache not in ("auto", "off") and folder.exists() and not folder.is_dir():
            raise UserError(f"data.cache {cache} is a file, not a folder", fix)

    def _check_finite(self) -> None:
        """Every float setting must be a finite number (``inf`` and ``nan`` convert, but nothing works with them)."""
        for section in _SECTIONS:
            obj = getattr(self, section)
            for key, typ in typing.get_type_hints(type(obj)).items():
                value = getattr(obj, key)
                if typ is float and not math.isfinite(value):
                    raise UserError(f"{section}.{key} must be a finite number, not {value}")

    def _check_memory(self) -> None:
        """Refuse sizes whose memory clearly exceeds this machine's (each estimate is a lower bound)."""
        total = physical_memory()
        if total is None:
            return
        m, q = self.model, self.dqn
        # a transition's fields, plus a sum tree and a min tree (two float64 nodes per slot each) when prioritized
        per_transition = REPLAY_BYTES_PER_TRANSITION + 32 * self.replay.prioritized
        # the capacity is per stock: a single process holds every stock's replay; under MPI each worker rank
        # may have a machine of its own (its shard is not known here: counted as one stock)
        stocks = 1 if self.dist.mode == "parallel" else max(1, len(self.data.stocks))
        # encoder, dueling head, attention and per-stock embeddings, counting one input feature per bar
        params = m.hidden * (self.market.window + 2 * m.embed_dim + 2 * _ACTIONS + 2) + m.embed_dim * (4 * m.embed_dim + 5)
        network = "model.hidden" if m.hidden * (self.market.window + 2 * m.embed_dim) >= 4 * m.embed_dim**2 else "model.embed_dim"
        needs = [
            (f"replay.capacity={self.replay.capacity}", self.replay.capacity * per_transition * stocks,
             f"{per_transition} bytes per transition x {stocks} stock{'s' if stocks > 1 else ''}"),
            (f"dqn.batch_size={q.batch_size}", q.batch_size * 4 * (self.market.window + m.hidden + m.embed_dim),
             "each sample's inputs and activations, 4 bytes each"),
            (f"{network}={getattr(m, network.partition('.')[2])}", params * 4 * _PARAM_COPIES,
             f"{params:,} parameters x {_PARAM_COPIES} copies x 4 bytes"),
        ]
        if sum(size for _, size, _ in needs) <= total:
            return
        name, size, why = max(needs, key=lambda need: need[1])
        raise UserError(
            f"{name} needs at least {_size(size)} of memory ({why}), more than this machine's {_size(total)}",
            f"lower {name.partition('=')[0]}",
        )

    def resume_conflicts(self, saved: Config) -> list[str]:
        """Settings that differ from ``saved`` (a checkpoint's) and would change the run if resumed.

        Only how a run is watched and kept may change on resume (:data:`RESUME_MAY_CHANGE`):
        everything else shapes the results, so resuming with it changed would mix two runs.
        """
        mine, theirs = flatten_settings(self.to_dict()), flatten_settings(saved.to_dict())
        return [
            f"{key} = {theirs.get(key)!r} in the checkpoint, {mine.get(key)!r} now"
            for key in sorted(set(mine) | set(theirs))
            if mine.get(key) != theirs.get(key) and not key.startswith(RESUME_MAY_CHANGE)
        ]


_SECTIONS = tuple(f.name for f in dataclasses.fields(Config))
LR_SCHEDULES = ("constant", "warmup", "cosine", "plateau")
PRECISIONS = ("fp32", "bf16", "fp16")
#: what a prioritized replay's priority can measure (replay.priority: one of them, or a weighted mixture)
PRIORITY_PARTS = ("td", "pnl", "rare")
INTERVENTIONS = ("warn", "reduce_lr", "restore_best", "stop")
CURRICULUM_MEASURES = ("volatility", "trend", "noise", "mixed")
COMBINE_RULES = ("mean", "vote", "confidence")
_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
#: lower bounds of the memory check: copies of the network's parameters (online, target, gradient, two optimizer
#: moments), Q-values per stock
_PARAM_COPIES = 5
#: bytes of one stored transition in a replay buffer (the fields of parallel_dqn.rl.nstep.TRANSITION_DTYPES;
#: a test holds the two together: the config sits below the rl package and does not import it)
REPLAY_BYTES_PER_TRANSITION = 21
_ACTIONS = 3

#: settings (prefixes) that may differ between a checkpoint and the run resuming it
RESUME_MAY_CHANGE = ("run.output", "run.progress", "run.threads", "dist.timeout", "notify.", "checkpoint.", "data.cache")


def read_toml(path: str | Path, kind: str, fix: str) -> tuple[str, dict[str, Any]]:
    """A TOML file's text and tree; a one-line UserError naming the ``kind`` of file if it cannot be read or parsed."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise UserError(f"cannot read {kind} {p}: {exc.strerror}", fix) from None
    except UnicodeDecodeError as exc:
        raise UserError(f"{kind} {p} is not valid UTF-8 text (byte {exc.start} cannot be decoded)",
                        f"{fix}; TOML files are UTF-8 text") from None
    try:
        return text, tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{kind} {p} is not valid TOML: {exc}", "fix the line it names") from None


def flatten_settings(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"dqn": {"lr": 1}}`` (nested tables, or TOML's unquoted dotted keys) -> ``{"dqn.lr": 1}``."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            out.update(flatten_settings(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def parse_priority(spec: str) -> dict[str, float]:
    """``replay.priority`` -> {part: weight}: ``td``, ``pnl``, ``rare``, or a mixture such as ``td:0.5,rare:0.5``
    (a part without a weight weighs 1); a bad spelling is one line."""
    fix = f"give one of {', '.join(PRIORITY_PARTS)}, or a mixture such as td:0.5,rare:0.5 (positive weights)"
    weights: dict[str, float] = {}
    for item in spec.replace(" ", "").split(","):
        name, _, weight = item.partition(":")
        try:
            value = float(weight) if weight else 1.0
        except ValueError:
            value = float("nan")
        if name not in PRIORITY_PARTS or name in weights or not (math.isfinite(value) and value > 0):
            raise UserError(f"replay.priority = {spec!r} is not a priority: {item!r}", fix)
        weights[name] = value
    return weights


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise UserError(message)


def _parse_date(value: str, name: str) -> dt.date:
    """Only YYYY-MM-DD: ``date.fromisoformat`` also takes ``20240103`` and ``2024-W01-3``."""
    try:
        if not _DAY.fullmatch(value):
            raise ValueError(value)
        return dt.date.fromisoformat(value)
    except ValueError:
        raise UserError(f"{name} '{value}' is not a date", "use YYYY-MM-DD") from None


def physical_memory() -> int | None:
    """This machine's physical memory in bytes (None where the system does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, OSError, ValueError):
        return None


def _size(n: float) -> str:
    """Bytes as a short decimal size, e.g. ``6.4 TB``."""
    for unit in ("bytes", "kB", "MB", "GB", "TB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:,.1f} PB"


def parse_date(value: str, name: str) -> dt.date:
    """Parse a YYYY-MM-DD flag value, or raise a UserError naming the flag."""
    return _parse_date(value, name)


def _convert(value: Any, typ: Any, where: str) -> Any:
    """Convert a TOML or CLI value to a field type (bool, int, float, str, list[str], list[float])."""
    try:
        if typ in (bool, "bool"):
            if isinstance(value, str):
                low = value.lower()
                if low in ("1", "true", "yes", "on"):
                    return True
                if low in ("0", "false", "no", "off"):
                    return False
                raise ValueError(value)
            if isinstance(value, bool):
                return value
            raise ValueError(value)
        if typ in (int, "int"):
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError(value)
            return int(value)
        if typ in (float, "float"):
            if isinstance(value, bool):
                raise ValueError(value)
            return float(value)
        if typ in (str, "str"):
            return str(value)
        if typing.get_origin(typ) is list:
            if isinstance(value, str):
                value = value.replace(",", " ").split()
            if typing.get_args(typ) == (float,):  # a table of numbers, e.g. regime.lr_scale = [1.0, 0.5]
                if any(isinstance(v, bool) for v in value):
                    raise ValueError(value)
                return [float(v) for v in value]
            return [str(v) for v in value]
    except (TypeError, ValueError):
        pass
    else:
        return value
    raise UserError(f"{where}: '{value}' is not a valid {getattr(typ, '__name__', typ)}")
