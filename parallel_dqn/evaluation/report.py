"""One self-contained HTML report over one or more run folders (``parallel-dqn report``).

Everything the report shows is read back from what a run wrote (``metrics.json``,
``metrics.jsonl``, ``portfolio_eval.csv``, the PNG plots, ``config.toml``, ``run.json``), so
a report can be made from any finished run, anywhere, later. A walk-forward (:class:`WalkForward`: its
``walk_forward.json`` and each fold's ``returns_eval.csv``) comes first, in its own section: the verdict,
the folds, the joined out-of-sample table, the joined equity curve and tear sheet, and the significance figures. The
comparison of a sweep's runs may carry each one's deflated Sharpe ratio, computed by the caller
(:func:`parallel_dqn.sweep.deflated_sharpe_ratios`). The file stands alone: images
are embedded as base64 ``data:`` URIs, the CSS is inline, there is no script and no link to
anything outside it; every piece of text from a run is HTML-escaped.

Damaged files: ``metrics.json`` and ``config.toml`` are needed, so one that cannot be read (not
UTF-8 text, not JSON / TOML, not a JSON object) is a one-line UserError naming it, and nothing is
written. A damaged optional part (a plot that is not a PNG, an unreadable ``portfolio_eval.csv``,
bad lines of ``metrics.jsonl``, a section of ``metrics.json`` of the wrong type, ``run.json``) is
left out with a note in the run's section.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from parallel_dqn import outputs
from parallel_dqn.config import flatten_settings
from parallel_dqn.errors import UserError
from parallel_dqn.evaluation import formats, plots, tearsheet
from parallel_dqn.evaluation.html_parts import escape as _e
from parallel_dqn.evaluation.html_parts import figure, table
from parallel_dqn.evaluation.html_parts import png as _png
from parallel_dqn.evaluation.tearsheet_section import returns_tearsheet_html, tearsheet_html
from parallel_dqn.files import write_atomically

#: metric key -> column heading of the evaluation tables
METRICS = {
    "total_return": "total return",
    "sharpe": "Sharpe",
    "sortino": "Sortino",
    "max_drawdown": "max drawdown",
    "turnover": "turnover",
    "hit_rate": "hit rate",
}
#: the PNGs a run writes, embedded in this order: file name -> caption
RUN_PLOTS = {
    outputs.EQUITY_PLOT: "equity: agent vs baselines (evaluation)",
    outputs.DRAWDOWN_PLOT: "drawdown (evaluation)",
    outputs.CURVE_PLOT: "training curve",
    outputs.ATTENTION_PLOT: "cross-stock attention (row attends to column)",
}
#: settings that always differ between runs and say nothing about the method
IGNORED_SETTINGS = frozenset({"run.output", "run.progress"})
#: training-curve columns shown in the table, when present
CURVE_KEYS = ("episode", "stage", "total_reward", "total_return", "sharpe", "loss", "epsilon", "lr", "grad_norm",
              "monitor", "elapsed_s")
#: the first bytes of every PNG file
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: sections of metrics.json that are JSON objects (``None`` allowed: absent)
OBJECT_SECTIONS = ("eval", "oracle", "train", "counters", "annualisation", "run")
#: sections of metrics.json that map a name (baseline, stock) to a JSON object of metrics
TABLE_SECTIONS = ("baselines", "per_stock")

CSS = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1200px}
h1,h2,h3{color:#113}table{border-collapse:collapse;margin:.5em 0 1.5em}
th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#eef}
td:first-child,th:first-child{text-align:left}th.how,td.how{text-align:left}tr.agent td{font-weight:bold}
img{max-width:100%;display:block;margin:.5em 0}figure{margin:0 0 1.5em}
pre{background:#f6f6f6;padding:.8em;overflow-x:auto}section.run{border-top:2px solid #99b;margin-top:2em}
p.note{background:#fff4e0;border-left:4px solid #e90;padding:.4em .8em}
p.verdict{font-size:1.3em;font-weight:bold;background:#eef4ff;border-left:6px solid #36c;padding:.6em 1em}
td.how{text-align:left;color:#555}div.wide{max-width:100%;overflow-x:auto}
h1,h2,h3,p,figcaption,summary{overflow-wrap:anywhere}
table.settings td,table.settings th{text-align:left;overflow-wrap:anywhere}table.settings td:first-child{white-space:nowrap}
table.settings code{white-space:normal;margin-right:1em;display:inline-block}
"""
#: each stock's strongest informants listed (past plots.HEATMAP_MAX_STOCKS); per-stock rows shown open up to
TOP_INFORMANTS, PER_STOCK_OPEN = 3, 50
#: the meta-policy's weights are drawn for at most this many stocks (those of largest mean |weight|)
WEIGHTS_SHOWN = 10
#: a setting's list value is shown whole up to this many items, else as its length and first items
LIST_SHOWN = 6
#: the comparison of several runs: evaluation metric key -> column heading (after the Sharpe)
COMPARED = {"total_return": "total return", "annual_return": "annual return",
            "annual_volatility": "annual volatility", "sortino": "Sortino", "max_drawdown": "max drawdown",
            "turnover": "turnover"}
#: the walk-forward's joined out-of-sample table: metric key -> column heading
OOS_METRICS = {"total_return": "total return", "sharpe": "Sharpe", "max_drawdown": "max drawdown"}


class Run:
    """One run folder's outputs, read once.

    ``notes`` says which damaged optional parts are left out; a damaged ``metrics.json`` or
    ``config.toml`` raises a one-line UserError naming the file.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.name = folder.resolve().name
        self.notes: list[str] = []
        metrics_path = folder / outputs.METRICS
        if not metrics_path.is_file():
            raise UserError(f"{folder} has no metrics.json, so it is not a finished run", "give a run's --output folder")
        try:
            metrics = json.loads(_read_text(metrics_path))
        except ValueError as exc:
            raise UserError(f"{metrics_path} is not valid JSON ({exc})", _DAMAGED) from None
        if not isinstance(metrics, dict):
            raise UserError(f"{metrics_path} is not a run's metrics: a JSON object was expected, not {_kind(metrics)}",
                            _DAMAGED)
        self.metrics: dict[str, Any] = _clean_metrics(metrics, self.notes)
        self.curve = _read_curve(folder / outputs.CURVE, self.notes)
        config_path = folder / outputs.CONFIG
        self.config_text = _read_text(config_path) if config_path.is_file() else ""
        try:
            self.settings = flatten_settings(tomllib.loads(self.config_text)) if self.config_text else {}
        except tomllib.TOMLDecodeError as exc:
            raise UserError(f"{config_path} is not valid TOML ({exc})",
                            "restore the file, or remove it to report without the run's settings") from None
        record = self.metrics.get("run") or _read_optional_json(folder / outputs.RECORD, "the run record", self.notes)
        self.record: dict[str, Any] = record if isinstance(record, dict) else {}

    def sharpe(self) -> float:
        """The agent's evaluation Sharpe (-inf when the run has none, so it sorts last)."""
        value = _number((self.metrics.get("eval") or {}).get("sharpe"))
        return value if value is not None else float("-inf")


@dataclass(frozen=True)
class WalkForward:
    """A joined walk-forward folder (:mod:`parallel_dqn.walkforward`): its ``walk_forward.json`` and, by fold
    name, each fold's run folder (whose ``returns_eval.csv`` the joined equity curve is drawn from)."""

    folder: Path
    result: Mapping[str, Any]
    fold_dirs: Mapping[str, Path] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.folder.resolve().name


def write_report(run_dirs: Sequence[Path], out: Path, walk_forwards: Sequence[WalkForward] = (),
                 deflated: Mapping[Path, float | None] | None = None) -> Path:
    """Write the HTML report over ``run_dirs`` to ``out`` (atomically); return its path.

    Each of ``walk_forwards`` gets its section first (its folds' run sections are those of ``run_dirs``);
    ``deflated`` (run folder -> deflated Sharpe ratio) adds that column to the comparison of the runs.
    """
    runs = [Run(Path(d)) for d in run_dirs]
    if not runs and not walk_forwards:
        raise UserError("no run folders to report on", "give at least one run's --output folder")
    folds = {p.resolve() for w in walk_forwards for p in w.fold_dirs.values()}
    others = [r for r in runs if r.folder.resolve() not in folds]  # the folds have their own table
    title = "parallel-dqn report: " + ", ".join([*(w.name for w in walk_forwards), *(r.name for r in others)])
    body = [f"<h1>{_e(title)}</h1>"]
    body += [walk_forward_html(w) for w in walk_forwards]
    if len(others) > 1:
        body.append(comparison_html(others, {Path(k).resolve(): v for k, v in (deflated or {}).items()}))
    body += [run_html(r) for r in runs]
    page = (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
        f"<style>{CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    return write_atomically(out, lambda tmp: tmp.write_text(page, encoding="utf-8"))


# ---- a walk-forward ----------------------------------------------------------------------
def walk_forward_html(wf: WalkForward) -> str:
    """The walk-forward's section: verdict, folds, the joined out-of-sample table, equity curve, significance."""
    res, notes = wf.result, []
    sig = _mapping(res.get("significance"))
    parts = [f'<section class="walk-forward" id="walk-forward-{_e(wf.name)}"><h2>Walk-forward {_e(wf.name)}</h2>',
             f'<p class="verdict">{_e(res.get("verdict") or "no verdict")}</p>',
             f"<p>{_e(_walk_forward_summary(res))}</p>",
             "<h3>Folds</h3>" + folds_table(_folds(res)),
             "<h3>Out of sample: every fold's test bars joined</h3>" + out_of_sample_table(res)]
    joined = None
    try:
        names = [str(f.get("fold")) for f in _folds(res)]
        joined = joined_fold_returns([wf.fold_dirs[n] for n in names])
        parts.append(fold_equity_html(names, *joined))
    except (OSError, ValueError, KeyError, TypeError) as exc:  # a fold's returns_eval.csv missing or damaged
        notes.append(f"the folds' returns_eval.csv cannot be joined ({_reason(exc)}); the equity curve is left out, "
                     "as is the out-of-sample tear sheet")
    if joined is not None:
        try:  # annualised as the folds were (their data's bars per day)
            first = _read_optional_json(wf.fold_dirs[names[0]] / outputs.METRICS, "the annualisation", notes)
            parts.append(returns_tearsheet_html(joined[0], _mapping(first).get("annualisation"), "out-of-sample"))
        except (ValueError, KeyError, TypeError) as exc:
            notes.append(f"the out-of-sample tear sheet cannot be drawn ({_reason(exc)}); it is left out")
    parts.append("<h3>Significance of the agent's out-of-sample record</h3>"
                 + significance_table(sig, _mapping(res.get("significance_detail"))))
    parts += [f'<p class="note">{_e(note)}</p>' for note in notes]
    return "\n".join([*parts, "</section>"])


def _folds(result: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    folds = result.get("folds")
    return [f for f in folds if isinstance(f, Mapping)] if isinstance(folds, list) else []


def _walk_forward_summary(result: Mapping[str, Any]) -> str:
    """``4 folds, out of sample from ... to ... (1556 bars); the agent beat buy-and-hold's Sharpe in 4 of them.``"""
    oos = _mapping(result.get("oos"))
    bars = _mapping(result.get("significance_detail")).get("n_bars", oos.get("n_steps"))
    return (f"{oos.get('folds', len(_folds(result)))} folds, out of sample from {oos.get('first_bar')} to "
            f"{oos.get('last_bar')} ({bars} bars); the agent beat buy-and-hold's Sharpe in "
            f"{oos.get('folds_beating_buy_and_hold')} of them.")


def folds_table(folds: Sequence[Mapping[str, Any]]) -> str:
    """One row per fold: its training and test days, the agent's and buy-and-hold's test Sharpe, the agent's return."""
    head = ["fold", "training days", "test days", "agent Sharpe", "buy-and-hold Sharpe", "beats buy-and-hold",
            "agent total return"]
    rows = []
    for f in folds:
        ev, bh = _mapping(f.get("eval")), _mapping(_mapping(f.get("baselines")).get("buy_and_hold"))
        beats = f.get("beats_buy_and_hold")
        rows.append([f.get("fold"), _days(f.get("train")), _days(f.get("test")), ev.get("sharpe"), bh.get("sharpe"),
                     None if beats is None else ("yes" if beats else "no"), ev.get("total_return")])
    return table(head, rows, css_id="folds")


def out_of_sample_table(result: Mapping[str, Any]) -> str:
    """The agent, every baseline and the oracle (if any) over the joined test bars."""
    rows: list[tuple[str, Mapping[str, Any]]] = [("agent (DQN + meta-policy)", _mapping(result.get("oos")))]
    rows += [(name, _mapping(m)) for name, m in _mapping(result.get("baselines")).items()]
    if result.get("oracle"):
        rows.append(("oracle (planted signal)", _mapping(result["oracle"])))
    return table(["strategy", *OOS_METRICS.values()], [[name, *(m.get(k) for k in OOS_METRICS)] for name, m in rows],
                 css_id="out-of-sample", first_row_class="agent")


def significance_table(sig: Mapping[str, Any], detail: Mapping[str, Any]) -> str:
    """Each significance figure, its value and one line on how to read it (the deflated Sharpe when present)."""
    ci = _mapping(detail.get("sharpe_ci"))
    low, high = (list(sig.get("sharpe_ci") or []) + [None, None])[:2]
    confidence = sig.get("confidence")
    level = f"{confidence:.0%}" if isinstance(confidence, (int, float)) else "95%"
    rows = [
        [f"{level} Sharpe interval", _interval(low, high),
         f"the annualised Sharpe ratio over {level} of resamples of the joined bars in blocks (mean length "
         f"{ci.get('block')} bars, keeping their autocorrelation); wholly above 0: a positive Sharpe beyond luck"],
        ["PSR (Sharpe > 0)", formats.probability(sig.get("psr")),
         "probability that the true Sharpe is above 0, given the number of bars, their skewness and fat tails; "
         "0.95 or more is the usual bar"],
        ["PSR (Sharpe > buy-and-hold's)", formats.probability(sig.get("psr_vs_buy_and_hold")),
         "the same against buy-and-hold's Sharpe taken as a known number (the p-value below is the proper test)"],
        ["p-value vs buy-and-hold (paired block bootstrap)", formats.probability(sig.get("p_value_vs_buy_and_hold")),
         "chance of a Sharpe lead over buy-and-hold this large if the agent had none (both resampled with the "
         "same blocks of bars); below 0.05: significant at the 5% level"],
        ["SPA p-value vs buy-and-hold (Hansen)", formats.probability(sig.get("spa_p_value_vs_buy_and_hold")),
         "Hansen's test of superior predictive ability on the mean return per bar (not risk-adjusted); "
         "small: the agent's mean return beats buy-and-hold's beyond luck"],
    ]
    if sig.get("deflated_sharpe") is not None:
        rows.append(["deflated Sharpe", formats.probability(sig["deflated_sharpe"]),
                     f"probability that the true Sharpe exceeds what the best of {detail.get('n_trials')} "
                     "skill-less trials would reach by luck; 0.95 or more is the usual bar"])
    return table(["figure", "value", "how to read it"], rows, css_id="significance", last_column_class="how")


def fold_equity_html(names: Sequence[str], frame: pd.DataFrame, starts: Sequence[int]) -> str:
    """The joined equity curve of the agent, every baseline (and the oracle) with the fold boundaries marked:
    ``frame`` and ``starts`` from :func:`joined_fold_returns` over the folds ``names``."""
    firsts = [str(pd.Timestamp(frame["timestamp"].iloc[s]).date()) for s in starts]
    curves = {str(c): np.r_[1.0, np.cumprod(1.0 + pd.to_numeric(frame[c]).to_numpy(dtype=np.float64))]
              for c in frame.columns if c != "timestamp"}
    labels = [f"{n} {d}" for n, d in zip(names, firsts)]
    png = _png(plots.fold_equity_figure(curves, starts, labels))
    where = ", ".join(f"bar {s} ({label})" for s, label in zip(starts, labels))
    caption = (f"equity out of sample: agent vs baselines over the {len(frame)} test bars of the folds joined end "
               f"to end; fold boundaries (dashed) at {where}")
    return figure(png, caption, "walk_forward_equity")


def joined_fold_returns(fold_dirs: Sequence[Path]) -> tuple[pd.DataFrame, list[int]]:
    """Every fold's returns_eval.csv end to end, and the row at which each fold starts."""
    frames = [pd.read_csv(d / outputs.RETURNS_EVAL) for d in fold_dirs]
    if not frames:
        raise ValueError("no folds")
    starts = np.r_[0, np.cumsum([len(f) for f in frames])[:-1]].astype(int).tolist()
    return pd.concat(frames, ignore_index=True), starts


def _days(span: Any) -> str | None:
    return " .. ".join(map(str, span)) if isinstance(span, list) and span else None


def _interval(low: Any, high: Any) -> str | None:
    if _number(low) is None or _number(high) is None:
        return None
    return f"[{formats.ratio(low)}, {formats.ratio(high)}]"


# ---- several runs -----------------------------------------------------------------------
def comparison_html(runs: Sequence[Run], deflated: Mapping[Path, float | None] | None = None) -> str:
    """Runs side by side, best evaluation Sharpe first; the settings that differ between them in a second table.

    With ``deflated`` (resolved run folder -> deflated Sharpe ratio, for a sweep's runs), that column and its
    ranking too, and a line naming the best run by each.
    """
    deflated = deflated or {}
    dsr = {r.folder.resolve(): deflated.get(r.folder.resolve()) for r in runs}
    scored = sorted(((v, r) for r in runs if (v := dsr[r.folder.resolve()]) is not None), key=lambda p: -p[0])
    rank = {r.folder.resolve(): i + 1 for i, (_, r) in enumerate(scored)}
    differing = sorted(
        key
        for key in set().union(*(r.settings for r in runs))
        if key not in IGNORED_SETTINGS and len({json.dumps(r.settings.get(key)) for r in runs}) > 1
    )
    head = ["run", "eval Sharpe", *(["deflated Sharpe", "rank by deflated Sharpe"] if scored else []),
            *COMPARED.values(), "best baseline Sharpe", "oracle Sharpe", "wall time (s)"]
    rows = []
    by_sharpe = sorted(runs, key=Run.sharpe, reverse=True)
    for r in by_sharpe:
        ev = r.metrics.get("eval") or {}
        base = [_number(m.get("sharpe")) for m in (r.metrics.get("baselines") or {}).values()]
        base = [b for b in base if b is not None]
        key = r.folder.resolve()
        rows.append([
            r.name, ev.get("sharpe"), *([dsr[key], rank.get(key)] if scored else []),
            *(ev.get(k) for k in COMPARED), max(base) if base else None,
            (r.metrics.get("oracle") or {}).get("sharpe"), r.metrics.get("wall_seconds"),
        ])
    best = ""
    if scored:
        best = (f"<p>best by evaluation Sharpe: {_e(by_sharpe[0].name)}; best by deflated Sharpe: "
                f"{_e(scored[0][1].name)} (the probability that a run's true Sharpe exceeds what the best of its "
                "sweep's finished combinations would reach by luck, were none skilled)</p>\n")
    return ('<h2>Comparison</h2>\n' + best + table(head, rows, css_id="comparison")
            + settings_table([r.name for r in by_sharpe], [r.settings for r in by_sharpe], differing))


def settings_table(names: Sequence[str], settings: Sequence[Mapping[str, Any]], differing: Sequence[str]) -> str:
    """The settings that differ between the compared runs, under the metrics: one row per run (in the same
    order), its settings as ``key = value`` items that wrap to the page's width; a long list (the stocks) is
    shown as its length and first items."""
    if not differing:
        return "<p>the runs' settings are the same (their output folders aside)</p>"
    rows = []
    for name, values in zip(names, settings):
        items = " ".join(f"<code>{_e(k)} = {_e(_setting(values.get(k)))}</code>" for k in differing)
        rows.append(f"<tr><td>{_e(name)}</td><td>{items}</td></tr>")
    return ('<h3>Settings that differ between the runs</h3>\n<div class="wide"><table id="comparison-settings" '
            'class="settings"><tr><th>run</th><th>settings</th></tr>\n' + "\n".join(rows) + "</table></div>")


def _setting(value: Any) -> str:
    """A setting's value as text: a list longer than :data:`LIST_SHOWN` as ``[500 items: A, B, C, ...]``."""
    if value is None:
        return "(not set)"
    if isinstance(value, list) and len(value) > LIST_SHOWN:
        return f"[{len(value):,} items: {', '.join(map(str, value[:3]))}, ...]"
    return json.dumps(value) if isinstance(value, (list, dict, bool)) else str(value)


# ---- one run ----------------------------------------------------------------------------
def run_html(run: Run) -> str:
    """Every section of one run; a note for each damaged part left out."""
    m = run.metrics
    notes = list(run.notes)
    parts = []
    period = m.get("period")
    if period:
        parts.append(f"<p>evaluation period {_e(' .. '.join(period))}</p>")
    parts.append("<h3>Evaluation: agent vs baselines vs oracle</h3>" + evaluation_table(m))
    try:
        parts.append(tearsheet_html(run.folder, m, run.settings))
    except (OSError, ValueError, KeyError, TypeError) as exc:  # returns_eval.csv or portfolio_eval.csv damaged
        notes.append(f"the tear sheet cannot be drawn ({_reason(exc)}); it is left out")
    for name, caption in RUN_PLOTS.items():
        if name == outputs.ATTENTION_PLOT and _many_stocks(m):
            continue  # attention_html ranks the strongest links instead of the S x S heatmap
        png = _read_png(run.folder / name, notes)
        if png is not None:
            parts.append(figure(png, caption, name.removesuffix(".png")))
    if run.curve:
        train = [c for c in run.curve if c.get("phase") == "train"]
        keys = [k for k in CURVE_KEYS if any(k in c for c in train)]
        if train:
            parts.append("<h3>Training curve</h3>" + table(keys, [[c.get(k) for k in keys] for c in train]))
        parts.append(monitor_html(run.curve))
    parts.append(ensemble_html(m, run.curve))
    parts.append(attention_html(m))
    try:
        weights_png = weights_plot(run.folder / outputs.PORTFOLIO_EVAL)
    except (OSError, ValueError, TypeError) as exc:  # pandas: ParserError, EmptyDataError, bad numbers or times
        weights_png = None
        notes.append(f"portfolio_eval.csv cannot be read ({_reason(exc)}); the meta-policy weights plot is left out")
    if weights_png is not None:
        parts.append(figure(weights_png, "meta-policy: |weight| per stock over the evaluation (rolling mean; "
                                           f"the {WEIGHTS_SHOWN} largest holdings when there are more stocks)", "weights"))
    per_stock = m.get("per_stock") or {}
    if per_stock:
        keys = list(next(iter(per_stock.values())))
        stocks = table(["stock", *keys], [[s, *(v.get(k) for k in keys)] for s, v in per_stock.items()])
        if len(per_stock) > PER_STOCK_OPEN:
            stocks = f"<details><summary>every stock ({len(per_stock):,})</summary>{stocks}</details>"
        parts.append("<h3>Per stock (evaluation)</h3>" + stocks)
    parts.append(record_html(run))
    parts.append("</section>")
    head = [f'<section class="run" id="run-{_e(run.name)}"><h2>Run {_e(run.name)}</h2>']
    head += [f'<p class="note">{_e(note)}</p>' for note in notes]
    return "\n".join(head + parts)


def monitor_html(curve: Sequence[Mapping[str, Any]]) -> str:
    """The validations after each training episode, and the convergence monitor's state and interventions."""
    valid = [c for c in curve if c.get("phase") == "valid"]
    judged = [c for c in curve if "monitor" in c]
    out = ""
    if valid:
        out += "<h3>Validation (held-out end of the training period)</h3>" + table(
            ["after episode", "sharpe", "total_return", "lr"],
            [[c.get("episode"), c.get("sharpe"), c.get("total_return"), c.get("lr")] for c in valid])
    if judged:
        out += "<h3>Convergence monitor</h3>" + table(
            ["episode", "state", "intervention", "lr", "why"],
            [[c.get("episode"), c.get("monitor"), c.get("intervention"), c.get("lr"),
              "; ".join(map(str, c.get("monitor_reasons") or []))] for c in judged])
    return out


def ensemble_html(metrics: Mapping[str, Any], curve: Sequence[Mapping[str, Any]]) -> str:
    """An ensemble's members, each acting alone, beside the ensemble on the evaluation; its diversity per episode."""
    out = ""
    members = _mapping(metrics.get("ensemble")).get("members")
    if isinstance(members, list) and members:
        rows = [m for m in members if isinstance(m, Mapping)]
        keys = [k for k in rows[0] if k != "member"] if rows else []
        out += "<h3>Ensemble: each member alone vs the ensemble (evaluation)</h3>" + table(
            ["member", *keys], [[m.get("member"), *(m.get(k) for k in keys)] for m in rows])
    lines = [c for c in curve if "ensemble_disagreement" in c]
    if lines:
        keys = ["disagreement", "agreement", "q_correlation", "advantage_correlation"]
        out += "<h3>Ensemble diversity per episode</h3>" + table(
            ["phase", "episode", *keys], [[c.get("phase"), c.get("episode"), *(c.get(f"ensemble_{k}") for k in keys)]
                                          for c in lines])
    return out


def evaluation_table(metrics: Mapping[str, Any]) -> str:
    """Agent, each baseline and the oracle on the evaluation period."""
    rows: list[tuple[str, Mapping[str, Any]]] = []
    if metrics.get("eval"):
        rows.append(("agent (DQN + meta-policy)", metrics["eval"]))
    rows += list((metrics.get("baselines") or {}).items())
    if metrics.get("oracle"):
        rows.append(("oracle (planted signal)", metrics["oracle"]))
    return table(["strategy", *METRICS.values()], [[name, *(m.get(k) for k in METRICS)] for name, m in rows],
                 first_row_class="agent" if metrics.get("eval") else None)


def attention_html(metrics: Mapping[str, Any]) -> str:
    """The mean attention matrix as numbers for a few stocks (the heatmap is one of :data:`RUN_PLOTS`); past
    :data:`plots.HEATMAP_MAX_STOCKS`, each stock's top informants as a table and the strongest links ranked."""
    matrix, symbols = metrics.get("attention"), metrics.get("symbols") or []
    if not matrix:
        return ""
    names = [symbols[i] if i < len(symbols) else str(i) for i in range(len(matrix))]
    if not _many_stocks(metrics):
        rows = [[names[i], *row] for i, row in enumerate(matrix)]
        return "<h3>Attention matrix (row attends to column)</h3>" + table(["", *symbols], rows)
    m = np.asarray(matrix, dtype=np.float64)
    fig = plots.attention_links_figure(m, names, "mean attention (evaluation)")
    top = tearsheet.top_informants(m, TOP_INFORMANTS)
    head = ["stock", *(f"informant {k + 1}" for k in range(TOP_INFORMANTS))]
    rows = [[names[i], *(f"{names[j]} ({w:.3f})" for j, w in row)] for i, row in enumerate(top)]
    return ("<h3>Cross-stock attention: the strongest links</h3>"
            + figure(_png(fig), f"the {plots.STRONGEST_LINKS} strongest links between two of the {len(names):,} "
                     "stocks (attending <- informing), ranked; a heatmap of the whole matrix would say nothing",
                     "attention_links")
            + f"<details><summary>each stock's top {TOP_INFORMANTS} informants (mean attention weight)</summary>"
            + table(head, rows, css_id="top-informants", kinds=[formats.PLAIN] * len(head)) + "</details>")


def _many_stocks(metrics: Mapping[str, Any]) -> bool:
    """Whether the run's attention matrix is too large for a heatmap (or a table of every weight)."""
    matrix = metrics.get("attention")
    return bool(matrix) and len(matrix) > plots.HEATMAP_MAX_STOCKS


def record_html(run: Run) -> str:
    """Run record: code commit, data fingerprint, versions, host and times, plus the whole config."""
    rec = run.record
    code, data = _mapping(rec.get("code")), _mapping(rec.get("data"))
    rows = [
        ["git commit", code.get("commit")],
        ["uncommitted changes", code.get("dirty")],
        ["seed", rec.get("seed")],
        *([f"data {k}", v] for k, v in data.items()),
        *([f"version {k}", v] for k, v in _mapping(rec.get("versions")).items()),
        ["host", rec.get("hostname")],
        *([f"where {k}", v] for k, v in _mapping(rec.get("where")).items()),
        ["started", rec.get("started")],
        ["finished", rec.get("finished")],
        ["wall time (s)", run.metrics.get("wall_seconds")],
        ["mode", run.metrics.get("mode")],
    ]
    parts = ["<h3>Run record</h3>" + table(["", "value"], rows)]
    if run.config_text:
        parts.append(f"<details><summary>config.toml</summary><pre>{_e(run.config_text)}</pre></details>")
    return "\n".join(parts)


def weights_plot(portfolio_csv: Path) -> bytes | None:
    """PNG of each stock's |meta-policy weight| over the evaluation (rolling mean), or None without the file."""
    if not portfolio_csv.is_file():
        return None
    frame = pd.read_csv(portfolio_csv)  # raises OSError or ValueError (ParserError, EmptyDataError, not UTF-8)
    columns = [c for c in frame.columns if str(c).startswith("weight_")]
    if frame.empty or not columns:
        return None
    if len(columns) > WEIGHTS_SHOWN:  # a legend of 500 names says nothing: the largest holdings
        mean = {c: float(pd.to_numeric(frame[c]).abs().mean()) for c in columns}
        columns = sorted(columns, key=lambda c: -mean[c])[:WEIGHTS_SHOWN]
    window = max(1, len(frame) // 50)
    curves = {
        str(c).removeprefix("weight_"): pd.to_numeric(frame[c]).abs().rolling(window, min_periods=1).mean().to_numpy()
        for c in columns
    }
    times = pd.to_datetime(frame["timestamp"], format="mixed").to_numpy() if "timestamp" in frame else None
    fig = plots._plot_curves(curves, times, highlight="", ylabel="mean |weight|", title="Meta-policy weights")
    return _png(fig)


# ---- reading a run's files --------------------------------------------------------------
_DAMAGED = "the file is damaged: restore it from a copy, or run again into a new --output folder"


def _read_text(path: Path) -> str:
    """A required file's text; a one-line UserError naming it when it cannot be read or is not UTF-8."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path} is not UTF-8 text (byte {exc.start} cannot be decoded)", _DAMAGED) from None
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror or exc}", "check the file's permissions") from None


def _read_optional_json(path: Path, what: str, notes: list[str]) -> Any:
    """An optional JSON file's value; None (with a note naming ``what`` is left out) when absent or damaged."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        notes.append(f"{path.name} is not UTF-8 text; {what} is left out")
    except OSError as exc:
        notes.append(f"{path.name} cannot be read ({_reason(exc)}); {what} is left out")
    except ValueError as exc:
        notes.append(f"{path.name} is not valid JSON ({_reason(exc)}); {what} is left out")
    return None


def _read_curve(path: Path, notes: list[str]) -> list[dict[str, Any]]:
    """The JSON-object lines of ``metrics.jsonl``; damaged lines (cut short, not objects) are left out with a note."""
    if not path.is_file():
        return []
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, ValueError) as exc:
        notes.append(f"{path.name} cannot be read ({_reason(exc)}); the training curve is left out")
        return []
    lines, bad = [], []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except ValueError:
            value = None
        if isinstance(value, dict):
            lines.append(value)
        else:
            bad.append(number)
    if bad:
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        notes.append(f"{path.name}: line {bad[0]}{more} is not a JSON object (cut short or damaged); "
                     f"{'they are' if more else 'it is'} left out of the training curve")
    return lines


def _read_png(path: Path, notes: list[str]) -> bytes | None:
    """A plot's bytes; None when absent, and (with a note) when unreadable or not a PNG image."""
    if not path.is_file():
        return None
    try:
        data = path.read_bytes()
    except OSError as exc:
        notes.append(f"{path.name} cannot be read ({_reason(exc)}); the plot is left out")
        return None
    if not data.startswith(PNG_SIGNATURE):
        notes.append(f"{path.name} is not a PNG image; the plot is left out")
        return None
    return data


def _clean_metrics(metrics: dict[str, Any], notes: list[str]) -> dict[str, Any]:
    """``metrics`` with each section of the wrong type dropped (and noted), so rendering never trips on one."""
    out = dict(metrics)

    def drop(key: str, why: str) -> None:
        notes.append(f"metrics.json: '{key}' {why}; it is left out")
        out.pop(key, None)

    for key in OBJECT_SECTIONS:
        if out.get(key) is not None and not isinstance(out[key], dict):
            drop(key, f"is {_kind(out[key])}, not a JSON object")
    for key in TABLE_SECTIONS:
        value = out.get(key)
        if value is None:
            continue
        if not isinstance(value, dict):
            drop(key, f"is {_kind(value)}, not a JSON object")
            continue
        bad = [name for name, entry in value.items() if not isinstance(entry, dict)]
        if bad:
            notes.append(f"metrics.json: '{key}' entries {', '.join(map(repr, bad))} are not JSON objects; "
                         "they are left out")
            out[key] = {name: entry for name, entry in value.items() if isinstance(entry, dict)}
    for key in ("period", "symbols"):
        value = out.get(key)
        if value is not None and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            drop(key, f"is {_kind(value)}, not a list of names")
    attention = out.get("attention")
    if attention is not None and not (isinstance(attention, list) and all(isinstance(r, list) for r in attention)):
        drop("attention", "is not a matrix (a list of rows)")
    return out


def _kind(value: Any) -> str:
    """What a JSON value is, in words: ``a list``, ``a number``."""
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "a number",
             float: "a number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _number(value: Any) -> float | None:
    """``value`` as a float when it is a JSON number, else None."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


def _reason(exc: BaseException) -> str:
    """A short, one-line reason for a reading error."""
    if isinstance(exc, UnicodeDecodeError):
        return "not UTF-8 text"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    lines = str(exc).strip().splitlines()
    return (lines[0][:160] if lines else "") or type(exc).__name__
