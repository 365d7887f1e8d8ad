"""PNG plots for reports: equity and drawdown curves, attention heatmaps, training curves.

Figures are built with :class:`matplotlib.figure.Figure` and the Agg canvas directly, never through
``pyplot``: no display is needed, no global backend is switched and no figure is left open.
Every ``plot_*`` function writes one PNG (creating its folder) and returns its path; a ``*_figure`` function
builds the figure alone, for the report to embed without writing a file.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from parallel_dqn.evaluation.portfolio import drawdown

AGENT = "agent"  # the curve name drawn highlighted


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, format="png", dpi=100)
    return path


def _x_axis(timestamps: np.ndarray | None, n: int) -> np.ndarray:
    """Timestamps if given (one per point), else the bar index."""
    if timestamps is None:
        return np.arange(n)
    x = np.asarray(timestamps)
    if len(x) != n:
        raise ValueError(f"{len(x)} timestamps for curves of {n} points")
    return x


def _plot_curves(
    curves: Mapping[str, np.ndarray], timestamps: np.ndarray | None, highlight: str, ylabel: str, title: str
) -> Figure:
    """One line per curve, all the same length; ``highlight`` thick and on top, the rest thin."""
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


#: the attention heatmap writes each weight in its cell up to this many stocks, names them up to the next
#: number, and never grows past MAX_HEATMAP_INCHES (a fixed-size picture of the whole matrix beyond)
ANNOTATED_STOCKS, LABELLED_STOCKS, MAX_HEATMAP_INCHES = 20, 60, 14.0


def plot_attention(
    matrix: np.ndarray, symbols: Sequence[str], path: str | Path, title: str = "Cross-stock attention"
) -> Path:
    """Heatmap of an ``[S, S]`` attention matrix, each weight written in its cell for a few stocks.

    Row ``i`` is the attending stock, column ``j`` the stock it draws information from. The picture's size
    is bounded whatever S (500 stocks once took gigabytes of canvas and 250,000 text labels).
    """
    m = np.asarray(matrix, dtype=np.float64)
    S = len(symbols)
    if m.shape != (S, S):
        raise ValueError(f"attention matrix {m.shape} does not match {S} symbols")
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
