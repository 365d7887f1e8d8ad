"""Issue 12, items 1 and 2: the validation period, the learning-rate schedules and the convergence monitor.

* the schedules give torch's reference values (an independent torch optimizer and scheduler, and the
  closed-form cosine), continue exactly from their state, and the monitor's cut never goes below lr_min;
* the monitor's states on scripted loss / gradient / validation sequences: improving, plateau after the
  patience, diverging on NaN, an exploding norm, a Q blow-up or a rising loss, and its interventions;
* on the parameter server: restore_best brings back the best validation episode's weights, and a pull of a
  worker that finished a validation waits for every worker's (so that restore reaches all at one point);
* the validation days are the training period's last ones, refused in one line when nothing is left;
* a single-mode run with validation, a schedule and the monitor writes them into its outputs, and resuming
  any of its checkpoints in --sync mode reproduces it exactly.
"""

from __future__ import annotations

import datetime as dt
import json
import math

import numpy as np
import pytest
import torch
from torch.optim.lr_scheduler import CosineAnnealingWarmRestarts, LinearLR, ReduceLROnPlateau

from parallel_dqn.checkpoint.format import CheckpointStore
from parallel_dqn.cli import main
from parallel_dqn.comm.messages import DecisionBlock, EpisodeDone, Pull
from parallel_dqn.config import MonitorConfig, OptimConfig
from parallel_dqn.errors import UserError
from parallel_dqn.run.single import train
from parallel_dqn.training.driver import Schedule
from parallel_dqn.training.lr_schedule import LearningRate
from parallel_dqn.training.monitor import ConvergenceMonitor, loss_slope
from parallel_dqn.training.plan import hold_out_validation
from tests.helpers import assert_same_run, config, endpoint, gradient, make_market, market, tiny_config

LR = 5e-4


def optim(**settings) -> OptimConfig:
    """An [optim] section with only ``settings`` on (the defaults switch a warm-up + cosine schedule on)."""
    return OptimConfig(**{"lr_schedule": "constant", "warmup_applies": 0, "cosine_period": 1000, **settings})


def values(lr: LearningRate, n: int) -> list[float]:
    """The rate of each of ``n`` applies."""
    out = []
    for _ in range(n):
        out.append(lr.value)
        lr.after_apply()
    return out


def reference(make_scheduler, n: int) -> list[float]:
    """torch's own: an optimizer stepped, then its scheduler, ``n`` times."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=LR)
    scheduler = make_scheduler(opt)
    out = []
    for _ in range(n):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        scheduler.step()
    return out


# ---- schedules -----------------------------------------------------------------------------------
def test_warmup_is_torchs_linear_warmup_from_a_hundredth():
    got = values(LearningRate(LR, optim(lr_schedule="warmup", warmup_applies=10)), 15)
    assert got == reference(lambda o: LinearLR(o, 0.01, 1.0, 10), 15)
    assert got[0] == pytest.approx(LR / 100) and got[10:] == [pytest.approx(LR)] * 5


def test_constant_is_dqn_lr_exactly_and_builds_no_torch_optimizer():
    lr = LearningRate(LR, optim())
    assert values(lr, 5) == [LR] * 5 and lr._proxy is None and not lr.changes


def test_cosine_with_warm_restarts_is_torchs_and_the_closed_form():
    cfg = optim(lr_schedule="cosine", cosine_period=7, cosine_mult=2, lr_min=1e-5)
    got = values(LearningRate(LR, cfg), 40)
    assert got == reference(lambda o: CosineAnnealingWarmRestarts(o, 7, 2, eta_min=1e-5), 40)
    # closed form: periods of 7, 14, 28 applies, each from lr down towards lr_min
    expected, start, period = [], 0, 7
    for step in range(40):
        if step - start >= period:
            start, period = start + period, period * 2
        expected.append(1e-5 + (LR - 1e-5) * (1 + math.cos(math.pi * (step - start) / period)) / 2)
    assert got == pytest.approx(expected, rel=1e-9)


def test_cosine_after_a_warmup_starts_at_the_peak_when_the_warmup_ends():
    got = values(LearningRate(LR, optim(lr_schedule="cosine", warmup_applies=5, cosine_period=10)), 20)
    assert got[:5] == reference(lambda o: LinearLR(o, 0.01, 1.0, 5), 5)
    assert got[5] == pytest.approx(LR) and got[5:15] == pytest.approx(
        reference(lambda o: CosineAnnealingWarmRestarts(o, 10, 1, eta_min=1e-5), 10))


def test_plateau_cuts_on_validations_without_improvement_as_torch_does():
    scores = [0.5, 1.0, 0.9, 0.8, 0.95, 0.7, 2.0, 1.0, 1.0]
    lr = LearningRate(LR, optim(lr_schedule="plateau", plateau_factor=0.5, plateau_patience=1, lr_min=1e-4))
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=LR)
    torch_plateau = ReduceLROnPlateau(opt, mode="max", factor=0.5, patience=1, min_lr=1e-4)
    got, want = [], []
    for score in scores:
        lr.after_apply()  # applies do not move a plateau schedule
        lr.after_validation(score)
        torch_plateau.step(score)
        got.append(lr.value)
        want.append(opt.param_groups[0]["lr"])
    assert got == want
    assert got[3] == LR / 2 and min(got) == 1e-4  # two bad validations after the best; the floor holds


def test_a_schedule_continues_exactly_from_its_state():
    cfg = optim(lr_schedule="cosine", warmup_applies=3, cosine_period=5, cosine_mult=2)
    whole = LearningRate(LR, cfg)
    expected = values(whole, 30)
    first = LearningRate(LR, cfg)
    head = values(first, 12)
    first.cut(0.5)
    resumed = LearningRate(LR, cfg)
    resumed.load_state_dict(first.state_dict())
    assert head + values(resumed, 18) == pytest.approx(expected[:12] + [v * 0.5 for v in expected[12:]], rel=1e-12)


def test_the_monitors_cut_multiplies_the_schedule_and_stops_at_lr_min():
    lr = LearningRate(LR, optim(lr_min=1e-4))
    assert lr.cut(0.5) == (LR, LR / 2)
    assert lr.cut(0.5) == (LR / 2, LR / 4)
    assert lr.cut(0.5) == (LR / 4, pytest.approx(1e-4)) and lr.cut(0.5)[1] == pytest.approx(1e-4)
    assert lr.changes


# ---- the monitor on scripted sequences -------------------------------------------------------------
def run_monitor(monitor: ConvergenceMonitor, episodes: list[tuple[list[tuple[float, float, float]], float]]):
    """Feed ``(gradients [(norm, loss, q)], score)`` per episode; the verdicts."""
    verdicts = []
    for e, (grads, score) in enumerate(episodes, start=1):
        for norm, loss, q in grads:
            monitor.observe(norm, loss, q)
        monitor.end_training()
        verdicts.append(monitor.verdict(e, score))
    return verdicts


def steady(n: int = 20, norm: float = 1.0, loss: float = 0.5, q: float = 0.1) -> list[tuple[float, float, float]]:
    return [(norm, loss, q)] * n


def test_rising_scores_are_improving_and_each_is_the_best():
    verdicts = run_monitor(ConvergenceMonitor(MonitorConfig(enabled=True)), [(steady(), s) for s in (0.1, 0.2, 0.3)])
    assert [v.state for v in verdicts] == ["improving"] * 3 and all(v.best for v in verdicts)
    assert all(v.action is None for v in verdicts)


def test_a_plateau_comes_after_patience_episodes_without_a_better_score_and_the_patience_restarts():
    cfg = MonitorConfig(enabled=True, patience=2, on_plateau="reduce_lr")
    scores = [1.0, 0.5, 0.8, 0.9, 0.7, 0.6, 1.5]
    verdicts = run_monitor(ConvergenceMonitor(cfg), [(steady(), s) for s in scores])
    assert [v.state for v in verdicts] == ["improving", "improving", "plateau", "improving", "plateau", "improving",
                                           "improving"]
    assert [v.action for v in verdicts] == [None, None, "reduce_lr", None, "reduce_lr", None, None]
    assert "no better score than 1 (episode 1) for 2 episodes" in verdicts[2].reasons[0]
    assert verdicts[-1].best and not verdicts[2].best


@pytest.mark.parametrize("bad, why", [
    ((math.nan, 0.5, 0.1), "non-finite"),
    ((1.0, math.inf, 0.1), "non-finite"),
    ((5e3, 0.5, 0.1), "gradient norm 5e+03 > 1000"),
    ((1.0, 0.5, 1e6), "beyond any discounted return"),
])
def test_nan_inf_an_exploding_norm_or_a_q_blow_up_is_diverging(bad, why):
    monitor = ConvergenceMonitor(MonitorConfig(enabled=True, on_diverge="restore_best"), q_bound=100.0)
    good, broken = run_monitor(monitor, [(steady(), 1.0), (steady(10) + [bad], 5.0)])
    assert good.state == "improving"
    assert broken.state == "diverging" and broken.action == "restore_best" and not broken.best
    assert any(why in reason for reason in broken.reasons), broken.reasons
    assert monitor.best_episode == 1  # a diverging episode never becomes the best


def test_a_loss_that_doubles_over_the_window_is_diverging_and_a_falling_one_is_not():
    rising = [(1.0, 0.1 + 0.02 * i, 0.1) for i in range(50)]
    falling = list(reversed(rising))
    cfg = MonitorConfig(enabled=True, window=50)
    assert run_monitor(ConvergenceMonitor(cfg), [(rising, 1.0)])[0].state == "diverging"
    assert run_monitor(ConvergenceMonitor(cfg), [(falling, 1.0)])[0].state == "improving"
    assert loss_slope(np.array([1.0, 2.0, 3.0])) == pytest.approx(1.0)


def test_vanishing_gradients_are_a_plateau():
    cfg = MonitorConfig(enabled=True, vanish_norm=1e-6, on_plateau="warn")
    (verdict,) = run_monitor(ConvergenceMonitor(cfg), [(steady(norm=1e-9), 1.0)])
    assert verdict.state == "plateau" and verdict.action == "warn" and "vanish" in verdict.reasons[-1]


def test_the_monitor_continues_exactly_from_its_state():
    cfg = MonitorConfig(enabled=True, patience=1, window=30)
    script = [(steady(7, loss=0.5 + 0.01 * e), s) for e, s in enumerate([1.0, 2.0, 1.5, 1.4, 3.0])]
    whole = [(v.state, v.reasons, v.action) for v in run_monitor(ConvergenceMonitor(cfg), script)]
    first = ConvergenceMonitor(cfg)
    head = run_monitor(first, script[:2])
    first.observe(1.0, 0.4, 0.1)  # mid-episode
    second = ConvergenceMonitor(cfg)
    second.load_state_dict(first.state_dict())
    assert list(second.losses) == list(first.losses) and second.losses.maxlen == 30
    tail = run_monitor(second, script[2:])
    again = ConvergenceMonitor(cfg)
    run_monitor(again, script[:2])
    again.observe(1.0, 0.4, 0.1)
    assert [(v.state, v.reasons, v.action) for v in head + tail] == \
        [(v.state, v.reasons, v.action) for v in run_monitor(ConvergenceMonitor(cfg), script[:2])] + \
        [(v.state, v.reasons, v.action) for v in run_monitor(again, script[2:])]
    assert [w[0] for w in whole] == ["improving", "improving", "plateau", "plateau", "improving"]


# ---- on the parameter server ------------------------------------------------------------------------
VALID = (30, 40)


def validation_market():
    info = market()
    info.train_rows, info.eval_rows, info.valid_rows = (0, 30), (0, 0), VALID
    info.reward_scale = 1 / info.return_std  # as a run scales rewards: Q-values of about 1 are in range
    return info


def episode_decisions(ep, worker: int, episode: int, phase: str, rows: tuple[int, int], right: bool) -> None:
    """Worker ``worker``'s decisions on ``rows``: long before a rise and short before a fall (``right``), or the
    opposite; then its EpisodeDone."""
    t = np.arange(rows[0], rows[1] - 1)
    rises = ep.server.info.log_returns[t + 1, worker] > 0
    action = np.where(rises == right, 2, 0).astype(np.int64)
    q = np.zeros((len(t), 3), np.float32)
    ep.handle(worker, DecisionBlock(worker, episode, phase, t, np.full(len(t), worker), q, action, np.zeros(len(t))))
    return ep.handle(worker, EpisodeDone(worker, episode, phase, len(t)))


def weights_now(ep) -> np.ndarray:
    return ep.server.params().online.copy()


def test_restore_best_brings_back_the_best_validation_episodes_weights():
    cfg = config(sync=False, **{"meta.enabled": False, "monitor.enabled": True, "monitor.patience": 1,
                                "monitor.on_plateau": "restore_best", "validation.days": 1})
    ep = endpoint(cfg)
    ep.handle(0, validation_market())
    lines = []
    ep.server.listener.register(type("Lines", (), {"on_episode": lambda self, r: lines.append(r.line)})())
    for episode, right in ((1, True), (2, False)):
        for w in (0, 1):
            ep.handle(w, gradient(w, ep.server.version, 1e-2 * episode))
        for w in (0, 1):
            episode_decisions(ep, w, episode, "train", (0, 30), True)
        if episode == 2:
            trained = weights_now(ep)
        for w in (0, 1):
            episode_decisions(ep, w, episode, "valid", VALID, right)
        if episode == 1:
            best = weights_now(ep)
    valid = [line for line in lines if line["phase"] == "valid"]
    assert [line["monitor"] for line in valid] == ["improving", "plateau"]
    assert valid[0]["sharpe"] > 0 > valid[1]["sharpe"]
    assert valid[1]["intervention"] == "restore_best 1"
    assert valid[1]["monitor_message"] == "plateau at episode 2: weights of episode 1 restored"
    assert not np.array_equal(trained, best) and np.array_equal(weights_now(ep), best)
    assert ep.server.optimizer.step_count == 2  # the moments of episode 1 (one apply per gradient)
    assert ep.server.version == 4  # the version goes on: no worker is sent back in time
    train = [line for line in lines if line["phase"] == "train"]
    assert all(k in train[0] for k in ("grad_norm", "q_mean", "loss_slope", "lr"))
    assert train[0]["grad_norm"] == pytest.approx(float(np.linalg.norm(gradient(0, 0, 1e-2).grad)), rel=1e-6)


def test_a_pull_after_a_validation_waits_until_every_worker_has_finished_it():
    ep = endpoint(config(**{"validation.days": 1}))
    ep.handle(0, validation_market())
    episode_decisions(ep, 0, 1, "valid", VALID, True)
    assert ep.handle(0, Pull(0, 0)) == []  # worker 1 is still validating
    (reply,) = ep.handle(1, Pull(1, 0))  # worker 1 has not finished it: answered
    assert reply[0] == 1
    replies = episode_decisions(ep, 1, 1, "valid", VALID, True)
    assert [w for w, _ in replies] == [0]  # the last EpisodeDone releases worker 0's pull


def test_the_monitors_stop_is_handed_to_the_episode_director():
    cfg = config(**{"meta.enabled": False, "monitor.enabled": True, "monitor.patience": 1, "monitor.on_plateau": "stop",
                    "validation.days": 1})
    ep = endpoint(cfg)
    ep.handle(0, validation_market())
    for episode, right in ((1, True), (2, False)):
        for w in (0, 1):
            episode_decisions(ep, w, episode, "train", (0, 30), True)
        for w in (0, 1):
            episode_decisions(ep, w, episode, "valid", VALID, right)
    assert ep.server.monitor_stop_requested
    assert ep.server.director.stop_reason == "plateau at episode 2"
    assert ep.server.checkpoint_state()["monitor_stop_requested"] is True


# ---- the validation period ----------------------------------------------------------------------------
def test_the_validation_days_are_the_training_periods_last_ones():
    days = [dt.date(2024, 1, d) for d in (2, 3, 4, 5, 8, 9)]
    assert hold_out_validation(days, days[0], days[3], 0) == (days[3], None)
    assert hold_out_validation(days, days[0], days[3], 2) == (days[1], (days[2], days[3]))
    with pytest.raises(UserError, match=r"validation.days = 4 leaves no training day: .* has 4 trading days"):
        hold_out_validation(days, days[0], days[3], 4)


def test_the_schedule_puts_a_validation_after_each_training_episode():
    plain = Schedule(2, (0, 30), (40, 50))
    assert [(s.episode, s.phase) for s in plain] == [(1, "train"), (2, "train"), (0, "eval")]
    schedule = Schedule(2, (0, 30), (40, 50), (30, 40))
    assert [(s.episode, s.phase, s.rows) for s in schedule] == [
        (1, "train", (0, 30)), (1, "valid", (30, 40)), (2, "train", (0, 30)), (2, "valid", (30, 40)),
        (0, "eval", (40, 50))]


# ---- end to end, single mode ---------------------------------------------------------------------------
SETTINGS = {"validation.days": 1, "optim.lr_schedule": "cosine", "optim.warmup_applies": 20,
            "optim.cosine_period": 50, "monitor.enabled": True, "monitor.patience": 1,
            "monitor.on_plateau": "reduce_lr", "dqn.episodes": 3, "dist.sync": True, "checkpoint.every_applies": 60,
            "checkpoint.keep": 20}


@pytest.fixture(scope="module")
def six_days(tmp_path_factory):
    return make_market(tmp_path_factory.mktemp("market"), days=6)


def test_a_run_with_validation_a_schedule_and_the_monitor_resumes_exactly_from_any_checkpoint(six_days, tmp_path):
    full = tmp_path / "full"
    train(tiny_config(six_days, full, **SETTINGS))
    lines = [json.loads(x) for x in (full / "metrics.jsonl").read_text().splitlines()]
    assert [(x["phase"], x["episode"]) for x in lines] == [
        ("train", 1), ("valid", 1), ("train", 2), ("valid", 2), ("train", 3), ("valid", 3), ("eval", 0)]
    assert lines[0]["lr"] < 5e-4 and all("monitor" in x for x in lines if x["phase"] == "valid")
    assert lines[0]["steps"] > lines[1]["steps"] > 0  # the validation day is not trained on
    metrics = json.loads((full / "metrics.json").read_text())
    assert [row["episode"] for row in metrics["monitor"]] == [1, 2, 3]
    assert "Convergence monitor" in (main(["report", str(full)]) == 0 and (full / "report.html").read_text())
    checkpoints = CheckpointStore(full / "checkpoints").committed()
    assert len(checkpoints) >= 4
    for ckpt in checkpoints:
        out = tmp_path / f"from_{ckpt.name}"
        assert main(["train", "--resume", str(ckpt), "--output", str(out), "--no-progress"]) == 0
        assert_same_run(full, out)
