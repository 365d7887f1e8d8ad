"""Intraday bars from the Alpha Vantage API (``TIME_SERIES_INTRADAY``, one symbol-month per call).

:class:`AlphaVantageClient` fetches and parses one symbol-month into a raw bar frame (UTC
timestamps, as :func:`~parallel_dqn.data.daywriter.plan_day_files` takes it). It is rate-limit
aware: calls are spaced by ``min_interval`` seconds (the free tier allows 5 calls a minute), and a
throttled answer (HTTP 200 with a ``Note`` or ``Information`` about call frequency) or an
unreachable server is retried with exponential backoff. The clock and the sleep are injectable
so tests run without waiting.

The API key travels in the query string, so URLs are never shown, and the API's own messages
(which may echo the key) go through :meth:`AlphaVantageClient.redact` before they are shown.
"""

from __future__ import annotations

import http.client
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

import pandas as pd

from parallel_dqn.errors import UserError

DEFAULT_BASE_URL = "https://www.alphavantage.co/query"
INTERVALS = ("1min", "5min", "15min", "30min", "60min")
KEY_ENV = "ALPHAVANTAGE_API_KEY"
KEY_FIX = f"set {KEY_ENV} in .cloudkeys/api_keys.env and run through ./run_with_env.sh, or export it"
_FIELDS = {"open": "1. open", "high": "2. high", "low": "3. low", "close": "4. close", "volume": "5. volume"}
_MAX_MESSAGE = 240  # characters of an API message shown, cut only after the key is redacted
_THROTTLE_WORDS = ("call frequency", "rate limit", "requests per", "calls per")


class _Retryable(Exception):
    """A throttled answer or an unreachable server: worth another try after a pause."""


class AlphaVantageClient:
    """Fetches intraday bars of one symbol-month at a time, pacing and retrying its calls.

    Args:
        api_key: the Alpha Vantage key (never printed).
        base_url: the API endpoint (a loopback server in tests).
        min_interval: seconds between the starts of two calls.
        backoff: first wait after a throttled or failed call, doubled on each retry.
        retries: retries after the first try before giving up.
        timeout: seconds to wait for one answer.
        sleep, clock: ``time.sleep`` and ``time.monotonic`` unless injected.
    """

    def __init__(
        self,
        api_key: str,
        base_url: str = DEFAULT_BASE_URL,
        min_interval: float = 12.0,
        backoff: float = 15.0,
        retries: int = 4,
        timeout: float = 60.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not api_key:
            raise UserError(f"{KEY_ENV} is not set", KEY_FIX)
        parts = urllib.parse.urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.query:
            raise UserError(
                f"--base-url {base_url}: expected an http(s) URL without a query", f"e.g. {DEFAULT_BASE_URL}"
            )
        self._key = api_key
        self.base_url = base_url
        self.min_interval = min_interval
        self.backoff = backoff
        self.retries = retries
        self.timeout = timeout
        self._sleep = sleep
        self._clock = clock
        self._last_call: float | None = None

    def redact(self, text: str) -> str:
        """``text`` with the API key (plain or URL-encoded) replaced by ``***``."""
        for form in {self._key, urllib.parse.quote(self._key, safe=""), urllib.parse.quote_plus(self._key)}:
            text = text.replace(form, "***")
        return text

    def fetch_month(self, symbol: str, month: str, interval: str = "1min") -> pd.DataFrame:
        """The regular-hours bars of ``symbol`` in ``month`` (YYYY-MM), timestamps converted to UTC."""
        params = {
            "function": "TIME_SERIES_INTRADAY",
            "symbol": symbol,
            "interval": interval,
            "month": month,
            "outputsize": "full",
            "extended_hours": "false",
            "datatype": "json",
            "apikey": self._key,
        }
        what = f"{symbol} {month} ({interval})"
        for attempt in range(self.retries + 1):
            try:
                return parse_intraday(self._call(params, what), symbol, interval, what)
            except UserError as exc:  # the API's messages may echo the key
                raise UserError(self.redact(exc.what)[:_MAX_MESSAGE], exc.fix and self.redact(exc.fix)) from None
            except _Retryable as exc:
                if attempt == self.retries:
                    reason = self.redact(str(exc))[:_MAX_MESSAGE]
                    raise UserError(
                        f"Alpha Vantage: {what}: {reason} (gave up after {attempt + 1} tries)",
                        "wait a minute and try again, or raise --min-interval",
                    ) from None
                self._sleep(self.backoff * 2**attempt)
        raise AssertionError("unreachable")

    def _call(self, params: dict[str, str], what: str) -> dict[str, Any]:
        """One paced GET; the decoded JSON object. _Retryable for network trouble, UserError for a bad answer.

        Messages are not redacted here: :meth:`fetch_month` redacts everything it passes on.
        """
        if self._last_call is not None:
            wait = self._last_call + self.min_interval - self._clock()
            if wait > 0:
                self._sleep(wait)
        self._last_call = self._clock()
        url = f"{self.base_url}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=self.timeout) as resp:  # noqa: S310 - http(s) base URL
                body = resp.read()
        except urllib.error.HTTPError as exc:
            if exc.code == 429 or exc.code >= 500:
                raise _Retryable(f"HTTP {exc.code} {exc.reason}") from None
            raise UserError(f"Alpha Vantage: {what}: HTTP {exc.code} {exc.reason}", "check --base-url") from None
        except (OSError, http.client.HTTPException) as exc:
            reason = getattr(exc, "reason", exc)
            raise _Retryable(f"cannot reach {_host(self.base_url)}: {reason}") from None
        try:
            payload = json.loads(body)
        except ValueError:
            raise UserError(f"Alpha Vantage: {what}: the answer is not JSON", "check --base-url") from None
        if not isinstance(payload, dict):
            raise UserError(f"Alpha Vantage: {what}: unexpected answer", "check --base-url")
        return payload


def parse_intraday(payload: dict[str, Any], symbol: str, interval: str, what: str | None = None) -> pd.DataFrame:
    """A raw bar frame (``timestamp`` UTC, OHLCV float) from a ``TIME_SERIES_INTRADAY`` JSON answer.

    Raises _Retryable when throttled, UserError for an error answer (bad key, unknown symbol) or
    an answer without the time series. Bars are returned in time order.
    """
    what = what or symbol
    if "Error Message" in payload:
        message = str(payload["Error Message"])
        if "apikey" in message.lower() or "api key" in message.lower():  # e.g. "the parameter apikey is invalid"
            raise UserError(f"Alpha Vantage rejected the API key in {KEY_ENV}", KEY_FIX)
        raise UserError(f"Alpha Vantage: {what}: unknown symbol or bad parameters", "check the symbol and --month")
    for field in ("Note", "Information"):
        if field in payload:
            message = " ".join(str(payload[field]).split())
            if any(w in message.lower() for w in _THROTTLE_WORDS):
                raise _Retryable(f"throttled: {message}")
            raise UserError(f"Alpha Vantage: {what}: {message}", "see the Alpha Vantage documentation")
    series = payload.get(f"Time Series ({interval})")
    if not isinstance(series, dict):
        raise UserError(f"Alpha Vantage: {what}: the answer holds no 'Time Series ({interval})'", "check --base-url")
    if not series:
        raise UserError(f"Alpha Vantage: {what}: no bars", "pick a month in which the stock traded")
    meta = payload.get("Meta Data", {})
    zone = next((v for k, v in meta.items() if k.endswith("Time Zone")), "US/Eastern")
    stamps = sorted(series)
    try:
        ts = pd.Series(pd.to_datetime(stamps, format="%Y-%m-%d %H:%M:%S"))
        ts = ts.dt.tz_localize(zone, ambiguous="raise", nonexistent="raise").dt.tz_convert("UTC").dt.as_unit("ns")
        data = {col: pd.to_numeric([series[s].get(key) for s in stamps]) for col, key in _FIELDS.items()}
    except Exception as exc:  # noqa: BLE001 - any malformed field is one bad answer
        raise UserError(f"Alpha Vantage: {what}: malformed answer: {exc}", "check --base-url") from None
    return pd.DataFrame({"timestamp": ts, **{c: pd.Series(v, dtype="float64") for c, v in data.items()}})


def _host(url: str) -> str:
    """The host[:port] of ``url``, safe to show."""
    return urllib.parse.urlsplit(url).netloc or url
