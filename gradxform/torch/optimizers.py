r"""``torch.optim``'s SGD, Adagrad, Adam, AdamW and RMSprop as gradxform chains.

Each preset takes torch's argument names and defaults (without ``params``:
gradxform transformations are built before they meet any parameters) and
returns an ordinary `chain` of catalogue transforms, in torch's order of
operations:

1. ``scale(-1.0)`` when ``maximize`` (torch negates the gradient first);
2. ``add_decayed_weights(weight_decay)`` for the coupled L2 decay that
   ``weight_decay`` means everywhere but AdamW (:math:`g + \lambda\theta`);
3. the optimizer's rule and its learning rate;
4. AdamW's ``decoupled_weight_decay(weight_decay, lr)``
   (:math:`\theta \leftarrow \theta(1 - \eta\lambda)`).

Where torch and optax differ for the same name, these follow torch: Adagrad's
:math:`\epsilon` outside the root and ``lr_decay``, RMSprop's :math:`\epsilon`
outside the root and momentum of unscaled steps, SGD's ``dampening`` with its
first step, AMSGrad's maximum of the raw second moment, and Adam's bias
corrections :math:`1-\beta^t` to float32's precision (torch computes them in
float64 on the host; float32's ``1 - b**t`` is off by up to 5e-5 of itself in
the first steps at :math:`\beta = 0.999`).
"""

from __future__ import annotations

from typing import Any

from gradxform.core import numerics, validation
from gradxform.core.base import GradientTransformation, ScalarOrSchedule, returned_by
from gradxform.core.combine import chain
from gradxform.schedules.keras import InverseTimeDecay
from gradxform.transforms.adam import scale_by_adam, scale_by_amsgrad
from gradxform.transforms.adaptive import scale_by_adagrad, scale_by_rms, scale_by_stddev
from gradxform.transforms.momentum import trace
from gradxform.transforms.scaling import scale, scale_by_learning_rate, scale_by_schedule
from gradxform.transforms.weight_decay import add_decayed_weights, decoupled_weight_decay


def _injected(value: Any) -> bool:
    """An array (from `inject_hyperparams`), whose value construction cannot check."""
    return not isinstance(numerics.python_number(value), (int, float))


def _check_lr(owner: str, lr: Any) -> None:
    if not callable(lr):
        validation.non_negative(owner, "lr", lr)


def _prologue(owner: str, maximize: Any, weight_decay: Any, coupled: bool = True) -> list:
    """Steps 1 and 2: the sign for ``maximize``, then the coupled L2 decay."""
    validation.boolean(owner, "maximize", maximize)
    validation.non_negative(owner, "weight_decay", weight_decay)
    parts = [scale(-1.0)] if maximize else []
    if coupled and not numerics.is_static_zero(weight_decay):
        parts.append(add_decayed_weights(weight_decay))
    return parts


def _epilogue(decoupled: bool, weight_decay: Any, lr: ScalarOrSchedule) -> list:
    """Step 4: torch's ``param.mul_(1 - lr * weight_decay)``, when the decay is decoupled."""
    if decoupled and not numerics.is_static_zero(weight_decay):
        return [decoupled_weight_decay(weight_decay, lr)]
    return []


def _checked_items(owner: str, name: str, value: Any, wanted: str, checks: tuple, *,
                   length_error: type = TypeError) -> tuple:
    """torch's tuple arguments (``betas``, ``etas``, ...): ``value`` has one item per check
    ``check(owner, f"{name}[i]", item)``; every error shows the whole value and what is wanted.
    A wrong length raises ``length_error`` (a non-sequence, always a `TypeError`)."""
    message = f"{owner}: {name} must be {wanted}, got {value!r}"
    if not isinstance(value, (tuple, list)):
        raise TypeError(message)
    if len(value) != len(checks):
        raise length_error(message)
    for i, (item, check) in enumerate(zip(value, checks)):
        try:
            check(owner, f"{name}[{i}]", item)
        except (TypeError, ValueError) as error:
            raise type(error)(f"{message} ({error})") from None
    return tuple(value)


def _betas(owner: str, betas: Any) -> tuple[float, float]:
    b1, b2 = _checked_items(owner, "betas", betas, "a pair (beta1, beta2) of rates in [0, 1)",
                            (validation.decay_rate, validation.decay_rate))
    return float(b1), float(b2)


def SGD(  # noqa: N802 (torch's name)
    lr: ScalarOrSchedule = 1e-3,
    momentum: float = 0.0,
    dampening: float = 0.0,
    weight_decay: float = 0.0,
    nesterov: bool = False,
    *,
    maximize: bool = False,
) -> GradientTransformation:
    r"""``torch.optim.SGD``, same arguments, same numbers.

    .. math::
        g \leftarrow \pm g + \lambda\theta, \quad
        b_1 = g_1,\; b_t = \mu b_{t-1} + (1-d) g_t, \qquad
        \theta \leftarrow \theta - \eta\,(g_t + \mu b_t \text{ if nesterov else } b_t)

    and :math:`\theta \leftarrow \theta - \eta g` without momentum. The chain is
    ``scale(-1)`` (``maximize``), ``add_decayed_weights``, ``trace(momentum,
    nesterov, dampening=...)`` and ``scale_by_learning_rate``.

    Args:
      lr: :math:`\eta \ge 0`, or a schedule of the step.
      momentum: :math:`\mu` in [0, 1]; 0 keeps no momentum buffer.
      dampening: :math:`d` in [0, 1]; applies from the second step on, as in torch.
      weight_decay: :math:`\lambda \ge 0`, coupled (added to the gradient).
      nesterov: Nesterov momentum; needs a momentum and zero dampening.
      maximize: ascend the objective instead.

    Example:
      >>> import gradxform as gx
      >>> tx = gx.torch.SGD(lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    """
    owner = "torch.SGD"
    _check_lr(owner, lr)
    validation.decay_rate(owner, "momentum", momentum, allow_one=True)
    validation.decay_rate(owner, "dampening", dampening, allow_one=True)
    validation.boolean(owner, "nesterov", nesterov)
    if nesterov and (numerics.is_static_zero(momentum) or not (
            numerics.is_static_zero(dampening) or _injected(dampening))):
        raise ValueError(f"{owner}: Nesterov momentum requires a momentum and zero dampening, "
                         f"got momentum={momentum!r}, dampening={dampening!r}")
    parts = _prologue(owner, maximize, weight_decay)
    if not numerics.is_static_zero(momentum):
        parts.append(trace(momentum, nesterov=nesterov,
                           dampening=None if numerics.is_static_zero(dampening) else dampening))
    parts.append(scale_by_learning_rate(lr))
    return returned_by(chain(*parts), owner)


def Adagrad(  # noqa: N802
    lr: ScalarOrSchedule = 1e-2,
    lr_decay: float = 0.0,
    weight_decay: float = 0.0,
    initial_accumulator_value: float = 0.0,
    eps: float = 1e-10,
    *,
    maximize: bool = False,
) -> GradientTransformation:
    r"""``torch.optim.Adagrad``, same arguments, same numbers.

    .. math::
        g \leftarrow \pm g + \lambda\theta, \quad s_t = s_{t-1} + g_t^2, \qquad
        \theta \leftarrow \theta - \frac{\eta}{1 + (t-1)\,\delta}\,
        \frac{g_t}{\sqrt{s_t} + \epsilon}

    The chain is ``scale(-1)`` (``maximize``), ``add_decayed_weights``,
    ``scale_by_adagrad(eps_in_sqrt=False)``, ``scale_by_schedule`` of
    :math:`1/(1 + (t-1)\delta)` (``gx.keras.InverseTimeDecay``) when ``lr_decay``
    is set, and ``scale_by_learning_rate``.

    Args:
      lr: :math:`\eta \ge 0`, or a schedule of the step.
      lr_decay: :math:`\delta \ge 0`.
      weight_decay: :math:`\lambda \ge 0`, coupled.
      initial_accumulator_value: :math:`s_0 \ge 0`.
      eps: :math:`\epsilon \ge 0`, added to the root.
      maximize: ascend the objective instead.

    Example:
      >>> import gradxform as gx
      >>> tx = gx.torch.Adagrad(lr=0.1, lr_decay=1e-3, initial_accumulator_value=0.1)
    """
    owner = "torch.Adagrad"
    _check_lr(owner, lr)
    validation.non_negative(owner, "lr_decay", lr_decay)
    validation.non_negative(owner, "initial_accumulator_value", initial_accumulator_value)
    validation.non_negative(owner, "eps", eps)
    parts = _prologue(owner, maximize, weight_decay)
    parts.append(scale_by_adagrad(initial_accumulator_value, eps, eps_in_sqrt=False))
    if not numerics.is_static_zero(lr_decay):
        parts.append(scale_by_schedule(InverseTimeDecay(1.0, decay_steps=1,
                                                        decay_rate=lr_decay)))
    parts.append(scale_by_learning_rate(lr))
    return returned_by(chain(*parts), owner)


def _adam_rule(owner: str, betas: Any, eps: float, amsgrad: bool) -> GradientTransformation:
    b1, b2 = _betas(owner, betas)
    validation.non_negative(owner, "eps", eps)
    validation.boolean(owner, "amsgrad", amsgrad)
    return (scale_by_amsgrad if amsgrad else scale_by_adam)(
        b1=b1, b2=b2, eps=eps, accurate_bias_correction=True)


def Adam(  # noqa: N802
    lr: ScalarOrSchedule = 1e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    amsgrad: bool = False,
    *,
    maximize: bool = False,
) -> GradientTransformation:
    r"""``torch.optim.Adam``, same arguments, same numbers.

    .. math::
        g \leftarrow \pm g + \lambda\theta, \qquad
        \theta \leftarrow \theta - \eta\, \frac{m_t / (1-\beta_1^t)}
        {\sqrt{v_t / (1-\beta_2^t)} + \epsilon}

    with :math:`v_t` replaced by its running maximum when ``amsgrad`` (the
    maximum of the raw :math:`v`, as torch takes it). ``weight_decay`` is the
    coupled L2 term; `AdamW` decouples it.

    Args:
      lr: :math:`\eta \ge 0`, or a schedule of the step.
      betas: :math:`(\beta_1, \beta_2)`, each in [0, 1).
      eps: :math:`\epsilon \ge 0`, added to the root.
      weight_decay: :math:`\lambda \ge 0`, coupled.
      amsgrad: use the running maximum of the second moment.
      maximize: ascend the objective instead.

    Example:
      >>> import gradxform as gx
      >>> tx = gx.torch.Adam(lr=3e-4, betas=(0.9, 0.98), amsgrad=True)
    """
    owner = "torch.Adam"
    _check_lr(owner, lr)
    parts = _prologue(owner, maximize, weight_decay)
    parts += [_adam_rule(owner, betas, eps, amsgrad), scale_by_learning_rate(lr)]
    return returned_by(chain(*parts), owner)


def AdamW(  # noqa: N802
    lr: ScalarOrSchedule = 1e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 1e-2,
    amsgrad: bool = False,
    *,
    maximize: bool = False,
) -> GradientTransformation:
    r"""``torch.optim.AdamW``, same arguments, same numbers.

    .. math::
        \theta \leftarrow \theta - \eta\lambda\theta - \eta\, \frac{m_t / (1-\beta_1^t)}
        {\sqrt{v_t / (1-\beta_2^t)} + \epsilon}

    The decay is decoupled and multiplied by the learning rate (torch's
    ``param.mul_(1 - lr * weight_decay)``): ``decoupled_weight_decay`` after
    the Adam rule, where `Adam` adds :math:`\lambda\theta` to the gradient.

    Args:
      lr: :math:`\eta \ge 0`, or a schedule of the step.
      betas: :math:`(\beta_1, \beta_2)`, each in [0, 1).
      eps: :math:`\epsilon \ge 0`, added to the root.
      weight_decay: :math:`\lambda \ge 0`, decoupled (torch's default 0.01).
      amsgrad: use the running maximum of the second moment.
      maximize: ascend the objective instead.

    Example:
      >>> import gradxform as gx
      >>> tx = gx.torch.AdamW(lr=1e-3, weight_decay=0.05)
    """
    owner = "torch.AdamW"
    _check_lr(owner, lr)
    parts = _prologue(owner, maximize, weight_decay, coupled=False)
    parts += [_adam_rule(owner, betas, eps, amsgrad), scale_by_learning_rate(lr)]
    parts += _epilogue(True, weight_decay, lr)
    return returned_by(chain(*parts), owner)


def RMSprop(  # noqa: N802
    lr: ScalarOrSchedule = 1e-2,
    alpha: float = 0.99,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    momentum: float = 0.0,
    centered: bool = False,
    *,
    maximize: bool = False,
) -> GradientTransformation:
    r"""``torch.optim.RMSprop``, same arguments, same numbers.

    .. math::
        g \leftarrow \pm g + \lambda\theta, \quad v_t = \alpha v_{t-1} + (1-\alpha) g_t^2,
        \quad s_t = \frac{g_t}{\sqrt{v_t - \bar g_t^2} + \epsilon}, \quad
        b_t = \mu b_{t-1} + s_t, \qquad \theta \leftarrow \theta - \eta\, b_t

    with :math:`\bar g_t = \alpha\bar g_{t-1} + (1-\alpha) g_t` when ``centered``
    (else 0) and :math:`b_t = s_t` without momentum. The chain is
    ``scale_by_rms`` (``scale_by_stddev``) with ``eps_in_sqrt=False``,
    ``trace(momentum)`` and then ``scale_by_learning_rate``: torch's momentum
    sums unscaled steps, where Keras's sums scaled ones.

    Args:
      lr: :math:`\eta \ge 0`, or a schedule of the step.
      alpha: :math:`\alpha` in [0, 1), the averages' decay.
      eps: :math:`\epsilon \ge 0`, added to the root.
      weight_decay: :math:`\lambda \ge 0`, coupled.
      momentum: :math:`\mu` in [0, 1]; 0 keeps no momentum buffer.
      centered: divide by the estimated standard deviation instead of the RMS.
      maximize: ascend the objective instead.

    Example:
      >>> import gradxform as gx
      >>> tx = gx.torch.RMSprop(lr=1e-3, momentum=0.9, centered=True)
    """
    owner = "torch.RMSprop"
    _check_lr(owner, lr)
    validation.decay_rate(owner, "alpha", alpha)
    validation.non_negative(owner, "eps", eps)
    validation.decay_rate(owner, "momentum", momentum, allow_one=True)
    validation.boolean(owner, "centered", centered)
    parts = _prologue(owner, maximize, weight_decay)
    parts.append((scale_by_stddev if centered else scale_by_rms)(
        decay=alpha, eps=eps, eps_in_sqrt=False))
    if not numerics.is_static_zero(momentum):
        parts.append(trace(momentum))
    parts.append(scale_by_learning_rate(lr))
    return returned_by(chain(*parts), owner)
