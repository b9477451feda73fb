"""Adadelta: steps sized by the ratio of two moving root mean squares, of updates and gradients.

Arithmetic runs in at least float32 (`numerics.compute_dtype`); both averages
are real (squared moduli) and stored in their own dtype, the updates in the
gradients' dtype. The rule is elementwise: it runs unchanged on `flat_tree`
buffers and keeps sharded leaves sharded.
"""

from __future__ import annotations

from typing import NamedTuple

from jax import lax

from gradxform.core import numerics, tree, validation
from gradxform.core.base import GradientTransformation, Updates, public_constructor


class ScaleByAdaDeltaState(NamedTuple):
    """The moving averages of squared gradients and of squared updates.

    optax's ``ScaleByAdaDeltaState``, field for field.
    """

    e_g: Updates  # E[g^2], real
    e_x: Updates  # E[(delta x)^2], real


@public_constructor
def scale_by_adadelta(rho: float = 0.9, eps: float = 1e-6) -> GradientTransformation:
    r"""Rescales updates by Adadelta: RMS of past updates over RMS of gradients.

    .. math::
        E[g^2]_t = \rho\, E[g^2]_{t-1} + (1-\rho)\, g_t^2, \qquad
        u_t = \frac{\sqrt{E[\Delta x^2]_{t-1} + \epsilon}}{\sqrt{E[g^2]_t + \epsilon}}\, g_t, \\
        E[\Delta x^2]_t = \rho\, E[\Delta x^2]_{t-1} + (1-\rho)\, u_t^2,
        \qquad E[g^2]_0 = E[\Delta x^2]_0 = 0

    Same formula, defaults and state as ``optax.scale_by_adadelta``. The
    average of squared updates is taken over :math:`u_t`, the output of this
    transformation, before any learning rate scales it (as optax does; Zeiler's
    paper has no learning rate). For complex gradients :math:`g^2` is
    :math:`|g|^2`, so both averages are real. Zeiler, 2012, "ADADELTA: An
    Adaptive Learning Rate Method".

    Args:
      rho: :math:`\rho` in [0, 1], the decay of both moving averages.
      eps: :math:`\epsilon > 0`, added inside both square roots; it also sets
        the size of the first steps, :math:`\sqrt{\epsilon}` relative to the
        gradient's RMS (with 0 the first step would be 0/0).

    Example:
      >>> import gradxform as gx
      >>> tx = gx.chain(gx.scale_by_adadelta(rho=0.9), gx.scale_by_learning_rate(1.0))
    """
    owner = "scale_by_adadelta"
    validation.decay_rate(owner, "rho", rho, allow_one=True)
    validation.positive(owner, "eps", eps)

    def init_fn(params):
        return ScaleByAdaDeltaState(
            e_g=tree.tree_full_like(params, 0, real=True),
            e_x=tree.tree_full_like(params, 0, real=True),
        )

    def leaf(g, e_g, e_x):
        dtype = numerics.compute_dtype(g.dtype, e_g.dtype, e_x.dtype)
        real = numerics.real_dtype(dtype)
        g_c = g.astype(dtype)
        epsilon = numerics.operand(eps, real)
        e_g_new = numerics.moment(rho, e_g.astype(real), numerics.abs_sq(g_c))
        ratio = lax.div(lax.sqrt(lax.add(e_x.astype(real), epsilon)),
                        lax.sqrt(lax.add(e_g_new, epsilon)))
        update = lax.mul(numerics.operand(ratio, dtype), g_c)
        e_x_new = numerics.moment(rho, e_x.astype(real), numerics.abs_sq(update))
        return (
            numerics.store(update, g.dtype),
            numerics.store(e_g_new, e_g.dtype),
            numerics.store(e_x_new, e_x.dtype),
        )

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        tree.check_same_structure(owner, "state", state.e_g, updates)
        updates, e_g, e_x = tree.tree_map_multi(leaf, 3, updates, state.e_g, state.e_x)
        return updates, ScaleByAdaDeltaState(e_g=e_g, e_x=e_x)

    return GradientTransformation(init_fn, update_fn)
