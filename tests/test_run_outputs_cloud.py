"""Runs in object storage (issue 14, item 4): ``--output s3://...`` is staged locally and mirrored to the store,
and a job killed with kill -9 continues on another machine (a fresh working folder and cache) from the store."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import time
import uuid
from pathlib import Path

import pytest

from parallel_dqn.checkpoint.format import CheckpointStore, write_state
from parallel_dqn.cloud import CloudURL, filesystem
from parallel_dqn.config import Config
from parallel_dqn.errors import UserError
from parallel_dqn.run import cloud_output
from parallel_dqn.run.cloud_output import StoreMirror, readable
from tests.helpers import (
    ERROR_LINE,
    StoreCheckpoints,
    assert_same_run,
    make_market,
    mpiexec,
    run_cli,
    start_job,
    train_args,
    user_error,
    wait_for_checkpoint_after,
)


@pytest.fixture
def bucket(s3_emulator, monkeypatch) -> str:
    """A new bucket in the session's S3 emulator, this process's variables pointed at it."""
    for name, value in s3_emulator.env.items():
        monkeypatch.setenv(name, value)
    name = f"runs-{uuid.uuid4().hex[:8]}"
    filesystem(f"s3://{name}").mkdir(name)
    return name


def machine(tmp_path: Path, name: str, emulator) -> tuple[Path, dict[str, str]]:
    """A working folder and environment of a fresh machine: its own, empty cache (so its own staging folder)."""
    home = tmp_path / name
    (home / "work").mkdir(parents=True)
    return home / "work", {**os.environ, **emulator.env, "PARALLEL_DQN_CACHE": str(home / "cache")}


def single(market: Path, output: str, *extra: str) -> list[str]:
    """A single-mode train command line (for python) equal to tests.helpers.tiny_config."""
    return [*train_args(market, output, *extra), "--mode", "single"]  # type: ignore[arg-type]


def kill_9_on_one_machine_then_finish_on_another(tmp_path: Path, emulator, url: str, args: list[str],
                                                 ranks: int | None) -> None:
    """Start ``args`` (python's, with ``--resume auto``) on machine spot-1, kill it with SIGKILL at a random moment
    after its first checkpoint reached the store, then run the same command on spot-2 (empty working folder and
    cache) to the end; it must have continued from the store's checkpoint."""
    fs = filesystem(url)
    root = url.removeprefix("s3://")
    first_cwd, first_env = machine(tmp_path, "spot-1", emulator)
    job = start_job(args, ranks=ranks, env=first_env, cwd=first_cwd)
    wait_for_checkpoint_after(StoreCheckpoints(fs, root), 0, job)
    seed = int(time.time() * 1000) % 100_000
    print(f"kill moment drawn with random seed {seed}")
    time.sleep(random.Random(seed).uniform(0.0, 1.0))
    assert job.poll() is None, "the run finished before it could be killed: make it longer"
    os.killpg(job.pid, signal.SIGKILL)
    job.wait()
    job.stdout.close(), job.stderr.close()  # type: ignore[union-attr]
    assert not fs.exists(f"{root}/metrics.json")
    second_cwd, second_env = machine(tmp_path, "spot-2", emulator)
    resumed = start_job(args, ranks=ranks, env=second_env, cwd=second_cwd)
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err[-3000:]
    # it did continue from the store's checkpoint (a fresh --sync start would end the same): its log says so
    fs.invalidate_cache()
    assert "resuming from" in fs.cat_file(f"{root}/run.log").decode()


def test_killed_run_resumes_from_the_store_on_a_fresh_machine(bucket, s3_emulator, tmp_path):
    market = make_market(tmp_path / "market")
    url = f"s3://{bucket}/experiments/killed"
    args = single(market, url, "--sync", "--episodes", "3", "--resume", "auto")
    kill_9_on_one_machine_then_finish_on_another(tmp_path, s3_emulator, url, args, ranks=None)
    reference = run_cli(*single(market, str(tmp_path / "reference"), "--sync", "--episodes", "3")[2:])
    assert reference.returncode == 0, reference.stderr[-3000:]
    # what the store holds (read back as report and evaluate read it) is exactly the uninterrupted run
    assert_same_run(tmp_path / "reference", Path(readable(url)))
    fs = filesystem(url)
    assert StoreCheckpoints(fs, f"{bucket}/experiments/killed").committed(), "the store keeps the run's checkpoints"
    assert all(fs.exists(f"{bucket}/experiments/killed/{name}") for name in ("run.json", "status.json", "run.log"))

    # the store, not the (empty) staging folder of a third machine, says the output holds a run
    third_cwd, third_env = machine(tmp_path, "laptop", s3_emulator)
    again = run_cli(*single(market, url, "--sync", "--episodes", "3")[2:], cwd=third_cwd, env=third_env)
    user_error(again, url, "already holds a run", "--overwrite")
    report = run_cli("report", url, cwd=third_cwd, env=third_env)
    assert report.returncode == 0 and "report:" in report.stdout, report.stderr[-3000:]
    # evaluate reads the model from the store and writes its outputs there: the run's own evaluation again
    evaluated = run_cli("evaluate", "--model", f"{url}/trained_model.pth", "--data", market, "--eval_start",
                        "2024-01-08", "--eval_end", "2024-01-08", "--output", f"s3://{bucket}/evaluation",
                        "--no-progress", cwd=third_cwd, env=third_env)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert f"results: s3://{bucket}/evaluation/metrics.json" in evaluated.stdout
    fs.invalidate_cache()
    run, again = (json.loads(fs.cat_file(f"{bucket}/{path}/metrics.json")) for path in ("experiments/killed", "evaluation"))
    assert again["eval"] == run["eval"]


@pytest.mark.mpi
def test_killed_mpi_job_resumes_from_the_store_on_a_fresh_machine(bucket, s3_emulator, tmp_path):
    """The same under mpiexec -n 4: every rank writes into the staging folder, rank 0 mirrors it."""
    market = make_market(tmp_path / "market")
    url = f"s3://{bucket}/mpi"
    args = train_args(market, url, "--sync", "--episodes", "3", "--resume", "auto")  # type: ignore[arg-type]
    kill_9_on_one_machine_then_finish_on_another(tmp_path, s3_emulator, url, args, ranks=4)
    reference = mpiexec(4, *train_args(market, tmp_path / "reference", "--sync", "--episodes", "3"), timeout=300)
    assert reference.returncode == 0, reference.stderr[-3000:]
    assert_same_run(tmp_path / "reference", Path(readable(url)))
    assert filesystem(url).exists(f"{bucket}/mpi/logs/rank1.log"), "the worker ranks' logs are uploaded too"


def test_missing_bucket_is_one_line(s3_emulator, tmp_path):
    market = make_market(tmp_path / "market")
    cwd, env = machine(tmp_path, "m", s3_emulator)
    url = f"s3://no-such-bucket-{uuid.uuid4().hex[:8]}/run"
    proc = run_cli(*single(market, url)[2:], cwd=cwd, env=env)
    user_error(proc, url, "does not exist")


def test_unreachable_store_is_not_taken_for_a_missing_bucket(tmp_path, monkeypatch):
    """Checked before anything is written: a closed port says 'could not be reached', not 'does not exist'."""
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{closed.getsockname()[1]}")
    for name, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing")):
        monkeypatch.setenv(name, value)
    staging = tmp_path / "staging"
    with closed, pytest.raises(UserError, match="could not be reached") as refused:
        StoreMirror(CloudURL.parse("s3://runs/x"), staging).prepare(overwrite=False, resume="auto")
    assert "does not exist" not in refused.value.line() and not staging.exists()


def test_store_down_at_upload_keeps_the_staging_copy(bucket, s3_emulator, spare_s3_emulator, tmp_path, monkeypatch):
    back = filesystem(f"s3://{bucket}")  # the session's emulator: a store that answers again later (empty)
    for name, value in spare_s3_emulator.env.items():
        monkeypatch.setenv(name, value)
    url = f"s3://{bucket}/down"
    fs = filesystem(url)
    fs.mkdir(bucket)
    market = make_market(tmp_path / "market")
    cwd, env = machine(tmp_path, "m", spare_s3_emulator)
    job = start_job(single(market, url, "--episodes", "3"), ranks=None, env=env, cwd=cwd)
    wait_for_checkpoint_after(StoreCheckpoints(fs, f"{bucket}/down"), 0, job)
    spare_s3_emulator.stop()
    out, err = job.communicate(timeout=240)
    assert job.returncode == 2 and "Traceback" not in out + err, err[-3000:]
    errors = [line for line in err.splitlines() if ERROR_LINE.match(line)]  # the run's log lines come before it
    assert len(errors) == 1 and err.rstrip().endswith(errors[0]), err[-3000:]
    staging = Path(env["PARALLEL_DQN_CACHE"]) / "runs" / "s3" / bucket / "down"
    assert all(name in errors[0] for name in (url, "could not be reached", str(staging), "--resume auto")), errors[0]
    assert (staging / "checkpoints").is_dir() and list((staging / "checkpoints").glob("ckpt-*/manifest.json"))

    # the store answers again: the same command with --resume auto continues from the kept staging folder (newer
    # than what that store holds) and uploads the run
    again = run_cli(*single(market, url, "--episodes", "3", "--resume", "auto")[2:], cwd=cwd,
                    env={**env, **s3_emulator.env})
    assert again.returncode == 0, again.stderr[-3000:]
    assert "holds a newer checkpoint" in again.stderr and "resuming from" in again.stderr
    back.invalidate_cache()
    assert back.exists(f"{bucket}/down/metrics.json") and StoreCheckpoints(back, f"{bucket}/down").committed()


def test_mirror_writes_manifests_last_drops_them_first_and_keeps_the_users_objects(bucket, tmp_path):
    """The mirror's rules on real checkpoints, without training: a checkpoint's manifest is uploaded after its
    state files and deleted before them; the run's files follow the staging folder; a user's object stays; a reader
    takes the newest checkpoint that verifies."""
    url = CloudURL.parse(f"s3://{bucket}/run")
    fs = filesystem(url)
    fs.pipe_file(f"{bucket}/run/notes.txt", b"the user's own")
    staging = tmp_path / "staging"
    mirror = StoreMirror(url, staging)
    staging.mkdir()
    mirror.prepare(overwrite=False, resume=None)  # no run there yet: the user's object is no run
    checkpoints = CheckpointStore(staging / "checkpoints", keep=2)
    calls: list[tuple[str, str]] = []
    put, rm = fs.put_file, fs.rm_file
    mirror._fs = fs
    fs.put_file = lambda local, remote, **kw: (calls.append(("put", remote)), put(local, remote, **kw))
    fs.rm_file = lambda path, **kw: (calls.append(("rm", path)), rm(path, **kw))

    def checkpoint(seq: int) -> None:
        folder = checkpoints.staging(seq)
        files = {name: write_state(folder / name, {"seq": seq, "who": name}) for name in ("server.pt", "worker-000.pt")}
        checkpoints.commit(seq, files, {"reason": f"test {seq}"})
        (staging / f"portfolio_ep{seq}.csv").write_text(f"episode {seq}\n")
        mirror.push()

    for seq in (1, 2, 3):
        checkpoint(seq)
    order = [(op, path.rsplit("/run/", 1)[1]) for op, path in calls]
    for seq in (1, 2, 3):
        name = f"checkpoints/ckpt-{seq:06d}"
        puts = [p for op, p in order if op == "put" and p.startswith(name)]
        assert puts[-1] == f"{name}/manifest.json" and len(puts) == 3, order
    dropped = [p for op, p in order if op == "rm"]  # keep=2: ckpt 1 rotated away, its manifest first
    assert dropped[0] == "checkpoints/ckpt-000001/manifest.json" and len(dropped) == 3, order
    fs.invalidate_cache()
    stored = {p.rsplit("/run/", 1)[1] for p in fs.find(f"{bucket}/run")}
    assert "notes.txt" in stored and not any(p.startswith("checkpoints/ckpt-000001") for p in stored)
    assert {"portfolio_ep1.csv", "checkpoints/ckpt-000003/manifest.json"} <= stored

    # a reader on another machine: the newest checkpoint is damaged in the store, the next older one is used
    fs.pipe_file(f"{bucket}/run/checkpoints/ckpt-000003/server.pt", b"damaged")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    with pytest.raises(UserError, match="already holds a run"):
        StoreMirror(url, elsewhere).prepare(overwrite=False, resume=None)
    StoreMirror(url, elsewhere).prepare(overwrite=False, resume="auto")
    assert [p.name for p in CheckpointStore(elsewhere / "checkpoints").committed()] == ["ckpt-000002"]
    assert (elsewhere / "portfolio_ep3.csv").read_text() == "episode 3\n" and not (elsewhere / "notes.txt").exists()


def test_stage_hands_its_mirror_to_the_caller_and_the_module_keeps_no_state(tmp_path, monkeypatch):
    """``stage`` returns a cloud output's mirror for the caller to pass on (claim, lifecycle, full-workflow's
    upload): a new one each time, and no registry of mirrors (or other mutable state) in the module."""
    monkeypatch.setenv("PARALLEL_DQN_CACHE", str(tmp_path / "cache"))
    cfg, again, local = Config(), Config(), Config()
    cfg.set("run.output", "s3://runs/team/a")
    again.set("run.output", "s3://runs/team/a")
    local.set("run.output", str(tmp_path / "out"))
    mirror = cloud_output.stage(cfg)
    assert mirror is not None and mirror.url == CloudURL.parse("s3://runs/team/a")
    assert mirror.folder == Path(cfg.run.output) == tmp_path / "cache" / "runs" / "s3" / "runs" / "team" / "a"
    assert cloud_output.stage(again) is not mirror
    assert cloud_output.stage(local) is None and local.run.output == str(tmp_path / "out")
    state = [name for name, value in vars(cloud_output).items()
             if not name.startswith("__") and isinstance(value, (dict, list, set))]
    assert not state, state
