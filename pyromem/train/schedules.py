"""Learning-rate schedules of the engine, as factors of the base rate per optimiser step.

With T optimiser steps in the run and W warm-up steps (``warmup_epochs`` times
the steps of an epoch), the rate at step k is ``lr · f(k)``:

- ``"constant"``: f = 1 after a linear warm-up f(k) = (k + 1) / W;
- ``"cosine"``: the same warm-up, then f(k) = ½ (1 + cos(π (k − W) / (T − W))), which
  decays to 0 at the end of the run; with W = 0 it is torch's
  ``CosineAnnealingLR(T_max=T)``;
- ``"one-cycle"``: f rises from 1/25 to 1 on a half cosine, peaking at step
  W − 1, then falls on a half cosine to 1/(25·10⁴) at the last step T − 1: the
  rates of torch's ``OneCycleLR(pct_start=W/T, anneal_strategy="cos")`` (Smith &
  Topin 2019; the schedule of Kanerva++, App. E), without cycling the momentum.
"""

import math
from dataclasses import dataclass

SCHEDULES = ("constant", "cosine", "one-cycle")
ONE_CYCLE_START, ONE_CYCLE_END = 1 / 25, 1 / (25 * 1e4)


@dataclass(frozen=True)
class LearningRateFactor:
    """The factor f(k) of a schedule: a picklable callable for ``LambdaLR``.

    :param str schedule: one of :data:`SCHEDULES`.
    :param int total_steps: T, optimiser steps of the whole run.
    :param int warmup_steps: W, steps of the warm-up.
    """

    schedule: str
    total_steps: int
    warmup_steps: int = 0

    def __post_init__(self):
        if self.schedule not in SCHEDULES:
            raise ValueError(f"lr_schedule: expected one of {SCHEDULES}, got {self.schedule!r}")
        if not 0 <= self.warmup_steps <= self.total_steps:
            raise ValueError(
                f"warmup_epochs: expected a warm-up of at most the run's {self.total_steps} "
                f"steps, got {self.warmup_steps} steps"
            )

    def __call__(self, step: int) -> float:
        warmup, total = self.warmup_steps, self.total_steps
        if self.schedule == "one-cycle":
            peak = warmup - 1
            if step <= peak:
                return _half_cosine(ONE_CYCLE_START, 1.0, step / peak if peak else 1.0)
            return _half_cosine(1.0, ONE_CYCLE_END, (step - peak) / max(total - 1 - peak, 1))
        if step < warmup:
            return (step + 1) / warmup
        if self.schedule == "constant":
            return 1.0
        return _half_cosine(1.0, 0.0, (step - warmup) / max(total - warmup, 1))


def _half_cosine(start: float, end: float, fraction: float) -> float:
    fraction = min(fraction, 1.0)
    return end + (start - end) * (1 + math.cos(math.pi * fraction)) / 2
