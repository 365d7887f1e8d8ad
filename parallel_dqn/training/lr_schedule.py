"""The parameter server's learning rate: a schedule from torch's schedulers, and the monitor's cuts.

The server's optimizer (:class:`~parallel_dqn.model.adamw.FlatAdamW`) is not a ``torch.optim``
optimizer, so torch's schedulers drive a one-parameter proxy ``torch.optim.SGD`` that is never stepped
on data: its learning rate is read and copied into the server's optimizer before each apply, so the
values are torch's by construction (``tests/test_lr_monitor.py`` checks them against torch's and the
closed-form cosine anyway).

* ``constant``: ``dqn.lr`` throughout (no proxy is built: building a torch optimizer costs seconds of
  imports at start-up);
* ``warmup``: ``LinearLR`` from ``dqn.lr / 100`` to ``dqn.lr`` over ``optim.warmup_applies`` applies;
* ``cosine``: ``CosineAnnealingWarmRestarts`` (``T_0`` = ``optim.cosine_period`` applies, ``T_mult`` =
  ``optim.cosine_mult``, floor ``optim.lr_min``), after the warm-up if there is one (``SequentialLR``);
* ``plateau``: ``ReduceLROnPlateau`` (mode max on the validation Sharpe, ``optim.plateau_factor``,
  ``optim.plateau_patience``, floor ``optim.lr_min``), stepped once per validation, after the warm-up.

Warm-up and cosine step once per apply. The convergence monitor's ``reduce_lr`` multiplies whatever the
schedule gives by a scale (:meth:`LearningRate.cut`), which no scheduler step undoes.
"""

from __future__ import annotations

import math
from typing import Any

from parallel_dqn.config import OptimConfig

WARMUP_START = 0.01  # the warm-up starts at dqn.lr / 100


class LearningRate:
    """The learning rate of the next apply: ``schedule(applies, validations) x scale``."""

    def __init__(self, base_lr: float, cfg: OptimConfig) -> None:
        self.base_lr = float(base_lr)
        self.cfg = cfg
        self.scale = 1.0  # the product of the monitor's cuts
        self.floor = cfg.lr_min
        self._proxy: Any = None
        self._per_apply: Any = None  # stepped after every apply (warm-up, cosine)
        self._plateau: Any = None  # stepped after every validation
        if cfg.lr_schedule != "constant":
            self._build()

    def _build(self) -> None:
        # torch.optim imports torch._dynamo (seconds): only a run with a schedule pays for it
        import torch
        from torch.optim.lr_scheduler import CosineAnnealingWarmRestarts, LinearLR, ReduceLROnPlateau, SequentialLR

        c = self.cfg
        self._proxy = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=self.base_lr)
        warmup = LinearLR(self._proxy, WARMUP_START, 1.0, c.warmup_applies) if c.warmup_applies else None
        if c.lr_schedule == "cosine":
            cosine = CosineAnnealingWarmRestarts(self._proxy, c.cosine_period, c.cosine_mult, eta_min=c.lr_min)
            self._per_apply = SequentialLR(self._proxy, [warmup, cosine], [c.warmup_applies]) if warmup else cosine
        else:
            self._per_apply = warmup
        if c.lr_schedule == "plateau":
            self._plateau = ReduceLROnPlateau(
                self._proxy, mode="max", factor=c.plateau_factor, patience=c.plateau_patience, min_lr=c.lr_min
            )

    @property
    def scheduled(self) -> float:
        """What the schedule alone gives now."""
        return float(self._proxy.param_groups[0]["lr"]) if self._proxy is not None else self.base_lr

    @property
    def value(self) -> float:
        """The learning rate of the next apply."""
        return self.scheduled * self.scale if self.scale != 1.0 else self.scheduled

    @property
    def changes(self) -> bool:
        """Whether the rate can differ from ``dqn.lr`` in this run (then it is logged per episode)."""
        return self._proxy is not None or self.scale != 1.0

    def after_apply(self) -> None:
        """One apply was made: warm-up and cosine move on."""
        if self._per_apply is not None:
            # the warm-up ends with its last step: the plateau scheduler alone drives the rate after it
            if self._plateau is None or self._per_apply.last_epoch < self.cfg.warmup_applies:
                self._proxy.step()  # no gradient, no change: the schedulers' protocol wants a step before theirs
                self._per_apply.step()

    def after_validation(self, score: float) -> None:
        """A validation scored ``score`` (higher is better): the plateau schedule may cut the rate."""
        if self._plateau is not None:
            self._plateau.step(score if math.isfinite(score) else -math.inf)

    def cut(self, factor: float) -> tuple[float, float]:
        """The monitor's ``reduce_lr``: scale the rate by ``factor``, never taking ``dqn.lr`` x scale below
        ``optim.lr_min``. Returns the rate before and after."""
        before = self.value
        self.scale = max(self.scale * factor, self.floor / self.base_lr)
        return before, self.value

    def state_dict(self) -> dict[str, Any]:
        """The schedulers' and the proxy's state and the monitor's scale (numbers only)."""
        state: dict[str, Any] = {"scale": self.scale}
        if self._proxy is not None:
            state["proxy"] = self._proxy.state_dict()
            state["per_apply"] = self._per_apply.state_dict() if self._per_apply is not None else None
            state["plateau"] = self._plateau.state_dict() if self._plateau is not None else None
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.scale = float(state["scale"])
        if self._proxy is not None:
            self._proxy.load_state_dict(state["proxy"])
            if self._per_apply is not None:
                self._per_apply.load_state_dict(state["per_apply"])
            if self._plateau is not None:
                self._plateau.load_state_dict(state["plateau"])
