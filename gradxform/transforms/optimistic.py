"""Optimistic gradients: the current gradient plus a correction by the previous one.

Arithmetic runs in at least float32; the previous gradient is stored in the
params' dtype, the updates in the gradients' dtype. The rule is elementwise:
it runs unchanged on `flat_tree` buffers and keeps sharded leaves sharded.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from gradxform.core import numerics, tree, validation
from gradxform.core.base import GradientTransformation, Updates, public_constructor


class ScaleByOptimisticGradientState(NamedTuple):
    """Whether no update has run yet, and the previous gradient.

    optax's ``ScaleByOptimisticGradientState``, field for field.
    """

    is_initial_step: jax.Array  # bool, shape ()
    previous_gradient: Updates


@public_constructor
def scale_by_optimistic_gradient(alpha: float = 1.0, beta: float = 1.0) -> GradientTransformation:
    r"""Computes generalized optimistic gradients: extrapolates from the previous gradient.

    .. math::
        u_t = (\alpha + \beta)\, g_t - \beta\, g_{t-1}, \qquad g_0 := g_1

    so the first update is :math:`\alpha g_1` (the previous gradient does not
    exist yet; optax#1082). With :math:`\alpha = \beta = 1` it is
    :math:`2 g_t - g_{t-1}`, optimistic gradient descent. Same formula,
    defaults and state as ``optax.scale_by_optimistic_gradient``. Mokhtari et
    al., 2020, "A Unified Analysis of Extra-gradient and Optimistic Gradient
    Methods for Saddle Point Problems: Proximal Point Approach".

    Args:
      alpha: :math:`\alpha`, a finite real number: the weight of the gradient.
      beta: :math:`\beta`, a finite real number: the weight of the correction
        (negative momentum).

    Example:
      >>> import gradxform as gx
      >>> tx = gx.chain(gx.scale_by_optimistic_gradient(), gx.scale_by_learning_rate(1e-2))
    """
    owner = "scale_by_optimistic_gradient"
    validation.real_number(owner, "alpha", alpha)
    validation.real_number(owner, "beta", beta)

    def init_fn(params):
        return ScaleByOptimisticGradientState(
            is_initial_step=jnp.ones([], jnp.bool_),
            previous_gradient=tree.tree_zeros_like(params),
        )

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        tree.check_same_structure(owner, "state", state.previous_gradient, updates)
        initial = state.is_initial_step

        def leaf(g, previous):
            dtype = numerics.compute_dtype(g.dtype, previous.dtype)
            g_c = g.astype(dtype)
            a = numerics.hyperparameter(alpha, numerics.real_dtype(dtype))
            b = numerics.hyperparameter(beta, numerics.real_dtype(dtype))
            previous_c = jnp.where(initial, g_c, previous.astype(dtype))
            update = lax.sub(lax.mul(numerics.operand(a + b, dtype), g_c),
                             lax.mul(numerics.operand(b, dtype), previous_c))
            return numerics.store(update, g.dtype), numerics.store(g_c, previous.dtype)

        updates, previous = tree.tree_map_multi(leaf, 2, updates, state.previous_gradient)
        return updates, ScaleByOptimisticGradientState(
            is_initial_step=jnp.zeros_like(initial), previous_gradient=previous
        )

    return GradientTransformation(init_fn, update_fn)
