"""Step sizes made from a learning rate: Adafactor's relative step, a linear warmup factor."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp
from jax import lax

from gradxform.core import validation
from gradxform.schedules.base import F32, ScheduleObject, as_float_count


def _rate_at(learning_rate: Any, count: Any) -> Any:
    """The learning rate at ``count``, in float32: a schedule's value, or the number."""
    rate = learning_rate(count) if callable(learning_rate) else learning_rate
    return jnp.asarray(rate).astype(F32)


@dataclasses.dataclass(frozen=True, repr=False)
class RelativeStepSize(ScheduleObject):
    r"""Adafactor's relative step size: the learning rate, at most :math:`1/\sqrt{t+1}`.

    .. math::
        \rho_t = \min\big(\eta_t,\; (t + 1)^{-1/2}\big)

    with :math:`t` the update count from 0. Keras 3's and torch's
    ``Adafactor`` take this step size whatever the learning rate is (Keras's
    ``relative_step`` argument changes nothing). Shazeer and Stern, 2018,
    section 8.

    Args:
      learning_rate: :math:`\eta \ge 0`, or a schedule ``count -> rate``.

    Example:
      >>> import gradxform as gx
      >>> rate = gx.schedules.relative_step_size(0.5)
      >>> float(rate(0)), float(rate(3))
      (0.5, 0.5)
    """

    learning_rate: Any
    public_name = "relative_step_size"

    def __post_init__(self):
        validation.scalar_or_schedule(self.owner, "learning_rate", self.learning_rate)

    def __call__(self, count):
        cap = lax.rsqrt(as_float_count(count) + 1)
        return jnp.minimum(_rate_at(self.learning_rate, count), cap)


@dataclasses.dataclass(frozen=True, repr=False)
class WarmupScaledSchedule(ScheduleObject):
    r"""The learning rate times a linear warmup factor that reaches 1 after ``warmup_steps``.

    .. math::
        \eta'_t = \eta_t \cdot \min\Big(\frac{t + 1}{w},\; 1\Big)

    with :math:`t` the update count from 0, so the first update already takes
    :math:`\eta_0 / w` (Keras 3's ``ScheduleFreeAdamW`` warmup); :math:`w = 0`
    gives :math:`\eta_t`. Unlike `warmup_constant_schedule` this multiplies a
    schedule, rather than replacing its first steps.

    Args:
      learning_rate: :math:`\eta \ge 0`, or a schedule ``count -> rate``.
      warmup_steps: :math:`w`, an int >= 0.

    Example:
      >>> import gradxform as gx
      >>> rate = gx.schedules.warmup_scaled_schedule(0.5, warmup_steps=10)
      >>> round(float(rate(0)), 6), float(rate(20))
      (0.05, 0.5)
    """

    learning_rate: Any
    warmup_steps: int = 0
    public_name = "warmup_scaled_schedule"

    def __post_init__(self):
        validation.scalar_or_schedule(self.owner, "learning_rate", self.learning_rate)
        validation.positive_int(self.owner, "warmup_steps", self.warmup_steps, minimum=0)

    def __call__(self, count):
        rate = _rate_at(self.learning_rate, count)
        if self.warmup_steps == 0:
            return rate
        fraction = (as_float_count(count) + 1) / jnp.asarray(self.warmup_steps, F32)
        return rate * jnp.minimum(fraction, 1.0)


relative_step_size = RelativeStepSize
warmup_scaled_schedule = WarmupScaledSchedule
