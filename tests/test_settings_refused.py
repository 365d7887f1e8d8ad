"""Settings that cannot work are refused at start, through the real CLI: one line, exit 2, nothing written.

* dates must be spelled YYYY-MM-DD (``20240103`` and ``2024-W01-3`` are ISO dates too, but compare
  wrongly as text), and the evaluation period must start after the training end;
* sizes, counts and rates outside their range (``model.heads=0``, ``--seed -1``, ``dqn.grad_clip<=0``, ...);
* every float setting must be finite (``inf``, ``nan``);
* capacities and sizes whose memory clearly exceeds the machine's;
* a ``--config`` file that is not text.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import hash_tree, run_cli, user_error

#: fast settings, so that a case that is (wrongly) accepted still ends soon
FAST = ("--stocks", "AAA", "BBB", "--episodes", "1", "--no_progress",
        "--set", "dqn.learning_starts=40", "--set", "market.graph_window=40")


def train(data: Path, out: Path, *extra: str):
    return run_cli("train", "--data", data, "--output", out, *FAST, *extra)


# ---- dates ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "args, names",
    [
        # the brief's case: accepted before, trained through 01-04 and "evaluated" on 01-03..01-04
        (("--end_date", "2024-01-04", "--eval_start", "20240103", "--eval_end", "20240104"),
         ("--eval_start", "20240103", "YYYY-MM-DD")),
        (("--start_date", "2024-W01-3", "--end_date", "2024-01-03"), ("--start_date", "2024-W01-3", "YYYY-MM-DD")),
        (("--end_date", "20240103"), ("--end_date", "YYYY-MM-DD")),
        (("--eval_start", "2024-01-04", "--eval_end", "2024-01-04T00:00"), ("--eval_end", "YYYY-MM-DD")),
        (("--end_date", "2024-01-04", "--eval_start", "2024-01-04", "--eval_end", "2024-01-04"),
         ("2024-01-04", "held-out")),
    ],
    ids=["basic-format-eval", "week-date", "basic-format-end", "datetime", "eval-on-training-end"],
)
def test_dates_must_be_yyyy_mm_dd_and_eval_after_training(tiny_market, tmp_path, args, names):
    out = tmp_path / "out"
    user_error(train(tiny_market, out, *args), *names)
    assert not out.exists()


# ---- settings out of range -----------------------------------------------------------------------
OUT_OF_RANGE = [
    (("--set", "model.heads=0"), ("model.heads", ">= 1")),
    (("--set", "model.heads=-2"), ("model.heads", ">= 1")),
    (("--set", "model.embed_dim=0"), ("model.embed_dim", ">= 1")),
    (("--set", "model.embed_dim=-4"), ("model.embed_dim", ">= 1")),
    (("--set", "model.hidden=0"), ("model.hidden", ">= 1")),
    (("--seed", "-1"), ("run.seed", "-1")),
    (("--seed", str(2**32)), ("run.seed", str(2**32))),
    (("--set", "dqn.huber_delta=0"), ("dqn.huber_delta", "> 0")),
    (("--set", "dqn.huber_delta=-1"), ("dqn.huber_delta", "> 0")),
    (("--set", "replay.alpha=-0.5"), ("replay.alpha", ">= 0")),
    (("--set", "replay.beta_start=1.5"), ("replay.beta_start", "[0, 1]")),
    (("--set", "replay.beta_start=-0.1"), ("replay.beta_start", "[0, 1]")),
    (("--set", "dqn.grad_clip=-1"), ("dqn.grad_clip", "> 0")),
    (("--set", "dqn.grad_clip=0"), ("dqn.grad_clip", "> 0")),
    (("--set", "dqn.learning_starts=-1"), ("dqn.learning_starts", ">= 0")),
    (("--set", "dist.staleness_bound=-1"), ("dist.staleness_bound", ">= 0")),
    (("--set", "meta.epochs=-1"), ("meta.epochs", ">= 0")),
    (("--set", "meta.lr=0"), ("meta.lr", "> 0")),
    (("--set", "meta.lr=-0.01"), ("meta.lr", "> 0")),
]
NOT_FINITE = [
    (("--lr", "inf"), ("dqn.lr", "finite")),
    (("--set", "dqn.lr=nan"), ("dqn.lr", "finite")),
    (("--set", "dqn.gamma=nan"), ("dqn.gamma", "finite")),
    (("--cost_bps", "inf"), ("market.cost_bps", "finite")),
    (("--set", "market.cost_bps=nan"), ("market.cost_bps", "finite")),
    (("--set", "dqn.grad_clip=inf"), ("dqn.grad_clip", "finite")),
    (("--set", "dist.timeout=inf"), ("dist.timeout", "finite")),
    (("--set", "notify.min_interval=nan"), ("notify.min_interval", "finite")),
    (("--set", "checkpoint.every_seconds=-inf"), ("checkpoint.every_seconds", "finite")),
]
TOO_BIG = [
    (("--set", "replay.capacity=100000000000"), ("replay.capacity", "memory", "this machine")),
    (("--batch_size", "10000000000", "--set", "replay.capacity=10000000000"), ("batch_size", "memory", "this machine")),
    (("--batch_size", "10000000000"), ("batch_size", "memory", "this machine")),
    (("--set", "model.hidden=100000000"), ("model.hidden", "memory", "this machine")),
    (("--set", "model.embed_dim=10000000"), ("model.embed_dim", "memory", "this machine")),
]


@pytest.mark.slow  # 35 CLI runs (~30 s); the fast tier keeps the other cases of this module
@pytest.mark.parametrize("args, names", OUT_OF_RANGE + NOT_FINITE + TOO_BIG,
                         ids=[" ".join(a) for a, _ in OUT_OF_RANGE + NOT_FINITE + TOO_BIG])
def test_bad_setting_is_refused_at_start(tiny_market, tmp_path, args, names):
    out = tmp_path / "out"
    user_error(train(tiny_market, out, *args), *names)
    assert not out.exists()


def test_bad_setting_leaves_an_existing_output_folder_untouched(tiny_market, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine\n")
    before = hash_tree(out)
    user_error(train(tiny_market, out, "--overwrite", "--set", "model.heads=0"), "model.heads")
    assert hash_tree(out) == before


def test_bad_setting_in_a_config_file_is_refused(tiny_market, tmp_path):
    config = tmp_path / "run.toml"
    config.write_text("[dqn]\ngrad_clip = -1.0\n[data]\neval_start = 2024-01-04\n")
    out = tmp_path / "out"
    user_error(train(tiny_market, out, "--config", config), "dqn.grad_clip")
    assert not out.exists()


def test_toml_date_time_is_not_a_day(tiny_market, tmp_path):
    config = tmp_path / "run.toml"
    config.write_text("[data]\neval_start = 2024-01-04T09:30:00\neval_end = 2024-01-04\n")
    out = tmp_path / "out"
    user_error(train(tiny_market, out, "--config", config), "--eval_start", "YYYY-MM-DD")
    assert not out.exists()


# ---- a config file that is not text --------------------------------------------------------------
def test_binary_config_file_is_one_line(tiny_market, tmp_path):
    config = tmp_path / "x.toml"
    config.write_bytes(bytes(range(256)))
    out = tmp_path / "out"
    user_error(train(tiny_market, out, "--config", config), str(config), "UTF-8")
    assert not out.exists()
