"""One self-contained HTML report over one or more run folders (``parallel-dqn report``).

Everything the report shows is read back from what a run wrote (``metrics.json``,
``metrics.jsonl``, ``portfolio_eval.csv``, the PNG plots, ``config.toml``, ``run.json``), so
a report can be made from any finished run, anywhere, later. The file stands alone: images
are embedded as base64 ``data:`` URIs, the CSS is inline, there is no script and no link to
anything outside it; every piece of text from a run is HTML-escaped.

Damaged files: ``metrics.json`` and ``config.toml`` are needed, so one that cannot be read (not
UTF-8 text, not JSON / TOML, not a JSON object) is a one-line UserError naming it, and nothing is
written. A damaged optional part (a plot that is not a PNG, an unreadable ``portfolio_eval.csv``,
bad lines of ``metrics.jsonl``, a section of ``metrics.json`` of the wrong type, ``run.json``) is
left out with a note in the run's section.
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

from parallel_dqn import outputs
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
    outputs.EQUITY_PLOT: "equity: agent vs baselines (evaluation)",
    outputs.DRAWDOWN_PLOT: "drawdown (evaluation)",
    outputs.CURVE_PLOT: "training curve",
    outputs.ATTENTION_PLOT: "cross-stock attention (row attends to column)",
}
#: settings that always differ between runs and say nothing about the method
IGNORED_SETTINGS = frozenset({"run.output", "run.progress"})
#: training-curve columns shown in the table, when present
CURVE_KEYS = ("episode", "total_reward", "total_return", "sharpe", "loss", "epsilon", "elapsed_s")
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
td:first-child,th:first-child{text-align:left}tr.agent td{font-weight:bold}
img{max-width:100%;display:block;margin:.5em 0}figure{margin:0 0 1.5em}
pre{background:#f6f6f6;padding:.8em;overflow-x:auto}section.run{border-top:2px solid #99b;margin-top:2em}
p.note{background:#fff4e0;border-left:4px solid #e90;padding:.4em .8em}
"""


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
        base = [_number(m.get("sharpe")) for m in (r.metrics.get("baselines") or {}).values()]
        base = [b for b in base if b is not None]
        rows.append([
            r.name, ev.get("sharpe"), ev.get("total_return"), ev.get("max_drawdown"),
            max(base) if base else None, (r.metrics.get("oracle") or {}).get("sharpe"),
            *(r.settings.get(k) for k in differing), r.metrics.get("wall_seconds"),
        ])
    return '<h2>Comparison</h2>\n' + table(head, rows, css_id="comparison")


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
    for name, caption in RUN_PLOTS.items():
        png = _read_png(run.folder / name, notes)
        if png is not None:
            parts.append(figure(png, caption, name.removesuffix(".png")))
    if run.curve:
        train = [c for c in run.curve if c.get("phase") == "train"]
        keys = [k for k in CURVE_KEYS if any(k in c for c in train)]
        if train:
            parts.append("<h3>Training curve</h3>" + table(keys, [[c.get(k) for k in keys] for c in train]))
    parts.append(attention_html(m))
    try:
        weights_png = weights_plot(run.folder / outputs.PORTFOLIO_EVAL)
    except (OSError, ValueError, TypeError) as exc:  # pandas: ParserError, EmptyDataError, bad numbers or times
        weights_png = None
        notes.append(f"portfolio_eval.csv cannot be read ({_reason(exc)}); the meta-policy weights plot is left out")
    if weights_png is not None:
        parts.append(figure(weights_png, "meta-policy: |weight| per stock over the evaluation (rolling mean)", "weights"))
    per_stock = m.get("per_stock") or {}
    if per_stock:
        keys = list(next(iter(per_stock.values())))
        parts.append("<h3>Per stock (evaluation)</h3>"
                     + table(["stock", *keys], [[s, *(v.get(k) for k in keys)] for s, v in per_stock.items()]))
    parts.append(record_html(run))
    parts.append("</section>")
    head = [f'<section class="run" id="run-{_e(run.name)}"><h2>Run {_e(run.name)}</h2>']
    head += [f'<p class="note">{_e(note)}</p>' for note in notes]
    return "\n".join(head + parts)


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
    code, data = _mapping(rec.get("code")), _mapping(rec.get("data"))
    rows = [
        ["git commit", code.get("commit")],
        ["uncommitted changes", code.get("dirty")],
        ["seed", rec.get("seed")],
        *([f"data {k}", v] for k, v in data.items()),
        *([f"version {k}", v] for k, v in _mapping(rec.get("versions")).items()),
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
    frame = pd.read_csv(portfolio_csv)  # raises OSError or ValueError (ParserError, EmptyDataError, not UTF-8)
    columns = [c for c in frame.columns if str(c).startswith("weight_")]
    if frame.empty or not columns:
        return None
    window = max(1, len(frame) // 50)
    curves = {
        str(c).removeprefix("weight_"): pd.to_numeric(frame[c]).abs().rolling(window, min_periods=1).mean().to_numpy()
        for c in columns
    }
    times = pd.to_datetime(frame["timestamp"], format="mixed").to_numpy() if "timestamp" in frame else None
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
