"""optax's piecewise-interpolated schedule, and linear warmup followed by exponential decay."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp

from gradxform.core import validation
from gradxform.schedules.base import F32, ScheduleObject
from gradxform.schedules.composite import (
    JoinSchedules,
    _cosine_interpolate,
    _linear_interpolate,
    _piecewise_interpolate,
)
from gradxform.schedules.standard import ExponentialDecaySchedule, LinearSchedule

_INTERPOLATIONS = {"linear": _linear_interpolate, "cosine": _cosine_interpolate}


@dataclasses.dataclass(frozen=True, repr=False)
class PiecewiseInterpolateSchedule(ScheduleObject):
    r"""Interpolation between values scaled at boundaries (``piecewise_interpolate_schedule``).

    With :math:`b_0 = 0`, the boundaries :math:`b_1 < \dots < b_n` (sorted),
    their scales :math:`c_i` and the values :math:`v_i = v_0 \prod_{1 \le j \le i} c_j`
    they reach:

    .. math::
        s(t) = \begin{cases}
        I\!\left(v_{i-1}, v_i, \frac{t - b_{i-1}}{\max(b_i - b_{i-1}, 1)}\right)
        & b_{i-1} \le t < b_i \\ v_n & t \ge b_n \end{cases}

    where :math:`I(a, b, f)` is :math:`a + (b - a) f` (``"linear"``) or
    :math:`b + \tfrac{a - b}{2}(1 + \cos \pi f)` (``"cosine"``). The scales
    multiply one after another: the value moves from :math:`v_{i-1}` to
    :math:`v_{i-1} c_i`, not to :math:`c_i`. Same values as optax, at every step.

    Args:
      interpolate_type: ``"linear"`` or ``"cosine"``.
      init_value: :math:`v_0`.
      boundaries_and_scales: a dict ``{b_i: c_i}`` of steps :math:`b_i \ge 0`
        and scales :math:`c_i \ge 0`, or None (a constant :math:`v_0`).

    Example:
      >>> import gradxform as gx
      >>> s = gx.schedules.piecewise_interpolate_schedule("linear", 1.0, {4: 0.1, 8: 0.01})
      >>> [round(float(s(t)), 6) for t in (0, 2, 4, 6, 8, 10)]
      [1.0, 0.55, 0.1, 0.0505, 0.001, 0.001]
    """

    interpolate_type: str
    init_value: Any
    boundaries_and_scales: dict | None = None
    public_name = "piecewise_interpolate_schedule"

    def __post_init__(self):
        owner, given = self.owner, self.boundaries_and_scales
        kind = self.interpolate_type
        if not isinstance(kind, str):
            raise TypeError(f"{owner}: interpolate_type must be 'linear' or 'cosine', got {kind!r}")
        if kind not in _INTERPOLATIONS:
            raise ValueError(
                f"{owner}: interpolate_type must be 'linear' or 'cosine', got {kind!r}"
            )
        validation.real_number(owner, "init_value", self.init_value)
        if given is not None and not isinstance(given, dict):
            raise TypeError(f"{owner}: boundaries_and_scales must be a dict {{step: scale}} or "
                            f"None, got {given!r}")
        with validation.inside("boundaries_and_scales", given):
            for boundary, scale in (given or {}).items():
                validation.positive_int(owner, "a boundary", boundary, minimum=0)
                validation.non_negative(owner, f"the scale at boundary {boundary}", scale)

    def __hash__(self):
        scales = tuple(sorted((self.boundaries_and_scales or {}).items()))
        return hash((self.interpolate_type, self.init_value, scales))

    def __call__(self, count):
        if not self.boundaries_and_scales:  # optax: 1 from step 0 on (count >= 0), times v_0
            return (jnp.asarray(count) >= 0).astype(F32) * self.init_value
        return _piecewise_interpolate(
            _INTERPOLATIONS[self.interpolate_type], self.init_value, self.boundaries_and_scales,
            count,
        )


@dataclasses.dataclass(frozen=True, repr=False)
class WarmupExponentialDecaySchedule(ScheduleObject):
    r"""Linear warmup, then exponential decay (optax's ``warmup_exponential_decay_schedule``).

    .. math::
        s(t) = \begin{cases} v_0 + (v_{peak} - v_0)\, t / W & t < W \\
        v_{peak} & W \le t \le W + b \\
        v_{peak}\, r^{(t - W - b)/T} & t > W + b \end{cases}

    with the exponent floored when ``staircase``, and the decayed value bounded
    by ``end_value`` (from below if :math:`r < 1`, from above otherwise): a
    `linear_schedule` joined at :math:`W` to an `exponential_decay`, as in
    optax, with its values at every step. Where optax logs and falls back to
    a constant (:math:`T \le 0`, :math:`r = 0`) or to :math:`b = 0`
    (:math:`b < 0`), this raises.

    Args:
      init_value: :math:`v_0`.
      peak_value: :math:`v_{peak}`, reached at the end of the warmup.
      warmup_steps: :math:`W \ge 0`; 0 starts with the decay.
      transition_steps: :math:`T \ge 1`.
      decay_rate: :math:`r > 0`.
      transition_begin: :math:`b \ge 0`, steps at :math:`v_{peak}` after the warmup.
      staircase: decay in discrete steps.
      end_value: the bound, or None.

    Example:
      >>> import gradxform as gx
      >>> s = gx.schedules.warmup_exponential_decay_schedule(
      ...     0.0, 1.0, warmup_steps=10, transition_steps=10, decay_rate=0.5)
      >>> float(s(5)), float(s(10)), float(s(30))
      (0.5, 1.0, 0.25)
    """

    init_value: Any
    peak_value: Any
    warmup_steps: int
    transition_steps: int
    decay_rate: Any
    transition_begin: int = 0
    staircase: bool = False
    end_value: Any = None
    public_name = "warmup_exponential_decay_schedule"

    def __post_init__(self):
        owner = self.owner
        for name in ("init_value", "peak_value"):
            validation.real_number(owner, name, getattr(self, name))
        validation.positive_int(owner, "warmup_steps", self.warmup_steps, minimum=0)
        validation.positive_int(owner, "transition_steps", self.transition_steps)
        validation.positive(owner, "decay_rate", self.decay_rate)
        validation.positive_int(owner, "transition_begin", self.transition_begin, minimum=0)
        validation.boolean(owner, "staircase", self.staircase)
        validation.optional_real(owner, "end_value", self.end_value)

    def joined(self) -> ScheduleObject:
        """The equivalent `join_schedules` of a `linear_schedule` and an `exponential_decay`
        (the decay alone without warmup)."""
        decay = ExponentialDecaySchedule(
            self.peak_value, self.transition_steps, self.decay_rate, self.transition_begin,
            self.staircase, self.end_value,
        )
        if self.warmup_steps == 0:
            return decay
        warmup = LinearSchedule(self.init_value, self.peak_value, self.warmup_steps)
        return JoinSchedules((warmup, decay), (self.warmup_steps,))

    def __call__(self, step):
        return self.joined()(step)


piecewise_interpolate_schedule = PiecewiseInterpolateSchedule
warmup_exponential_decay_schedule = WarmupExponentialDecaySchedule
