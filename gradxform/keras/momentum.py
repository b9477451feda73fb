r"""Keras 3's momentum optimizers as gradxform chains: SGD, RMSprop, Lion.

Keras's SGD and RMSprop keep momentum of steps already multiplied by the
learning rate (:math:`m \leftarrow \mu m - \eta g`), so the learning rate comes
before `trace` in these chains; with a schedule this differs from optax's
``sgd``, whose trace sums raw gradients and is scaled afterwards.
"""

from __future__ import annotations

from typing import Any, Sequence

from gradxform.core import numerics, validation
from gradxform.core.base import GradientTransformation, ScalarOrSchedule
from gradxform.keras.arguments import checked_base, keras_error
from gradxform.keras.chain import fill_docstrings, keras_chain, keras_preset, scaled_by_learning_rate
from gradxform.transforms.momentum import trace
from gradxform.transforms.adaptive import scale_by_rms, scale_by_stddev
from gradxform.transforms.scaling import scale_by_learning_rate
from gradxform.transforms.sign import scale_by_lion


def sgd(
    learning_rate: ScalarOrSchedule = 0.01,
    momentum: float = 0.0,
    nesterov: bool = False,
    weight_decay: float | None = None,
    clipnorm: float | None = None,
    clipvalue: float | None = None,
    global_clipnorm: float | None = None,
    use_ema: bool = False,
    ema_momentum: float = 0.99,
    ema_overwrite_frequency: int | None = None,
    loss_scale_factor: float | None = None,
    gradient_accumulation_steps: int | None = None,
    exclude_from_weight_decay: str | Sequence[str] | None = None,
    name: str | None = None,
    **kwargs: Any,
) -> GradientTransformation:
    r"""Keras 3's ``SGD``, every argument, same numbers.

    .. math::
        m_t = \mu m_{t-1} - \eta g_t, \qquad
        \theta \leftarrow \theta - \theta\lambda\eta + m_t
        \quad (\text{nesterov: } + \mu m_t - \eta g_t)

    and :math:`\theta \leftarrow \theta - \theta\lambda\eta - \eta g_t` without
    momentum. The chain is ``scale_by_learning_rate`` then ``trace(momentum,
    nesterov)``.

    Args:
      learning_rate: :math:`\eta`: a float, or a schedule called with the raw
        call count.
      momentum: :math:`\mu` in [0, 1]; 0 keeps no momentum state.
      nesterov: Nesterov momentum (ignored without momentum, as in Keras).
      {base_args}
    {differences}
    Example:
      >>> import gradxform as gx
      >>> tx = gx.keras.sgd(learning_rate=0.1, momentum=0.9, nesterov=True)
    """
    arguments = dict(locals())
    owner = "keras.sgd"
    base = checked_base(owner, arguments)
    if validation.real_number(owner, "momentum", momentum) is not None and not 0 <= momentum <= 1:
        raise keras_error(owner, f"`momentum` must be a float between [0, 1], got {momentum!r}")
    validation.boolean(owner, "nesterov", nesterov)

    def rule(learning_rate):
        steps = [scale_by_learning_rate(learning_rate)]
        return (steps if numerics.is_static_zero(momentum)
                else steps + [trace(momentum, nesterov=nesterov)])

    return keras_preset(owner, keras_chain(rule, base), arguments)


def rmsprop(
    learning_rate: ScalarOrSchedule = 0.001,
    rho: float = 0.9,
    momentum: float = 0.0,
    epsilon: float = 1e-7,
    centered: bool = False,
    weight_decay: float | None = None,
    clipnorm: float | None = None,
    clipvalue: float | None = None,
    global_clipnorm: float | None = None,
    use_ema: bool = False,
    ema_momentum: float = 0.99,
    ema_overwrite_frequency: int | None = None,
    loss_scale_factor: float | None = None,
    gradient_accumulation_steps: int | None = None,
    exclude_from_weight_decay: str | Sequence[str] | None = None,
    name: str | None = None,
    **kwargs: Any,
) -> GradientTransformation:
    r"""Keras 3's ``RMSprop``, every argument, same numbers.

    .. math::
        v_t = \rho v_{t-1} + (1-\rho) g_t^2, \quad
        s_t = \eta\, g_t / \sqrt{v_t - \bar g_t^2 + \epsilon}, \quad
        m_t = \mu m_{t-1} + s_t, \qquad
        \theta \leftarrow \theta - \theta\lambda\eta - m_t

    with :math:`\bar g_t = \rho \bar g_{t-1} + (1-\rho) g_t` when ``centered``
    (else 0), and :math:`m_t = s_t` without momentum. The chain is
    ``scale_by_rms`` (or ``scale_by_stddev``) with ``eps_in_sqrt``, then
    ``scale_by_learning_rate``, then ``trace(momentum)``.

    Args:
      learning_rate: :math:`\eta`: a float, or a schedule called with the raw
        call count.
      rho: :math:`\rho` in [0, 1), the decay of the averages.
      momentum: :math:`\mu` in [0, 1); 0 keeps no momentum state.
      epsilon: :math:`\epsilon > 0`, inside the square root.
      centered: divide by the estimated standard deviation instead of the RMS.
      {base_args}
    {differences}
    Example:
      >>> import gradxform as gx
      >>> tx = gx.keras.rmsprop(learning_rate=1e-3, momentum=0.9, centered=True)
    """
    arguments = dict(locals())
    owner = "keras.rmsprop"
    base = checked_base(owner, arguments)
    validation.decay_rate(owner, "rho", rho)
    validation.decay_rate(owner, "momentum", momentum)
    validation.positive(owner, "epsilon", epsilon)
    validation.boolean(owner, "centered", centered)
    moments = scale_by_stddev if centered else scale_by_rms
    scaling = moments(decay=rho, eps=epsilon, eps_in_sqrt=True)

    def rule(learning_rate):
        steps = [scaling, scale_by_learning_rate(learning_rate)]
        return steps if numerics.is_static_zero(momentum) else steps + [trace(momentum)]

    return keras_preset(owner, keras_chain(rule, base), arguments)


def lion(
    learning_rate: ScalarOrSchedule = 0.001,
    beta_1: float = 0.9,
    beta_2: float = 0.99,
    weight_decay: float | None = None,
    clipnorm: float | None = None,
    clipvalue: float | None = None,
    global_clipnorm: float | None = None,
    use_ema: bool = False,
    ema_momentum: float = 0.99,
    ema_overwrite_frequency: int | None = None,
    loss_scale_factor: float | None = None,
    gradient_accumulation_steps: int | None = None,
    exclude_from_weight_decay: str | Sequence[str] | None = None,
    name: str | None = None,
    **kwargs: Any,
) -> GradientTransformation:
    r"""Keras 3's ``Lion``, every argument, same numbers.

    .. math::
        \theta \leftarrow \theta - \theta\lambda\eta
        - \eta\, \mathrm{sign}(\beta_1 m_{t-1} + (1-\beta_1) g_t), \qquad
        m_t = \beta_2 m_{t-1} + (1-\beta_2) g_t

    The chain is ``scale_by_lion`` then ``scale_by_learning_rate``. Unlike
    ``gx.lion`` (optax's defaults), weight decay is off unless given.

    Args:
      learning_rate: :math:`\eta`: a float, or a schedule called with the raw
        call count.
      beta_1: :math:`\beta_1` in (0, 1], the interpolation for the sign.
      beta_2: :math:`\beta_2` in [0, 1], the momentum's decay.
      {base_args}
    {differences}
    Example:
      >>> import gradxform as gx
      >>> tx = gx.keras.lion(learning_rate=1e-4, weight_decay=0.1)
    """
    arguments = dict(locals())
    owner = "keras.lion"
    base = checked_base(owner, arguments)
    beta_1_value = validation.real_number(owner, "beta_1", beta_1)
    if beta_1_value is not None and not 0 < beta_1_value <= 1:
        raise keras_error(owner, "Argument `beta_1` must be in the [0, 1] range. Otherwise, the "
                                 f"optimizer degenerates to SignSGD. Received: beta_1={beta_1}.")
    validation.decay_rate(owner, "beta_2", beta_2, allow_one=True)
    scaling = scale_by_lion(b1=beta_1, b2=beta_2)
    return keras_preset(owner, keras_chain(scaled_by_learning_rate(scaling), base), arguments)


fill_docstrings(sgd, rmsprop, lion)
