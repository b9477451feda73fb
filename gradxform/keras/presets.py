"""Keras 3's adaptive optimizers as gradxform chains: Adagrad, Adam, AdamW, Adamax, Adadelta, Nadam.

Each preset takes Keras's argument names and defaults and returns an ordinary
`chain` of public transforms in Keras's order of operations
(`gradxform.keras.chain`), whose ``repr`` shows what it is made of.
"""

from __future__ import annotations

from typing import Any, Sequence

from gradxform.core import validation
from gradxform.core.base import GradientTransformation, ScalarOrSchedule
from gradxform.keras.arguments import checked_base, keras_error
from gradxform.keras.chain import fill_docstrings, keras_chain, keras_preset, scaled_by_learning_rate
from gradxform.transforms.adadelta import scale_by_adadelta
from gradxform.transforms.adam import scale_by_adam, scale_by_amsgrad
from gradxform.transforms.adamax import scale_by_adamax
from gradxform.transforms.adaptive import scale_by_adagrad
from gradxform.transforms.nadam import scale_by_nadam


def adagrad(
    learning_rate: ScalarOrSchedule = 0.001,
    initial_accumulator_value: float = 0.1,
    epsilon: float = 1e-7,
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
    r"""Keras 3's ``Adagrad``, every argument, same numbers.

    .. math::
        a_t = a_{t-1} + g_t^2,\; a_0 = a_{init}, \qquad
        \theta \leftarrow \theta - \theta\lambda\eta - \eta\, g_t / \sqrt{a_t + \epsilon}

    with :math:`g` unscaled, accumulated and clipped first and the parameter
    average taken last (see the module docstring for the chain).

    Args:
      learning_rate: :math:`\eta`: a float, or a schedule called with the raw
        call count (a ``gx.keras.ExponentialDecay`` or any ``step -> rate``).
      initial_accumulator_value: :math:`a_{init} \ge 0`.
      epsilon: :math:`\epsilon > 0`, inside the square root.
      {base_args}
    {differences}
    Example:
      >>> import gradxform as gx
      >>> tx = gx.keras.adagrad(learning_rate=0.01, clipnorm=1.0, use_ema=True)
    """
    arguments = dict(locals())
    owner = "keras.adagrad"
    base = checked_base(owner, arguments)
    validation.positive(owner, "epsilon", epsilon)
    validation.non_negative(owner, "initial_accumulator_value", initial_accumulator_value)
    scaling = scale_by_adagrad(initial_accumulator_value=initial_accumulator_value, eps=epsilon)
    return keras_preset(owner, keras_chain(scaled_by_learning_rate(scaling), base), arguments)


def adam(
    learning_rate: ScalarOrSchedule = 0.001,
    beta_1: float = 0.9,
    beta_2: float = 0.999,
    epsilon: float = 1e-7,
    amsgrad: bool = False,
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
    r"""Keras 3's ``Adam``, every argument, same numbers (epsilon-hat form).

    .. math::
        \alpha_t = \eta \sqrt{1-\beta_2^t}/(1-\beta_1^t), \qquad
        \theta \leftarrow \theta - \theta\lambda\eta - \alpha_t\, m_t / (\sqrt{v_t} + \epsilon)

    with :math:`t` the number of real updates, and :math:`v_t` replaced by its
    running maximum (over the raw :math:`v`) when ``amsgrad``. Gradients are
    unscaled, accumulated and clipped first and the parameter average is taken
    last (see the module docstring for the chain).

    Args:
      learning_rate: :math:`\eta`: a float, or a schedule called with the raw
        call count (a ``gx.keras.ExponentialDecay`` or any ``step -> rate``).
      beta_1: :math:`\beta_1` in [0, 1).
      beta_2: :math:`\beta_2` in [0, 1).
      epsilon: :math:`\epsilon > 0`, Keras's "epsilon hat".
      amsgrad: use the running maximum of the second moment.
      {base_args}
    {differences}
    Example:
      >>> import gradxform as gx
      >>> tx = gx.keras.adam(learning_rate=1e-3, weight_decay=0.004,
      ...                    exclude_from_weight_decay=["bias", "norm"])
    """
    arguments = dict(locals())
    owner = "keras.adam"
    return _adam(owner, arguments, beta_1, beta_2, epsilon, amsgrad)


def _adam(owner: str, arguments: dict, beta_1: float, beta_2: float, epsilon: float,
          amsgrad: bool) -> GradientTransformation:
    base = checked_base(owner, arguments)
    validation.positive(owner, "epsilon", epsilon)
    validation.decay_rate(owner, "beta_1", beta_1)
    validation.decay_rate(owner, "beta_2", beta_2)
    validation.boolean(owner, "amsgrad", amsgrad)
    moments = scale_by_amsgrad if amsgrad else scale_by_adam
    scaling = moments(b1=beta_1, b2=beta_2, eps=epsilon, eps_hat=True)
    return keras_preset(owner, keras_chain(scaled_by_learning_rate(scaling), base), arguments)


def adamw(
    learning_rate: ScalarOrSchedule = 0.001,
    weight_decay: float = 0.004,
    beta_1: float = 0.9,
    beta_2: float = 0.999,
    epsilon: float = 1e-7,
    amsgrad: bool = False,
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
    r"""Keras 3's ``AdamW``: `adam` whose ``weight_decay`` defaults to 0.004 and may not be None.

    .. math::
        \alpha_t = \eta \sqrt{1-\beta_2^t}/(1-\beta_1^t), \qquad
        \theta \leftarrow \theta - \theta\lambda\eta - \alpha_t\, m_t / (\sqrt{v_t} + \epsilon)

    Args:
      learning_rate: :math:`\eta`: a float, or a schedule called with the raw
        call count.
      weight_decay: :math:`\lambda \ge 0`, decoupled and multiplied by :math:`\eta`.
      beta_1: :math:`\beta_1` in [0, 1).
      beta_2: :math:`\beta_2` in [0, 1).
      epsilon: :math:`\epsilon > 0`, Keras's "epsilon hat".
      amsgrad: use the running maximum of the second moment.
      {base_args}
    {differences}
    Example:
      >>> import gradxform as gx
      >>> tx = gx.keras.adamw(learning_rate=1e-3, weight_decay=0.01, global_clipnorm=1.0)
    """
    arguments = dict(locals())
    owner = "keras.adamw"
    if weight_decay is None:
        raise keras_error(owner, "Argument `weight_decay` must be a float. Received: "
                                 "weight_decay=None")
    return _adam(owner, arguments, beta_1, beta_2, epsilon, amsgrad)


def adamax(
    learning_rate: ScalarOrSchedule = 0.001,
    beta_1: float = 0.9,
    beta_2: float = 0.999,
    epsilon: float = 1e-7,
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
    r"""Keras 3's ``Adamax``, every argument, same numbers.

    .. math::
        m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t, \quad
        u_t = \max(\beta_2 u_{t-1}, |g_t|), \qquad
        \theta \leftarrow \theta - \theta\lambda\eta
        - \frac{\eta\, m_t}{(1-\beta_1^t)(u_t + \epsilon)}

    ``scale_by_adamax(eps_in_max=False)``: Keras adds :math:`\epsilon` after the
    maximum, where optax and torch add it to :math:`|g_t|` inside it.

    Args:
      learning_rate: :math:`\eta`: a float, or a schedule called with the raw
        call count.
      beta_1: :math:`\beta_1` in [0, 1).
      beta_2: :math:`\beta_2` in [0, 1), the decay of the infinity norm.
      epsilon: :math:`\epsilon > 0`.
      {base_args}
    {differences}
    Example:
      >>> import gradxform as gx
      >>> tx = gx.keras.adamax(learning_rate=2e-3, clipvalue=1.0)
    """
    arguments = dict(locals())
    owner = "keras.adamax"
    base = checked_base(owner, arguments)
    validation.positive(owner, "epsilon", epsilon)
    validation.decay_rate(owner, "beta_1", beta_1)
    validation.decay_rate(owner, "beta_2", beta_2)
    scaling = scale_by_adamax(b1=beta_1, b2=beta_2, eps=epsilon, eps_in_max=False)
    return keras_preset(owner, keras_chain(scaled_by_learning_rate(scaling), base), arguments)


def adadelta(
    learning_rate: ScalarOrSchedule = 0.001,
    rho: float = 0.95,
    epsilon: float = 1e-7,
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
    r"""Keras 3's ``Adadelta``, every argument, same numbers.

    .. math::
        A_t = \rho A_{t-1} + (1-\rho) g_t^2, \quad
        \Delta_t = \frac{\sqrt{D_{t-1} + \epsilon}}{\sqrt{A_t + \epsilon}}\, g_t, \quad
        D_t = \rho D_{t-1} + (1-\rho) \Delta_t^2, \qquad
        \theta \leftarrow \theta - \theta\lambda\eta - \eta \Delta_t

    Args:
      learning_rate: :math:`\eta`: a float, or a schedule called with the raw
        call count (Keras's default 0.001; the paper's method has
        :math:`\eta = 1`).
      rho: :math:`\rho` in [0, 1], the decay of both averages.
      epsilon: :math:`\epsilon > 0`, inside both square roots.
      {base_args}
    {differences}
    Example:
      >>> import gradxform as gx
      >>> tx = gx.keras.adadelta(learning_rate=1.0, rho=0.9)
    """
    arguments = dict(locals())
    owner = "keras.adadelta"
    base = checked_base(owner, arguments)
    validation.positive(owner, "epsilon", epsilon)
    validation.decay_rate(owner, "rho", rho, allow_one=True)
    scaling = scale_by_adadelta(rho=rho, eps=epsilon)
    return keras_preset(owner, keras_chain(scaled_by_learning_rate(scaling), base), arguments)


def nadam(
    learning_rate: ScalarOrSchedule = 0.001,
    beta_1: float = 0.9,
    beta_2: float = 0.999,
    epsilon: float = 1e-7,
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
    r"""Keras 3's ``Nadam``, every argument, same numbers.

    .. math::
        \mu_t = \beta_1 (1 - \tfrac12\, 0.96^{t}), \quad \Pi_t = \textstyle\prod_{i \le t} \mu_i,
        \qquad \theta \leftarrow \theta - \theta\lambda\eta - \eta\,
        \frac{\frac{\mu_{t+1} m_t}{1 - \Pi_t \mu_{t+1}} + \frac{(1-\mu_t) g_t}{1 - \Pi_t}}
        {\sqrt{v_t / (1-\beta_2^t)} + \epsilon}

    Dozat's NAdam with its momentum schedule: ``scale_by_nadam(momentum_decay=1,
    accurate_bias_correction=True)`` (torch's ``NAdam`` is the same rule with
    ``momentum_decay=0.004``), then ``scale_by_learning_rate``. The accurate
    bias correction keeps these numbers within 3e-7 of the float64 rule on
    the test suite's stream, where Keras's own float32 arithmetic is within 8e-7.

    Args:
      learning_rate: :math:`\eta`: a float, or a schedule called with the raw
        call count.
      beta_1: :math:`\beta_1` in [0, 1).
      beta_2: :math:`\beta_2` in [0, 1).
      epsilon: :math:`\epsilon > 0`, added to the root.
      {base_args}
    {differences}
    Example:
      >>> import gradxform as gx
      >>> tx = gx.keras.nadam(learning_rate=2e-3, clipnorm=1.0)
    """
    arguments = dict(locals())
    owner = "keras.nadam"
    base = checked_base(owner, arguments)
    validation.positive(owner, "epsilon", epsilon)
    validation.decay_rate(owner, "beta_1", beta_1)
    validation.decay_rate(owner, "beta_2", beta_2)
    scaling = scale_by_nadam(b1=beta_1, b2=beta_2, eps=epsilon, momentum_decay=1.0,
                             accurate_bias_correction=True)
    return keras_preset(owner, keras_chain(scaled_by_learning_rate(scaling), base), arguments)


fill_docstrings(adagrad, adam, adamw, adamax, adadelta, nadam)
