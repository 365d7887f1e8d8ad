"""Runs in object storage: ``--output s3://BUCKET/PREFIX`` (and ``gs://``, ``azure://``).

A run writes into a **staging folder** on this machine exactly as into a local ``--output``
(``$PARALLEL_DQN_CACHE/runs/SCHEME/BUCKET/PREFIX``, else ``~/.cache/parallel-dqn/runs/...``; under a multi-node
MPI job that folder must be on a file system every node sees, since the workers write their checkpoint parts
there), and the writing process (the single process, or rank 0) **mirrors** it to the store:

* when the run's data have loaded (an earlier run replaced with ``--overwrite`` leaves the store then, its own
  files only), after every checkpoint, and when the run ends (finished, stopped after a checkpoint, or failed);
* only what changed: a file whose size or modification time differs from its last upload; a checkpoint once;
* a checkpoint's state files first and its ``manifest.json`` last; a checkpoint rotated away loses its manifest
  first. A checkpoint in the store is complete exactly when its manifest is there, and it is verified (sizes,
  sha256, weights-only load) after it is downloaded: a reader never uses half a checkpoint.

The store, not the staging folder, says whether the output holds a run: one is refused without ``--overwrite`` or
``--resume``. With ``--resume`` the staging folder is refilled from the store (the run's files and its newest
complete checkpoint), so a spot job restarted on another machine (an empty disk) with ``--resume auto`` and the same
``--output`` continues from the store's newest checkpoint. Only a staging folder holding a newer checkpoint than the
store (an upload that failed here) is kept as it is, and uploaded once the store answers again.

:func:`stage` makes the run's :class:`StoreMirror`; the caller hands it on explicitly: to :func:`claim_output`
(the store decides whether the output holds a run) and to the run's lifecycle, which registers it as the last
observer (:class:`~parallel_dqn.run.lifecycle.RankZero`). Nothing here keeps state between calls.

The folder lock is per machine: two jobs writing one URL from two machines at once are not detected (a scheduler
runs one job per output). ``report`` and ``evaluate`` read runs from a store through :func:`readable`.
"""

from __future__ import annotations

import logging
import re
import shutil
import time
from pathlib import Path
from typing import Any

from parallel_dqn import outputs
from parallel_dqn.checkpoint.format import MANIFEST, CheckpointStore, CorruptCheckpoint, verify
from parallel_dqn.cloud import CloudURL, cloud_errors, filesystem, is_cloud_url
from parallel_dqn.config import Config
from parallel_dqn.data.remote import cache_root
from parallel_dqn.errors import UserError
from parallel_dqn.run.folder import FolderLock, claim

log = logging.getLogger(__name__)

#: a committed checkpoint's folder inside the run: checkpoints/ckpt-NNNNNN
_CHECKPOINT = re.compile(rf"{outputs.CHECKPOINTS}/ckpt-(\d+)")
#: the run's own files (what a fresh run replaces and a mirror may delete); a user's other files are never touched
_OWNED = re.compile(
    "|".join([*(re.escape(n) for n in (*outputs.RESULT_FILES, outputs.STATUS, outputs.LOG)),
              r"portfolio_ep\d+\.csv", rf"{outputs.WORKER_LOGS}/rank\d+\.log",
              rf"{outputs.TENSORBOARD}/events\.out\.tfevents\..*", rf"{outputs.CHECKPOINTS}/ckpt-\d+/.*",
              rf"{outputs.EVALUATION}/.*"]))
#: never uploaded: the per-machine lock, and checkpoints still being written
_LOCAL_ONLY = re.compile(rf"{re.escape(outputs.LOCK)}|{outputs.CHECKPOINTS}/\.staging-.*|.*/{re.escape(outputs.LOCK)}")


def staging_folder(url: CloudURL, purpose: str = "runs") -> Path:
    """The local folder of ``url``'s run: ``CACHE/runs/SCHEME/BUCKET/PREFIX`` (``read/...`` for a read-only copy),
    under the cache root the data stores' downloads use (``$PARALLEL_DQN_CACHE`` or ``~/.cache/parallel-dqn``)."""
    return cache_root(purpose) / url.scheme / url.bucket / url.prefix


def stage(cfg: Config) -> StoreMirror | None:
    """For a cloud ``run.output``: point ``cfg.run.output`` at its staging folder and return its mirror, for
    the caller to pass to :func:`claim_output` and the run's lifecycle.

    Every process of a run calls it (every MPI rank: they all write into the staging folder); nothing is
    read or written yet. None for a local output.
    """
    if not is_cloud_url(str(cfg.run.output)):
        return None
    url = CloudURL.parse(str(cfg.run.output))
    folder = staging_folder(url)
    cfg.run.output = str(folder)
    log.debug("--output %s is staged in %s", url, folder)
    return StoreMirror(url, folder)


def claim_output(
    output: Path, overwrite: bool, resume: str | None, what: str = "train", mirror: StoreMirror | None = None
) -> FolderLock:
    """:func:`~parallel_dqn.run.folder.claim` for the writing process; for a staged cloud output (``mirror``, from
    :func:`stage`) the store decides whether it holds a run, and the staging folder is made ready
    (:meth:`StoreMirror.prepare`)."""
    if mirror is None:
        return claim(output, replace=overwrite or resume is not None, what=what)
    lock = claim(output, replace=True, what=what)  # the staging folder is a copy: the store is checked instead
    try:
        mirror.prepare(overwrite, resume)
    except BaseException:
        lock.release()
        raise
    return lock


def readable(spec: str) -> str:
    """A run (or sweep) folder to read: a local path as it is; a cloud URL downloaded (without its checkpoints)
    into ``CACHE/read/...`` first, that path returned. A file URL (a model) is downloaded alone."""
    if not is_cloud_url(spec):
        return spec
    url = CloudURL.parse(spec)
    local = staging_folder(url, "read")
    fs = filesystem(url)
    with cloud_errors(url, "reading the run"):
        if fs.isfile(url.root):
            local.parent.mkdir(parents=True, exist_ok=True)
            fs.get_file(url.root, str(local))
            return str(local)
        listing = _listing(fs, url)
        if not listing:
            if Path(url.prefix).suffix:  # a file's name (trained_model.pth)
                raise UserError(f"{url} does not exist", "check the bucket and the path")
            raise UserError(f"{url} holds no run", "give the --output URL of a run")
        shutil.rmtree(local, ignore_errors=True)
        for rel in listing:
            if not _CHECKPOINT.match(rel):
                _download(fs, url, rel, local)
    return str(local)


class StoreMirror:
    """The store copy of one staged run folder, kept up to date by the writing process (an observer of the run)."""

    def __init__(self, url: CloudURL, folder: Path) -> None:
        self.url, self.folder = url, Path(folder)
        self._fs: Any = None
        self._remote: dict[str, int] = {}  # relative path -> size of what the store holds (kept as we change it)
        self._sent: dict[str, tuple[int, int]] = {}  # relative path -> (size, mtime_ns) last uploaded or downloaded
        self._files = self._bytes = 0  # counted by the push under way
        self.failed = False  # an upload failed: no further tries in this process
        self.last = (0, 0, 0.0)  # the last push: files and bytes uploaded, seconds it took (logged per checkpoint)

    @property
    def fs(self) -> Any:
        if self._fs is None:
            self._fs = filesystem(self.url)
        return self._fs

    # ---- before the run ----------------------------------------------------------------------------------------
    def prepare(self, overwrite: bool, resume: str | None) -> None:
        """Check the store and make the staging folder ready (the caller holds its lock).

        Refused in one line: an output holding a run without ``--overwrite``/``--resume``, a store that cannot be
        reached, a missing bucket. With ``--resume``: the staging folder becomes the store's run (unless it holds a
        newer checkpoint than the store); else it is emptied of run files.
        """
        with cloud_errors(self.url, "checking --output"):
            self._bucket_exists()
            self._remote = _listing(self.fs, self.url)
        earlier = _holds_run(self._remote)
        if earlier and not (overwrite or resume is not None):
            raise UserError(f"--output {self.url} already holds a run ({earlier})",
                            "choose another --output, pass --overwrite to replace it, or --resume auto to continue it")
        if resume is not None and self._local_is_newer():
            log.warning("%s holds a newer checkpoint than %s (an upload that failed): continuing from it, it is "
                        "uploaded at the next checkpoint", self.folder, self.url)
            return
        self._clear_local()
        if resume is not None and earlier:
            self._pull()

    def _bucket_exists(self) -> None:
        """FileNotFoundError for a missing bucket (``exists`` would answer False for an unreachable store too)."""
        self.fs.info(self.url.bucket)

    def _local_is_newer(self) -> bool:
        local = CheckpointStore(self.folder / outputs.CHECKPOINTS).latest()
        return local is not None and local.seq > max(_complete_checkpoints(self._remote), default=0)

    def _clear_local(self) -> None:
        """Remove the run files of an earlier run from the staging folder (what the store holds replaces them)."""
        for path in sorted(self.folder.rglob("*"), reverse=True):
            rel = path.relative_to(self.folder).as_posix()
            if path.is_file() and _OWNED.fullmatch(rel) and not _LOCAL_ONLY.fullmatch(rel):
                path.unlink()
            elif path.is_dir() and path != self.folder and not any(path.iterdir()):
                path.rmdir()
        CheckpointStore(self.folder / outputs.CHECKPOINTS).remove_staging()

    def _pull(self) -> None:
        """Download the run's files and its newest complete checkpoint that verifies."""
        with cloud_errors(self.url, "downloading the run"):
            for rel in self._remote:
                if not _CHECKPOINT.match(rel) and _OWNED.fullmatch(rel):
                    self._sent[rel] = _stat(_download(self.fs, self.url, rel, self.folder))
            for seq in sorted(_complete_checkpoints(self._remote), reverse=True):
                name = f"{outputs.CHECKPOINTS}/ckpt-{seq:06d}"
                for rel in self._remote:
                    if rel.startswith(name + "/"):
                        _download(self.fs, self.url, rel, self.folder)
                try:
                    verify(self.folder / name)
                except CorruptCheckpoint as exc:
                    log.warning("skipping checkpoint %s/%s: %s", self.url, name, exc)
                    shutil.rmtree(self.folder / name, ignore_errors=True)
                    continue
                log.info("downloaded checkpoint %s/%s into %s", self.url, name, self.folder)
                return

    # ---- during and after the run ------------------------------------------------------------------------------
    def push(self) -> None:
        """Make the store hold what the staging folder holds (the run's files): changed files, new checkpoints
        (state files, then the manifest), then drop the store's run files the folder no longer has."""
        if self.failed:
            return
        started = time.perf_counter()
        self._files = self._bytes = 0
        try:
            with cloud_errors(self.url, "uploading the run"):
                self._push()
        except UserError as exc:
            self.failed = True
            raise UserError(f"{exc.what}; the run's files are kept in {self.folder}",
                            f"{exc.fix}: the same command with --resume auto continues from there and uploads them"
                            ) from None
        self.last = (self._files, self._bytes, time.perf_counter() - started)

    def _push(self) -> None:
        local = self._local_files()
        checkpoints = {m.group(0) for rel in local if (m := _CHECKPOINT.match(rel))}
        for name in sorted(checkpoints):
            if f"{name}/{MANIFEST}" in self._remote:
                continue  # a committed checkpoint never changes
            files = sorted(rel for rel in local if rel.startswith(name + "/"))
            for rel in [r for r in files if not r.endswith("/" + MANIFEST)] + [f"{name}/{MANIFEST}"]:
                self._upload(rel)
        for rel in local:
            if not _CHECKPOINT.match(rel) and (rel not in self._remote or self._sent.get(rel) != _stat(self.folder / rel)):
                self._upload(rel)
        gone = [rel for rel in self._remote if rel not in local and _OWNED.fullmatch(rel)]
        # a checkpoint loses its manifest first: it stops being complete before any of its files goes
        for rel in sorted(gone, key=lambda r: (not r.endswith("/" + MANIFEST), r)):
            self.fs.rm_file(f"{self.url.root}/{rel}")
            self._remote.pop(rel, None)

    def _local_files(self) -> set[str]:
        found = set()
        for path in self.folder.rglob("*"):
            rel = path.relative_to(self.folder).as_posix()
            if path.is_file() and not _LOCAL_ONLY.fullmatch(rel):
                found.add(rel)
        return found

    def _upload(self, rel: str) -> None:
        path = self.folder / rel
        stat = _stat(path)
        self.fs.put_file(str(path), f"{self.url.root}/{rel}")
        self._remote[rel], self._sent[rel] = stat[0], stat
        self._files += 1
        self._bytes += stat[0]

    # ---- the run's events (registered last, so every other observer has written its files) -------------------
    def on_market(self, info: Any) -> None:
        self.push()  # the earlier run (--overwrite) leaves the store once this run's data have loaded

    def on_checkpoint(self, checkpoint: Any, episodes_done: int, reason: str) -> None:
        self.push()
        files, size, seconds = self.last
        log.info("checkpoint %s uploaded to %s: %d files, %.2f MB in %.2f s", checkpoint.path.name, self.url, files,
                 size / 1e6, seconds)

    def on_finish(self, result: dict[str, Any]) -> None:
        self.push()

    def on_stop(self, reason: str, checkpoint: Path | None) -> None:
        self.push()

    def on_failure(self, error: BaseException) -> None:
        """Best effort: the store shows the failure too (status.json), unless the store is what failed."""
        if self.failed:
            return
        try:
            self.push()
        except UserError as exc:
            log.warning("%s", exc.line())


def _listing(fs: Any, url: CloudURL) -> dict[str, int]:
    """Relative path -> size of every object under ``url``'s prefix (empty when there is none)."""
    found = fs.find(url.root, detail=True)
    base = url.root + "/"
    return {path.removeprefix(base): int(info.get("size") or 0) for path, info in found.items()
            if path.startswith(base) and info.get("type", "file") == "file"}


def _holds_run(remote: dict[str, int]) -> str | None:
    """The first sign that the store's listing holds a run (a result file, a complete checkpoint), else None."""
    for name in (outputs.MODEL, outputs.METRICS, outputs.CURVE):
        if name in remote:
            return name
    return outputs.CHECKPOINTS if _complete_checkpoints(remote) else None


def _complete_checkpoints(remote: dict[str, int]) -> set[int]:
    """Sequence numbers of the store's checkpoints whose manifest is there (uploaded last: complete)."""
    return {int(m.group(1)) for rel in remote if (m := _CHECKPOINT.match(rel)) and rel == f"{m.group(0)}/{MANIFEST}"}


def _download(fs: Any, url: CloudURL, rel: str, folder: Path) -> Path:
    path = folder / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    fs.get_file(f"{url.root}/{rel}", str(path))
    return path


def _stat(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns
