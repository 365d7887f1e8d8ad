"""Rank 0's record of a run: per-episode portfolios, metrics, baselines, plots, the model file.

The parameter server hands every finished episode to :meth:`RunRecorder.on_episode`;
:meth:`RunRecorder.finish` writes the final outputs. Files in the output folder:

* ``portfolio_ep{N}.csv`` per training episode and ``portfolio_eval.csv``;
* ``metrics.jsonl``: one line per episode (the training curve) and one for the evaluation;
* ``metrics.json``: ``{"eval", "baselines", "oracle", "per_stock", "train", "counters", ...}``;
* ``trained_model.pth``; plots ``equity_eval.png``, ``drawdown_eval.png``,
  ``attention.png``, ``training_curve.png``;
* ``run.json``: the run record (code commit, data fingerprint, seed, versions; see
  :mod:`parallel_dqn.telemetry.record`), also under ``"run"`` in ``metrics.json``;
* ``tensorboard/``: the same curve as TensorBoard scalars (:mod:`parallel_dqn.telemetry.tensorboard`).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from parallel_dqn.config import Config
from parallel_dqn.data.store import open_store
from parallel_dqn.data.synthetic import oracle_expected_returns
from parallel_dqn.evaluation import plots
from parallel_dqn.evaluation.baselines import run_baselines
from parallel_dqn.evaluation.episode import EpisodeBook, Portfolio, build_portfolio
from parallel_dqn.evaluation.metrics import performance_metrics
from parallel_dqn.evaluation.portfolio import bars_per_year
from parallel_dqn.model.meta_policy import decision_features
from parallel_dqn.model.saved import save_model
from parallel_dqn.files import write_atomically
from parallel_dqn.telemetry.tensorboard import TENSORBOARD_DIR, ScalarLog
from parallel_dqn.telemetry.record import run_record, stock_day_files
from parallel_dqn.market.step import POSITIONS

log = logging.getLogger(__name__)


class RunRecorder:
    """Turns finished episodes into files and figures; owns nothing the server needs."""

    def __init__(self, cfg: Config, output: Path, progress: Any = None) -> None:
        self.cfg = cfg
        self.output = output
        self.progress = progress
        self.curve: list[dict[str, Any]] = []
        self.eval: dict[str, Any] | None = None
        self.eval_curves: dict[str, np.ndarray] = {}
        self.eval_timestamps: np.ndarray | None = None
        self._jsonl_started = False
        self.started = time.time()  # wall-clock start, for the run record
        self.tensorboard = ScalarLog(output / TENSORBOARD_DIR)

    # ---- per episode --------------------------------------------------------------
    def on_episode(self, server: Any, episode: int, phase: str, book: EpisodeBook, summary: dict) -> None:
        """Account one finished episode (called by the parameter server)."""
        info = server.info
        rows = slice(book.start, book.stop)
        r_dec = info.log_returns[rows]
        r_ext = info.log_returns[book.start : book.stop + 1]
        feats = decision_features(book.q, book.actions, r_dec, self.cfg.meta.perf_halflife, info.return_std)
        if self.cfg.meta.enabled:
            weights = server.meta.weights(feats, book.actions)
        else:
            weights = POSITIONS[book.actions] / len(info.symbols)
        ext = slice(book.start, book.stop + 1)
        pf = build_portfolio(
            weights, book.actions, book.rewards, info.timestamps[rows], r_ext, info.tradeable[ext], self.cfg.market.cost_bps
        )
        bpy = bars_per_year(info.bars_per_day)
        metrics = performance_metrics(
            pf.returns, bpy, np.vstack([pf.weights, np.zeros((1, pf.weights.shape[1]))]),
            rewards=pf.rewards.sum(axis=1), log_returns=r_ext,
        )
        line: dict[str, Any] = {"phase": phase, "episode": episode, **_round(metrics), **summary}
        line["elapsed_s"] = round(time.perf_counter() - server.setup_time, 3)  # since the market was loaded
        if phase == "train":
            line["epsilon"] = book.epsilon
            line["loss"] = server.recent_loss()
            line["meta_in_sample_sharpe"] = (
                server.meta.fit(feats, book.actions, r_dec, self.cfg.market.cost_bps) if self.cfg.meta.enabled else None
            )
            self._write_csv(pf, info.symbols, f"portfolio_ep{episode}.csv")
            self.curve.append(line)
            log.info(
                "episode %d: reward %.4f return %.4f sharpe %.2f loss %.4f eps %.3f",
                episode, metrics["total_reward"], metrics["total_return"], metrics["sharpe"], line["loss"], book.epsilon,
            )
        else:
            self._write_csv(pf, info.symbols, "portfolio_eval.csv")
            self._evaluate(info, book, pf, metrics, bpy)
            log.info("evaluation: return %.4f sharpe %.2f", metrics["total_return"], metrics["sharpe"])
        self._append_jsonl(line)
        self.tensorboard.log(phase, episode if phase == "train" else len(self.curve), line)
        if self.progress is not None:
            self.progress.episode_finished(line)

    def _evaluate(self, info: Any, book: EpisodeBook, pf: Portfolio, metrics: dict, bpy: float) -> None:
        """Agent vs baselines (and the planted-signal oracle) on the same rows and costs."""
        ext = slice(book.start, book.stop + 1)
        expected = None
        if info.structure is not None:
            expected = oracle_expected_returns(info.log_returns, info.symbols, info.structure)[ext]
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
            "eval": _round(metrics),
            "baselines": {k: _round(v) for k, v in base_metrics.items()},
            "oracle": _round(oracle) if oracle else None,
            "per_stock": {k: _round(v) for k, v in per_stock.items()},
            "period": [_stamp(info.timestamps[book.start]), _stamp(info.timestamps[book.stop])],
            "annualisation": {"bars_per_day": info.bars_per_day, "bars_per_year": bpy},
        }
        self.eval_timestamps = info.timestamps[ext]
        self.eval_curves = {"agent": pf.returns, **base_returns}
        if oracle_returns is not None:
            self.eval_curves["oracle"] = oracle_returns

    # ---- checkpoints --------------------------------------------------------------
    def checkpoint_state(self) -> dict[str, Any]:
        """The training curve so far and the run's start (a checkpoint never holds the evaluation)."""
        return {"curve": self.curve, "started": self.started}

    def restore_checkpoint(self, state: dict[str, Any]) -> None:
        """Continue a run: its curve, its start time, and ``metrics.jsonl`` cut back to the checkpoint.

        The curve is refilled in place: the progress notifications hold on to this same list.
        """
        self.curve[:] = state["curve"]
        self.started = float(state["started"])
        lines = "".join(json.dumps(_jsonable(line)) + "\n" for line in self.curve)
        write_atomically(self.output / "metrics.jsonl", lambda tmp: tmp.write_text(lines))
        self._jsonl_started = True
        self.tensorboard.resume_at(len(self.curve) + 1)

    # ---- end of run ---------------------------------------------------------------
    def finish(self, server: Any, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """Write the model, metrics.json and the plots; return metrics.json's content."""
        info = server.info
        out = self.output
        attention = server.attention
        save_model(
            out / "trained_model.pth",
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
            },
        )
        result: dict[str, Any] = {
            **(self.eval or {}),
            "train": self.curve[-1] if self.curve else None,
            "counters": server.counters.as_dict(),
            "symbols": list(info.symbols),
            "attention": attention.round(4).tolist() if attention is not None else None,
            **(extra or {}),
        }
        result["run"] = self._run_record(info)
        _write_json(out / "run.json", result["run"])
        _write_json(out / "metrics.json", result)
        write_atomically(out / "config.toml", self.cfg.write)
        for stale in out.glob("portfolio_ep*.csv"):  # from an earlier, longer run in this folder
            number = stale.stem.removeprefix("portfolio_ep")
            if number.isdigit() and int(number) > len(self.curve):
                stale.unlink()
        self._plots(info, attention)
        self.tensorboard.close()
        return result

    def _run_record(self, info: Any) -> dict[str, Any]:
        """The record of this run over the stock-day files of every day on the market clock."""
        days = np.asarray(info.timestamps).astype("datetime64[D]")
        first, last = (days.min().item(), days.max().item()) if len(days) else (None, None)
        files = stock_day_files(open_store(self.cfg.data.data), info.symbols, first, last) if first else []
        period = (_stamp(info.timestamps[0]), _stamp(info.timestamps[-1])) if len(days) else None
        return run_record(self.cfg, info.symbols, files, period, self.started, time.time())

    def _plots(self, info: Any, attention: np.ndarray | None) -> None:
        if self.eval_curves and self.eval_timestamps is not None:
            equity = {k: np.r_[1.0, np.cumprod(1.0 + v)] for k, v in self.eval_curves.items()}
            plots.plot_equity(equity, self.eval_timestamps, self.output / "equity_eval.png")
            plots.plot_drawdown(equity, self.eval_timestamps, self.output / "drawdown_eval.png")
        if attention is not None:
            plots.plot_attention(attention, list(info.symbols), self.output / "attention.png", "mean attention (evaluation)")
        if self.curve:
            keys = [k for k in ("total_reward", "sharpe", "loss", "epsilon") if k in self.curve[0]]
            plots.plot_training_curve(self.curve, keys, self.output / "training_curve.png")

    def _write_csv(self, pf: Portfolio, symbols: tuple[str, ...], name: str) -> None:
        write_atomically(self.output / name, lambda tmp: pf.table(symbols).to_csv(tmp, index=False))

    def _append_jsonl(self, line: dict[str, Any]) -> None:
        mode = "a" if self._jsonl_started else "w"  # a new run starts the file afresh
        self._jsonl_started = True
        with open(self.output / "metrics.jsonl", mode) as f:
            f.write(json.dumps(_jsonable(line)) + "\n")


def _stamp(ts: np.datetime64) -> str:
    return str(np.datetime_as_string(ts, unit="m")) + "Z"


def _round(d: dict[str, Any], digits: int = 6) -> dict[str, Any]:
    return {k: (round(float(v), digits) if isinstance(v, (float, np.floating)) else v) for k, v in d.items()}


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
