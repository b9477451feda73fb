"""Averaged SGD's step size: the learning rate decayed by a power of the scaled step count."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp

from gradxform.core import validation
from gradxform.schedules.base import F32, ScheduleObject, as_float_count


@dataclasses.dataclass(frozen=True, repr=False)
class AveragedSgdSchedule(ScheduleObject):
    r"""ASGD's step size, as ``torch.optim.ASGD`` computes it (Xu, 2011; Bottou, 2012).

    .. math::
        \eta_t = \frac{\eta'_t}{(1 + \lambda\, \eta'_t\, t)^{\alpha}}, \qquad
        \eta'_t = \begin{cases} \eta & \text{a constant learning rate} \\
        \eta(\max(t - 1, 0)) & \text{a schedule} \end{cases}

    torch computes the step size at the end of each step, from that step's
    learning rate, for the next step (its first step uses the learning rate
    itself): a scheduled learning rate therefore reaches the step size one
    step late, which :math:`\eta'_t` reproduces. With :math:`\lambda = 0` or
    :math:`\alpha = 0` the value is :math:`\eta'_t`. Xu, 2011, "Towards
    Optimal One Pass Large Scale Learning with Averaged Stochastic Gradient
    Descent"; Bottou, 2012, "Stochastic Gradient Descent Tricks".

    Args:
      learning_rate: :math:`\eta \ge 0`, or a schedule ``count -> rate``.
      lambd: :math:`\lambda \ge 0` (torch's name; ``lambda`` is a keyword).
      alpha: :math:`\alpha \ge 0`, the power of the decay.

    Example:
      >>> import gradxform as gx
      >>> rate = gx.schedules.averaged_sgd_schedule(0.1, lambd=1.0, alpha=1.0)
      >>> round(float(rate(10)), 6)  # 0.1 / (1 + 1.0 * 0.1 * 10)
      0.05
    """

    learning_rate: Any
    lambd: Any = 1e-4
    alpha: Any = 0.75
    public_name = "averaged_sgd_schedule"

    def __post_init__(self):
        validation.scalar_or_schedule(self.owner, "learning_rate", self.learning_rate)
        validation.non_negative(self.owner, "lambd", self.lambd)
        validation.non_negative(self.owner, "alpha", self.alpha)

    def __call__(self, count):
        if callable(self.learning_rate):
            rate = self.learning_rate(jnp.maximum(jnp.asarray(count) - 1, 0))
        else:
            rate = self.learning_rate
        rate = jnp.asarray(rate).astype(F32)
        lambd = jnp.asarray(self.lambd).astype(F32)
        alpha = jnp.asarray(self.alpha).astype(F32)
        return rate / (1 + lambd * rate * as_float_count(count)) ** alpha


averaged_sgd_schedule = AveragedSgdSchedule
