"""Shared test helpers: small synthetic markets, a fast config, perturbing bars after a time."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from parallel_dqn.config import Config
from parallel_dqn.data.synthetic import SyntheticSpec, generate_market, write_market

STOCKS = ["LEAD", "FOLW", "MOMO"]


def make_market(out: Path, days: int = 5, seed: int = 11, bar_minutes: int = 5) -> Path:
    """A synthetic market of STOCKS from 2024-01-02 (5-minute bars: small and fast)."""
    spec = SyntheticSpec(bar_minutes=bar_minutes)
    write_market(generate_market(STOCKS, dt.date(2024, 1, 2), days, seed=seed, spec=spec), out)
    return out


def tiny_config(data: Path, output: Path, **overrides) -> Config:
    cfg = Config()
    settings = {
        "data.data": str(data),
        "data.stocks": STOCKS,
        "data.start_date": "2024-01-02",
        "data.end_date": "2024-01-05",
        "data.eval_start": "2024-01-08",
        "data.eval_end": "2024-01-08",
        "dqn.episodes": 2,
        "dqn.learning_starts": 40,
        "dqn.batch_size": 16,
        "dqn.target_update": 20,
        "market.graph_window": 40,
        "run.output": str(output),
        "run.progress": False,
        **overrides,
    }
    for key, value in settings.items():
        cfg.set(key, value)
    return cfg


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path / "trained_model.pth", weights_only=True)["q_state"]


def perturb_after(src: Path, dst: Path, cut: pd.Timestamp, seed: int = 5) -> None:
    """Copy a market, replacing every bar after ``cut`` with a different valid bar."""
    shutil.copytree(src, dst)
    rng = np.random.default_rng(seed)
    for path in (dst / "stocks_intraday").rglob("*.parquet"):
        df = pd.read_parquet(path)
        late = pd.to_datetime(df["timestamp"], utc=True) > cut
        if not late.any():
            continue
        factor = np.exp(rng.normal(0, 0.02, late.sum()))
        for col in ("open", "high", "low", "close"):
            df.loc[late, col] = df.loc[late, col] * factor
        df.loc[late, "volume"] = rng.integers(1, 10_000, late.sum()).astype(float)
        df.to_parquet(path, index=False)


class LoopbackJSONServer:
    """A real HTTP server on 127.0.0.1 (a free port) in a thread, answering JSON.

    Stands in for services that cannot be reached from here (Telegram, Alpha Vantage): the real
    client code talks HTTP to it. ``respond(method, path, body)`` returns ``(status, json)``.
    Use as a context manager; ``url`` is ``http://127.0.0.1:PORT``.
    """

    def __init__(self, respond) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0) or 0))
                status, answer = respond(self.command, self.path, body)
                raw = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            do_GET = do_POST = _answer  # noqa: N815 - http.server's names

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> "LoopbackJSONServer":
        import threading

        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
