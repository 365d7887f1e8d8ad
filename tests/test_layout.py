"""The layout of the tests: shared helpers live in tests/helpers.py (fixtures in tests/conftest.py), so that no
test module imports another (importing a test module runs its module-level code and re-collects nothing, but
ties the modules together: moving or deleting one breaks the others)."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

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


def test_each_module_is_one_xdist_group_and_the_slurm_modules_share_one(request: pytest.FixtureRequest):
    """launchers/test.sh runs the suite on pytest-xdist workers with ``--dist loadgroup``: a module split over
    two workers would build its module fixtures twice, and two SLURM tests at once would queue on the two-node
    cluster (tests/conftest.py groups them)."""
    groups: defaultdict[str, set[str]] = defaultdict(set)
    slurm_files = set()
    for item in request.session.items:  # the tests of this session, after selection
        marks = [mark.args[0] for mark in item.iter_markers("xdist_group")]
        assert len(marks) == 1, (item.nodeid, marks)
        file = item.nodeid.split("::")[0]
        groups[file].add(marks[0])
        if item.get_closest_marker("slurm"):
            slurm_files.add(file)
    assert groups["tests/test_layout.py"] == {"tests/test_layout.py"}
    for file, names in groups.items():
        assert names == ({"slurm"} if file in slurm_files else {file}), file
