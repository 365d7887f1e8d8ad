"""Run notifications through Telegram's Bot API, from rank 0 only: start, progress, checkpoints, completion,
a stop on a signal, errors.

A :class:`Notifier` never slows or stops training: callers only put a message in a bounded
queue; one background thread sends them (``POST {base_url}/bot{TOKEN}/sendMessage``) with a
short timeout, at most one per ``notify.min_interval`` seconds. Progress and checkpoint
messages are coalesced (a newer one replaces a waiting one of its kind) and may be dropped;
the others wait their turn. A failure of any kind (server down, HTTP error, Telegram's ``{"ok": false}``,
429 ``retry_after``) is logged once as a warning and the run goes on. :meth:`Notifier.close`
flushes the queue with a bounded wait.

The bot token is part of the URL, so no URL, and no text that could hold the token, is
ever logged: failures are described by the exception type or the HTTP status and the server's
description, with the token redacted in any spelling (raw or URL-encoded: a server may echo the path).
Notifications are on only when ``TELEGRAM_BOT_TOKEN`` and ``TELEGRAM_CHAT_ID`` are both set
(``./run_with_env.sh`` loads them from ``.cloudkeys/api_keys.env``) and ``notify.enabled``
is true.
"""

from __future__ import annotations

import collections
import json
import logging
import math
import os
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from parallel_dqn.config import NotifyConfig
from parallel_dqn.telemetry.status import error_summary

log = logging.getLogger(__name__)

TOKEN_ENV = "TELEGRAM_BOT_TOKEN"
CHAT_ENV = "TELEGRAM_CHAT_ID"
QUEUE_SIZE = 64  # messages waiting at most; beyond it progress goes first, then the newest message
FLUSH_SECONDS = 5.0  # how long close() waits for the queue to drain
MAX_RETRY_AFTER = 30.0  # cap on a 429's retry_after, seconds
_MAX_TEXT = 3500  # Telegram allows 4096 characters per message


@dataclass
class _Message:
    text: str
    kind: str | None  # progress, checkpoint: a newer message of the kind replaces a waiting one; None: never dropped

    @property
    def droppable(self) -> bool:
        return self.kind is not None


class Notifier:
    """Sends run messages on a background thread; a notifier without a token does nothing."""

    def __init__(
        self,
        token: str | None,
        chat_id: str | None,
        label: str = "",
        base_url: str = "https://api.telegram.org",
        min_interval: float = 3.0,
        timeout: float = 5.0,
        flush_seconds: float = FLUSH_SECONDS,
    ) -> None:
        """``label`` names the run in every message (the output folder's name)."""
        self.enabled = bool(token and chat_id)
        self._token = token or ""
        self._token_re = _spellings(self._token)
        self._chat_id = chat_id or ""
        self._url = f"{base_url.rstrip('/')}/bot{self._token}/sendMessage"
        self.prefix = f"parallel-dqn {label}".rstrip()
        self.min_interval = min_interval
        self.timeout = timeout
        self.flush_seconds = flush_seconds
        self.sent = 0
        self.failures = 0
        self._queue: collections.deque[_Message] = collections.deque()
        self._cond = threading.Condition()
        self._closing = False
        self._deadline = math.inf  # after close(): when waiting messages are given up
        self._next_send = 0.0  # monotonic time of the earliest next request
        self._thread: threading.Thread | None = None
        if self.enabled:
            self._thread = threading.Thread(target=self._run, name="notify", daemon=True)
            self._thread.start()

    @classmethod
    def from_config(cls, cfg: NotifyConfig, label: str, env: Mapping[str, str] | None = None) -> Notifier:
        """The run's notifier: on when enabled and both env variables are set, else a silent one."""
        env = os.environ if env is None else env
        token, chat_id = env.get(TOKEN_ENV, "").strip(), env.get(CHAT_ENV, "").strip()
        if not (cfg.enabled and token and chat_id):
            log.debug("notifications off (notify.enabled=%s, %s and %s set: %s)", cfg.enabled, TOKEN_ENV, CHAT_ENV,
                      bool(token and chat_id))
            return cls(None, None)
        log.info("notifications on: Telegram, progress every %d episodes", cfg.every)
        return cls(token, chat_id, label, cfg.base_url, cfg.min_interval, cfg.timeout)

    # ---- what a run says ------------------------------------------------------------
    def start(
        self, mode: str, stocks: Sequence[str], workers: int, episodes: int, output: str | Path,
        resumed_from: str | Path | None = None,
    ) -> None:
        how = f"run resumed from {resumed_from}" if resumed_from else "run started"
        self._put(
            f"{how}: {mode} mode, {len(stocks)} stocks ({' '.join(stocks)}), {workers} workers, "
            f"{episodes} episodes\noutput: {output}"
        )

    def progress(
        self, episode: int, episodes: int, reward: float, loss: float, epsilon: float, steps_per_s: float,
        state: str | None = None,
    ) -> None:
        """``state``: the convergence monitor's word on the episode before it, when the monitor is on."""
        self._put(
            f"episode {episode}/{episodes}: reward {reward:.4f}, loss {loss:.4f}, epsilon {epsilon:.3f}, "
            f"{steps_per_s:.0f} steps/s" + (f", monitor: {state}" if state else ""),
            kind="progress",
        )

    def intervention(self, message: str) -> None:
        """The convergence monitor acted, e.g. "plateau at episode 7: learning rate 0.0005 -> 0.00025"."""
        self._put(f"convergence monitor: {message}")

    def complete(self, result: Mapping[str, Any]) -> None:
        """The final evaluation: the agent's Sharpe, return, max drawdown and the best baseline's Sharpe."""
        lines = [f"run finished in {result.get('wall_seconds', math.nan):.1f} s"]
        agent = result.get("eval")
        if agent:
            lines.append(f"agent: Sharpe {agent['sharpe']:.2f}, return {agent['total_return']:+.2%}, "
                         f"max drawdown {agent['max_drawdown']:.2%}")
        ranked = [(m["sharpe"], name) for name, m in (result.get("baselines") or {}).items() if math.isfinite(m["sharpe"])]
        if ranked:
            sharpe, name = max(ranked)
            lines.append(f"best baseline: {name}, Sharpe {sharpe:.2f}")
        self._put("\n".join(lines))

    def error(self, exc: BaseException) -> None:
        self._put(f"run failed: {error_summary(exc)}")

    def checkpoint(self, path: str | Path, episodes_done: int, reason: str) -> None:
        done = f"{episodes_done} episode{'' if episodes_done == 1 else 's'} done"
        self._put(f"checkpoint saved ({reason}, {done}): {path}", kind="checkpoint")

    def stopped(self, reason: str, checkpoint: str | Path | None) -> None:
        """The run stopped on a signal after writing a checkpoint (it will be resumed)."""
        self._put(f"run stopped by {reason} after checkpoint {checkpoint}; resume with --resume auto")

    # ---- queue ------------------------------------------------------------------------
    def _put(self, text: str, kind: str | None = None) -> None:
        """Queue a message without waiting; a waiting message of the same ``kind`` gives way to a newer one."""
        if not self.enabled:
            return
        message = _Message(self._redact(f"{self.prefix}: {text}")[:_MAX_TEXT], kind)
        with self._cond:
            if self._closing:
                return
            if kind is not None:
                self._drop(lambda m: m.kind == kind)
            if len(self._queue) >= QUEUE_SIZE:
                self._drop(lambda m: m.droppable)
            if len(self._queue) >= QUEUE_SIZE:
                log.debug("notification queue full: a message was dropped")
                return
            self._queue.append(message)
            self._cond.notify()

    def _drop(self, which: Callable[[_Message], bool]) -> None:
        for m in [m for m in self._queue if which(m)]:
            self._queue.remove(m)

    def close(self) -> None:
        """Send what is queued, waiting at most ``flush_seconds``; then stop the thread."""
        if self._thread is None:
            return
        with self._cond:
            self._closing = True
            self._deadline = time.monotonic() + self.flush_seconds
            self._cond.notify()
        self._thread.join(self.flush_seconds + self.timeout)
        if self._queue:
            log.debug("notifications: %d messages not sent before the end", len(self._queue))

    def _run(self) -> None:
        """The sender: one message at a time, no faster than ``min_interval``, until closed and drained."""
        while True:
            with self._cond:
                while True:
                    now = time.monotonic()
                    if now >= self._deadline:
                        self._queue.clear()
                        return
                    if not self._queue:
                        if self._closing:
                            return
                        self._cond.wait()
                        continue
                    wait = min(self._next_send, self._deadline) - now
                    if wait <= 0:
                        break
                    self._cond.wait(wait)
                message = self._queue.popleft()
            try:
                retry_after = self._send(message.text)
            except Exception as exc:  # noqa: BLE001 - the sender must outlive any surprise
                self._failed(type(exc).__name__)
                retry_after = None
            with self._cond:
                self._next_send = time.monotonic() + max(self.min_interval, retry_after or 0.0)
                if retry_after is not None and not message.droppable:
                    self._queue.appendleft(message)  # throttled: it goes first once allowed

    def _send(self, text: str) -> float | None:
        """POST one message; return a 429's ``retry_after`` (seconds) to retry it, else None."""
        body = json.dumps({"chat_id": self._chat_id, "text": text}).encode()
        request = urllib.request.Request(self._url, data=body, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                answer = _json(response.read())
            if answer.get("ok") is True:
                self.sent += 1
                return None
            self._failed(f"Telegram answered not ok: {answer.get('description', '')}")
        except urllib.error.HTTPError as exc:
            answer = _json(exc.read())
            exc.close()
            retry = (answer.get("parameters") or {}).get("retry_after") if exc.code == 429 else None
            self._failed(f"HTTP {exc.code}: {answer.get('description', exc.reason)}")
            if isinstance(retry, (int, float)):
                return min(float(retry), MAX_RETRY_AFTER)
        except (OSError, ValueError) as exc:  # connection refused, timeout, DNS, a bad base_url
            reason = getattr(exc, "reason", None)
            self._failed(type(reason if isinstance(reason, BaseException) else exc).__name__)
        return None

    def _failed(self, reason: str) -> None:
        """Count a failure; warn about the first one only (never with the URL or the token)."""
        self.failures += 1
        reason = self._redact(str(reason))[:200]
        if self.failures == 1:
            log.warning("notification not sent (%s); training goes on, further failures are not reported", reason)
        else:
            log.debug("notification not sent (%s)", reason)

    def _redact(self, text: str) -> str:
        """``text`` with the token, in any spelling (raw or URL-encoded, as a server may echo the path), as ***."""
        return self._token_re.sub("***", text) if self._token_re is not None else text


def _spellings(token: str) -> re.Pattern[str] | None:
    """A pattern matching ``token`` raw or URL-encoded, in whole or in part: each character as itself or as its
    UTF-8 percent-escapes (either case), a space also as ``+``. None for no token."""
    if not token:
        return None
    chars = []
    for ch in token:
        escaped = "".join(f"%{byte:02X}" for byte in ch.encode())
        spellings = [re.escape(ch), f"(?i:{re.escape(escaped)})", *(["\\+"] if ch == " " else [])]
        chars.append(f"(?:{'|'.join(spellings)})")
    return re.compile("".join(chars))


class NotifyingObserver:
    """A run observer that sends the run's Telegram messages through a :class:`Notifier`.

    Progress: every ``every``-th training episode (reward, loss, epsilon, clock steps per second since
    the previous message); and the start, each checkpoint, the completion, a stop on a signal, a failure.
    """

    def __init__(self, notifier: Notifier, every: int) -> None:
        self.notifier = notifier
        self.every = every
        self.episodes = 0
        self._previous_elapsed = 0.0
        self._state: str | None = None  # the convergence monitor's latest state (None: monitor off)

    def on_start(self, run: Any) -> None:
        self.episodes = run.episodes
        self.notifier.start(run.mode, run.symbols, run.workers, run.episodes, run.output, resumed_from=run.resumed_from)

    def on_episode(self, report: Any) -> None:
        line = report.line
        if "monitor_message" in line:  # an intervention is always told, whatever notify.every says
            self.notifier.intervention(line["monitor_message"])
        if "monitor" in line:
            self._state = line["monitor"]
        if line["phase"] != "train":
            return
        seconds = max(line["elapsed_s"] - self._previous_elapsed, 1e-9)
        self._previous_elapsed = line["elapsed_s"]
        if self.every > 0 and line["episode"] % self.every == 0:
            self.notifier.progress(line["episode"], self.episodes, line["total_reward"], line["loss"],
                                   line["epsilon"], line["steps"] / seconds, self._state)

    def on_checkpoint(self, checkpoint: Any, episodes_done: int, reason: str) -> None:
        self.notifier.checkpoint(checkpoint.path, episodes_done, reason)

    def on_finish(self, result: Mapping[str, Any]) -> None:
        self.notifier.complete(result)

    def on_stop(self, reason: str, checkpoint: str | Path | None) -> None:
        self.notifier.stopped(reason, checkpoint)

    def on_failure(self, error: BaseException) -> None:
        self.notifier.error(error)

    def close(self) -> None:
        self.notifier.close()


def _json(raw: bytes) -> dict[str, Any]:
    try:
        answer = json.loads(raw or b"{}")
    except ValueError:
        return {}
    return answer if isinstance(answer, dict) else {}
