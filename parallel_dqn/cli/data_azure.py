"""``parallel-dqn data upload | ls | download``: moving the key layout to and from object stores.

* ``upload --data DIR --to azure://CONTAINER[/PREFIX]``: creates the container if needed and uploads
  every bar file whose content (MD5) is not already there, so a repeated upload sends nothing; to
  ``s3://`` or ``gs://`` it is ``data sync DIR URL`` (:mod:`parallel_dqn.data.sync`).
* ``ls SOURCE``: per stock, its date range, file count and gaps (weekdays in the range without a file).
* ``download SOURCE --to DIR``: mirrors a store into a local folder, skipping identical files.
"""

from __future__ import annotations

import argparse
import filecmp
import hashlib
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from parallel_dqn.data.layout import KEY_ROOT, day_key
from parallel_dqn.errors import UserError

AZURE = "azure://"
_SHOWN_GAPS = 5


def register(sub: Any, flag: Callable[..., None]) -> None:
    """Add the subcommands to ``parallel-dqn data``."""
    u = sub.add_parser("upload", help="upload a local data folder to an object store (skips what is there)")
    flag(u, "data", required=True, help="local data folder in the key layout")
    flag(u, "to", required=True, help="azure://CONTAINER[/PREFIX], s3://BUCKET[/PREFIX] or gs://BUCKET[/PREFIX]")
    u.set_defaults(handler=upload)
    ls = sub.add_parser("ls", help="per stock: date range, file count and gaps")
    ls.add_argument("source", help="data folder, local:DIR, s3://BUCKET[/PREFIX], gs://... or azure://...")
    flag(ls, "stocks", nargs="+", default=None, help="only these stocks")
    ls.set_defaults(handler=list_source)
    d = sub.add_parser("download", help="mirror a data source into a local folder (skips identical files)")
    d.add_argument("source", help="azure://, s3:// or gs://BUCKET[/PREFIX] (or any data source)")
    flag(d, "to", required=True, help="local folder to write the key layout into")
    flag(d, "stocks", nargs="+", default=None, help="only these stocks")
    d.set_defaults(handler=download)


def upload(args: argparse.Namespace) -> int:
    from azure.core.exceptions import ResourceExistsError
    from azure.storage.blob import ContentSettings

    from parallel_dqn.cloud import is_cloud_url
    from parallel_dqn.data.azure_store import DOWNLOAD_THREADS, azure_errors, connect
    from parallel_dqn.data.store import LocalStore, open_store
    from parallel_dqn.data.sync import sync

    if not is_cloud_url(args.to):
        raise UserError(f"--to {args.to} is not an object store", "write it as azure://, s3:// or gs://BUCKET[/PREFIX]")
    if not args.to.startswith(AZURE):  # S3 and GCS: the same thing as data sync
        print(sync(args.data, args.to).line(args.data, args.to))
        return 0
    source = open_store(args.data)
    if not isinstance(source, LocalStore):
        raise UserError(f"--data {args.data} is not a local folder", "upload from a local folder in the key layout")
    files = {day_key(s, d): source.root / day_key(s, d) for s in source.list_symbols() for d in source.list_days(s)}
    if not files:
        raise UserError(f"{source.describe()} holds no bar files", "check --data")
    container, where = connect(args.to[len(AZURE):])

    def put(item: tuple[str, bytes]) -> None:
        key, md5 = item
        settings = ContentSettings(content_type="application/octet-stream", content_md5=bytearray(md5))
        with open(files[key], "rb") as fh:
            container.upload_blob(where.prefix + key, fh, overwrite=True, content_settings=settings)

    with azure_errors(container, f"uploading to {where.spec()}"):
        try:
            container.create_container()
        except ResourceExistsError:
            pass
        there = {
            blob.name[len(where.prefix):]: bytes(blob.content_settings.content_md5 or b"")
            for blob in container.list_blobs(name_starts_with=f"{where.prefix}{KEY_ROOT}/")
        }
        todo = [(key, md5) for key, path in files.items() if (md5 := _md5(path)) != there.get(key)]
        with ThreadPoolExecutor(max_workers=DOWNLOAD_THREADS) as pool:
            for _ in pool.map(put, todo):
                pass
    print(f"uploaded {len(todo)}, skipped {len(files) - len(todo)} (already there) to {where.spec()}")
    return 0


def _md5(path: Path) -> bytes:
    return hashlib.md5(path.read_bytes(), usedforsecurity=False).digest()


def list_source(args: argparse.Namespace) -> int:
    import pandas as pd

    from parallel_dqn.data.store import open_store
    from parallel_dqn.training.plan import resolve_symbols

    store = open_store(args.source)
    symbols = resolve_symbols(store, args.stocks or [])
    print(f"{'stock':10s} {'first':10s}   {'last':10s} {'files':>6s} {'gaps':>5s}")
    for symbol in symbols:
        days = store.list_days(symbol)
        if not days:
            print(f"{symbol:10s} no files")
            continue
        have = set(days)
        gaps = [d for d in pd.bdate_range(days[0], days[-1]).date if d not in have]
        shown = ", ".join(d.isoformat() for d in gaps[:_SHOWN_GAPS]) + (" ..." if len(gaps) > _SHOWN_GAPS else "")
        print(f"{symbol:10s} {days[0]} .. {days[-1]} {len(days):6d} {len(gaps):5d}" + (f"  ({shown})" if gaps else ""))
    print(f"{len(symbols)} stocks in {store.describe()}; gaps are weekdays without a file (holidays included)")
    return 0


def download(args: argparse.Namespace) -> int:
    from parallel_dqn.data.remote import replacing
    from parallel_dqn.data.store import open_store
    from parallel_dqn.training.plan import resolve_symbols

    store = open_store(args.source)
    out = Path(args.to).expanduser()
    copied = same = 0
    for symbol in resolve_symbols(store, args.stocks or []):
        days = store.list_days(symbol)
        if hasattr(store, "prefetch"):
            store.prefetch(symbol, days)
        for day in days:
            src, dst = store.fetch(symbol, day), out / day_key(symbol, day)
            if dst.is_file() and filecmp.cmp(src, dst, shallow=False):
                same += 1
                continue
            with replacing(dst) as part:
                shutil.copyfile(src, part)
            copied += 1
    print(f"downloaded {copied}, skipped {same} (already identical) from {store.describe()} into {out}")
    return 0
