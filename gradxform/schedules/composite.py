"""optax's schedules built from others: join, warmup + cosine, SGDR, and the one-cycle policies."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax.numpy as jnp

from gradxform.core import validation
from gradxform.schedules.base import F32, ScheduleObject, as_float_count, check_exponent
from gradxform.schedules.standard import CosineDecaySchedule, LinearSchedule


@dataclasses.dataclass(frozen=True, repr=False)
class JoinSchedules(ScheduleObject):
    r"""One schedule after another (optax's ``join_schedules``).

    .. math::
        s(t) = s_i(t - b_i) \quad \text{for } b_i \le t < b_{i+1}, \; b_0 = 0

    Unlike optax, boundaries that are not strictly increasing from 1 raise:
    they would leave a schedule without a single step.

    Args:
      schedules: :math:`n` schedules; each sees the steps since its boundary.
      boundaries: the :math:`n - 1` steps :math:`0 < b_1 < b_2 < \dots` where
        the next schedule starts.

    Example:
      >>> import gradxform as gx
      >>> s = gx.schedules.join_schedules(
      ...     [gx.schedules.constant_schedule(1.0), gx.schedules.constant_schedule(0.1)], [10])
      >>> round(float(s(12)), 6)
      0.1
    """

    schedules: tuple
    boundaries: tuple
    public_name = "join_schedules"

    def __post_init__(self):
        owner = self.owner
        if not isinstance(self.schedules, (list, tuple)):
            raise TypeError(
                f"{owner}: schedules must be a list of schedules, got {self.schedules!r}"
            )
        validation.int_sequence(owner, "boundaries", self.boundaries)
        object.__setattr__(self, "schedules", tuple(self.schedules))
        object.__setattr__(self, "boundaries", tuple(self.boundaries))
        if len(self.boundaries) != len(self.schedules) - 1:
            raise ValueError(
                f"{owner}: boundaries must have one entry fewer than schedules, got "
                f"{len(self.boundaries)} boundaries for {len(self.schedules)} schedules: "
                f"schedules={list(self.schedules)!r}, boundaries={list(self.boundaries)!r}"
            )
        for schedule in self.schedules:
            if not callable(schedule):
                raise TypeError(
                    f"{owner}: schedules must be callable, got {schedule!r} in "
                    f"schedules={list(self.schedules)!r}"
                )
        starts = (0,) + self.boundaries
        if any(b <= a for a, b in zip(starts, starts[1:])):
            raise ValueError(
                f"{owner}: boundaries must increase strictly from 1 (schedule i runs from "
                f"boundaries[i-1] to boundaries[i], the first from step 0), got "
                f"boundaries={list(self.boundaries)!r}, which leaves a schedule no step"
            )

    def __call__(self, step):
        step = jnp.asarray(step)
        output = self.schedules[0](step)
        for boundary, schedule in zip(self.boundaries, self.schedules[1:]):
            output = jnp.where(step < boundary, output, schedule(step - boundary))
        return output


@dataclasses.dataclass(frozen=True, repr=False)
class WarmupCosineDecaySchedule(ScheduleObject):
    r"""Linear warmup, then cosine decay (optax's ``warmup_cosine_decay_schedule``).

    .. math::
        s(t) = \begin{cases} v_0 + (v_{peak} - v_0)\, t / W & t < W \\
        v_{peak}\left((1-\alpha)\,\left(\tfrac12(1 + \cos(\pi \min(t-W, D)/D))\right)^{e} + \alpha\right)
        & t \ge W \end{cases}

    with :math:`D = T - W` and :math:`\alpha = v_{end} / v_{peak}`.

    Args:
      init_value: :math:`v_0`.
      peak_value: :math:`v_{peak}`.
      warmup_steps: :math:`W \ge 0`.
      decay_steps: :math:`T > W`, the total length including the warmup.
      end_value: :math:`v_{end}`.
      exponent: :math:`e \ge 0` (a negative one would give inf at :math:`t = T`).

    Example:
      >>> import gradxform as gx
      >>> s = gx.schedules.warmup_cosine_decay_schedule(0.0, 1.0, warmup_steps=10, decay_steps=110)
      >>> float(s(10))
      1.0
    """

    init_value: Any
    peak_value: Any
    warmup_steps: int
    decay_steps: int
    end_value: Any = 0.0
    exponent: Any = 1.0
    public_name = "warmup_cosine_decay_schedule"

    def __post_init__(self):
        owner = self.owner
        for name in ("init_value", "peak_value", "end_value"):
            validation.real_number(owner, name, getattr(self, name))
        check_exponent(owner, "exponent", self.exponent)
        validation.positive_int(owner, "warmup_steps", self.warmup_steps, minimum=0)
        validation.positive_int(owner, "decay_steps", self.decay_steps)
        if self.decay_steps <= self.warmup_steps:
            raise ValueError(
                f"{owner}: decay_steps must exceed warmup_steps ({self.warmup_steps}), "
                f"got {self.decay_steps!r}"
            )

    def joined(self) -> ScheduleObject:
        """The equivalent `join_schedules` of a linear warmup and a cosine decay (the decay
        alone without warmup)."""
        alpha = 0.0 if self.peak_value == 0.0 else self.end_value / self.peak_value
        decay = CosineDecaySchedule(
            self.peak_value, self.decay_steps - self.warmup_steps, alpha, self.exponent
        )
        if self.warmup_steps == 0:
            return decay
        warmup = LinearSchedule(self.init_value, self.peak_value, self.warmup_steps)
        return JoinSchedules((warmup, decay), (self.warmup_steps,))

    def __call__(self, step):
        return self.joined()(step)


@dataclasses.dataclass(frozen=True, repr=False)
class SgdrSchedule(ScheduleObject):
    r"""Warm restarts: warmup-cosine cycles one after another (optax's ``sgdr_schedule``).

    .. math::
        s(t) = s_i(t - B_i), \qquad B_i = \textstyle\sum_{j<i} T_j

    where :math:`s_i` is ``warmup_cosine_decay_schedule(**cosine_kwargs[i])`` and
    :math:`T_j` its ``decay_steps``. Loshchilov and Hutter, 2017.

    Args:
      cosine_kwargs: one dict of `warmup_cosine_decay_schedule` arguments per cycle.

    Example:
      >>> import gradxform as gx
      >>> cycle = dict(init_value=0.0, peak_value=1.0, warmup_steps=2, decay_steps=10)
      >>> s = gx.schedules.sgdr_schedule([cycle, cycle])
      >>> float(s(12))
      1.0
    """

    cosine_kwargs: tuple
    public_name = "sgdr_schedule"

    def __post_init__(self):
        given = self.cosine_kwargs
        if not isinstance(given, (list, tuple)) or not all(isinstance(k, dict) for k in given):
            raise TypeError(f"{self.owner}: cosine_kwargs must be a list of dicts, got {given!r}")
        object.__setattr__(self, "cosine_kwargs", tuple(dict(k) for k in self.cosine_kwargs))
        if not self.cosine_kwargs:
            raise ValueError(
                f"{self.owner}: cosine_kwargs must hold at least one cycle, got {given!r}"
            )
        for index, kwargs in enumerate(self.cosine_kwargs):
            try:
                WarmupCosineDecaySchedule(**kwargs)  # validates the cycle
            except (TypeError, ValueError) as error:
                raise type(error)(
                    f"{self.owner}: cosine_kwargs[{index}] is not a valid cycle: {error}; in "
                    f"cosine_kwargs={given!r}"
                ) from None

    def __hash__(self):
        return hash(tuple(tuple(sorted(k.items())) for k in self.cosine_kwargs))

    def __call__(self, step):
        schedules, boundaries, start = [], [], 0
        for kwargs in self.cosine_kwargs:
            schedules.append(WarmupCosineDecaySchedule(**kwargs))
            start += kwargs["decay_steps"]
            boundaries.append(start)
        return JoinSchedules(tuple(schedules), tuple(boundaries[:-1]))(step)


def _linear_interpolate(start, end, fraction):
    return (end - start) * fraction + start


def _cosine_interpolate(start, end, fraction):
    return end + (start - end) / 2.0 * (jnp.cos(jnp.pi * fraction) + 1)


def _piecewise_interpolate(
    interpolate: Callable, init_value: Any, boundaries_and_scales: dict, count: Any
):
    """optax's ``piecewise_interpolate_schedule``, evaluated at ``count``."""
    boundaries, scales = zip(*sorted(boundaries_and_scales.items()))
    count = jnp.asarray(count)
    bounds = jnp.stack((0,) + boundaries)
    values = jnp.cumprod(jnp.stack((init_value,) + scales))
    interval_sizes = jnp.maximum(bounds[1:] - bounds[:-1], 1)
    inside = jnp.logical_and(bounds[:-1] <= count, count < bounds[1:]).astype(F32)
    fraction = as_float_count(count - bounds[:-1]) / interval_sizes.astype(F32)
    interpolated = interpolate(values[:-1], values[1:], fraction)
    return inside.dot(interpolated) + (bounds[-1] <= count).astype(F32) * values[-1]


def _check_onecycle(owner: str, transition_steps: Any, peak_value: Any) -> None:
    validation.positive_int(owner, "transition_steps", transition_steps)
    validation.real_number(owner, "peak_value", peak_value)


def _check_onecycle_shape(schedule: Any) -> None:
    """The fractions of ``transition_steps`` in [0, 1], on steps in order, and the divisors > 0.

    Each phase ends on the step ``int(pct * transition_steps)``, a key of the
    dict the schedule interpolates; two phases ending on the same step would
    leave one dict entry, silently dropping a phase.
    """
    owner, steps = schedule.owner, schedule.transition_steps
    names = [name for name in ("pct_start", "pct_final") if hasattr(schedule, name)]
    for name in names:
        validation.decay_rate(owner, name, getattr(schedule, name), allow_one=True)
    validation.positive(owner, "div_factor", schedule.div_factor)
    validation.positive(owner, "final_div_factor", schedule.final_div_factor)
    ends = [int(getattr(schedule, name) * steps) for name in names]
    if len(ends) == 2 and ends[0] >= ends[1]:
        raise ValueError(
            f"{owner}: pct_start must end the warmup on an earlier step than pct_final ends the "
            f"decay, int(pct_start * transition_steps) < int(pct_final * transition_steps), got "
            f"pct_start={schedule.pct_start!r}, pct_final={schedule.pct_final!r} with "
            f"transition_steps={steps!r} (steps {ends[0]} and {ends[1]})"
        )
    if ends[-1] >= steps:
        name = names[-1]
        raise ValueError(
            f"{owner}: {name} must end its phase before the last phase ends at "
            f"transition_steps, int({name} * transition_steps) < transition_steps, got "
            f"{name}={getattr(schedule, name)!r} with transition_steps={steps!r}"
        )


@dataclasses.dataclass(frozen=True, repr=False)
class LinearOnecycleSchedule(ScheduleObject):
    r"""The linear one-cycle policy (optax's ``linear_onecycle_schedule``; Smith, 2018).

    .. math::
        v_{peak}/d \;\nearrow\; v_{peak} \text{ at } p_s T \;\searrow\; v_{peak}/d \text{ at } p_f T
        \;\searrow\; v_{peak}/(d\, d_f) \text{ at } T, \text{ linearly}

    Args:
      transition_steps: :math:`T \ge 1`.
      peak_value: :math:`v_{peak}`.
      pct_start: :math:`p_s`, with :math:`\lfloor p_s T \rfloor < \lfloor p_f T \rfloor`.
      pct_final: :math:`p_f`, with :math:`\lfloor p_f T \rfloor < T`.
      div_factor: :math:`d`.
      final_div_factor: :math:`d_f`.

    Example:
      >>> import gradxform as gx
      >>> round(float(gx.schedules.linear_onecycle_schedule(100, peak_value=1.0)(30)), 6)
      1.0
    """

    transition_steps: int
    peak_value: Any
    pct_start: float = 0.3
    pct_final: float = 0.85
    div_factor: float = 25.0
    final_div_factor: float = 1e4
    public_name = "linear_onecycle_schedule"

    def __post_init__(self):
        _check_onecycle(self.owner, self.transition_steps, self.peak_value)
        _check_onecycle_shape(self)

    def __call__(self, count):
        steps = self.transition_steps
        return _piecewise_interpolate(
            _linear_interpolate,
            self.peak_value / self.div_factor,
            {
                int(self.pct_start * steps): self.div_factor,
                int(self.pct_final * steps): 1.0 / self.div_factor,
                steps: 1.0 / self.final_div_factor,
            },
            count,
        )


@dataclasses.dataclass(frozen=True, repr=False)
class CosineOnecycleSchedule(ScheduleObject):
    r"""The cosine one-cycle policy (optax's ``cosine_onecycle_schedule``; Smith, 2018).

    .. math::
        v_{peak}/d \;\nearrow\; v_{peak} \text{ at } p_s T \;\searrow\; v_{peak}/(d\, d_f)
        \text{ at } T, \text{ along half cosines}

    Args:
      transition_steps: :math:`T \ge 1`.
      peak_value: :math:`v_{peak}`.
      pct_start: :math:`p_s`, with :math:`\lfloor p_s T \rfloor < T`.
      div_factor: :math:`d`.
      final_div_factor: :math:`d_f`.

    Example:
      >>> import gradxform as gx
      >>> round(float(gx.schedules.cosine_onecycle_schedule(100, peak_value=1.0)(30)), 6)
      1.0
    """

    transition_steps: int
    peak_value: Any
    pct_start: float = 0.3
    div_factor: float = 25.0
    final_div_factor: float = 1e4
    public_name = "cosine_onecycle_schedule"

    def __post_init__(self):
        _check_onecycle(self.owner, self.transition_steps, self.peak_value)
        _check_onecycle_shape(self)

    def __call__(self, count):
        steps = self.transition_steps
        return _piecewise_interpolate(
            _cosine_interpolate,
            self.peak_value / self.div_factor,
            {
                int(self.pct_start * steps): self.div_factor,
                int(steps): 1.0 / (self.div_factor * self.final_div_factor),
            },
            count,
        )


join_schedules = JoinSchedules
warmup_cosine_decay_schedule = WarmupCosineDecaySchedule
sgdr_schedule = SgdrSchedule
linear_onecycle_schedule = LinearOnecycleSchedule
cosine_onecycle_schedule = CosineOnecycleSchedule
