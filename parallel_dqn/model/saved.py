"""``trained_model.pth``: everything needed to evaluate a trained model elsewhere.

A plain dict saved with ``torch.save`` and read with ``weights_only=True`` (no
pickled code runs on load): network and meta-policy weights, the resolved
configuration, the stocks in order, the training-period feature statistics, the
reward scale, and the mean attention matrix of the evaluation.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch

from parallel_dqn.errors import UserError
from parallel_dqn.files import write_atomically

FORMAT = "parallel-dqn-model/1"


def save_model(path: Path, payload: dict[str, Any]) -> None:
    """Write atomically: a crash mid-write never leaves a half-written model behind."""
    write_atomically(path, lambda tmp: torch.save({"format": FORMAT, **payload}, tmp))


def load_model(path: str | Path) -> dict[str, Any]:
    """Read a model file, or raise a UserError saying what is wrong with it."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"model file {p} does not exist", "pass the trained_model.pth of a training run's --output")
    if not zipfile.is_zipfile(p):
        raise UserError(f"{p} is not a model file (not a PyTorch archive)", "pass the trained_model.pth written by `train`")
    try:
        payload = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:  # torch's advice in it (turn the safety off) is not passed on
        raise UserError(f"{p} {unsafe_reason(exc)}", "pass the trained_model.pth written by `train`") from None
    except Exception:  # noqa: BLE001 - torch raises many types for a damaged archive
        raise UserError(f"{p} is damaged: it cannot be read as a model file", "retrain or copy the file again") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise UserError(f"{p} is not a parallel-dqn model file", "pass the trained_model.pth written by `train`")
    return payload


def unsafe_reason(exc: pickle.UnpicklingError) -> str:
    """Why torch's weights-only loader refused a file, in words that do not advise turning the safety off."""
    found = re.search(r"GLOBAL ([\w.]+)", str(exc))
    if found:
        return (f"cannot be loaded safely: it holds a pickled {found.group(1)} object, not plain data, "
                "which torch's weights only loader refuses")
    return "cannot be loaded safely: torch's weights only loader refuses its pickled data"
