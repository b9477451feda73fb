"""Evaluating a schedule at the raw micro-step count under gradient accumulation."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from gradxform.core import numerics, validation


@dataclasses.dataclass(frozen=True)
class AtLastMicroStep:
    r"""A schedule of the update count that evaluates ``schedule`` at the raw micro-step.

    .. math::
        \eta'(s) = \eta(s k + k - 1)

    Inside `accumulate_gradients` with :math:`k` micro-steps per update, a
    schedule sees the number of real updates :math:`s`. Keras instead calls a
    learning-rate schedule with its raw call counter, which on the
    :math:`(s+1)`-th update is :math:`sk + k - 1`. Wrapping the schedule in this
    gives Keras's values.

    Args:
      schedule: a callable ``step -> value``.
      every_k: :math:`k \ge 1`, micro-steps per update.

    Example:
      >>> import gradxform as gx
      >>> rate = gx.schedules.AtLastMicroStep(lambda step: 0.1 * step, every_k=3)
      >>> round(float(rate(0)), 6), round(float(rate(1)), 6)
      (0.2, 0.5)
    """

    schedule: Callable[[Any], Any]
    every_k: int

    def __post_init__(self):
        if not callable(self.schedule):
            raise TypeError(f"AtLastMicroStep: schedule must be callable, got {self.schedule!r}")
        validation.positive_int("AtLastMicroStep", "every_k", self.every_k)

    def __call__(self, count):
        # Saturates instead of wrapping, like the counters it is computed from.
        return self.schedule(numerics.saturating_affine(count, self.every_k, self.every_k - 1))
