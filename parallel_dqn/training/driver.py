"""The worker side of a run, the same in single-process and MPI mode.

The driver hosts one or more workers (all of them in single-process mode, one
per rank under MPI) and walks them through the run: load their own stocks'
bars, agree on one market clock, exchange feature rows so each holds the whole
cross-section, then step every episode in lock-step, phase by phase, taking a
checkpoint between two steps when the server asks for one. Only the transport it
is given differs between the modes.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from parallel_dqn.checkpoint.format import CHECKPOINTS, CheckpointStore, worker_file, write_state
from parallel_dqn.comm.messages import CheckpointRequest, EpisodeDirective, SetupInfo
from parallel_dqn.comm.transport import Transport
from parallel_dqn.config import Config
from parallel_dqn.data.align import align_bars
from parallel_dqn.data.cache import Alone, NodeGroup, cache_key, open_cache, source_digest
from parallel_dqn.data.crosssection import CrossSection, shard_rows
from parallel_dqn.data.features import N_FEATURES, FeatureStats, graph_stamps, session_length
from parallel_dqn.data.loader import load_stock_bars
from parallel_dqn.data.memory import release_freed_memory
from parallel_dqn.data.panel import bars_per_day
from parallel_dqn.data.regimes import RegimeModel, RegimePath, detect, with_regime_features
from parallel_dqn.data.store import Store
from parallel_dqn.errors import StoppedAfterCheckpoint, UserError
from parallel_dqn.model.device import resolve_device
from parallel_dqn.rl.augment import FeatureScales, augmenting
from parallel_dqn.rl.observations import Observations
from parallel_dqn.training.curriculum import Curriculum
from parallel_dqn.training.directive import needs_directive
from parallel_dqn.training.plan import RunPlan
from parallel_dqn.training.worker import ActingPass, Worker

log = logging.getLogger(__name__)

#: seconds the other workers of a node wait, at least, while its first worker builds the node's cache entry alone
NODE_BUILD_WAIT = 3600.0


@dataclass
class LocalShard:
    """One hosted worker's id and stocks, before it has a cross-section."""

    worker_id: int
    stocks: list[int]


@dataclass(frozen=True)
class BuildRecipe:
    """Everything a cross-section is built from besides the bar files: with their identities, the cache key.

    The build reads the plan and the settings only through this, so whatever changes what it builds
    changes the key (tests/test_cache.py changes each field).
    """

    symbols: tuple[str, ...]
    shards: tuple[tuple[int, ...], ...]  # the stocks of each worker: the order the rows are computed in
    load: tuple[dt.date, dt.date]  # days loaded, inclusive
    train: tuple[dt.date | None, dt.date | None]  # days the feature statistics and the session are fitted on
    stats: FeatureStats | None  # given (a saved model's): not fitted
    graph_window: int
    graph_stride: int
    neighbors: int
    n_features: int = N_FEATURES

    @classmethod
    def of(cls, plan: RunPlan, cfg: Config) -> BuildRecipe:
        return cls(
            symbols=tuple(plan.symbols),
            shards=tuple(tuple(int(i) for i in shard) for shard in plan.shards),
            load=(plan.load_start, plan.load_end),
            train=(plan.train_start, plan.train_end),
            stats=plan.stats,
            graph_window=cfg.market.graph_window,
            graph_stride=max(1, cfg.market.graph_window // 8),
            neighbors=cfg.model.neighbors,
        )


def build_cross_section(
    shards: list[LocalShard], plan: RunPlan, store: Store, transport: Transport, cfg: Config
) -> tuple[CrossSection, FeatureStats]:
    """The run's cross-section and feature statistics, identical on every worker.

    From the node's cache (``data.cache``, :mod:`parallel_dqn.data.cache`) when it holds them; else built and
    put there. With a cache, the processes of a node all map its one entry read-only: its first worker checks
    the entry and, when it is missing, builds it alone from every stock's files (:func:`_build_alone`) and
    writes it, while the others wait for its word (the node's group is the transport's ``node``; a process
    alone when it has none, as in single-process mode). One build per node, not one per worker: every
    worker building the whole market at once held it once per rank (100 stocks x a year of minute bars:
    2.55 GB at the peak of each of 4 ranks). From a remote store the others first download their own stocks'
    files, all at once, and the first worker reads them from the local copies. Only where some node has no
    cache folder (or ``data.cache`` is off) do the workers build together, each loading its own stocks and
    exchanging rows (:func:`_build`).
    """
    recipe = BuildRecipe.of(plan, cfg)
    if cfg.data.cache == "off":
        built = _build(shards, recipe, store, transport)
        release_freed_memory()  # the loader's working memory, not carried through training
        return built
    started = time.perf_counter()
    # every worker takes the same collective steps below, also where its node has no usable cache folder
    cache = open_cache(cfg.data.cache)
    node: NodeGroup = getattr(transport, "node", None) or Alone()
    sources = transport.allgather([
        source_digest(store, [plan.symbols[i] for i in shard.stocks], plan.load_start, plan.load_end)
        for shard in shards
    ])
    key = cache_key(recipe, sources)
    held = node.from_leader(cache is not None and cache.holds(key) if node.leader else None)
    if not all(transport.allgather([node.from_leader(cache is not None if node.leader else None)] * len(shards))):
        xs, stats = _build(shards, recipe, store, transport)  # some node cannot keep an entry: build together
        release_freed_memory()
        return xs, stats
    assert cache is not None  # every node's first worker has the cache folder, and this rank is on one of them
    if held:
        xs, stats = cache.get(key)
        log.info("cross-section from the cache in %.2f s: %s", time.perf_counter() - started, cache.entry(key))
        return xs, stats
    built, kept = None, False
    wait = max(cfg.dist.timeout, NODE_BUILD_WAIT)  # longer than any message takes: downloads, a whole build
    if not node.leader:  # a remote store: the others download their own stocks' files meanwhile, all at once
        _download(store, [plan.symbols[i] for shard in shards for i in shard.stocks], plan.load_start, plan.load_end)
    node.from_leader(None, timeout=wait)  # ... before the first worker reads every stock's
    if node.leader:
        built = _build_alone(recipe, store)
        about = {"store": store.describe(), "stocks": len(plan.symbols), "days": recipe.load,
                 "build_s": round(time.perf_counter() - started, 2)}
        try:
            cache.put(key, *built, about)
            kept = True
        except OSError as exc:  # a full disk, say: this run goes on with what it built
            log.warning("cannot write the cross-section cache entry %s: %s", cache.entry(key), exc)
    # the others wait while the first worker reads and featurises every stock
    if not node.from_leader(kept, timeout=wait):
        return built if built is not None else _build_alone(recipe, store)  # each worker of this node alone
    log.info("cross-section %s in %.2f s, cached: %s", "built" if built else "built by this node's first worker",
             time.perf_counter() - started, cache.entry(key))
    del built  # one copy per node: the entry's pages replace this process's arrays
    release_freed_memory()
    return cache.get(key)


def _download(store: Store, symbols: list[str], start: dt.date, end: dt.date) -> None:
    """Bring ``symbols``' files on ``[start, end]`` into a remote store's local copy (nothing for a folder)."""
    if hasattr(store, "prefetch"):
        for symbol in symbols:
            store.prefetch(symbol, store.list_days(symbol, start, end))


def _build_alone(recipe: BuildRecipe, store: Store) -> tuple[CrossSection, FeatureStats]:
    """:func:`_build` of every worker's stocks in this process (a node's first worker making the node's cache
    entry), as single-process mode builds them: the same cross-section as the workers' build together."""
    everyone = [LocalShard(i, list(stocks)) for i, stocks in enumerate(recipe.shards)]
    built = _build(everyone, recipe, store, _InThisProcess())
    release_freed_memory()
    return built


class _InThisProcess:
    """The exchange of a build by one process: every part is already here."""

    def allgather(self, parts: Sequence) -> list:
        return list(parts)

    def allgather_rows(self, parts: Sequence[np.ndarray]) -> list[np.ndarray]:
        return list(parts)


def _build(
    shards: list[LocalShard], recipe: BuildRecipe, store: Store, transport: Transport
) -> tuple[CrossSection, FeatureStats]:
    """Load own stocks, agree on the clock, exchange feature rows; identical result on every worker."""
    hosted = [i for shard in shards for i in shard.stocks]
    # one pass over the files of every hosted stock; the panel's columns are the shards' stocks, shard after shard
    bars = load_stock_bars(store, [recipe.symbols[i] for i in hosted], *recipe.load)
    release_freed_memory()  # the files' tables, read and gone (see below)
    for shard in shards:
        log.debug("worker %d loads %s", shard.worker_id, " ".join(recipe.symbols[i] for i in shard.stocks))
    # the clock: the union of every worker's bar times (those hosted here all come with the first hosted shard)
    here = [np.unique(bars.timestamps).view("datetime64[ns]")]
    here += [np.zeros(0, dtype="datetime64[ns]")] * (len(shards) - 1)
    clock = np.unique(np.concatenate(transport.allgather(here)))
    train_rows = _rows(clock, *recipe.train)
    given = recipe.stats
    session = given.session_seconds if given is not None else session_length(clock[slice(*train_rows)])
    panel = align_bars(bars, clock)
    # Each stage's inputs are freed before the next one builds on them, and the memory handed back (pyarrow's
    # pool and the C heap keep freed pages): the build's peak is one stage's, not the sum of all of them.
    del bars  # the raw bars are not needed past the aligned panel
    release_freed_memory()
    parts = shard_rows(panel, [s.stocks for s in shards], session, train_rows, given)
    del panel  # nor the panel past the rows
    release_freed_memory()
    contributions = [(np.asarray(s.stocks), stats.mean, stats.std, rows) for s, (stats, rows) in zip(shards, parts)]
    meta = transport.allgather([c[:3] for c in contributions])
    rows = transport.allgather_rows([c[3] for c in contributions])
    stamps = graph_stamps(clock, stride=recipe.graph_stride)
    xs = CrossSection.assemble(
        recipe.symbols, clock, [(m[0], r) for m, r in zip(meta, rows)], recipe.graph_window, stamps,
        recipe.neighbors,
    )
    S = len(recipe.symbols)
    mean = np.zeros((S, meta[0][1].shape[1]))
    std = np.ones_like(mean)
    for stocks, m, s in meta:
        mean[stocks], std[stocks] = m, s
    return _compact(xs), FeatureStats(mean, std, session)


def _compact(xs: CrossSection) -> CrossSection:
    """Every array field contiguous and on its own: a view into the exchanged rows would keep all of them
    alive, and the arithmetic on an array is then the same whether it comes from the cache or not."""
    arrays = {f.name: getattr(xs, f.name) for f in dataclasses.fields(xs)}
    return dataclasses.replace(
        xs, **{k: np.ascontiguousarray(v) for k, v in arrays.items() if isinstance(v, np.ndarray)}
    )


def _rows(clock: np.ndarray, start, end) -> tuple[int, int]:
    """Clock rows ``[lo, hi)`` whose UTC date lies in ``[start, end]``."""
    if start is None:
        return (0, 0)
    days = clock.astype("datetime64[D]")
    lo = int(np.searchsorted(days, np.datetime64(start, "D"), side="left"))
    hi = int(np.searchsorted(days, np.datetime64(end, "D"), side="right"))
    return lo, hi


def _regimes(
    xs: CrossSection, plan: RunPlan, cfg: Config, train_rows: tuple[int, int], eval_rows: tuple[int, int]
) -> tuple[CrossSection, RegimePath | None, dict | None]:
    """With ``[regime]`` on: the detector (fitted on the training rows, or a saved model's), its filtered path over
    the clock (restarted at the evaluation's first bar), the cross-section with the regime probabilities as
    features when ``regime.features``, and what rank 0 gets of it (the model and the probabilities).

    Every worker computes the same from the same cross-section (no message): the fit is deterministic.
    """
    g = cfg.regime
    if not g.enabled:
        return xs, None, None
    saved = RegimeModel.from_dict(plan.regime) if plan.regime is not None else None
    restarts = (eval_rows[0],) if eval_rows[1] > eval_rows[0] else ()
    started = time.perf_counter()
    model, path = detect(xs.log_returns, train_rows, restarts, g.states, g.window, cfg.run.seed, saved)
    shares = np.bincount(path.labels[slice(*train_rows)], minlength=g.states) / max(train_rows[1] - train_rows[0], 1)
    log.info("regimes: %d states in %.2f s, training bars per state %s", g.states, time.perf_counter() - started,
             " ".join(f"{x:.2f}" for x in shares))
    if g.features:
        xs = dataclasses.replace(xs, features=with_regime_features(xs.features, path))
    return xs, path, {"model": model.to_dict(), "probs": path.probs}


@dataclass(frozen=True)
class EpisodeSpec:
    """One entry of the run's schedule: a training episode (1, 2, ...), its validation, or the evaluation (0)."""

    episode: int
    phase: str  # "train", "valid" (greedy, on the held-out end of the training period) or "eval"
    rows: tuple[int, int]  # clock rows [start, stop)


class Schedule(Sequence[EpisodeSpec]):
    """The run's episodes in order: training episodes 1..E over the training rows, each followed by its
    validation when there is a validation period, then the evaluation.

    Entries are made when asked for, so a schedule of any length costs nothing up front.
    """

    def __init__(
        self, episodes: int, train_rows: tuple[int, int], eval_rows: tuple[int, int],
        valid_rows: tuple[int, int] = (0, 0),
    ) -> None:
        self.episodes = episodes
        self.train_rows, self.eval_rows, self.valid_rows = train_rows, eval_rows, valid_rows
        self.evaluates = eval_rows[1] - eval_rows[0] >= 2
        self.per_episode = 2 if valid_rows[1] - valid_rows[0] >= 2 else 1  # entries per training episode

    def __len__(self) -> int:
        return self.episodes * self.per_episode + int(self.evaluates)

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        if index < self.episodes * self.per_episode:
            episode, part = divmod(index, self.per_episode)
            return EpisodeSpec(episode + 1, *(("train", self.train_rows), ("valid", self.valid_rows))[part])
        return EpisodeSpec(0, "eval", self.eval_rows)


@dataclass(frozen=True)
class ResumePoint:
    """Where the hosted workers continue: schedule entry ``index``, at clock row ``t`` (None: not begun)."""

    index: int
    t: int | None


def run_workers(
    shards: list[LocalShard],
    plan: RunPlan,
    store: Store,
    transport: Transport,
    cfg: Config,
    resume: Mapping[int, dict] | None = None,
    stop_signal: Callable[[], str | None] = lambda: None,
) -> None:
    """Everything a run asks of the workers hosted in this process.

    ``resume``: each hosted worker's state from a checkpoint (``--resume``); ``stop_signal``: the
    name of a stop signal this process received (or None), passed on to the server between two
    clock steps.
    """
    xs, stats = build_cross_section(shards, plan, store, transport, cfg)
    train_rows = _rows(xs.timestamps, plan.train_start, plan.train_end)
    eval_rows = _rows(xs.timestamps, plan.eval_start, plan.eval_end)
    valid_rows = _rows(xs.timestamps, plan.valid_start, plan.valid_end)
    xs, regime, regime_info = _regimes(xs, plan, cfg, train_rows, eval_rows)
    if plan.reward_scale is not None:
        reward_scale, return_std = plan.reward_scale, plan.return_std
    else:
        train_returns = xs.log_returns[train_rows[0] + 1 : train_rows[1]]
        return_std = float(train_returns.std()) or 1.0
        reward_scale = 1.0 / return_std
    _check_period(train_rows, eval_rows, plan, cfg)
    _check_validation(valid_rows, plan)
    if any(s.worker_id == 0 for s in shards):
        transport.send_setup(
            SetupInfo(
                symbols=plan.symbols,
                timestamps=xs.timestamps,
                close=xs.close,
                log_returns=xs.log_returns,
                tradeable=xs.tradeable,
                train_rows=train_rows,
                eval_rows=eval_rows,
                bars_per_day=plan.bars_per_day or bars_per_day(xs.timestamps),
                reward_scale=reward_scale,
                return_std=return_std,
                n_features=xs.features.shape[2],
                feature_stats=stats.to_dict(),
                shards=plan.shards,
                episodes=plan.episodes,
                structure=plan.structure,
                valid_rows=valid_rows,
                **({"extra": {"regime": regime_info}} if regime_info is not None else {}),
            )
        )
    total_steps = plan.episodes * max(train_rows[1] - train_rows[0] - 1, 1)
    # the process's one view of the cross-section (no copy on the CPU), shared by every worker hosted here
    obs = Observations(xs, cfg.market.window, resolve_device(cfg.run.device))
    # training-only augmentation: the training rows' feature statistics, measured once for every hosted worker
    scales = FeatureScales.fit(xs.features, train_rows, stats) if augmenting(cfg.augment) and plan.episodes else None
    adaptive = regime if cfg.regime.adaptive else None
    workers = [Worker(s.worker_id, s.stocks, cfg, xs, transport, reward_scale, total_steps, obs, scales, adaptive)
               for s in shards]
    schedule = Schedule(plan.episodes, train_rows, eval_rows, valid_rows)
    stepper = LockStep(workers, transport, CheckpointStore(Path(cfg.run.output) / CHECKPOINTS), stop_signal)
    point = stepper.restore(resume) if resume else ResumePoint(0, None)
    log.debug("first clock step")  # bench/cache.py measures the time to this line
    episode_end = cfg.checkpoint.episode_end
    directed = needs_directive(cfg)  # else no worker waits for rank 0's word between episodes
    cur = cfg.curriculum
    curriculum = Curriculum.of(xs.timestamps, xs.log_returns, train_rows, cur.stages, cur.by) if cur.enabled else None
    stopped = False
    for index in range(point.index, len(schedule)):
        spec = schedule[index]
        resume_t = point.t if index == point.index else None
        if stopped and spec.phase != "eval":
            continue  # rank 0 stopped training early: no more training episodes or their validations
        learn_rows = None
        if directed and spec.phase == "train" and resume_t is None:  # a begun episode holds its stage's rows
            directive = stepper.directive(index, spec.episode, schedule[index - 1] if index else None)
            if directive.stop:
                log.info("rank 0 stops training before episode %d: on to the evaluation", spec.episode)
                stopped = True
                continue
            if curriculum is not None:
                learn_rows = curriculum.learn_rows(directive.stage, len(xs.timestamps))
                log.info("training episode %d at curriculum stage %d of %d (%d of %d days)", spec.episode,
                         directive.stage, cur.stages, len(curriculum.days(directive.stage)), len(curriculum.order))
        stepper.run_episode(index, spec, resume_t, learn_rows)
        if index + 1 < len(schedule):  # none after the last: the evaluation's results are not checkpointed
            stepper.boundary(index + 1, None, episode=spec.episode if episode_end and spec.phase == "train" else 0)
    transport.close({w.id: w.grad_steps for w in workers})


class LockStep:
    """Steps the hosted workers through episodes together, phase by phase, checkpointing between steps.

    Several hosted workers (single-process mode) push their gradients in a rotating order: under
    MPI the workers' gradients of one step reach rank 0 in no fixed order, so no worker is always
    the last (and the stalest) one.
    """

    def __init__(
        self, workers: list[Worker], transport: Transport, store: CheckpointStore,
        stop_signal: Callable[[], str | None] = lambda: None,
    ) -> None:
        self.workers = workers
        self.transport = transport
        self.store = store
        self.stop_signal = stop_signal
        self._stop_sent = False
        self._turn = 0  # rotates the learning order after each step in which gradients were pushed
        self._passes: dict[tuple, ActingPass] = {}  # the acting passes in use, by (version, training, start, stop)

    def run_episode(
        self, index: int, spec: EpisodeSpec, resume_t: int | None = None, learn_rows: np.ndarray | None = None
    ) -> None:
        """Schedule entry ``index``: clock rows ``[start, stop)``, from ``resume_t`` if it was begun already;
        ``learn_rows``: the rows a training episode learns from (None: all)."""
        if resume_t is None:
            for w in self.workers:
                w.begin_episode(spec.episode, spec.phase, spec.rows, learn_rows)
        for t in range(spec.rows[0] if resume_t is None else resume_t, spec.rows[1] - 1):
            for w in self.workers:
                while not w.sync_params(t):  # the server wants a checkpoint before it answers
                    self._checkpoint(index, t, self.transport.poll_checkpoint())
            self._act(t)
            self._learn()
            self.boundary(index, t + 1)
        for w in self.workers:
            w.end_episode()

    def _act(self, t: int) -> None:
        """Every hosted worker acts at ``t``. One forward pass over every stock and the bars of a span serves
        all the workers holding one parameters version (in single mode usually all of them: they pulled
        together) until their parameters change; passes no worker needs any more are dropped."""
        passes = {}
        for w in self.workers:
            key = (w.version, w.training, *w.acting_span(t))
            if key not in passes:
                passes[key] = self._passes.get(key) or w.acting_pass(*key[2:])
            w.act(t, passes[key].at(t))
        self._passes = passes

    def _learn(self) -> None:
        """Every hosted worker computes and pushes its gradient when due, starting at a rotating worker."""
        n = len(self.workers)
        pushed = sum(w.grad_steps for w in self.workers)
        for i in range(n):
            self.workers[(self._turn + i) % n].learn()
        if sum(w.grad_steps for w in self.workers) > pushed:
            self._turn += 1

    def directive(self, index: int, episode: int, after: EpisodeSpec | None) -> EpisodeDirective:
        """Rank 0's word on training episode ``episode`` (schedule entry ``index``; ``after``: the entry before
        it), the same for every hosted worker; checkpoints asked for meanwhile are taken here, before the episode."""
        last = (after.episode, after.phase) if after is not None else None
        answers = set()
        for w in self.workers:
            while (answer := self.transport.episode_directive(w.id, episode, last)) is None:
                self._checkpoint(index, None, self.transport.poll_checkpoint())
            answers.add(answer)
        if len(answers) != 1:
            raise RuntimeError(f"rank 0 gave the hosted workers different directives: {sorted(map(str, answers))}")
        return answers.pop()

    def boundary(self, index: int, t: int | None, episode: int = 0) -> None:
        """Between two steps: pass on a stop signal; take the checkpoint the server asks for, if any.

        ``episode`` > 0: the end of that training episode; wait for its checkpoint and take it here.
        """
        received = self.stop_signal()
        if received and not self._stop_sent:
            self.transport.request_stop(received)
            self._stop_sent = True
        while True:
            request = self.transport.poll_checkpoint(wait=episode > 0)
            if request is None:
                return
            self._checkpoint(index, t, request)
            if not episode or request.episode == episode:
                return

    def _checkpoint(self, index: int, t: int | None, request: CheckpointRequest | None) -> None:
        """Write every hosted worker's state for ``request``; continue at (``index``, ``t``) after it."""
        if request is None:
            raise RuntimeError("the server deferred a pull for a checkpoint it never asked for")
        staging = self.store.staging_path(request.seq)
        staging.mkdir(parents=True, exist_ok=True)  # rank 0 made it; on a shared file system it may lag
        files = {}
        for w in self.workers:
            w.flush_records()
            name = worker_file(w.id)
            state = {"point": {"index": index, "t": t, "turn": self._turn}, "worker": w.checkpoint_state()}
            with self.store.writing(request.seq):  # a full disk: the staging folder goes, one line says why
                files[w.id] = {name: write_state(staging / name, state)}
        if not self.transport.checkpoint_done(request, files):
            raise StoppedAfterCheckpoint(request.reason or "a signal")

    def restore(self, states: Mapping[int, dict]) -> ResumePoint:
        """Load every hosted worker's checkpoint state; where they continue (the same for all of them)."""
        points = set()
        for w in self.workers:
            state = states[w.id]
            w.restore_checkpoint(state["worker"])
            self._turn = int(state["point"].get("turn", 0))
            points.add(ResumePoint(int(state["point"]["index"]), state["point"]["t"]))
        if len(points) != 1:
            raise RuntimeError(f"the hosted workers were checkpointed at different steps: {sorted(points)}")
        (point,) = points
        log.info("resuming at schedule entry %d, clock row %s", point.index, point.t)
        return point


def _check_period(train_rows: tuple[int, int], eval_rows: tuple[int, int], plan: RunPlan, cfg: Config) -> None:
    if plan.episodes and train_rows[1] - train_rows[0] < max(cfg.dqn.batch_size, 3):
        raise UserError(
            f"the training period {plan.train_start}..{plan.train_end} has only {train_rows[1] - train_rows[0]} bars",
            "choose a longer --start_date/--end_date range"
            + (f" or hold out fewer validation.days (the days from {plan.valid_start} on)" if plan.valid_start else ""),
        )
    if plan.eval_start is not None and eval_rows[1] - eval_rows[0] < 2:
        raise UserError(
            f"the evaluation period {plan.eval_start}..{plan.eval_end} has fewer than 2 bars",
            "choose --eval_start/--eval_end days that have data",
        )


def _check_validation(valid_rows: tuple[int, int], plan: RunPlan) -> None:
    if plan.valid_start is not None and plan.episodes and valid_rows[1] - valid_rows[0] < 2:
        raise UserError(
            f"the validation period {plan.valid_start}..{plan.valid_end} has fewer than 2 bars",
            "set validation.days higher, or 0 for no validation",
        )
