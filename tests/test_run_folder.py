"""A run never harms a folder: it never deletes what is not its own, two runs never mix in one folder,
a resume never overwrites or reports another run, a full or read-only disk is one line, and a replaced run
leaves nothing of itself behind (TensorBoard included)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import run_cli

pytestmark = pytest.mark.slow

#: a tiny, quick training on the session's tiny market (3 stocks x 3 days of 5-minute bars)
QUICK = ("--start_date", "2024-01-02", "--end_date", "2024-01-03", "--eval_start", "2024-01-04", "--eval_end",
         "2024-01-04", "--set", "dqn.learning_starts=40", "--set", "market.graph_window=40", "--no_progress")


def train(market: Path, out: Path, *extra: str, episodes: int = 1) -> subprocess.CompletedProcess[str]:
    return run_cli("train", "--data", market, "--output", out, "--episodes", str(episodes), *QUICK, *extra)


def one_error_line(proc: subprocess.CompletedProcess[str], *words: str) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    lines = [line for line in proc.stderr.splitlines() if line.startswith("parallel-dqn: error:")]
    assert len(lines) == 1, proc.stderr  # log lines before it may tell what the run did so far
    assert "Traceback" not in proc.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def tree_digest(folder: Path) -> dict[str, str]:
    """Every file's hash, but the run's log (a refused run says why in it) and the folder's lock."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*")) if p.is_file() and p.name not in ("run.log", ".parallel-dqn.lock")
    }


@contextlib.contextmanager
def tmpfs(path: Path, size: str, read_only: bool = False) -> Iterator[Path]:
    """A small tmpfs at ``path`` (root only: the disk-full and read-only cases need a real file system)."""
    path.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (root needed): {proc.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_a_fresh_run_keeps_a_checkpoints_folder_that_is_not_its_own(tiny_market, tmp_path):
    out = tmp_path / "proj"
    (out / "checkpoints" / "resnet").mkdir(parents=True)
    (out / "checkpoints" / "resnet" / "best.ckpt").write_text("x")
    proc = train(tiny_market, out)
    assert proc.returncode == 0, proc.stderr
    assert (out / "checkpoints" / "resnet" / "best.ckpt").read_text() == "x"
    assert any(p.name.startswith("ckpt-") for p in (out / "checkpoints").iterdir())


def test_a_second_run_into_a_folder_in_use_is_refused_and_the_first_is_unharmed(tiny_market, tmp_path):
    out = tmp_path / "shared"
    first = subprocess.Popen(
        [sys.executable, "-m", "parallel_dqn", "train", "--data", str(tiny_market), "--output", str(out),
         "--episodes", "1000", *QUICK],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not (out / "metrics.jsonl").exists():  # the first run is training
            assert first.poll() is None and time.monotonic() < deadline, first.stderr.read() if first.stderr else ""
            time.sleep(0.2)
        second = train(tiny_market, out, "--overwrite")
        one_error_line(second, "in use by another run", f"pid {first.pid}")
    finally:
        first.send_signal(signal.SIGTERM)
        _, err = first.communicate(timeout=120)
    assert first.returncode == 75, err  # stopped cleanly after a checkpoint: it was never disturbed
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [line["episode"] for line in lines] == list(range(1, len(lines) + 1))  # one run's curve, unmixed


@pytest.mark.mpi
def test_single_mode_under_mpiexec_is_refused_instead_of_training_once_per_rank(tiny_market, tmp_path):
    mpiexec = Path(sys.executable).with_name("mpiexec")
    out = tmp_path / "out"
    proc = subprocess.run(
        [str(mpiexec), "-n", "3", sys.executable, "-m", "parallel_dqn", "train", "--data", str(tiny_market),
         "--output", str(out), "--episodes", "1", *QUICK],
        capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
    )
    assert proc.returncode != 0
    assert "add --mode parallel" in proc.stderr and "Traceback" not in proc.stderr
    assert not (out / "metrics.jsonl").exists()


@pytest.fixture(scope="module")
def interrupted_run(tiny_market, tmp_path_factory) -> Path:
    """A run stopped (SIGTERM) after its first episode's checkpoint."""
    out = tmp_path_factory.mktemp("interrupted") / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "parallel_dqn", "train", "--data", str(tiny_market), "--output", str(out),
         "--episodes", "50", *QUICK], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    while not list((out / "checkpoints").glob("ckpt-*")):
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=120)
    assert proc.returncode == 75
    return out


@pytest.mark.parametrize("other_state", ["interrupted", "finished"])
def test_resume_into_another_folder_that_holds_a_run_is_refused(tiny_market, interrupted_run, tmp_path, other_state):
    checkpoint = sorted((interrupted_run / "checkpoints").glob("ckpt-*"))[-1]
    other = tmp_path / "other"
    if other_state == "finished":
        assert train(tiny_market, other).returncode == 0
    else:
        import shutil

        shutil.copytree(interrupted_run, other)
    before = tree_digest(other)
    proc = run_cli("train", "--resume", checkpoint, "--output", other, "--no_progress")
    one_error_line(proc, "already holds a run", str(other))
    assert "agent (DQN" not in proc.stdout  # never another run's results as this one's
    assert tree_digest(other) == before


def test_resume_into_a_new_folder_continues_the_checkpoint_there(interrupted_run, tmp_path):
    checkpoint = sorted((interrupted_run / "checkpoints").glob("ckpt-*"))[-1]
    before = tree_digest(interrupted_run)
    fork = tmp_path / "fork"
    proc = run_cli("train", "--resume", checkpoint, "--output", fork, "--no_progress", "--set", "checkpoint.keep=1")
    assert proc.returncode == 0, proc.stderr
    curve = [json.loads(line) for line in (fork / "metrics.jsonl").read_text().splitlines()]
    assert curve[0]["episode"] == 1 and curve[-1]["phase"] == "eval"  # the resumed curve, continued to the end
    assert tree_digest(interrupted_run) == before  # the run it came from is untouched


def test_overwrite_leaves_no_tensorboard_events_of_the_run_it_replaces(tiny_market, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "tb"
    assert train(tiny_market, out, episodes=2).returncode == 0
    assert train(tiny_market, out, "--overwrite", "--seed", "1", episodes=1).returncode == 0
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    steps = [e.step for e in events.Scalars("train/sharpe")]
    assert steps == [1]  # one value at step 1, and nothing of the replaced run's episode 2


def test_a_checkpoint_on_a_full_disk_fails_in_one_line_and_leaves_no_partial_checkpoint(tiny_market, tmp_path):
    with tmpfs(tmp_path / "small", "300k") as disk:
        out = disk / "run"
        proc = train(tiny_market, out, "--set", "run.progress=false", episodes=2)
        one_error_line(proc, "cannot write checkpoint", "No space left on device")
        assert json.loads((out / "status.json").read_text())["state"] == "failed"
        assert not list((out / "checkpoints").glob(".staging-*"))


def test_a_read_only_output_is_one_line(tiny_market, tmp_path):
    with tmpfs(tmp_path / "ro", "1m", read_only=True) as disk:
        proc = train(tiny_market, disk / "run")
        one_error_line(proc, "--output", "Read-only file system")


def test_a_huge_number_of_episodes_starts_at_once_in_little_memory_and_stops_on_sigterm(tiny_market, tmp_path):
    out = tmp_path / "huge"
    proc = subprocess.Popen(
        [sys.executable, "-m", "parallel_dqn", "train", "--data", str(tiny_market), "--output", str(out),
         "--episodes", "1000000000", *QUICK], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not (out / "metrics.jsonl").exists():  # its first episode is done
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.stderr else ""
        time.sleep(0.2)
    peak_kb = int(next(line.split()[1] for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines()
                       if line.startswith("VmHWM")))
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 75, err
    assert peak_kb < 2_000_000, f"peak RSS {peak_kb} kB"
    assert json.loads((out / "status.json").read_text())["state"] == "stopped"
    assert os.path.isdir(out / "checkpoints")
