"""S3 and GCS (and any fsspec store :mod:`parallel_dqn.cloud` opens) as a data source: ``s3://BUCKET[/PREFIX]``,
``gs://BUCKET[/PREFIX]``.

The bucket holds the key layout of a local folder (:mod:`parallel_dqn.data.layout`) under ``PREFIX/``. The
filesystem, its credentials and endpoint come from :func:`parallel_dqn.cloud.filesystem` (each ecosystem's standard
variables) and its failures read as :func:`parallel_dqn.cloud.cloud_errors` makes them; reads go through the shared
ETag-validated cache (:mod:`parallel_dqn.data.remote`) in ``$PARALLEL_DQN_CACHE/SCHEME/BUCKET/PREFIX/KEY``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from parallel_dqn.cloud import CloudURL, cloud_errors, filesystem
from parallel_dqn.data.layout import KEY_ROOT, is_symbol
from parallel_dqn.data.remote import CachedRemoteStore, cache_root, etag


def version_tag(info: Mapping[str, Any]) -> str:
    """An object's version from an fsspec listing or ``info``: the ETag (S3, Azure, GCS), else GCS's generation."""
    for field in ("ETag", "etag", "generation", "md5Hash"):
        if info.get(field):
            return etag(str(info[field]))
    return ""


class FsspecStore(CachedRemoteStore):
    """A :class:`~parallel_dqn.data.store.Store` over an fsspec object store, read through the local cache."""

    def __init__(self, where: CloudURL, fs: Any, cache: Path) -> None:
        super().__init__(str(where), cache)
        self.where = where
        self.fs = fs

    def errors(self, doing: str) -> contextlib.AbstractContextManager[None]:
        return cloud_errors(self.where, doing)

    def _path(self, key: str) -> str:
        return f"{self.where.root}/{key}"

    def list_symbols(self) -> list[str]:
        with self.errors(f"listing {self.spec}"):
            try:
                names = self.fs.ls(self._path(KEY_ROOT), detail=False)
            except FileNotFoundError:  # the bucket is there (checked on opening): no stocks_intraday/ under it
                return []
        return sorted(n for n in (name.rstrip("/").rsplit("/", 1)[-1] for name in names) if is_symbol(n))

    def _list(self, prefix: str) -> Iterable[tuple[str, str, int]]:
        start = len(self.where.root) + 1
        found = self.fs.find(self._path(prefix), detail=True)
        for path, info in found.items():
            if info.get("type", "file") == "file":
                yield path[start:], version_tag(info), int(info["size"])

    def _stat(self, key: str) -> tuple[str, int] | None:
        try:
            info = self.fs.info(self._path(key))
        except FileNotFoundError:
            self.fs.ls(self.where.bucket, detail=False)  # a bucket deleted since the listing raises here
            return None
        return version_tag(info), int(info["size"])

    def _download(self, key: str, part: Path, listed: tuple[str, int]) -> tuple[int, str]:
        """One GET of the whole object; its version is the listed one (a newer upload shows as a new tag later)."""
        data = self.fs.cat_file(self._path(key))
        part.write_bytes(data)
        return len(data), listed[0]


def open_object_store(url: str) -> FsspecStore:
    """Open ``SCHEME://BUCKET[/PREFIX]`` for reading; checks the credentials and that the bucket exists."""
    where = CloudURL.parse(url)
    with cloud_errors(where, f"opening {where}"):
        fs = filesystem(where)
        fs.ls(where.bucket, detail=False)  # one listing request: a missing bucket or refused credentials fail here
    return FsspecStore(where, fs, cache_root(where.scheme) / where.root)
