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

        emulator = os.environ.get("STORAGE_EMULATOR_HOST")
        if emulator:
            endpoint = emulator if "://" in emulator else f"http://{emulator}"
            return GCSFileSystem(skip_instance_cache=True, endpoint_url=endpoint, token="anon")
        return GCSFileSystem(skip_instance_cache=True)
    from adlfs import AzureBlobFileSystem

    secret = os.environ.get("AZURE_STORAGE_CONNECTION_STRING", "").strip()
    if not secret:
        raise UserError(f"cannot open {where}: AZURE_STORAGE_CONNECTION_STRING is not set", f"set it, e.g. in {KEYS_FILE}")
    return AzureBlobFileSystem(skip_instance_cache=True, connection_string=secret)


@contextlib.contextmanager
def cloud_errors(where: CloudURL | str, doing: str) -> Iterator[None]:
    """Turn a store's exception raised while ``doing`` something at ``where`` into one UserError line."""
    url = CloudURL.parse(where) if isinstance(where, str) else where
    credentials = SCHEMES[url.scheme][1]
    try:
        yield
    except UserError:
        raise
    except FileNotFoundError:
        raise UserError(f"{doing}: {url} does not exist", "check the bucket and prefix (`parallel-dqn data ls URL`)") from None
    except PermissionError:
        raise UserError(f"{doing}: access to {url} was refused", f"check {credentials}, e.g. in {KEYS_FILE}") from None
    except (OSError, ConnectionError, TimeoutError) as err:
        raise UserError(f"{doing}: {url} could not be reached after {RETRIES} tries ({type(err).__name__})",
                        "check the network and the endpoint variables, then run again") from None
