"""Object stores through fsspec: ``s3://``, ``gs://`` and ``azure://`` URLs to a filesystem and a root path.

The one place that knows how each store is reached; data stores, run outputs and ``data sync`` all open their
filesystems here. Endpoints and credentials come from each ecosystem's standard variables (put them in
``.cloudkeys/api_keys.env``, loaded by ``./run_with_env.sh``), never from a flag or a file the project writes:

* S3 (s3fs): ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` or ``AWS_PROFILE`` (botocore's chain: instance roles
  too); ``AWS_ENDPOINT_URL`` (or ``AWS_ENDPOINT_URL_S3``) for MinIO, moto and other S3-compatible stores;
* GCS (gcsfs): ``GOOGLE_APPLICATION_CREDENTIALS`` (google-auth's chain); ``STORAGE_EMULATOR_HOST`` for an emulator
  (anonymous then);
* Azure (adlfs): ``AZURE_STORAGE_CONNECTION_STRING``.

:func:`cloud_errors` turns a store's failure into one :class:`~parallel_dqn.errors.UserError` line that names the
URL and what to check; no secret reaches a message.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass

from parallel_dqn.errors import UserError

#: URL scheme -> (the fsspec protocol, the variables that reach it, for messages)
SCHEMES = {
    "s3": ("s3", "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE (and AWS_ENDPOINT_URL for S3-compatible stores)"),
    "gs": ("gcs", "GOOGLE_APPLICATION_CREDENTIALS (or STORAGE_EMULATOR_HOST for an emulator)"),
    "azure": ("abfs", "AZURE_STORAGE_CONNECTION_STRING"),
}
KEYS_FILE = ".cloudkeys/api_keys.env loaded by ./run_with_env.sh"
#: connection attempts per request before a failure is reported (the clients' own retry settings)
RETRIES = 3
#: attempts per request, per scheme: botocore's is set to RETRIES; gcsfs's are fixed in the package (6, with
#: backoffs of about 0.5, 1, 2, 4 and 8 s: a GCS store that is down is reported after 20-35 s); adlfs takes the
#: Azure SDK's default policy from a connection string (the first try and 3 retries, 15 s and more apart)
TRIES = {"s3": RETRIES, "gs": 6, "azure": 4}


@dataclass(frozen=True)
class CloudURL:
    """``SCHEME://BUCKET[/PREFIX]`` split: the bucket (container) and the prefix without slashes at its ends."""

    scheme: str
    bucket: str
    prefix: str

    @classmethod
    def parse(cls, url: str) -> CloudURL:
        scheme, sep, rest = url.partition("://")
        if not sep or scheme not in SCHEMES:
            known = ", ".join(f"{s}://" for s in SCHEMES)
            raise UserError(f"{url!r} is not an object-store URL", f"write it as one of {known}BUCKET[/PREFIX]")
        bucket, _, prefix = rest.strip("/").partition("/")
        if not bucket:
            raise UserError(f"{url!r} names no bucket", f"write it as {scheme}://BUCKET[/PREFIX]")
        return cls(scheme, bucket, "/".join(p for p in prefix.split("/") if p))

    @property
    def root(self) -> str:
        """The path of the prefix inside the filesystem (``BUCKET/PREFIX``)."""
        return f"{self.bucket}/{self.prefix}" if self.prefix else self.bucket

    def __str__(self) -> str:
        return f"{self.scheme}://{self.root}"


def is_cloud_url(spec: str) -> bool:
    """Whether ``spec`` names an object store (``s3://``, ``gs://``, ``azure://``) rather than a local folder."""
    scheme, sep, _ = spec.partition("://")
    return bool(sep) and scheme in SCHEMES


def filesystem(url: CloudURL | str):
    """An fsspec filesystem for ``url``'s store, credentials and endpoint from the environment (see the module).

    Instances are not cached by fsspec (``skip_instance_cache``): a run that changes its variables (a test, a
    resumed job on another machine) gets a client that reads them again.
    """
    where = CloudURL.parse(url) if isinstance(url, str) else url
    if where.scheme == "s3":
        import s3fs

        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None
        return s3fs.S3FileSystem(
            skip_instance_cache=True, endpoint_url=endpoint,
            config_kwargs={"retries": {"max_attempts": RETRIES, "mode": "standard"}, "connect_timeout": 10,
                           "read_timeout": 60},
        )
    if where.scheme == "gs":
        # gcsfs.core's class: the package's default one first probes each bucket over gRPC, which emulators and
        # some proxies do not speak (60 s per bucket before it falls back)
        from gcsfs.core import GCSFileSystem

        # its last retry logs the whole traceback at ERROR; the failure reaches the user as one line instead
        logging.getLogger("gcsfs").setLevel(logging.CRITICAL)
        emulator = os.environ.get("STORAGE_EMULATOR_HOST")
        if emulator:
            endpoint = emulator if "://" in emulator else f"http://{emulator}"
            return GCSFileSystem(skip_instance_cache=True, endpoint_url=endpoint, token="anon")
        return GCSFileSystem(skip_instance_cache=True)
    from adlfs import AzureBlobFileSystem

    secret = os.environ.get("AZURE_STORAGE_CONNECTION_STRING", "").strip()
    if not secret:
        raise UserError(f"cannot open {where}: AZURE_STORAGE_CONNECTION_STRING is not set", f"set it, e.g. in {KEYS_FILE}")
    logging.getLogger("azure").setLevel(logging.WARNING)  # the SDK's per-request INFO lines are noise
    try:
        return AzureBlobFileSystem(skip_instance_cache=True, connection_string=secret)
    except ValueError:
        raise UserError(f"cannot open {where}: AZURE_STORAGE_CONNECTION_STRING is malformed",
                        "copy the whole connection string (Storage account -> Access keys)") from None


@contextlib.contextmanager
def cloud_errors(where: CloudURL | str, doing: str) -> Iterator[None]:
    """Turn a store's exception raised while ``doing`` something at ``where`` into one UserError line."""
    url = CloudURL.parse(where) if isinstance(where, str) else where
    try:
        yield
    except UserError:
        raise
    except Exception as err:  # noqa: BLE001 - classified below; anything not a store's failure is raised as it was
        kind = _classify(err)
        if kind is None:
            raise
        raise _error_line(kind, url, doing, err) from None


def _classify(err: BaseException) -> str | None:
    """``missing``, ``refused``, ``unreachable`` or ``rejected`` (another answer), or None: not a store's failure.

    The status of an HTTP answer the clients leave as their own exception (the Azure SDK's through adlfs, gcsfs's
    HttpError) decides for it; the text of an exception never does.
    """
    refused, unreachable = _client_errors()
    if isinstance(err, FileNotFoundError):
        return "missing"
    if isinstance(err, (PermissionError, *refused)):
        return "refused"
    status = getattr(err, "status_code", None) or getattr(err, "code", None)
    if isinstance(status, int) and 400 <= status < 600:
        return {401: "refused", 403: "refused", 404: "missing"}.get(status, "rejected")
    if isinstance(err, (ConnectionError, TimeoutError, *unreachable)):
        return "unreachable"
    if isinstance(err, OSError):
        # s3fs turns an answer it has no closer exception for into OSError(errno, the service's message)
        return "rejected" if err.errno and err.strerror else "unreachable"
    return None


def _error_line(kind: str, url: CloudURL, doing: str, err: BaseException) -> UserError:
    """The one line for a classified failure: what happened at ``url`` and what to check (never a secret)."""
    if kind == "missing":
        return UserError(f"{doing}: {url} does not exist", "check the bucket and prefix (`parallel-dqn data ls URL`)")
    if kind == "refused":
        return UserError(f"{doing}: access to {url} was refused",
                         f"check {SCHEMES[url.scheme][1]}, e.g. in {KEYS_FILE}")
    if kind == "unreachable":
        return UserError(f"{doing}: {url} could not be reached after {TRIES[url.scheme]} tries ({type(err).__name__})",
                         "check the network and the endpoint variables, then run again")
    status = getattr(err, "status_code", None) or getattr(err, "code", None)
    what = f"HTTP {status}" if isinstance(status, int) else (getattr(err, "strerror", None) or type(err).__name__)
    return UserError(f"{doing}: the store refused the request for {url} ({what})",
                     "check the bucket name and the request, then run again")


def _client_errors() -> tuple[tuple[type[BaseException], ...], tuple[type[BaseException], ...]]:
    """The clients' own exceptions that are not OSErrors: (credentials refused or missing, store not reached).

    s3fs and gcsfs turn a store's HTTP answers into OSErrors (404 FileNotFoundError, 403 PermissionError), but a
    connection that fails after retries surfaces as botocore's or aiohttp's exception, and missing AWS credentials
    as botocore's; adlfs lets the Azure SDK's through. Only the installed clients are imported.
    """
    refused: list[type[BaseException]] = []
    unreachable: list[type[BaseException]] = []
    with contextlib.suppress(ImportError):
        from botocore import exceptions as boto

        refused += [boto.NoCredentialsError, boto.PartialCredentialsError]
        unreachable.append(boto.BotoCoreError)
    with contextlib.suppress(ImportError):
        import aiohttp

        unreachable.append(aiohttp.ClientError)
    with contextlib.suppress(ImportError):
        from azure.core import exceptions as az

        refused.append(az.ClientAuthenticationError)
        unreachable.append(az.ServiceRequestError)
    with contextlib.suppress(ImportError):
        from google.auth import exceptions as google

        refused.append(google.DefaultCredentialsError)
    return tuple(refused), tuple(unreachable)
