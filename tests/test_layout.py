"""The layout of the tests: shared helpers live in tests/helpers.py (fixtures in tests/conftest.py), so that no
test module imports another (importing a test module runs its module-level code and re-collects nothing, but
ties the modules together: moving or deleting one breaks the others); and how tests on parallel workers share the
one SLURM cluster."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.helpers import slurm_cluster_lock

TESTS = Path(__file__).resolve().parent


def imported_test_modules(path: Path) -> list[str]:
    """The ``tests.test_*`` (or relative ``.test_*``) modules that ``path`` imports, as ``line: module``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level == 0:
                modules = [base]
            else:  # from . import test_x / from .test_x import y: relative to the tests package
                modules = [f"tests.{base}"] if base else [f"tests.{alias.name}" for alias in node.names]
            if base == "tests" and node.level == 0:  # from tests import test_x
                modules = [f"tests.{alias.name}" for alias in node.names]
        else:
            continue
        found += [f"{node.lineno}: {m}" for m in modules if m.startswith("tests.test_") or m.startswith("test_")]
    return found


def test_test_modules_do_not_import_each_other():
    modules = sorted(TESTS.glob("test_*.py"))
    assert modules, f"no test modules under {TESTS}"
    offenders = {p.name: imports for p in modules if (imports := imported_test_modules(p))}
    assert not offenders, (
        "test modules import other test modules (move the shared helpers into tests/helpers.py, "
        f"fixtures into tests/conftest.py): {offenders}"
    )


def test_the_slurm_cluster_is_held_by_one_test_at_a_time(tmp_path):
    """Tests run on pytest-xdist workers (launchers/test.sh): a SLURM test holds the cluster through a lock that
    a second holder, another worker's test, waits for (tests/conftest.py's ``slurm`` fixture)."""
    lock = tmp_path / "slurm.lock"
    with slurm_cluster_lock(lock):
        with pytest.raises(pytest.fail.Exception, match="held the SLURM cluster"):
            with slurm_cluster_lock(lock, timeout=0.5):
                pass
    with slurm_cluster_lock(lock, timeout=0.5):  # free again once the first holder is done
        pass
