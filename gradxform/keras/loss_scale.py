"""Keras 3's ``LossScaleOptimizer``: dynamic loss scaling around a preset."""

from __future__ import annotations

from typing import Any

from gradxform.core import validation
from gradxform.core.base import GradientTransformation
from gradxform.keras.arguments import BASE_DEFAULTS, keras_error
from gradxform.keras.chain import keras_preset
from gradxform.transforms.loss_scaling import (
    LARGEST_SCALE,
    SMALLEST_SCALE,
    check_dynamic_scales,
    dynamic_loss_scale,
)


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
        u = \mathrm{inner}(g / s) \text{ if } g / s \text{ is finite, else } -0
        \text{ with } s \leftarrow \max(s / 2, 2^{-126}); \quad s \leftarrow 2 s
        \text{ after } N \text{ finite steps, if } 2 s \le 2^{126}

    This is ``dynamic_loss_scale(inner, initial_scale, dynamic_growth_steps,
    min_loss_scale=2**-126, max_loss_scale=2**126)``. The caller passes
    gradients of the scaled loss,
    ``jax.grad(lambda p: gx.scale_loss(loss_fn(p), state))``. On a non-finite
    step nothing in ``inner`` moves: no update, no accumulation, no average,
    and its schedules do not advance.

    Keras bounds the scale by nothing: enough non-finite steps in a row halve
    it to 0, after which the next finite step writes NaN into the params, and
    enough finite ones double it to inf, after which every step is skipped.
    Here it stays in :math:`[2^{-126}, 2^{126}]`, where the scale and the
    reciprocal that XLA multiplies the gradients by are normal float32
    numbers (see `dynamic_loss_scale`). Every Keras run whose scale stays in
    that range gives the same numbers, but for one case: below a scale of 1,
    where :math:`g / s` can overflow although :math:`g` is finite, such a
    step is held instead of writing inf into the params.

    Keras silently drops the inner optimizer's ``loss_scale_factor``; here an
    inner chain with a static loss scale raises a `ValueError`. ``dynamic=False``
    and other arguments raise as in Keras; Keras's base optimizer arguments
    (``clipnorm``, ``use_ema``, ...) are accepted only at their defaults.

    Args:
      inner: the optimizer to wrap, e.g. ``gx.keras.adam(...)``.
      initial_scale: the starting scale :math:`s`, in :math:`[2^{-126}, 2^{126}]`.
      dynamic_growth_steps: :math:`N \ge 1`.
      name: accepted for Keras compatibility; unused.
      **kwargs: ``dynamic=False`` and anything else raise, as in Keras.

    Example:
      >>> import gradxform as gx
      >>> tx = gx.keras.loss_scale_optimizer(gx.keras.adam(1e-3), initial_scale=2.0**15)
    """
    owner = "keras.loss_scale_optimizer"
    if kwargs.pop("dynamic", True) is False:
        raise keras_error(
            owner,
            "LossScaleOptimizer no longer supports `dynamic=False`. Instead, simply set "
            "`loss_scale_factor` directly on the `inner_optimizer`.",
        )
    # As Keras: the base optimizer arguments are accepted at their defaults (old
    # configs carry them) and refused otherwise.
    for argument, default in BASE_DEFAULTS.items():
        value = kwargs.pop(argument, default)
        if value is not default and value != default:
            raise keras_error(
                owner,
                f"LossScaleOptimizer does not support `{argument}`. "
                f"Instead, set `{argument}` on the `inner_optimizer`. (got {argument}={value!r})",
            )
    if kwargs:
        names = "`, `".join(kwargs)
        raise keras_error(
            owner, f"LossScaleOptimizer does not support arguments: `{names}`. (got {kwargs!r})"
        )
    validation.string(owner, "name", name, allow_none=True)
    validation.transformation(owner, "inner", inner)
    check_dynamic_scales(owner, initial_scale, SMALLEST_SCALE, LARGEST_SCALE)
    validation.positive_int(owner, "dynamic_growth_steps", dynamic_growth_steps)
    if _uses(inner, "static_loss_scale"):
        raise keras_error(
            owner,
            "the inner optimizer already divides by a static loss scale (loss_scale_factor); "
            "build it with loss_scale_factor=None (Keras would silently drop it)",
        )
    tx = dynamic_loss_scale(
        inner, initial_scale, dynamic_growth_steps,
        min_loss_scale=SMALLEST_SCALE, max_loss_scale=LARGEST_SCALE,
    )
    return keras_preset(owner, tx, dict(inner=inner, initial_scale=initial_scale,
                                        dynamic_growth_steps=dynamic_growth_steps, name=name))
