"""What every remote store shares: an ETag-validated local read-through cache, prefetch and the cache counts.

A remote store (Azure Blob through its SDK, :mod:`parallel_dqn.data.azure_store`; S3, GCS and Azure through fsspec,
:mod:`parallel_dqn.data.object_store`) subclasses :class:`CachedRemoteStore` and supplies only how to list, stat
and download one object and how its failures read; listing by month, the cache, the counts, concurrent prefetch
and the names in messages are written once, here.

The cache: a file is downloaded once, and again only when its version tag (the object's ETag, or what the store
has in its place) or its size changes; the tag of the cached copy is kept beside it in ``KEY.etag``. Downloads go to
a unique temporary name in the same folder and are moved into place with ``os.replace``, so several MPI ranks can
share the cache folder and a failed download never leaves a partial file. The folder is
``$PARALLEL_DQN_CACHE/SCHEME/...`` (default ``~/.cache/parallel-dqn/SCHEME/...``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import uuid
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date
from pathlib import Path


from parallel_dqn.data.layout import day_key, month_prefix, parse_key, symbol_prefix
from parallel_dqn.errors import UserError

log = logging.getLogger(__name__)

ENV_CACHE = "PARALLEL_DQN_CACHE"
DEFAULT_CACHE = Path("~/.cache/parallel-dqn")
#: concurrent downloads in :meth:`CachedRemoteStore.prefetch`
DOWNLOAD_THREADS = 8


@dataclass
class CacheCounts:
    """How the cache served files: downloaded now, or found up to date."""

    downloaded: int = 0
    cached: int = 0
    bytes: int = 0

    @property
    def files(self) -> int:
        return self.downloaded + self.cached

    def line(self) -> str:
        return f"{self.files} files, {self.downloaded} downloaded ({self.bytes} bytes), {self.cached} from cache"


def cache_root(scheme: str) -> Path:
    """The download cache of one kind of store: ``$PARALLEL_DQN_CACHE/SCHEME`` or ``~/.cache/parallel-dqn/SCHEME``."""
    return Path(os.environ.get(ENV_CACHE) or DEFAULT_CACHE).expanduser() / scheme


@contextlib.contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """A unique temporary path beside ``path``, moved onto it if the block succeeds and removed otherwise.

    Readers of ``path`` (other ranks sharing a cache) see the old file or the new one, never a partial one.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.part")
    try:
        yield part
        os.replace(part, path)
    finally:
        part.unlink(missing_ok=True)


class CachedRemoteStore:
    """A :class:`~parallel_dqn.data.store.Store` over remote objects in the key layout, read through a local cache.

    Subclasses implement :meth:`url`, :meth:`errors`, :meth:`list_symbols`, :meth:`_list`, :meth:`_stat` and
    :meth:`_download`; keys passed to them are layout keys (:mod:`parallel_dqn.data.layout`), without the prefix.
    """

    def __init__(self, spec: str, cache: Path) -> None:
        self.spec = spec  # SCHEME://BUCKET[/PREFIX], as the user writes it (never a secret)
        self.cache = cache
        self.counts = CacheCounts()  # every file this store served, each counted once
        self._listed: dict[str, tuple[str, int]] = {}  # key -> (version tag, size) from the last listing
        self._fresh: set[str] = set()  # keys whose cached copy was checked or downloaded by this store
        self._lock = threading.Lock()

    # ---- what a kind of store supplies -----------------------------------------------------------------------
    def url(self, key: str) -> str:
        """The object of layout key ``key`` as shown to the user (``SCHEME://BUCKET/PREFIX/KEY``)."""
        return f"{self.spec}/{key}"

    def errors(self, doing: str) -> contextlib.AbstractContextManager[None]:
        """A context that turns this store's failures while ``doing`` something into one UserError line."""
        raise NotImplementedError

    def list_symbols(self) -> list[str]:
        raise NotImplementedError

    def _list(self, prefix: str) -> Iterable[tuple[str, str, int]]:
        """``(key, version tag, size)`` of every object whose layout key starts with ``prefix``."""
        raise NotImplementedError

    def _stat(self, key: str) -> tuple[str, int] | None:
        """``(version tag, size)`` of one object, None when there is none (a missing bucket raises)."""
        raise NotImplementedError

    def _download(self, key: str, part: Path, listed: tuple[str, int]) -> tuple[int, str]:
        """Write object ``key`` into the local file ``part``; the bytes written and the version tag it had."""
        raise NotImplementedError

    # ---- the Store protocol, the cache and the counts, for every kind -----------------------------------------
    def describe(self) -> str:
        return self.spec

    def source(self, symbol: str, day: date) -> str:
        """How one stock-day file is named in messages: its object, not its cache path."""
        return self.url(day_key(symbol, day))

    def content_id(self, symbol: str, day: date) -> str:
        """The listed object version (tag and size) of a stock-day: identifies its content without a download."""
        key = day_key(symbol, day)
        with self._lock:
            listed = self._listed.get(key)
        if listed is None:
            self.list_days(symbol, day, day)
            with self._lock:
                listed = self._listed[key]
        return f"etag:{listed[0]}:{listed[1]}"

    def list_days(self, symbol: str, start: date | None = None, end: date | None = None) -> list[date]:
        """List only the month prefixes that can hold days in ``[start, end]`` (the whole symbol if open-ended)."""
        if start is not None and end is not None:
            prefixes = [f"{month_prefix(symbol, y, m)}/" for y, m in months(start, end)]
        else:
            prefixes = [f"{symbol_prefix(symbol)}/"]
        days = []
        with self.errors(f"listing {symbol} in {self.spec}"):
            for prefix in prefixes:
                for key, tag, size in self._list(prefix):
                    parsed = parse_key(key)
                    if parsed is None or parsed[0] != symbol:
                        continue
                    with self._lock:
                        self._listed[key] = (tag, size)
                    days.append(parsed[1])
        return sorted(d for d in days if (start is None or d >= start) and (end is None or d <= end))

    def fetch(self, symbol: str, day: date) -> Path:
        """The cached copy of one stock-day object, downloaded first if missing or stale."""
        return self._ensure(day_key(symbol, day))

    def prefetch(self, symbol: str, days: Sequence[date]) -> CacheCounts:
        """Bring the files of ``symbol`` on ``days`` into the cache, :data:`DOWNLOAD_THREADS` at a time.

        Logs (DEBUG, in the run's log file) and returns how many were downloaded and how many were already cached.
        """
        before = self.counts.downloaded, self.counts.cached, self.counts.bytes
        keys = [day_key(symbol, d) for d in days]
        with ThreadPoolExecutor(max_workers=DOWNLOAD_THREADS, thread_name_prefix="store-fetch") as pool:
            futures = [pool.submit(self._ensure, key) for key in keys]
            try:
                for future in futures:
                    future.result()
            except BaseException:
                for future in futures:  # the first failure stops the rest (each would wait out its own retries)
                    future.cancel()
                raise
        now = self.counts
        done = CacheCounts(now.downloaded - before[0], now.cached - before[1], now.bytes - before[2])
        log.debug("%s: %s: %s", self.describe(), symbol, done.line())
        return done

    def _ensure(self, key: str) -> Path:
        """``key``'s cached path, up to date with the object's version tag; counts each key once per store."""
        local = self.cache / key
        with self._lock:
            if key in self._fresh:
                return local
            listed = self._listed.get(key)
        if listed is None:
            with self.errors(f"reading {self.url(key)}"):
                listed = self._stat(key)
            if listed is None:
                raise UserError(f"no bar file {self.url(key)}", "pick a symbol and day that the store holds")
        size = None
        if not _cached_copy_matches(local, *listed):
            with self.errors(f"downloading {self.url(key)}"), replacing(local) as part:
                size, tag = self._download(key, part, listed)
            with replacing(_etag_file(local)) as part:
                part.write_text(tag)
        with self._lock:
            self._fresh.add(key)
            if size is not None:
                self.counts.downloaded += 1
                self.counts.bytes += size
            else:
                self.counts.cached += 1
        return local


def months(start: date, end: date) -> Iterable[tuple[int, int]]:
    """Every (year, month) from ``start``'s to ``end``'s, inclusive."""
    y, m = start.year, start.month
    while (y, m) <= (end.year, end.month):
        yield y, m
        y, m = (y + 1, 1) if m == 12 else (y, m + 1)


def etag(value: str | None) -> str:
    """An ETag without its quotes (stores differ in whether they send them)."""
    return (value or "").strip('"')


def _etag_file(local: Path) -> Path:
    return local.with_name(local.name + ".etag")


def _cached_copy_matches(local: Path, tag: str, size: int) -> bool:
    """True when ``local`` holds the object version ``tag`` (its recorded tag and its size agree)."""
    try:
        return _etag_file(local).read_text() == tag and local.stat().st_size == size
    except OSError:
        return False
