"""Clipping: by value, by each leaf's norm, by the global norm."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from gradxform.core import numerics, tree, validation
from gradxform.core.base import GradientTransformation, init_empty_state, public_constructor


@public_constructor
def clip(max_delta: float) -> GradientTransformation:
    r"""Clips every element to :math:`[-\delta, \delta]`.

    .. math::
        u = \min(\max(g, -\delta), \delta)

    Same as ``optax.clip`` and Keras's ``clipvalue``.

    Args:
      max_delta: :math:`\delta > 0`.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> tx = gx.clip(1.0)
      >>> tx.update({"w": jnp.float32(3.0)}, tx.init({"w": 0.0}))[0]["w"]
      Array(1., dtype=float32)
    """
    validation.positive("clip", "max_delta", max_delta)

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        return tree.tree_map_skip_none(lambda g: jnp.clip(g, -max_delta, max_delta), updates), state

    return GradientTransformation(init_empty_state, update_fn)


@public_constructor
def clip_by_norm(max_norm: float) -> GradientTransformation:
    r"""Clips each leaf separately to an L2 norm of at most :math:`c` (Keras's ``clipnorm``).

    .. math::
        u_i = \frac{g_i\, c}{\max(\lVert g_i \rVert_2, c)}

    for every leaf :math:`g_i`, with the norm over the whole tensor. This is
    Keras's ``clip_by_norm`` formula, operation for operation: a zero gradient
    stays zero, and a non-finite leaf affects only itself.

    Args:
      max_norm: :math:`c > 0`.

    Example:
      >>> import gradxform as gx
      >>> tx = gx.clip_by_norm(1.0)
    """
    validation.positive("clip_by_norm", "max_norm", max_norm)

    def leaf(g):
        g_c = numerics.upcast(g)
        squared = jnp.sum(numerics.abs_sq(g_c))
        norm = jnp.where(squared > 0, jnp.sqrt(jnp.where(squared > 0, squared, 1)), squared)
        clipped = (g_c * max_norm) / jnp.maximum(norm, max_norm).astype(g_c.dtype)
        return clipped.astype(g.dtype)

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        return tree.tree_map_skip_none(leaf, updates), state

    return GradientTransformation(init_empty_state, update_fn)


@public_constructor
def clip_by_global_norm(max_norm: float) -> GradientTransformation:
    r"""Scales all updates down together when their global L2 norm exceeds :math:`c`.

    .. math::
        n = \sqrt{\textstyle\sum_i \lVert g_i \rVert_2^2}, \qquad
        u_i = \begin{cases} g_i & n < c \\ (g_i / n)\, c & \text{otherwise} \end{cases}

    Same formula as ``optax.clip_by_global_norm``; the norm is accumulated in at
    least float32. If :math:`n` is infinite, finite entries become 0 and
    infinite ones NaN; if it is NaN, every entry becomes NaN (guard with
    ``apply_if_finite`` when gradients may overflow). Pascanu et al., 2013.

    Args:
      max_norm: :math:`c > 0`.

    Example:
      >>> import gradxform as gx
      >>> tx = gx.clip_by_global_norm(1.0)
    """
    validation.positive("clip_by_global_norm", "max_norm", max_norm)

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        norm = tree.tree_global_norm(updates)
        keep = norm < max_norm

        def leaf(g):
            g_c = numerics.upcast(g, norm.dtype)
            clipped = (g_c / norm.astype(g_c.dtype)) * max_norm
            return jax.lax.select(keep, g, clipped.astype(g.dtype))

        return tree.tree_map_skip_none(leaf, updates), state

    return GradientTransformation(init_empty_state, update_fn)
