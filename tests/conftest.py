"""Shared fixtures (the helper functions are in tests/helpers.py), and the markers of the fast test tier.

* ``cli`` (session): :func:`tests.helpers.run_cli`, which runs ``python -m parallel_dqn ARGS...`` with this
  interpreter and returns the :class:`subprocess.CompletedProcess` (text stdout/stderr captured); it is also
  importable from here (``from tests.conftest import run_cli``).
* ``tiny_market`` (session): a 3 stocks x 3 days market of 5-minute bars (AAA, BBB, CCC from
  2024-01-02), written once with ``parallel-dqn data generate``. Treat it as read-only.
* ``tiny_market_copy``: a fresh copy of it in the test's ``tmp_path``, free to corrupt.
* ``azurite`` (session) / ``spare_azurite``: the real Azurite blob emulator (node_modules, from npm) on a free
  port, with ``.connection_string`` for the published dev account; fails, never skips, if it is not installed.
* ``s3_emulator`` / ``gcs_emulator`` (session) and ``spare_s3_emulator`` / ``spare_gcs_emulator``: moto's S3 server
  and gcp-storage-emulator (both from PyPI, pinned in requirements.lock) on a free loopback port, in memory, with
  ``.endpoint`` and ``.env`` (the standard variables that point a client at it); fail, never skip, if missing.
* ``container`` (session): the parallel-dqn image (``launchers/container/build.sh``; ``PARALLEL_DQN_IMAGE``, default
  ``parallel-dqn:latest``) in a docker daemon that answers, as :class:`ContainerImage`. Without it the container
  tests are skipped, except where ``PARALLEL_DQN_REQUIRE_CONTAINER=1`` (CI), where they fail.
* ``slurm`` (session): a SLURM cluster answering ``sinfo`` (``launchers/slurm/local_cluster.sh start``). Without
  one the SLURM tests are skipped, except where ``PARALLEL_DQN_REQUIRE_SLURM=1`` (CI), where they fail.
* ``chromium`` (session): the path of a headless Chromium (Debian's ``chromium``); without one the browser tests
  are skipped, except where ``PARALLEL_DQN_REQUIRE_BROWSER=1`` (CI), where they fail.

Markers (registered in setup.cfg; ``launchers/test.sh --fast`` runs ``-m "not slow and not mpi and not azure and
not slurm"``). :func:`pytest_collection_modifyitems` adds them by what a test uses:

* ``azure``: the ``azurite`` or ``spare_azurite`` fixture (directly or through another fixture);
* ``cloud``: an S3 or GCS emulator fixture;
* ``slurm``: the ``slurm`` fixture;
* ``browser``: the ``chromium`` fixture;
* ``container``: the ``container`` fixture;
* ``mpi`` and ``slow``: the test, or a fixture it uses, refers to ``mpiexec``/``MPIEXEC`` (tests.helpers), or
  spells the string ``"mpiexec"``;
  whole modules under mpiexec (test_mpi.py, test_resume_mpi.py) also say so with ``pytestmark``.

``slow`` is otherwise explicit (``@pytest.mark.slow`` or a module's ``pytestmark``): a test that runs a real
training (``train(...)``, ``evaluate(...)``, ``train`` through the CLI) or otherwise takes more than about a second.
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import functools
import inspect
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import (
    idle_slurm_cluster,
    run_cli,  # noqa: F401 - re-exported: `from tests.conftest import run_cli` works
    slurm_cluster_lock,
)

TINY_STOCKS = ("AAA", "BBB", "CCC")
TINY_START = "2024-01-02"
TINY_DAYS = 3


# ---- markers by what a test uses ----------------------------------------------------------------------------------
#: a fixture that needs a service -> the marker of that service
SERVICE_FIXTURES = {
    "azurite": "azure", "spare_azurite": "azure", "slurm": "slurm", "chromium": "browser",
    "s3_emulator": "cloud", "spare_s3_emulator": "cloud", "gcs_emulator": "cloud", "spare_gcs_emulator": "cloud",
    "container": "container",
}
#: names (tests.helpers) or strings that a test or fixture uses when it runs a real mpiexec
MPI_NAMES = frozenset({"mpiexec", "MPIEXEC"})
#: parallel_dqn functions that run a real training (or an evaluation of a trained model) in this process
TRAINING_FUNCTIONS = frozenset({"train", "evaluate"})
#: CLI commands that train or evaluate: as the first arguments of run_cli / cli / main, or after "-m parallel_dqn"
TRAINING_COMMANDS = (("train",), ("evaluate",), ("full-workflow",), ("walk-forward",), ("sweep", "run"))
CLI_RUNNERS = frozenset({"run_cli", "cli", "main"})


def _used_functions(item: pytest.Item) -> list[types.FunctionType]:
    """The test function and the functions of every fixture it uses (directly or through other fixtures)."""
    functions = [getattr(item, "function", None)]
    info = getattr(item, "_fixtureinfo", None)
    if info is not None:
        functions += [d.func for name in item.fixturenames for d in info.name2fixturedefs.get(name, ())]
    return [inspect.unwrap(f) for f in functions if f is not None and hasattr(inspect.unwrap(f), "__code__")]


def _names(code: types.CodeType) -> set[str]:
    """The global, attribute and local names ``code`` refers to, nested functions and lambdas included."""
    names = set(code.co_names) | set(code.co_varnames)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _names(const)
    return names


def _constants(code: types.CodeType) -> set[object]:
    """The hashable constants of ``code`` (strings: ``"mpiexec"``), nested functions and lambdas included."""
    found = set()
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            found |= _constants(const)
        elif isinstance(const, str):
            found.add(const)
    return found


def _calls_training_function(function: types.FunctionType) -> bool:
    """``function`` refers to parallel_dqn's own ``train`` / ``evaluate`` (not a test's helper of that name)."""
    for name in set(function.__code__.co_names) & TRAINING_FUNCTIONS:
        target = function.__globals__.get(name)
        if callable(target) and getattr(target, "__module__", "").startswith("parallel_dqn."):
            return True
    return False


def _strings(nodes: list[ast.expr]) -> list[str | None]:
    return [n.value if isinstance(n, ast.Constant) and isinstance(n.value, str) else None for n in nodes]


def _starts(words: list[str | None], at: int = 0) -> bool:
    return any(tuple(words[at:at + len(c)]) == c for c in TRAINING_COMMANDS)


@functools.cache
def _runs_training_command(code: types.CodeType, function: types.FunctionType) -> bool:
    """``function``'s source runs ``train``/``evaluate``/... through the CLI: ``run_cli("train", ...)``,
    ``main(["train", ...])``, or a command line ``[..., "-m", "parallel_dqn", "train", ...]``."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    except (OSError, TypeError, SyntaxError):
        return False
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            callee = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", None)
            args = node.args
            if args and isinstance(args[0], (ast.List, ast.Tuple)):
                args = args[0].elts
            if callee in CLI_RUNNERS and _starts(_strings(args)):
                return True
            words = _strings(node.args)
        elif isinstance(node, (ast.List, ast.Tuple)):
            words = _strings(node.elts)
        else:
            continue
        if any(w == "parallel_dqn" and _starts(words, i + 1) for i, w in enumerate(words)):
            return True
    return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        used = set(getattr(item, "fixturenames", ()))
        for marker in sorted({m for f, m in SERVICE_FIXTURES.items() if f in used}):
            item.add_marker(marker)
        functions = _used_functions(item)
        if any(MPI_NAMES & (_names(f.__code__) | _constants(f.__code__)) for f in functions):
            item.add_marker("mpi")
            item.add_marker("slow")
        elif any(_calls_training_function(f) or _runs_training_command(f.__code__, f) for f in functions):
            item.add_marker("slow")


# ---- the CLI, and a tiny market ------------------------------------------------------------------------------------
@pytest.fixture(scope="session", autouse=True)
def _session_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Runs keep their cross-sections (data.cache = auto) in a folder of this session, not in ~/.cache."""
    os.environ["PARALLEL_DQN_CACHE"] = str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="session")
def cli():
    """The :func:`run_cli` function, for tests that prefer a fixture to an import."""
    return run_cli


@pytest.fixture(scope="session")
def tiny_market(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny synthetic market (AAA BBB CCC x 3 days, 5-minute bars), generated once. Read-only."""
    out = tmp_path_factory.mktemp("tiny_market") / "market"
    proc = run_cli(
        "data", "generate", "--output", out, "--stocks", *TINY_STOCKS,
        "--days", str(TINY_DAYS), "--start", TINY_START, "--bar_minutes", "5",
    )
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.fixture
def tiny_market_copy(tiny_market: Path, tmp_path: Path) -> Path:
    """A private copy of ``tiny_market`` that the test may modify."""
    return Path(shutil.copytree(tiny_market, tmp_path / "market"))


# ---- Azure Blob Storage: the real Azurite emulator (installed from npm by launchers/test.sh) ----------------------
ROOT = Path(__file__).resolve().parents[1]
AZURITE_BLOB = ROOT / "node_modules" / "azurite" / "dist" / "src" / "blob" / "main.js"
#: the published development account of the Azure storage emulators (Azurite's docs, its constants.js)
DEV_ACCOUNT = "devstoreaccount1"
DEV_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


class LoopbackService:
    """A service process on a free loopback port (``.port``), logging to a file (not a pipe: emulators log every
    request, and a pipe nobody reads blocks them once full); ready when the port answers, :meth:`stop` ends it."""

    def __init__(self, name: str, command: list[str], port: int) -> None:
        self.name, self.port = name, port
        self.log = tempfile.TemporaryFile(mode="w+")
        self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT,
                                        text=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.log.seek(0)
                pytest.fail(f"{name} exited at start: {self.log.read()[-2000:]}", pytrace=False)
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return
            time.sleep(0.1)
        self.stop()
        pytest.fail(f"{name} did not answer on port {self.port} within 30 s", pytrace=False)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Azurite(LoopbackService):
    """One Azurite blob service on a free loopback port, in memory; :meth:`stop` ends it and waits."""

    def __init__(self) -> None:
        if not AZURITE_BLOB.is_file():
            pytest.fail(f"Azurite is not installed ({AZURITE_BLOB} missing): run `npm ci` in {ROOT} "
                        "(launchers/test.sh does it); the Azure tests need the real emulator", pytrace=False)
        port = _free_port()
        super().__init__("Azurite", [
            "node", str(AZURITE_BLOB), "--blobHost", "127.0.0.1", "--blobPort", str(port), "--inMemoryPersistence",
            "--silent", "--skipApiVersionCheck", "--disableTelemetry", "--loose"], port)

    @property
    def connection_string(self) -> str:
        return (f"DefaultEndpointsProtocol=http;AccountName={DEV_ACCOUNT};AccountKey={DEV_KEY};"
                f"BlobEndpoint=http://127.0.0.1:{self.port}/{DEV_ACCOUNT};")


@pytest.fixture(scope="session")
def azurite() -> Iterator[Azurite]:
    """The Azurite blob emulator for the whole session; FAILS (not skips) when it is not installed."""
    emulator = Azurite()
    yield emulator
    emulator.stop()


@pytest.fixture
def spare_azurite() -> Iterator[Azurite]:
    """A second, private emulator that a test may stop mid-run."""
    emulator = Azurite()
    yield emulator
    emulator.stop()


# ---- S3 and GCS: moto's server and gcp-storage-emulator (PyPI, the test extras) -----------------------------------
class LoopbackEmulator(LoopbackService):
    """An object-store emulator (a console script of the venv) on a free loopback port, in memory; ``.endpoint``
    is its URL, ``.env`` the standard variables that point a client (and a ``parallel-dqn`` child) at it."""

    #: name -> (console script, its arguments after the port is known, the variables a client reads)
    KINDS = {
        "s3": ("moto_server", lambda port: ["-H", "127.0.0.1", "-p", str(port)],
               lambda url: {"AWS_ENDPOINT_URL": url, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                            "AWS_DEFAULT_REGION": "us-east-1"}),
        "gcs": ("gcp-storage-emulator", lambda port: ["start", "--host=127.0.0.1", f"--port={port}", "--in-memory"],
                # without the last one gcsfs first probes the bucket over gRPC, which the emulator does not speak
                lambda url: {"STORAGE_EMULATOR_HOST": url, "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false"}),
    }

    def __init__(self, kind: str) -> None:
        script, arguments, variables = self.KINDS[kind]
        program = Path(sys.executable).parent / script
        if not program.is_file():
            pytest.fail(f"{script} is not installed ({program} missing): run `bash launchers/setup_env.sh` "
                        "(it installs requirements.lock); the cloud tests need the real emulator", pytrace=False)
        self.kind = kind
        port = _free_port()
        self.endpoint = f"http://127.0.0.1:{port}"
        self.env = variables(self.endpoint)
        super().__init__(script, [str(program), *arguments(port)], port)


def _emulator_fixture(kind: str, name: str, spare: bool, what: str):
    """A fixture ``name`` yielding a :class:`LoopbackEmulator` of ``kind``: for the whole session, or (``spare``)
    a private one per test that the test may stop mid-run."""

    @pytest.fixture(name=name, scope="function" if spare else "session")
    def fixture() -> Iterator[LoopbackEmulator]:
        emulator = LoopbackEmulator(kind)
        yield emulator
        emulator.stop()

    fixture.__doc__ = (f"A second, private {what} that a test may stop mid-run." if spare else
                       f"{what} for the whole session; FAILS (not skips) when it is not installed.")
    return fixture


s3_emulator = _emulator_fixture("s3", "s3_emulator", False, "moto's S3 server")
spare_s3_emulator = _emulator_fixture("s3", "spare_s3_emulator", True, "moto's S3 server")
gcs_emulator = _emulator_fixture("gcs", "gcs_emulator", False, "gcp-storage-emulator")
spare_gcs_emulator = _emulator_fixture("gcs", "spare_gcs_emulator", True, "gcp-storage-emulator")


# ---- SLURM: a real cluster (launchers/slurm/local_cluster.sh start; .ci/run starts one) ------------------------------
@pytest.fixture(scope="session")
def _slurm_cluster() -> None:
    """A SLURM cluster that answers; skip without one, unless PARALLEL_DQN_REQUIRE_SLURM=1."""
    problem = None
    if shutil.which("sbatch") is None:
        problem = "sbatch not found"
    else:
        proc = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=30)
        if proc.returncode != 0 or not proc.stdout.strip():
            problem = f"no SLURM nodes (sinfo: {(proc.stdout + proc.stderr).strip()[:200]})"
    if problem is not None:
        _no_slurm(problem)


@pytest.fixture
def slurm(_slurm_cluster: None) -> Iterator[None]:
    """The cluster for this test alone (a lock across pytest-xdist workers), once the jobs of the tests before it
    have released its nodes."""
    with slurm_cluster_lock():
        problem = idle_slurm_cluster()
        if problem is not None:
            _no_slurm(problem)
        yield


def _no_slurm(problem: str) -> None:
    hint = "start one with: bash launchers/slurm/local_cluster.sh install && bash launchers/slurm/local_cluster.sh start"
    if os.environ.get("PARALLEL_DQN_REQUIRE_SLURM") == "1":
        pytest.fail(f"SLURM is required here (PARALLEL_DQN_REQUIRE_SLURM=1): {problem}; {hint}", pytrace=False)
    pytest.skip(f"{problem}; {hint}")


# ---- containers: the image of launchers/container/ in a running docker daemon (.ci/run builds both) ---------------
@dataclasses.dataclass(frozen=True)
class ContainerImage:
    """The docker client to use (Debian's, not a newer one that wants buildx), the image, and its user's uid:gid."""

    docker: str
    image: str
    user: str

    def run(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        """``docker run --rm ARGS...`` (options, the image, its arguments: the caller places ``self.image``)."""
        return subprocess.run([self.docker, "run", "--rm", *args], capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, timeout=timeout)


@pytest.fixture(scope="session")
def container() -> ContainerImage:
    """The parallel-dqn image and a docker daemon; skip without them, unless PARALLEL_DQN_REQUIRE_CONTAINER=1."""
    image = os.environ.get("PARALLEL_DQN_IMAGE", "parallel-dqn:latest")
    docker = shutil.which("/usr/bin/docker") or shutil.which("docker")
    problem = None
    if docker is None:
        problem = "docker not found"
    else:
        proc = subprocess.run([docker, "image", "inspect", "-f", "{{.Config.User}}", image],
                              capture_output=True, text=True, timeout=60)
        if proc.returncode != 0:
            problem = f"no image {image} (docker: {(proc.stdout + proc.stderr).strip()[:200]})"
    if problem is None:
        ids = subprocess.run([docker, "run", "--rm", "--entrypoint", "sh", image, "-c", "echo $(id -u):$(id -g)"],
                             capture_output=True, text=True, timeout=120)
        if ids.returncode != 0:
            problem = f"the image {image} does not run: {ids.stderr.strip()[-300:]}"
        else:
            return ContainerImage(docker, image, ids.stdout.strip())
    hint = "start dockerd and build the image: bash launchers/container/build.sh"
    if os.environ.get("PARALLEL_DQN_REQUIRE_CONTAINER") == "1":
        pytest.fail(f"the container image is required here (PARALLEL_DQN_REQUIRE_CONTAINER=1): {problem}; {hint}",
                    pytrace=False)
    pytest.skip(f"{problem}; {hint}")


# ---- a real browser: headless Chromium (Debian's chromium; .ci/run installs it) --------------------------------------
@pytest.fixture(scope="session")
def chromium() -> str:
    """The path of a Chromium that runs headless; skip without one, unless PARALLEL_DQN_REQUIRE_BROWSER=1."""
    path = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
    if path is not None:
        return path
    hint = "install it with: apt-get install -y chromium"
    if os.environ.get("PARALLEL_DQN_REQUIRE_BROWSER") == "1":
        pytest.fail(f"a browser is required here (PARALLEL_DQN_REQUIRE_BROWSER=1): chromium not found; {hint}",
                    pytrace=False)
    pytest.skip(f"chromium not found; {hint}")
