"""Azure Blob Storage as a data source: ``azure://CONTAINER[/PREFIX]``.

The container holds the same key layout as a local folder (:mod:`parallel_dqn.data.layout`),
optionally under ``PREFIX/``. The connection string comes from ``AZURE_STORAGE_CONNECTION_STRING``
(put it in ``.cloudkeys/api_keys.env`` and run through ``./run_with_env.sh``); it never appears in
a message, a log line or an output.

Reads go through a local read-through cache, ``$PARALLEL_DQN_CACHE/azure/ACCOUNT/CONTAINER/KEY``
(default ``~/.cache/parallel-dqn/azure/...``): a blob is downloaded once and again only when its
ETag changes (the ETag of the cached copy is kept beside it in ``KEY.etag``). Downloads go to a
unique temporary name in the same folder and are moved into place with ``os.replace``, so several
MPI ranks can share the cache folder and a failed download never leaves a partial file. Every
Azure failure (credentials, missing container, network after retries) becomes one
:class:`~parallel_dqn.errors.UserError` line.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
import uuid
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
)
from azure.storage.blob import BlobClient, BlobServiceClient, ContainerClient, ExponentialRetry

from parallel_dqn.data.layout import KEY_ROOT, day_key, is_symbol, month_prefix, parse_key, symbol_prefix
from parallel_dqn.errors import UserError

log = logging.getLogger(__name__)

ENV_CONNECTION = "AZURE_STORAGE_CONNECTION_STRING"
ENV_CACHE = "PARALLEL_DQN_CACHE"
DEFAULT_CACHE = Path("~/.cache/parallel-dqn")
#: concurrent downloads in :meth:`AzureBlobStore.prefetch`
DOWNLOAD_THREADS = 8
#: transient failures are retried this often, after 0.2 s, 1.5 s and 2.4 s
RETRIES = 3
KEYS_HINT = f"set {ENV_CONNECTION}, e.g. in .cloudkeys/api_keys.env loaded by ./run_with_env.sh"
_CONTAINER_RE = re.compile(r"[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,62}")


@dataclass(frozen=True)
class AzureLocation:
    """Where a store lives: ``azure://CONTAINER[/PREFIX]``."""

    container: str
    prefix: str  # "" or "some/folder/" (always ending in "/")

    @classmethod
    def parse(cls, location: str) -> AzureLocation:
        """Split ``CONTAINER[/PREFIX]`` (the part after ``azure://``); UserError for a bad container name."""
        container, _, prefix = location.strip("/").partition("/")
        if not _CONTAINER_RE.fullmatch(container):
            raise UserError(
                f"invalid Azure container name {container!r} in azure://{location}",
                "use 3-63 lowercase letters, digits and single hyphens, e.g. azure://market-data",
            )
        prefix = "/".join(p for p in prefix.split("/") if p)
        return cls(container, f"{prefix}/" if prefix else "")

    def spec(self) -> str:
        """``azure://CONTAINER[/PREFIX]``, as the user writes it."""
        return f"azure://{self.container}" + (f"/{self.prefix.rstrip('/')}" if self.prefix else "")

    def url(self, key: str) -> str:
        """The blob of layout key ``key`` as shown to the user, e.g. ``azure://mkt/stocks_intraday/...``."""
        return f"azure://{self.container}/{self.prefix}{key}"


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


def connect(location: str) -> tuple[ContainerClient, AzureLocation]:
    """A client of the container named by ``location`` (not checked to exist) and the parsed location.

    Reads the connection string from the environment; raises UserError when it is missing or malformed.
    """
    where = AzureLocation.parse(location)
    secret = os.environ.get(ENV_CONNECTION, "").strip()
    if not secret:
        raise UserError(f"cannot open {where.spec()}: {ENV_CONNECTION} is not set", KEYS_HINT)
    logging.getLogger("azure").setLevel(logging.WARNING)  # the SDK's per-request INFO lines are noise
    retry = ExponentialRetry(initial_backoff=0.2, increment_base=1.3, retry_total=RETRIES, random_jitter_range=0)
    try:
        service = BlobServiceClient.from_connection_string(
            secret, retry_policy=retry, connection_timeout=10, read_timeout=30
        )
    except ValueError:
        raise UserError(
            f"cannot open {where.spec()}: {ENV_CONNECTION} is malformed",
            "copy the whole connection string from the portal (Storage account -> Access keys), "
            "DefaultEndpointsProtocol=https;AccountName=...;AccountKey=...;EndpointSuffix=core.windows.net",
        ) from None
    return service.get_container_client(where.container), where


@contextlib.contextmanager
def azure_errors(container: ContainerClient, doing: str) -> Iterator[None]:
    """Turn any Azure SDK failure while ``doing`` into one UserError line (never the SDK's text: it can hold URLs)."""
    account = container.account_name
    try:
        yield
    except ClientAuthenticationError as exc:
        raise _auth_error(account, doing, exc) from None
    except ResourceNotFoundError as exc:
        if exc.error_code == "ContainerNotFound":
            raise UserError(
                f"{doing}: container {container.container_name} does not exist in storage account {account}",
                f"check the name, or create it with `parallel-dqn data upload --data DIR "
                f"--to azure://{container.container_name}`",
            ) from None
        raise UserError(f"{doing}: not found in storage account {account} ({_code(exc)})",
                        "check the container, prefix and stock names") from None
    except HttpResponseError as exc:
        if exc.status_code == 403:
            raise _auth_error(account, doing, exc) from None
        raise UserError(
            f"{doing}: Azure Blob Storage answered {exc.status_code} {_code(exc)}",
            "check the storage account, and try again",
        ) from None
    except AzureError as exc:
        raise UserError(
            f"{doing}: cannot reach storage account {account} at {container.primary_hostname} "
            f"after {RETRIES} retries ({_network_reason(exc)})",
            "check the network and BlobEndpoint/EndpointSuffix in the connection string, then run again",
        ) from None


def _auth_error(account: str, doing: str, exc: HttpResponseError) -> UserError:
    return UserError(
        f"{doing}: storage account {account} refused the credentials ({_code(exc)})",
        f"check the AccountKey or SharedAccessSignature in {ENV_CONNECTION} (and its permissions)",
    )


def _code(exc: HttpResponseError) -> str:
    """The service's error code (e.g. ``AuthorizationFailure``), or the HTTP status."""
    code = exc.error_code
    return str(getattr(code, "value", code) or exc.status_code)


def _network_reason(exc: BaseException) -> str:
    """A short reason from the exception chain (an OS error's text), never the message (it may hold a URL)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.strerror:
            return seen.strerror
        for arg in getattr(seen, "args", ()):
            if isinstance(arg, OSError) and arg.strerror:
                return arg.strerror
        seen = seen.__cause__ or seen.__context__ or getattr(seen, "inner_exception", None)
    return type(exc).__name__


def cache_root() -> Path:
    """The cache folder for Azure downloads: ``$PARALLEL_DQN_CACHE/azure`` or ``~/.cache/parallel-dqn/azure``."""
    return Path(os.environ.get(ENV_CACHE) or DEFAULT_CACHE).expanduser() / "azure"


class AzureBlobStore:
    """A :class:`~parallel_dqn.data.store.Store` over a blob container, read through a local cache."""

    def __init__(self, container: ContainerClient, where: AzureLocation, cache: Path) -> None:
        self.container = container
        self.where = where
        self.cache = cache / container.account_name / where.container
        self.counts = CacheCounts()  # every file this store served, each counted once
        self._listed: dict[str, tuple[str, int]] = {}  # key -> (etag, size) from the last listing
        self._fresh: set[str] = set()  # keys whose cached copy was checked or downloaded by this store
        self._lock = threading.Lock()

    def describe(self) -> str:
        return self.where.spec()

    def source(self, symbol: str, day: date) -> str:
        """How one stock-day file is named in messages: its blob, not its cache path."""
        return self.where.url(day_key(symbol, day))

    def content_id(self, symbol: str, day: date) -> str:
        """The listed blob version (ETag and size) of a stock-day: identifies its content without a download."""
        key = day_key(symbol, day)
        with self._lock:
            listed = self._listed.get(key)
        if listed is None:
            self.list_days(symbol, day, day)
            with self._lock:
                listed = self._listed[key]
        return f"etag:{listed[0]}:{listed[1]}"

    def list_symbols(self) -> list[str]:
        root = f"{self.where.prefix}{KEY_ROOT}/"
        with azure_errors(self.container, f"listing {self.where.spec()}"):
            names = [item.name[len(root):].rstrip("/") for item in self.container.walk_blobs(root, delimiter="/")]
        return sorted(n for n in names if is_symbol(n))

    def list_days(self, symbol: str, start: date | None = None, end: date | None = None) -> list[date]:
        """List only the month prefixes that can hold days in ``[start, end]`` (the whole symbol if open-ended)."""
        if start is not None and end is not None:
            prefixes = [f"{month_prefix(symbol, y, m)}/" for y, m in _months(start, end)]
        else:
            prefixes = [f"{symbol_prefix(symbol)}/"]
        days = []
        with azure_errors(self.container, f"listing {symbol} in {self.where.spec()}"):
            for prefix in prefixes:
                for blob in self.container.list_blobs(name_starts_with=self.where.prefix + prefix):
                    key = blob.name[len(self.where.prefix):]
                    parsed = parse_key(key)
                    if parsed is None or parsed[0] != symbol:
                        continue
                    with self._lock:
                        self._listed[key] = (_etag(blob.etag), int(blob.size))
                    days.append(parsed[1])
        return sorted(d for d in days if (start is None or d >= start) and (end is None or d <= end))

    def fetch(self, symbol: str, day: date) -> Path:
        """The cached copy of one stock-day blob, downloaded first if missing or stale."""
        return self._ensure(day_key(symbol, day))

    def prefetch(self, symbol: str, days: Sequence[date]) -> CacheCounts:
        """Bring the files of ``symbol`` on ``days`` into the cache, :data:`DOWNLOAD_THREADS` at a time.

        Logs (INFO) and returns how many were downloaded and how many were already cached.
        """
        before = self.counts.downloaded, self.counts.cached, self.counts.bytes
        keys = [day_key(symbol, d) for d in days]
        with ThreadPoolExecutor(max_workers=DOWNLOAD_THREADS, thread_name_prefix="azure-fetch") as pool:
            for _ in pool.map(self._ensure, keys):
                pass
        now = self.counts
        done = CacheCounts(now.downloaded - before[0], now.cached - before[1], now.bytes - before[2])
        log.debug("%s: %s: %s", self.describe(), symbol, done.line())  # in the run's log file
        return done

    def _ensure(self, key: str) -> Path:
        """``key``'s cached path, up to date with the blob's ETag; counts each key once per store."""
        local = self.cache / key
        with self._lock:
            if key in self._fresh:
                return local
            listed = self._listed.get(key)
        blob = self.container.get_blob_client(self.where.prefix + key)
        if listed is None:
            with azure_errors(self.container, f"reading {self.where.url(key)}"):
                try:
                    props = blob.get_blob_properties()
                except ResourceNotFoundError as exc:
                    if exc.error_code == "ContainerNotFound":
                        raise
                    raise UserError(f"no bar file {self.where.url(key)}",
                                    "pick a symbol and day that the store holds") from None
            listed = (_etag(props.etag), int(props.size))
        size = None if _cached_copy_matches(local, *listed) else self._download(blob, key, local)
        with self._lock:
            self._fresh.add(key)
            if size is not None:
                self.counts.downloaded += 1
                self.counts.bytes += size
            else:
                self.counts.cached += 1
        return local

    def _download(self, blob: BlobClient, key: str, local: Path) -> int:
        """Download ``key`` atomically into ``local`` and record its ETag; the number of bytes written."""
        with azure_errors(self.container, f"downloading {self.where.url(key)}"), replacing(local) as part:
            with open(part, "wb") as out:
                stream = blob.download_blob(max_concurrency=1)
                size = stream.readinto(out)
        with replacing(_etag_file(local)) as part:
            part.write_text(_etag(stream.properties.etag))
        return size


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


def _months(start: date, end: date) -> Iterable[tuple[int, int]]:
    """Every (year, month) from ``start``'s to ``end``'s, inclusive."""
    y, m = start.year, start.month
    while (y, m) <= (end.year, end.month):
        yield y, m
        y, m = (y + 1, 1) if m == 12 else (y, m + 1)


def _etag(value: str | None) -> str:
    return (value or "").strip('"')


def _etag_file(local: Path) -> Path:
    return local.with_name(local.name + ".etag")


def _cached_copy_matches(local: Path, etag: str, size: int) -> bool:
    """True when ``local`` holds the blob version ``etag`` (its recorded ETag and its size agree)."""
    try:
        return _etag_file(local).read_text() == etag and local.stat().st_size == size
    except OSError:
        return False


def open_azure(location: str) -> AzureBlobStore:
    """Open ``azure://location`` for reading; checks the credentials and that the container exists."""
    container, where = connect(location)
    with azure_errors(container, f"opening {where.spec()}"):
        container.get_container_properties()
    return AzureBlobStore(container, where, cache_root())
