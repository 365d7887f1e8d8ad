"""run.json's "where": the scheduler, container and machine a run ran on (issue 14, item 7)."""

from __future__ import annotations

import json
import os

from parallel_dqn.telemetry import placement
from parallel_dqn.telemetry.record import run_record
from tests.helpers import tiny_config

SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


def test_slurm_job_with_its_nodes():
    env = {"SLURM_JOB_ID": "4242", "SLURM_JOB_NUM_NODES": "2", "SLURM_JOB_NODELIST": "node[1-2]",
           "SLURM_JOB_PARTITION": "debug", "KUBERNETES_SERVICE_HOST": "10.0.0.1"}
    assert placement.scheduler(env) == {"kind": "slurm", "job_id": "4242", "array_task_id": None, "nodes": 2,
                                        "nodelist": "node[1-2]", "partition": "debug"}


def test_aws_batch_array_job():
    env = {"AWS_BATCH_JOB_ID": "8f1e-77:3", "AWS_BATCH_JOB_ARRAY_INDEX": "3", "AWS_BATCH_JOB_ATTEMPT": "2",
           "AWS_BATCH_JQ_NAME": "spot", "AWS_SECRET_ACCESS_KEY": SECRET}
    found = placement.scheduler(env)
    assert found == {"kind": "aws-batch", "job_id": "8f1e-77:3", "array_index": 3, "attempt": 2, "queue": "spot"}
    assert SECRET not in json.dumps(found)


def test_kubernetes_pod_and_local():
    assert placement.scheduler({"KUBERNETES_SERVICE_HOST": "10.0.0.1", "HOSTNAME": "train-7c9"}) == {
        "kind": "kubernetes", "pod": "train-7c9"}
    assert placement.scheduler({}) == {"kind": "local"}


def test_containers_by_file_and_by_variable():
    assert placement.container({}, exists=lambda p: p == "/.dockerenv") == "docker"
    assert placement.container({}, exists=lambda p: p == "/run/.containerenv") == "podman"
    assert placement.container({"CH_RUNNING": "Weird Al Yankovic"}, exists=lambda p: False) == "charliecloud"
    assert placement.container({"APPTAINER_CONTAINER": "/img.sif"}, exists=lambda p: False) == "apptainer"
    assert placement.container({}, exists=lambda p: False) is None


def test_machine_figures_are_this_machines():
    found = placement.machine()
    assert found["cores"] == os.cpu_count()
    assert 1 <= found["cores_usable"] <= found["cores"]
    assert found["memory_bytes"] == os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") > 0
    assert isinstance(found["gpus"], list)


def test_run_record_says_where(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    monkeypatch.setenv("SLURM_JOB_NUM_NODES", "3")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("CH_RUNNING", "Weird Al Yankovic")
    record = run_record(tiny_config(tmp_path, tmp_path / "out"), ["AAA"], [])
    where = record["where"]
    assert where["scheduler"]["kind"] == "slurm" and where["scheduler"]["job_id"] == "77"
    assert where["scheduler"]["nodes"] == 3
    assert where["container"] == "charliecloud"
    assert where["cores"] == os.cpu_count()
    assert SECRET not in json.dumps(record)
