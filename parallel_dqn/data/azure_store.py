"""Azure Blob Storage as a data source: ``azure://CONTAINER[/PREFIX]``.

The container holds the same key layout as a local folder (:mod:`parallel_dqn.data.layout`),
optionally under ``PREFIX/``. The connection string comes from ``AZURE_STORAGE_CONNECTION_STRING``
(put it in ``.cloudkeys/api_keys.env`` and run through ``./run_with_env.sh``); it never appears in
a message, a log line or an output.

Reads go through the local read-through cache every remote store shares (:mod:`parallel_dqn.data.remote`:
ETag-validated, atomic, shared by ranks), in ``$PARALLEL_DQN_CACHE/azure/ACCOUNT/CONTAINER/KEY``. This module
supplies what is Azure's own: the SDK client with its retry policy, and the translation of its error codes
(``AuthorizationFailure``, ``ContainerNotFound``, the network after retries) into one
:class:`~parallel_dqn.errors.UserError` line.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path


from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
)
from azure.storage.blob import BlobServiceClient, ContainerClient, ExponentialRetry

from parallel_dqn.data.layout import KEY_ROOT, is_symbol
from parallel_dqn.data.remote import DOWNLOAD_THREADS, CacheCounts, CachedRemoteStore, cache_root, etag, replacing
from parallel_dqn.errors import UserError

__all__ = ["DOWNLOAD_THREADS", "RETRIES", "AzureBlobStore", "AzureLocation", "CacheCounts", "azure_errors",
           "connect", "open_azure", "replacing"]

log = logging.getLogger(__name__)

ENV_CONNECTION = "AZURE_STORAGE_CONNECTION_STRING"
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


class AzureBlobStore(CachedRemoteStore):
    """A :class:`~parallel_dqn.data.store.Store` over a blob container through the Azure SDK, read through a local
    cache (:class:`~parallel_dqn.data.remote.CachedRemoteStore`: ``$PARALLEL_DQN_CACHE/azure/ACCOUNT/CONTAINER``)."""

    def __init__(self, container: ContainerClient, where: AzureLocation, cache: Path) -> None:
        super().__init__(where.spec(), cache / container.account_name / where.container)
        self.container = container
        self.where = where

    def url(self, key: str) -> str:
        return self.where.url(key)

    def errors(self, doing: str) -> contextlib.AbstractContextManager[None]:
        return azure_errors(self.container, doing)

    def list_symbols(self) -> list[str]:
        root = f"{self.where.prefix}{KEY_ROOT}/"
        with azure_errors(self.container, f"listing {self.where.spec()}"):
            names = [item.name[len(root):].rstrip("/") for item in self.container.walk_blobs(root, delimiter="/")]
        return sorted(n for n in names if is_symbol(n))

    def _list(self, prefix: str) -> Iterable[tuple[str, str, int]]:
        for blob in self.container.list_blobs(name_starts_with=self.where.prefix + prefix):
            yield blob.name[len(self.where.prefix):], etag(blob.etag), int(blob.size)

    def _stat(self, key: str) -> tuple[str, int] | None:
        try:
            props = self.container.get_blob_client(self.where.prefix + key).get_blob_properties()
        except ResourceNotFoundError as exc:
            if exc.error_code == "ContainerNotFound":
                raise
            return None
        return etag(props.etag), int(props.size)

    def _download(self, key: str, part: Path, listed: tuple[str, int]) -> tuple[int, str]:
        with open(part, "wb") as out:
            stream = self.container.get_blob_client(self.where.prefix + key).download_blob(max_concurrency=1)
            size = stream.readinto(out)
        return size, etag(stream.properties.etag)


def open_azure(location: str) -> AzureBlobStore:
    """Open ``azure://location`` for reading; checks the credentials and that the container exists."""
    container, where = connect(location)
    with azure_errors(container, f"opening {where.spec()}"):
        container.get_container_properties()
    return AzureBlobStore(container, where, cache_root("azure"))
