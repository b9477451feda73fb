r"""torch's annealing schedulers: ``CosineAnnealingLR``, ``CosineAnnealingWarmRestarts`` and
``OneCycleLR`` (with the momentum it cycles, `OneCycleMomentum`).

The conventions of `gradxform.torch.schedules` hold: the value at step
:math:`t` is the rate torch's optimizer uses for update :math:`t`, in
float32, and each half cosine :math:`\tfrac12(1 + \cos \pi x)` is evaluated
as :math:`\sin^2(\tfrac\pi2 (1 - x))`, exact near its end, where the rate is
smallest.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax.numpy as jnp
import numpy as np

from gradxform.core import validation
from gradxform.schedules.base import F32
from gradxform.torch.schedules import (
    _INT32_MAX,
    _between,
    _check_lr,
    _integer_step,
    _squared_sine,
    _TorchSchedule,
)


def _cosine(peak: float, trough: float, from_trough: Any, period: Any):
    r"""The rate :math:`d` steps from the trough of a half cosine of :math:`P` steps:
    :math:`\eta_{tr} + (\eta_{pk} - \eta_{tr}) \sin^2(\pi d / 2P)`, or the same from the
    peak when it is the lower rate, so that no digits cancel."""
    if peak >= trough:
        return _between(trough, peak, _squared_sine(from_trough.astype(F32) / period))
    return _between(peak, trough, _squared_sine((period - from_trough.astype(F32)) / period))


@dataclasses.dataclass(frozen=True, repr=False)
class CosineAnnealingLR(_TorchSchedule):
    r"""torch's ``CosineAnnealingLR``: half a cosine from ``lr`` to ``eta_min`` in ``T_max`` steps.

    .. math::
        \eta_t = \eta_{min} + (\eta - \eta_{min})\,
        \tfrac12 \left(1 + \cos\frac{\pi t}{T_{max}}\right)

    Past :math:`T_{max}` the cosine goes on, back up to :math:`\eta` at
    :math:`2T_{max}` and so on, as torch's recursive rule does (it has no restarts;
    `CosineAnnealingWarmRestarts` has).

    Args:
      lr: :math:`\eta \ge 0`.
      T_max: :math:`T_{max} \ge 1`.
      eta_min: :math:`\eta_{min} \ge 0`.

    Example:
      >>> import gradxform as gx
      >>> round(float(gx.torch.CosineAnnealingLR(0.1, T_max=10)(5)), 6)
      0.05
    """

    lr: Any
    T_max: int  # noqa: N815 (torch's name)
    eta_min: Any = 0.0

    def __post_init__(self):
        _check_lr(self)
        validation.positive_int(self.owner, "T_max", self.T_max)
        validation.non_negative(self.owner, "eta_min", self.eta_min)

    def __call__(self, step):
        step = _integer_step(self.owner, step)
        # The weight has period 2 T_max: rising half-periods mirror falling ones. The distance to
        # the trough, d in [0, T_max], gives sin^2(pi d / 2 T_max), exact near the trough.
        into = jnp.remainder(step, self.T_max)
        falling = jnp.remainder(step // self.T_max, 2) == 0
        from_trough = jnp.where(falling, self.T_max - into, into)
        return _cosine(self.lr, self.eta_min, from_trough, np.float32(self.T_max))


@dataclasses.dataclass(frozen=True, repr=False)
class CosineAnnealingWarmRestarts(_TorchSchedule):
    r"""torch's ``CosineAnnealingWarmRestarts`` (SGDR): cosine cycles, each ``T_mult`` times longer.

    .. math::
        \eta_t = \eta_{min} + (\eta - \eta_{min})\,
        \tfrac12 \left(1 + \cos\frac{\pi T_{cur}}{T_i}\right)

    where cycle :math:`i` lasts :math:`T_i = T_0 T_{mult}^i` steps and
    :math:`T_{cur}` counts the steps since it began. Loshchilov and Hutter, 2017.

    Args:
      lr: :math:`\eta \ge 0`.
      T_0: :math:`T_0 \ge 1`, the first cycle's length.
      T_mult: :math:`T_{mult} \ge 1`, an int.
      eta_min: :math:`\eta_{min} \ge 0`.

    Example:
      >>> import gradxform as gx
      >>> round(float(gx.torch.CosineAnnealingWarmRestarts(0.1, T_0=10)(15)), 6)
      0.05
    """

    lr: Any
    T_0: int  # noqa: N815
    T_mult: int = 1  # noqa: N815
    eta_min: Any = 0.0

    def __post_init__(self):
        _check_lr(self)
        validation.positive_int(self.owner, "T_0", self.T_0)
        validation.positive_int(self.owner, "T_mult", self.T_mult)
        validation.non_negative(self.owner, "eta_min", self.eta_min)

    def _cycles(self) -> list[tuple[int, int]]:
        """(first step, length) of each cycle that starts within the int32 steps."""
        cycles, start, length = [], 0, self.T_0
        while start <= _INT32_MAX and (not cycles or self.T_mult > 1):
            cycles.append((start, length))
            start, length = start + length, length * self.T_mult
        return cycles

    def __call__(self, step):
        step = _integer_step(self.owner, step)
        if self.T_mult == 1:
            into, length = jnp.remainder(step, self.T_0), jnp.full(step.shape, self.T_0, F32)
        else:
            start, length = jnp.zeros_like(step), jnp.full(step.shape, self.T_0, F32)
            for first, cycle_length in self._cycles()[1:]:
                begun = step >= first
                start = jnp.where(begun, first, start)
                length = jnp.where(begun, np.float32(cycle_length), length)
            into = step - start
        return _cosine(self.lr, self.eta_min, length - into.astype(F32), length)


def _cycle_steps(schedule: Any) -> int:
    """The cycle's length, from ``total_steps`` or else ``epochs * steps_per_epoch`` (torch's
    precedence), after checking the arguments that shape the cycle."""
    owner = schedule.owner
    for name in ("total_steps", "epochs", "steps_per_epoch"):
        validation.positive_int(owner, name, getattr(schedule, name), allow_none=True)
    validation.in_range(owner, "pct_start", schedule.pct_start, low=0.0, high=1.0)
    validation.string(owner, "anneal_strategy", schedule.anneal_strategy)
    if schedule.anneal_strategy not in ("cos", "linear"):
        raise ValueError(f"{owner}: anneal_strategy must be 'cos' or 'linear', got "
                         f"anneal_strategy={schedule.anneal_strategy!r}")
    validation.boolean(owner, "three_phase", schedule.three_phase)
    total = schedule.total_steps
    if total is None:
        if schedule.epochs is None or schedule.steps_per_epoch is None:
            raise ValueError(
                f"{owner}: give total_steps, or epochs and steps_per_epoch, got total_steps=None, "
                f"epochs={schedule.epochs!r}, steps_per_epoch={schedule.steps_per_epoch!r}")
        total = schedule.epochs * schedule.steps_per_epoch
        if total > _INT32_MAX:
            raise ValueError(
                f"{owner}: epochs * steps_per_epoch must be at most 2**31 - 1, got "
                f"epochs={schedule.epochs!r} * steps_per_epoch={schedule.steps_per_epoch!r}")
    if float(schedule.pct_start * total) - 1 == 0:
        raise ValueError(
            f"{owner}: pct_start * total_steps must not be 1, got pct_start={schedule.pct_start!r} "
            f"with {total} total steps: the warmup would end on step 0, where torch divides by "
            "zero; use a larger or smaller pct_start")
    return total


def _phase_ends(schedule: Any, total: int) -> list[float]:
    """The last step of each phase, as torch computes it (in float64)."""
    warmup_end = float(schedule.pct_start * total) - 1
    if schedule.three_phase:
        return [warmup_end, float(2 * schedule.pct_start * total) - 2, total - 1]
    return [warmup_end, total - 1]


def _one_cycle(schedule: Any, step: Any, values: list[tuple[float, float]]):
    """torch's piecewise annealing between ``values`` (a (start, end) pair per phase)."""
    step = _integer_step(schedule.owner, step)
    total = _cycle_steps(schedule)
    ends = _phase_ends(schedule, total)
    shape = _squared_sine if schedule.anneal_strategy == "cos" else (lambda x: x)
    position, start, pieces = step.astype(F32), 0.0, []
    for end, (first, last) in zip(ends, values):
        # A phase of length 0 is only reached where torch divides by zero (the NaN below).
        span = np.float32(end - start) if end != start else np.float32(1)
        done = (position - np.float32(start)) / span
        left = (np.float32(end) - position) / span
        # From the lower end up, so that the rate near the small end keeps its digits.
        value = (_between(first, last, shape(done)) if first <= last
                 else _between(last, first, shape(left)))
        pieces.append((math.floor(end), value))
        start = end
    rate = pieces[-1][1]
    for last_step, value in reversed(pieces[:-1]):
        rate = jnp.where(step <= last_step, value, rate)
    # torch raises past total_steps (and at it, if the last phase is empty); a jitted schedule
    # cannot raise, so it gives NaN, which makes the updates NaN instead of silently going on.
    defined = total if ends[-1] != ends[-2] else total - 1
    return jnp.where(step > defined, np.float32(np.nan), rate)


@dataclasses.dataclass(frozen=True, repr=False)
class OneCycleLR(_TorchSchedule):
    r"""torch's ``OneCycleLR``: up from ``max_lr / div_factor`` to ``max_lr``, then down to
    ``max_lr / (div_factor * final_div_factor)`` (Smith, 2018).

    With :math:`N` steps, :math:`\eta_0 = \eta_{max}/d` and :math:`\eta_{min} = \eta_0/d_f`,
    the phases end on the steps :math:`e_0 = pN - 1` and :math:`e_1 = N - 1`, and
    in the phase from :math:`e_{i-1}` (or 0) to :math:`e_i`, with
    :math:`x = (t - e_{i-1}) / (e_i - e_{i-1})`:

    .. math::
        \eta_t = b + (a - b)\, \tfrac12 (1 + \cos \pi x) \;\; (\text{``cos''}), \qquad
        \eta_t = a + (b - a)\, x \;\; (\text{``linear''})

    from :math:`a = \eta_0` to :math:`b = \eta_{max}`, then from :math:`\eta_{max}`
    to :math:`\eta_{min}`. With ``three_phase``: :math:`\eta_0 \to \eta_{max}` until
    :math:`pN - 1`, back to :math:`\eta_0` at :math:`2pN - 2`, then to :math:`\eta_{min}`.

    Steps: the rate at :math:`t = N` is torch's (the last phase one step on); past
    :math:`N`, where torch raises, it is NaN, so that training past the cycle
    cannot go on unnoticed. ``pct_start * total_steps == 1``, where torch divides
    by zero, raises.

    Momentum: torch's ``OneCycleLR`` also sets the optimizer's momentum (SGD's
    ``momentum``, Adam's ``betas[0]``) at every step, unless ``cycle_momentum=False``.
    This schedule gives the rate only: ``gx.torch.SGD(lr=s, momentum=0.9)`` keeps 0.9,
    as torch does with ``cycle_momentum=False``. To cycle it as torch does by
    default, inject `momentum_schedule` into an optimizer that takes a scheduled
    momentum: ``gx.inject_hyperparams(gx.sgd)(learning_rate=s, momentum=s.momentum_schedule())``.

    Args:
      max_lr: :math:`\eta_{max} \ge 0`.
      total_steps: :math:`N \ge 1`, or None to use ``epochs * steps_per_epoch``.
      epochs: the number of epochs, with ``steps_per_epoch`` (ignored when
        ``total_steps`` is given, as in torch).
      steps_per_epoch: the number of steps per epoch.
      pct_start: :math:`p \in [0, 1]`, the fraction of the steps spent warming up.
      anneal_strategy: ``"cos"`` or ``"linear"``.
      cycle_momentum: whether torch would cycle the momentum (`momentum_schedule`).
      base_momentum: the momentum at the peak rate, in [0, 1].
      max_momentum: the momentum at the start and the end, in [0, 1].
      div_factor: :math:`d > 0`.
      final_div_factor: :math:`d_f > 0`.
      three_phase: the original paper's three phases instead of fastai's two.

    Example:
      >>> import gradxform as gx
      >>> s = gx.torch.OneCycleLR(1.0, total_steps=100)
      >>> round(float(s(0)), 6), round(float(s(29)), 6), round(float(s.momentum_schedule()(29)), 6)
      (0.04, 1.0, 0.85)
    """

    max_lr: Any
    total_steps: int | None = None
    epochs: int | None = None
    steps_per_epoch: int | None = None
    pct_start: Any = 0.3
    anneal_strategy: str = "cos"
    cycle_momentum: bool = True
    base_momentum: Any = 0.85
    max_momentum: Any = 0.95
    div_factor: Any = 25.0
    final_div_factor: Any = 1e4
    three_phase: bool = False

    def __post_init__(self):
        owner = self.owner
        _check_lr(self, "max_lr")
        _cycle_steps(self)
        validation.boolean(owner, "cycle_momentum", self.cycle_momentum)
        for name in ("base_momentum", "max_momentum"):
            validation.decay_rate(owner, name, getattr(self, name), allow_one=True)
        validation.positive(owner, "div_factor", self.div_factor)
        validation.positive(owner, "final_div_factor", self.final_div_factor)

    def momentum_schedule(self) -> OneCycleMomentum:
        """The momentum (or Adam's ``beta1``) torch's ``OneCycleLR`` sets at each step."""
        if not self.cycle_momentum:
            raise ValueError(f"{self.owner}: momentum_schedule: cycle_momentum=False, so torch "
                             "leaves the optimizer's momentum as it is; pass that number instead")
        fields = ("total_steps", "epochs", "steps_per_epoch", "pct_start", "anneal_strategy",
                  "base_momentum", "max_momentum", "three_phase")
        return OneCycleMomentum(**{name: getattr(self, name) for name in fields})

    def __call__(self, step):
        initial = self.max_lr / self.div_factor
        low = initial / self.final_div_factor
        values = [(initial, self.max_lr), (self.max_lr, low)]
        if self.three_phase:
            values = [(initial, self.max_lr), (self.max_lr, initial), (initial, low)]
        return _one_cycle(self, step, values)


@dataclasses.dataclass(frozen=True, repr=False)
class OneCycleMomentum(_TorchSchedule):
    r"""The momentum torch's ``OneCycleLR`` sets at each step: the mirror image of the rate.

    .. math::
        \mu: \mu_{max} \to \mu_{base} \text{ (warmup)} \to \mu_{max}
        \;(\text{three phases: } \mu_{max} \to \mu_{base} \to \mu_{max} \to \mu_{max})

    on `OneCycleLR`'s phases and annealing. Usually made by
    ``OneCycleLR.momentum_schedule()``; inject it as the momentum (SGD) or
    ``b1`` (Adam) with `inject_hyperparams`.

    Args:
      total_steps: as in `OneCycleLR`.
      epochs: as in `OneCycleLR`.
      steps_per_epoch: as in `OneCycleLR`.
      pct_start: as in `OneCycleLR`.
      anneal_strategy: as in `OneCycleLR`.
      base_momentum: :math:`\mu_{base} \in [0, 1]`, at the peak rate.
      max_momentum: :math:`\mu_{max} \in [0, 1]`.
      three_phase: as in `OneCycleLR`.

    Example:
      >>> import gradxform as gx
      >>> round(float(gx.torch.OneCycleMomentum(total_steps=100)(0)), 6)
      0.95
    """

    total_steps: int | None = None
    epochs: int | None = None
    steps_per_epoch: int | None = None
    pct_start: Any = 0.3
    anneal_strategy: str = "cos"
    base_momentum: Any = 0.85
    max_momentum: Any = 0.95
    three_phase: bool = False

    def __post_init__(self):
        _cycle_steps(self)
        for name in ("base_momentum", "max_momentum"):
            validation.decay_rate(self.owner, name, getattr(self, name), allow_one=True)

    def __call__(self, step):
        high, low = self.max_momentum, self.base_momentum
        values = [(high, low), (low, high)] + ([(high, high)] if self.three_phase else [])
        return _one_cycle(self, step, values)
