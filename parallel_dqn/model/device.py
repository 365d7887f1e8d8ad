"""Where the networks run: ``run.device`` = ``cpu`` (the default), ``cuda``, or ``auto`` (cuda when torch sees one)."""

from __future__ import annotations

import torch

from parallel_dqn.errors import UserError


def resolve_device(name: str) -> torch.device:
    """The torch device for ``run.device``; ``cuda`` where torch sees no GPU is one line, not a crash mid-run."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError(
            f"run.device = cuda, but torch {torch.__version__} sees no CUDA GPU on this machine",
            "use --set run.device=cpu (or auto), or install a CUDA build of torch where there is a GPU",
        )
    return torch.device(name)
