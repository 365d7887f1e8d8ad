"""Logging set-up: human lines on stderr, the same lines in the run's log file."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from tqdm import tqdm

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class _TqdmAwareHandler(logging.Handler):
    """Console lines written through tqdm, so they never tear a progress bar."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # noqa: BLE001 - logging must never raise
            self.handleError(record)


def setup_logging(log_file: Path | None, level: int = logging.INFO, console: bool = True) -> None:
    """Configure the root logger for this process (idempotent); DEBUG lines reach the file only."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    root.setLevel(level)
    logging.getLogger("parallel_dqn").setLevel(logging.DEBUG)  # details go to the file only
    if console:
        h = _TqdmAwareHandler()
        h.setLevel(level)
        h.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
        root.addHandler(h)
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        f = logging.FileHandler(log_file)
        f.setFormatter(logging.Formatter(FORMAT))
        root.addHandler(f)
