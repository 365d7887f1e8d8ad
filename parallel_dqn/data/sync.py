"""Copying the stock-day files of the key layout between any two of: a local folder, ``s3://``, ``gs://``, ``azure://``.

Idempotent: a destination file is skipped when its size and MD5 equal the source's. The MD5 is what each store
keeps anyway, so nothing is downloaded to compare: S3's ETag of a single-part upload, GCS's ``md5Hash``, Azure's
``Content-MD5``, and for a local file its computed digest (only when the sizes already agree). Where a store does
not know an object's MD5 (an S3 multipart upload), the file is copied again: never skipped on a guess.

Each file goes in one piece: to a store in one PUT (an object appears whole or not at all), to a local folder through
a temporary name and ``os.replace``, so an interrupted sync leaves no partial file and a rerun completes it.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import re
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from parallel_dqn.cloud import CloudURL, cloud_errors, filesystem, is_cloud_url
from parallel_dqn.data.layout import KEY_ROOT, check_symbol, day_key, parse_key, symbol_prefix
from parallel_dqn.data.remote import DOWNLOAD_THREADS, replacing
from parallel_dqn.errors import UserError

_HEX_MD5 = re.compile(r"[0-9a-f]{32}")


@dataclass
class Entry:
    """One stock-day file at one end: its size, and its MD5 (hex) when known without reading it."""

    size: int
    md5: str | None = None


@dataclass
class SyncCounts:
    """What a sync did: files copied, files skipped (already equal), bytes copied."""

    copied: int = 0
    skipped: int = 0
    bytes: int = 0

    def line(self, src: str, dst: str) -> str:
        return (f"synced {src} -> {dst}: copied {self.copied}, skipped {self.skipped} (same size and MD5), "
                f"{self.bytes} bytes")


class LocalEnd:
    """A local folder in the key layout."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.spec = str(root)

    def errors(self, doing: str) -> contextlib.AbstractContextManager[None]:
        return _local_errors(self.spec, doing)

    def entries(self, symbols: Sequence[str], start: date | None, end: date | None) -> dict[str, Entry]:
        from parallel_dqn.data.store import LocalStore

        store = LocalStore(self.root)
        found = {}
        for symbol in symbols or store.list_symbols():
            for day in store.list_days(symbol, start, end):
                key = day_key(symbol, day)
                found[key] = Entry((self.root / key).stat().st_size)
        return found

    def md5(self, key: str, entry: Entry) -> str:
        if entry.md5 is None:
            entry.md5 = hashlib.md5((self.root / key).read_bytes(), usedforsecurity=False).hexdigest()
        return entry.md5

    def read(self, key: str) -> bytes:
        return (self.root / key).read_bytes()

    def write(self, key: str, data: bytes) -> None:
        with replacing(self.root / key) as part:
            part.write_bytes(data)

    def prepare(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)


class StoreEnd:
    """An object store's prefix (``s3://``, ``gs://``, ``azure://``) through fsspec (:mod:`parallel_dqn.cloud`)."""

    def __init__(self, url: str) -> None:
        self.where = CloudURL.parse(url)
        self.spec = str(self.where)
        with cloud_errors(self.where, f"opening {self.spec}"):
            self.fs = filesystem(self.where)

    def errors(self, doing: str) -> contextlib.AbstractContextManager[None]:
        return cloud_errors(self.where, doing)

    def entries(self, symbols: Sequence[str], start: date | None, end: date | None) -> dict[str, Entry]:
        """The layout's files under the prefix (only the wanted symbols' folders are listed); missing bucket: error."""
        root = self.where.root
        self.fs.ls(self.where.bucket, detail=False)  # a missing bucket or refused credentials raise here
        found = {}
        for folder in [symbol_prefix(s) for s in symbols] or [KEY_ROOT]:
            for path, info in self.fs.find(f"{root}/{folder}", detail=True).items():
                key = path[len(root) + 1:]
                parsed = parse_key(key)
                if info.get("type", "file") != "file" or parsed is None:
                    continue
                if (symbols and parsed[0] not in symbols) or (start and parsed[1] < start) or (end and parsed[1] > end):
                    continue
                found[key] = Entry(int(info["size"]), stored_md5(info))
        return found

    def md5(self, key: str, entry: Entry) -> str | None:
        return entry.md5

    def read(self, key: str) -> bytes:
        return self.fs.cat_file(f"{self.where.root}/{key}")

    def write(self, key: str, data: bytes) -> None:
        self.fs.pipe_file(f"{self.where.root}/{key}", data)

    def prepare(self) -> None:
        """Create the bucket (container) when it does not exist yet (``exists`` would hide a refusal: ``ls`` raises)."""
        try:
            self.fs.ls(self.where.bucket, detail=False)
        except FileNotFoundError:
            self.fs.mkdir(self.where.bucket)


def stored_md5(info: dict[str, Any]) -> str | None:
    """The MD5 (hex) a store keeps for an object, from an fsspec listing; None when it keeps none."""
    gcs = info.get("md5Hash")
    if gcs:
        return _b64_hex(gcs)
    settings = info.get("content_settings") or {}
    azure = settings.get("content_md5") if isinstance(settings, dict) else getattr(settings, "content_md5", None)
    if azure:
        return bytes(azure).hex()
    tag = str(info.get("ETag") or "").strip('"').lower()
    return tag if _HEX_MD5.fullmatch(tag) else None  # S3 single-part; a multipart ETag has a "-N" suffix


def _b64_hex(value: str) -> str | None:
    try:
        return base64.b64decode(value).hex()
    except (binascii.Error, ValueError):
        return None


@contextlib.contextmanager
def _local_errors(spec: str, doing: str) -> Iterator[None]:
    try:
        yield
    except UserError:
        raise
    except OSError as err:
        raise UserError(f"{doing}: {spec}: {err.strerror or type(err).__name__}",
                        "check the folder and its permissions") from None


def open_end(spec: str) -> LocalEnd | StoreEnd:
    """``s3://``, ``gs://``, ``azure://`` URLs, or a local folder (``local:DIR`` or a path)."""
    if is_cloud_url(spec):
        return StoreEnd(spec)
    return LocalEnd(Path(spec.removeprefix("local:")).expanduser())


def sync(src_spec: str, dst_spec: str, symbols: Sequence[str] = (), start: date | None = None,
         end: date | None = None, progress: Callable[[int], Any] | None = None,
         total: Callable[[int], Any] | None = None) -> SyncCounts:
    """Copy every stock-day file of ``src_spec`` (of ``symbols`` from ``start`` to ``end``) that ``dst_spec`` lacks or
    holds differently; ``total(n)`` is told how many files are compared and ``progress(1)`` after each one."""
    for symbol in symbols:
        check_symbol(symbol)
    src, dst = open_end(src_spec), open_end(dst_spec)
    if src.spec == dst.spec:
        raise UserError(f"source and destination are both {src.spec}", "name two different places")
    with src.errors(f"listing {src.spec}"):
        wanted = src.entries(symbols, start, end)
    if not wanted:
        raise UserError(f"{src.spec} holds no bar files" + (" of the given stocks and dates" if symbols or start or end
                        else f" (none under {KEY_ROOT}/)"), "check the source, --symbols and --start/--end")
    with dst.errors(f"listing {dst.spec}"):
        dst.prepare()
        there = dst.entries(symbols, start, end)
    if total is not None:
        total(len(wanted))
    counts = SyncCounts()

    def one(key: str) -> int | None:
        """Copy ``key`` unless the destination holds it already; the bytes copied, None when skipped."""
        have, entry = there.get(key), wanted[key]
        if have is not None and have.size == entry.size:
            with src.errors(f"reading {src.spec}/{key}"):
                theirs = src.md5(key, entry)
            if theirs is not None and theirs == dst.md5(key, have):
                return None
        with src.errors(f"reading {src.spec}/{key}"):
            data = src.read(key)
        with dst.errors(f"writing {dst.spec}/{key}"):
            dst.write(key, data)
        return len(data)

    with ThreadPoolExecutor(max_workers=DOWNLOAD_THREADS, thread_name_prefix="sync") as pool:
        futures = [pool.submit(one, key) for key in sorted(wanted)]
        try:
            for future in futures:
                copied = future.result()
                if copied is None:
                    counts.skipped += 1
                else:
                    counts.copied += 1
                    counts.bytes += copied
                if progress is not None:
                    progress(1)
        except BaseException:
            for future in futures:
                future.cancel()
            raise
    return counts
