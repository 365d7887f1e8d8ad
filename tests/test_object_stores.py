"""Data from S3 and GCS, and ``data sync`` between stores, against real emulators (moto's S3 server,
gcp-storage-emulator, Azurite: tests/conftest.py).

* training from ``s3://`` and from ``gs://`` equals training from the same local folder, and a second run downloads
  nothing (the cache counts in the run's log);
* ``data sync`` local -> s3 -> gs -> local reproduces the files, a second sync copies nothing, a changed file is the
  only one copied again, ``--symbols``/``--start``/``--end`` select;
* failures are one line, exit 2, nothing partial: wrong credentials (a moto server that checks keys; Azurite),
  missing bucket, the store gone between listing and download (after retries), a corrupt object and a wrong schema.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import io
import json
import os
import re
import shutil
import time
from pathlib import Path

import pandas as pd
import pytest

from parallel_dqn.cloud import RETRIES, filesystem
from parallel_dqn.data.object_store import FsspecStore
from parallel_dqn.data.store import open_store
from parallel_dqn.errors import UserError
from parallel_dqn.run.single import train
from tests.conftest import DEV_KEY, LoopbackEmulator
from tests.helpers import STOCKS, assert_same_run, hash_tree, make_market, run_cli, tiny_config, train_args, user_error

DAYS = 5  # 2024-01-02 .. 2024-01-08, the dates of tests.helpers.tiny_config
SYNCED = re.compile(r"copied (\d+), skipped (\d+) \(same size and MD5\), (\d+) bytes")


def counts(log_text: str) -> dict[str, tuple[int, int, int]]:
    """symbol -> (files, downloaded, from cache) from the store's lines in a run's log file."""
    return {m[2]: (int(m[3]), int(m[4]), int(m[5])) for m in re.finditer(
        r"(?:s3|gs)://(\S+): (\w+): (\d+) files, (\d+) downloaded \(\d+ bytes\), (\d+) from cache", log_text)}


def synced(proc) -> tuple[int, int]:
    """(copied, skipped) from a ``data sync`` summary line."""
    assert proc.returncode == 0, proc.stderr
    found = SYNCED.search(proc.stdout)
    assert found, proc.stdout
    return int(found[1]), int(found[2])


def cli_train(data: str, out: Path, *extra: str) -> list[str]:
    """tiny_config's run as a single-process CLI training (one worker per stock)."""
    args = train_args(data, out, *extra)[2:]
    args[args.index("parallel")] = "single"
    return [*args, "--workers", str(len(STOCKS))]


def no_partial_files(cache: Path) -> None:
    assert not [p for p in cache.rglob("*") if p.name.endswith(".part")]


@pytest.fixture(scope="module")
def market(tmp_path_factory) -> Path:
    return make_market(tmp_path_factory.mktemp("os_market"), days=DAYS)


@pytest.fixture(scope="module")
def stores(s3_emulator, gcs_emulator, market, tmp_path_factory) -> dict[str, str]:
    """Both emulators' variables with a cache of this module; ``market`` synced to s3://mkt/data and gs://mkt/data."""
    env = {**os.environ, **s3_emulator.env, **gcs_emulator.env,
           "PARALLEL_DQN_CACHE": str(tmp_path_factory.mktemp("os_cache"))}
    for url in ("s3://mkt/data", "gs://mkt/data"):
        assert synced(run_cli("data", "sync", market, url, env=env)) == (len(STOCKS) * DAYS, 0)
    return env


@pytest.fixture
def store_env(stores, monkeypatch, tmp_path) -> dict[str, str]:
    """The emulators' variables and a fresh download cache, in this process and for subprocesses."""
    env = {**stores, "PARALLEL_DQN_CACHE": str(tmp_path / "cache")}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


# ---- training from object stores ------------------------------------------------------------------------------------
@pytest.mark.parametrize("url", ["s3://mkt/data", "gs://mkt/data"])
def test_train_from_a_store_equals_local_and_a_second_run_downloads_nothing(url, store_env, market, tmp_path):
    local = train(tiny_config(market, tmp_path / "local", **{"run.seed": 5, "dqn.episodes": 1}))
    remote = train(tiny_config(url, tmp_path / "remote", **{"run.seed": 5, "dqn.episodes": 1}))
    assert remote["eval"] == local["eval"] and remote["baselines"] == local["baselines"]
    assert_same_run(tmp_path / "local", tmp_path / "remote")  # weights, curve, portfolio, metrics
    assert counts((tmp_path / "remote" / "run.log").read_text()) == {s: (DAYS, DAYS, 0) for s in STOCKS}
    cache = Path(store_env["PARALLEL_DQN_CACHE"])
    assert len(list(cache.rglob("*.parquet"))) == len(STOCKS) * DAYS and not list(cache.rglob("*.part"))
    # again, without the cross-section cache (which would skip the files altogether): every file from the cache
    proc = run_cli(*cli_train(url, tmp_path / "again", "--episodes", "1", "--seed", "5", "--set", "data.cache=off"),
                   env=store_env)
    assert proc.returncode == 0, proc.stderr
    assert counts((tmp_path / "again" / "run.log").read_text()) == {s: (DAYS, 0, DAYS) for s in STOCKS}
    assert json.loads((tmp_path / "again" / "metrics.json").read_text())["eval"] == local["eval"]


# ---- data sync ------------------------------------------------------------------------------------------------------
def test_sync_round_trip_local_s3_gs_local_and_a_second_sync_copies_nothing(store_env, market, tmp_path):
    n = len(STOCKS) * DAYS
    hops = [(market, "s3://trip/a/b"), ("s3://trip/a/b", "gs://trip/c"), ("gs://trip/c", tmp_path / "back")]
    for src, dst in hops:
        assert synced(run_cli("data", "sync", src, dst, env=store_env)) == (n, 0), (src, dst)
    assert hash_tree(tmp_path / "back" / "stocks_intraday") == hash_tree(market / "stocks_intraday")
    for src, dst in hops:
        assert synced(run_cli("data", "sync", src, dst, env=store_env)) == (0, n), (src, dst)
    # one changed file (same size: only the MD5 tells) is the one file copied again, S3 -> local too
    victim = "stocks_intraday/MOMO/2024/01/MOMO_2024-01-04.parquet"
    changed = tmp_path / "changed"
    shutil.copytree(market, changed)
    data = bytearray((changed / victim).read_bytes())
    data[-20] ^= 0xFF
    (changed / victim).write_bytes(bytes(data))
    assert synced(run_cli("data", "sync", changed, "s3://trip/a/b", env=store_env)) == (1, n - 1)
    assert synced(run_cli("data", "sync", "s3://trip/a/b", tmp_path / "back", env=store_env)) == (1, n - 1)
    assert hash_tree(tmp_path / "back" / "stocks_intraday") == hash_tree(changed / "stocks_intraday")


def test_sync_selects_symbols_and_dates_and_upload_to_s3_is_a_sync(store_env, market, tmp_path):
    proc = run_cli("data", "sync", "gs://mkt/data", tmp_path / "part", "--symbols", "LEAD", "FOLW",
                   "--start", "2024-01-03", "--end", "2024-01-04", env=store_env)
    assert synced(proc) == (4, 0)
    files = sorted(p.name for p in (tmp_path / "part").rglob("*.parquet"))
    assert files == ["FOLW_2024-01-03.parquet", "FOLW_2024-01-04.parquet", "LEAD_2024-01-03.parquet",
                     "LEAD_2024-01-04.parquet"]
    proc = run_cli("data", "upload", "--data", market, "--to", "s3://mkt/data", env=store_env)  # synced already
    assert synced(proc) == (0, len(STOCKS) * DAYS)


def test_sync_to_and_from_azure(azurite, store_env, market, tmp_path):
    env = {**store_env, "AZURE_STORAGE_CONNECTION_STRING": azurite.connection_string}
    n = len(STOCKS) * DAYS
    assert synced(run_cli("data", "sync", "s3://mkt/data", "azure://synced/x", env=env)) == (n, 0)
    assert synced(run_cli("data", "sync", market, "azure://synced/x", env=env)) == (0, n)  # Content-MD5 matches
    assert synced(run_cli("data", "sync", "azure://synced/x", tmp_path / "back", env=env)) == (n, 0)
    assert hash_tree(tmp_path / "back" / "stocks_intraday") == hash_tree(market / "stocks_intraday")
    # and the Azure SDK store reads what went through adlfs
    proc = run_cli("data", "ls", "azure://synced/x", env=env)
    assert proc.returncode == 0 and f"{len(STOCKS)} stocks in azure://synced/x" in proc.stdout, proc.stderr


# ---- failures: one line, exit 2, no traceback, nothing partial -----------------------------------------------------
@pytest.fixture
def checking_s3(monkeypatch, market) -> dict[str, str]:
    """A moto server that checks keys (INITIAL_NO_AUTH_ACTION_COUNT: the first 3 requests go unchecked: they
    create an IAM user, its key and its S3 policy), ``market`` synced to s3://keys/data with that key."""
    import boto3

    monkeypatch.setenv("INITIAL_NO_AUTH_ACTION_COUNT", "3")
    emulator = LoopbackEmulator("s3")
    monkeypatch.delenv("INITIAL_NO_AUTH_ACTION_COUNT")
    try:
        iam = boto3.client("iam", endpoint_url=emulator.endpoint, region_name="us-east-1",
                           aws_access_key_id="anyone", aws_secret_access_key="anything")
        iam.create_user(UserName="trainer")
        key = iam.create_access_key(UserName="trainer")["AccessKey"]
        policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
        iam.put_user_policy(UserName="trainer", PolicyName="s3", PolicyDocument=json.dumps(policy))
        env = {**os.environ, **emulator.env, "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
               "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}
        assert synced(run_cli("data", "sync", market, "s3://keys/data", env=env)) == (len(STOCKS) * DAYS, 0)
        yield env
    finally:
        emulator.stop()


@pytest.mark.cloud  # its emulator is started by the fixture itself, not by a marked one
def test_wrong_s3_credentials_are_one_line(checking_s3, tmp_path):
    secret = checking_s3["AWS_SECRET_ACCESS_KEY"]
    for wrong in ({"AWS_SECRET_ACCESS_KEY": "x" * 40}, {"AWS_ACCESS_KEY_ID": "AKIAIOSFODNN7EXAMPLE"}):
        env = {**checking_s3, **wrong, "PARALLEL_DQN_CACHE": str(tmp_path / "cache")}
        proc = run_cli(*cli_train("s3://keys/data", tmp_path / "out"), env=env)
        user_error(proc, "access to s3://keys/data was refused", "AWS_ACCESS_KEY_ID", ".cloudkeys/api_keys.env")
        assert secret not in proc.stderr + proc.stdout and not (tmp_path / "out" / "trained_model.pth").exists()
        assert not (tmp_path / "cache").exists() or not [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    proc = run_cli("data", "sync", "s3://keys/data", tmp_path / "copy", env=env)  # the last wrong key
    user_error(proc, "access to s3://keys/data was refused")
    assert not (tmp_path / "copy").exists()
    # the right key trains from it (the refusal above was the key's, not the server's), and no output holds it
    env = {**checking_s3, "PARALLEL_DQN_CACHE": str(tmp_path / "cache")}
    proc = run_cli(*cli_train("s3://keys/data", tmp_path / "good", "--episodes", "1"), env=env)
    assert proc.returncode == 0, proc.stderr
    files = [p for p in [*(tmp_path / "good").rglob("*"), *(tmp_path / "cache").rglob("*")] if p.is_file()]
    assert {"metrics.json", "config.toml", "run.json", "trained_model.pth", "run.log"} <= {p.name for p in files}
    assert not [p for p in files if secret.encode() in p.read_bytes()] and secret not in proc.stdout + proc.stderr


def test_wrong_azure_key_through_adlfs_is_one_line(azurite, tmp_path, market):
    env = {**os.environ, "AZURE_STORAGE_CONNECTION_STRING": azurite.connection_string.replace(DEV_KEY, "A" * 86 + "==")}
    proc = run_cli("data", "sync", market, "azure://nokey", env=env)
    line = user_error(proc, "access to azure://nokey was refused", "AZURE_STORAGE_CONNECTION_STRING")
    assert DEV_KEY not in line


@pytest.mark.parametrize("url", ["s3://nosuch/data", "gs://nosuch/data"])
def test_missing_bucket_is_one_line(url, store_env, tmp_path):
    proc = run_cli(*cli_train(url, tmp_path / "out"), env=store_env)
    user_error(proc, f"opening {url}", "does not exist")
    assert not (tmp_path / "out" / "trained_model.pth").exists()
    proc = run_cli("data", "sync", url, tmp_path / "copy", env=store_env)
    user_error(proc, url, "does not exist")
    assert not (tmp_path / "copy").exists()


def test_store_gone_between_listing_and_download_is_one_line_after_retries(spare_s3_emulator, market, monkeypatch,
                                                                         tmp_path):
    for name, value in spare_s3_emulator.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("PARALLEL_DQN_CACHE", str(tmp_path / "cache"))
    assert synced(run_cli("data", "sync", market, "s3://gone/data", env=dict(os.environ)))[0] == len(STOCKS) * DAYS
    store = open_store("s3://gone/data")
    days = store.list_days("LEAD", dt.date(2024, 1, 2), dt.date(2024, 1, 8))
    assert isinstance(store, FsspecStore) and len(days) == DAYS  # listed (with ETags), nothing downloaded yet
    spare_s3_emulator.stop()
    started = time.monotonic()
    with pytest.raises(UserError) as err:
        store.prefetch("LEAD", days)  # what the loader does next
    line = err.value.line()
    assert "\n" not in line and f"could not be reached after {RETRIES} tries" in line, line
    assert "downloading s3://gone/data/stocks_intraday/LEAD/2024/01/LEAD_2024-01-0" in line, line
    assert time.monotonic() - started > 0.5  # botocore's backoffs between the tries were waited
    assert store.counts.files == 0
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]  # no partial (or any) file


def _upload(url: str, market: Path, replace: dict[str, bytes]) -> None:
    """``market``'s files to ``url`` (this process's variables), some replaced by other bytes."""
    fs, root = filesystem(url), url.split("://", 1)[1]
    for path in (market / "stocks_intraday").rglob("*.parquet"):
        key = path.relative_to(market).as_posix()
        fs.pipe_file(f"{root}/{key}", replace.get(path.name, path.read_bytes()))


def _wrong_schema() -> bytes:
    out = io.BytesIO()
    pd.DataFrame({"when": [1, 2], "price": [1.0, 2.0]}).to_parquet(out)
    return out.getvalue()


@pytest.mark.parametrize(("url", "content", "words"), [
    ("s3://corrupt/data", b"not a parquet file", ["cannot read parquet file"]),
    ("gs://corrupt/data", _wrong_schema(), ["timestamp"]),
], ids=["s3-not-parquet", "gs-wrong-schema"])
def test_corrupt_object_is_named_by_its_url_and_a_fixed_one_replaces_the_cached_copy(url, content, words, store_env, market,
                                                                                    tmp_path):
    fs = filesystem(url)
    fs.mkdir(url.split("://", 1)[1].split("/")[0])
    _upload(url, market, {"FOLW_2024-01-03.parquet": content})
    proc = run_cli(*cli_train(url, tmp_path / "bad"), env=store_env)
    user_error(proc, f"{url}/stocks_intraday/FOLW/2024/01/FOLW_2024-01-03.parquet", *words)
    no_partial_files(Path(store_env["PARALLEL_DQN_CACHE"]))
    assert not (tmp_path / "bad" / "trained_model.pth").exists()
    _upload(url, market, {})  # fixed: a new ETag, so the cached copy is replaced and only it is downloaded
    proc = run_cli(*cli_train(url, tmp_path / "good"), env=store_env)
    assert proc.returncode == 0, proc.stderr
    assert counts((tmp_path / "good" / "run.log").read_text())["FOLW"] == (DAYS, 1, DAYS - 1)


# ---- what sync compares, and how failures are classified (no emulator) ---------------------------------------------
def test_stored_md5_is_each_stores_own_digest_and_none_when_it_keeps_none():
    from parallel_dqn.data.sync import stored_md5

    digest = hashlib.md5(b"bars", usedforsecurity=False)
    assert stored_md5({"ETag": f'"{digest.hexdigest()}"'}) == digest.hexdigest()  # S3, single-part
    assert stored_md5({"ETag": '"0123456789abcdef0123456789abcdef-2"'}) is None  # S3 multipart: not an MD5
    assert stored_md5({"md5Hash": base64.b64encode(digest.digest()).decode(), "etag": "CJ2"}) == digest.hexdigest()
    assert stored_md5({"content_settings": {"content_md5": bytearray(digest.digest())}, "etag": '"0x8D"'}) \
        == digest.hexdigest()  # Azure
    assert stored_md5({"etag": '"0x8D"'}) is None  # Azure without Content-MD5


def test_cloud_errors_classify_each_clients_failures():
    from botocore.exceptions import EndpointConnectionError, NoCredentialsError

    from parallel_dqn.cloud import cloud_errors

    cases = [(FileNotFoundError("b/k"), "does not exist"), (PermissionError("Forbidden"), "was refused"),
             (NoCredentialsError(), "was refused"), (EndpointConnectionError(endpoint_url="http://x"), "after 3 tries"),
             (OSError(22, "The specified bucket is not valid."), "the store refused the request"),
             (ConnectionResetError(), "could not be reached")]
    for err, words in cases:
        with pytest.raises(UserError) as caught, cloud_errors("s3://bkt/p", "listing"):
            raise err
        assert caught.value.line().startswith("listing: ") and words in caught.value.line(), (err, caught.value.line())
    with pytest.raises(KeyError), cloud_errors("s3://bkt/p", "listing"):  # not a store's failure: left as it is
        raise KeyError("a bug")
