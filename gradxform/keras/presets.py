"""Keras 3's ``Adagrad`` and ``Adam`` as gradxform chains.

Each preset takes Keras's argument names and defaults and returns an ordinary
`chain` of public transforms, whose ``repr`` shows what it is made of. The
chain, in Keras's order of operations (``keras_semantics.md`` section 1):

1. ``static_loss_scale(loss_scale_factor)``: gradients divided first;
2. ``accumulate_gradients(..., gradient_accumulation_steps)`` around 3 to 6;
3. ``clip_by_norm(clipnorm)``, ``clip(clipvalue)`` or ``clip_by_global_norm(global_clipnorm)``;
4. ``scale_by_adagrad`` or ``scale_by_adam(eps_hat=True)`` / ``scale_by_amsgrad(eps_hat=True)``;
5. ``scale_by_learning_rate(learning_rate)``;
6. ``decoupled_weight_decay(weight_decay, learning_rate, exclude=exclude_from_weight_decay)``;
7. ``params_ema(ema_momentum, ema_overwrite_frequency, calls_per_step=gradient_accumulation_steps)``.
"""

from __future__ import annotations

from typing import Any, Sequence

from gradxform.core import validation
from gradxform.core.base import GradientTransformation, ScalarOrSchedule, returned_by
from gradxform.core.combine import chain
from gradxform.keras.arguments import BASE_ARGS, DIFFERENCES, KerasBase, check_base_arguments
from gradxform.schedules.micro_steps import AtLastMicroStep
from gradxform.transforms.accumulation import accumulate_gradients
from gradxform.transforms.adam import scale_by_adam, scale_by_amsgrad
from gradxform.transforms.adaptive import scale_by_adagrad
from gradxform.transforms.clipping import clip, clip_by_global_norm, clip_by_norm
from gradxform.transforms.loss_scaling import static_loss_scale
from gradxform.transforms.params_ema import params_ema
from gradxform.transforms.scaling import scale_by_learning_rate
from gradxform.transforms.weight_decay import decoupled_weight_decay


def _keras_chain(scaling: GradientTransformation, base: KerasBase) -> GradientTransformation:
    """The chain in Keras's order of operations (see the module docstring)."""
    every_k = base.gradient_accumulation_steps or None
    learning_rate = base.learning_rate
    if every_k and callable(learning_rate):
        learning_rate = AtLastMicroStep(learning_rate, every_k)
    update = []
    if base.clipnorm is not None:
        update.append(clip_by_norm(base.clipnorm))
    elif base.clipvalue is not None:
        update.append(clip(base.clipvalue))
    elif base.global_clipnorm is not None:
        update.append(clip_by_global_norm(base.global_clipnorm))
    update += [scaling, scale_by_learning_rate(learning_rate)]
    if base.weight_decay is not None:
        update.append(
            decoupled_weight_decay(
                base.weight_decay, learning_rate, exclude=base.exclude_from_weight_decay
            )
        )
    members = [] if base.loss_scale_factor is None else [static_loss_scale(base.loss_scale_factor)]
    members += [accumulate_gradients(chain(*update), every_k)] if every_k else update
    if base.use_ema:
        members.append(
            params_ema(base.ema_momentum, base.ema_overwrite_frequency, calls_per_step=every_k or 1)
        )
    return chain(*members)


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
    owner = "keras.adagrad"
    base = KerasBase(
        learning_rate, weight_decay, clipnorm, clipvalue, global_clipnorm, use_ema, ema_momentum,
        ema_overwrite_frequency, loss_scale_factor, gradient_accumulation_steps,
        exclude_from_weight_decay,
    )
    check_base_arguments(owner, base, kwargs)
    validation.string(owner, "name", name, allow_none=True)
    validation.positive(owner, "epsilon", epsilon)
    validation.non_negative(owner, "initial_accumulator_value", initial_accumulator_value)
    scaling = scale_by_adagrad(initial_accumulator_value=initial_accumulator_value, eps=epsilon)
    return returned_by(_keras_chain(scaling, base), owner)


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
    owner = "keras.adam"
    base = KerasBase(
        learning_rate, weight_decay, clipnorm, clipvalue, global_clipnorm, use_ema, ema_momentum,
        ema_overwrite_frequency, loss_scale_factor, gradient_accumulation_steps,
        exclude_from_weight_decay,
    )
    check_base_arguments(owner, base, kwargs)
    validation.string(owner, "name", name, allow_none=True)
    validation.positive(owner, "epsilon", epsilon)
    validation.decay_rate(owner, "beta_1", beta_1)
    validation.decay_rate(owner, "beta_2", beta_2)
    validation.boolean(owner, "amsgrad", amsgrad)
    moments = scale_by_amsgrad if amsgrad else scale_by_adam
    scaling = moments(b1=beta_1, b2=beta_2, eps=epsilon, eps_hat=True)
    return returned_by(_keras_chain(scaling, base), owner)


for _preset in (adagrad, adam):
    if _preset.__doc__:  # None under python -OO
        _preset.__doc__ = _preset.__doc__.replace("{differences}", DIFFERENCES).replace(
            "{base_args}", BASE_ARGS
        )
