"""Azure Blob Storage as a data source, against the real Azurite emulator (``azurite`` fixture, conftest.py).

* upload is idempotent; ``ls`` shows ranges, counts and gaps; ``download`` mirrors the store exactly;
* training from ``azure://`` equals training from the same local folder, and a second run downloads nothing;
* under real ``mpiexec`` each worker rank fetches only its own stock;
* every failure (credentials, container, stock, dates, corrupt blob, emulator gone) is one error line, exit 2,
  no traceback, no partial file in the cache; a fixed blob replaces its corrupt cached copy (ETag);
* the account key never appears in any output, log or file of a run.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from parallel_dqn.data.azure_store import RETRIES, AzureBlobStore, connect, replacing
from parallel_dqn.data.store import open_store
from parallel_dqn.errors import UserError
from parallel_dqn.run.single import train
from tests.conftest import DEV_KEY
from tests.helpers import MPIEXEC, ROOT, STOCKS, hash_tree, make_market, run_cli, tiny_config, train_args, weights

ERROR = re.compile(r"^parallel-dqn(?: [a-z-]+)*: error: \S")
COUNTS = re.compile(r"azure://(\S+): (\w+): (\d+) files, (\d+) downloaded \(\d+ bytes\), (\d+) from cache")
DAYS = 5  # 2024-01-02 .. 2024-01-08, the dates of tests.helpers.tiny_config


def env_for(connection: str | None, cache: Path) -> dict[str, str]:
    """This environment with ``connection`` as the Azure connection string (None: unset) and its own cache."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("AZURE")}
    if connection is not None:
        env["AZURE_STORAGE_CONNECTION_STRING"] = connection
    env["PARALLEL_DQN_CACHE"] = str(cache)
    return env


def one_error_line(proc: subprocess.CompletedProcess[str], *words: str) -> str:
    """Exit 2, no traceback, stderr exactly one error line naming ``words``."""
    out = f"\n--- exit {proc.returncode}\n--- stderr:\n{proc.stderr}\n--- stdout:\n{proc.stdout}"
    assert proc.returncode == 2, out
    assert "Traceback" not in proc.stderr + proc.stdout, out
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if ERROR.match(line)]
    assert len(errors) == 1 and lines == errors, out
    assert all(w in errors[0] for w in words), f"{errors[0]!r} does not name all of {words}"
    assert DEV_KEY not in proc.stderr + proc.stdout
    return errors[0]


def no_partial_files(cache: Path) -> None:
    assert not [p for p in cache.rglob("*") if p.name.endswith(".part")]


def cli_train(data: str, out: Path, *extra: str) -> list[str]:
    """A tiny single-process training run on tests.helpers' market (flags equal to tiny_config)."""
    args = train_args(data, out, *extra)[2:]  # drop "-m parallel_dqn"
    args[args.index("parallel")] = "single"
    return [*args, "--workers", str(len(STOCKS))]  # tiny_config's one worker per stock


@pytest.fixture(scope="module")
def market(tmp_path_factory) -> Path:
    return make_market(tmp_path_factory.mktemp("az_market"), days=DAYS)


@pytest.fixture(scope="module")
def uploaded(azurite, market, tmp_path_factory) -> dict[str, str]:
    """``market`` uploaded to azure://mkt; returns the two upload reports (first, repeated)."""
    env = env_for(azurite.connection_string, tmp_path_factory.mktemp("unused_cache"))
    first = run_cli("data", "upload", "--data", market, "--to", "azure://mkt", env=env)
    again = run_cli("data", "upload", "--data", market, "--to", "azure://mkt", env=env)
    assert first.returncode == 0 and again.returncode == 0, first.stderr + again.stderr
    return {"first": first.stdout, "again": again.stdout}


@pytest.fixture
def az_env(azurite, uploaded, monkeypatch, tmp_path) -> dict[str, str]:
    """The connection string and a fresh cache, in this process and for subprocesses."""
    env = env_for(azurite.connection_string, tmp_path / "cache")
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", env["AZURE_STORAGE_CONNECTION_STRING"])
    monkeypatch.setenv("PARALLEL_DQN_CACHE", env["PARALLEL_DQN_CACHE"])
    return env


def test_upload_is_idempotent(uploaded):
    n = len(STOCKS) * DAYS
    assert f"uploaded {n}, skipped 0 (already there) to azure://mkt" in uploaded["first"]
    assert f"uploaded 0, skipped {n} (already there) to azure://mkt" in uploaded["again"]


def test_upload_under_a_prefix_and_changed_files_only(az_env, market, tmp_path):
    env = az_env
    local = tmp_path / "m"
    shutil.copytree(market, local)
    proc = run_cli("data", "upload", "--data", local, "--to", "azure://pre/a/b", env=env)
    assert "uploaded 15, skipped 0" in proc.stdout, proc.stderr
    victim = local / "stocks_intraday" / "LEAD" / "2024" / "01" / "LEAD_2024-01-03.parquet"
    victim.write_bytes(victim.read_bytes() + b"\0")
    proc = run_cli("data", "upload", "--data", local, "--to", "azure://pre/a/b", env=env)
    assert "uploaded 1, skipped 14 (already there) to azure://pre/a/b" in proc.stdout, proc.stderr
    container, _ = connect("pre")
    names = [b.name for b in container.list_blobs()]
    assert len(names) == 15 and all(n.startswith("a/b/stocks_intraday/") for n in names)
    proc = run_cli("data", "ls", "azure://pre/a/b", env=env)
    assert proc.returncode == 0 and "3 stocks in azure://pre/a/b" in proc.stdout, proc.stderr


def test_ls_shows_range_count_and_gaps(az_env, market, tmp_path):
    proc = run_cli("data", "ls", "azure://mkt", env=az_env)
    assert proc.returncode == 0, proc.stderr
    for sym in STOCKS:
        assert re.search(rf"^{sym}\s+2024-01-02 \.\. 2024-01-08\s+5\s+0$", proc.stdout, re.M), proc.stdout
    local = tmp_path / "gappy"
    shutil.copytree(market, local)
    (local / "stocks_intraday" / "MOMO" / "2024" / "01" / "MOMO_2024-01-04.parquet").unlink()
    proc = run_cli("data", "ls", local, "--stocks", "MOMO")
    assert re.search(r"^MOMO\s+2024-01-02 \.\. 2024-01-08\s+4\s+1  \(2024-01-04\)$", proc.stdout, re.M), proc.stdout


def test_download_mirrors_the_store(az_env, market, tmp_path):
    out = tmp_path / "mirror"
    first = run_cli("data", "download", "azure://mkt", "--to", out, env=az_env)
    again = run_cli("data", "download", "azure://mkt", "--to", out, env=az_env)
    assert "downloaded 15, skipped 0" in first.stdout, first.stderr
    assert "downloaded 0, skipped 15 (already identical)" in again.stdout, again.stderr
    assert hash_tree(out / "stocks_intraday") == hash_tree(market / "stocks_intraday")


def _counts(log_text: str) -> dict[str, tuple[int, int, int]]:
    """symbol -> (files, downloaded, from cache) from the store's lines in a run's log file."""
    return {m[2]: (int(m[3]), int(m[4]), int(m[5])) for m in COUNTS.finditer(log_text)}


def test_train_from_azure_equals_local_and_second_run_downloads_nothing(az_env, market, tmp_path):
    local = train(tiny_config(market, tmp_path / "local", **{"run.seed": 5}))
    remote = train(tiny_config("azure://mkt", tmp_path / "azure", **{"run.seed": 5}))
    assert remote["eval"] == local["eval"] and remote["baselines"] == local["baselines"]
    wl, wa = weights(tmp_path / "local"), weights(tmp_path / "azure")
    assert all(torch.equal(wl[k], wa[k]) for k in wl)
    first = _counts((tmp_path / "azure" / "run.log").read_text())
    assert first == {s: (DAYS, DAYS, 0) for s in STOCKS}  # every file downloaded once
    # without the cross-section cache the files are read again: from the download cache, none downloaded
    proc = run_cli(*cli_train("azure://mkt", tmp_path / "again", "--set", "data.cache=off"), env=az_env)
    assert proc.returncode == 0, proc.stderr
    assert _counts((tmp_path / "again" / "run.log").read_text()) == {s: (DAYS, 0, DAYS) for s in STOCKS}  # never again
    assert json.loads((tmp_path / "again" / "metrics.json").read_text())["eval"]
    # with it (the default) the built cross-section is mapped and no file is even looked at
    proc = run_cli(*cli_train("azure://mkt", tmp_path / "mapped"), env=az_env)
    assert proc.returncode == 0, proc.stderr
    log = (tmp_path / "mapped" / "run.log").read_text()
    assert "cross-section from the cache" in log and _counts(log) == {}, log
    mapped, read = (json.loads((tmp_path / run / "metrics.json").read_text()) for run in ("mapped", "again"))
    assert mapped["eval"] == read["eval"]  # the same run as from the files


def test_each_mpi_rank_downloads_only_its_own_stock_and_the_first_builds_from_the_copies(az_env, tmp_path):
    """Every file is downloaded once, by the worker of its stock, all workers at once; the node's first worker
    (rank 1), which builds the node's cross-section alone, reads the other stocks from those local copies."""
    out = tmp_path / "mpi"
    args = [MPIEXEC, "-n", "4", sys.executable, *train_args("azure://mkt", out)]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=240, cwd=ROOT, env=az_env)
    assert proc.returncode == 0, proc.stderr
    for rank, sym in enumerate(STOCKS, start=1):
        others = {s: (DAYS, 0, DAYS) for s in STOCKS if s != sym} if rank == 1 else {}
        assert _counts((out / "logs" / f"rank{rank}.log").read_text()) == {sym: (DAYS, DAYS, 0), **others}
    assert _counts((out / "run.log").read_text()) == {}  # rank 0 downloads nothing
    assert (out / "trained_model.pth").is_file()


def test_no_secret_in_any_output(az_env, tmp_path):
    out = tmp_path / "run"
    proc = run_cli(*cli_train("azure://mkt", out), env=az_env)
    assert proc.returncode == 0, proc.stderr
    secret = az_env["AZURE_STORAGE_CONNECTION_STRING"]
    needles = [DEV_KEY.encode(), secret.encode(), b"AccountKey", DEV_KEY[:20].encode()]
    files = [p for p in [*out.rglob("*"), *Path(az_env["PARALLEL_DQN_CACHE"]).rglob("*")] if p.is_file()]
    assert {"metrics.json", "config.toml", "trained_model.pth", "run.log"} <= {p.name for p in files}
    for path in files:
        data = path.read_bytes()
        assert not any(n in data for n in needles), path
    assert not any(n.decode() in proc.stdout + proc.stderr for n in needles)


# ---- failures: one line, exit 2, no traceback, no partial file -----------------------------------------------
def _wrong_key(connection: str) -> str:
    return connection.replace(DEV_KEY, "A" * 86 + "==")


FAILURES = {
    "missing-connection-string": (lambda c: None, "azure://mkt", (),
                                  ["AZURE_STORAGE_CONNECTION_STRING", ".cloudkeys/api_keys.env", "azure://mkt"]),
    "malformed-connection-string": (lambda c: "this is not a connection string", "azure://mkt", (),
                                    ["AZURE_STORAGE_CONNECTION_STRING is malformed"]),
    "wrong-key": (_wrong_key, "azure://mkt", (), ["refused the credentials", "AuthorizationFailure", "AccountKey"]),
    "missing-container": (lambda c: c, "azure://nosuch", (), ["container nosuch does not exist", "devstoreaccount1"]),
    "missing-stock": (lambda c: c, "azure://mkt", ("--stocks", "LEAD", "NOPE"), ["no data for stock NOPE", "LEAD"]),
    "empty-date-range": (lambda c: c, "azure://mkt", ("--eval_start", "2030-01-01", "--eval_end", "2030-01-05"),
                         ["no data", "--eval_start 2030-01-01", "2024-01-08"]),
}


@pytest.mark.parametrize("case", list(FAILURES))
def test_failure_is_one_line(case, azurite, uploaded, tmp_path):
    connection, data, extra, words = FAILURES[case]
    cache = tmp_path / "cache"
    env = env_for(connection(azurite.connection_string), cache)
    proc = run_cli(*cli_train(data, tmp_path / "out", *extra), env=env)
    one_error_line(proc, *words)
    no_partial_files(cache)
    assert not (tmp_path / "out" / "trained_model.pth").exists()


def test_corrupt_blob_is_named_by_its_key_and_a_fixed_blob_replaces_the_cached_copy(az_env, market, tmp_path):
    container, _ = connect("corrupt")
    container.create_container()
    for path in (market / "stocks_intraday").rglob("*.parquet"):
        key = path.relative_to(market).as_posix()
        container.upload_blob(key, b"not a parquet file" if "FOLW_2024-01-03" in key else path.read_bytes())
    key = "stocks_intraday/FOLW/2024/01/FOLW_2024-01-03.parquet"
    proc = run_cli(*cli_train("azure://corrupt", tmp_path / "bad"), env=az_env)
    one_error_line(proc, f"azure://corrupt/{key}", "cannot read parquet file")
    no_partial_files(Path(az_env["PARALLEL_DQN_CACHE"]))
    container.upload_blob(key, (market / key).read_bytes(), overwrite=True)  # fixed: a new ETag
    proc = run_cli(*cli_train("azure://corrupt", tmp_path / "good"), env=az_env)
    assert proc.returncode == 0, proc.stderr
    assert _counts((tmp_path / "good" / "run.log").read_text())["FOLW"] == (DAYS, 1, DAYS - 1)  # only the fixed blob


def test_emulator_gone_before_the_run_is_one_line_after_retries(spare_azurite, market, tmp_path):
    env = env_for(spare_azurite.connection_string, tmp_path / "cache")
    spare_azurite.stop()
    started = time.monotonic()
    proc = run_cli(*cli_train("azure://mkt", tmp_path / "out"), env=env)
    one_error_line(proc, "cannot reach storage account devstoreaccount1", f"after {RETRIES} retries")
    assert time.monotonic() - started > 3.5  # the backoffs (0.2 + 1.5 + 2.4 s) were waited


def test_emulator_gone_between_listing_and_download(spare_azurite, market, tmp_path, monkeypatch):
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", spare_azurite.connection_string)
    monkeypatch.setenv("PARALLEL_DQN_CACHE", str(tmp_path / "cache"))
    assert run_cli("data", "upload", "--data", market, "--to", "azure://gone", env=dict(os.environ)).returncode == 0
    store = open_store("azure://gone")
    days = store.list_days("LEAD", dt.date(2024, 1, 2), dt.date(2024, 1, 8))
    assert isinstance(store, AzureBlobStore) and len(days) == DAYS  # listed (with ETags), nothing downloaded yet
    spare_azurite.stop()
    with pytest.raises(UserError) as err:
        store.prefetch("LEAD", days)  # what the loader does next
    line = err.value.line()
    assert "\n" not in line and "cannot reach" in line and "azure://gone/stocks_intraday/LEAD/" in line
    assert DEV_KEY not in line
    assert store.counts.files == 0
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]  # no partial (or any) file


def test_a_failed_write_leaves_the_old_file_and_no_partial_one(tmp_path):
    target = tmp_path / "cache" / "x.parquet"
    target.parent.mkdir()
    target.write_bytes(b"old")
    with pytest.raises(ConnectionError), replacing(target) as part:
        part.write_bytes(b"half of the new")
        raise ConnectionError("connection dropped mid-download")
    assert target.read_bytes() == b"old" and [p.name for p in target.parent.iterdir()] == ["x.parquet"]
