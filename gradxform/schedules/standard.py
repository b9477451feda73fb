"""optax's schedules as objects: same names, arguments and values, plus a repr and their data.

Each is a frozen dataclass; calling it with the step count gives the value.
The arithmetic follows optax 0.2.8 operation by operation (in float32 for an
int32 count), so the values are the same, and it is clean under strict dtype
promotion. Where optax logs and silently falls back (a non-positive
``transition_steps``, a negative ``transition_begin``) or returns inf (a
negative ``power`` or ``exponent``, at the end of the decay), these raise instead.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp

from gradxform.core import validation
from gradxform.schedules.base import F32, ScheduleObject, as_float_count, check_exponent


def _check_steps(owner: str, name: str, value: Any, *, allow_zero: bool = False) -> None:
    validation.positive_int(owner, name, value, minimum=0 if allow_zero else 1)


@dataclasses.dataclass(frozen=True, repr=False)
class ConstantSchedule(ScheduleObject):
    r"""A constant value (optax's ``constant_schedule``).

    .. math::
        s(t) = v

    Args:
      value: :math:`v`.

    Example:
      >>> import gradxform as gx
      >>> gx.schedules.constant_schedule(0.1)(100)
      0.1
    """

    value: Any
    public_name = "constant_schedule"

    def __call__(self, count):
        return self.value


@dataclasses.dataclass(frozen=True, repr=False)
class PolynomialSchedule(ScheduleObject):
    r"""Polynomial decay from ``init_value`` to ``end_value`` (optax's ``polynomial_schedule``).

    .. math::
        s(t) = (v_0 - v_1)\left(1 - \frac{\mathrm{clip}(t - b, 0, T)}{T}\right)^{p} + v_1

    Two differences from optax: the base is clamped at 0, because under
    ``jit`` float32 rounding can make it slightly negative at :math:`t - b = T`,
    where optax then returns NaN for a fractional power; and a negative power,
    for which optax returns inf from :math:`t - b = T` on, raises.

    Args:
      init_value: :math:`v_0`.
      end_value: :math:`v_1`.
      power: :math:`p \ge 0`.
      transition_steps: :math:`T \ge 1`.
      transition_begin: :math:`b \ge 0`, steps at :math:`v_0` before the decay.

    Example:
      >>> import gradxform as gx
      >>> float(gx.schedules.polynomial_schedule(1.0, 0.0, power=2, transition_steps=10)(5))
      0.25
    """

    init_value: Any
    end_value: Any
    power: Any
    transition_steps: int
    transition_begin: int = 0
    public_name = "polynomial_schedule"

    def __post_init__(self):
        for name in ("init_value", "end_value"):
            validation.real_number(self.owner, name, getattr(self, name))
        check_exponent(self.owner, "power", self.power)
        _check_steps(self.owner, "transition_steps", self.transition_steps)
        _check_steps(self.owner, "transition_begin", self.transition_begin, allow_zero=True)

    def __call__(self, count):
        count = jnp.clip(jnp.asarray(count) - self.transition_begin, 0, self.transition_steps)
        # Under jit XLA divides by multiplying with a rounded reciprocal, so at the
        # end of the decay the fraction can be -5e-8; optax then returns NaN for a
        # fractional power. Clamped at 0, the value there is end_value.
        fraction = jnp.maximum(1 - as_float_count(count) / self.transition_steps, 0.0)
        return (self.init_value - self.end_value) * (fraction**self.power) + self.end_value


@dataclasses.dataclass(frozen=True, repr=False)
class LinearSchedule(PolynomialSchedule):
    r"""Linear interpolation from ``init_value`` to ``end_value`` (optax's ``linear_schedule``).

    .. math::
        s(t) = (v_0 - v_1)\left(1 - \frac{\mathrm{clip}(t - b, 0, T)}{T}\right) + v_1

    Args:
      init_value: :math:`v_0`.
      end_value: :math:`v_1`.
      transition_steps: :math:`T \ge 1`.
      transition_begin: :math:`b \ge 0`.

    Example:
      >>> import gradxform as gx
      >>> float(gx.schedules.linear_schedule(1.0, 0.0, transition_steps=4)(1))
      0.75
    """

    init_value: Any
    end_value: Any
    transition_steps: int
    transition_begin: int = 0
    power: Any = dataclasses.field(default=1, init=False)
    public_name = "linear_schedule"

    def arguments(self) -> dict:
        arguments = super().arguments()
        del arguments["power"]
        return arguments


@dataclasses.dataclass(frozen=True, repr=False)
class ExponentialDecaySchedule(ScheduleObject):
    r"""Exponential decay after ``transition_begin`` steps (optax's ``exponential_decay``).

    .. math::
        s(t) = \begin{cases} v_0 & t \le b \\ v_0\, r^{(t-b)/T} & \text{otherwise}\end{cases}

    with the exponent floored when ``staircase``, and the result bounded by
    ``end_value`` (from below if :math:`r < 1`, from above otherwise).

    Args:
      init_value: :math:`v_0`.
      transition_steps: :math:`T \ge 1`.
      decay_rate: :math:`r > 0`.
      transition_begin: :math:`b \ge 0`.
      staircase: decay in discrete steps.
      end_value: the bound, or None.

    Example:
      >>> import gradxform as gx
      >>> float(gx.schedules.exponential_decay(1.0, transition_steps=10, decay_rate=0.5)(20))
      0.25
    """

    init_value: Any
    transition_steps: int
    decay_rate: float
    transition_begin: int = 0
    staircase: bool = False
    end_value: Any = None
    public_name = "exponential_decay"

    def __post_init__(self):
        _check_steps(self.owner, "transition_steps", self.transition_steps)
        _check_steps(self.owner, "transition_begin", self.transition_begin, allow_zero=True)
        validation.positive(self.owner, "decay_rate", self.decay_rate)
        validation.real_number(self.owner, "init_value", self.init_value)
        validation.optional_real(self.owner, "end_value", self.end_value)
        validation.boolean(self.owner, "staircase", self.staircase)

    def __call__(self, count):
        decreased = jnp.asarray(count) - self.transition_begin
        p = as_float_count(decreased) / self.transition_steps
        if self.staircase:
            p = jnp.floor(p)
        # Before transition_begin the power is discarded; a negative exponent there could
        # overflow to inf, and 0 * inf is NaN.
        p = jnp.maximum(p, 0.0)
        value = jnp.where(
            decreased <= 0, self.init_value, self.init_value * jnp.power(self.decay_rate, p)
        )
        if self.end_value is not None:
            bound = jnp.maximum if self.decay_rate < 1.0 else jnp.minimum
            value = bound(value, self.end_value)
        return value


@dataclasses.dataclass(frozen=True, repr=False)
class CosineDecaySchedule(ScheduleObject):
    r"""Cosine decay from ``init_value`` (optax's ``cosine_decay_schedule``).

    .. math::
        s(t) = v_0\left((1-\alpha)\left(\tfrac12\left(1 + \cos\frac{\pi \min(t, T)}{T}\right)\right)^{e}
        + \alpha\right)

    A negative exponent, for which optax returns inf from :math:`t = T` on
    (where the cosine term is 0), raises.

    Args:
      init_value: :math:`v_0`.
      decay_steps: :math:`T \ge 1`.
      alpha: :math:`\alpha`, the final value as a fraction of :math:`v_0`.
      exponent: :math:`e \ge 0`.

    Example:
      >>> import gradxform as gx
      >>> round(float(gx.schedules.cosine_decay_schedule(1.0, decay_steps=10)(5)), 6)
      0.5
    """

    init_value: Any
    decay_steps: int
    alpha: Any = 0.0
    exponent: Any = 1.0
    public_name = "cosine_decay_schedule"

    def __post_init__(self):
        _check_steps(self.owner, "decay_steps", self.decay_steps)
        for name in ("init_value", "alpha"):
            validation.real_number(self.owner, name, getattr(self, name))
        check_exponent(self.owner, "exponent", self.exponent)

    def __call__(self, count):
        count = jnp.minimum(as_float_count(count), float(self.decay_steps))
        cosine = 0.5 * (1 + jnp.cos(jnp.pi * count / float(self.decay_steps)))
        return self.init_value * ((1 - self.alpha) * cosine**self.exponent + self.alpha)


@dataclasses.dataclass(frozen=True, repr=False)
class PiecewiseConstantSchedule(ScheduleObject):
    r"""A value multiplied by a scale at each boundary (optax's ``piecewise_constant_schedule``).

    .. math::
        s(t) = v_0 \textstyle\prod_{b_i \le t} c_i

    Args:
      init_value: :math:`v_0`.
      boundaries_and_scales: a dict ``{b_i: c_i}`` of steps and scales
        :math:`c_i \ge 0`, or None.

    Example:
      >>> import gradxform as gx
      >>> round(float(gx.schedules.piecewise_constant_schedule(1.0, {10: 0.1, 20: 0.5})(15)), 6)
      0.1
    """

    init_value: Any
    boundaries_and_scales: dict | None = None
    public_name = "piecewise_constant_schedule"

    def __post_init__(self):
        owner, given = self.owner, self.boundaries_and_scales
        validation.real_number(owner, "init_value", self.init_value)
        if given is not None and not isinstance(given, dict):
            raise TypeError(f"{owner}: boundaries_and_scales must be a dict {{step: scale}} or "
                            f"None, got {given!r}")
        with validation.inside("boundaries_and_scales", given):
            for boundary, scale in (given or {}).items():
                validation.positive_int(owner, "a boundary", boundary, minimum=0)
                validation.non_negative(owner, f"the scale at boundary {boundary}", scale)

    def __hash__(self):
        return hash((self.init_value, tuple(sorted((self.boundaries_and_scales or {}).items()))))

    def __call__(self, count):
        count = jnp.asarray(count)
        value = self.init_value
        for threshold, scale in sorted((self.boundaries_and_scales or {}).items()):
            indicator = jnp.maximum(0.0, jnp.sign(threshold - count).astype(F32))
            value = value * indicator + (1 - indicator) * scale * value
        return value


@dataclasses.dataclass(frozen=True, repr=False)
class WarmupConstantSchedule(LinearSchedule):
    r"""Linear warmup to ``peak_value``, then constant (optax's ``warmup_constant_schedule``).

    .. math::
        s(t) = v_0 + (v_{peak} - v_0) \min(t, W) / W

    Args:
      init_value: :math:`v_0`.
      peak_value: :math:`v_{peak}`.
      warmup_steps: :math:`W \ge 1`.

    Example:
      >>> import gradxform as gx
      >>> float(gx.schedules.warmup_constant_schedule(0.0, 1.0, warmup_steps=4)(2))
      0.5
    """

    init_value: Any
    peak_value: Any
    warmup_steps: int
    end_value: Any = dataclasses.field(init=False, default=None)
    transition_steps: int = dataclasses.field(init=False, default=1)
    transition_begin: int = dataclasses.field(init=False, default=0)
    public_name = "warmup_constant_schedule"

    def __post_init__(self):
        _check_steps(self.owner, "warmup_steps", self.warmup_steps)
        validation.real_number(self.owner, "peak_value", self.peak_value)
        object.__setattr__(self, "end_value", self.peak_value)
        object.__setattr__(self, "transition_steps", self.warmup_steps)
        super().__post_init__()

    def arguments(self) -> dict:
        return {"init_value": self.init_value, "peak_value": self.peak_value,
                "warmup_steps": self.warmup_steps}


constant_schedule = ConstantSchedule
polynomial_schedule = PolynomialSchedule
linear_schedule = LinearSchedule
exponential_decay = ExponentialDecaySchedule
cosine_decay_schedule = CosineDecaySchedule
piecewise_constant_schedule = PiecewiseConstantSchedule
warmup_constant_schedule = WarmupConstantSchedule
