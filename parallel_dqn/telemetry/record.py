"""The run record (``run.json``): what code, data, seed and libraries produced a run.

It answers "can I trust and repeat this result?" months later: the git commit of the code
(and whether the tree had uncommitted changes), a fingerprint of the exact stock-day files
the run read, the seed, the library versions, the host, where it ran (:mod:`~parallel_dqn.telemetry.placement`: the
scheduler, the container, cores, memory, GPUs) and the start/end time. It never
holds secrets: of the environment only the schedulers' job identifiers, no credentials, only the data location as given.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import importlib.metadata
import platform
import socket
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from parallel_dqn.config import Config
from parallel_dqn.data.layout import day_key
from parallel_dqn.data.store import Store
from parallel_dqn.telemetry.placement import placement

#: distributions whose versions the record names (read from metadata: nothing is imported)
LIBRARIES = ("torch", "numpy", "pandas", "pyarrow", "mpi4py", "gymnasium")
_CHUNK = 1 << 20


def git_state(where: Path | None = None) -> dict[str, Any]:
    """``{"commit", "dirty"}`` of the git checkout holding ``where`` (the package); Nones outside git."""
    folder = where or Path(__file__).resolve().parent

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=10, check=False
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return {"commit": None, "dirty": None}
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit.strip(), "dirty": None if status is None else bool(status.strip())}


def library_versions() -> dict[str, str | None]:
    """Python and each of :data:`LIBRARIES` (None where not installed)."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def stock_day_files(store: Store, symbols: Sequence[str], first: dt.date, last: dt.date) -> list[tuple[str, str]]:
    """``(key, content id)`` of every stock-day file of ``symbols`` from ``first`` to ``last``.

    The content id is a remote store's version tag when it has one (Azure: the blob's ETag and size,
    known from the listing, so rank 0 downloads nothing), else ``size:sha256`` of the local file.
    """
    version_tag = getattr(store, "content_id", None)
    rows = []
    for sym in symbols:
        for day in store.list_days(sym, first, last):
            if version_tag is not None:
                rows.append((day_key(sym, day), version_tag(sym, day)))
            else:
                path = store.fetch(sym, day)
                rows.append((day_key(sym, day), f"{path.stat().st_size}:{file_sha256(path)}"))
    return rows


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def data_fingerprint(data_files: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """Number of files and one sha256 over the sorted ``(key, content id)`` pairs."""
    rows = sorted(data_files)
    digest = hashlib.sha256()
    for key, content in rows:
        digest.update(f"{key}\t{content}\n".encode())
    return {"files": len(rows), "sha256": digest.hexdigest()}


def _iso(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return dt.datetime.fromtimestamp(seconds, tz=dt.UTC).isoformat(timespec="seconds")


def run_record(
    cfg: Config,
    symbols: Sequence[str],
    data_files: Iterable[tuple[str, str]],
    period: tuple[str, str] | None = None,
    started: float | None = None,
    finished: float | None = None,
) -> dict[str, Any]:
    """The run record: code commit, data fingerprint, seed, versions, host and placement, start/end (epoch seconds in)."""
    return {
        "code": git_state(),
        "data": {
            "source": str(cfg.data.data),
            "stocks": list(symbols),
            "first_timestamp": period[0] if period else None,
            "last_timestamp": period[1] if period else None,
            **data_fingerprint(data_files),
        },
        "seed": cfg.run.seed,
        "versions": library_versions(),
        "hostname": socket.gethostname(),
        "where": placement(),  # scheduler (local, SLURM, AWS Batch, Kubernetes), container, cores, memory, GPUs
        "started": _iso(started),
        "finished": _iso(finished),
    }
