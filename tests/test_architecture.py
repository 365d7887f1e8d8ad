"""The package's imports point one way: cli -> run/walkforward -> training/sweep -> telemetry -> checkpoint/evaluation -> comm
-> model/rl -> market -> data -> config/errors; no two modules import each other, directly or round a cycle.

Every ``import``/``from ... import`` of the package counts, at module level or inside a function (a lazy
import is still a dependency).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "parallel_dqn"

#: top-level parts of the package, highest first; a part may import only parts below it (and itself)
LAYERS: list[set[str]] = [
    {"__main__"},
    {"cli"},
    {"run", "walkforward"},
    {"training", "sweep"},
    {"telemetry"},
    {"checkpoint", "evaluation"},
    {"comm"},
    {"model", "rl"},
    {"market"},
    {"data"},
    {"config"},
    {"files", "outputs", "cloud"},
    {"errors", "__init__"},
]
RANK = {part: len(LAYERS) - i for i, layer in enumerate(LAYERS) for part in layer}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """The package modules ``path`` imports (``from parallel_dqn.x import y``: ``parallel_dqn.x.y`` if a module)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("parallel_dqn")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("parallel_dqn") and not node.level:
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in MODULES else node.module)
    return found


FILES = sorted(PACKAGE.rglob("*.py"))
MODULES = {module_name(p): p for p in FILES}
GRAPH = {name: imports(path) & set(MODULES) for name, path in MODULES.items()}


def part(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "__init__"
    return parts[1]


def test_every_package_part_has_a_layer():
    assert {part(m) for m in MODULES} <= set(RANK), {part(m) for m in MODULES} - set(RANK)


def test_imports_point_down_the_layers():
    wrong = [
        f"{src} imports {dst}"
        for src, targets in GRAPH.items()
        for dst in targets
        if part(src) != part(dst) and RANK[part(src)] <= RANK[part(dst)]
    ]
    assert not wrong, "\n".join(sorted(wrong))


def test_no_import_cycle_between_modules():
    """Tarjan's strongly connected components of the module graph: every one must be a single module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in GRAPH:
        if v not in index:
            visit(v)
    assert not cycles, cycles


def test_the_check_finds_a_cycle(tmp_path):
    """The cycle check can fail: two modules that import each other form one component."""
    global GRAPH
    saved = GRAPH
    GRAPH = {**saved, "parallel_dqn.config": saved["parallel_dqn.config"] | {"parallel_dqn.cli"},
             "parallel_dqn.cli": saved["parallel_dqn.cli"] | {"parallel_dqn.config"}}
    try:
        try:
            test_no_import_cycle_between_modules()
        except AssertionError:
            return
        raise AssertionError("a cycle through config and cli was not found")
    finally:
        GRAPH = saved


def test_every_mpi_call_lives_in_comm_mpi():
    users = sorted(
        name for name, path in MODULES.items()
        if any(isinstance(node, (ast.Import, ast.ImportFrom)) and "mpi4py" in ast.dump(node)
               for node in ast.walk(ast.parse(path.read_text())))
        and ".comm.mpi" not in name
    )
    assert users == ["parallel_dqn.run.mpi"], users  # run/mpi.py only names the communicator type it is given


def test_the_config_knows_the_size_of_a_replay_transition():
    import numpy as np

    from parallel_dqn.config import REPLAY_BYTES_PER_TRANSITION
    from parallel_dqn.rl.nstep import TRANSITION_DTYPES

    assert REPLAY_BYTES_PER_TRANSITION == sum(np.dtype(t).itemsize for t in TRANSITION_DTYPES.values())


def test_ruff_finds_nothing_in_the_repository():
    """``ruff check .`` with the project's configuration (pyproject.toml) lints every .py file and reports nothing."""
    import shutil
    import subprocess
    import sys

    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    assert ruff, "ruff is not installed (it is in requirements.lock; run launchers/setup_env.sh)"
    proc = subprocess.run([ruff, "check", "."], cwd=PACKAGE.parent, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-1000:]
