"""The usual optimizers, each a short chain of public transforms.

They define no arithmetic of their own: ``adam(lr)`` is
``chain(scale_by_adam(...), scale_by_learning_rate(lr))``, and its ``inner``
attribute is that chain. Names and defaults are optax 0.2.8's.
"""

from __future__ import annotations

from typing import Any, Callable

from gradxform.core import validation
from gradxform.core.base import GradientTransformation, ScalarOrSchedule, public_constructor
from gradxform.core.combine import chain
from gradxform.core.primitives import identity
from gradxform.transforms.adam import scale_by_adam, scale_by_amsgrad
from gradxform.transforms.adaptive import scale_by_adagrad, scale_by_rms, scale_by_stddev
from gradxform.transforms.momentum import trace
from gradxform.transforms.scaling import scale_by_learning_rate
from gradxform.transforms.weight_decay import add_decayed_weights


@public_constructor
def sgd(
    learning_rate: ScalarOrSchedule,
    momentum: float | None = None,
    nesterov: bool = False,
    accumulator_dtype: Any = None,
) -> GradientTransformation:
    r"""Stochastic gradient descent, with optional (Nesterov) momentum.

    .. math::
        t_k = g_k + \mu t_{k-1}, \qquad \theta \leftarrow \theta - \eta\, t_k
        \;(\text{or } \theta - \eta (g_k + \mu t_k) \text{ with Nesterov})

    ``chain(trace(momentum, nesterov), scale_by_learning_rate(learning_rate))``;
    without momentum the trace is omitted.

    Args:
      learning_rate: :math:`\eta`, a number or a schedule.
      momentum: :math:`\mu` in [0, 1], or None for none.
      nesterov: Nesterov momentum.
      accumulator_dtype: dtype of the momentum buffer.

    Example:
      >>> import gradxform as gx
      >>> tx = gx.sgd(0.1, momentum=0.9)
    """
    validation.boolean("sgd", "nesterov", nesterov)
    validation.float_dtype("sgd", "accumulator_dtype", accumulator_dtype)
    if momentum is None:
        return chain(identity(), scale_by_learning_rate(learning_rate))
    validation.decay_rate("sgd", "momentum", momentum, allow_one=True)
    return chain(
        trace(decay=momentum, nesterov=nesterov, accumulator_dtype=accumulator_dtype),
        scale_by_learning_rate(learning_rate),
    )


@public_constructor
def adagrad(
    learning_rate: ScalarOrSchedule,
    initial_accumulator_value: float = 0.1,
    eps: float = 1e-7,
) -> GradientTransformation:
    r"""Adagrad: per-coordinate rates from the sum of squared gradients.

    .. math::
        s_t = s_{t-1} + g_t^2, \qquad \theta \leftarrow \theta - \eta\, g_t / \sqrt{s_t + \epsilon}

    ``chain(scale_by_adagrad(initial_accumulator_value, eps), scale_by_learning_rate(lr))``.

    Args:
      learning_rate: :math:`\eta`, a number or a schedule.
      initial_accumulator_value: :math:`s_0 \ge 0`.
      eps: :math:`\epsilon \ge 0`, inside the square root.

    Example:
      >>> import gradxform as gx
      >>> tx = gx.adagrad(0.1)
    """
    return chain(
        scale_by_adagrad(initial_accumulator_value=initial_accumulator_value, eps=eps),
        scale_by_learning_rate(learning_rate),
    )


@public_constructor
def adam(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: Any = None,
    *,
    nesterov: bool = False,
    amsgrad: bool = False,
) -> GradientTransformation:
    r"""Adam (or NAdam with ``nesterov``, or AMSGrad with ``amsgrad``).

    .. math::
        \theta \leftarrow \theta - \eta\, \frac{\hat m_t}{\sqrt{\hat v_t + \epsilon_{root}} + \epsilon}

    ``chain(scale_by_adam(...), scale_by_learning_rate(lr))``; with ``amsgrad``
    the first member is `scale_by_amsgrad`, whose maximum is over the raw second
    moment as in PyTorch and Keras (optax's ``amsgrad`` differs, see there).

    Args:
      learning_rate: :math:`\eta`, a number or a schedule.
      b1, b2, eps, eps_root, mu_dtype: as in `scale_by_adam`.
      nesterov: NAdam's Nesterov momentum (not with ``amsgrad``).
      amsgrad: use the running maximum of the second moment.

    Example:
      >>> import gradxform as gx
      >>> tx = gx.adam(1e-3)
    """
    validation.boolean("adam", "amsgrad", amsgrad)
    validation.boolean("adam", "nesterov", nesterov)
    if amsgrad and nesterov:
        raise ValueError("adam: nesterov=True and amsgrad=True cannot be combined")
    if amsgrad:
        scaling = scale_by_amsgrad(b1=b1, b2=b2, eps=eps, eps_root=eps_root, mu_dtype=mu_dtype)
    else:
        scaling = scale_by_adam(
            b1=b1, b2=b2, eps=eps, eps_root=eps_root, mu_dtype=mu_dtype, nesterov=nesterov
        )
    return chain(scaling, scale_by_learning_rate(learning_rate))


@public_constructor
def adamw(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: Any = None,
    weight_decay: ScalarOrSchedule = 1e-4,
    mask: Any | Callable[[Any], Any] | None = None,
    *,
    nesterov: bool = False,
) -> GradientTransformation:
    r"""Adam with decoupled weight decay (Loshchilov and Hutter, 2019).

    .. math::
        \theta \leftarrow \theta - \eta \left(\frac{\hat m_t}{\sqrt{\hat v_t +
        \epsilon_{root}} + \epsilon} + \lambda\, \theta\right)

    ``chain(scale_by_adam(...), add_decayed_weights(weight_decay, mask),
    scale_by_learning_rate(lr))``.

    Args:
      learning_rate: :math:`\eta`, a number or a schedule.
      b1, b2, eps, eps_root, mu_dtype, nesterov: as in `scale_by_adam`.
      weight_decay: :math:`\lambda \ge 0`, or a schedule.
      mask: which params decay, as in `add_decayed_weights`.

    Example:
      >>> import gradxform as gx
      >>> tx = gx.adamw(1e-3, weight_decay=1e-2)
    """
    return chain(
        scale_by_adam(
            b1=b1, b2=b2, eps=eps, eps_root=eps_root, mu_dtype=mu_dtype, nesterov=nesterov
        ),
        add_decayed_weights(weight_decay, mask),
        scale_by_learning_rate(learning_rate),
    )


@public_constructor
def rmsprop(
    learning_rate: ScalarOrSchedule,
    decay: float = 0.9,
    eps: float = 1e-8,
    initial_scale: float = 0.0,
    eps_in_sqrt: bool = True,
    centered: bool = False,
    momentum: float | None = None,
    nesterov: bool = False,
    bias_correction: bool = False,
) -> GradientTransformation:
    r"""RMSProp, optionally centred and with momentum.

    .. math::
        \nu_t = \rho \nu_{t-1} + (1-\rho) g_t^2, \qquad
        \theta \leftarrow \theta - \eta\, g_t / \sqrt{\nu_t + \epsilon}

    ``chain(scale_by_rms(...) or scale_by_stddev(...) if centered,
    scale_by_learning_rate(lr), trace(momentum, nesterov))``, the trace only
    with momentum; as in optax, momentum acts after the learning rate.

    Args:
      learning_rate: :math:`\eta`, a number or a schedule.
      decay, eps, initial_scale, eps_in_sqrt, bias_correction: as in `scale_by_rms`.
      centered: divide by a running standard deviation instead (`scale_by_stddev`).
      momentum: :math:`\mu` in [0, 1] or None.
      nesterov: Nesterov momentum.

    Example:
      >>> import gradxform as gx
      >>> tx = gx.rmsprop(1e-3, momentum=0.9)
    """
    validation.boolean("rmsprop", "centered", centered)
    validation.boolean("rmsprop", "nesterov", nesterov)
    if momentum is not None:
        validation.decay_rate("rmsprop", "momentum", momentum, allow_one=True)
    scaling = scale_by_stddev if centered else scale_by_rms
    members = [
        scaling(
            decay=decay,
            eps=eps,
            initial_scale=initial_scale,
            eps_in_sqrt=eps_in_sqrt,
            bias_correction=bias_correction,
        ),
        scale_by_learning_rate(learning_rate),
    ]
    if momentum is not None:
        members.append(trace(decay=momentum, nesterov=nesterov))
    return chain(*members)
