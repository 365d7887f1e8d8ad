"""State files that torch cannot load with ``weights_only=True`` (a pickled object that is not plain data).

A checkpoint whose state file was replaced by such an archive, with its sha256 and size updated in a
consistent manifest, passes every checksum: it must still fail verification (so ``latest()`` falls back
to the previous checkpoint), and reading it must raise CorruptCheckpoint, never torch's raw error, whose
text advises turning the safety off (``weights_only=False``). The same for a model file.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from parallel_dqn.checkpoint.format import (
    CheckpointStore,
    CorruptCheckpoint,
    _manifest_checksum,
    read_state,
    verify,
    write_state,
)
from parallel_dqn.errors import UserError
from parallel_dqn.model.saved import FORMAT, load_model
from tests.conftest import run_cli


class Payload:
    """Not a plain tree: torch's weights-only unpickler refuses it (loading it would run pickled code)."""

    def __init__(self) -> None:
        self.value = 22


def commit(store: CheckpointStore, seq: int, payload: int) -> Path:
    store.staging(seq)
    files = {"server.pt": write_state(store.staging_path(seq) / "server.pt", {"payload": np.array([payload])})}
    return store.commit(seq, files, {"reason": "test", "config": {}}).path


def replace_consistently(checkpoint: Path, name: str, obj: object) -> None:
    """Overwrite ``checkpoint/name`` with ``torch.save(obj)`` and update the manifest (sha256, bytes, checksum)."""
    torch.save(obj, checkpoint / name)
    data = (checkpoint / name).read_bytes()
    manifest = json.loads((checkpoint / "manifest.json").read_text())
    manifest["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    body = {k: v for k, v in manifest.items() if k != "checksum"}
    manifest["checksum"] = _manifest_checksum(body)
    (checkpoint / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True))


def assert_no_unsafe_advice(message: str) -> None:
    assert "weights_only" not in message and "add_safe_globals" not in message, message


def test_a_consistent_checkpoint_that_cannot_be_loaded_safely_is_skipped(tmp_path, caplog):
    store = CheckpointStore(tmp_path / "checkpoints", keep=5)
    older, newest = commit(store, 1, 11), commit(store, 2, 22)
    replace_consistently(newest, "server.pt", {"payload": Payload()})
    with pytest.raises(CorruptCheckpoint, match="cannot be loaded safely") as failed:
        verify(newest)
    assert "server.pt" in str(failed.value)
    assert_no_unsafe_advice(str(failed.value))
    with caplog.at_level(logging.WARNING):
        chosen = store.latest()
    assert chosen is not None and chosen.path == older
    assert read_state(chosen.file("server.pt"), chosen.manifest["files"]["server.pt"])["payload"][0] == 11
    warned = [r.getMessage() for r in caplog.records if str(newest) in r.getMessage()]
    assert warned and all("weights_only" not in m for m in warned)


def test_read_state_raises_corrupt_checkpoint_not_the_raw_error(tmp_path):
    store = CheckpointStore(tmp_path / "checkpoints")
    newest = commit(store, 1, 11)
    replace_consistently(newest, "server.pt", {"payload": Payload()})
    expected = json.loads((newest / "manifest.json").read_text())["files"]["server.pt"]
    for kwargs in ({"expected": expected}, {}):
        with pytest.raises(CorruptCheckpoint, match="cannot be loaded safely") as failed:
            read_state(newest / "server.pt", **kwargs)
        assert_no_unsafe_advice(str(failed.value))


def test_a_model_file_that_cannot_be_loaded_safely_is_one_line(tmp_path):
    model = tmp_path / "trained_model.pth"
    torch.save({"format": FORMAT, "q_state": Payload()}, model)
    with pytest.raises(UserError, match="cannot be loaded safely") as failed:
        load_model(model)
    assert str(model) in str(failed.value)
    assert_no_unsafe_advice(str(failed.value))
    proc = run_cli("evaluate", "--model", model, "--data", tmp_path / "nowhere", "--eval_start", "2024-01-04",
                   "--eval_end", "2024-01-04", "--output", tmp_path / "out", "--no_progress")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("parallel-dqn: error:"), proc.stderr
    assert_no_unsafe_advice(lines[0])
