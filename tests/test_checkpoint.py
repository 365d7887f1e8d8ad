"""Checkpoints in one process: the on-disk format, verification, rotation, exact resume, SIGTERM, bad resumes.

* a state file round-trips numpy arrays (any dtype, 0-d too), tensors and plain values, and loads with
  ``weights_only=True`` (a pickled object is refused);
* a truncated or altered file, or an altered manifest, is detected: the checkpoint is skipped with a
  warning naming it, never loaded; only the newest ``keep`` stay; an interrupted write is invisible;
* resuming *any* checkpoint of a run gives its final weights, evaluation and training curve exactly;
* SIGTERM checkpoints and exits 75 with one line; ``--resume auto`` finishes the run as if never stopped;
* resuming with changed settings, changed data, a finished run, or a bad path: one line, no harm done.
"""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import time
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
from parallel_dqn.checkpoint.resume import ResumeTarget, choose_checkpoint
from parallel_dqn.cli import main
from parallel_dqn.errors import UserError
from parallel_dqn.run.signals import EXIT_PREEMPTED
from parallel_dqn.run.single import train
from tests.helpers import assert_same_run, make_market, perturb_after, tiny_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def market(tmp_path_factory) -> Path:
    return make_market(tmp_path_factory.mktemp("ckpt_market"))


# ---- the format ----------------------------------------------------------------------------------
def test_state_files_round_trip_without_pickled_code(tmp_path):
    tree = {
        "ints": np.arange(5, dtype=np.int8), "scalar": np.array(2.5), "flags": np.array([True, False]),
        "tensor": torch.ones(2, 3), "nested": [{"a": None, "b": (1, "x")}], "big": 2**100, "nan": float("nan"),
    }
    digest = write_state(tmp_path / "s.pt", tree)
    back = read_state(tmp_path / "s.pt", digest)
    assert back["ints"].dtype == np.int8 and np.array_equal(back["ints"], tree["ints"])
    assert back["scalar"].shape == () and float(back["scalar"]) == 2.5
    assert isinstance(back["tensor"], torch.Tensor) and torch.equal(back["tensor"], tree["tensor"])
    assert back["nested"] == [{"a": None, "b": (1, "x")}] and back["big"] == 2**100 and np.isnan(back["nan"])
    torch.save({"evil": Path("x")}, tmp_path / "pickled.pt")  # an arbitrary object: refused, not run
    with pytest.raises(Exception, match="[Ww]eights only"):
        read_state(tmp_path / "pickled.pt")


def commit(store: CheckpointStore, seq: int, payload: int) -> Path:
    store.staging(seq)
    files = {"server.pt": write_state(store.staging_path(seq) / "server.pt", {"payload": np.array([payload])})}
    return store.commit(seq, files, {"reason": "test", "config": {}}).path


@pytest.mark.parametrize("damage", ["truncate", "flip_a_byte", "edit_manifest", "drop_file"])
def test_a_damaged_checkpoint_is_skipped_with_a_warning(tmp_path, caplog, damage):
    store = CheckpointStore(tmp_path / "checkpoints", keep=5)
    older, newest = commit(store, 1, 11), commit(store, 2, 22)
    target = newest / "server.pt"
    if damage == "truncate":
        target.write_bytes(target.read_bytes()[:-10])
    elif damage == "flip_a_byte":
        data = bytearray(target.read_bytes())
        data[len(data) // 2] ^= 0x01
        target.write_bytes(bytes(data))
    elif damage == "edit_manifest":
        manifest = json.loads((newest / "manifest.json").read_text())
        manifest["reason"] = "edited"
        (newest / "manifest.json").write_text(json.dumps(manifest))
    else:
        target.unlink()
    with pytest.raises(CorruptCheckpoint):
        verify(newest)
    with caplog.at_level(logging.WARNING):
        chosen = store.latest()
    assert chosen is not None and chosen.path == older
    assert read_state(chosen.file("server.pt"), chosen.manifest["files"]["server.pt"])["payload"][0] == 11
    assert any(str(newest) in r.getMessage() and "skipping" in r.getMessage() for r in caplog.records)
    with pytest.raises(UserError, match="is corrupt"):  # asked for by name: refused, not loaded
        choose_checkpoint(ResumeTarget(tmp_path, newest))


def test_rotation_keeps_the_newest_and_an_interrupted_write_is_invisible(tmp_path):
    store = CheckpointStore(tmp_path / "checkpoints", keep=2)
    for seq in range(1, 5):
        commit(store, seq, seq)
    store.staging(5)  # a crash while checkpoint 5 was being written
    (store.staging_path(5) / "server.pt").write_bytes(b"half")
    assert [p.name for p in store.committed()] == ["ckpt-000004", "ckpt-000003"]
    assert store.latest().seq == 4 and store.last_seq() == 5
    store.remove_staging()
    assert not store.staging_path(5).exists()


def test_a_checkpoint_of_another_format_is_refused_in_one_line_not_skipped(tmp_path):
    """A checkpoint written by an older version is not damaged: skipping it as corrupt would let a fresh start
    with --resume auto remove the run it holds; resuming it would fail deep in the workers."""
    store = CheckpointStore(tmp_path / "checkpoints", keep=5)
    ckpt = commit(store, 1, 11)
    manifest = json.loads((ckpt / "manifest.json").read_text())
    body = {k: v for k, v in manifest.items() if k != "checksum"} | {"format": "parallel-dqn-checkpoint/1"}
    (ckpt / "manifest.json").write_text(json.dumps({**body, "checksum": _manifest_checksum(body)}))
    for resume in (lambda: store.latest(), lambda: choose_checkpoint(ResumeTarget(tmp_path, ckpt))):
        with pytest.raises(UserError, match="another version of parallel-dqn .*parallel-dqn-checkpoint/1"):
            resume()
    assert ckpt.is_dir()  # nothing removed


# ---- exact resume in one process -----------------------------------------------------------------
@pytest.mark.parametrize("sync", [True, False])
def test_resuming_any_checkpoint_reproduces_the_run(market, tmp_path, sync):
    settings = {"dist.sync": sync, "checkpoint.every_applies": 60, "checkpoint.keep": 20,
                "replay.prioritized": not sync, "dqn.n_step": 2}
    train(tiny_config(market, tmp_path / "full", **settings))
    checkpoints = CheckpointStore(tmp_path / "full" / "checkpoints").committed()
    reasons = [json.loads((c / "manifest.json").read_text())["reason"] for c in checkpoints]
    assert "after episode 1" in reasons and any("gradient applies" in r for r in reasons), reasons
    for ckpt in checkpoints:
        out = tmp_path / f"from_{ckpt.name}"
        assert main(["train", "--resume", str(ckpt), "--output", str(out), "--no-progress"]) == 0
        assert_same_run(tmp_path / "full", out)


def test_sigterm_checkpoints_exits_75_and_resume_auto_finishes_the_same_run(market, tmp_path):
    out = tmp_path / "stopped"
    cfg = tiny_config(market, out, **{"dist.sync": True, "dqn.episodes": 4})
    cfg.write(tmp_path / "run.toml")
    command = [sys.executable, "-m", "parallel_dqn", "train", "--config", str(tmp_path / "run.toml"), "--resume", "auto"]
    job = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = out / "checkpoints" / "ckpt-000001"
    deadline = time.monotonic() + 120
    while not first.exists() and time.monotonic() < deadline and job.poll() is None:
        time.sleep(0.05)
    job.send_signal(signal.SIGTERM)
    stdout, stderr = job.communicate(timeout=120)
    assert job.returncode == EXIT_PREEMPTED, stderr
    said = [line for line in stderr.splitlines() if line.startswith("parallel-dqn:")]
    assert said == [f"parallel-dqn: stopped by SIGTERM: checkpoint {out}/checkpoints/ckpt-000002 written "
                    "(continue with --resume auto)"], stderr
    assert "Traceback" not in stderr and not (out / "metrics.json").exists()
    assert json.loads((out / "checkpoints" / "ckpt-000002" / "manifest.json").read_text())["stop"] is True
    resumed = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from" in (out / "run.log").read_text()
    train(tiny_config(market, tmp_path / "uninterrupted", **{"dist.sync": True, "dqn.episodes": 4}))
    assert_same_run(tmp_path / "uninterrupted", out)
    again = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "agent (DQN + meta-policy)" in again.stdout  # finished: nothing to do


# ---- resumes that must be refused ----------------------------------------------------------------
@pytest.fixture(scope="module")
def stopped_run(market, tmp_path_factory) -> Path:
    """A run folder whose newest checkpoint is mid-training (its metrics.json removed: unfinished)."""
    out = tmp_path_factory.mktemp("stopped") / "run"
    train(tiny_config(market, out, **{"checkpoint.every_applies": 50}))
    (out / "metrics.json").unlink()
    return out


def one_line_error(capsys, argv: list[str]) -> str:
    """Run the CLI; it must exit 2 with exactly one error line and no traceback."""
    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("parallel-dqn: error:")]
    assert code == 2 and len(errors) == 1 and "Traceback" not in err, err
    return errors[0]


def test_resume_with_changed_settings_is_refused_in_one_line(stopped_run, capsys):
    before = {p: p.read_bytes() for p in stopped_run.rglob("*") if p.is_file()}
    err = one_line_error(capsys, ["train", "--resume", str(stopped_run), "--lr", "0.01"])
    assert "dqn.lr = 0.0005 in the checkpoint, 0.01 now" in err
    after = {p: p.read_bytes() for p in stopped_run.rglob("*") if p.is_file()}
    assert after == before  # nothing written, nothing removed


def test_resume_on_changed_data_is_refused(market, tmp_path, capsys):
    import pandas as pd

    data, out = tmp_path / "data", tmp_path / "run"
    perturb_after(market, data, pd.Timestamp("2030-01-01", tz="UTC"))  # a plain copy
    train(tiny_config(data, out, **{"checkpoint.every_applies": 50}))
    (out / "metrics.json").unlink()
    changed = tmp_path / "changed"
    perturb_after(data, changed, pd.Timestamp("2024-01-03 15:00", tz="UTC"))
    for day in (data / "stocks_intraday").rglob("*.parquet"):  # the same path, other bars
        day.write_bytes((changed / day.relative_to(data)).read_bytes())
    err = one_line_error(capsys, ["train", "--resume", str(out)])
    assert "the market data differ from those the checkpoint was trained on" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--resume", "{missing}"], "no such run folder"),
        (["--resume", "{empty}"], "no checkpoint in"),
        (["--resume", "auto", "--overwrite", "--output", "{empty}"], "--resume and --overwrite contradict"),
    ],
)
def test_bad_resume_arguments_are_one_line(tmp_path, capsys, argv, message):
    (tmp_path / "empty").mkdir()
    names = {"missing": tmp_path / "missing", "empty": tmp_path / "empty"}
    err = one_line_error(capsys, ["train", *[a.format(**names) for a in argv]])
    assert message in err


def test_a_fresh_start_over_an_earlier_run_retires_its_checkpoints_once_its_data_load(market, tmp_path):
    out = tmp_path / "run"
    train(tiny_config(market, out))
    old = {p.name for p in (out / "checkpoints").iterdir()}
    train(tiny_config(market, out, **{"run.seed": 1}), overwrite=True)
    manifests = [json.loads(m.read_text()) for m in (out / "checkpoints").glob("ckpt-*/manifest.json")]
    assert manifests and all(m["config"]["run"]["seed"] == 1 for m in manifests)
    assert not old & {p.name for p in (out / "checkpoints").iterdir()}
