"""TensorBoard scalars: every number of the training curve, once per step, also across a resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from parallel_dqn.cli import main
from parallel_dqn.run.single import train
from tests.helpers import make_market, tiny_config


@pytest.fixture(scope="module")
def market(tmp_path_factory) -> Path:
    return make_market(tmp_path_factory.mktemp("tb_market"))


def scalars(run: Path) -> dict[str, list[tuple[int, float]]]:
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def expected(run: Path) -> dict[str, list[tuple[int, float]]]:
    """metrics.jsonl as TensorBoard should hold it: train/<key> at the episode, eval/<key> after the last one."""
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    episodes = sum(line["phase"] == "train" for line in lines)
    want: dict[str, list[tuple[int, float]]] = {}
    for line in lines:
        step = line["episode"] if line["phase"] == "train" else episodes
        for key, value in line.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                want.setdefault(f"{line['phase']}/{key}", []).append((step, float(value)))
    return want


def assert_matches(run: Path) -> None:
    got, want = scalars(run), expected(run)
    assert set(got) == set(want) and {"train/sharpe", "train/loss", "train/epsilon", "eval/sharpe"} <= set(got)
    for tag, points in want.items():
        assert [s for s, _ in got[tag]] == [s for s, _ in points], tag  # each step once, in order
        assert [v for _, v in got[tag]] == pytest.approx([v for _, v in points], rel=1e-6), tag


def test_every_number_of_the_training_curve_is_a_scalar(market, tmp_path):
    train(tiny_config(market, tmp_path / "run"))
    assert_matches(tmp_path / "run")


def test_a_resumed_run_drops_what_the_interrupted_one_logged_after_its_checkpoint(market, tmp_path):
    run = tmp_path / "run"
    train(tiny_config(market, run, **{"dqn.episodes": 3}))
    (run / "metrics.json").unlink()  # as if killed after its last episode, before finishing
    after_first = next(c for c in sorted((run / "checkpoints").glob("ckpt-*"))
                       if json.loads((c / "manifest.json").read_text())["episodes_done"] == 1)
    assert main(["train", "--resume", str(after_first), "--no-progress"]) == 0
    assert len(list((run / "tensorboard").iterdir())) == 2  # one event file per start
    assert_matches(run)
