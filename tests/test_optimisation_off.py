"""With every training-optimisation component off, a run gives the results it gave before them.

The golden figures in ``tests/golden/optimisation_off.json`` are written with
``python -m tests.test_optimisation_off --write SCRATCH``; every run here must reproduce
them bit for bit: the trained weights, the portfolio files, the evaluation's figures. Components that are off
must not draw a random number or reorder an operation. The component the ablation turned on by default
(augmentation, README "Ablation") is switched off here
(``tests.helpers.OPTIMISATION_OFF``). If a change to the path with every component off is *meant* to change
results, rewrite the golden file in the same commit and say why in its message.

The runs cover the default learner (one worker over every stock), several simulated workers asynchronously
and in ``--sync`` mode, and TD-prioritized replay (the priority that existed before the others).

Float32 results depend on the CPU: MKL and torch's own kernels pick code paths by instruction set, and the
golden figures written on one machine failed on another with the same code. So every case runs in a child
process with portable numerics (:data:`PORTABLE`: torch's baseline kernels, MKL's conditional numerical
reproducibility). That was not enough: figures written that way on an earlier session's machine failed bit for bit on an
AMD EPYC (AVX2, no AVX-512) with the code they were written from, though every figure agreed to about 1e-5.
So the golden file records the kind of CPU it was written on (:func:`machine_kind`): there the runs must give
the same bits; on another kind the same figures to rounding (:func:`assert_same_to_rounding`: the gradient
count, the evaluation's figures, each weight tensor's sum and absolute sum, the portfolios' final values,
exposures and number of position changes), which a random number drawn or a changed rule does not stay within
(checked: the noise augmentation switched on fails it).

History of the figures: rewritten with portable numerics from the code at f029fc0, which the previous golden
file (written at 043db05 on one machine, native numerics) had held unchanged until then; again when dense
attention (S <= k) became batched matrix products and whole bars add the identity vectors by broadcasting;
again, on the AMD EPYC, when dense attention normalised over the keys in a key-major layout (float sums in
another order: the last bits differ, nothing else; the old and the new code agree to rounding there).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from parallel_dqn.run.single import train
from tests.helpers import OPTIMISATION_OFF, make_market, tiny_config, weights

GOLDEN = Path(__file__).parent / "golden" / "optimisation_off.json"
#: the environment of every case's process: torch's baseline (non-AVX) kernels and MKL's conditional
#: numerical reproducibility, so the figures do not depend on the machine's instruction set
PORTABLE = {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "COMPATIBLE", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
#: name -> settings over tests.helpers.tiny_config
CASES: dict[str, dict[str, object]] = {
    "one learner": {"dist.workers": 0},
    "three workers, async": {},
    "three workers, sync": {"dist.sync": True},
    "td-prioritized replay": {"replay.prioritized": True, "dist.workers": 0},
}
#: the evaluation's figures compared (a subset: new log fields may be added beside them)
EVAL_KEYS = ("total_reward", "total_return", "sharpe", "max_drawdown", "turnover", "hit_rate")


def fingerprint(out: Path) -> dict[str, object]:
    """What must not change: the weights and portfolio files (hashed) and the evaluation's figures."""
    state = weights(out)
    digest = hashlib.sha256()
    for key in sorted(state):
        digest.update(key.encode())
        digest.update(state[key].contiguous().numpy().tobytes())
    metrics = json.loads((out / "metrics.json").read_text())
    return {
        "weights_sha256": digest.hexdigest(),
        "portfolio_ep1_sha256": hashlib.sha256((out / "portfolio_ep1.csv").read_bytes()).hexdigest(),
        "portfolio_eval_sha256": hashlib.sha256((out / "portfolio_eval.csv").read_bytes()).hexdigest(),
        "eval": {key: metrics["eval"][key] for key in EVAL_KEYS},
        "gradients_applied": metrics["counters"]["gradients_applied"],
        # the same, as figures to compare to rounding where the bits cannot be (another CPU's float kernels)
        "weights": {key: [float(state[key].double().sum()), float(state[key].double().abs().sum())]
                    for key in sorted(state)},
        "portfolios": {name: _portfolio_figures(out / f"portfolio_{name}.csv") for name in ("ep1", "eval")},
    }


def _portfolio_figures(path: Path) -> dict[str, float]:
    """A portfolio file's final value, summed gross exposure and number of position changes."""
    frame = pd.read_csv(path)
    positions = frame[[c for c in frame.columns if c.startswith("position_")]].to_numpy()
    return {
        "final_value": float(frame["portfolio_value"].iloc[-1]),
        "gross_exposure": float(frame["gross_exposure"].sum()),
        "position_changes": int((np.diff(positions, axis=0) != 0).sum()),
    }


def run_case(market: Path, out: Path, name: str) -> dict[str, object]:
    """Case ``name``'s fingerprint, from a child process with :data:`PORTABLE` numerics."""
    proc = subprocess.run(
        [sys.executable, "-m", "tests.test_optimisation_off", "--case", name, str(market), str(out)],
        env={**os.environ, **PORTABLE}, cwd=Path(__file__).parent.parent, capture_output=True, text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _run_here(market: Path, out: Path, name: str) -> dict[str, object]:
    train(tiny_config(market, out, **{**OPTIMISATION_OFF, **CASES[name]}))
    return fingerprint(out)


@pytest.fixture(scope="module")
def market(tmp_path_factory) -> Path:
    return make_market(tmp_path_factory.mktemp("market"))


def machine_kind() -> str:
    """The CPU as far as float results depend on it: vendor, model and the vector extensions kernels pick."""
    info = {}
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        key, _, value = line.partition(":")
        info.setdefault(key.strip(), value.strip())
    flags = sorted(set(info.get("flags", "").split()) & {"avx", "avx2", "fma", "avx512f", "avx512_bf16", "amx_tile"})
    return f"{info.get('vendor_id', '?')} | {info.get('model name', '?')} | {' '.join(flags)}"


def assert_same_to_rounding(run: dict, golden: dict) -> None:
    """``run`` gives ``golden``'s figures to float rounding: the check where the golden figures were written on
    another kind of CPU, whose float kernels round differently (bits differ; a random number drawn, a step
    skipped or a changed rule does not stay within these bounds)."""
    assert run["gradients_applied"] == golden["gradients_applied"]
    for key, value in golden["eval"].items():
        assert run["eval"][key] == pytest.approx(value, rel=1e-4, abs=1e-5), key
    assert run["weights"].keys() == golden["weights"].keys()
    for key, (total, size) in golden["weights"].items():
        assert run["weights"][key][0] == pytest.approx(total, abs=1e-3 * size + 1e-6), key
        assert run["weights"][key][1] == pytest.approx(size, rel=1e-3, abs=1e-6), key
    for name, figures in golden["portfolios"].items():
        ran = run["portfolios"][name]
        assert ran["final_value"] == pytest.approx(figures["final_value"], rel=1e-4), name
        assert ran["gross_exposure"] == pytest.approx(figures["gross_exposure"], rel=1e-3), name
        assert abs(ran["position_changes"] - figures["position_changes"]) <= max(2, figures["position_changes"] // 100)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CASES))
def test_components_off_reproduce_the_results_before_them(market, tmp_path, name):
    golden = json.loads(GOLDEN.read_text())
    assert golden["torch"] == torch.__version__.split("+")[0], "the golden figures were written with another torch"
    run = run_case(market, tmp_path / "run", name)
    if golden["machine"] == machine_kind():  # the kind of CPU they were written on: bit for bit
        assert run == golden["cases"][name]
    else:
        assert_same_to_rounding(run, golden["cases"][name])


def test_the_golden_file_covers_every_case():
    golden = json.loads(GOLDEN.read_text())
    assert set(golden["cases"]) == set(CASES)
    for case in golden["cases"].values():
        assert len(case["weights_sha256"]) == 64 and case["gradients_applied"] > 0


def test_on_another_cpu_rounding_passes_and_a_change_does_not():
    """The check for a golden file written on another kind of CPU: figures moved by float rounding pass, a
    changed evaluation, weight tensor, portfolio or gradient count does not."""
    import copy

    golden = json.loads(GOLDEN.read_text())["cases"]["one learner"]
    rounded = copy.deepcopy(golden)
    rounded["eval"] = {k: v * (1 + 1e-7) for k, v in golden["eval"].items()}
    rounded["weights"] = {k: [v[0] + 1e-7 * v[1], v[1] * (1 + 1e-7)] for k, v in golden["weights"].items()}
    for figures in rounded["portfolios"].values():
        figures["final_value"] *= 1 + 1e-9
        figures["gross_exposure"] *= 1 + 1e-7
    assert_same_to_rounding(rounded, golden)
    changes = [
        lambda c: c["eval"].update(sharpe=c["eval"]["sharpe"] * 1.01),
        lambda c: c.update(gradients_applied=c["gradients_applied"] + 1),
        lambda c: c["weights"][next(iter(c["weights"]))].__setitem__(1, c["weights"][next(iter(c["weights"]))][1] * 1.01),
        lambda c: c["portfolios"]["eval"].update(final_value=c["portfolios"]["eval"]["final_value"] * (1 + 1e-3)),
        lambda c: c["portfolios"]["ep1"].update(position_changes=c["portfolios"]["ep1"]["position_changes"] + 10),
    ]
    for change in changes:
        changed = copy.deepcopy(rounded)
        change(changed)
        with pytest.raises(AssertionError):
            assert_same_to_rounding(changed, golden)


def write_golden(folder: Path) -> None:
    """Run every case and write the golden file (the code at hand is taken as the reference)."""
    market = make_market(folder / "market")
    cases = {name: run_case(market, folder / name.replace(" ", "_").replace(",", ""), name) for name in CASES}
    GOLDEN.parent.mkdir(exist_ok=True)
    GOLDEN.write_text(json.dumps(
        {"torch": torch.__version__.split("+")[0], "machine": machine_kind(), "cases": cases}, indent=1) + "\n")


if __name__ == "__main__":  # python -m tests.test_optimisation_off --write FOLDER  (--case: run_case's child)
    if sys.argv[1:2] == ["--case"] and len(sys.argv) == 5:
        assert all(os.environ.get(k) == v for k, v in PORTABLE.items()), "a case runs with PORTABLE numerics only"
        print(json.dumps(_run_here(Path(sys.argv[3]), Path(sys.argv[4]), sys.argv[2])))
    elif sys.argv[1:2] == ["--write"] and len(sys.argv) == 3:
        write_golden(Path(sys.argv[2]))
    else:
        sys.exit("usage: python -m tests.test_optimisation_off --write SCRATCH_FOLDER")
