"""A consolidated local cache of built cross-sections: a second run of the same data starts in seconds.

An entry is one folder, ``FOLDER/KEY/``: every array field of a
:class:`~parallel_dqn.data.crosssection.CrossSection` (and of the feature statistics) as a ``.npy`` file,
the other fields and a description in ``manifest.json``. Fields are stored generically, by iterating
the dataclass, so a change of its fields needs no change here. ``KEY`` is a digest of everything the
cross-section depends on (:func:`cache_key`): the identity of every source file (its key, size,
modification time, device and inode, or a remote store's ETag), the run's own recipe (stocks, shards, periods,
feature and graph settings), the source of the modules that build it and the library versions.
Changing any of them misses the cache.

Writes are atomic: an entry is written into a temporary folder beside it and renamed into place under
a lock, so a killed run never leaves a half entry under a key, and of two runs writing the same entry
at once the second discards its copy. An entry whose files do not match its manifest (truncated,
damaged) is not trusted: the run rebuilds it and replaces it. Entries are memory-mapped read-only, so
the processes of a node that open the same entry share one copy of it in the page cache.

Where (``data.cache``): ``auto`` is ``$PARALLEL_DQN_CACHE/crosssections`` when that is set, else the
first of ``$SLURM_TMPDIR``, ``$TMPDIR`` (node-local on most clusters) and ``~/.cache`` with
``parallel-dqn/crosssections`` appended; ``off`` builds every run from the files; anything else is the
folder itself. Entries not used for :data:`MAX_IDLE_DAYS` are removed when a new entry is written;
deleting the folder clears the cache.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import fcntl
import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import platform
import shutil
import socket
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np

from parallel_dqn.data.crosssection import CrossSection
from parallel_dqn.data.features import FeatureStats
from parallel_dqn.data.layout import day_key
from parallel_dqn.data.store import Store
from parallel_dqn.errors import UserError

log = logging.getLogger(__name__)

#: bump when the layout of an entry changes
FORMAT_VERSION = 1
#: the modules whose source decides what a cross-section holds: an edit to any of them misses the cache
BUILD_MODULES = (
    "parallel_dqn.data.align",
    "parallel_dqn.data.cache",
    "parallel_dqn.data.crosssection",
    "parallel_dqn.data.features",
    "parallel_dqn.data.layout",
    "parallel_dqn.data.loader",
    "parallel_dqn.data.panel",
    "parallel_dqn.data.validation",
    "parallel_dqn.training.driver",
)
#: libraries whose version may change a computed value in the last bit
LIBRARIES = ("numpy", "pandas", "pyarrow")
SUBFOLDER = Path("parallel-dqn") / "crosssections"
ENV_CACHE = "PARALLEL_DQN_CACHE"  # the same variable as the object stores' download cache (data.remote)
MANIFEST = "manifest.json"
#: an entry not used for this many days is removed when a new one is written
MAX_IDLE_DAYS = 30
#: a temporary folder of another host (or of a live process) older than this is a leftover
STALE_TEMP_S = 24 * 3600
_STATS = ("stats.mean", "stats.std")
_TEMP, _TRASH, _LOCK = ".tmp-", ".trash-", ".lock"

T = TypeVar("T")


# ---- where ---------------------------------------------------------------------------------------
def cache_folder(setting: str, env: Mapping[str, str] | None = None) -> Path | None:
    """The folder ``data.cache`` names: None for ``off``; ``auto`` resolved as in the module's docstring."""
    env = os.environ if env is None else env
    if setting == "off":
        return None
    if setting != "auto":
        return Path(setting).expanduser()
    if env.get(ENV_CACHE):
        return Path(env[ENV_CACHE]).expanduser() / SUBFOLDER.name
    for name in ("SLURM_TMPDIR", "TMPDIR"):
        if env.get(name):
            return Path(env[name]) / SUBFOLDER
    return Path("~/.cache").expanduser() / SUBFOLDER


def open_cache(setting: str) -> CrossSectionCache | None:
    """The cache ``data.cache`` names, its folder made; None when off.

    A folder that cannot be made or written: a UserError when the user named it, else (``auto``) a
    warning and None (the run builds its cross-section as without a cache).
    """
    folder = cache_folder(setting)
    if folder is None:
        return None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if not os.access(folder, os.W_OK | os.X_OK):
            raise PermissionError(13, "Permission denied")
    except OSError as exc:
        why = f"the cross-section cache folder {folder} cannot be written ({exc.strerror or exc})"
        if setting != "auto":
            raise UserError(why, "set data.cache to a folder you can write, or to off") from None
        log.warning("%s: building without a cache (set data.cache to a folder, or to off)", why)
        return None
    return CrossSectionCache(folder)


# ---- the key -------------------------------------------------------------------------------------
def source_digest(store: Store, symbols: Sequence[str], start: dt.date, end: dt.date) -> str:
    """A digest of the identity of every file of ``symbols`` from ``start`` to ``end`` (inclusive).

    The identity is a remote store's version tag and name (Azure: ETag and size from its listing, so
    nothing is downloaded; ``azure://CONTAINER``), else the local file's size, modification time, device
    and inode (however its folder is spelled: relative, absolute, through a link). Contents are not
    read: that would cost what the cache saves.
    """
    version = getattr(store, "content_id", None)
    root = getattr(store, "root", None)  # a local folder: its files are stat()ed directly (fetch checks each first)
    digest = hashlib.sha256(store.describe().encode() if version is not None else b"local")
    for symbol in symbols:
        for day in store.list_days(symbol, start, end):
            if version is not None:
                identity = version(symbol, day)
            else:
                st = os.stat(f"{root}/{day_key(symbol, day)}" if root is not None else store.fetch(symbol, day))
                identity = f"{st.st_size}:{st.st_mtime_ns}:{st.st_dev}:{st.st_ino}"
            digest.update(f"{day_key(symbol, day)}\t{identity}\n".encode())
    return digest.hexdigest()


def code_digest(modules: Sequence[str] = BUILD_MODULES) -> str:
    """A digest of the source files of ``modules`` (found, not imported)."""
    digest = hashlib.sha256()
    for name in modules:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            raise RuntimeError(f"cannot find the source of {name}")
        digest.update(name.encode() + b"\0" + Path(spec.origin).read_bytes() + b"\0")
    return digest.hexdigest()


def cache_key(recipe: Mapping[str, Any], sources: Sequence[str]) -> str:
    """The key of the cross-section built by ``recipe`` (settings, stocks, periods) from ``sources``
    (:func:`source_digest` of each part of the stocks), with the format, code and library versions."""
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    tree = {
        "format": FORMAT_VERSION,
        "code": code_digest(),
        "versions": versions,
        "machine": platform.machine(),
        "fields": [f.name for f in dataclasses.fields(CrossSection)],
        "recipe": recipe,
        "sources": list(sources),
    }
    text = json.dumps(tree, sort_keys=True, default=_canonical, allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()[:40]


def _canonical(value: Any) -> Any:
    """JSON for what :func:`json.dumps` cannot write itself: arrays by digest, dates, tuples."""
    if isinstance(value, np.ndarray):
        data = np.ascontiguousarray(value)
        return {"dtype": data.dtype.str, "shape": data.shape, "sha256": hashlib.sha256(data.tobytes()).hexdigest()}
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    if isinstance(value, np.generic):
        return value.item()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    raise TypeError(f"cannot put a {type(value).__name__} in a cache key")


# ---- the processes of a node -----------------------------------------------------------------------
class NodeGroup(Protocol):
    """The processes of one node that share the cache's entries (an MPI job's ranks on that node).

    One of them, the leader, checks and writes an entry; the others open it once the leader says so.
    """

    @property
    def leader(self) -> bool: ...

    def from_leader(self, value: T, timeout: float | None = None) -> T:
        """The leader's ``value`` on every process of the group (each waits until the leader has it, up to
        ``timeout`` seconds: None, the group's own bound)."""
        ...


class Alone:
    """A group of one process (single-process mode): it leads, and waits for nobody."""

    leader = True

    def from_leader(self, value: T, timeout: float | None = None) -> T:
        return value


# ---- entries -------------------------------------------------------------------------------------
class CrossSectionCache:
    """Entries under ``root``: :meth:`holds` (checked), :meth:`put` (atomic), :meth:`get` (memory-mapped)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def entry(self, key: str) -> Path:
        return self.root / key

    def holds(self, key: str) -> bool:
        """True when the entry of ``key`` is complete (every file as its manifest says); marks it used."""
        if _open_entry(self.entry(key), key) is None:
            return False
        with contextlib.suppress(OSError):  # a read-only cache folder is still usable
            os.utime(self.entry(key) / MANIFEST)
        return True

    def get(self, key: str) -> tuple[CrossSection, FeatureStats]:
        """The cross-section and feature statistics of ``key``, memory-mapped read-only."""
        opened = _open_entry(self.entry(key), key)
        if opened is None:
            raise UserError(
                f"the cross-section cache entry {self.entry(key)} went missing or was damaged while this run read it",
                "run again (it will be rebuilt); if this repeats, set data.cache = off",
            )
        return opened

    def put(self, key: str, xs: CrossSection, stats: FeatureStats, about: Mapping[str, Any] | None = None) -> bool:
        """Write the entry of ``key`` atomically; False when a complete one was there already (this copy is dropped).

        A damaged entry in the way is replaced. ``about``: what the entry was built from, for people
        looking into the folder.
        """
        arrays, values = _fields(xs)
        arrays.update({_STATS[0]: np.asarray(stats.mean), _STATS[1]: np.asarray(stats.std)})
        manifest = {
            "format": FORMAT_VERSION,
            "key": key,
            "arrays": {name: {"dtype": a.dtype.str, "shape": list(a.shape)} for name, a in arrays.items()},
            "values": values,
            "session_seconds": stats.session_seconds,
            "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "about": dict(about or {}),
        }
        self.root.mkdir(parents=True, exist_ok=True)
        temp = self.root / f"{_TEMP}{key[:12]}-{_host()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        temp.mkdir()
        try:
            for name, array in arrays.items():
                with open(temp / f"{name}.npy", "wb") as f:
                    np.save(f, np.ascontiguousarray(array), allow_pickle=False)
                    f.flush()
                    os.fsync(f.fileno())  # complete on disk before the rename makes it an entry
            with open(temp / MANIFEST, "w") as f:
                json.dump(manifest, f, indent=1, default=_canonical)
                f.flush()
                os.fsync(f.fileno())
            with self._locked():
                target = self.entry(key)
                if target.exists():
                    if _open_entry(target, key) is not None:
                        return False
                    log.warning("replacing the damaged cross-section cache entry %s", target)
                    _remove(target)
                os.rename(temp, target)
                self._prune(keep=key)
            return True
        finally:
            shutil.rmtree(temp, ignore_errors=True)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Exclusive among the processes (of any host) changing this folder's entries."""
        with open(self.root / _LOCK, "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def _prune(self, keep: str) -> None:
        """Remove entries not used for MAX_IDLE_DAYS and what killed runs left behind (under the lock)."""
        now = time.time()
        for path in self.root.iterdir():
            name = path.name
            try:
                if name.startswith(_TRASH):
                    _remove(path)
                elif name.startswith(_TEMP):
                    if _abandoned(name, now - path.stat().st_mtime):
                        _remove(path)
                elif path.is_dir() and name != keep and not name.startswith("."):
                    used = (path / MANIFEST).stat().st_mtime if (path / MANIFEST).exists() else path.stat().st_mtime
                    if now - used > MAX_IDLE_DAYS * 86400:
                        log.info("removing the cross-section cache entry %s (not used for %d days)", path, MAX_IDLE_DAYS)
                        _remove(path)
            except OSError:
                continue


def _fields(xs: CrossSection) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The dataclass's fields: arrays, and the others (JSON values: the symbols)."""
    arrays, values = {}, {}
    for f in dataclasses.fields(xs):
        value = getattr(xs, f.name)
        if isinstance(value, np.ndarray):
            if value.dtype.hasobject:
                raise TypeError(f"CrossSection.{f.name}: an object array cannot be cached")
            arrays[f.name] = value
        elif isinstance(value, (tuple, list, str, int, float, bool)) or value is None:
            values[f.name] = list(value) if isinstance(value, tuple) else value
        else:
            raise TypeError(f"CrossSection.{f.name}: a {type(value).__name__} cannot be cached")
    return arrays, values


def _open_entry(folder: Path, key: str) -> tuple[CrossSection, FeatureStats] | None:
    """The entry's arrays memory-mapped read-only; None unless its manifest and every file agree."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        if manifest.get("format") != FORMAT_VERSION or manifest.get("key") != key:
            return None
        specs, values = manifest["arrays"], manifest["values"]
        names = [f.name for f in dataclasses.fields(CrossSection)]
        if set(specs) | set(values) != set(names) | set(_STATS) or set(specs) & set(values):
            return None
        arrays = {name: _map(folder / f"{name}.npy", spec) for name, spec in specs.items()}
        if any(a is None for a in arrays.values()):
            return None
        fields = {n: arrays[n] if n in arrays else _value(values[n]) for n in names}
        stats = FeatureStats(arrays[_STATS[0]], arrays[_STATS[1]], float(manifest["session_seconds"]))
        return CrossSection(**fields), stats
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _map(path: Path, spec: Mapping[str, Any]) -> np.ndarray | None:
    """``path`` memory-mapped read-only, if it holds exactly the array ``spec`` describes (else None)."""
    shape, dtype = tuple(spec["shape"]), np.dtype(spec["dtype"])
    if 0 in shape:  # nothing to map
        array = np.load(path, allow_pickle=False)
        return array if array.shape == shape and array.dtype == dtype else None
    mapped = np.load(path, mmap_mode="r", allow_pickle=False)
    if mapped.shape != shape or mapped.dtype != dtype or not mapped.flags.c_contiguous:
        return None
    if path.stat().st_size != mapped.offset + mapped.nbytes:
        return None
    return mapped.view(np.ndarray)  # a plain array over the map (read-only), not an np.memmap


def _value(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _host() -> str:
    return socket.gethostname().split(".")[0].replace("-", "_") or "host"


def _abandoned(name: str, age_s: float) -> bool:
    """A temporary folder whose writer is gone: a dead process of this host, or any writer after a day."""
    parts = name[len(_TEMP):].split("-")
    if len(parts) == 4 and parts[1] == _host() and parts[2].isdigit():
        try:
            os.kill(int(parts[2]), 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            pass
    return age_s > STALE_TEMP_S


def _remove(path: Path) -> None:
    """Move ``path`` aside (atomic), then delete it: no reader ever sees a half-deleted entry."""
    trash = path.with_name(f"{_TRASH}{uuid.uuid4().hex[:12]}")
    try:
        os.rename(path, trash)
    except FileNotFoundError:
        return
    shutil.rmtree(trash, ignore_errors=True)
