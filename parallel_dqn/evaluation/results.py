"""Rank 0's record of a run: per-episode portfolios, metrics, baselines, plots, the model file.

The run hands every accounted episode to :meth:`RunRecorder.on_episode` (it is one of the run's
observers); :meth:`RunRecorder.finish` writes the final outputs. Files in the output folder
(names in :mod:`parallel_dqn.outputs`):

* ``portfolio_ep{N}.csv`` per training episode and ``portfolio_eval.csv``; ``returns_eval.csv`` (every
  strategy's return per evaluation bar);
* ``metrics.jsonl``: one line per episode (the training curve) and one for the evaluation;
* ``metrics.json``: ``{"eval", "baselines", "oracle", "per_stock", "train", "counters", ...}``;
* ``trained_model.pth``; plots ``equity_eval.png``, ``drawdown_eval.png``,
  ``attention.png``, ``training_curve.png``;
* ``run.json``: the run record (code commit, data fingerprint, seed, versions; see
  :mod:`parallel_dqn.telemetry.record`), also under ``"run"`` in ``metrics.json``;
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from parallel_dqn import outputs as output_files
from parallel_dqn.config import Config
from parallel_dqn.data.synthetic import oracle_expected_returns
from parallel_dqn.evaluation.baselines import run_baselines
from parallel_dqn.evaluation.episode import EpisodeBook, EpisodeReport, Portfolio, rounded
from parallel_dqn.evaluation.metrics import performance_metrics
from parallel_dqn.files import write_atomically
from parallel_dqn.market.step import POSITIONS
from parallel_dqn.model.saved import save_model

log = logging.getLogger(__name__)


class RunRecorder:
    """Turns accounted episodes into files and figures; owns nothing that training uses.

    A run observer (:class:`parallel_dqn.training.observers.RunObserver`): ``on_market`` once the
    market is known, ``on_episode`` for every accounted episode, then :meth:`finish`.
    """

    def __init__(self, cfg: Config, output: Path) -> None:
        self.cfg = cfg
        self.output = output
        self.info: Any = None
        self.curve: list[dict[str, Any]] = []
        self.valid: list[dict[str, Any]] = []  # the validation lines, one after each training episode's (if any)
        self.eval: dict[str, Any] | None = None
        self.eval_curves: dict[str, np.ndarray] = {}
        self.eval_timestamps: np.ndarray | None = None
        self.eval_rows: slice | None = None  # the evaluation's clock rows (its bars and the one after)
        self._jsonl_started = False
        self.started = time.time()  # wall-clock start, for the run record

    def on_market(self, info: Any) -> None:
        self.info = info

    # ---- per episode --------------------------------------------------------------
    def on_episode(self, report: EpisodeReport) -> None:
        """Write one accounted episode: its portfolio CSV and curve line; for the evaluation, the baselines too."""
        outcome, pf, line = report.outcome, report.portfolio, report.line
        info = self.info
        if outcome.phase == "train":
            self._write_csv(pf, info, output_files.portfolio_episode(outcome.episode), outcome.book)
            self.curve.append(line)
            log.info(
                "episode %d: reward %.4f return %.4f sharpe %.2f loss %.4f eps %.3f",
                outcome.episode, line["total_reward"], line["total_return"], line["sharpe"], line["loss"],
                line["epsilon"],
            )
        elif outcome.phase == "valid":
            self.valid.append(line)
            log.info("validation after episode %d: return %.4f sharpe %.2f%s", outcome.episode, line["total_return"],
                     line["sharpe"], f" ({line['monitor']})" if "monitor" in line else "")
        else:
            self._write_csv(pf, info, output_files.PORTFOLIO_EVAL, outcome.book)
            self._evaluate(info, outcome.book, pf, report.metrics, report.bars_per_year)
            if "ensemble_members" in line:  # an ensemble: its diversity and every member's result beside its own
                self.eval["ensemble"] = {k.removeprefix("ensemble_"): v for k, v in line.items()
                                         if k.startswith("ensemble_")}
            log.info("evaluation: return %.4f sharpe %.2f", line["total_return"], line["sharpe"])
        self._append_jsonl(line)

    def _evaluate(self, info: Any, book: EpisodeBook, pf: Portfolio, metrics: dict, bpy: float) -> None:
        """Agent vs baselines (and the planted-signal oracle) on the same rows and costs."""
        ext = slice(book.start, book.stop + 1)
        expected = None
        if info.structure is not None:
            expected = oracle_expected_returns(info.log_returns, info.symbols, info.structure, info.timestamps)[ext]
        baselines = run_baselines(
            info.close[ext], info.log_returns[ext], info.tradeable[ext], self.cfg.market.cost_bps, bpy,
            self.cfg.run.seed, expected_next_returns=expected,
        )
        base_metrics, base_returns = dict(baselines.metrics), dict(baselines.returns)
        oracle = base_metrics.pop("oracle", None)
        oracle_returns = base_returns.pop("oracle", None)
        per_stock = {}
        growth = np.expm1(info.log_returns[book.start + 1 : book.stop + 1])
        pos = POSITIONS[book.actions]
        for s, sym in enumerate(info.symbols):
            prev = np.r_[0.0, pos[:-1, s]]
            stock_ret = pos[:, s] * growth[:, s] - self.cfg.market.cost_bps * 1e-4 * np.abs(pos[:, s] - prev)
            m = performance_metrics(stock_ret, bpy, rewards=book.rewards[:, s])
            per_stock[sym] = {k: m[k] for k in ("total_reward", "total_return", "sharpe", "hit_rate")}
            per_stock[sym]["mean_weight"] = float(np.abs(pf.weights[:, s]).mean())
        self.eval = {
            "eval": metrics,
            "baselines": {k: rounded(v) for k, v in base_metrics.items()},
            "oracle": rounded(oracle) if oracle else None,
            "per_stock": {k: rounded(v) for k, v in per_stock.items()},
            "period": [_stamp(info.timestamps[book.start]), _stamp(info.timestamps[book.stop])],
            "annualisation": {"bars_per_day": info.bars_per_day, "bars_per_year": bpy},
        }
        self.eval_timestamps = info.timestamps[ext]
        self.eval_rows = ext
        self.eval_curves = {"agent": pf.returns, **base_returns}
        if oracle_returns is not None:
            self.eval_curves["oracle"] = oracle_returns
        # every strategy's return per decision bar: what a walk-forward joins across folds and tests against
        table = pd.DataFrame({"timestamp": pd.to_datetime(pf.timestamps, utc=True), **self.eval_curves})
        write_atomically(self.output / output_files.RETURNS_EVAL, lambda tmp: table.to_csv(tmp, index=False))

    # ---- checkpoints --------------------------------------------------------------
    def checkpoint_state(self) -> dict[str, Any]:
        """The training curve so far and the run's start (a checkpoint never holds the evaluation)."""
        state: dict[str, Any] = {"curve": self.curve, "started": self.started}
        if self.valid:
            state["valid"] = self.valid
        return state

    def restore_checkpoint(self, state: dict[str, Any]) -> None:
        """Continue a run: its curve, its start time, and ``metrics.jsonl`` cut back to the checkpoint."""
        self.curve[:] = state["curve"]
        self.valid[:] = state.get("valid", [])
        self.started = float(state["started"])
        validation = {line["episode"]: line for line in self.valid}
        written = [x for line in self.curve for x in (line, validation.get(line["episode"])) if x is not None]
        lines = "".join(json.dumps(_jsonable(line)) + "\n" for line in written)
        write_atomically(self.output / output_files.CURVE, lambda tmp: tmp.write_text(lines))
        self._jsonl_started = True

    # ---- end of run ---------------------------------------------------------------
    def finish(self, server: Any, record: dict[str, Any], extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """Write the model, metrics.json (with the run ``record``, also as run.json) and the plots.

        Returns metrics.json's content.
        """
        info = self.info
        out = self.output
        attention = server.attention
        save_model(
            out / output_files.MODEL,
            {
                **server.state(),
                "config": self.cfg.to_dict(),
                "symbols": list(info.symbols),
                "n_features": info.n_features,
                "feature_stats": info.feature_stats,
                "reward_scale": info.reward_scale,
                "return_std": info.return_std,
                "bars_per_day": info.bars_per_day,
                "attention": torch.from_numpy(attention) if attention is not None else None,
                "train_days": _days(info.timestamps, info.train_rows),
                **({"regime": info.extra["regime"]["model"]} if "regime" in info.extra else {}),
            },
        )
        result: dict[str, Any] = {
            **(self.eval or {}),
            "train": self.curve[-1] if self.curve else None,
            **({"validation": self.valid[-1], "monitor": monitor_table(self.curve + self.valid)} if self.valid
               or any("monitor" in line for line in self.curve) else {}),
            "counters": {**server.counters.as_dict(), "per_worker": server.counters.per_worker_dict()},
            "symbols": list(info.symbols),
            "attention": attention.round(4).tolist() if attention is not None else None,
            **(extra or {}),
        }
        result["run"] = record
        _write_json(out / output_files.RECORD, record)
        _write_json(out / output_files.METRICS, result)
        write_atomically(out / output_files.CONFIG, self.cfg.write)
        self._plots(info, attention)
        return result

    def _plots(self, info: Any, attention: np.ndarray | None) -> None:
        # matplotlib takes 0.7 s to import: when a run ends, not before its first step
        from parallel_dqn.evaluation import plots

        if self.eval_curves and self.eval_timestamps is not None:
            equity = {k: np.r_[1.0, np.cumprod(1.0 + v)] for k, v in self.eval_curves.items()}
            probs = _regime_probs(info, self.eval_rows) if self.eval_rows is not None else None
            regimes = None if probs is None else probs.argmax(axis=1)
            plots.plot_equity(equity, self.eval_timestamps, self.output / output_files.EQUITY_PLOT, regimes=regimes)
            plots.plot_drawdown(equity, self.eval_timestamps, self.output / output_files.DRAWDOWN_PLOT)
        if attention is not None:
            plots.plot_attention(
                attention, list(info.symbols), self.output / output_files.ATTENTION_PLOT, "mean attention (evaluation)"
            )
        if self.curve:
            keys = [k for k in ("total_reward", "sharpe", "loss", "epsilon") if k in self.curve[0]]
            plots.plot_training_curve(self.curve, keys, self.output / output_files.CURVE_PLOT)

    def _write_csv(self, pf: Portfolio, info: Any, name: str, book: EpisodeBook) -> None:
        """The portfolio per step; with ``[regime]`` on, the most likely regime and each regime's filtered
        probability at the step's bar too."""
        table = pf.table(info.symbols)
        probs = _regime_probs(info, slice(book.start, book.stop))
        if probs is not None:
            table["regime"] = probs.argmax(axis=1)
            for k in range(probs.shape[1]):
                table[f"regime_p{k}"] = probs[:, k].round(6)
        write_atomically(self.output / name, lambda tmp: table.to_csv(tmp, index=False))

    def _append_jsonl(self, line: dict[str, Any]) -> None:
        mode = "a" if self._jsonl_started else "w"  # a new run starts the file afresh
        self._jsonl_started = True
        with open(self.output / output_files.CURVE, mode) as f:
            f.write(json.dumps(_jsonable(line)) + "\n")


def _regime_probs(info: Any, rows: slice) -> np.ndarray | None:
    """The regime detector's filtered probabilities ``[n, K]`` at clock ``rows`` (None without ``[regime]``)."""
    regime = getattr(info, "extra", {}).get("regime")
    return None if regime is None else np.asarray(regime["probs"])[rows]


def monitor_table(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The convergence monitor's verdicts in episode order: episode, state, reasons, intervention, lr, score."""
    rows = []
    for line in sorted((x for x in lines if "monitor" in x), key=lambda x: x["episode"]):
        rows.append({"episode": line["episode"], "state": line["monitor"], "reasons": line.get("monitor_reasons", []),
                     "intervention": line.get("intervention"), "lr": line.get("lr"),
                     "validation_sharpe": line["sharpe"] if line["phase"] == "valid" else None})
    return rows


def _days(timestamps: np.ndarray, rows: tuple[int, int]) -> list[str] | None:
    """The first and last UTC day of clock rows ``[lo, hi)`` (None when empty): an evaluation must not overlap them."""
    lo, hi = rows
    if hi <= lo:
        return None
    return [str(timestamps[lo].astype("datetime64[D]")), str(timestamps[hi - 1].astype("datetime64[D]"))]


def _stamp(ts: np.datetime64) -> str:
    return str(np.datetime_as_string(ts, unit="m")) + "Z"


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, float) and not np.isfinite(x):
        return None
    return x


def _write_json(path: Path, data: Any) -> None:
    write_atomically(path, lambda tmp: tmp.write_text(json.dumps(_jsonable(data), indent=2)))
