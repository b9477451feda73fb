"""Clipping: by value, by each leaf's norm, by the global norm."""

from __future__ import annotations

import jax.numpy as jnp

from gradxform.core import leafwise, numerics, sparse, tree, validation
from gradxform.core.base import GradientTransformation, init_empty_state, public_constructor


@sparse.row_sparse_rule("exact")
@public_constructor
def clip(max_delta: float) -> GradientTransformation:
    r"""Clips every element to :math:`[-\delta, \delta]`.

    .. math::
        u = \min(\max(g, -\delta), \delta)

    Same as ``optax.clip`` and Keras's ``clipvalue``. Complex numbers have no
    order, so a complex element is clipped in modulus, keeping its phase:
    :math:`u = g\, \delta / \max(|g|, \delta)` (optax raises for them).

    Args:
      max_delta: :math:`\delta > 0`.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> tx = gx.clip(1.0)
      >>> tx.update({"w": jnp.float32(3.0)}, tx.init({"w": 0.0}))[0]["w"]
      Array(1., dtype=float32)
    """
    validation.positive("clip", "max_delta", max_delta)

    def leaf(g):
        bound = numerics.hyperparameter(max_delta, g.real.dtype)
        if not jnp.iscomplexobj(g):
            return jnp.clip(g, -bound, bound)
        return g * (bound / jnp.maximum(jnp.abs(g), bound)).astype(g.dtype)

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        return tree.tree_map_skip_none(lambda g: sparse.map_values(leaf, g), updates), state

    return GradientTransformation(init_empty_state, update_fn)


@sparse.row_sparse_rule("exact")
@public_constructor
def clip_by_norm(max_norm: float) -> GradientTransformation:
    r"""Clips each leaf separately to an L2 norm of at most :math:`c` (Keras's ``clipnorm``).

    .. math::
        u_i = \frac{g_i\, c}{\max(\lVert g_i \rVert_2, c)}

    for every leaf :math:`g_i`, with the norm over the whole tensor. This is
    Keras's ``clip_by_norm`` formula, operation for operation: a zero gradient
    stays zero, and a non-finite leaf affects only itself (its infinite entries
    become NaN, its finite ones 0; a NaN makes the whole leaf NaN). Where
    Keras's formula overflows for finite gradients (:math:`\lVert g_i \rVert^2`
    or :math:`g_i c` beyond the dtype's range) and returns 0 or NaN, the leaf is
    computed as :math:`(g_i/m)\,c / \max(\lVert g_i/m \rVert, c/m)`, with
    :math:`m` a power of two near its largest magnitude, and clipped correctly.

    Args:
      max_norm: :math:`c > 0`.

    Example:
      >>> import gradxform as gx
      >>> tx = gx.clip_by_norm(1.0)
    """
    validation.positive("clip_by_norm", "max_norm", max_norm)

    def rows(g):
        g_c = numerics.upcast(g)
        # ||g|| = scaled_norm / inv_scale; inv_scale = 1 unless the squares or ||g|| c overflow.
        inv_scale, scaled_norm = numerics.rows_norm_parts(g_c, headroom=max_norm)
        bound = numerics.hyperparameter(max_norm, scaled_norm.dtype)
        denominator = jnp.maximum(scaled_norm, bound * inv_scale).astype(g_c.dtype)
        numerator = (g_c * inv_scale.astype(g_c.dtype)) * numerics.hyperparameter(max_norm, g_c.dtype)
        return (numerator / denominator).astype(g.dtype)

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        return leafwise.map_leafwise(rows, updates), state

    return GradientTransformation(init_empty_state, update_fn)


@sparse.row_sparse_rule("exact")
@public_constructor
def clip_by_global_norm(max_norm: float) -> GradientTransformation:
    r"""Scales all updates down together when their global L2 norm exceeds :math:`c`.

    .. math::
        n = \sqrt{\textstyle\sum_i \lVert g_i \rVert_2^2}, \qquad
        u_i = \begin{cases} g_i & n < c \\ (g_i / n)\, c & \text{otherwise} \end{cases}

    computed as one scale :math:`s = c / \max(n, c)` that multiplies every
    entry, as Keras's ``global_clipnorm`` does (:math:`s = 1` exactly when
    :math:`n \le c`, so unclipped updates are the gradients bit for bit).
    ``optax.clip_by_global_norm`` divides every entry by :math:`n` instead;
    the two agree to one rounding. The scale matters for speed: XLA:CPU copies
    a multiply by a scalar into each kernel that reads the clipped gradient,
    but materialises a per-entry division once, which cost adam after
    clipping 16 more bytes per parameter on a transformer-shaped tree (60
    against 44). The norm is accumulated in at least float32. Non-finite
    gradients give visibly non-finite updates, as in optax: with an infinite
    entry :math:`n = \infty`, finite entries become 0 and infinite ones NaN;
    with a NaN entry every entry becomes NaN. Guard with ``apply_if_finite`` or
    dynamic loss scaling to skip such steps. Finite gradients whose squares
    overflow (:math:`n \gtrsim 1.8 \cdot 10^{19}` in float32) give
    :math:`n = \infty` and an all-zero update, as in optax: that step is
    skipped. A rescue pass for that case made compile time grow quadratically
    with the number of leaves, so only ``tree_global_norm`` (for logging) keeps
    it. Pascanu et al., 2013.

    Args:
      max_norm: :math:`c > 0`.

    Example:
      >>> import gradxform as gx
      >>> tx = gx.clip_by_global_norm(1.0)
    """
    validation.positive("clip_by_global_norm", "max_norm", max_norm)

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        norm = tree.tree_plain_norm(updates)
        bound = numerics.hyperparameter(max_norm, norm.dtype)
        # c / max(n, c) never divides 0 by 0, and is exactly 1 when n <= c.
        scale = bound / jnp.maximum(norm, bound)

        def leaf(g):
            g_c = numerics.upcast(g, norm.dtype)
            return (g_c * scale.astype(g_c.dtype)).astype(g.dtype)

        return tree.tree_map_skip_none(lambda g: sparse.map_values(leaf, g), updates), state

    return GradientTransformation(init_empty_state, update_fn)
