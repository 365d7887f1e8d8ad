"""Rank 0's word before each training episode (:mod:`parallel_dqn.training.directive`), in one process.

* the director answers a training episode once the entry before it is complete on rank 0, decides it once (every
  worker gets the same answer, whenever it asks), moves the curriculum up on a passing validation, says stop
  once a stop was requested, and resumes from its state with the same answers;
* rank 0's endpoint holds a request that comes before the set-up, and sends one that would wait to a pending
  checkpoint first, as it does a pull;
* only the settings that need it make the workers ask;
* end to end in single mode: a stop requested after episode 1 skips the other training episodes and their
  validations, runs the evaluation and says so in metrics.json and metrics.jsonl; a curriculum logs the stage of
  every training episode, moves up on passing validations and stays at stage 1 on failing ones, where only the
  stage's days are replayed.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from parallel_dqn.checkpoint.coordinator import load_worker_states
from parallel_dqn.checkpoint.format import CheckpointStore
from parallel_dqn.comm.messages import CheckpointFirst, DirectiveRequest, EpisodeDirective
from parallel_dqn.config import Config
from parallel_dqn.run.single import train
from parallel_dqn.training.directive import EpisodeDirector, needs_directive
from parallel_dqn.training.endpoint import ServerEndpoint
from tests.helpers import curve, make_market, tiny_config


def curriculum_config(stages: int = 3, threshold: float = 0.5) -> Config:
    cfg = Config()
    for key, value in {"curriculum.enabled": True, "curriculum.stages": stages, "curriculum.threshold": threshold,
                       "curriculum.patience": 0, "validation.days": 1}.items():
        cfg.set(key, value)
    return cfg


def ask(director: EpisodeDirector, episode: int, worker: int = 0) -> EpisodeDirective | None:
    after = None if episode == 1 else (episode - 1, "valid")
    return director.directive(DirectiveRequest(worker, episode, after))


def test_an_episode_is_decided_once_the_entry_before_it_is_complete_and_only_once():
    d = EpisodeDirector(curriculum_config())
    assert ask(d, 1) == EpisodeDirective(1, stage=1)  # nothing comes before the first
    d.complete(1, "train")
    assert ask(d, 2) is None  # its validation is not in yet
    d.complete(1, "valid", validation_sharpe=0.7)
    first = ask(d, 2, worker=0)
    d.complete(2, "train")
    d.complete(2, "valid", validation_sharpe=-5.0)  # later outcomes do not change a decision made
    assert first == ask(d, 2, worker=1) == EpisodeDirective(2, stage=2)


def test_the_stage_moves_up_on_a_passing_validation_and_stops_at_the_last():
    d = EpisodeDirector(curriculum_config(stages=3, threshold=0.5))
    sharpes = {1: 0.1, 2: 0.5, 3: 2.0, 4: 9.0}  # fail, pass, pass, pass (but stage 3 is the last)
    stages = [ask(d, 1).stage]
    for episode, sharpe in sharpes.items():
        d.complete(episode, "train")
        d.complete(episode, "valid", sharpe)
        stages.append(ask(d, episode + 1).stage)
    assert stages == [1, 1, 2, 3, 3]
    assert d.line(3, "train") == {"stage": 2} and d.line(3, "valid") == {}


def test_the_stage_moves_up_after_patience_episodes_even_when_the_threshold_is_never_reached():
    cfg = curriculum_config(stages=3, threshold=1e9)
    cfg.set("curriculum.patience", 2)
    d = EpisodeDirector(cfg)
    stages = [ask(d, 1).stage]
    for episode in range(1, 7):
        d.complete(episode, "train")
        d.complete(episode, "valid", -5.0)
        stages.append(ask(d, episode + 1).stage)
    assert stages == [1, 1, 2, 2, 3, 3, 3]


def test_a_requested_stop_is_the_next_training_episodes_directive_and_is_reported():
    cfg = Config()
    d = EpisodeDirector(cfg)
    assert ask(d, 1) == EpisodeDirective(1)
    d.request_stop("plateau at episode 1")
    d.request_stop("a later reason")  # the first one is kept
    assert ask(d, 2) is None  # still waits for the episode's outcome
    d.complete(1, "valid")
    assert ask(d, 2) == EpisodeDirective(2, stage=1, stop=True)
    assert d.result() == {"early_stop": {"after_episode": 1, "reason": "plateau at episode 1"}}
    assert d.line(0, "eval") == d.result() and d.line(1, "train") == {}  # no stage without a curriculum


def test_a_restored_director_gives_the_answers_it_gave_and_decides_the_rest_alike():
    d = EpisodeDirector(curriculum_config(threshold=0.0))
    ask(d, 1)
    d.complete(1, "train")
    d.complete(1, "valid", 1.0)
    restored = EpisodeDirector(curriculum_config(threshold=0.0))
    restored.load_state_dict(json.loads(json.dumps(d.state_dict())))  # what a checkpoint holds, no objects
    assert ask(restored, 1) == ask(d, 1) and ask(restored, 2) == ask(d, 2) == EpisodeDirective(2, stage=2)
    restored.load_state_dict(None)  # a checkpoint from before directives: nothing to restore
    assert ask(restored, 2) == EpisodeDirective(2, stage=2)


def fake_endpoint(cfg: Config, set_up: bool = True, pending_seq: int | None = None) -> ServerEndpoint:
    """Rank 0's endpoint over a stand-in server (only what directives use) and checkpoint coordinator."""
    server = SimpleNamespace(info=object() if set_up else None, director=EpisodeDirector(cfg))
    pending = SimpleNamespace(seq=pending_seq) if pending_seq is not None else None
    checkpoints = SimpleNamespace(pending=pending, due=lambda: None)
    return ServerEndpoint(server, 2, checkpoints)  # type: ignore[arg-type]


def test_the_endpoint_answers_when_it_can_and_sends_a_waiting_request_to_a_pending_checkpoint():
    ep = fake_endpoint(curriculum_config())
    assert ep.handle(1, DirectiveRequest(1, 1, None)) == [(1, EpisodeDirective(1))]
    assert ep.handle(0, DirectiveRequest(0, 2, (1, "valid"))) == []  # held until episode 1's validation is in
    ep.server.director.complete(1, "valid", 3.0)
    assert ep.tick() == [(0, EpisodeDirective(2, stage=2))]
    waiting = fake_endpoint(curriculum_config(), pending_seq=7)
    assert waiting.handle(1, DirectiveRequest(1, 2, (1, "valid"))) == [(1, CheckpointFirst(7, directive=True))]


def test_a_request_before_the_set_up_waits_for_it():
    """A resumed worker may ask before worker 0's set-up has restored the server's past decisions."""
    ep = fake_endpoint(Config(), set_up=False)
    assert ep.handle(1, DirectiveRequest(1, 1, None)) == []
    assert ep._early  # held, not answered from an empty director


@pytest.mark.parametrize(("settings", "asks"), [
    ({}, False),
    ({"curriculum.enabled": True, "validation.days": 1}, True),
    ({"monitor.enabled": True, "monitor.on_plateau": "stop"}, True),
    ({"monitor.enabled": True, "monitor.on_diverge": "stop"}, True),
    ({"monitor.enabled": True, "monitor.on_plateau": "reduce_lr"}, False),
    ({"monitor.enabled": False, "monitor.on_plateau": "stop"}, False),
])
def test_only_a_curriculum_or_a_monitor_that_can_stop_makes_the_workers_ask(settings, asks):
    cfg = Config()
    for key, value in settings.items():
        cfg.set(key, value)
    assert needs_directive(cfg) is asks


# ---- end to end, single mode ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def market(tmp_path_factory):
    return make_market(tmp_path_factory.mktemp("directive_market"))


def test_a_stop_after_episode_1_skips_to_the_evaluation(market, tmp_path, monkeypatch):
    """A scripted stop (as the convergence monitor's): requested on rank 0 once episode 1 is accounted."""
    complete = EpisodeDirector.on_outcome

    def stop_after_episode_1(self, outcome, info):
        complete(self, outcome, info)
        if (outcome.episode, outcome.phase) == (1, "train"):
            self.request_stop("scripted: stop after episode 1")

    monkeypatch.setattr(EpisodeDirector, "on_outcome", stop_after_episode_1)
    out = tmp_path / "stopped"
    settings = {"dqn.episodes": 3, "validation.days": 1, "dist.sync": True, "monitor.enabled": True,
                "monitor.on_plateau": "stop", "monitor.on_diverge": "warn", "monitor.patience": 100}
    result = train(tiny_config(market, out, **settings))
    lines = curve(out)
    assert [(x["phase"], x["episode"]) for x in lines] == [("train", 1), ("valid", 1), ("eval", 0)]
    stop = {"after_episode": 1, "reason": "scripted: stop after episode 1"}
    assert result["early_stop"] == stop and lines[-1]["early_stop"] == stop
    assert json.loads((out / "metrics.json").read_text())["early_stop"] == stop
    assert not (out / "portfolio_ep2.csv").exists() and (out / "portfolio_eval.csv").is_file()
    assert "stops training before episode 2" in (out / "run.log").read_text()


@pytest.mark.parametrize(("threshold", "stages"), [(-1e9, [1, 2, 3]), (1e9, [1, 1, 1])])
def test_a_curriculum_logs_each_training_episodes_stage_and_moves_up_on_passing_validations(
    market, tmp_path, threshold, stages
):
    out = tmp_path / "curriculum"
    settings = {"dqn.episodes": 3, "validation.days": 1, "curriculum.enabled": True, "curriculum.stages": 3,
                "curriculum.threshold": threshold, "curriculum.patience": 0, "dist.sync": True}
    result = train(tiny_config(market, out, **settings))
    lines = curve(out)
    assert [x["stage"] for x in lines if x["phase"] == "train"] == stages
    assert all("stage" not in x for x in lines if x["phase"] != "train")
    assert "early_stop" not in result and result["eval"]["sharpe"] == result["eval"]["sharpe"]  # completed
    if stages[-1] == 1:  # stage 1 of 3 over 3 training days: one day's transitions, and only those, are replayed
        checkpoint = CheckpointStore(out / "checkpoints").latest()
        for state in load_worker_states(checkpoint, range(3)).values():
            rows = np.flatnonzero(state["worker"]["learn_rows"])
            assert len(rows) and np.all(np.diff(rows) == 1)  # one day
            replayed = state["worker"]["replay"]["t"]
            assert len(replayed) and np.isin(replayed, rows).all()
