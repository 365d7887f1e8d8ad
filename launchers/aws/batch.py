#!/usr/bin/env python3
"""AWS Batch for parallel-dqn: register the job definition, submit a training, a sweep or walk-forward as an array job.

    ./run_with_env.sh python launchers/aws/batch.py register --image URI [--vcpus 4 --memory 8192 --attempts 5 ...]
    ./run_with_env.sh python launchers/aws/batch.py submit --queue Q --output s3://B/runs/r1 -- --data s3://B/market ...
    ./run_with_env.sh python launchers/aws/batch.py submit-array runs/sweep1 --to s3://B/sweeps/sweep1 --queue Q
    ./run_with_env.sh python launchers/aws/batch.py status JOB_ID...

The definition (launchers/aws/job_definition.json) runs the image's ``parallel-dqn`` with ``--resume auto`` and an
object-store ``--output``, and retries exit code 75 only: the run's answer to SIGTERM (a spot reclaim drains the
instance: SIGTERM, a checkpoint, exit 75), plus a host that vanished under it; anything else ends the job. A retried
attempt, on another instance, continues from the run's newest checkpoint in the store.

A sweep or a walk-forward's folds (``parallel-dqn walk-forward ... --plan_only``) are planned here as today;
``submit-array`` copies the sweep folder's sweep.json and config files to ``--to`` and submits one array job whose
child i runs ``parallel-dqn sweep task URL``: the combination is picked from AWS_BATCH_JOB_ARRAY_INDEX
(parallel_dqn.sweep.array), and its outputs go to ``URL/<combination>``.

Credentials come from boto3's chain (the environment, ``.cloudkeys/api_keys.env`` through ``./run_with_env.sh``, a
profile, an instance role); the job itself reads S3 through the job role (``--job-role``). Nothing secret goes into
a definition or a submission: a variable whose name looks like a secret is refused. A user's mistake (no
credentials, unknown queue, bad JSON, a local --data or --output) is one line and exit status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from parallel_dqn.cloud import CloudURL, is_cloud_url
from parallel_dqn.errors import UserError

PROG = "parallel-dqn aws-batch"
HERE = Path(__file__).resolve().parent
DEFINITION = HERE / "job_definition.json"
#: the exit status of a run that checkpointed on SIGTERM (parallel_dqn.errors.EXIT_PREEMPTED): the one to retry
RETRY_EXIT_CODE = "75"
#: a variable with such a name is never put into a definition or a submission (credentials: the job role)
SECRET_NAME = re.compile(r"KEY|SECRET|TOKEN|PASSWORD|PASSWD|CREDENTIAL|CONNECTION_STRING", re.IGNORECASE)
#: values that are credentials whatever their variable is called (an AWS access key id, Azure account keys)
SECRET_VALUE = re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b|AccountKey=|SharedAccessSignature=|-----BEGIN")
#: train's flags the tool sets itself
OWN_FLAGS = ("--output", "--resume")
JOB_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")
KEYS_HINT = "set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE, e.g. in .cloudkeys/api_keys.env, " \
            "and run through ./run_with_env.sh"


# ---- errors ------------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def aws_errors(doing: str) -> Iterator[None]:
    """Turn botocore's failures while ``doing`` something into one UserError line (no secret is in them)."""
    from botocore import exceptions as bx

    try:
        yield
    except (bx.NoCredentialsError, bx.PartialCredentialsError):
        raise UserError(f"{doing}: no AWS credentials found", KEYS_HINT) from None
    except bx.NoRegionError:
        raise UserError(f"{doing}: no AWS region", "set AWS_DEFAULT_REGION or pass --region") from None
    except bx.EndpointConnectionError as err:
        raise UserError(f"{doing}: AWS could not be reached ({err.kwargs.get('endpoint_url', 'endpoint')})",
                        "check the network, AWS_ENDPOINT_URL and the region") from None
    except bx.ClientError as err:
        info = err.response.get("Error", {})
        code, message = info.get("Code", "error"), info.get("Message", str(err))
        if code in ("UnrecognizedClientException", "InvalidSignatureException", "ExpiredTokenException",
                    "AccessDeniedException", "AccessDenied"):
            raise UserError(f"{doing}: AWS refused the credentials ({code}: {message})", KEYS_HINT) from None
        raise UserError(f"{doing}: AWS Batch answered {code}: {message}", "check the names and values given") from None
    except bx.ParamValidationError as err:
        raise UserError(f"{doing}: {' '.join(str(err).split())}", "fix the definition or the flags") from None
    except bx.BotoCoreError as err:
        raise UserError(f"{doing}: {type(err).__name__}: {err}", "check the AWS settings and run again") from None


def batch_client(region: str | None = None) -> Any:
    """A boto3 Batch client from the standard chain (AWS_ENDPOINT_URL too: moto's server in the tests)."""
    import boto3

    with aws_errors("connecting to AWS Batch"):
        return boto3.client("batch", region_name=region)


# ---- the job definition --------------------------------------------------------------------------------------------
def load_definition(path: str | Path) -> dict[str, Any]:
    """The JSON template at ``path``; bad JSON is one line naming the line and column."""
    where = Path(path)
    try:
        tree = json.loads(where.read_text())
    except OSError as err:
        raise UserError(f"cannot read the job definition {where} ({err.strerror})", "check the path") from None
    except json.JSONDecodeError as err:
        raise UserError(f"{where} is not valid JSON (line {err.lineno}, column {err.colno}: {err.msg})",
                        "fix the file") from None
    if not isinstance(tree, dict) or not isinstance(tree.get("containerProperties"), dict):
        raise UserError(f"{where} has no containerProperties object", "start from launchers/aws/job_definition.json")
    return tree


def parse_env(pairs: Sequence[str]) -> list[dict[str, str]]:
    """``NAME=VALUE`` flags as Batch's environment list."""
    out = []
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.isidentifier():
            raise UserError(f"--env {pair.partition('=')[0]!r} is not NAME=VALUE", "write --env NAME=VALUE")
        out.append({"name": name, "value": value})
    return out


def refuse_secrets(environment: Sequence[dict[str, Any]], where: str) -> None:
    """A UserError if a variable's name looks like a secret or its value like a credential (neither is shown)."""
    for item in environment:
        name = str(item.get("name", ""))
        if SECRET_NAME.search(name) or SECRET_VALUE.search(str(item.get("value", ""))):
            raise UserError(f"refusing to put {name} into {where}: it looks like a secret, and a job definition or "
                            "submission is readable by anyone who may describe jobs",
                            "let the job reach S3 through its IAM role, --job-role ARN; keep keys in .cloudkeys/api_keys.env")


def build_definition(template: dict[str, Any], *, name: str | None = None, image: str | None = None,
                     vcpus: int | None = None, memory: int | None = None, attempts: int | None = None,
                     job_role: str | None = None, env: Sequence[str] = ()) -> dict[str, Any]:
    """The template with the flags applied; checked: the retry rule for 75 is there, nothing secret is in it."""
    definition = json.loads(json.dumps(template))
    container = definition["containerProperties"]
    if name:
        definition["jobDefinitionName"] = name
    if image:
        container["image"] = image
    resources = {r.get("type"): r for r in container.setdefault("resourceRequirements", [])}
    for kind, value in (("VCPU", vcpus), ("MEMORY", memory)):
        if value is not None:
            if value < 1:
                raise UserError(f"--{'vcpus' if kind == 'VCPU' else 'memory'} {value} must be >= 1")
            if kind in resources:
                resources[kind]["value"] = str(value)
            else:
                container["resourceRequirements"].append({"type": kind, "value": str(value)})
    if job_role:
        container["jobRoleArn"] = job_role
    retry = definition.setdefault("retryStrategy", {})
    if attempts is not None:
        if not 1 <= attempts <= 10:
            raise UserError(f"--attempts {attempts} is out of range", "AWS Batch allows 1 to 10 attempts")
        retry["attempts"] = attempts
    rules = retry.get("evaluateOnExit") or []
    if not any(r.get("onExitCode") == RETRY_EXIT_CODE and r.get("action", "").upper() == "RETRY" for r in rules):
        raise UserError("the definition's retryStrategy does not retry exit code 75 (a run checkpointed on SIGTERM)",
                        'add {"onExitCode": "75", "action": "RETRY"} to retryStrategy.evaluateOnExit')
    named = {e.get("name"): e for e in container.setdefault("environment", [])}
    for item in parse_env(env):
        if item["name"] in named:
            named[item["name"]]["value"] = item["value"]
        else:
            container["environment"].append(item)
    refuse_secrets(container["environment"], "the job definition")
    if "ACCOUNT." in str(container.get("image", "")) or not container.get("image"):
        raise UserError("the job definition names no image", "pass --image ACCOUNT.dkr.ecr.REGION.amazonaws.com/parallel-dqn:TAG")
    return definition


def register(client: Any, definition: dict[str, Any]) -> dict[str, Any]:
    """Register ``definition``; AWS's answer (jobDefinitionName, jobDefinitionArn, revision)."""
    with aws_errors(f"registering job definition {definition.get('jobDefinitionName')}"):
        return client.register_job_definition(**definition)


# ---- submissions -------------------------------------------------------------------------------------------------
def check_queue(client: Any, queue: str) -> None:
    """A UserError unless ``queue`` exists (name or ARN)."""
    with aws_errors(f"looking up job queue {queue}"):
        found = client.describe_job_queues(jobQueues=[queue]).get("jobQueues", [])
    if not found:
        raise UserError(f"job queue {queue!r} does not exist", "check --queue (`aws batch describe-job-queues`), or "
                        "create it on a compute environment first (README: Deploying on clouds)")


def check_definition(client: Any, definition: str) -> None:
    """A UserError unless an active job definition ``NAME`` or ``NAME:REVISION`` (or its ARN) exists."""
    with aws_errors(f"looking up job definition {definition}"):
        if definition.startswith("arn:") or ":" in definition:
            found = client.describe_job_definitions(jobDefinitions=[definition]).get("jobDefinitions", [])
        else:
            found = client.describe_job_definitions(jobDefinitionName=definition, status="ACTIVE").get("jobDefinitions", [])
    if not [d for d in found if d.get("status", "ACTIVE") == "ACTIVE"]:
        raise UserError(f"job definition {definition!r} is not registered",
                        "register it first: python launchers/aws/batch.py register --image URI")


def train_command(train_args: Sequence[str], output: str) -> list[str]:
    """The container's command (after the image's ``parallel-dqn`` entry point) for one training into ``output``."""
    args = list(train_args[1:] if train_args[:1] == ["--"] else train_args)
    for i, arg in enumerate(args):
        flag, _, inline = arg.partition("=")
        if flag in OWN_FLAGS:
            raise UserError(f"give {flag} to the tool, not after --", "the tool sets --output URL and --resume auto")
        if flag == "--data":
            value = inline or (args[i + 1] if i + 1 < len(args) else "")
            if not is_cloud_url(value):
                raise UserError(f"--data {value!r} is not an object store: a Batch job cannot see this machine's "
                                "folders", "copy it with `parallel-dqn data sync DIR s3://BUCKET/PREFIX` and pass that URL")
    return ["train", *args, "--output", cloud_output(output), "--resume", "auto", "--no-progress"]


def cloud_output(output: str) -> str:
    """``output`` if it names an object store (canonical form); a UserError for a local folder."""
    if not is_cloud_url(output):
        raise UserError(f"--output {output!r} is not an object store: a Batch job's disk is gone when it ends",
                        "give --output s3://BUCKET/PREFIX")
    return str(CloudURL.parse(output))


def job_name(name: str | None, output: str) -> str:
    """``name``, or one made from the output's last part; checked against Batch's rule."""
    chosen = name or "parallel-dqn-" + re.sub(r"[^A-Za-z0-9_-]", "-", output.rstrip("/").rsplit("/", 1)[-1])[:100]
    if not JOB_NAME.fullmatch(chosen):
        raise UserError(f"--name {chosen!r} is not a Batch job name", "use up to 128 letters, digits, - and _")
    return chosen


def submit(client: Any, *, queue: str, definition: str, name: str, command: Sequence[str],
           env: Sequence[str] = (), array_size: int | None = None) -> dict[str, Any]:
    """Submit one job (or an array job of ``array_size`` children) running ``command``; AWS's answer.

    The definition's ``data``/``output`` parameters are set from the command too, so describe-jobs shows them."""
    environment = parse_env(env)
    refuse_secrets(environment, "the submission")
    check_queue(client, queue)
    check_definition(client, definition)
    request: dict[str, Any] = {"jobName": name, "jobQueue": queue, "jobDefinition": definition,
                               "containerOverrides": {"command": list(command), "environment": environment},
                               "parameters": _parameters(command)}
    if array_size is not None:
        request["arrayProperties"] = {"size": array_size}
    with aws_errors(f"submitting {name} to {queue}"):
        return client.submit_job(**request)


def submit_array(client: Any, sweep_dir: str, url: str, *, queue: str, definition: str, name: str | None = None,
                 indices: Sequence[int] | None = None, ranks: int | None = None,
                 env: Sequence[str] = ()) -> tuple[dict[str, Any], list[int]]:
    """Copy a planned sweep (or walk-forward) folder to ``url`` and submit its combinations as one array job.

    Child i trains combination ``indices[i]`` (default: every combination in the sweep) into ``url/<name>``."""
    from parallel_dqn.sweep import check_ranks, open_sweep
    from parallel_dqn.sweep.array import INDICES_VARIABLE, check_cloud_ready, upload_sweep

    sweep = open_sweep(sweep_dir)
    target = cloud_output(url)
    chosen = list(indices) if indices else [c.index for c in sweep.combinations if c.in_sweep]
    combinations = [sweep.combination(i) for i in chosen]
    if not combinations:
        raise UserError(f"sweep {sweep.folder} has no combination to submit", "plan it first (`parallel-dqn sweep plan`)")
    check_cloud_ready(sweep, combinations)
    if ranks is not None:
        check_ranks(sweep, ranks)
    check_queue(client, queue)
    check_definition(client, definition)
    upload_sweep(sweep, target, combinations)
    command = ["sweep", "task", target, *(["--ranks", str(ranks)] if ranks else [])]
    if len(chosen) == 1:  # Batch arrays have 2..10000 children
        answer = submit(client, queue=queue, definition=definition, name=job_name(name, target),
                        command=[*command, str(chosen[0])], env=env)
    else:
        answer = submit(client, queue=queue, definition=definition, name=job_name(name, target), command=command,
                        env=[*env, f"{INDICES_VARIABLE}={','.join(map(str, chosen))}"], array_size=len(chosen))
    return answer, chosen


def _parameters(command: Sequence[str]) -> dict[str, str]:
    """``{"data": ..., "output": ...}`` as far as ``command`` names them (a sweep task: its URL is the output)."""
    found = {}
    for flag, value in zip(command, command[1:]):
        if flag in ("--data", "--output"):
            found[flag[2:]] = value
    if command[:2] == ["sweep", "task"]:
        found["output"] = command[2]
    return found


def describe(client: Any, job_ids: Sequence[str]) -> list[dict[str, Any]]:
    """The jobs as describe_jobs reports them, in the order asked; a UserError naming ids AWS does not know."""
    with aws_errors("describing jobs"):
        jobs = {j["jobId"]: j for j in client.describe_jobs(jobs=list(job_ids)).get("jobs", [])}
    unknown = [j for j in job_ids if j not in jobs]
    if unknown:
        raise UserError(f"no such job: {', '.join(unknown)}", "check the ids `submit` printed (jobs expire after 7 days)")
    return [jobs[j] for j in job_ids]


def status_line(job: dict[str, Any]) -> str:
    """One line per job: id, name, status, attempts with their exit codes, an array's counts, the reason."""
    attempts = [str(a.get("container", {}).get("exitCode", "-")) for a in job.get("attempts", [])]
    parts = [job["jobId"], job.get("jobName", ""), job.get("status", "?")]
    if attempts:
        parts.append(f"attempts {len(attempts)} (exit {', '.join(attempts)})")
    summary = job.get("arrayProperties", {}).get("statusSummary")
    if summary:
        parts.append("children " + " ".join(f"{k.lower()} {v}" for k, v in summary.items() if v))
    if job.get("statusReason"):
        parts.append(f"- {job['statusReason']}")
    return "  ".join(parts)


# ---- command line ------------------------------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, like parallel-dqn's own parser
        raise UserError(message, f"see {self.prog} --help")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("--region", default=None, help="AWS region (default: AWS_DEFAULT_REGION or the profile's)")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    r = sub.add_parser("register", help="register the job definition (template: launchers/aws/job_definition.json)")
    r.add_argument("--definition", default=str(DEFINITION), help="the JSON template (default: %(default)s)")
    r.add_argument("--name", default=None, help="jobDefinitionName (default: the template's)")
    r.add_argument("--image", default=None, help="the image URI, e.g. ACCOUNT.dkr.ecr.REGION.amazonaws.com/parallel-dqn:TAG")
    r.add_argument("--vcpus", type=int, default=None, help="vCPUs per job")
    r.add_argument("--memory", type=int, default=None, help="memory per job, MiB")
    r.add_argument("--attempts", type=int, default=None, help="retryStrategy.attempts: tries in all (1-10)")
    r.add_argument("--job-role", default=None, help="IAM role ARN the job reads and writes S3 with")
    r.add_argument("--env", action="append", default=[], metavar="NAME=VALUE", help="a variable (no secrets)")

    for name, what in (("submit", "submit one training"), ("submit-array", "submit a sweep's combinations or a "
                                                            "walk-forward's folds as one array job")):
        s = sub.add_parser(name, help=what)
        if name == "submit-array":
            s.add_argument("sweep_dir", metavar="SWEEP_DIR", help="a planned sweep or walk-forward (--plan_only) folder")
            s.add_argument("--to", required=True, metavar="URL", help="where the sweep and its runs go: s3://BUCKET/PREFIX")
            s.add_argument("--indices", default=None, help="combinations to submit, e.g. 0,2,5 (default: all)")
            s.add_argument("--ranks", type=int, default=None, help="train each under mpiexec -n RANKS in the container")
        else:
            s.add_argument("--output", required=True, metavar="URL", help="the run's output: s3://BUCKET/PREFIX")
        s.add_argument("--queue", required=True, help="the job queue")
        s.add_argument("--definition", default="parallel-dqn-train", help="job definition NAME[:REVISION]")
        s.add_argument("--name", default=None, help="job name (default: from the output)")
        s.add_argument("--env", action="append", default=[], metavar="NAME=VALUE", help="a variable (no secrets)")
        if name == "submit":
            s.add_argument("train_args", nargs=argparse.REMAINDER, help="-- then train's flags (--data s3://... ...)")

    st = sub.add_parser("status", help="status, attempts and exit codes of submitted jobs")
    st.add_argument("job_ids", nargs="+", metavar="JOB_ID")
    return p


def _indices(text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        return [int(x) for x in text.split(",")]
    except ValueError:
        raise UserError(f"--indices {text!r} is not a list of indices", "write it as 0,2,5") from None


def run(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and do the command (raises UserError for a user's mistake)."""
    args = build_parser().parse_args(argv)
    if args.command == "register":
        definition = build_definition(load_definition(args.definition), name=args.name, image=args.image,
                                      vcpus=args.vcpus, memory=args.memory, attempts=args.attempts,
                                      job_role=args.job_role, env=args.env)
        answer = register(batch_client(args.region), definition)
        print(f"registered {answer['jobDefinitionName']}:{answer['revision']}  {answer['jobDefinitionArn']}")
    elif args.command == "submit":
        command = train_command(args.train_args, args.output)
        answer = submit(batch_client(args.region), queue=args.queue, definition=args.definition,
                        name=job_name(args.name, args.output), command=command, env=args.env)
        print(f"submitted {answer['jobId']} ({answer['jobName']}): parallel-dqn {' '.join(command)}")
    elif args.command == "submit-array":
        answer, chosen = submit_array(batch_client(args.region), args.sweep_dir, args.to, queue=args.queue,
                                      definition=args.definition, name=args.name, indices=_indices(args.indices),
                                      ranks=args.ranks, env=args.env)
        print(f"submitted {answer['jobId']} ({answer['jobName']}): {len(chosen)} combination(s) "
              f"{','.join(map(str, chosen))}, outputs under {cloud_output(args.to)}/")
    else:
        for job in describe(batch_client(args.region), args.job_ids):
            print(status_line(job))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return run(argv)
    except UserError as err:
        print(f"{PROG}: error: {err.line()}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
