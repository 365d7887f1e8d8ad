"""One self-contained HTML report over one or more run folders (``parallel-dqn report``).

Everything the report shows is read back from what a run wrote (``metrics.json``,
``metrics.jsonl``, ``portfolio_eval.csv``, the PNG plots, ``config.toml``, ``run.json``), so
a report can be made from any finished run, anywhere, later. The file stands alone: images
are embedded as base64 ``data:`` URIs, the CSS is inline, there is no script and no link to
anything outside it; every piece of text from a run is HTML-escaped.
"""

from __future__ import annotations

import base64
import html
import io
import json
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from parallel_dqn.config import flatten_settings
from parallel_dqn.errors import UserError
from parallel_dqn.evaluation import plots
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
    "equity_eval.png": "equity: agent vs baselines (evaluation)",
    "drawdown_eval.png": "drawdown (evaluation)",
    "training_curve.png": "training curve",
    "attention.png": "cross-stock attention (row attends to column)",
}
#: settings that always differ between runs and say nothing about the method
IGNORED_SETTINGS = frozenset({"run.output", "run.progress"})
#: training-curve columns shown in the table, when present
CURVE_KEYS = ("episode", "total_reward", "total_return", "sharpe", "loss", "epsilon", "elapsed_s")

CSS = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1200px}
h1,h2,h3{color:#113}table{border-collapse:collapse;margin:.5em 0 1.5em}
th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#eef}
td:first-child,th:first-child{text-align:left}tr.agent td{font-weight:bold}
img{max-width:100%;display:block;margin:.5em 0}figure{margin:0 0 1.5em}
pre{background:#f6f6f6;padding:.8em;overflow-x:auto}section.run{border-top:2px solid #99b;margin-top:2em}
"""


class Run:
    """One run folder's outputs, read once."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.name = folder.resolve().name
        metrics_path = folder / "metrics.json"
        if not metrics_path.is_file():
            raise UserError(f"{folder} has no metrics.json, so it is not a finished run", "give a run's --output folder")
        self.metrics: dict[str, Any] = json.loads(metrics_path.read_text())
        self.curve = _read_jsonl(folder / "metrics.jsonl")
        config_path = folder / "config.toml"
        self.config_text = config_path.read_text() if config_path.is_file() else ""
        self.settings = flatten_settings(tomllib.loads(self.config_text)) if self.config_text else {}
        self.record: dict[str, Any] = self.metrics.get("run") or _read_json(folder / "run.json") or {}

    def sharpe(self) -> float:
        """The agent's evaluation Sharpe (-inf when the run has none, so it sorts last)."""
        value = (self.metrics.get("eval") or {}).get("sharpe")
        return float(value) if value is not None else float("-inf")


def write_report(run_dirs: Sequence[Path], out: Path) -> Path:
    """Write the HTML report over ``run_dirs`` to ``out`` (atomically); return its path."""
    runs = [Run(Path(d)) for d in run_dirs]
    if not runs:
        raise UserError("no run folders to report on", "give at least one run's --output folder")
    title = "parallel-dqn report: " + ", ".join(r.name for r in runs)
    body = [f"<h1>{_e(title)}</h1>"]
    if len(runs) > 1:
        body.append(comparison_html(runs))
    body += [run_html(r) for r in runs]
    page = (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
        f"<style>{CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    return write_atomically(out, lambda tmp: tmp.write_text(page, encoding="utf-8"))


# ---- several runs -----------------------------------------------------------------------
def comparison_html(runs: Sequence[Run]) -> str:
    """Runs side by side, best evaluation Sharpe first, with the settings that differ between them."""
    differing = sorted(
        key
        for key in set().union(*(r.settings for r in runs))
        if key not in IGNORED_SETTINGS and len({json.dumps(r.settings.get(key)) for r in runs}) > 1
    )
    head = ["run", "eval Sharpe", "total return", "max drawdown", "best baseline Sharpe", "oracle Sharpe",
            *differing, "wall time (s)"]
    rows = []
    for r in sorted(runs, key=Run.sharpe, reverse=True):
        ev = r.metrics.get("eval") or {}
        base = [m.get("sharpe") for m in (r.metrics.get("baselines") or {}).values() if m.get("sharpe") is not None]
        rows.append([
            r.name, ev.get("sharpe"), ev.get("total_return"), ev.get("max_drawdown"),
            max(base) if base else None, (r.metrics.get("oracle") or {}).get("sharpe"),
            *(r.settings.get(k) for k in differing), r.metrics.get("wall_seconds"),
        ])
    return '<h2>Comparison</h2>\n' + table(head, rows, css_id="comparison")


# ---- one run ----------------------------------------------------------------------------
def run_html(run: Run) -> str:
    """Every section of one run."""
    m = run.metrics
    parts = [f'<section class="run" id="run-{_e(run.name)}"><h2>Run {_e(run.name)}</h2>']
    period = m.get("period")
    if period:
        parts.append(f"<p>evaluation period {_e(' .. '.join(period))}</p>")
    parts.append("<h3>Evaluation: agent vs baselines vs oracle</h3>" + evaluation_table(m))
    for name, caption in RUN_PLOTS.items():
        if (run.folder / name).is_file():
            parts.append(figure((run.folder / name).read_bytes(), caption, name.removesuffix(".png")))
    if run.curve:
        train = [c for c in run.curve if c.get("phase") == "train"]
        keys = [k for k in CURVE_KEYS if any(k in c for c in train)]
        if train:
            parts.append("<h3>Training curve</h3>" + table(keys, [[c.get(k) for k in keys] for c in train]))
    parts.append(attention_html(m))
    weights_png = weights_plot(run.folder / "portfolio_eval.csv")
    if weights_png is not None:
        parts.append(figure(weights_png, "meta-policy: |weight| per stock over the evaluation (rolling mean)", "weights"))
    per_stock = m.get("per_stock") or {}
    if per_stock:
        keys = list(next(iter(per_stock.values())))
        parts.append("<h3>Per stock (evaluation)</h3>"
                     + table(["stock", *keys], [[s, *(v.get(k) for k in keys)] for s, v in per_stock.items()]))
    parts.append(record_html(run))
    parts.append("</section>")
    return "\n".join(parts)


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
    """The mean attention matrix as numbers (the heatmap is one of :data:`RUN_PLOTS`)."""
    matrix, symbols = metrics.get("attention"), metrics.get("symbols") or []
    if not matrix:
        return ""
    rows = [[symbols[i] if i < len(symbols) else i, *row] for i, row in enumerate(matrix)]
    return "<h3>Attention matrix (row attends to column)</h3>" + table(["", *symbols], rows)


def record_html(run: Run) -> str:
    """Run record: code commit, data fingerprint, versions, host and times, plus the whole config."""
    rec = run.record
    code, data = rec.get("code") or {}, rec.get("data") or {}
    rows = [
        ["git commit", code.get("commit")],
        ["uncommitted changes", code.get("dirty")],
        ["seed", rec.get("seed")],
        *([f"data {k}", v] for k, v in data.items()),
        *([f"version {k}", v] for k, v in (rec.get("versions") or {}).items()),
        ["host", rec.get("hostname")],
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
    frame = pd.read_csv(portfolio_csv)
    columns = [c for c in frame.columns if c.startswith("weight_")]
    if frame.empty or not columns:
        return None
    window = max(1, len(frame) // 50)
    curves = {c.removeprefix("weight_"): frame[c].abs().rolling(window, min_periods=1).mean().to_numpy() for c in columns}
    times = pd.to_datetime(frame["timestamp"]).to_numpy() if "timestamp" in frame else None
    fig = plots._plot_curves(curves, times, highlight="", ylabel="mean |weight|", title="Meta-policy weights")
    return _png(fig)


# ---- HTML pieces ------------------------------------------------------------------------
def table(head: Sequence[Any], rows: Iterable[Sequence[Any]], css_id: str | None = None,
          first_row_class: str | None = None) -> str:
    """An HTML table; every cell escaped, floats to at most 6 decimals (as metrics.json stores them)."""
    ident = f' id="{_e(css_id)}"' if css_id else ""
    out = [f"<table{ident}><tr>" + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr>"]
    for i, row in enumerate(rows):
        cls = f' class="{_e(first_row_class)}"' if first_row_class and i == 0 else ""
        out.append(f"<tr{cls}>" + "".join(f"<td>{_cell(v)}</td>" for v in row) + "</tr>")
    return "\n".join(out) + "</table>"


def figure(png: bytes, caption: str, alt: str) -> str:
    """An embedded PNG (base64 data URI) with a caption."""
    data = base64.b64encode(png).decode("ascii")
    return (f'<figure><img alt="{_e(alt)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{_e(caption)}</figcaption></figure>")


def _cell(value: Any) -> str:
    if value is None:
        return "&ndash;"
    if isinstance(value, (list, dict)):
        return _e(json.dumps(value))
    if isinstance(value, float):  # metrics are stored rounded to 6 digits: the same text as metrics.json
        return _e(str(round(value, 6)))
    return _e(str(value))


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.is_file() else None


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
