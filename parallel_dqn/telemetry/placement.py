"""Where a run ran, for its record (``run.json``'s ``"where"``): the scheduler, the container, the machine.

A result is only comparable with another (a wall time, a throughput, a GPU's effect) when one knows
what produced it. Everything here is read from what the schedulers and container runtimes already
publish; nothing is configured:

* **scheduler**: SLURM (``SLURM_JOB_ID``, its nodes), AWS Batch (``AWS_BATCH_JOB_ID``, the array index and
  attempt), Kubernetes (``KUBERNETES_SERVICE_HOST``), else ``local``. Only identifiers are kept, never
  another variable's value (no credential can reach the record).
* **container**: Docker (``/.dockerenv``), Podman (``/run/.containerenv``), Charliecloud (``CH_RUNNING``),
  Apptainer/Singularity (``APPTAINER_CONTAINER``/``SINGULARITY_CONTAINER``), else None.
* **machine**: logical cores, the cores this process may use (affinity, as SLURM and cgroups set it),
  physical memory, and the CUDA GPUs torch sees.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

#: container runtime -> how it shows itself: a file it creates, or a variable it sets
CONTAINER_FILES = (("docker", "/.dockerenv"), ("podman", "/run/.containerenv"))
CONTAINER_VARIABLES = (("charliecloud", "CH_RUNNING"), ("apptainer", "APPTAINER_CONTAINER"),
                       ("singularity", "SINGULARITY_CONTAINER"))


def scheduler(env: Mapping[str, str]) -> dict[str, Any]:
    """``{"kind": "slurm" | "aws-batch" | "kubernetes" | "local", ...identifiers}`` from ``env``.

    SLURM wins over Kubernetes (a SLURM cluster may run in pods); AWS Batch jobs on EKS are Batch jobs.
    """
    if env.get("SLURM_JOB_ID"):
        return {"kind": "slurm", "job_id": env["SLURM_JOB_ID"],
                "array_task_id": _number(env.get("SLURM_ARRAY_TASK_ID")),
                "nodes": _number(env.get("SLURM_JOB_NUM_NODES") or env.get("SLURM_NNODES")),
                "nodelist": env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST"),
                "partition": env.get("SLURM_JOB_PARTITION")}
    if env.get("AWS_BATCH_JOB_ID"):
        return {"kind": "aws-batch", "job_id": env["AWS_BATCH_JOB_ID"],
                "array_index": _number(env.get("AWS_BATCH_JOB_ARRAY_INDEX")),
                "attempt": _number(env.get("AWS_BATCH_JOB_ATTEMPT")), "queue": env.get("AWS_BATCH_JQ_NAME")}
    if env.get("KUBERNETES_SERVICE_HOST"):
        return {"kind": "kubernetes", "pod": env.get("HOSTNAME")}
    return {"kind": "local"}


def container(env: Mapping[str, str], exists: Callable[[str], bool] = os.path.exists) -> str | None:
    """The container runtime this process runs in, or None on the bare machine."""
    for name, variable in CONTAINER_VARIABLES:
        if env.get(variable):
            return name
    for name, path in CONTAINER_FILES:
        if exists(path):
            return name
    return None


def machine() -> dict[str, Any]:
    """Cores (all, and usable by this process), physical memory in bytes, and the CUDA GPUs torch sees."""
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count()
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        memory = None
    return {"cores": os.cpu_count(), "cores_usable": usable, "memory_bytes": memory,
            "memory_limit_bytes": _cgroup_memory_limit(), "gpus": gpus()}


def gpus() -> list[str]:
    """Names of the CUDA devices torch can use (empty without CUDA)."""
    import torch

    if not torch.cuda.is_available():
        return []
    return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]


def placement(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """run.json's ``"where"``: scheduler, container and machine of this process (rank 0's, in an MPI run)."""
    env = os.environ if env is None else env
    return {"scheduler": scheduler(env), "container": container(env), **machine()}


def _cgroup_memory_limit(root: Path = Path("/sys/fs/cgroup")) -> int | None:
    """The memory limit of this process's cgroup (v2 ``memory.max``, v1 ``memory.limit_in_bytes``), None if
    unlimited or unknown: a container or SLURM allocation often has less than the machine."""
    for name in ("memory.max", "memory/memory.limit_in_bytes"):
        try:
            text = (root / name).read_text().strip()
        except OSError:
            continue
        value = _number(text)
        if value is not None and value < 1 << 60:  # cgroup v1 writes a huge number for "no limit"
            return value
    return None


def _number(text: str | None) -> int | None:
    return int(text) if text and text.strip().isdigit() else None
