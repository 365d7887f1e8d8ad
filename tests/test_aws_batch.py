"""launchers/aws/batch.py against moto's server (the Batch API beside its S3), and the array task's combination.

The tool's own boto3 code registers the job definition, submits a training and a sweep as an array job; the tests
read back what the API recorded (describe_job_definitions / describe_jobs), not whether a container ran: moto's
Batch is switched to its docker-free backend, which marks every job SUCCEEDED at once.
"""

from __future__ import annotations

import fnmatch
import importlib.util
import json
import os
import signal
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path

import pytest

from parallel_dqn.cloud import filesystem
from parallel_dqn.errors import UserError
from parallel_dqn.sweep.array import INDICES_VARIABLE, array_task_index, task_command
from tests.helpers import (
    STOCKS,
    StoreCheckpoints,
    make_market,
    run_cli,
    start_job,
    tiny_config,
    user_error,
    wait_for_checkpoint_after,
)

ROOT = Path(__file__).resolve().parents[1]
TOOL = ROOT / "launchers" / "aws" / "batch.py"
#: the secret the tool's process holds; it must never reach a definition or a job
SECRET = "h4-s3cr3t-never-in-a-job-definition"
SPEC = importlib.util.spec_from_file_location("aws_batch_tool", TOOL)
batch = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(batch)


def _tool(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``python launchers/aws/batch.py ARGS`` in a child process with exactly ``env`` (plus PATH)."""
    return subprocess.run([sys.executable, str(TOOL), *args], capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL, env={"PATH": os.environ["PATH"], **env})


@pytest.fixture
def aws(s3_emulator, monkeypatch):
    """moto's Batch (docker-free) with a compute environment, a job queue and a bucket; the variables set here."""
    env = {**s3_emulator.env, "AWS_SECRET_ACCESS_KEY": SECRET}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    request = urllib.request.Request(f"{s3_emulator.endpoint}/moto-api/config", method="POST",
                                     data=json.dumps({"batch": {"use_docker": False}}).encode())
    urllib.request.urlopen(request, timeout=10).read()
    import boto3

    tag = uuid.uuid4().hex[:8]
    role = boto3.client("iam").create_role(RoleName=f"batch-{tag}", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    client = boto3.client("batch")
    ce = client.create_compute_environment(computeEnvironmentName=f"ce-{tag}", type="UNMANAGED", state="ENABLED",
                                           serviceRole=role)
    queue = client.create_job_queue(jobQueueName=f"q-{tag}", state="ENABLED", priority=1, computeEnvironmentOrder=[
        {"order": 1, "computeEnvironment": ce["computeEnvironmentArn"]}])
    bucket = f"b-{tag}"
    boto3.client("s3").create_bucket(Bucket=bucket)
    yield type("AWS", (), {"client": client, "queue": queue["jobQueueName"], "queue_arn": queue["jobQueueArn"],
                           "bucket": bucket, "tag": tag, "env": env})


def _retry_action(rules: list[dict[str, str]], exit_code: int | None, reason: str = "") -> str:
    """AWS Batch's rule: the first evaluateOnExit entry whose patterns all match decides (none: RETRY)."""
    for rule in rules:
        if "onExitCode" in rule and (exit_code is None or not fnmatch.fnmatchcase(str(exit_code), rule["onExitCode"])):
            continue
        if "onStatusReason" in rule and not fnmatch.fnmatchcase(reason, rule["onStatusReason"]):
            continue
        if "onReason" in rule and not fnmatch.fnmatchcase(reason, rule["onReason"]):
            continue
        return rule["action"].upper()
    return "RETRY"


def test_register_reads_back_retry_on_75_only_and_no_secret(aws, capsys) -> None:
    name = f"pdqn-{aws.tag}"
    assert batch.main(["register", "--name", name, "--image", "local/parallel-dqn:test", "--attempts", "4",
                       "--vcpus", "2", "--memory", "4096", "--env", "PARALLEL_DQN_LOG=info"]) == 0
    assert f"registered {name}:1" in capsys.readouterr().out
    [definition] = aws.client.describe_job_definitions(jobDefinitionName=name)["jobDefinitions"]
    retry = definition["retryStrategy"]
    assert retry["attempts"] == 4
    rules = retry["evaluateOnExit"]
    assert _retry_action(rules, 75) == "RETRY"  # the run checkpointed on SIGTERM (spot reclaim)
    assert _retry_action(rules, None, "Host EC2 (instance i-0abc) terminated.") == "RETRY"
    for code in (0, 1, 2, 137, 143):
        assert _retry_action(rules, code, "Essential container in task exited") == "EXIT", code
    container = definition["containerProperties"]
    assert container["image"] == "local/parallel-dqn:test"
    assert container["command"][:1] == ["train"] and "--resume" in container["command"]
    assert container["command"][container["command"].index("--resume") + 1] == "auto"
    resources = {r["type"]: r["value"] for r in container["resourceRequirements"]}
    assert resources == {"VCPU": "2", "MEMORY": "4096"}
    names = {e["name"] for e in container["environment"]}
    assert "PARALLEL_DQN_LOG" in names and not any(batch.SECRET_NAME.search(n) for n in names)
    assert SECRET not in json.dumps(definition) and "AWS_SECRET" not in json.dumps(definition)


def test_submit_one_training_records_command_queue_and_parameters(aws, capsys) -> None:
    assert batch.main(["register", "--name", f"pdqn-{aws.tag}", "--image", "local/parallel-dqn:test"]) == 0
    capsys.readouterr()
    output, data = f"s3://{aws.bucket}/runs/r1/", f"s3://{aws.bucket}/market"
    assert batch.main(["submit", "--queue", aws.queue, "--definition", f"pdqn-{aws.tag}", "--output", output,
                       "--env", "PARALLEL_DQN_LOG=debug", "--", "--data", data, "--episodes", "2", "--sync"]) == 0
    job_id = capsys.readouterr().out.split()[1]
    [job] = aws.client.describe_jobs(jobs=[job_id])["jobs"]
    assert job["jobQueue"] == aws.queue_arn and job["jobName"] == "parallel-dqn-r1"
    assert job["jobDefinition"].endswith(f"job-definition/pdqn-{aws.tag}:1")
    assert job["container"]["command"] == ["train", "--data", data, "--episodes", "2", "--sync", "--output",
                                           f"s3://{aws.bucket}/runs/r1", "--resume", "auto", "--no-progress"]
    assert job["parameters"] == {"data": data, "output": f"s3://{aws.bucket}/runs/r1"}
    assert {"name": "PARALLEL_DQN_LOG", "value": "debug"} in job["container"]["environment"]
    assert SECRET not in json.dumps(job, default=str)
    assert batch.main(["status", job_id]) == 0
    assert capsys.readouterr().out.startswith(f"{job_id}  parallel-dqn-r1  ")


def _plan_sweep(folder: Path, data: str) -> Path:
    sweep_file = folder / "sweep.toml"
    sweep_file.write_text(f'[base_settings.data]\ndata = "{data}"\n[base_settings.dqn]\nepisodes = 1\n'
                          '[grid]\n"dqn.lr" = [1e-3, 5e-4, 2e-4]\n')
    out = folder / "sweep1"
    proc = run_cli("sweep", "plan", sweep_file, "--output", out)
    assert proc.returncode == 0, proc.stderr
    return out


def test_submit_array_then_each_child_trains_its_combination_from_the_store(aws, tmp_path, capsys,
                                                                            monkeypatch) -> None:
    assert batch.main(["register", "--name", f"pdqn-{aws.tag}", "--image", "local/parallel-dqn:test"]) == 0
    capsys.readouterr()
    sweep_dir = _plan_sweep(tmp_path, f"s3://{aws.bucket}/market")
    url = f"s3://{aws.bucket}/sweeps/s1"
    assert batch.main(["submit-array", str(sweep_dir), "--to", url, "--indices", "2,0", "--queue", aws.queue,
                       "--definition", f"pdqn-{aws.tag}", "--ranks", "3"]) == 0
    job_id = capsys.readouterr().out.split()[1]
    [job] = aws.client.describe_jobs(jobs=[job_id])["jobs"]
    assert job["arrayProperties"]["size"] == 2
    assert job["container"]["command"] == ["sweep", "task", url, "--ranks", "3"]
    assert {"name": INDICES_VARIABLE, "value": "2,0"} in job["container"]["environment"]
    # the store holds the sweep as the children read it: each child picks its combination by its array index
    names = sorted(p.name for p in sweep_dir.iterdir() if p.is_dir())
    assert sorted(p.split("/sweeps/s1/")[1] for p in filesystem(url).find(f"{aws.bucket}/sweeps/s1")) == [
        f"configs/{names[0]}.toml", f"configs/{names[2]}.toml", "sweep.json"]
    monkeypatch.setenv(INDICES_VARIABLE, "2,0")
    for child, index in ((0, 2), (1, 0)):
        monkeypatch.setenv("AWS_BATCH_JOB_ARRAY_INDEX", str(child))
        combination, command = task_command(url, None, None)
        assert combination.index == index and combination.name == names[index]
        config = Path(command[command.index("--config") + 1])
        assert config.read_text() == (sweep_dir / names[index] / "config.toml").read_text()
        assert command[command.index("--output") + 1] == f"{url}/{names[index]}"
        assert command[command.index("--resume") + 1] == "auto"


def test_array_index_picks_the_combination(tmp_path) -> None:
    assert array_task_index({"SLURM_ARRAY_TASK_ID": "5"}) == 5  # SLURM arrays carry the combination's index
    assert array_task_index({"AWS_BATCH_JOB_ARRAY_INDEX": "0"}) == 0
    assert array_task_index({"AWS_BATCH_JOB_ARRAY_INDEX": "1", INDICES_VARIABLE: "4,7,9"}) == 7
    assert array_task_index({"BATCH_TASK_INDEX": "2", INDICES_VARIABLE: "4,7,9"}) == 9  # Google Cloud Batch
    assert array_task_index({"JOB_COMPLETION_INDEX": "0", INDICES_VARIABLE: "4,7,9"}) == 4  # Kubernetes
    for env, named in (({}, "AWS_BATCH_JOB_ARRAY_INDEX"), ({"AWS_BATCH_JOB_ARRAY_INDEX": "x"}, "'x'"),
                       ({"AWS_BATCH_JOB_ARRAY_INDEX": "3", INDICES_VARIABLE: "4,7,9"}, "lists 3")):
        with pytest.raises(UserError, match=named):
            array_task_index(env)
    sweep_dir = _plan_sweep(tmp_path, "data/market")
    names = sorted(p.name for p in sweep_dir.iterdir() if p.is_dir())
    env = {**os.environ, "AWS_BATCH_JOB_ARRAY_INDEX": "1", INDICES_VARIABLE: "0,2"}
    env.pop("SLURM_ARRAY_TASK_ID", None)
    proc = run_cli("sweep", "config", sweep_dir, env=env)
    assert proc.returncode == 0, proc.stderr
    assert Path(proc.stdout.strip()) == (sweep_dir / names[2] / "config.toml").resolve()


def test_user_mistakes_are_one_line_exit_2(aws, tmp_path) -> None:
    env = aws.env
    out = ["--output", f"s3://{aws.bucket}/runs/r2"]
    assert "MY_TOKEN" in user_error(_tool("register", "--image", "x/y:1", "--env", "MY_TOKEN=abc", env=env), "MY_TOKEN")
    line = user_error(_tool("submit", "--queue", aws.queue, *out, "--env", "AWS_SECRET_ACCESS_KEY=" + SECRET,
                            "--", "--data", "s3://b/m", env=env), "AWS_SECRET_ACCESS_KEY")
    assert SECRET not in line
    user_error(_tool("submit", "--queue", "no-such-queue", *out, env=env), "no-such-queue")
    user_error(_tool("submit", "--queue", aws.queue, "--output", "runs/local", env=env), "runs/local", "s3://")
    user_error(_tool("submit", "--queue", aws.queue, *out, "--", "--data", "data/market", env=env), "data/market")
    bad = tmp_path / "definition.json"
    bad.write_text('{"containerProperties": {"image": "x",}}')
    user_error(_tool("register", "--definition", str(bad), env=env), str(bad), "line 1")
    no_keys = {"AWS_ENDPOINT_URL": env["AWS_ENDPOINT_URL"], "AWS_DEFAULT_REGION": "us-east-1",
               "AWS_EC2_METADATA_DISABLED": "true", "AWS_CONFIG_FILE": str(tmp_path / "none"),
               "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"), "HOME": str(tmp_path)}
    user_error(_tool("status", "1234", env=no_keys), "no AWS credentials")
    local = _plan_sweep(tmp_path, "data/market")
    user_error(_tool("submit-array", str(local), "--to", f"s3://{aws.bucket}/s", "--queue", aws.queue, env=env),
               "data/market")


@pytest.mark.slow
def test_spot_reclaimed_child_exits_75_and_its_retry_finishes_from_the_store(aws, tmp_path) -> None:
    """The contract the job definition relies on: an array child stopped by SIGTERM checkpoints to the store and
    exits 75 (RETRY); the retried attempt, on a fresh machine (empty cache and working folder), continues from that
    checkpoint and finishes its combination in the store."""
    market = make_market(tmp_path / "market")
    cfg = tiny_config(market, tmp_path / "unused")
    sweep_file = tmp_path / "sweep.toml"
    sweep_file.write_text(
        f'[base_settings.data]\ndata = "{market}"\nstocks = {json.dumps(list(STOCKS))}\n'
        f'start_date = "{cfg.data.start_date}"\nend_date = "{cfg.data.end_date}"\n'
        f'eval_start = "{cfg.data.eval_start}"\neval_end = "{cfg.data.eval_end}"\n'
        f'[base_settings.dqn]\nepisodes = 3\nlearning_starts = {cfg.dqn.learning_starts}\n'
        f'batch_size = {cfg.dqn.batch_size}\ntarget_update = {cfg.dqn.target_update}\n'
        f'[base_settings.market]\ngraph_window = {cfg.market.graph_window}\n'
        f'[base_settings.dist]\nworkers = {cfg.dist.workers}\n[grid]\n"run.seed" = [1, 2]\n')
    assert run_cli("sweep", "plan", sweep_file, "--output", tmp_path / "s1").returncode == 0
    url = f"s3://{aws.bucket}/sweeps/spot"
    from parallel_dqn.sweep import open_sweep
    from parallel_dqn.sweep.array import upload_sweep

    sweep = open_sweep(tmp_path / "s1")
    upload_sweep(sweep, url, sweep.combinations)
    name = sweep.combination(1).name

    def attempt(n: int) -> tuple[list[str], dict[str, str], Path]:
        (tmp_path / f"attempt{n}").mkdir()
        env = {**os.environ, **aws.env, "PARALLEL_DQN_CACHE": str(tmp_path / f"attempt{n}" / "cache"),
               "AWS_BATCH_JOB_ARRAY_INDEX": "0", INDICES_VARIABLE: "1"}
        return ["-m", "parallel_dqn", "sweep", "task", url], env, tmp_path / f"attempt{n}"

    args, env, cwd = attempt(1)
    job = start_job(args, ranks=None, env=env, cwd=cwd)
    store = StoreCheckpoints(filesystem(url), f"{aws.bucket}/sweeps/spot/{name}")
    wait_for_checkpoint_after(store, 0, job)
    job.send_signal(signal.SIGTERM)  # the ECS agent draining a reclaimed spot instance
    _, err = job.communicate(timeout=120)
    assert job.returncode == 75, err[-3000:]  # the definition's RETRY rule
    fs = filesystem(url)
    assert not fs.exists(f"{aws.bucket}/sweeps/spot/{name}/metrics.json")

    args, env, cwd = attempt(2)
    retried = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert retried.returncode == 0, retried.stderr[-3000:]
    assert "resuming from" in fs.cat_file(f"{aws.bucket}/sweeps/spot/{name}/run.log").decode()
    curve = [json.loads(line) for line in fs.cat_file(f"{aws.bucket}/sweeps/spot/{name}/metrics.jsonl").splitlines()]
    assert [row["episode"] for row in curve if row.get("phase") == "train"][-1] == 3
    assert json.loads(fs.cat_file(f"{aws.bucket}/sweeps/spot/{name}/status.json"))["state"] == "finished"
