"""Checkpoints on disk: one folder per checkpoint, written atomically, verified before use, rotated.

Layout, inside a run's output folder::

    checkpoints/
      ckpt-000007/
        server.pt        rank 0: networks, optimizer, meta-policy, counters, episode books, recorder, RNG
        worker-000.pt    one per worker: replay buffer, RNG, place in the episode schedule, local networks
        ...
        manifest.json    sequence number, reason, progress, the resolved config, size + sha256 of every
                         file, and a checksum of the manifest itself
      .staging-000008/   a checkpoint being written; renamed to ckpt-000008 once every file is in it

A checkpoint becomes visible only through the rename of its complete staging folder, so a
crash (even ``kill -9``) in the middle of writing leaves the earlier checkpoints as they were
plus a staging folder that is ignored and removed later. Before a checkpoint is used, the
manifest's checksum and the size and sha256 of every file are checked: a truncated or altered
checkpoint is reported and skipped, never loaded. Only the newest ``keep`` are kept.

State files are ``torch.save`` archives of plain trees (dicts, lists, tuples, numbers,
strings, tensors); numpy arrays travel as tensors and come back as numpy arrays. They are
read with ``torch.load(..., weights_only=True)``: loading a checkpoint runs no pickled code.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import io
import json
import logging
import os
import pickle
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from parallel_dqn import outputs
from parallel_dqn.errors import UserError
from parallel_dqn.model.saved import unsafe_reason

log = logging.getLogger(__name__)

# 2: workers' acting anchors; dqn.batch_size and replay.capacity per stock of a shard; single mode's default
# of one worker for all the stocks (a format-1 checkpoint's workers and replays do not fit this code)
FORMAT = "parallel-dqn-checkpoint/2"
_FAMILY = FORMAT.rpartition("/")[0] + "/"
CHECKPOINTS = outputs.CHECKPOINTS  # the folder of checkpoints inside a run's output folder
MANIFEST = "manifest.json"
SERVER_FILE = "server.pt"
_PREFIX = "ckpt-"
_STAGING = ".staging-"
_NUMPY = "__numpy__"


class CorruptCheckpoint(Exception):
    """A checkpoint that fails verification; the message says which file and how."""


@dataclass(frozen=True)
class Checkpoint:
    """A committed, verified checkpoint folder and its manifest."""

    path: Path
    manifest: dict[str, Any]

    @property
    def seq(self) -> int:
        return int(self.manifest["seq"])

    def file(self, name: str) -> Path:
        return self.path / name


def worker_file(worker: int) -> str:
    """File name of worker ``worker``'s state inside a checkpoint."""
    return f"worker-{worker:03d}.pt"


# ---- state files ---------------------------------------------------------------------------------
def _to_saveable(tree: Any) -> Any:
    """numpy arrays -> ``{"__numpy__": tensor}``; numpy scalars -> Python numbers; containers recursed."""
    if isinstance(tree, np.ndarray):
        return {_NUMPY: torch.from_numpy(np.array(tree, order="C", copy=True))}  # keeps 0-d arrays 0-d
    if isinstance(tree, np.generic):
        return tree.item()
    if isinstance(tree, dict):
        return {k: _to_saveable(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(_to_saveable(v) for v in tree)
    return tree


def _from_saved(tree: Any) -> Any:
    if isinstance(tree, dict):
        if set(tree) == {_NUMPY}:
            return tree[_NUMPY].numpy()
        return {k: _from_saved(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(_from_saved(v) for v in tree)
    return tree


def write_state(path: Path, tree: dict[str, Any]) -> dict[str, Any]:
    """Write a state tree to ``path`` (fsynced); return its ``{"sha256", "bytes"}`` for the manifest."""
    buffer = io.BytesIO()
    torch.save(_to_saveable(tree), buffer)
    data = buffer.getvalue()
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}


def read_state(path: Path, expected: dict[str, Any] | None = None) -> dict[str, Any]:
    """Read a state tree, first checking it against its manifest entry ``expected`` when given."""
    data = path.read_bytes()
    if expected is not None:
        _check_bytes(path.name, data, expected)
    return _from_saved(_load(path.name, data))


def _load(name: str, data: bytes) -> dict[str, Any]:
    """Unpickle a state file with torch's weights-only loader; CorruptCheckpoint if it refuses or fails.

    A refusal means the file holds pickled objects that are not plain data: loading it anyway could run
    code, so it is reported as a checkpoint that cannot be loaded, never with torch's advice to turn the
    safety off.
    """
    try:
        tree = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CorruptCheckpoint(f"{name} {unsafe_reason(exc)} (not written by parallel-dqn, or altered)") from None
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a damaged archive
        raise CorruptCheckpoint(f"{name} cannot be read as a state file ({type(exc).__name__})") from None
    if not isinstance(tree, dict):
        raise CorruptCheckpoint(f"{name} is not a parallel-dqn state file (it holds a {type(tree).__name__})")
    return tree


def _check_bytes(name: str, data: bytes, expected: dict[str, Any]) -> None:
    if len(data) != expected["bytes"]:
        raise CorruptCheckpoint(f"{name} has {len(data)} bytes, the manifest says {expected['bytes']} (truncated?)")
    if hashlib.sha256(data).hexdigest() != expected["sha256"]:
        raise CorruptCheckpoint(f"{name} does not match its sha256 in the manifest (altered or damaged)")


def _manifest_checksum(body: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


# ---- the folder of checkpoints -------------------------------------------------------------------
class CheckpointStore:
    """The ``checkpoints/`` folder of one run: staging, atomic commit, verification, rotation."""

    def __init__(self, folder: Path, keep: int = 3) -> None:
        self.folder = Path(folder)
        self.keep = max(1, int(keep))

    def staging_path(self, seq: int) -> Path:
        """Where the files of checkpoint ``seq`` are written before it is committed."""
        return self.folder / f"{_STAGING}{seq:06d}"

    def staging(self, seq: int) -> Path:
        """Make the (new, empty) staging folder of checkpoint ``seq``."""
        path = self.staging_path(seq)
        if path.exists():
            shutil.rmtree(path)
        path.mkdir(parents=True)
        return path

    def commit(self, seq: int, files: dict[str, dict[str, Any]], info: dict[str, Any]) -> Checkpoint:
        """Write the manifest into staging folder ``seq``, rename it into place, drop the oldest."""
        staging = self.staging_path(seq)
        missing = [name for name in files if not (staging / name).is_file()]
        if missing:
            raise RuntimeError(f"checkpoint {seq}: files never written: {missing}")
        body = {
            "format": FORMAT,
            "seq": seq,
            "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "files": files,
            **info,
        }
        manifest = {**body, "checksum": _manifest_checksum(body)}
        with open(staging / MANIFEST, "w") as f:
            json.dump(manifest, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        final = self.folder / f"{_PREFIX}{seq:06d}"
        if final.exists():  # a checkpoint of this number from an interrupted earlier attempt
            shutil.rmtree(final)
        os.rename(staging, final)
        _fsync_dir(self.folder)
        self._rotate()
        return Checkpoint(final, manifest)

    def committed(self) -> list[Path]:
        """Committed checkpoint folders, newest first (by sequence number)."""
        if not self.folder.is_dir():
            return []
        found = []
        for p in self.folder.iterdir():
            number = p.name.removeprefix(_PREFIX)
            if p.is_dir() and p.name.startswith(_PREFIX) and number.isdigit():
                found.append((int(number), p))
        return [p for _, p in sorted(found, reverse=True)]

    def latest(self) -> Checkpoint | None:
        """The newest checkpoint that verifies; each corrupt one newer than it is skipped with a warning."""
        for path in self.committed():
            try:
                return verify(path)
            except CorruptCheckpoint as exc:
                log.warning("skipping checkpoint %s: %s", path, exc)
        return None

    def last_seq(self) -> int:
        """The highest sequence number present (committed or not), 0 if none."""
        numbers = [0]
        if self.folder.is_dir():
            for p in self.folder.iterdir():
                tail = p.name.removeprefix(_PREFIX).removeprefix(_STAGING)
                if tail.isdigit():
                    numbers.append(int(tail))
        return max(numbers)

    def remove_staging(self) -> None:
        """Remove staging folders left by an interrupted run."""
        if self.folder.is_dir():
            for p in self.folder.glob(f"{_STAGING}*"):
                shutil.rmtree(p, ignore_errors=True)

    @contextlib.contextmanager
    def writing(self, seq: int) -> Iterator[None]:
        """Write part of checkpoint ``seq``; if the file system refuses (full disk, no permission), remove its
        staging folder (freeing the space) and raise one line saying what happened."""
        try:
            yield
        except OSError as exc:
            self.abandon(seq)
            raise UserError(
                f"cannot write checkpoint {seq} into {self.folder}: {exc.strerror or exc}",
                "free space on that file system (or lower checkpoint.keep), then continue with --resume auto",
            ) from None

    def abandon(self, seq: int) -> None:
        """Remove the staging folder of a checkpoint that will not be committed."""
        shutil.rmtree(self.staging_path(seq), ignore_errors=True)

    def clear(self) -> None:
        """Remove every checkpoint of this store (a fresh start in a folder that held an earlier run's).

        Only parallel-dqn's own entries (``ckpt-NNNNNN``, staging folders) go; anything else a user keeps in
        the folder stays, and so does the folder then.
        """
        if not self.folder.is_dir():
            return
        for p in self.folder.iterdir():
            tail = p.name.removeprefix(_PREFIX).removeprefix(_STAGING)
            if p.is_dir() and p.name != tail and tail.isdigit():
                shutil.rmtree(p, ignore_errors=True)
        with contextlib.suppress(OSError):
            self.folder.rmdir()  # only when nothing else is left in it

    def _rotate(self) -> None:
        for old in self.committed()[self.keep :]:
            shutil.rmtree(old, ignore_errors=True)


def verify(path: Path) -> Checkpoint:
    """Check a checkpoint folder: manifest readable and self-consistent, every file's size and sha256, and
    every state file loadable with torch's weights-only loader."""
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except FileNotFoundError:
        raise CorruptCheckpoint(f"{MANIFEST} is missing") from None
    except (OSError, ValueError) as exc:
        raise CorruptCheckpoint(f"{MANIFEST} cannot be read ({type(exc).__name__})") from None
    written = manifest.get("format") if isinstance(manifest, dict) else None
    if isinstance(written, str) and written.startswith(_FAMILY) and written != FORMAT:
        # not damaged: refused (in one line), never skipped, so a fresh start does not remove the run it holds
        raise UserError(
            f"checkpoint {path} was written by another version of parallel-dqn ({written}; this one reads {FORMAT})",
            "continue it with the version that wrote it, or start afresh with another --output",
        )
    if written != FORMAT:
        raise CorruptCheckpoint(f"{MANIFEST} is not a parallel-dqn checkpoint manifest")
    body = {k: v for k, v in manifest.items() if k != "checksum"}
    if manifest.get("checksum") != _manifest_checksum(body):
        raise CorruptCheckpoint(f"{MANIFEST} does not match its checksum (altered or damaged)")
    files = manifest.get("files")
    if not isinstance(files, dict) or not all(isinstance(e, dict) and {"sha256", "bytes"} <= e.keys()
                                              for e in files.values()):
        raise CorruptCheckpoint(f"{MANIFEST} does not list its files with their sizes and sha256")
    for name, expected in files.items():
        try:
            data = (path / name).read_bytes()
        except OSError:
            raise CorruptCheckpoint(f"{name} is missing") from None
        _check_bytes(name, data, expected)
        _load(name, data)  # matching bytes are not enough: a consistent manifest may list an unsafe file
    return Checkpoint(path, manifest)


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (best effort: not every file system allows it)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
