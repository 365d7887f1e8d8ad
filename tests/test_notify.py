"""Telegram notifications (``parallel_dqn.telemetry.notify``) against a real loopback server answering like the Bot API.

* a single-process run sends exactly: start, progress per episode, completion (the final metrics), to the chat;
* the token is only ever in the request path: never in run.log, stdout/stderr or the outputs;
* a server that is down, answers HTTP 500 or ``{"ok": false}``, or throttles (429 ``retry_after``) never
  stops training: one warning, no traceback, and a throttled message is sent again once allowed;
* progress over the rate is coalesced (the newest wins); start and completion are never dropped;
* a run that fails on a corrupt data file sends the error's line;
* a run stopped by SIGTERM says where its checkpoint is; the resumed run says what it resumed from;
* under mpiexec only rank 0 speaks: start and completion once each.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from parallel_dqn.config import NotifyConfig
from parallel_dqn.errors import UserError
from parallel_dqn.run.single import train
from parallel_dqn.telemetry.notify import CHAT_ENV, TOKEN_ENV, Notifier
from tests.helpers import MPIEXEC, ROOT, LoopbackJSONServer, make_market, tiny_config, train_args

TOKEN = "123456:SeCrEt-BoT-ToKeN"
CHAT = "-100424242"
OK = (200, {"ok": True, "result": {"message_id": 1}})


class FakeTelegram:
    """A loopback server answering ``sendMessage`` like Telegram; ``answers`` are consumed in order (the
    last repeats) and ``requests`` records (path, JSON body) of every request."""

    def __init__(self) -> None:
        self.answers: list[tuple[int, dict]] = [OK]
        self.requests: list[tuple[str, dict]] = []
        self.loopback = LoopbackJSONServer(self._respond)
        self.url = self.loopback.url

    def _respond(self, method: str, path: str, body: bytes) -> tuple[int, dict]:
        self.requests.append((path, json.loads(body)))
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]

    @property
    def texts(self) -> list[str]:
        return [body["text"] for _, body in self.requests]


@pytest.fixture
def telegram() -> Iterator[FakeTelegram]:
    fake = FakeTelegram()
    with fake.loopback:
        yield fake


@pytest.fixture(scope="module")
def market(tmp_path_factory) -> Path:
    return make_market(tmp_path_factory.mktemp("notify_market"))


@pytest.fixture
def bot_env(monkeypatch) -> None:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    monkeypatch.setenv(CHAT_ENV, CHAT)


def notify_config(market: Path, out: Path, url: str, **overrides):
    return tiny_config(market, out, **{"notify.base_url": url, "notify.min_interval": 0, **overrides})


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def assert_token_nowhere(out: Path, *texts: str) -> None:
    for text in texts:
        assert TOKEN not in text
    for path in out.rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path


def warnings_in(out: Path) -> list[str]:
    return [line for line in (out / "run.log").read_text().splitlines() if " WARNING parallel_dqn.telemetry.notify" in line]


# ---- a whole run ---------------------------------------------------------------------------------
@pytest.mark.usefixtures("bot_env")
def test_single_run_sends_start_progress_and_completion(market, tmp_path, telegram, capfd):
    out = tmp_path / "run"
    result = train(notify_config(market, out, telegram.url, **{"notify.every": 1}))
    assert [path for path, _ in telegram.requests] == [f"/bot{TOKEN}/sendMessage"] * 6
    assert all(body["chat_id"] == CHAT for _, body in telegram.requests)
    start, ep1, saved1, ep2, saved2, done = telegram.texts
    assert saved1 == f"parallel-dqn run: checkpoint saved (after episode 1, 1 episode done): {out}/checkpoints/ckpt-000001"
    assert saved2 == f"parallel-dqn run: checkpoint saved (after episode 2, 2 episodes done): {out}/checkpoints/ckpt-000002"
    assert start == (f"parallel-dqn run: run started: single mode, 3 stocks (LEAD FOLW MOMO), 3 workers, 2 episodes\n"
                     f"output: {out}")
    curve = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    for text, line in zip((ep1, ep2), curve[:2]):
        assert text.startswith(
            f"parallel-dqn run: episode {line['episode']}/2: reward {line['total_reward']:.4f}, "
            f"loss {line['loss']:.4f}, epsilon {line['epsilon']:.3f}, "
        ) and text.endswith(" steps/s"), text
    agent = result["eval"]
    best = max(result["baselines"], key=lambda name: result["baselines"][name]["sharpe"])
    assert done.startswith("parallel-dqn run: run finished in ")
    assert done.splitlines()[1:] == [
        f"agent: Sharpe {agent['sharpe']:.2f}, return {agent['total_return']:+.2%}, max drawdown {agent['max_drawdown']:.2%}",
        f"best baseline: {best}, Sharpe {result['baselines'][best]['sharpe']:.2f}",
    ]
    std = capfd.readouterr()
    assert_token_nowhere(out, std.out, std.err, *telegram.texts)
    assert not warnings_in(out)


@pytest.mark.usefixtures("bot_env")
def test_server_down_warns_once_and_training_completes(market, tmp_path, capfd):
    out = tmp_path / "down"
    result = train(notify_config(market, out, closed_port_url()))
    assert result["eval"] is not None and (out / "trained_model.pth").is_file()
    assert len(warnings_in(out)) == 1 and "ConnectionRefusedError" in warnings_in(out)[0]
    std = capfd.readouterr()
    assert std.err.count("notification not sent") == 1
    assert "Traceback" not in std.err + (out / "run.log").read_text()
    assert_token_nowhere(out, std.out, std.err)


@pytest.mark.usefixtures("bot_env")
@pytest.mark.parametrize(
    ("answers", "warning"),
    [
        ([(500, {"ok": False, "error_code": 500, "description": "Internal Server Error"})], "HTTP 500"),
        ([(200, {"ok": False, "description": f"Bad Request: chat not found for {TOKEN}"})], "chat not found for ***"),
        ([(400, {"ok": False, "error_code": 400, "description": "Bad Request: chat not found"})], "HTTP 400"),
    ],
    ids=["http-500", "ok-false", "http-400"],
)
def test_rejected_messages_warn_once_and_training_completes(market, tmp_path, telegram, capfd, answers, warning):
    telegram.answers = answers
    out = tmp_path / "rejected"
    result = train(notify_config(market, out, telegram.url, **{"dqn.episodes": 1}))
    assert result["eval"] is not None
    assert len(telegram.requests) == 4  # start, episode 1, checkpoint, completion: each tried once
    (line,) = warnings_in(out)
    assert warning in line
    std = capfd.readouterr()
    assert "Traceback" not in std.err
    assert_token_nowhere(out, std.out, std.err)


@pytest.mark.usefixtures("bot_env")
def test_throttled_message_is_sent_again_after_retry_after(market, tmp_path, telegram):
    telegram.answers = [(429, {"ok": False, "error_code": 429, "description": "Too Many Requests: retry after 1",
                               "parameters": {"retry_after": 1}}), OK]
    out = tmp_path / "throttled"
    train(notify_config(market, out, telegram.url, **{"dqn.episodes": 1}))
    texts = telegram.texts
    assert texts[0] == texts[1] and "run started" in texts[0]  # the start, refused once, then sent
    assert "run finished" in texts[-1]
    assert len(warnings_in(out)) == 1 and "HTTP 429" in warnings_in(out)[0]


@pytest.mark.usefixtures("bot_env")
def test_a_run_that_fails_on_a_corrupt_file_sends_the_error_line(market, tmp_path, telegram):
    bad = Path(shutil.copytree(market, tmp_path / "bad"))
    victim = bad / "stocks_intraday" / "FOLW" / "2024" / "01" / "FOLW_2024-01-03.parquet"
    victim.write_bytes(b"not a parquet file")
    with pytest.raises(UserError) as caught:
        train(notify_config(bad, tmp_path / "out", telegram.url))
    assert telegram.texts[0].startswith("parallel-dqn out: run started")
    assert telegram.texts[-1] == f"parallel-dqn out: run failed: {caught.value.line()}"
    assert str(victim) in telegram.texts[-1] and len(telegram.texts) == 2


def test_a_stop_on_sigterm_and_the_resume_are_announced(market, tmp_path, telegram):
    out = tmp_path / "run"
    notify_config(market, out, telegram.url, **{"dqn.episodes": 4, "notify.every": 1}).write(tmp_path / "run.toml")
    command = [sys.executable, "-m", "parallel_dqn", "train", "--config", str(tmp_path / "run.toml"), "--resume", "auto"]
    env = {**os.environ, TOKEN_ENV: TOKEN, CHAT_ENV: CHAT}
    job = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (out / "checkpoints" / "ckpt-000001").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    job.send_signal(signal.SIGTERM)
    assert job.wait(timeout=120) == 75, job.stderr.read()
    job.stderr.close()
    resumed = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    texts = telegram.texts
    ckpt = f"{out}/checkpoints/ckpt-000002"
    assert texts[0] == (f"parallel-dqn run: run started: single mode, 3 stocks (LEAD FOLW MOMO), 3 workers, 4 episodes"
                        f"\noutput: {out}")
    assert texts[1].startswith("parallel-dqn run: episode 1/4: reward ")
    assert texts[2:4] == [
        f"parallel-dqn run: checkpoint saved (after episode 1, 1 episode done): {out}/checkpoints/ckpt-000001",
        f"parallel-dqn run: checkpoint saved (SIGTERM, 1 episode done): {ckpt}",
    ], texts
    assert texts[4] == f"parallel-dqn run: run stopped by SIGTERM after checkpoint {ckpt}; resume with --resume auto"
    assert texts[5] == (f"parallel-dqn run: run resumed from {ckpt}: single mode, 3 stocks (LEAD FOLW MOMO), "
                        f"3 workers, 4 episodes\noutput: {out}")
    # after the resume, progress goes on from the restored training curve
    assert [t.split(": ")[1].split(",")[0] for t in texts[6:-1]] == [
        "episode 2/4", "checkpoint saved (after episode 2", "episode 3/4", "checkpoint saved (after episode 3",
        "episode 4/4", "checkpoint saved (after episode 4"]
    assert texts[-1].startswith("parallel-dqn run: run finished in ")
    assert_token_nowhere(out, resumed.stdout, resumed.stderr)


# ---- the notifier itself -------------------------------------------------------------------------
def test_progress_over_the_rate_is_coalesced_start_and_end_never_dropped(telegram):
    notifier = Notifier(TOKEN, CHAT, "rl", telegram.url, min_interval=0.3)
    notifier.start("single", ["AAA"], 1, 30, "runs/rl")
    for episode in range(1, 31):
        notifier.progress(episode, 30, 0.5, 0.01, 0.1, 1000.0)
    notifier.checkpoint("runs/rl/checkpoints/ckpt-000002", 29, "after episode 29")
    notifier.checkpoint("runs/rl/checkpoints/ckpt-000003", 30, "after episode 30")
    notifier.error(RuntimeError("boom\nsecond line"))
    notifier.close()
    texts = telegram.texts
    progress = [t for t in texts if ": episode " in t]
    assert texts[0].startswith("parallel-dqn rl: run started") and 1 <= len(progress) <= 2
    assert progress[-1] == "parallel-dqn rl: episode 30/30: reward 0.5000, loss 0.0100, epsilon 0.100, 1000 steps/s"
    assert texts[-2:] == ["parallel-dqn rl: checkpoint saved (after episode 30, 30 episodes done): "
                          "runs/rl/checkpoints/ckpt-000003",
                          "parallel-dqn rl: run failed: RuntimeError: boom"]
    assert not any("ckpt-000002" in t for t in texts)  # a newer checkpoint message replaced the waiting one


def test_off_unless_both_variables_are_set_and_enabled(telegram):
    both = {TOKEN_ENV: TOKEN, CHAT_ENV: CHAT}
    cfg = NotifyConfig(base_url=telegram.url)
    assert Notifier.from_config(cfg, "x", env=both).enabled
    assert not Notifier.from_config(cfg, "x", env={TOKEN_ENV: TOKEN}).enabled
    assert not Notifier.from_config(cfg, "x", env={CHAT_ENV: CHAT}).enabled
    off = Notifier.from_config(NotifyConfig(enabled=False, base_url=telegram.url), "x", env=both)
    off.start("single", ["AAA"], 1, 1, "o")
    off.close()
    assert not off.enabled and telegram.requests == []


# ---- parallel mode -------------------------------------------------------------------------------
def test_parallel_run_notifies_from_rank_0_only(market, tmp_path, telegram):
    out = tmp_path / "par"
    env = {**os.environ, TOKEN_ENV: TOKEN, CHAT_ENV: CHAT}
    args = [*train_args(market, out), "--set", f"notify.base_url={telegram.url}", "--set", "notify.min_interval=0"]
    proc = subprocess.run([MPIEXEC, "-n", "4", sys.executable, *args], capture_output=True, text=True, timeout=180,
                          cwd=ROOT, env=env)
    assert proc.returncode == 0, proc.stderr
    texts = telegram.texts
    assert [t.split(": ")[1].split(" ")[0] for t in texts] == ["run", "episode", "checkpoint", "episode", "checkpoint", "run"]
    assert texts[0].startswith("parallel-dqn par: run started: parallel mode, 3 stocks (LEAD FOLW MOMO), 3 workers")
    assert "run finished" in texts[-1] and "agent: Sharpe" in texts[-1]
    assert_token_nowhere(out, proc.stdout, proc.stderr)
