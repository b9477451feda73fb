"""Keras 3's learning-rate schedules, under their Keras names, arguments and float32 formulas.

Each is a small frozen dataclass: calling it with a step gives the rate, its
``repr`` shows its parameters, and ``get_config()`` returns them as Keras does.
The arithmetic follows ``keras.optimizers.schedules`` operation by operation, in
float32, so the values agree with Keras's to float32 rounding. Arguments for
which Keras returns inf or NaN at some step (a negative ``power``, a ``t_mul``
below 1) or silently skips a value (equal boundaries) raise instead, naming the
schedule as ``keras.PolynomialDecay``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax.numpy as jnp

from gradxform.core import validation
from gradxform.schedules.base import check_exponent

_F32 = jnp.float32


def _owner(schedule: Any) -> str:
    return f"keras.{type(schedule).__name__}"


def _check_decay_steps(owner: str, name: str, value: Any) -> None:
    validation.real_number(owner, name, value)
    if value <= 0:
        raise ValueError(f"{owner}: Argument `{name}` must be > 0. Received: {name}={value}")
    validation.positive(owner, name, value)  # and not 0 once rounded to float32


def _check_fields(schedule: Any, real=(), non_negative=(), positive=(), boolean=()) -> None:
    """Checks the named fields of a Keras schedule, and its ``name``."""
    owner = _owner(schedule)
    for names, check in ((real, validation.real_number), (non_negative, validation.non_negative),
                         (positive, validation.positive), (boolean, validation.boolean)):
        for name in names:
            check(owner, name, getattr(schedule, name))
    validation.string(owner, "name", schedule.name, allow_none=True)


def _progress(step: Any, decay_steps: Any, staircase: bool):
    """``step / decay_steps`` in float32, floored when ``staircase``."""
    p = jnp.asarray(step).astype(_F32) / jnp.asarray(decay_steps, _F32)
    return jnp.floor(p) if staircase else p


class _KerasSchedule:
    """Shared behaviour: a Keras-style ``get_config`` from the dataclass fields."""

    def get_config(self) -> dict:
        """The constructor arguments, as Keras's ``get_config`` returns them."""
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}


@dataclasses.dataclass(frozen=True)
class _StepDecay(_KerasSchedule):
    """The fields and check that ``ExponentialDecay`` and ``InverseTimeDecay`` share."""

    initial_learning_rate: float
    decay_steps: float
    decay_rate: float
    staircase: bool = False
    name: str = ""

    def __post_init__(self):
        _check_decay_steps(_owner(self), "decay_steps", self.decay_steps)
        _check_fields(self, real=["initial_learning_rate"], non_negative=["decay_rate"],
                      boolean=["staircase"])


@dataclasses.dataclass(frozen=True)
class ExponentialDecay(_StepDecay):
    r"""Keras's ``ExponentialDecay``.

    .. math::
        \eta(t) = \eta_0 \cdot r^{p}, \qquad p = t / T \;(\lfloor t/T \rfloor \text{ if staircase})

    Args:
      initial_learning_rate: :math:`\eta_0`.
      decay_steps: :math:`T > 0`.
      decay_rate: :math:`r`.
      staircase: decay in discrete steps.
      name: kept for Keras compatibility.

    Example:
      >>> import gradxform as gx
      >>> round(float(gx.keras.ExponentialDecay(0.1, decay_steps=10, decay_rate=0.5)(20)), 6)
      0.025
    """

    name: str = "ExponentialDecay"

    def __call__(self, step):
        p = _progress(step, self.decay_steps, self.staircase)
        initial = jnp.asarray(self.initial_learning_rate, _F32)
        return initial * jnp.power(jnp.asarray(self.decay_rate, _F32), p)


@dataclasses.dataclass(frozen=True)
class PiecewiseConstantDecay(_KerasSchedule):
    r"""Keras's ``PiecewiseConstantDecay``.

    .. math::
        \eta(t) = v_0 \text{ if } t \le b_0;\; v_i \text{ if } b_{i-1} < t \le b_i;\;
        v_n \text{ if } t > b_{n-1}

    Unlike Keras, equal boundaries raise: the value between them would never be used.

    Args:
      boundaries: strictly increasing steps :math:`b_0 < \dots < b_{n-1}`.
      values: the :math:`n+1` rates.
      name: kept for Keras compatibility.

    Example:
      >>> import gradxform as gx
      >>> float(gx.keras.PiecewiseConstantDecay([10, 20], [1.0, 0.5, 0.1])(15))
      0.5
    """

    boundaries: tuple
    values: tuple
    name: str = "PiecewiseConstant"

    def __post_init__(self):
        owner = _owner(self)
        validation.real_sequence(owner, "boundaries", self.boundaries, non_decreasing=True)
        validation.real_sequence(owner, "values", self.values)
        _check_fields(self)
        object.__setattr__(self, "boundaries", tuple(self.boundaries))
        object.__setattr__(self, "values", tuple(self.values))
        known = [validation.real_number(owner, "boundaries", b) for b in self.boundaries]
        if any(a is not None and a == b for a, b in zip(known, known[1:])):
            raise ValueError(
                f"{owner}: boundaries must be strictly increasing, got "
                f"boundaries={list(self.boundaries)!r}: between two equal boundaries the value "
                f"in values would never be used"
            )
        if len(self.boundaries) != len(self.values) - 1:
            raise ValueError(
                f"{owner}: "
                "The length of boundaries should be 1 less than the length of values. "
                f"Received: boundaries={list(self.boundaries)} of length "
                f"{len(self.boundaries)}, and values={list(self.values)} of length "
                f"{len(self.values)}."
            )

    def get_config(self) -> dict:
        """The constructor arguments, boundaries and values as lists (as Keras returns them)."""
        return {"boundaries": list(self.boundaries), "values": list(self.values), "name": self.name}

    def __call__(self, step):
        step = jnp.asarray(step)
        # Keras casts the boundaries to the step's dtype and the indicators to the values'.
        bounds = [jnp.asarray(b).astype(step.dtype) for b in self.boundaries]
        values = [jnp.asarray(v, _F32) for v in self.values]
        result = (step <= bounds[0]).astype(_F32) * values[0]
        result = result + (step > bounds[-1]).astype(_F32) * values[-1]
        for low, high, value in zip(bounds[:-1], bounds[1:], values[1:-1]):
            result = result + ((step > low) & (step <= high)).astype(_F32) * value
        return result


@dataclasses.dataclass(frozen=True)
class PolynomialDecay(_KerasSchedule):
    r"""Keras's ``PolynomialDecay``.

    .. math::
        \eta(t) = (\eta_0 - \eta_{end}) (1 - \min(t, T)/T)^{power} + \eta_{end}

    With ``cycle``, :math:`T` is replaced by :math:`T \lceil t/T \rceil` (and
    :math:`T` at :math:`t = 0`) instead of capping :math:`t`. Two differences
    from Keras: :math:`1 - t/T` is clamped at 0, because under ``jit`` float32
    rounding can make it slightly negative at :math:`t = T`, where Keras then
    returns NaN for a fractional ``power``; and a negative ``power``, for which
    Keras returns inf at :math:`t = T` (and with ``cycle`` at every multiple of
    :math:`T`), raises.

    Args:
      initial_learning_rate: :math:`\eta_0`.
      decay_steps: :math:`T > 0`.
      end_learning_rate: :math:`\eta_{end}`.
      power: the exponent, :math:`\ge 0`.
      cycle: restart the decay every :math:`T` steps with a longer period.
      name: kept for Keras compatibility.

    Example:
      >>> import gradxform as gx
      >>> float(gx.keras.PolynomialDecay(1.0, decay_steps=10, end_learning_rate=0.0)(5))
      0.5
    """

    initial_learning_rate: float
    decay_steps: float
    end_learning_rate: float = 0.0001
    power: float = 1.0
    cycle: bool = False
    name: str = "PolynomialDecay"

    def __post_init__(self):
        _check_decay_steps(_owner(self), "decay_steps", self.decay_steps)
        _check_fields(self, real=["initial_learning_rate", "end_learning_rate"],
                      boolean=["cycle"])
        check_exponent(_owner(self), "power", self.power)

    def __call__(self, step):
        initial = jnp.asarray(self.initial_learning_rate, _F32)
        end = jnp.asarray(self.end_learning_rate, _F32)
        step = jnp.asarray(step).astype(_F32)
        decay_steps = jnp.asarray(self.decay_steps, _F32)
        if self.cycle:
            multiplier = jnp.where(step == 0, _F32(1.0), jnp.ceil(step / decay_steps))
            decay_steps = decay_steps * multiplier
        else:
            step = jnp.minimum(step, decay_steps)
        # Under jit XLA divides by multiplying with a rounded reciprocal, so at
        # t = T the base 1 - p can come out as -5e-8; Keras then returns NaN
        # for a fractional power, here the base is clamped at 0 (the rate at T).
        base = jnp.maximum(1 - step / decay_steps, _F32(0))
        return (initial - end) * jnp.power(base, jnp.asarray(self.power, _F32)) + end


@dataclasses.dataclass(frozen=True)
class InverseTimeDecay(_StepDecay):
    r"""Keras's ``InverseTimeDecay``.

    .. math::
        \eta(t) = \eta_0 / (1 + r\, p), \qquad p = t / T \;(\lfloor t/T \rfloor \text{ if staircase})

    Args:
      initial_learning_rate: :math:`\eta_0`.
      decay_steps: :math:`T > 0`.
      decay_rate: :math:`r`.
      staircase: decay in discrete steps.
      name: kept for Keras compatibility.

    Example:
      >>> import gradxform as gx
      >>> float(gx.keras.InverseTimeDecay(1.0, decay_steps=1, decay_rate=1.0)(3))
      0.25
    """

    name: str = "InverseTimeDecay"

    def __call__(self, step):
        p = _progress(step, self.decay_steps, self.staircase)
        initial = jnp.asarray(self.initial_learning_rate, _F32)
        return initial / (_F32(1) + jnp.asarray(self.decay_rate, _F32) * p)


@dataclasses.dataclass(frozen=True)
class CosineDecay(_KerasSchedule):
    r"""Keras's ``CosineDecay``, with optional linear warmup.

    .. math::
        \eta(t) = \begin{cases}
        \eta_0 + (\eta_w - \eta_0)\, t / W & t < W \\
        \eta_{top} \left((1-\alpha) \tfrac12 (1 + \cos(\pi \min(t - W, T) / T)) + \alpha\right)
        & \text{otherwise}
        \end{cases}

    with :math:`\eta_{top} = \eta_w` when ``warmup_target`` is set, else
    :math:`\eta_0` (and :math:`W = 0`).

    Args:
      initial_learning_rate: :math:`\eta_0`.
      decay_steps: :math:`T > 0`.
      alpha: :math:`\alpha`, the final rate as a fraction of :math:`\eta_{top}`.
      name: kept for Keras compatibility.
      warmup_target: :math:`\eta_w`, or None for no warmup.
      warmup_steps: :math:`W`.

    Example:
      >>> import gradxform as gx
      >>> round(float(gx.keras.CosineDecay(1.0, decay_steps=10)(5)), 6)
      0.5
    """

    initial_learning_rate: float
    decay_steps: float
    alpha: float = 0.0
    name: str = "CosineDecay"
    warmup_target: float | None = None
    warmup_steps: float = 0

    def __post_init__(self):
        _check_decay_steps(_owner(self), "decay_steps", self.decay_steps)
        _check_fields(self, real=["initial_learning_rate", "alpha"],
                      non_negative=["warmup_steps"])
        validation.optional_real(_owner(self), "warmup_target", self.warmup_target)

    def _decay(self, step, decay_steps, decay_from):
        completed = step / decay_steps
        cosine = 0.5 * (1.0 + jnp.cos(jnp.asarray(math.pi, _F32) * completed))
        return decay_from * ((1 - self.alpha) * cosine + self.alpha)

    def __call__(self, step):
        initial = jnp.asarray(self.initial_learning_rate, _F32)
        decay_steps = jnp.asarray(self.decay_steps, _F32)
        step = jnp.asarray(step).astype(_F32)
        if self.warmup_target is None:
            return self._decay(jnp.minimum(step, decay_steps), decay_steps, initial)
        target = jnp.asarray(self.warmup_target, _F32)
        warmup_steps = jnp.asarray(self.warmup_steps, _F32)
        step = jnp.minimum(step, decay_steps + warmup_steps)
        # With no warmup this branch is discarded; dividing by 1 keeps it free of 0/0.
        warmup_divisor = jnp.where(warmup_steps > 0, warmup_steps, _F32(1))
        warmup = (target - initial) * (step / warmup_divisor) + initial
        decay = self._decay(step - warmup_steps, decay_steps, target)
        return jnp.where(step < warmup_steps, warmup, decay)


@dataclasses.dataclass(frozen=True)
class CosineDecayRestarts(_KerasSchedule):
    r"""Keras's ``CosineDecayRestarts`` (SGDR, Loshchilov and Hutter, 2017).

    With :math:`f = t / T_0`, restart :math:`i` and fraction :math:`f_i` of it
    (:math:`i = \lfloor f \rfloor` when :math:`t_{mul} = 1`, otherwise
    :math:`i = \lfloor \log(1 - f(1-t_{mul})) / \log t_{mul} \rfloor` and
    :math:`f_i = (f - (1-t_{mul}^i)/(1-t_{mul})) / t_{mul}^i`):

    .. math::
        \eta(t) = \eta_0 \left((1-\alpha)\, \tfrac12 m_{mul}^{i} (1 + \cos(\pi f_i)) + \alpha\right)

    Args:
      initial_learning_rate: :math:`\eta_0`.
      first_decay_steps: :math:`T_0 > 0`.
      t_mul: :math:`t_{mul} \ge 1`, each period is :math:`t_{mul}` times longer
        than the previous. (Below 1 the periods add up to :math:`T_0 / (1 -
        t_{mul})` steps, after which Keras returns NaN; it raises here.)
      m_mul: each restart starts :math:`m_{mul}` times lower.
      alpha: the final rate as a fraction of the restart's rate.
      name: kept for Keras compatibility.

    Example:
      >>> import gradxform as gx
      >>> float(gx.keras.CosineDecayRestarts(1.0, first_decay_steps=10)(10))
      1.0
    """

    initial_learning_rate: float
    first_decay_steps: float
    t_mul: float = 2.0
    m_mul: float = 1.0
    alpha: float = 0.0
    name: str = "SGDRDecay"

    def __post_init__(self):
        owner = _owner(self)
        _check_decay_steps(owner, "first_decay_steps", self.first_decay_steps)
        _check_fields(self, real=["initial_learning_rate", "alpha"], non_negative=["m_mul"],
                      positive=["t_mul"])
        t_mul = validation.real_number(owner, "t_mul", self.t_mul)
        if t_mul is not None and t_mul < 1:
            raise ValueError(
                f"{owner}: t_mul must be >= 1, got t_mul={self.t_mul!r}: with shorter and "
                f"shorter periods the restarts add up to first_decay_steps / (1 - t_mul) = "
                f"{self.first_decay_steps / (1 - self.t_mul):g} steps, after which Keras "
                f"returns NaN"
            )

    def __call__(self, step):
        initial = jnp.asarray(self.initial_learning_rate, _F32)
        alpha = jnp.asarray(self.alpha, _F32)
        t_mul = jnp.asarray(self.t_mul, _F32)
        m_mul = jnp.asarray(self.m_mul, _F32)
        completed = jnp.asarray(step).astype(_F32) / jnp.asarray(self.first_decay_steps, _F32)

        i_linear = jnp.floor(completed)
        fraction_linear = completed - i_linear
        linear = t_mul == 1.0
        # The geometric branch is discarded when t_mul is 1; a stand-in keeps it free of 0/0.
        t_geo = jnp.where(linear, jnp.asarray(2.0, _F32), t_mul)
        i_geometric = jnp.floor(jnp.log(1.0 - completed * (1.0 - t_geo)) / jnp.log(t_geo))
        sum_r = (1.0 - jnp.power(t_geo, i_geometric)) / (1.0 - t_geo)
        fraction_geometric = (completed - sum_r) / jnp.power(t_geo, i_geometric)
        i_restart = jnp.where(linear, i_linear, i_geometric)
        fraction = jnp.where(linear, fraction_linear, fraction_geometric)

        cosine = 0.5 * jnp.power(m_mul, i_restart) * (
            1.0 + jnp.cos(jnp.asarray(math.pi, _F32) * fraction)
        )
        return initial * ((1 - alpha) * cosine + alpha)
