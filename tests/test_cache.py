"""The cross-section cache (parallel_dqn.data.cache, data.cache): a second run of the same data maps the entry
the first one wrote, bit for bit the same; anything the cross-section depends on changes the key; an entry is
written atomically, a damaged one is rebuilt, two writers at once do not corrupt it; one copy per node under MPI."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from parallel_dqn.comm.inprocess import InProcessTransport
from parallel_dqn.data.cache import (
    MANIFEST,
    MAX_IDLE_DAYS,
    CrossSectionCache,
    cache_folder,
    code_digest,
    open_cache,
    source_digest,
)
from parallel_dqn.data.crosssection import CrossSection
from parallel_dqn.data.features import FeatureStats
from parallel_dqn.data.store import open_store
from parallel_dqn.errors import UserError
from parallel_dqn.run.single import train
from parallel_dqn.training.driver import LocalShard, build_cross_section
from parallel_dqn.training.plan import RunPlan, plan_training
from tests.helpers import MPIEXEC, ROOT, STOCKS, assert_same_run, make_market, tiny_config, train_args, weights


@pytest.fixture(scope="module")
def market(tmp_path_factory) -> Path:
    return make_market(tmp_path_factory.mktemp("cache_market") / "market")


def build(market: Path, cache: Path | str, plan_change=None, **settings) -> tuple[CrossSection, FeatureStats]:
    """The run's cross-section as a single-process run gets it (tiny_config with ``settings``)."""
    cfg = tiny_config(market, market.parent / "unused", **{"data.cache": str(cache), **settings})
    store = open_store(str(market))
    plan = plan_training(cfg, store)
    if plan_change is not None:
        plan = plan_change(plan)
    shards = [LocalShard(i, s) for i, s in enumerate(plan.shards)]
    return build_cross_section(shards, plan, store, InProcessTransport(endpoint=None), cfg)  # type: ignore[arg-type]


def entries(cache: Path) -> list[Path]:
    return sorted(p for p in cache.iterdir() if p.is_dir() and not p.name.startswith("."))


def assert_same(a: tuple[CrossSection, FeatureStats], b: tuple[CrossSection, FeatureStats]) -> None:
    """Every field equal, with the same dtype and shape (bit for bit)."""
    for f in dataclasses.fields(CrossSection):
        x, y = getattr(a[0], f.name), getattr(b[0], f.name)
        if isinstance(x, np.ndarray):
            assert x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes(), f.name
        else:
            assert x == y, f.name
    assert a[1].mean.tobytes() == b[1].mean.tobytes() and a[1].std.tobytes() == b[1].std.tobytes()
    assert a[1].session_seconds == b[1].session_seconds


def mapped_from(array: np.ndarray) -> str | None:
    """The file ``array`` is memory-mapped from, if it is."""
    base = array
    while base is not None and not isinstance(base, np.memmap):
        base = base.base
    return None if base is None else str(base.filename)


# ---- the cache in one process ----------------------------------------------------------------------
def test_second_build_maps_the_entry_of_the_first_bit_for_bit(market, tmp_path):
    off = build(market, "off")
    assert not any(mapped_from(getattr(off[0], f.name)) for f in dataclasses.fields(CrossSection)
                   if isinstance(getattr(off[0], f.name), np.ndarray))
    cold = build(market, tmp_path)
    (entry,) = entries(tmp_path)
    warm = build(market, tmp_path)
    assert entries(tmp_path) == [entry]
    assert_same(off, cold)
    assert_same(off, warm)
    for xs, _ in (cold, warm):  # the cold run also goes on with the entry's pages, not its own arrays
        assert mapped_from(xs.features) == str(entry / "features.npy")
        assert not xs.features.flags.writeable and not xs.log_returns.flags.writeable
    manifest = json.loads((entry / MANIFEST).read_text())
    assert manifest["arrays"]["features"]["dtype"] == "<f4" and manifest["about"]["stocks"] == len(STOCKS)


def rewrite_close(path: Path) -> None:
    df = pd.read_parquet(path)
    df["close"] = df["close"] * 1.001
    df["high"] = np.maximum(df["high"], df["close"])
    df.to_parquet(path, index=False)


def later_start(plan: RunPlan) -> RunPlan:
    return dataclasses.replace(plan, load_start=dt.date(2024, 1, 3), train_start=dt.date(2024, 1, 3))


def given_stats(plan: RunPlan) -> RunPlan:
    S, n = len(plan.symbols), 8
    return dataclasses.replace(plan, stats=FeatureStats(np.zeros((S, n)), np.ones((S, n)), 23400.0))


@pytest.mark.parametrize(
    "settings, plan_change, touch",
    [
        ({"data.stocks": STOCKS[:2]}, None, None),
        ({"data.stocks": STOCKS[::-1]}, None, None),
        ({"dist.workers": 2}, None, None),
        ({"data.end_date": "2024-01-04"}, None, None),  # the statistics' training days
        ({"data.eval_end": "2024-01-09", "data.eval_start": "2024-01-09"}, None, None),  # the days loaded
        ({}, later_start, None),
        ({}, given_stats, None),
        ({"market.graph_window": 30}, None, None),
        ({"model.neighbors": 2}, None, None),
        ({}, None, "change a file"),
        ({}, None, "add a day"),
    ],
    ids=["fewer-stocks", "stock-order", "shards", "train-days", "load-days", "load-start", "given-stats",
         "graph-window", "neighbors", "file-changed", "file-added"],
)
def test_anything_the_cross_section_depends_on_misses_the_cache(tmp_path, settings, plan_change, touch):
    market = make_market(tmp_path / "market", days=6)
    cache = tmp_path / "cache"
    store = open_store(str(market))
    added = store.fetch("MOMO", dt.date(2024, 1, 8))
    kept = added.read_bytes()
    if touch == "add a day":
        added.unlink()
    first = build(market, cache)
    if touch == "change a file":
        rewrite_close(store.fetch("FOLW", dt.date(2024, 1, 3)))
    elif touch == "add a day":  # a day inside the loaded range that was not there before
        added.write_bytes(kept)
    before = len(entries(cache))
    second = build(market, cache, plan_change, **settings)
    assert len(entries(cache)) == before + 1, "a change that shapes the cross-section was served from the cache"
    if not settings and plan_change is None:
        assert not np.array_equal(first[0].log_returns, second[0].log_returns)


def test_settings_the_cross_section_does_not_depend_on_hit_the_cache(market, tmp_path):
    build(market, tmp_path)
    build(market, tmp_path, **{"dqn.lr": 0.01, "market.window": 4, "run.seed": 9, "market.cost_bps": 3.0,
                               "dqn.episodes": 1})
    assert len(entries(tmp_path)) == 1


@pytest.mark.parametrize("damage", ["truncate", "manifest", "missing", "garbage"])
def test_a_damaged_entry_is_rebuilt_not_trusted(market, tmp_path, damage):
    good = build(market, "off")
    build(market, tmp_path)
    (entry,) = entries(tmp_path)
    features = entry / "features.npy"
    if damage == "truncate":
        with open(features, "r+b") as f:
            f.truncate(features.stat().st_size - 100)
    elif damage == "manifest":
        (entry / MANIFEST).write_text('{"format": 1, "key"')
    elif damage == "missing":
        (entry / "tradeable.npy").unlink()
    else:
        features.write_bytes(b"\x93NUMPY garbage")
    again = build(market, tmp_path)
    assert entries(tmp_path) == [entry]
    assert_same(good, again)
    assert mapped_from(again[0].features) == str(features)
    assert features.stat().st_size == 128 + good[0].features.nbytes


@pytest.mark.slow  # a second Python process writing 320 MB
def test_a_killed_writer_leaves_no_entry_and_its_leftovers_go(market, tmp_path):
    cache = tmp_path / "cache"
    script = f"""
import dataclasses, sys
import numpy as np
sys.path.insert(0, {str(ROOT)!r})
from tests.test_cache import build
from parallel_dqn.data.cache import CrossSectionCache
xs, stats = build(__import__("pathlib").Path({str(market)!r}), "off")
big = dataclasses.replace(xs, features=np.ones((20_000, 250, 16), np.float32))  # 320 MB: slow to write
print("writing", flush=True)
CrossSectionCache(__import__("pathlib").Path({str(cache)!r})).put("k" * 40, big, stats)
"""
    writer = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert writer.stdout.readline().strip() == "writing"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any(p.name.startswith(".tmp-") for p in cache.glob(".*")):
        time.sleep(0.001)
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    writer.stdout.close()
    store = CrossSectionCache(cache)
    if not (cache / ("k" * 40)).exists():  # killed mid-write (as it nearly always is): nothing under the key
        assert [p.name[:5] for p in cache.glob(".tmp-*")] == [".tmp-"]
    assert store.holds("k" * 40) == (cache / ("k" * 40)).exists()
    store.put("j" * 40, *build(market, "off"))  # the next writer clears the dead one's temporary folder
    assert not list(cache.glob(".tmp-*")) and store.holds("j" * 40)


def test_two_writers_at_once_keep_one_whole_entry(market, tmp_path):
    xs, stats = build(market, "off")
    xs = dataclasses.replace(xs, features=np.ones((2_000, 250, 16), np.float32))
    caches = [CrossSectionCache(tmp_path), CrossSectionCache(tmp_path)]
    start, results = threading.Barrier(2), []

    def put(cache: CrossSectionCache) -> None:
        start.wait()
        results.append(cache.put("k" * 40, xs, stats))

    threads = [threading.Thread(target=put, args=(c,)) for c in caches]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False, True]  # the second one found the first one's entry and dropped its copy
    assert caches[0].holds("k" * 40) and not list(tmp_path.glob(".tmp-*"))
    assert caches[0].get("k" * 40)[0].features.tobytes() == xs.features.tobytes()


def test_entries_idle_for_a_month_go_when_a_new_one_is_written(market, tmp_path):
    xs, stats = build(market, "off")
    cache = CrossSectionCache(tmp_path)
    cache.put("a" * 40, xs, stats)
    old = time.time() - (MAX_IDLE_DAYS + 1) * 86400
    os.utime(tmp_path / ("a" * 40) / MANIFEST, (old, old))
    cache.put("b" * 40, xs, stats)
    assert [p.name for p in entries(tmp_path)] == ["b" * 40]
    cache.holds("b" * 40)


# ---- the key's parts ----------------------------------------------------------------------------------
def test_source_digest_follows_each_file(tmp_path, monkeypatch):
    market = make_market(tmp_path / "m")
    store = open_store(str(market))
    day = dt.date(2024, 1, 3)
    before = source_digest(store, STOCKS, day, day)
    assert source_digest(store, STOCKS, day, day) == before
    assert source_digest(store, STOCKS[:2], day, day) != before
    monkeypatch.chdir(tmp_path)  # the same files, however their folder is spelled
    assert source_digest(open_store("m"), STOCKS, day, day) == before
    rewrite_close(store.fetch("LEAD", day))
    assert source_digest(store, STOCKS, day, day) != before


def test_code_digest_follows_the_source(tmp_path, monkeypatch):
    (tmp_path / "cache_probe_mod.py").write_text("X = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    before = code_digest(["cache_probe_mod"])
    (tmp_path / "cache_probe_mod.py").write_text("X = 2\n")
    assert code_digest(["cache_probe_mod"]) != before


# ---- where -------------------------------------------------------------------------------------------
def test_where_the_cache_is():
    home = Path("~/.cache").expanduser() / "parallel-dqn" / "crosssections"
    assert cache_folder("off", {}) is None
    assert cache_folder("auto", {}) == home
    assert cache_folder("auto", {"TMPDIR": "/t"}) == Path("/t/parallel-dqn/crosssections")
    assert cache_folder("auto", {"TMPDIR": "/t", "SLURM_TMPDIR": "/s"}) == Path("/s/parallel-dqn/crosssections")
    assert cache_folder("auto", {"PARALLEL_DQN_CACHE": "/p", "SLURM_TMPDIR": "/s"}) == Path("/p/crosssections")
    assert cache_folder("/x/y", {"PARALLEL_DQN_CACHE": "/p"}) == Path("/x/y")


def test_a_cache_folder_that_cannot_be_written(tmp_path, monkeypatch, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(UserError, match="data.cache"):
        open_cache(str(blocker / "sub"))
    monkeypatch.setenv("PARALLEL_DQN_CACHE", str(blocker))
    assert open_cache("auto") is None  # auto: a warning, and the run builds as without a cache
    assert "building without a cache" in caplog.text
    assert open_cache("off") is None


# ---- whole runs -----------------------------------------------------------------------------------------
def test_a_run_from_the_cache_equals_a_cold_run_and_one_without(market, tmp_path):
    cache = tmp_path / "cache"
    cold = tiny_config(market, tmp_path / "cold", **{"data.cache": str(cache)})
    train(cold)
    assert len(entries(cache)) == 1
    warm = tiny_config(market, tmp_path / "warm", **{"data.cache": str(cache)})
    train(warm)
    assert "cross-section from the cache" in (tmp_path / "warm" / "run.log").read_text()
    train(tiny_config(market, tmp_path / "off", **{"data.cache": "off"}))
    assert_same_run(tmp_path / "cold", tmp_path / "warm")
    assert_same_run(tmp_path / "cold", tmp_path / "off")


NODE_SCRIPT = """
import json, sys
from mpi4py import MPI
sys.excepthook = lambda *exc: (sys.__excepthook__(*exc), MPI.COMM_WORLD.Abort(1))  # a failure ends every rank
from parallel_dqn.comm.mpi import World
from parallel_dqn.config import Config
from parallel_dqn.data.store import open_store
from parallel_dqn.training.driver import LocalShard, build_cross_section
from parallel_dqn.training.plan import plan_training
sys.path.insert(0, sys.argv[3])
from tests.test_cache import mapped_from
from parallel_dqn.data.cache import CrossSectionCache
from parallel_dqn.training import driver
world = World(MPI.COMM_WORLD)
loaded = []  # the stocks whose files this rank read (the real loader, counted)
real_load = driver.load_stock_bars
driver.load_stock_bars = lambda store, symbols, *days: (loaded.extend(symbols), real_load(store, symbols, *days))[1]
if sys.argv[4] == "full_disk":  # the node's entry cannot be written
    def put(*args, **kwargs):
        raise OSError(28, "No space left on device")
    CrossSectionCache.put = put
result = None
if world.rank > 0:
    cfg = Config.from_dict(json.loads(sys.argv[2]))
    cfg.set("dist.workers", world.size - 1)
    store = open_store(sys.argv[1])
    plan = plan_training(cfg, store)
    xs, _ = build_cross_section([LocalShard(world.rank - 1, plan.shards[world.rank - 1])], plan, store,
                                world.worker_transport(timeout=60), cfg)
    result = {"features": mapped_from(xs.features), "graph_index": mapped_from(xs.graph_index),
              "writeable": bool(xs.features.flags.writeable), "sum": float(xs.features.sum()),
              "loaded": len(loaded), "stocks": len(plan.symbols)}
results = world.comm.gather(result, root=0)
if world.rank == 0:
    print(json.dumps(results[1:]))
world.close()
"""


def node_build(market: Path, settings: str, mode: str = "") -> list[dict]:
    """What each worker of ``mpiexec -n 4`` (rank 0 + 3 workers, one node) got from build_cross_section."""
    proc = subprocess.run([MPIEXEC, "-n", "4", sys.executable, "-c", NODE_SCRIPT, str(market), settings, str(ROOT),
                           mode or "-"], capture_output=True, text=True, timeout=180, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_when_the_node_entry_cannot_be_written_each_worker_builds_its_own(market, tmp_path):
    """A full disk on the node: its first worker's build stays its own, the others build theirs alone (nobody
    waits for an entry that will not come), and all of them hold the same cross-section, unmapped."""
    cfg = tiny_config(market, tmp_path / "unused", **{"data.cache": str(tmp_path / "cache")})
    held = node_build(market, json.dumps(cfg.to_dict()), "full_disk")
    assert [r["loaded"] for r in held] == [held[0]["stocks"]] * 3
    assert all(r["features"] is None for r in held) and len({r["sum"] for r in held}) == 1
    assert entries(tmp_path / "cache") == []


def test_the_workers_of_a_node_map_one_entry(market, tmp_path):
    """Under mpiexec (one node), every worker maps the same file, read-only, cold and warm; the node's first
    worker built it alone (the others read no file) and wrote it once. Then a parallel run from that entry
    equals a single-process run without a cache (as closely as test_mpi.py's runs do)."""
    cache = tmp_path / "cache"
    cfg = tiny_config(market, tmp_path / "unused", **{"data.cache": str(cache)})
    settings = json.dumps(cfg.to_dict())

    for cold in (True, False):
        held = node_build(market, settings)
        (entry,) = entries(cache)
        assert {r["features"] for r in held} == {str(entry / "features.npy")}
        assert {r["graph_index"] for r in held} == {str(entry / "graph_index.npy")}
        assert not any(r["writeable"] for r in held) and len({r["sum"] for r in held}) == 1
        # cold: the node's first worker read every stock's files alone, the others none; warm: nobody read any
        assert [r["loaded"] for r in held] == ([held[0]["stocks"], 0, 0] if cold else [0, 0, 0])
    out = tmp_path / "parallel"
    proc = subprocess.run([MPIEXEC, "-n", "4", sys.executable, *train_args(market, out, "--sync", "--set",
                                                                            f"data.cache={cache}")],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    for rank in (1, 2, 3):
        assert "cross-section from the cache" in (out / "logs" / f"rank{rank}.log").read_text()
    train(tiny_config(market, tmp_path / "single", **{"data.cache": "off", "dist.sync": True, "dist.workers": 3}))
    wp, ws = weights(out), weights(tmp_path / "single")  # as test_mpi.py: equal to rounding, not bit for bit
    assert all(torch.allclose(wp[k], ws[k], rtol=0, atol=1e-6) for k in ws)
