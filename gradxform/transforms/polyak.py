"""Polyak's step size: the loss's gap to its minimum over the squared gradient norm.

The update needs the current loss, passed to ``update`` as ``value=``. The
step is one number for the whole tree (a global norm), computed in at least
float32; the updates keep the gradients' dtype. On `flat_tree` buffers and on
sharded leaves the norm covers every entry, as on the per-leaf tree.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np

from gradxform.core import numerics, tree, validation
from gradxform.core.base import GradientTransformation, init_empty_state, public_constructor

POLYAK_VARIANTS = ("sps", "sps+")
# optax's threshold: below it the squared norm (plus eps) counts as zero and the step is 0.
_ZERO_NORM = float(np.finfo(float).eps)


def _loss_value(owner: str, extra_args: dict) -> Any:
    """The ``value=`` extra argument, checked: one real number."""
    if "value" not in extra_args:
        others = f" (it got only {sorted(extra_args)!r})" if extra_args else ""
        raise TypeError(
            f"{owner}: update needs the current loss as the keyword argument value: "
            f"tx.update(grads, state, params, value=loss){others}"
        )
    value = extra_args["value"]
    array = None if isinstance(value, (bool, np.bool_, str, bytes)) else _as_array(value)
    if array is None or not (
        jnp.issubdtype(array.dtype, jnp.integer) or jnp.issubdtype(array.dtype, jnp.floating)
    ):
        raise TypeError(f"{owner}: value must be the loss, a real number, got {value!r}")
    if array.shape != ():
        raise ValueError(
            f"{owner}: value must be the loss, one number (shape ()), got an array of shape "
            f"{array.shape}; reduce it to a scalar (the mean over the batch)"
        )
    return array


def _as_array(value: Any) -> Any:
    try:
        return jnp.asarray(value)
    except TypeError:
        return None


@public_constructor
def scale_by_polyak(
    f_min: float = 0.0,
    max_learning_rate: float = 1.0,
    eps: float = 0.0,
    variant: str = "sps",
) -> GradientTransformation:
    r"""Scales the updates by Polyak's step size, from the loss passed as ``value``.

    .. math::
        u_t = \gamma_t\, g_t, \qquad
        \gamma_t = \min\left(\frac{f(x_t) - f^\star}{\lVert g_t \rVert^2 + \epsilon},\,
        \gamma_{max}\right)

    where :math:`\lVert g_t \rVert` is the global norm of the incoming updates,
    and :math:`\gamma_t = 0` when :math:`\lVert g_t \rVert^2 + \epsilon` is
    below float64's machine epsilon. With ``variant="sps+"`` the gap
    :math:`f(x_t) - f^\star` is replaced by its positive part (Garrigos et al.,
    2023). ``update`` takes the loss as a keyword argument:
    ``tx.update(grads, state, params, value=loss)``; without it, it raises a
    `TypeError`, and given params, the updates must be shaped like them (a
    `ValueError`). Same formula, defaults and (empty) state as
    ``optax.scale_by_polyak``; the variant is checked at construction, and the
    updates keep the gradients' dtype. The step has the sign of the gradient:
    descent comes from a negative scale before or after it (``polyak_sgd``).
    Loizou et al., 2021, "Stochastic Polyak Step-size for SGD: An Adaptive
    Learning Rate for Fast Convergence".

    Args:
      f_min: :math:`f^\star`, a finite lower bound of the loss (0 for models
        that can fit their data exactly).
      max_learning_rate: :math:`\gamma_{max} \ge 0`, the largest step.
      eps: :math:`\epsilon \ge 0`, added to the squared norm.
      variant: "sps" or "sps+" (the gap's positive part).

    Example:
      >>> import jax, jax.numpy as jnp, gradxform as gx
      >>> loss = lambda w: jnp.sum(w ** 2)
      >>> w = jnp.array([1.0, 2.0])
      >>> tx = gx.scale_by_polyak()
      >>> value, grad = jax.value_and_grad(loss)(w)
      >>> tx.update(grad, tx.init(w), w, value=value)[0]
      Array([0.5, 1. ], dtype=float32)
    """
    owner = "scale_by_polyak"
    validation.real_number(owner, "f_min", f_min)
    validation.non_negative(owner, "max_learning_rate", max_learning_rate)
    validation.non_negative(owner, "eps", eps)
    validation.string(owner, "variant", variant)
    if variant not in POLYAK_VARIANTS:
        raise ValueError(f"{owner}: variant must be one of {POLYAK_VARIANTS}, got {variant!r}")

    def update_fn(updates, state, params=None, **extra_args):
        if params is not None:  # the step sums over the whole tree: a stray leaf would change it
            tree.check_same_structure(owner, "params", params, updates, none_matches=True)
        value = _loss_value(owner, extra_args)
        squared_norm = tree.tree_squared_norm(updates)
        dtype = squared_norm.dtype
        denominator = squared_norm + numerics.hyperparameter(eps, dtype)
        # As optax: the gap in the loss's precision (at least float32), then the norm's.
        loss_dtype = numerics.compute_dtype(value.dtype)
        gap = (value.astype(loss_dtype) - numerics.hyperparameter(f_min, loss_dtype)).astype(dtype)
        if variant == "sps+":
            gap = jnp.maximum(gap, 0)
        is_zero = denominator <= _ZERO_NORM
        ratio = gap / jnp.where(is_zero, jnp.ones_like(denominator), denominator)
        step = jnp.where(
            is_zero, jnp.zeros_like(ratio),
            jnp.minimum(ratio, numerics.hyperparameter(max_learning_rate, dtype)),
        )
        return tree.tree_map_skip_none(lambda g: numerics.scale_leaf(step, g), updates), state

    return GradientTransformation(init_empty_state, update_fn)
