"""``parallel-dqn data import-csv`` through the real CLI: time zones of mixed timestamps, and the files' mode.

* a file that mixes naive timestamps with ones that carry an offset (or ``Z``): the naive ones are wall-clock
  times in ``--timezone`` (winter and summer time), the others are converted from their own offset;
* the stock-day files an import writes get the mode of any new file the user writes (``0666 & ~umask``),
  not the 0600 of a temporary file.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import run_cli

BERLIN = "Europe/Berlin"


def write_csv(path: Path, stamps: list[str]) -> Path:
    """Valid bars at ``stamps`` (in order), one row each."""
    rows = [f"{s},{100 + i},{101 + i},{99 + i},{100.5 + i},{1000 + i}" for i, s in enumerate(stamps)]
    path.write_text("timestamp,open,high,low,close,volume\n" + "\n".join(rows) + "\n")
    return path


def imported(dest: Path) -> list[str]:
    """Every stored timestamp under ``dest``, as UTC ``YYYY-MM-DD HH:MM``, in time order."""
    frames = [pd.read_parquet(p) for p in sorted(dest.rglob("*.parquet"))]
    stamps = pd.to_datetime(pd.concat(frames)["timestamp"], utc=True).sort_values()
    return [t.strftime("%Y-%m-%d %H:%M") for t in stamps]


def ok(proc) -> str:
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stderr}\n{proc.stdout}"
    return proc.stdout


# ---- naive and offset timestamps in one file -----------------------------------------------------
def test_mixed_naive_and_offset_timestamps_winter(tmp_path):
    csv = write_csv(tmp_path / "AAA.csv", [
        "2024-01-02 09:00:00",  # naive: Berlin wall clock, UTC+1 in winter
        "2024-01-02 09:05:00+01:00",
        "2024-01-02T08:10:00Z",
        "2024-01-02 03:15:00-05:00",  # New York
        "2024-01-02 09:20:00",
    ])
    dest = tmp_path / "data"
    ok(run_cli("data", "import-csv", csv, "--to", dest, "--timezone", BERLIN))
    assert imported(dest) == [
        "2024-01-02 08:00", "2024-01-02 08:05", "2024-01-02 08:10", "2024-01-02 08:15", "2024-01-02 08:20",
    ]


def test_mixed_naive_and_offset_timestamps_across_the_dst_change(tmp_path):
    csv = write_csv(tmp_path / "AAA.csv", [
        "2024-03-29 09:00:00",  # Friday, UTC+1
        "2024-03-29 09:05:00+01:00",
        "2024-04-02 09:00:00",  # Tuesday, UTC+2 (summer time from 31 March)
        "2024-04-02 09:05:00+02:00",
        "2024-04-02T07:10:00Z",
    ])
    dest = tmp_path / "data"
    ok(run_cli("data", "import-csv", csv, "--to", dest, "--timezone", BERLIN))
    assert imported(dest) == [
        "2024-03-29 08:00", "2024-03-29 08:05", "2024-04-02 07:00", "2024-04-02 07:05", "2024-04-02 07:10",
    ]


def test_only_offsets_and_only_naive_stay_as_before(tmp_path):
    offsets = write_csv(tmp_path / "AAA.csv", ["2024-03-29 09:00:00+01:00", "2024-04-02 09:00:00+02:00"])
    naive = write_csv(tmp_path / "BBB.csv", ["2024-03-29 09:00:00", "2024-04-02 09:00:00"])
    ok(run_cli("data", "import-csv", offsets, "--to", tmp_path / "a", "--timezone", "Asia/Tokyo"))
    ok(run_cli("data", "import-csv", naive, "--to", tmp_path / "b", "--timezone", BERLIN))
    assert imported(tmp_path / "a") == imported(tmp_path / "b") == ["2024-03-29 08:00", "2024-04-02 07:00"]


def test_mixed_file_with_a_nonexistent_local_time_is_one_line(tmp_path):
    csv = write_csv(tmp_path / "AAA.csv", ["2024-03-31 01:30:00+01:00", "2024-03-31 02:30:00"])  # skipped hour
    dest = tmp_path / "data"
    proc = run_cli("data", "import-csv", csv, "--to", dest, "--timezone", BERLIN)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("parallel-dqn: error:") and BERLIN in lines[0], proc.stderr
    assert not dest.exists()


# ---- the mode of the written files ---------------------------------------------------------------
@pytest.fixture
def umask() -> Iterator[Callable[[int], None]]:
    """Set this process's umask (inherited by the CLI subprocess); restored afterwards."""
    old = os.umask(0o022)
    os.umask(old)

    def set_mask(mask: int) -> None:
        os.umask(mask)

    yield set_mask
    os.umask(old)


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_imported_files_get_the_mode_of_new_files(tmp_path, umask, mask, mode):
    csv = write_csv(tmp_path / "AAA.csv", ["2024-01-02 09:00:00", "2024-01-03 09:00:00"])
    dest = tmp_path / "data"
    umask(mask)
    ok(run_cli("data", "import-csv", csv, "--to", dest))
    files = sorted(dest.rglob("*.parquet"))
    assert len(files) == 2
    assert {oct(stat.S_IMODE(p.stat().st_mode)) for p in files} == {oct(mode)}


def test_replaced_files_get_the_mode_of_new_files(tmp_path, umask):
    dest = tmp_path / "data"
    umask(0o022)
    ok(run_cli("data", "import-csv", write_csv(tmp_path / "AAA.csv", ["2024-01-02 09:00:00"]), "--to", dest))
    (tmp_path / "new").mkdir()
    changed = write_csv(tmp_path / "new" / "AAA.csv", ["2024-01-02 09:00:00", "2024-01-02 09:05:00"])
    ok(run_cli("data", "import-csv", changed, "--to", dest, "--overwrite"))
    (path,) = dest.rglob("*.parquet")
    assert len(pd.read_parquet(path)) == 2
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
