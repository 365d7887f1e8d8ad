"""Step-count schedules for exploration epsilon and the PER beta."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LinearSchedule:
    """Moves linearly from ``start`` to ``end`` over ``duration`` steps, then stays at ``end``.

    ``duration <= 0`` means ``end`` from step 0. Negative steps give ``start``.
    """

    start: float
    end: float
    duration: int

    def __call__(self, step: int) -> float:
        """The value at ``step``."""
        if self.duration <= 0:
            return float(self.end)
        frac = min(max(step / self.duration, 0.0), 1.0)
        return float(self.start + frac * (self.end - self.start))
