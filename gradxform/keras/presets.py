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
from typing import Any, NamedTuple, Sequence

import numpy as np

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
    * ``initial_accumulator_value`` negative (Adagrad; Keras then gives NaN);
    * ``beta_1`` or ``beta_2`` outside [0, 1) (Adam);
    * ``loss_scale_factor`` zero, negative or not finite (Keras divides by it);
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


class _KerasBase(NamedTuple):
    """The arguments every Keras optimizer takes, beside its own."""

    learning_rate: Any
    weight_decay: Any
    clipnorm: Any
    clipvalue: Any
    global_clipnorm: Any
    use_ema: Any
    ema_momentum: Any
    ema_overwrite_frequency: Any
    loss_scale_factor: Any
    gradient_accumulation_steps: Any
    exclude_from_weight_decay: Any


def _check_base_arguments(owner: str, base: _KerasBase, kwargs: dict) -> None:
    """Keras's constructor checks with Keras's messages, then the stricter ones."""
    if kwargs:
        if "decay" in kwargs:
            raise _fail(
                owner,
                f"argument `decay` is no longer supported (Keras ignores it), got "
                f"decay={kwargs['decay']!r}",
            )
        raise _fail(owner, f"Argument(s) not recognized: {kwargs}")
    clipping = (base.clipnorm, base.clipvalue, base.global_clipnorm)
    if sum(value is not None for value in clipping) > 1:
        raise _fail(
            owner,
            "Only one of `clipnorm`, `clipvalue` and `global_clipnorm` can be set. "
            f"Received: clipnorm={base.clipnorm}, clipvalue={base.clipvalue}, "
            f"global_clipnorm={base.global_clipnorm}",
        )
    gas = base.gradient_accumulation_steps
    if gas is not None and gas != 0 and not _is_int_at_least(gas, 2):
        raise _fail(
            owner,
            "`gradient_accumulation_steps` must be an integer >= 2. "
            f"Received: gradient_accumulation_steps={gas}",
        )
    validation.real_number(owner, "ema_momentum", base.ema_momentum)
    if not 0 <= base.ema_momentum <= 1:
        raise _fail(
            owner,
            "`ema_momentum` must be in the range [0, 1]. "
            f"Received: ema_momentum={base.ema_momentum}",
        )
    frequency = base.ema_overwrite_frequency
    if frequency is not None and not _is_int_at_least(frequency, 1):
        raise _fail(
            owner,
            "`ema_overwrite_frequency` must be an integer >= 1 or None. "
            f"Received: ema_overwrite_frequency={frequency}",
        )
    _check_learning_rate(owner, base.learning_rate)
    if base.weight_decay is not None:
        validation.non_negative(owner, "weight_decay", base.weight_decay)
    for name, value in zip(("clipnorm", "clipvalue", "global_clipnorm"), clipping):
        _check_positive_or_none(owner, name, value)
    if base.loss_scale_factor is not None:
        validation.positive(owner, "loss_scale_factor", base.loss_scale_factor)


def _is_int_at_least(value: Any, minimum: int) -> bool:
    is_int = isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))
    return is_int and value >= minimum


def _keras_chain(scaling: GradientTransformation, base: _KerasBase) -> GradientTransformation:
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


_BASE_ARGS = """weight_decay: :math:`\\lambda \\ge 0`, or None.
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
      **kwargs: anything else raises, as in Keras."""


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
    base = _KerasBase(
        learning_rate, weight_decay, clipnorm, clipvalue, global_clipnorm, use_ema, ema_momentum,
        ema_overwrite_frequency, loss_scale_factor, gradient_accumulation_steps,
        exclude_from_weight_decay,
    )
    _check_base_arguments(owner, base, kwargs)
    validation.positive(owner, "epsilon", epsilon)
    validation.non_negative(owner, "initial_accumulator_value", initial_accumulator_value)
    scaling = scale_by_adagrad(initial_accumulator_value=initial_accumulator_value, eps=epsilon)
    return _keras_chain(scaling, base)


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
    base = _KerasBase(
        learning_rate, weight_decay, clipnorm, clipvalue, global_clipnorm, use_ema, ema_momentum,
        ema_overwrite_frequency, loss_scale_factor, gradient_accumulation_steps,
        exclude_from_weight_decay,
    )
    _check_base_arguments(owner, base, kwargs)
    validation.positive(owner, "epsilon", epsilon)
    validation.decay_rate(owner, "beta_1", beta_1)
    validation.decay_rate(owner, "beta_2", beta_2)
    validation.boolean(owner, "amsgrad", amsgrad)
    moments = scale_by_amsgrad if amsgrad else scale_by_adam
    scaling = moments(b1=beta_1, b2=beta_2, eps=epsilon, eps_hat=True)
    return _keras_chain(scaling, base)


for _preset in (adagrad, adam):
    if _preset.__doc__:  # None under python -OO
        _preset.__doc__ = _preset.__doc__.replace("{differences}", _DIFFERENCES).replace(
            "{base_args}", _BASE_ARGS
        )


_BASE_DEFAULTS = {
    "weight_decay": None,
    "clipnorm": None,
    "global_clipnorm": None,
    "clipvalue": None,
    "use_ema": False,
    "ema_momentum": 0.99,
    "ema_overwrite_frequency": None,
    "loss_scale_factor": None,
    "gradient_accumulation_steps": None,
}


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
    and other arguments raise as in Keras; Keras's base optimizer arguments
    (``clipnorm``, ``use_ema``, ...) are accepted only at their defaults.

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
    if kwargs.pop("dynamic", True) is False:
        raise _fail(
            owner,
            "LossScaleOptimizer no longer supports `dynamic=False`. Instead, simply set "
            "`loss_scale_factor` directly on the `inner_optimizer`.",
        )
    # As Keras: the base optimizer arguments are accepted at their defaults (old
    # configs carry them) and refused otherwise.
    for argument, default in _BASE_DEFAULTS.items():
        if argument in kwargs and kwargs.pop(argument) != default:
            raise _fail(
                owner,
                f"LossScaleOptimizer does not support `{argument}`. "
                f"Instead, set `{argument}` on the `inner_optimizer`.",
            )
    if kwargs:
        names = "`, `".join(kwargs)
        raise _fail(owner, f"LossScaleOptimizer does not support arguments: `{names}`.")
    if _uses(inner, "static_loss_scale"):
        raise _fail(
            owner,
            "the inner optimizer already divides by a static loss scale (loss_scale_factor); "
            "build it with loss_scale_factor=None (Keras would silently drop it)",
        )
    del name
    return dynamic_loss_scale(inner, initial_scale, dynamic_growth_steps)
