"""Config tree: TOML + flags, conversion, validation with one-line errors."""

from __future__ import annotations

import pytest

from parallel_dqn.cli import build_parser, config_from_args
from parallel_dqn.config import Config
from parallel_dqn.errors import UserError


def test_toml_round_trip(tmp_path):
    cfg = Config()
    cfg.set("dqn.lr", "0.01")
    cfg.set("data.stocks", "AAA,BBB")
    cfg.set("replay.prioritized", "true")
    path = tmp_path / "c.toml"
    cfg.write(path)
    back = Config.load(path)
    assert back.to_dict() == cfg.to_dict()
    assert back.dqn.lr == 0.01 and back.data.stocks == ["AAA", "BBB"] and back.replay.prioritized is True


def test_flags_override_file(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[dqn]\nlr = 0.1\nepisodes = 7\n[market]\ncost_bps = 3.0\n')
    args = build_parser().parse_args(
        ["train", "--config", str(path), "--cost-bps", "1.5", "--set", "dqn.gamma=0.9", "--sync", "--episodes", "2"]
    )
    cfg = config_from_args(args)
    assert cfg.dqn.lr == 0.1  # from the file
    assert cfg.dqn.episodes == 2 and cfg.market.cost_bps == 1.5  # flags win
    assert cfg.dqn.gamma == 0.9 and cfg.dist.sync is True


@pytest.mark.parametrize(
    "setting, value, needle",
    [
        ("dqn.nope", "1", "unknown setting 'dqn.nope'"),
        ("nope.lr", "1", "unknown setting 'nope.lr'"),
        ("dqn.episodes", "two", "not a valid int"),
        ("replay.prioritized", "maybe", "not a valid bool"),
    ],
)
def test_bad_settings_are_user_errors(setting, value, needle):
    with pytest.raises(UserError, match=needle):
        Config().set(setting, value)


@pytest.mark.parametrize(
    "setting, value, needle",
    [
        ("data.start_date", "2024-13-01", "not a date"),
        ("market.cost_bps", "-1", "cost_bps"),
        ("dqn.gamma", "1.0", "gamma"),
        ("dist.mode", "cluster", "--mode"),
        ("model.heads", "3", "multiple of model.heads"),
    ],
)
def test_validation(setting, value, needle):
    cfg = Config()
    cfg.set(setting, value)
    with pytest.raises(UserError, match=needle):
        cfg.validate()


def test_eval_must_follow_training():
    cfg = Config()
    cfg.set("data.end_date", "2024-01-10")
    cfg.set("data.eval_start", "2024-01-09")
    with pytest.raises(UserError, match="held-out"):
        cfg.validate()


def test_bad_toml_is_user_error(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[dqn\nlr = ")
    with pytest.raises(UserError, match="not valid TOML"):
        Config.load(path)
    path.write_text("[dqn]\nlearning_rate = 1\n")
    with pytest.raises(UserError, match="learning_rate"):
        Config.load(path)


@pytest.mark.parametrize("value, needle", [("", "data.cache is empty"), ("FILE", "is a file, not a folder")])
def test_bad_cache_setting(tmp_path, value, needle):
    (tmp_path / "f").write_text("")
    cfg = Config()
    cfg.set("data.cache", str(tmp_path / "f") if value == "FILE" else value)
    with pytest.raises(UserError, match=needle):
        cfg.validate()


def test_cache_setting_values(tmp_path):
    for value in ("auto", "off", str(tmp_path / "not-yet"), "~/somewhere"):
        cfg = Config()
        cfg.set("data.cache", value)
        cfg.validate()
    assert not (tmp_path / "not-yet").exists()  # made when a run first uses it, not by validating
    saved = Config()
    cfg.set("data.cache", "off")  # the cache never changes a result: a run may resume with another setting
    assert saved.resume_conflicts(cfg) == []


def test_lr_min_binds_only_where_something_lowers_the_rate():
    """A learning rate below optim.lr_min's default is fine with the constant schedule (the walk-forward test's
    warm start trains with dqn.lr = 1e-9); a cosine or plateau schedule, or the monitor's cut, needs the floor
    below it."""
    cfg = Config()
    cfg.set("dqn.lr", 1e-9)
    cfg.validate()
    for setting, value in (("optim.lr_schedule", "cosine"), ("monitor.enabled", True)):
        other = Config()
        other.set("dqn.lr", 1e-9)
        other.set(setting, value)
        if setting == "monitor.enabled":
            other.set("monitor.on_plateau", "reduce_lr")
        with pytest.raises(UserError, match="optim.lr_min"):
            other.validate()
