"""A synthetic intraday market with documented, planted structure.

For demos, tests and benchmarks: an agent that learns something real should beat the
baselines here, and :func:`oracle_expected_returns` says how much there is to learn.

Market clock: bars of ``bar_minutes`` minutes from 09:30 to 16:00 America/New_York on
business days (Mon-Fri, no holidays) from ``start``; a bar's timestamp is its start time,
stored tz-aware in UTC (so DST moves the UTC session by an hour). The return process runs
continuously across days: the overnight gap is one more step, and each bar opens at the
previous bar's close.

Regimes: one market-wide 2-state Markov chain (state 0 / state 1). By default (``regime_by =
"volatility"``) it scales the per-bar volatility ``sigma_t = base_vol * sqrt(bar_minutes) *
multiplier[state_t]`` (calm / turbulent). With ``regime_by = "correlation"`` every stock's volatility
is the same in both states and the state changes how the stocks move together: in state 1 each shock
``eps`` is ``sqrt(c) * f(t) + sqrt(1 - c) * e(t)`` with one market factor ``f`` shared by all stocks
(``c = regime_correlation``, the pairwise correlation of the shocks), in state 0 the shocks are
independent. A stock's own bars then say nothing about the state; only the cross-section does.

Roles, by position in the symbol list, cycling through :data:`ROLES`; ``eps`` is i.i.d. N(0, 1)::

    leader, random_walk  r(t) = sigma_t * eps
    follower             r(t) = beta * r_leader(t - lag) + sigma_t * sqrt(1 - beta^2) * eps
                         (the leader is the nearest preceding leader in the list); with ``regime_flip``
                         the loading is +beta in the calm state and -beta in the turbulent one
    momentum             r(t) = phi * r(t-1) + sigma_t * sqrt(1 - phi^2) * eps,  phi = momentum_phi > 0
    mean_reversion       same AR(1) with phi = reversion_phi < 0

Prices: close = start price (uniform 20..200) * exp(cumsum r); open = previous close;
high/low = max/min(open, close) * (1 +/- half-normal wick noise). Volume: lognormal around a
U-shaped intraday profile, larger when |r| is large relative to sigma_t.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import date
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from parallel_dqn.data.layout import check_symbol, day_key
from parallel_dqn.data.validation import VALUE_COLUMNS
from parallel_dqn.errors import UserError

ROLES = ("leader", "follower", "momentum", "mean_reversion", "random_walk")
REGIME_KINDS = ("volatility", "correlation")  # what the hidden market regime changes (SyntheticSpec.regime_by)
STRUCTURE_FILE = "structure.json"


def _minutes(hhmm: str) -> int:
    """Minutes after midnight of an ``HH:MM`` time."""
    hours, minutes = hhmm.split(":")
    return int(hours) * 60 + int(minutes)


@dataclass(frozen=True)
class SyntheticSpec:
    """Parameters of the synthetic market; the defaults are the documented demo market.

    Attributes:
        bar_minutes: bar length in minutes.
        session_open, session_close: local session times (HH:MM) in ``timezone``.
        timezone: IANA zone of the exchange.
        base_vol: std of a 1-minute log return before the regime multiplier (scaled by sqrt(bar_minutes)).
        follower_beta: loading of a follower on its leader's lagged return.
        follower_lag: the lag, in bars, of that loading (>= 1).
        momentum_phi, reversion_phi: AR(1) coefficients of momentum and mean-reversion stocks.
        regime_multipliers: volatility multipliers of the two market-wide regimes.
        regime_switch_prob: probability per bar of switching regime.
        price_min, price_max: range of the uniform start prices.
        wick_vol: scale of the half-normal high/low wick noise per 1-minute bar (scaled by sqrt(bar_minutes)).
        volume_base: median volume of a 1-minute bar at the session's quietest time.
        volume_noise: std of the lognormal volume noise.
        volume_return_boost: log-volume added per standard deviation of |r|.
        regime_flip: the follower's loading changes sign with the hidden regime (+beta in state 0, -beta in
            state 1), a planted relation that only a regime-aware agent can use fully; ``structure.json`` then
            records the regime path (first state, switch times) for the oracle.
        regime_by: what the hidden regime changes: ``"volatility"`` (the multipliers) or ``"correlation"``
            (independent shocks in state 0, a shared market factor in state 1; the multipliers are not used).
        regime_correlation: the shocks' pairwise correlation in state 1 of a ``"correlation"`` regime.
    """

    bar_minutes: int = 1
    session_open: str = "09:30"
    session_close: str = "16:00"
    timezone: str = "America/New_York"
    base_vol: float = 0.0010
    follower_beta: float = 0.6
    follower_lag: int = 1
    momentum_phi: float = 0.25
    reversion_phi: float = -0.25
    regime_multipliers: tuple[float, float] = (0.7, 1.6)
    regime_switch_prob: float = 1 / 400
    price_min: float = 20.0
    price_max: float = 200.0
    wick_vol: float = 0.0003
    volume_base: float = 2000.0
    volume_noise: float = 0.4
    volume_return_boost: float = 0.3
    regime_flip: bool = False
    regime_by: str = "volatility"
    regime_correlation: float = 0.6

    def __post_init__(self) -> None:
        checks = {
            "bar_minutes must be >= 1": self.bar_minutes >= 1,
            "the session must hold at least one bar": self.bars_per_day() >= 1,
            "follower_beta must lie in (-1, 1)": -1 < self.follower_beta < 1,
            "follower_lag must be >= 1": self.follower_lag >= 1,
            "momentum_phi and reversion_phi must lie in (-1, 1)": all(
                -1 < p < 1 for p in (self.momentum_phi, self.reversion_phi)
            ),
            "regime_switch_prob must lie in [0, 1]": 0 <= self.regime_switch_prob <= 1,
            "regime_by must be 'volatility' or 'correlation'": self.regime_by in REGIME_KINDS,
            "regime_correlation must lie in [0, 1)": 0 <= self.regime_correlation < 1,
            "volatilities and prices must be positive (wick_vol >= 0), price_max >= price_min": (
                min(self.base_vol, self.price_min, *self.regime_multipliers) > 0
                and self.price_max >= self.price_min
                and self.wick_vol >= 0
            ),
        }
        for what, ok in checks.items():
            if not ok:
                raise UserError(f"invalid synthetic market spec: {what}", "fix the synthetic data settings")

    def bars_per_day(self) -> int:
        """Whole bars in one session (a trailing partial bar is dropped)."""
        session = _minutes(self.session_close) - _minutes(self.session_open)
        return session // self.bar_minutes if self.bar_minutes >= 1 else 0

    def bar_vol(self) -> float:
        """Base per-bar log-return volatility."""
        return self.base_vol * math.sqrt(self.bar_minutes)

    def volatility_multipliers(self) -> np.ndarray:
        """Each regime state's volatility multiplier: the spec's, or 1 and 1 when the regime is a correlation."""
        return np.asarray(self.regime_multipliers if self.regime_by == "volatility" else (1.0, 1.0))


@dataclass
class SyntheticMarket:
    """A generated market: per-stock frames in the loader's format and the planted structure (JSON-able)."""

    frames: dict[str, pd.DataFrame]
    structure: dict[str, Any]


def generate_market(
    symbols: Sequence[str], start: date, days: int, seed: int, spec: SyntheticSpec = SyntheticSpec()
) -> SyntheticMarket:
    """Generate ``days`` business days of bars for ``symbols``; identical output for identical arguments."""
    symbols = [check_symbol(s) for s in symbols]
    if not symbols or len(set(symbols)) != len(symbols):
        raise UserError("the synthetic market needs at least one symbol, each listed once", "fix the symbol list")
    if days < 1:
        raise UserError(f"the synthetic market needs at least one day, got {days}", "pass days >= 1")
    rng = np.random.default_rng(seed)
    clock = session_clock(start, days, spec)
    roles = {s: ROLES[i % len(ROLES)] for i, s in enumerate(symbols)}
    leaders = _leaders(symbols, roles)

    state = _regime_states(rng, len(clock), spec)
    sigma = spec.bar_vol() * spec.volatility_multipliers()[state]
    returns = _returns(rng, sigma, symbols, roles, leaders, spec, state)
    start_prices = rng.uniform(spec.price_min, spec.price_max, size=len(symbols))
    frames = {
        s: _bars(rng, clock, returns[:, j], sigma, start_prices[j], spec) for j, s in enumerate(symbols)
    }
    structure = {
        "generator": "parallel_dqn.data.synthetic",
        "seed": seed,
        "start": clock[0].date().isoformat(),
        "days": days,
        "symbols": symbols,
        "roles": roles,
        "leaders": leaders,
        "coefficients": {s: _coefficients(roles[s], spec) for s in symbols},
        "start_prices": {s: float(p) for s, p in zip(symbols, start_prices)},
        "spec": asdict(spec),
    }
    if spec.regime_flip:
        switches = np.flatnonzero(np.diff(state)) + 1
        structure["regime_flip"] = True
        structure["regime_path"] = {
            "first": int(state[0]),
            "switches": [clock[i].isoformat() for i in switches],  # bars whose state differs from the bar before
        }
    return SyntheticMarket(frames=frames, structure=structure)


def session_clock(start: date, days: int, spec: SyntheticSpec = SyntheticSpec()) -> pd.DatetimeIndex:
    """Bar start times (UTC) of ``days`` business days from ``start`` (a weekend start moves to Monday)."""
    zone = ZoneInfo(spec.timezone)
    open_offset = pd.Timedelta(_minutes(spec.session_open), "min")
    local_days = pd.bdate_range(start=pd.Timestamp(start), periods=days)
    opens = (local_days + open_offset).tz_localize(zone).tz_convert("UTC").as_unit("ns")
    offsets = np.arange(spec.bars_per_day(), dtype=np.int64) * spec.bar_minutes * 60 * 10**9
    ns = (opens.asi8[:, None] + offsets[None, :]).ravel()
    return pd.DatetimeIndex(ns.view("datetime64[ns]"), name="timestamp").tz_localize("UTC")


def _leaders(symbols: list[str], roles: dict[str, str]) -> dict[str, str]:
    """Each follower's leader: the nearest preceding leader in the list."""
    leaders, current = {}, None
    for s in symbols:
        if roles[s] == "leader":
            current = s
        elif roles[s] == "follower":
            assert current is not None, "position 0 is always a leader"
            leaders[s] = current
    return leaders


def _coefficients(role: str, spec: SyntheticSpec) -> dict[str, float]:
    if role == "follower":
        return {"beta": spec.follower_beta, "lag": spec.follower_lag}
    if role == "momentum":
        return {"phi": spec.momentum_phi}
    if role == "mean_reversion":
        return {"phi": spec.reversion_phi}
    return {}


def _regime_states(rng: np.random.Generator, n: int, spec: SyntheticSpec) -> np.ndarray:
    """The market-wide two-state regime chain ``[T]`` (0 calm, 1 turbulent; start state drawn 50/50)."""
    first = rng.integers(0, 2)
    switches = rng.random(n) < spec.regime_switch_prob
    switches[0] = False
    return (first + np.cumsum(switches)) % 2


def _returns(
    rng: np.random.Generator,
    sigma: np.ndarray,
    symbols: list[str],
    roles: dict[str, str],
    leaders: dict[str, str],
    spec: SyntheticSpec,
    state: np.ndarray,
) -> np.ndarray:
    """Per-bar log returns ``[T, S]`` of every role (see the module docstring); ``state``: the hidden regime
    per bar (it flips the follower's loading with ``regime_flip``, and correlates the shocks in state 1 when
    ``regime_by`` is ``"correlation"``)."""
    shocks = rng.standard_normal((sigma.size, len(symbols)))
    if spec.regime_by == "correlation":  # drawn after the shocks: a volatility market keeps its numbers
        c = spec.regime_correlation
        factor = rng.standard_normal(sigma.size)[:, None]
        shocks = np.where(state[:, None] == 1, math.sqrt(c) * factor + math.sqrt(1 - c) * shocks, shocks)
    noise = shocks * sigma[:, None]
    r = np.empty_like(noise)
    col = {s: j for j, s in enumerate(symbols)}
    for j, s in enumerate(symbols):  # leaders first: followers read them
        if roles[s] in ("leader", "random_walk"):
            r[:, j] = noise[:, j]
    for j, s in enumerate(symbols):
        if roles[s] == "follower":
            beta, lag = spec.follower_beta, spec.follower_lag
            lagged = np.zeros(sigma.size)
            lagged[lag:] = r[:-lag, col[leaders[s]]]
            loading = np.where(state == 0, beta, -beta) if spec.regime_flip else beta
            r[:, j] = loading * lagged + math.sqrt(1 - beta**2) * noise[:, j]
    for phi, role in ((spec.momentum_phi, "momentum"), (spec.reversion_phi, "mean_reversion")):
        cols = [j for j, s in enumerate(symbols) if roles[s] == role]
        if cols:
            r[:, cols] = _ar1(math.sqrt(1 - phi**2) * noise[:, cols], phi)
    return r


def _ar1(shocks: np.ndarray, phi: float) -> np.ndarray:
    """``y(t) = phi * y(t-1) + shocks(t)`` along axis 0, with ``y(-1) = 0``."""
    y = np.empty_like(shocks)
    prev = np.zeros(shocks.shape[1:])
    for t in range(shocks.shape[0]):
        prev = phi * prev + shocks[t]
        y[t] = prev
    return y


def _bars(
    rng: np.random.Generator,
    clock: pd.DatetimeIndex,
    r: np.ndarray,
    sigma: np.ndarray,
    start_price: float,
    spec: SyntheticSpec,
) -> pd.DataFrame:
    """OHLCV bars of one stock from its log returns, in the loader's frame format."""
    close = start_price * np.exp(np.cumsum(r))
    open_ = np.concatenate(([start_price], close[:-1]))
    wick = spec.wick_vol * math.sqrt(spec.bar_minutes)
    high = np.maximum(open_, close) * (1 + np.abs(rng.normal(0.0, wick, r.size)))
    low = np.minimum(open_, close) * (1 - np.abs(rng.normal(0.0, wick, r.size)))

    n = spec.bars_per_day()
    x = (np.arange(r.size) % n + 0.5) / n  # position in the session, 0..1
    u_shape = 0.6 + 1.6 * (2 * x - 1) ** 2
    log_vol = spec.volume_return_boost * np.abs(r) / sigma + rng.normal(0.0, spec.volume_noise, r.size)
    volume = np.round(spec.volume_base * spec.bar_minutes * u_shape * np.exp(log_vol))
    data = dict(zip(VALUE_COLUMNS, (open_, high, low, close, volume)))
    return pd.DataFrame(data, index=clock)


def write_market(market: SyntheticMarket, out_dir: Path) -> list[Path]:
    """Write one parquet file per stock-day in the key layout, plus ``structure.json``; returns the bar files."""
    out_dir = Path(out_dir)
    written: list[Path] = []
    for symbol, frame in market.frames.items():
        days = frame.index.tz_convert("UTC").tz_localize(None).to_numpy().astype("datetime64[D]")
        bounds = np.flatnonzero(np.diff(days.astype(np.int64))) + 1
        for lo, hi in zip(np.r_[0, bounds], np.r_[bounds, len(days)]):
            day_frame = frame.iloc[lo:hi]
            path = out_dir / day_key(symbol, days[lo].item())
            path.parent.mkdir(parents=True, exist_ok=True)
            table = pa.Table.from_pandas(day_frame.rename_axis("timestamp").reset_index(), preserve_index=False)
            pq.write_table(table, path)
            written.append(path)
    (out_dir / STRUCTURE_FILE).write_text(json.dumps(market.structure, indent=2) + "\n")
    return written


def load_structure(data_dir: Path | str) -> dict[str, Any] | None:
    """The planted structure saved beside a synthetic market, or None for other data."""
    path = Path(data_dir) / STRUCTURE_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: cannot read the synthetic market structure: {exc}", "regenerate the data") from exc


def regime_states(structure: dict, timestamps: np.ndarray) -> np.ndarray:
    """The hidden regime (0 calm, 1 turbulent) at each of ``timestamps`` of a ``regime_flip`` market."""
    path = structure["regime_path"]
    switches = pd.to_datetime(path["switches"], utc=True).tz_localize(None).to_numpy().astype("datetime64[ns]")
    stamps = np.asarray(timestamps).astype("datetime64[ns]")
    return (int(path["first"]) + np.searchsorted(switches, stamps, side="right")) % 2


def oracle_expected_returns(
    log_returns: np.ndarray, symbols: Sequence[str], structure: dict, timestamps: np.ndarray | None = None
) -> np.ndarray:
    """The planted ``E[r[t+1] | returns up to t]``, shape ``[T, S]`` like ``log_returns``.

    follower: ``beta * r_leader[t+1-lag]``; momentum / mean_reversion: ``phi * r[t]``; others 0.
    A follower whose leader is not among ``symbols`` gets 0 (its only signal is unobserved). On a
    ``regime_flip`` market the follower's beta takes the sign of the true hidden regime at t (``timestamps``,
    the rows' bar times, are then needed): the oracle knows the state, which no agent does.
    """
    r = np.asarray(log_returns, dtype=np.float64)
    if r.ndim != 2 or r.shape[1] != len(symbols):
        raise ValueError(f"log_returns must have shape [T, {len(symbols)}], got {r.shape}")
    unknown = [s for s in symbols if s not in structure["roles"]]
    if unknown:
        raise ValueError(f"symbols not in the synthetic structure: {', '.join(unknown)}")
    col = {s: j for j, s in enumerate(symbols)}
    out = np.zeros_like(r)
    for j, s in enumerate(symbols):
        role, coef = structure["roles"][s], structure["coefficients"][s]
        if role in ("momentum", "mean_reversion"):
            out[:, j] = coef["phi"] * r[:, j]
        elif role == "follower" and structure["leaders"][s] in col:
            shift = int(coef["lag"]) - 1  # r[t+1] loads on the leader at t+1-lag = t-shift
            if shift < r.shape[0]:
                leader = r[:, col[structure["leaders"][s]]]
                out[shift:, j] = coef["beta"] * leader[: r.shape[0] - shift]
                if structure.get("regime_flip"):
                    if timestamps is None:
                        raise ValueError("a regime_flip market's oracle needs the rows' timestamps")
                    out[:, j] *= np.where(regime_states(structure, timestamps) == 0, 1.0, -1.0)
    return out
