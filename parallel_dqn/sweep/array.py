"""Array tasks of a sweep (or a walk-forward's folds): which combination a task trains, on SLURM or AWS Batch.

A SLURM job array numbers its tasks with the combination indices themselves (``sbatch --array=0,3,5``:
``SLURM_ARRAY_TASK_ID``). An AWS Batch array job numbers its children 0..size-1
(``AWS_BATCH_JOB_ARRAY_INDEX``; Google Cloud Batch's ``BATCH_TASK_INDEX`` and a Kubernetes Indexed Job's
``JOB_COMPLETION_INDEX`` likewise), so a submission of some combinations only also sets
:data:`INDICES_VARIABLE` (``"0,3,5"``): child ``i`` trains the ``i``-th of them. :func:`array_task_index`
applies both rules; ``parallel-dqn sweep config`` and ``sweep task`` use it when no INDEX is given.

A cloud job has no shared disk, so its sweep folder is in an object store: :func:`upload_sweep` copies
``sweep.json`` and the combinations' configs (``configs/NAME.toml``) to ``s3://BUCKET/PREFIX`` (or gs://, azure://), and
:func:`task_command` run there fetches the one combination's config and trains it with ``--output
PREFIX/<combination>`` and ``--resume auto``: a retried (spot-reclaimed) child continues from its checkpoint.
"""

from __future__ import annotations

import os
import tempfile
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path

from parallel_dqn.cloud import CloudURL, cloud_errors, filesystem, is_cloud_url
from parallel_dqn.errors import UserError
from parallel_dqn.sweep import CONFIG_FILE, SWEEP_FILE, Combination, Sweep, open_sweep, resumable_train_command

#: the variables an array task's index is read from, first set wins: SLURM, AWS Batch, Google Cloud Batch, a
#: Kubernetes Indexed Job (all but SLURM number their tasks 0..n-1)
INDEX_VARIABLES = ("SLURM_ARRAY_TASK_ID", "AWS_BATCH_JOB_ARRAY_INDEX", "BATCH_TASK_INDEX", "JOB_COMPLETION_INDEX")
#: comma-separated combination indices: array child i trains the i-th (AWS Batch children are numbered 0..n-1)
INDICES_VARIABLE = "PARALLEL_DQN_ARRAY_INDICES"
#: the folder of a store copy that holds each combination's config as NAME.toml: not NAME/config.toml, which is
#: the run's own output file there (a run mirrored to a store replaces it, and a retry must still find the input)
CONFIGS = "configs"


def array_task_index(environ: Mapping[str, str] | None = None) -> int:
    """The combination index this array task stands for (see the module); a UserError outside an array task."""
    env = os.environ if environ is None else environ
    name = next((n for n in INDEX_VARIABLES if env.get(n, "").strip()), None)
    if name is None:
        raise UserError(f"no INDEX given and this is not an array task ({', '.join(INDEX_VARIABLES)} are unset)",
                        "give the combination's INDEX")
    raw = env[name].strip()
    if not raw.isdigit():
        raise UserError(f"{name}={raw!r} is not an array index", "it must be a whole number >= 0")
    position = int(raw)
    listed = env.get(INDICES_VARIABLE, "").strip()
    if not listed:
        return position
    try:
        indices = [int(x) for x in listed.split(",")]
    except ValueError:
        raise UserError(f"{INDICES_VARIABLE}={listed!r} is not a list of indices", "write it as 0,3,5") from None
    if position >= len(indices):
        raise UserError(f"{name}={position} but {INDICES_VARIABLE} lists {len(indices)} combination(s)",
                        "submit an array of exactly that many children")
    return indices[position]


def combination_config(sweep: Sweep, combination: Combination) -> dict:
    """The combination's resolved config.toml as a table (a UserError if it is missing or unreadable)."""
    path = sweep.config_path(combination)
    try:
        return tomllib.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"{path} cannot be read ({exc})",
                        f"plan the sweep again: parallel-dqn sweep plan SWEEP.toml --output {sweep.folder}") from None


def check_cloud_ready(sweep: Sweep, combinations: Sequence[Combination]) -> None:
    """Refuse combinations a cloud job cannot train: data in a local folder, or a warm start from a local model."""
    for c in combinations:
        cfg = combination_config(sweep, c)
        data = str(cfg.get("data", {}).get("data", ""))
        if not is_cloud_url(data):
            raise UserError(f"{c.name} reads its data from {data!r}, a folder a cloud job cannot see",
                            "copy it with `parallel-dqn data sync DIR s3://BUCKET/PREFIX` and plan the sweep with "
                            "data.data = \"s3://BUCKET/PREFIX\"")
        if cfg.get("run", {}).get("warm_start"):
            raise UserError(f"{c.name} warm-starts from the previous fold's model, so the folds must run in order",
                            "plan the walk-forward without --warm_start for an array job, or run it locally")


def upload_sweep(sweep: Sweep, url: str, combinations: Sequence[Combination]) -> None:
    """Copy sweep.json and these combinations' config.toml to ``url`` (configs/NAME.toml, sweep.json last)."""
    where = CloudURL.parse(url)
    fs = filesystem(where)
    with cloud_errors(where, "uploading the sweep"):
        for c in combinations:
            fs.put_file(str(sweep.config_path(c)), remote_config(where, c))
        fs.put_file(str(sweep.folder / SWEEP_FILE), f"{where.root}/{SWEEP_FILE}")  # last: the folder is complete


def remote_config(where: CloudURL, combination: Combination) -> str:
    """Where a store copy of a sweep keeps ``combination``'s config (see :data:`CONFIGS`)."""
    return f"{where.root}/{CONFIGS}/{combination.name}.toml"


def fetch_sweep(url: str, index: int, staging: Path) -> tuple[Sweep, Combination]:
    """Download ``url``'s sweep.json and combination ``index``'s config.toml into ``staging``; open it there."""
    where = CloudURL.parse(url)
    fs = filesystem(where)
    with cloud_errors(where, "reading the sweep"):
        (staging / SWEEP_FILE).write_bytes(fs.cat_file(f"{where.root}/{SWEEP_FILE}"))
    sweep = open_sweep(staging)
    combination = sweep.combination(index)
    config = sweep.config_path(combination)
    config.parent.mkdir(parents=True, exist_ok=True)
    with cloud_errors(where, f"reading {combination.name}'s {CONFIG_FILE}"):
        config.write_bytes(fs.cat_file(remote_config(where, combination)))
    return sweep, combination


def task_command(source: str, index: int | None, ranks: int | None) -> tuple[Combination, list[str]]:
    """The combination that array task ``index`` (default: from the environment) trains, and the command that
    trains it with ``--resume auto``: into its folder of a local sweep folder, or ``URL/<name>`` of a cloud one."""
    chosen = array_task_index() if index is None else index
    if is_cloud_url(source):
        root = str(CloudURL.parse(source))
        sweep, combination = fetch_sweep(root, chosen, Path(tempfile.mkdtemp(prefix="parallel-dqn-task-")))
        return combination, resumable_train_command(sweep.config_path(combination), f"{root}/{combination.name}", ranks)
    sweep = open_sweep(source)
    combination = sweep.combination(chosen)
    return combination, resumable_train_command(sweep.config_path(combination), str(sweep.run_dir(combination)), ranks)
