"""PNG plots for reports: equity and drawdown curves, attention heatmaps (ranked links for many stocks), training
curves, the tear sheet's stacked panels.

Figures are built with :class:`matplotlib.figure.Figure` and the Agg canvas directly, never through
``pyplot``: no display is needed, no global backend is switched and no figure is left open.
Every ``plot_*`` function writes one PNG (creating its folder) and returns its path; a ``*_figure`` function
builds the figure alone, for the report to embed without writing a file.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from parallel_dqn.evaluation import tearsheet
from parallel_dqn.evaluation.portfolio import drawdown

AGENT = "agent"  # the curve name drawn highlighted


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, format="png", dpi=100)
    return path


def _datetimes(timestamps: np.ndarray) -> np.ndarray:
    """``timestamps`` (numpy datetimes, or pandas times with a time zone) as naive UTC ``datetime64[ns]``."""
    index = pd.DatetimeIndex(np.asarray(timestamps))
    return (index.tz_convert(None) if index.tz is not None else index).to_numpy(dtype="datetime64[ns]")


def is_intraday(timestamps: np.ndarray | None) -> bool:
    """Whether some calendar day (UTC) holds more than one of ``timestamps``: bars within sessions."""
    if timestamps is None or len(timestamps) < 2:
        return False
    days = _datetimes(timestamps).astype("datetime64[D]")
    return len(np.unique(days)) < len(days)


def _x_axis(timestamps: np.ndarray | None, n: int) -> np.ndarray:
    """The x of each point: the timestamps for daily (or coarser) data, the bar index for intraday bars (a
    session-time axis, :func:`_session_ticks`: nights and weekends take no width) or without timestamps."""
    if timestamps is None:
        return np.arange(n)
    x = np.asarray(timestamps)
    if len(x) != n:
        raise ValueError(f"{len(x)} timestamps for curves of {n} points")
    return np.arange(n) if is_intraday(x) else x


#: a session-time axis labels at most this many days, and marks each gap in trading up to MAX_GAP_LINES
MAX_DAY_TICKS, MAX_GAP_LINES = 12, 80


def _session_ticks(ax: Axes, timestamps: np.ndarray) -> None:
    """Label a bar-index axis with the first bar of each trading day (thinned to :data:`MAX_DAY_TICKS`) and mark
    every gap in trading (a step longer than 1.5 x the usual bar: a night, a weekend, a halt) with a dotted line."""
    ts = _datetimes(timestamps)
    days = ts.astype("datetime64[D]")
    firsts = np.flatnonzero(np.r_[True, days[1:] != days[:-1]])
    every = int(np.ceil(len(firsts) / MAX_DAY_TICKS))
    shown = firsts[::every]
    ax.set_xticks(shown, labels=[str(days[i]) for i in shown], rotation=30, ha="right", fontsize="small")
    steps = np.diff(ts).astype(np.int64)
    if steps.size:
        usual = np.median(steps)
        gaps = np.flatnonzero(steps > 1.5 * usual)
        if len(gaps) <= MAX_GAP_LINES:
            for g in gaps:
                ax.axvline(g + 0.5, color="grey", linestyle=":", linewidth=0.8, zorder=1)
        ax.set_xlabel(f"bar (session time: {len(gaps)} gaps in trading, dotted, take no width)")


def _plot_curves(
    curves: Mapping[str, np.ndarray], timestamps: np.ndarray | None, highlight: str, ylabel: str, title: str
) -> Figure:
    """One line per curve, all the same length; ``highlight`` thick and on top, the rest thin. Intraday
    timestamps get a session-time axis (bar index, day ticks, gaps marked), daily ones a calendar axis."""
    lengths = {len(c) for c in curves.values()}
    if len(lengths) != 1:
        raise ValueError(f"curves have different lengths: { {k: len(c) for k, c in curves.items()} }")
    x = _x_axis(timestamps, lengths.pop())
    fig = Figure(figsize=(10, 5))
    ax = fig.add_subplot()
    for name, y in curves.items():
        main = name == highlight
        ax.plot(x, y, label=name, linewidth=2.4 if main else 1.0, alpha=1.0 if main else 0.75, zorder=3 if main else 2)
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    if timestamps is not None and is_intraday(timestamps):
        _session_ticks(ax, timestamps)
    else:
        fig.autofmt_xdate()
    fig.tight_layout()
    return fig


def plot_equity(
    curves: Mapping[str, np.ndarray],
    timestamps: np.ndarray | None,
    path: str | Path,
    highlight: str = AGENT,
    regimes: np.ndarray | None = None,
) -> Path:
    """Equity curves (one value per bar, e.g. from ``equity_curve``) of the agent and the baselines; ``regimes``:
    the most likely regime per bar (0 calm), drawn as shaded bands, darker for more turbulent regimes."""
    fig = _plot_curves(curves, timestamps, highlight, "portfolio value", "Equity")
    if regimes is not None:
        _regime_bands(fig.axes[0], _x_axis(timestamps, len(regimes)), np.asarray(regimes))
    return _save(fig, path)


def _regime_bands(ax: Axes, x: np.ndarray, regimes: np.ndarray) -> None:
    """Shade each run of bars in a regime above 0; a band spans from its first bar to the next run's first."""
    top = max(int(regimes.max()), 1)
    starts = np.r_[0, np.flatnonzero(np.diff(regimes)) + 1]
    ends = np.r_[starts[1:], len(regimes) - 1]
    for lo, hi in zip(starts, ends):
        state = int(regimes[lo])
        if state > 0:
            ax.axvspan(x[lo], x[hi], color="tab:red", alpha=0.08 + 0.17 * state / top, lw=0, zorder=1,
                       label=f"regime {state}" if lo == starts[regimes[starts] == state][0] else None)
    ax.legend(loc="best", fontsize="small")


def plot_drawdown(
    curves: Mapping[str, np.ndarray],
    timestamps: np.ndarray | None,
    path: str | Path,
    highlight: str = AGENT,
) -> Path:
    """Drawdown (percent below the running peak, drawn downwards) of each equity curve."""
    dd = {name: -100.0 * drawdown(e) for name, e in curves.items()}
    return _save(_plot_curves(dd, timestamps, highlight, "drawdown (%)", "Drawdown"), path)


def fold_equity_figure(
    curves: Mapping[str, np.ndarray], boundaries: Sequence[int], labels: Sequence[str], highlight: str = AGENT
) -> Figure:
    """Equity curves over the test bars of several folds joined end to end (x: the bar), a dashed line at
    each fold's first bar, ``labels`` (one per boundary, e.g. the fold's name and first test day) on the axis."""
    if len(boundaries) != len(labels):
        raise ValueError(f"{len(boundaries)} fold boundaries but {len(labels)} labels")
    fig = _plot_curves(curves, None, highlight, "portfolio value", "Equity out of sample: folds joined")
    ax = fig.axes[0]
    for x in boundaries:
        ax.axvline(x, color="grey", linestyle="--", linewidth=0.8, zorder=1)
    ax.set_xticks(list(boundaries), labels=list(labels), rotation=30, ha="right", fontsize="small")
    ax.set_xlabel("test bar (dashed: first bar of each fold)")
    fig.tight_layout()
    return fig


def panels_figure(panels: Sequence[tuple[str, Mapping[str, np.ndarray]]], timestamps: np.ndarray | None,
                  title: str) -> Figure:
    """Stacked panels sharing the time axis (session time for intraday bars, calendar for daily): each panel a
    y-label and its curves, all as long as ``timestamps`` (e.g. rolling Sharpe; gross and net exposure; turnover)."""
    n = len(next(iter(panels[0][1].values())))
    x = _x_axis(timestamps, n)
    fig = Figure(figsize=(10, 2.2 * len(panels) + 0.6))
    axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    for ax, (ylabel, curves) in zip(axes, panels):
        for name, y in curves.items():
            if len(y) != n:
                raise ValueError(f"{name}: {len(y)} points on an axis of {n}")
            ax.plot(x, y, label=name, linewidth=1.2)
        ax.set_ylabel(ylabel, fontsize="small")
        ax.grid(alpha=0.3)
        if len(curves) > 1:
            ax.legend(loc="best", fontsize="small")
    axes[0].set_title(title)
    if timestamps is not None and is_intraday(timestamps):
        _session_ticks(axes[-1], timestamps)
    else:
        fig.autofmt_xdate()
    fig.tight_layout()
    return fig


def ranked_links_figure(labels: Sequence[str], weights: Sequence[float], title: str) -> Figure:
    """Horizontal bars of the strongest attention links (``labels`` such as ``FOLW <- LEAD``), strongest on top."""
    fig = Figure(figsize=(8, 1.0 + 0.28 * max(len(labels), 1)))
    ax = fig.add_subplot()
    y = np.arange(len(labels))[::-1]
    ax.barh(y, list(weights), color="tab:blue")
    ax.set_yticks(y, labels=list(labels), fontsize="small")
    ax.set_xlabel("mean attention weight (attending stock <- informing stock)")
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return fig


#: the attention heatmap writes each weight in its cell up to this many stocks, names them up to the next
#: number, and never grows past MAX_HEATMAP_INCHES; past HEATMAP_MAX_STOCKS a ranked bar plot of the strongest
#: links replaces the heatmap (an S x S picture of 500 stocks says nothing)
ANNOTATED_STOCKS, LABELLED_STOCKS, MAX_HEATMAP_INCHES = 20, 60, 14.0
HEATMAP_MAX_STOCKS, STRONGEST_LINKS = 30, 25


def plot_attention(
    matrix: np.ndarray, symbols: Sequence[str], path: str | Path, title: str = "Cross-stock attention"
) -> Path:
    """Heatmap of an ``[S, S]`` attention matrix, each weight written in its cell for a few stocks; past
    :data:`HEATMAP_MAX_STOCKS`, the :data:`STRONGEST_LINKS` strongest links between two stocks, ranked.

    Row ``i`` is the attending stock, column ``j`` the stock it draws information from. The picture's size
    is bounded whatever S (500 stocks once took gigabytes of canvas and 250,000 text labels).
    """
    m = np.asarray(matrix, dtype=np.float64)
    S = len(symbols)
    if m.shape != (S, S):
        raise ValueError(f"attention matrix {m.shape} does not match {S} symbols")
    if S > HEATMAP_MAX_STOCKS:
        return _save(attention_links_figure(m, symbols, title), path)
    size = min(2.0 + 0.6 * S, MAX_HEATMAP_INCHES)
    fig = Figure(figsize=(size + 1.5, size))
    ax = fig.add_subplot()
    image = ax.imshow(m, cmap="viridis", interpolation="nearest")
    fig.colorbar(image, ax=ax)
    if S <= LABELLED_STOCKS:
        ticks = np.arange(S)
        small = 8 if S <= ANNOTATED_STOCKS else 5
        ax.set_xticks(ticks, labels=list(symbols), rotation=45 if S <= ANNOTATED_STOCKS else 90, ha="right",
                      fontsize=small)
        ax.set_yticks(ticks, labels=list(symbols), fontsize=small)
    ax.set_xlabel("informing stock")
    ax.set_ylabel("attending stock")
    ax.set_title(title)
    if S <= ANNOTATED_STOCKS:
        mid = (np.nanmin(m) + np.nanmax(m)) / 2 if m.size else 0.0
        for i in range(S):
            for j in range(S):
                ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=8,
                        color="black" if m[i, j] > mid else "white")
    fig.tight_layout()
    return _save(fig, path)


def attention_links_figure(matrix: np.ndarray, symbols: Sequence[str], title: str,
                           n: int = STRONGEST_LINKS) -> Figure:
    """The ``n`` strongest links of an attention matrix between two different stocks, ranked (for many stocks)."""
    links = tearsheet.strongest_links(matrix, n)
    return ranked_links_figure([f"{symbols[i]} <- {symbols[j]}" for i, j, _ in links], [w for *_, w in links],
                               f"{title}: the {len(links)} strongest of {len(symbols)} x {len(symbols) - 1} links")


def plot_training_curve(records: Sequence[Mapping[str, float]], keys: Sequence[str], path: str | Path) -> Path:
    """One panel per key (e.g. episode reward, loss, epsilon) against the record's ``episode``.

    Records without an ``episode`` field are numbered in order; a record missing a key leaves a gap.
    """
    if not keys:
        raise ValueError("no keys to plot")
    x = np.array([rec.get("episode", i) for i, rec in enumerate(records)], dtype=np.float64)
    fig = Figure(figsize=(8, 2.4 * len(keys)))
    axes = fig.subplots(len(keys), 1, sharex=True, squeeze=False)[:, 0]
    for ax, key in zip(axes, keys):
        y = np.array([rec.get(key, np.nan) for rec in records], dtype=np.float64)
        ax.plot(x, y, marker="." if len(x) < 50 else None)
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("episode")
    fig.tight_layout()
    return _save(fig, path)
