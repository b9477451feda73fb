r"""``torch.optim.lr_scheduler``'s schedulers as gradxform schedules ``step -> lr``.

A torch scheduler is stepped once after each ``optimizer.step()``; update
:math:`t` (from 0) uses the rate after :math:`t` scheduler steps. Each
schedule here returns that rate at step :math:`t`, so
``gx.torch.SGD(lr=gx.torch.StepLR(0.1, step_size=30))`` follows
``SGD(params, lr=0.1)`` with ``StepLR(optimizer, step_size=30)``. The base
rate, which torch reads from the optimizer, is the first argument; the others
keep torch's names and defaults.

torch computes most rates recursively (``lr *= gamma``) in float64; these
evaluate the closed form in float32, rearranged where float32 would lose
digits (:math:`\tfrac12(1 + \cos\pi x)` as :math:`\sin^2(\tfrac\pi2(1 - x))`,
:math:`\gamma^k` as a product of float64 powers rounded once), and agree with
torch to about 1e-6 of the rate. Steps must be integers. Arguments for which
torch raises (``T_max=0``, ``factor=0`` in ``ConstantLR``) or for which its
recursive and closed forms disagree (``total_iters=0``) raise here at
construction, naming the schedule as ``torch.StepLR``.

The cosine and one-cycle schedules are in `gradxform.torch.annealing`, and
``ReduceLROnPlateau``, which reads a metric, is a transformation in
`gradxform.torch.plateau`. torch's ``MultiplicativeLR`` is not provided: its
rate is a product over every past step of a Python function, which a
stateless schedule would recompute in full at each step, and which could not
be saved; write the product in closed form as a `LambdaLR`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import jax.numpy as jnp
import numpy as np

from gradxform.core import validation
from gradxform.schedules.base import F32, ScheduleObject, check_exponent

_INT32_MAX = int(np.iinfo(np.int32).max)


class _TorchSchedule(ScheduleObject):
    """Errors name the schedule as ``torch.StepLR``; the repr is the call."""

    @property
    def owner(self) -> str:
        return f"torch.{type(self).__name__}"


def _integer_step(owner: str, step: Any):
    """The step as an integer array: torch counts whole scheduler steps."""
    step = jnp.asarray(step)
    if not jnp.issubdtype(step.dtype, jnp.integer):
        raise TypeError(f"{owner}: the step must be an integer (the number of scheduler steps "
                        f"taken), got an array of {step.dtype}")
    return step


def _float64_power(base: float, exponent: int) -> float:
    """``base ** exponent`` in float64, inf where it overflows."""
    try:
        return float(base) ** exponent
    except OverflowError:
        return math.inf


def _integer_power(base: float, exponent: Any, largest: int = _INT32_MAX):
    """``base ** exponent`` in float32 for integer ``exponent`` in [0, largest]: the product of
    the powers ``base ** 2**k`` of its set bits, each computed in float64 and rounded once
    (``float32(base) ** k`` would carry base's rounding k times)."""
    result = jnp.ones(jnp.shape(exponent), F32)
    for bit in range(max(int(largest), 1).bit_length()):
        factor = np.float32(validation.in_float32(_float64_power(base, 2**bit)))
        result = jnp.where(jnp.right_shift(exponent, bit) & 1 == 1, result * factor, result)
    return result


def _squared_sine(fraction):
    r""":math:`\sin^2(\tfrac\pi2 f) = \tfrac12(1 - \cos \pi f)`, exact to float32 near 0."""
    return jnp.square(jnp.sin(np.float32(math.pi / 2) * fraction))


def _between(low: float, high: float, weight):
    """``low + (high - low) * weight`` in float32."""
    return np.float32(low) + np.float32(high - low) * weight


def _check_lr(schedule: Any, name: str = "lr") -> None:
    validation.non_negative(schedule.owner, name, getattr(schedule, name))


def _check_total_iters(schedule: Any) -> None:
    # torch's recursive rule and its closed form disagree at total_iters=0 (the recursion keeps
    # the first factor forever, the closed form divides by 0), so 0 is refused.
    validation.positive_int(schedule.owner, "total_iters", schedule.total_iters)


@dataclasses.dataclass(frozen=True, repr=False)
class StepLR(_TorchSchedule):
    r"""torch's ``StepLR``: the rate times ``gamma`` every ``step_size`` steps.

    .. math::
        \eta_t = \eta\, \gamma^{\lfloor t / s \rfloor}

    Args:
      lr: :math:`\eta \ge 0`, the optimizer's rate.
      step_size: :math:`s \ge 1`.
      gamma: :math:`\gamma \ge 0`.

    Example:
      >>> import gradxform as gx
      >>> round(float(gx.torch.StepLR(0.1, step_size=30)(65)), 6)
      0.001
    """

    lr: Any
    step_size: int
    gamma: Any = 0.1

    def __post_init__(self):
        _check_lr(self)
        validation.positive_int(self.owner, "step_size", self.step_size)
        validation.non_negative(self.owner, "gamma", self.gamma)

    def __call__(self, step):
        decays = _integer_step(self.owner, step) // self.step_size
        return np.float32(self.lr) * _integer_power(self.gamma, decays,
                                                     _INT32_MAX // self.step_size)


@dataclasses.dataclass(frozen=True, repr=False)
class MultiStepLR(_TorchSchedule):
    r"""torch's ``MultiStepLR``: the rate times ``gamma`` at each milestone.

    .. math::
        \eta_t = \eta\, \gamma^{\#\{i \,:\, m_i \le t\}}

    As in torch, a milestone listed twice decays twice, and the order does not matter.

    Args:
      lr: :math:`\eta \ge 0`.
      milestones: the steps :math:`m_i \ge 0`.
      gamma: :math:`\gamma \ge 0`.

    Example:
      >>> import gradxform as gx
      >>> round(float(gx.torch.MultiStepLR(0.1, milestones=[30, 80])(50)), 6)
      0.01
    """

    lr: Any
    milestones: tuple
    gamma: Any = 0.1

    def __post_init__(self):
        _check_lr(self)
        validation.int_sequence(self.owner, "milestones", self.milestones)
        object.__setattr__(self, "milestones", tuple(int(m) for m in self.milestones))
        validation.non_negative(self.owner, "gamma", self.gamma)

    def __call__(self, step):
        step = _integer_step(self.owner, step)
        decays = sum(((step >= m).astype(jnp.int32) for m in self.milestones),
                     jnp.zeros(step.shape, jnp.int32))
        return np.float32(self.lr) * _integer_power(self.gamma, decays, len(self.milestones))


@dataclasses.dataclass(frozen=True, repr=False)
class ConstantLR(_TorchSchedule):
    r"""torch's ``ConstantLR``: the rate times ``factor`` for the first ``total_iters`` steps.

    .. math::
        \eta_t = \eta\, f \;(t < T), \qquad \eta_t = \eta \;(t \ge T)

    Args:
      lr: :math:`\eta \ge 0`.
      factor: :math:`f \in (0, 1]` (torch divides by it at :math:`T`; 0 raises there).
      total_iters: :math:`T \ge 1`.

    Example:
      >>> import gradxform as gx
      >>> s = gx.torch.ConstantLR(0.3, factor=0.5, total_iters=2)
      >>> [round(float(s(t)), 6) for t in range(3)]
      [0.15, 0.15, 0.3]
    """

    lr: Any
    factor: Any = 1.0 / 3
    total_iters: int = 5

    def __post_init__(self):
        _check_lr(self)
        validation.in_range(self.owner, "factor", self.factor, low=0.0, high=1.0, low_open=True)
        _check_total_iters(self)

    def __call__(self, step):
        step = _integer_step(self.owner, step)
        return jnp.where(step < self.total_iters, np.float32(self.lr * self.factor),
                         np.float32(self.lr))


@dataclasses.dataclass(frozen=True, repr=False)
class LinearLR(_TorchSchedule):
    r"""torch's ``LinearLR``: the factor moves linearly from ``start_factor`` to ``end_factor``.

    .. math::
        \eta_t = \eta\, \frac{f_0 (T - \min(t, T)) + f_1 \min(t, T)}{T}

    Args:
      lr: :math:`\eta \ge 0`.
      start_factor: :math:`f_0 \in (0, 1]`.
      end_factor: :math:`f_1 \in [0, 1]`.
      total_iters: :math:`T \ge 1`, the step that reaches :math:`f_1`.

    Example:
      >>> import gradxform as gx
      >>> round(float(gx.torch.LinearLR(0.1, start_factor=0.5, total_iters=4)(2)), 6)
      0.075
    """

    lr: Any
    start_factor: Any = 1.0 / 3
    end_factor: Any = 1.0
    total_iters: int = 5

    def __post_init__(self):
        _check_lr(self)
        validation.in_range(self.owner, "start_factor", self.start_factor, low=0.0, high=1.0,
                            low_open=True)
        validation.in_range(self.owner, "end_factor", self.end_factor, low=0.0, high=1.0)
        _check_total_iters(self)

    def __call__(self, step):
        done = jnp.minimum(_integer_step(self.owner, step), self.total_iters).astype(F32)
        # Two non-negative terms: no cancellation when end_factor is 0.
        rate = self.lr / self.total_iters
        return (np.float32(rate * self.start_factor) * (self.total_iters - done)
                + np.float32(rate * self.end_factor) * done)


@dataclasses.dataclass(frozen=True, repr=False)
class ExponentialLR(_TorchSchedule):
    r"""torch's ``ExponentialLR``: the rate times ``gamma`` every step.

    .. math::
        \eta_t = \eta\, \gamma^t

    Args:
      lr: :math:`\eta \ge 0`.
      gamma: :math:`\gamma \ge 0` (above 1 the rate grows, and overflows float32 at some step).

    Example:
      >>> import gradxform as gx
      >>> round(float(gx.torch.ExponentialLR(0.1, gamma=0.5)(3)), 6)
      0.0125
    """

    lr: Any
    gamma: Any

    def __post_init__(self):
        _check_lr(self)
        validation.non_negative(self.owner, "gamma", self.gamma)

    def __call__(self, step):
        return np.float32(self.lr) * _integer_power(self.gamma, _integer_step(self.owner, step))


@dataclasses.dataclass(frozen=True, repr=False)
class PolynomialLR(_TorchSchedule):
    r"""torch's ``PolynomialLR``: a polynomial decay to 0 at ``total_iters``, then 0.

    .. math::
        \eta_t = \eta \left(\frac{T - \min(t, T)}{T}\right)^{p}

    Args:
      lr: :math:`\eta \ge 0`.
      total_iters: :math:`T \ge 1`.
      power: :math:`p \ge 0` (torch raises at :math:`t = T` for a negative one).

    Example:
      >>> import gradxform as gx
      >>> round(float(gx.torch.PolynomialLR(0.1, total_iters=4, power=2.0)(2)), 6)
      0.025
    """

    lr: Any
    total_iters: int = 5
    power: Any = 1.0

    def __post_init__(self):
        _check_lr(self)
        _check_total_iters(self)
        check_exponent(self.owner, "power", self.power)

    def __call__(self, step):
        left = self.total_iters - jnp.minimum(_integer_step(self.owner, step), self.total_iters)
        fraction = left.astype(F32) / np.float32(self.total_iters)
        return np.float32(self.lr) * jnp.power(fraction, np.float32(self.power))


@dataclasses.dataclass(frozen=True, repr=False)
class SequentialLR(_TorchSchedule):
    r"""torch's ``SequentialLR``: each schedule in turn, restarted from 0 at its milestone.

    .. math::
        \eta_t = s_i(t - m_{i-1}), \qquad i = \#\{j : m_j \le t\}, \; m_{-1} = 0

    torch's rules, milestones included: ``milestones=[0]`` skips the first
    schedule, a repeated milestone the schedules between. Each schedule brings
    its own base rate; in torch all share the optimizer's ``initial_lr``, which
    a ``OneCycleLR`` among them overwrites with ``max_lr / div_factor``.

    Args:
      schedulers: the schedules (any callable ``step -> lr``), at least one.
      milestones: one fewer non-decreasing steps :math:`m_j \ge 0`.

    Example:
      >>> import gradxform as gx
      >>> s = gx.torch.SequentialLR(
      ...     [gx.torch.LinearLR(0.1, total_iters=5), gx.torch.ExponentialLR(0.1, gamma=0.9)], [5])
      >>> round(float(s(7)), 6)
      0.081
    """

    schedulers: tuple
    milestones: tuple

    def __post_init__(self):
        owner, given = self.owner, self.schedulers
        if not isinstance(given, (list, tuple)) or not all(callable(s) for s in given):
            raise TypeError(f"{owner}: schedulers must be a list of callables step -> lr, got "
                            f"schedulers={given!r}")
        if not given:
            raise ValueError(f"{owner}: schedulers must hold at least one schedule, got "
                             f"schedulers={given!r}")
        validation.int_sequence(owner, "milestones", self.milestones)
        object.__setattr__(self, "schedulers", tuple(self.schedulers))
        object.__setattr__(self, "milestones", tuple(int(m) for m in self.milestones))
        if len(self.milestones) != len(self.schedulers) - 1:
            raise ValueError(
                f"{owner}: milestones must have one entry fewer than schedulers, got "
                f"milestones={list(self.milestones)!r} for {len(given)} schedulers={given!r}")
        if list(self.milestones) != sorted(self.milestones):
            raise ValueError(f"{owner}: milestones must be non-decreasing (torch looks them up "
                             f"by bisection), got milestones={list(self.milestones)!r}")

    def __call__(self, step):
        step = _integer_step(self.owner, step)
        rate = jnp.asarray(self.schedulers[0](step)).astype(F32)
        for milestone, schedule in zip(self.milestones, self.schedulers[1:]):
            later = jnp.asarray(schedule(step - milestone)).astype(F32)
            rate = jnp.where(step >= milestone, later, rate)
        return rate


@dataclasses.dataclass(frozen=True, repr=False)
class LambdaLR(_TorchSchedule):
    r"""torch's ``LambdaLR``: the rate times a function of the step.

    .. math::
        \eta_t = \eta\, \lambda(t)

    It can be saved with `to_config` when ``lr_lambda`` is a public gradxform
    schedule (``gx.schedules.linear_schedule(1.0, 0.0, 100)``), not a Python lambda.

    ``lr_lambda`` is called with the step as a float32 scalar (exact up to
    :math:`2^{24}`), so that torch's arithmetic lambdas (``lambda epoch: 0.95 ** epoch``)
    work under strict dtype promotion; it is traced under ``jit``, so it must
    use ``jax.numpy`` rather than Python's ``min`` or ``if``. Its arithmetic is
    float32's: ``0.97 ** epoch`` carries 0.97's rounding ``epoch`` times (3e-6 of
    the rate at epoch 100), where `ExponentialLR` rounds once.

    Args:
      lr: :math:`\eta \ge 0`.
      lr_lambda: :math:`\lambda`, a callable ``step -> factor``.

    Example:
      >>> import gradxform as gx
      >>> round(float(gx.torch.LambdaLR(0.1, lambda epoch: 0.5 ** epoch)(2)), 6)
      0.025
    """

    lr: Any
    lr_lambda: Callable

    def __post_init__(self):
        _check_lr(self)
        if not callable(self.lr_lambda):
            raise TypeError(f"{self.owner}: lr_lambda must be a callable step -> factor, got "
                            f"lr_lambda={self.lr_lambda!r}")

    def __call__(self, step):
        epoch = _integer_step(self.owner, step).astype(F32)
        factor = jnp.asarray(self.lr_lambda(epoch)).astype(F32)
        return np.float32(self.lr) * factor

