"""ListedOnce: a run's start lists each stock's days once and answers every later range from that listing."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from parallel_dqn.config import Config
from parallel_dqn.data.layout import day_key
from parallel_dqn.data.snapshot import ListedOnce
from parallel_dqn.data.store import LocalStore
from parallel_dqn.run import lifecycle
from tests.helpers import make_market


class CountingStore(LocalStore):
    """A local store that counts how often each symbol's days are listed."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.listed: dict[str, int] = {}

    def list_days(self, symbol, start=None, end=None):
        self.listed[symbol] = self.listed.get(symbol, 0) + 1
        return super().list_days(symbol, start, end)


def _store(tmp_path: Path) -> LocalStore:
    for day in (dt.date(2023, 12, 29), dt.date(2024, 1, 2), dt.date(2024, 1, 3), dt.date(2024, 2, 1)):
        path = tmp_path / day_key("AAA", day)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
    return CountingStore(tmp_path)


def test_every_range_equals_the_stores_own_answer_from_one_listing(tmp_path: Path) -> None:
    inner = _store(tmp_path)
    store = ListedOnce(inner)
    bounds = [None, dt.date(2023, 12, 30), dt.date(2024, 1, 2), dt.date(2024, 1, 3), dt.date(2024, 3, 1)]
    for start in bounds:
        for end in bounds:
            assert store.list_days("AAA", start, end) == LocalStore(tmp_path).list_days("AAA", start, end)
    assert inner.listed == {"AAA": 1}
    days = store.list_days("AAA")
    days.clear()  # a caller's copy: the snapshot keeps its own
    assert len(store.list_days("AAA")) == 4


def test_the_rest_is_the_stores_own(tmp_path: Path) -> None:
    inner = _store(tmp_path)
    store = ListedOnce(inner)
    assert store.root == inner.root  # the cache key stats a local store's files through its root
    assert store.fetch("AAA", dt.date(2024, 1, 2)) == inner.fetch("AAA", dt.date(2024, 1, 2))
    assert store.describe() == inner.describe() and store.list_symbols() == ["AAA"]
    assert getattr(store, "prefetch", None) is None  # a local store has none, and neither does its snapshot


def test_a_runs_plan_lists_each_stock_once(tmp_path: Path, monkeypatch) -> None:
    market = make_market(tmp_path / "market", days=3)
    counting: list[CountingStore] = []

    def open_counting(spec: str) -> CountingStore:
        counting.append(CountingStore(Path(spec)))
        return counting[-1]

    monkeypatch.setattr(lifecycle, "open_store", open_counting)
    cfg = Config()
    cfg.set("data.data", str(market))
    plan, store = lifecycle.plan_run(cfg)
    for symbol in plan.symbols:  # what the cache key and the loader ask next
        store.list_days(symbol, plan.load_start, plan.load_end)
    assert counting[0].listed == {s: 1 for s in plan.symbols}
