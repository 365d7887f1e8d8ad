"""With every training-optimisation component off, a run gives the results it gave before them.

The golden figures in ``tests/golden/optimisation_off.json`` were written by the code before issue 12's
components (at 043db05) with ``python -m tests.test_optimisation_off --write``; every run here must reproduce
them bit for bit: the trained weights, the portfolio files, the evaluation's figures. Components that are off
must not draw a random number or reorder an operation. The component the ablation turned on by default
(augmentation, README "Ablation") is switched off here
(``tests.helpers.OPTIMISATION_OFF``). If a change to the path with every component off is *meant* to change
results, rewrite the golden file in the same commit and say why in its message.

The runs cover the default learner (one worker over every stock), several simulated workers asynchronously
and in ``--sync`` mode, and TD-prioritized replay (the priority that existed before the others).
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest
import torch

from parallel_dqn.run.single import train
from tests.helpers import OPTIMISATION_OFF, make_market, tiny_config, weights

GOLDEN = Path(__file__).parent / "golden" / "optimisation_off.json"
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
    }


def run_case(market: Path, out: Path, name: str) -> dict[str, object]:
    train(tiny_config(market, out, **{**OPTIMISATION_OFF, **CASES[name]}))
    return fingerprint(out)


@pytest.fixture(scope="module")
def market(tmp_path_factory) -> Path:
    return make_market(tmp_path_factory.mktemp("market"))


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CASES))
def test_components_off_reproduce_the_results_before_them(market, tmp_path, name):
    golden = json.loads(GOLDEN.read_text())
    assert golden["torch"] == torch.__version__.split("+")[0], "the golden figures were written with another torch"
    assert run_case(market, tmp_path / "run", name) == golden["cases"][name]


def test_the_golden_file_covers_every_case():
    golden = json.loads(GOLDEN.read_text())
    assert set(golden["cases"]) == set(CASES)
    for case in golden["cases"].values():
        assert len(case["weights_sha256"]) == 64 and case["gradients_applied"] > 0


def write_golden(folder: Path) -> None:
    """Run every case and write the golden file (the code at hand is taken as the reference)."""
    market = make_market(folder / "market")
    cases = {name: run_case(market, folder / name.replace(" ", "_").replace(",", ""), name) for name in CASES}
    GOLDEN.parent.mkdir(exist_ok=True)
    GOLDEN.write_text(json.dumps({"torch": torch.__version__.split("+")[0], "cases": cases}, indent=1) + "\n")


if __name__ == "__main__":  # python -m tests.test_optimisation_off --write FOLDER
    if sys.argv[1:2] != ["--write"] or len(sys.argv) != 3:
        sys.exit("usage: python -m tests.test_optimisation_off --write SCRATCH_FOLDER")
    write_golden(Path(sys.argv[2]))
