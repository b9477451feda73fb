"""Keras 3's ``Adagrad``, ``Adam`` and ``LossScaleOptimizer`` as gradxform chains.

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

import inspect
from typing import Any, Sequence

from gradxform.core import validation
from gradxform.core.base import GradientTransformation, ScalarOrSchedule
from gradxform.core.combine import chain
from gradxform.schedules.micro_steps import AtLastMicroStep
from gradxform.transforms.accumulation import accumulate_gradients
from gradxform.transforms.adam import scale_by_adam, scale_by_amsgrad
from gradxform.transforms.adaptive import scale_by_adagrad
from gradxform.transforms.clipping import clip, clip_by_global_norm, clip_by_norm
from gradxform.transforms.loss_scaling import dynamic_loss_scale, static_loss_scale
from gradxform.transforms.params_ema import params_ema
from gradxform.transforms.scaling import scale_by_learning_rate
from gradxform.transforms.weight_decay import decoupled_weight_decay

_DIFFERENCES = """
    Where Keras 3 silently accepts a value that cannot be meant, this raises a
    `ValueError` (or `TypeError`) instead:

    * ``learning_rate``, ``weight_decay`` negative; a callable ``learning_rate``
      that takes no step argument (Keras calls such callables with no
      arguments; here every callable is a schedule of the step);
    * ``clipnorm``, ``clipvalue``, ``global_clipnorm`` zero or negative (Keras
      then does not clip);
    * ``epsilon`` zero or negative (Keras may then divide 0 by 0);
    * ``gradient_accumulation_steps`` not an int, e.g. ``2.5``;
    * ``ema_momentum`` outside [0, 1] or ``ema_overwrite_frequency`` not an int
      >= 1 (``0``, ``True``), even when ``use_ema=False``;
    * ``decay`` (Keras warns and ignores it) and any other unknown argument.

    Also: ``learning_rate`` may be an int or a jax scalar (Keras wants a Python
    float); ``name`` is accepted for compatibility with Keras configs and
    unused, as gradxform states have no variable names;
    ``exclude_from_weight_decay`` patterns are searched in each leaf's key path
    (``"dense/bias"``) rather than in the variable's short name. On non-finite
    gradients ``global_clipnorm`` makes the finite entries 0 and the others NaN
    (optax's formula) where Keras makes all of them NaN.
"""


def _fail(owner: str, message: str) -> ValueError:
    return ValueError(f"{owner}: {message}")


def _check_learning_rate(owner: str, learning_rate: Any) -> None:
    if callable(learning_rate):
        try:
            inspect.signature(learning_rate).bind(0)
        except TypeError:
            raise TypeError(
                f"{owner}: learning_rate must be a float or a schedule called with the step, "
                f"got {learning_rate!r}, which cannot be called with one argument"
            ) from None
        except ValueError:  # no signature to inspect (a builtin): trust it
            pass
        return
    validation.non_negative(owner, "learning_rate", learning_rate)


def _check_positive_or_none(owner: str, name: str, value: Any) -> None:
    if value is None:
        return
    validation.real_number(owner, name, value)
    if value <= 0:
        raise _fail(owner, f"{name} must be > 0 or None, got {value!r} (Keras would not clip)")


def _check_base_arguments(
    owner,
    learning_rate,
    weight_decay,
    clipnorm,
    clipvalue,
    global_clipnorm,
    ema_momentum,
    ema_overwrite_frequency,
    loss_scale_factor,
    gradient_accumulation_steps,
    kwargs,
):
    """Keras's constructor checks with Keras's messages, then the stricter ones."""
    if kwargs:
        if "decay" in kwargs:
            raise _fail(owner, "argument `decay` is no longer supported (Keras ignores it)")
        raise _fail(owner, f"Argument(s) not recognized: {kwargs}")
    if sum(value is not None for value in (clipnorm, clipvalue, global_clipnorm)) > 1:
        raise _fail(
            owner,
            "Only one of `clipnorm`, `clipvalue` and `global_clipnorm` can be set. "
            f"Received: clipnorm={clipnorm}, clipvalue={clipvalue}, "
            f"global_clipnorm={global_clipnorm}",
        )
    gas = gradient_accumulation_steps
    if gas is not None and gas != 0 and (isinstance(gas, bool) or not isinstance(gas, int) or gas < 2):
        raise _fail(
            owner,
            "`gradient_accumulation_steps` must be an integer >= 2. "
            f"Received: gradient_accumulation_steps={gas}",
        )
    validation.real_number(owner, "ema_momentum", ema_momentum)
    if not 0 <= ema_momentum <= 1:
        raise _fail(
            owner, f"`ema_momentum` must be in the range [0, 1]. Received: ema_momentum={ema_momentum}"
        )
    frequency = ema_overwrite_frequency
    if frequency is not None and (isinstance(frequency, bool) or not isinstance(frequency, int) or frequency < 1):
        raise _fail(
            owner,
            "`ema_overwrite_frequency` must be an integer >= 1 or None. "
            f"Received: ema_overwrite_frequency={frequency}",
        )
    _check_learning_rate(owner, learning_rate)
    if weight_decay is not None:
        validation.non_negative(owner, "weight_decay", weight_decay)
    for name, value in (("clipnorm", clipnorm), ("clipvalue", clipvalue), ("global_clipnorm", global_clipnorm)):
        _check_positive_or_none(owner, name, value)
    if loss_scale_factor is not None:
        validation.positive(owner, "loss_scale_factor", loss_scale_factor)


def _keras_chain(
    scaling: GradientTransformation,
    learning_rate,
    weight_decay,
    clipnorm,
    clipvalue,
    global_clipnorm,
    use_ema,
    ema_momentum,
    ema_overwrite_frequency,
    loss_scale_factor,
    gradient_accumulation_steps,
    exclude_from_weight_decay,
) -> GradientTransformation:
    every_k = gradient_accumulation_steps or None
    if every_k and callable(learning_rate):
        learning_rate = AtLastMicroStep(learning_rate, every_k)
    update = []
    if clipnorm is not None:
        update.append(clip_by_norm(clipnorm))
    elif clipvalue is not None:
        update.append(clip(clipvalue))
    elif global_clipnorm is not None:
        update.append(clip_by_global_norm(global_clipnorm))
    update += [scaling, scale_by_learning_rate(learning_rate)]
    if weight_decay is not None:
        update.append(
            decoupled_weight_decay(weight_decay, learning_rate, exclude=exclude_from_weight_decay)
        )
    members = [] if loss_scale_factor is None else [static_loss_scale(loss_scale_factor)]
    members += [accumulate_gradients(chain(*update), every_k)] if every_k else update
    if use_ema:
        members.append(
            params_ema(ema_momentum, ema_overwrite_frequency, calls_per_step=every_k or 1)
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
      weight_decay: :math:`\lambda \ge 0`, or None.
      clipnorm: clip each leaf to this L2 norm (at most one clipping argument).
      clipvalue: clip each element to :math:`[-c, c]`.
      global_clipnorm: clip all leaves together to this global norm.
      use_ema: keep an average of the parameters; read it with `finalize_params`.
      ema_momentum: the average's momentum, in [0, 1].
      ema_overwrite_frequency: overwrite the params with the average every this
        many steps, or None.
      loss_scale_factor: divide the gradients by this; scale the loss with
        ``gx.scale_loss(loss, state)``.
      gradient_accumulation_steps: update every this many calls (an int >= 2),
        with the mean gradient.
      exclude_from_weight_decay: regex patterns; leaves whose key path matches
        one are not decayed.
      name: accepted for Keras compatibility; unused.
      **kwargs: anything else raises, as in Keras.
    {differences}
    Example:
      >>> import gradxform as gx
      >>> tx = gx.keras.adagrad(learning_rate=0.01, clipnorm=1.0, use_ema=True)
    """
    owner = "keras.adagrad"
    _check_base_arguments(
        owner, learning_rate, weight_decay, clipnorm, clipvalue, global_clipnorm, ema_momentum,
        ema_overwrite_frequency, loss_scale_factor, gradient_accumulation_steps, kwargs,
    )
    validation.positive(owner, "epsilon", epsilon)
    validation.non_negative(owner, "initial_accumulator_value", initial_accumulator_value)
    scaling = scale_by_adagrad(initial_accumulator_value=initial_accumulator_value, eps=epsilon)
    return _keras_chain(
        scaling, learning_rate, weight_decay, clipnorm, clipvalue, global_clipnorm, use_ema,
        ema_momentum, ema_overwrite_frequency, loss_scale_factor, gradient_accumulation_steps,
        exclude_from_weight_decay,
    )


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
      weight_decay: :math:`\lambda \ge 0`, or None.
      clipnorm: clip each leaf to this L2 norm (at most one clipping argument).
      clipvalue: clip each element to :math:`[-c, c]`.
      global_clipnorm: clip all leaves together to this global norm.
      use_ema: keep an average of the parameters; read it with `finalize_params`.
      ema_momentum: the average's momentum, in [0, 1].
      ema_overwrite_frequency: overwrite the params with the average every this
        many steps, or None.
      loss_scale_factor: divide the gradients by this; scale the loss with
        ``gx.scale_loss(loss, state)``.
      gradient_accumulation_steps: update every this many calls (an int >= 2),
        with the mean gradient.
      exclude_from_weight_decay: regex patterns; leaves whose key path matches
        one are not decayed.
      name: accepted for Keras compatibility; unused.
      **kwargs: anything else raises, as in Keras.
    {differences}
    Example:
      >>> import gradxform as gx
      >>> tx = gx.keras.adam(learning_rate=1e-3, weight_decay=0.004,
      ...                    exclude_from_weight_decay=["bias", "norm"])
    """
    owner = "keras.adam"
    _check_base_arguments(
        owner, learning_rate, weight_decay, clipnorm, clipvalue, global_clipnorm, ema_momentum,
        ema_overwrite_frequency, loss_scale_factor, gradient_accumulation_steps, kwargs,
    )
    validation.positive(owner, "epsilon", epsilon)
    validation.decay_rate(owner, "beta_1", beta_1)
    validation.decay_rate(owner, "beta_2", beta_2)
    validation.boolean(owner, "amsgrad", amsgrad)
    moments = scale_by_amsgrad if amsgrad else scale_by_adam
    scaling = moments(b1=beta_1, b2=beta_2, eps=epsilon, eps_hat=True)
    return _keras_chain(
        scaling, learning_rate, weight_decay, clipnorm, clipvalue, global_clipnorm, use_ema,
        ema_momentum, ema_overwrite_frequency, loss_scale_factor, gradient_accumulation_steps,
        exclude_from_weight_decay,
    )


for _preset in (adagrad, adam):
    if _preset.__doc__:  # None under python -OO
        _preset.__doc__ = _preset.__doc__.replace("{differences}", _DIFFERENCES)


def _uses(tx: Any, constructor_name: str) -> bool:
    """Whether ``tx`` or anything it is built from was made by ``constructor_name``."""
    if not isinstance(tx, GradientTransformation) or tx.name is None:
        return False
    if tx.name == constructor_name:
        return True
    parts = list(tx.children) + list(tx.hyperparams.values()) + [tx.inner]
    return any(_uses(part, constructor_name) for part in parts)


def loss_scale_optimizer(
    inner: GradientTransformation,
    initial_scale: float = 2.0**15,
    dynamic_growth_steps: int = 2000,
    name: str | None = None,
    **kwargs: Any,
) -> GradientTransformation:
    r"""Keras 3's ``LossScaleOptimizer``: dynamic loss scaling around a preset.

    .. math::
        u = \mathrm{inner}(g / s) \text{ if } g \text{ is finite, else } -0
        \text{ with } s \leftarrow s / 2; \quad s \leftarrow 2 s \text{ after } N
        \text{ finite steps}

    This is ``dynamic_loss_scale(inner, initial_scale, dynamic_growth_steps)``.
    The caller passes gradients of the scaled loss,
    ``jax.grad(lambda p: gx.scale_loss(loss_fn(p), state))``. On a non-finite
    step nothing in ``inner`` moves: no update, no accumulation, no average,
    and its schedules do not advance.

    Keras silently drops the inner optimizer's ``loss_scale_factor``; here an
    inner chain with a static loss scale raises a `ValueError`. ``dynamic=False``
    and other arguments raise as in Keras.

    Args:
      inner: the optimizer to wrap, e.g. ``gx.keras.adam(...)``.
      initial_scale: the starting scale :math:`s > 0`.
      dynamic_growth_steps: :math:`N \ge 1`.
      name: accepted for Keras compatibility; unused.
      **kwargs: ``dynamic=False`` and anything else raise, as in Keras.

    Example:
      >>> import gradxform as gx
      >>> tx = gx.keras.loss_scale_optimizer(gx.keras.adam(1e-3), initial_scale=2.0**15)
    """
    owner = "keras.loss_scale_optimizer"
    if kwargs.get("dynamic", True) is False:
        raise _fail(
            owner,
            "LossScaleOptimizer no longer supports `dynamic=False`. Instead, simply set "
            "`loss_scale_factor` directly on the `inner_optimizer`.",
        )
    unsupported = [key for key in kwargs if key != "dynamic"]
    if unsupported:
        names = ", ".join(f"`{key}`" for key in unsupported)
        raise _fail(owner, f"LossScaleOptimizer does not support arguments: {names}.")
    if _uses(inner, "static_loss_scale"):
        raise _fail(
            owner,
            "the inner optimizer already divides by a static loss scale (loss_scale_factor); "
            "build it with loss_scale_factor=None (Keras would silently drop it)",
        )
    del name
    return dynamic_loss_scale(inner, initial_scale, dynamic_growth_steps)
