"""Step-count schedules for exploration epsilon and the PER beta, and a worker's gradient cadence."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction


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


class GradientCadence:
    """How many gradients a worker pushes at its ``k``-th learning opportunity (every ``dqn.train_freq`` steps).

    The replay ratio is gradient samples per transition: a stock adds one transition per step, and a micro-batch
    samples ``batch_size`` bars of it, so ``ratio x train_freq / batch_size`` micro-batches fall due per
    opportunity (``ratio = 0``: ``batch_size / train_freq``, one per opportunity, as before the setting), and a
    push is ``grad_accum`` of them: ``c = ratio x train_freq / (batch_size x grad_accum)`` pushes per opportunity.
    At opportunity ``k`` it pushes ``floor(k c) - floor((k - 1) c)``: a fraction averages out exactly (the
    count is exact rational arithmetic, never more than one push behind ``k c``), depends on ``k`` alone (nothing
    to checkpoint) and is the same on every worker (``--sync`` rounds stay whole).
    """

    def __init__(self, ratio: float, batch_size: int, train_freq: int, grad_accum: int = 1) -> None:
        per_opportunity = Fraction(repr(float(ratio))) * train_freq / batch_size if ratio > 0 else Fraction(1)
        self.per_opportunity = per_opportunity / grad_accum

    def pushes(self, k: int) -> int:
        """Pushes due at opportunity ``k >= 1`` (the pushes of opportunities 1..k sum to ``floor(k c)``)."""
        c = self.per_opportunity
        return int(k * c) - int((k - 1) * c)  # int() of a non-negative Fraction is its floor
