r"""``torch.optim``'s Rprop and ASGD as gradxform chains: step sizes that are not a plain ``lr``.

As in `gradxform.torch.optimizers`: torch's argument names and defaults
without ``params``, and a `chain` of catalogue transforms in torch's order of
operations. Rprop's ``lr`` is every coordinate's initial step size (torch
reads it once); ASGD's step size decays with the step count, and the chain
ends with the running mean of the params that torch keeps as ``ax``
(`params_average`, read with `finalize_params`).
"""

from __future__ import annotations

from typing import Any

from gradxform.core import numerics, validation
from gradxform.core.base import GradientTransformation, ScalarOrSchedule, returned_by
from gradxform.core.combine import chain
from gradxform.schedules.averaged_sgd import averaged_sgd_schedule
from gradxform.torch.optimizers import _check_lr, _checked_items, _prologue
from gradxform.transforms.params_ema import params_average
from gradxform.transforms.rprop import scale_by_rprop
from gradxform.transforms.scaling import scale, scale_by_learning_rate
from gradxform.transforms.weight_decay import decoupled_weight_decay


def _pair(owner: str, name: str, value: Any, wanted: str, checks: tuple) -> tuple[float, float]:
    """``value`` as two floats, each passing its check ``check(owner, name, item)``."""
    first, second = _checked_items(owner, name, value, f"a pair {wanted}", checks)
    return float(first), float(second)


def _below_one(owner: str, name: str, value: Any) -> None:
    validation.in_range(owner, name, value, low=0.0, high=1.0, low_open=True, high_open=True)


def _above_one(owner: str, name: str, value: Any) -> None:
    validation.in_range(owner, name, value, low=1.0, low_open=True)


def Rprop(  # noqa: N802 (torch's name)
    lr: float = 1e-2,
    etas: tuple[float, float] = (0.5, 1.2),
    step_sizes: tuple[float, float] = (1e-6, 50),
    *,
    maximize: bool = False,
) -> GradientTransformation:
    r"""``torch.optim.Rprop``, same arguments, same numbers.

    With :math:`s_t = \operatorname{sign}(g_t\, g_{t-1})`, where :math:`g_{t-1}`
    is 0 after a sign flip (and at the first step):

    .. math::
        \Delta_t = \operatorname{clip}\!\left(\Delta_{t-1} \cdot
        \begin{cases} \eta_+ & s_t > 0 \\ \eta_- & s_t < 0 \\ 1 & s_t = 0 \end{cases},\;
        \Delta_{min}, \Delta_{max}\right), \qquad
        \theta \leftarrow \theta - \begin{cases} 0 & s_t < 0 \\
        \Delta_t \operatorname{sign}(g_t) & \text{otherwise} \end{cases}

    with :math:`\Delta_0 = ` ``lr`` (iRprop-: a flipped gradient is not
    followed, and is forgotten). The chain is ``scale(-1)`` (``maximize``),
    ``scale_by_rprop`` and ``scale(-1)``.

    ``lr`` must be a number: torch reads it once, as every coordinate's first
    step size, so a learning-rate schedule would change nothing after the
    first step (a ``LambdaLR`` acts only through its value at step 0). It must
    lie within ``step_sizes``: torch clips the first step size to them.

    Args:
      lr: :math:`\Delta_0 > 0`, the initial step size, within ``step_sizes``.
      etas: :math:`(\eta_-, \eta_+)` with :math:`0 < \eta_- < 1 < \eta_+`.
      step_sizes: :math:`(\Delta_{min}, \Delta_{max})` with
        :math:`0 \le \Delta_{min} \le \Delta_{max}`, :math:`\Delta_{max} > 0`.
      maximize: ascend the objective instead.

    Example:
      >>> import gradxform as gx
      >>> tx = gx.torch.Rprop(lr=1e-2, etas=(0.5, 1.2), step_sizes=(1e-6, 50))
    """
    owner = "torch.Rprop"
    if callable(lr):
        raise TypeError(
            f"{owner}: lr must be a number, got lr={lr!r}: torch's Rprop reads lr once, as every "
            "coordinate's initial step size, so a schedule would change nothing after the first "
            "step; pass its value at step 0")
    validation.positive(owner, "lr", lr)
    eta_minus, eta_plus = _pair(owner, "etas", etas, "(eta_minus, eta_plus) with "
                                "0 < eta_minus < 1 < eta_plus", (_below_one, _above_one))
    smallest, largest = _pair(owner, "step_sizes", step_sizes, "(min, max) of step sizes >= 0",
                              (validation.non_negative, validation.positive))
    if smallest > largest:
        raise ValueError(f"{owner}: step_sizes must be a pair (min, max) with min <= max, "
                         f"got step_sizes={step_sizes!r}")
    start = validation.real_number(owner, "lr", lr)
    if start is not None and not smallest <= start <= largest:
        raise ValueError(f"{owner}: lr must lie within step_sizes={step_sizes!r} (torch clips "
                         f"the initial step size to them), got lr={lr!r}")
    validation.boolean(owner, "maximize", maximize)
    parts = [scale(-1.0)] if maximize else []
    parts += [scale_by_rprop(learning_rate=lr, eta_minus=eta_minus, eta_plus=eta_plus,
                             min_step_size=smallest, max_step_size=largest),
              scale(-1.0)]
    return returned_by(chain(*parts), owner)


def ASGD(  # noqa: N802
    lr: ScalarOrSchedule = 1e-2,
    lambd: float = 1e-4,
    alpha: float = 0.75,
    t0: float = 1e6,
    weight_decay: float = 0.0,
    *,
    maximize: bool = False,
) -> GradientTransformation:
    r"""``torch.optim.ASGD``, same arguments, same numbers, and the same average ``ax``.

    .. math::
        g \leftarrow \pm g + \lambda_w\theta, \qquad
        \theta \leftarrow \theta(1 - \lambda\eta_t) - \eta_t g, \qquad
        \eta_t = \frac{\eta}{(1 + \lambda\eta t)^{\alpha}}, \qquad
        \bar\theta \leftarrow \bar\theta + \frac{\theta - \bar\theta}{\max(1, t - t_0)}

    (:math:`t` from 0). The chain is ``scale(-1)`` (``maximize``),
    ``add_decayed_weights`` (``weight_decay``), ``scale_by_learning_rate`` and
    ``decoupled_weight_decay`` (``lambd``), both of
    ``gx.schedules.averaged_sgd_schedule``, and
    `params_average` (``t0``), whose average :math:`\bar\theta` is torch's
    ``state["ax"]``: read it with ``gx.finalize_params(params, state)``.
    torch computes :math:`\eta_t` at the end of each step from that step's
    learning rate, so a scheduled ``lr`` reaches it one step late; the
    schedule reproduces this.

    Args:
      lr: :math:`\eta \ge 0`, or a schedule of the step.
      lambd: :math:`\lambda \ge 0`, the decay of both the params and the step size.
      alpha: :math:`\alpha \ge 0`, the power of the step size's decay.
      t0: :math:`t_0 \ge 0`, the step after which the params are averaged
        (before it the average is a copy of the params).
      weight_decay: :math:`\lambda_w \ge 0`, coupled (added to the gradient).
      maximize: ascend the objective instead.

    Example:
      >>> import gradxform as gx
      >>> tx = gx.torch.ASGD(lr=1e-2, t0=100)
    """
    owner = "torch.ASGD"
    _check_lr(owner, lr)
    validation.non_negative(owner, "lambd", lambd)
    validation.non_negative(owner, "alpha", alpha)
    validation.non_negative(owner, "t0", t0)
    parts = _prologue(owner, maximize, weight_decay)
    step_size = averaged_sgd_schedule(lr, lambd=lambd, alpha=alpha)
    parts.append(scale_by_learning_rate(step_size))
    if not numerics.is_static_zero(lambd):
        parts.append(decoupled_weight_decay(lambd, step_size))
    parts.append(params_average(t0))
    return returned_by(chain(*parts), owner)
