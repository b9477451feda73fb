"""Adan: adaptive Nesterov momentum from moving averages of gradients and their differences.

Arithmetic runs in at least float32 (`numerics.compute_dtype`); the first
moments and the previous gradient are stored in the params' dtype, the
second moment (real) in its own, the updates in the gradients' dtype. The
rule is elementwise: it runs unchanged on `flat_tree` buffers and keeps
sharded leaves sharded.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from gradxform.core import numerics, tree, validation
from gradxform.core.base import GradientTransformation, Updates, public_constructor


class ScaleByAdanState(NamedTuple):
    """The three moving averages, the previous gradient and the step count.

    optax's ``ScaleByAdanState``, field for field: ``m`` (gradients), ``v``
    (gradient differences), ``n`` (squared corrected gradients, real), ``g``
    (the previous gradient) and ``t`` (the int32 step count, saturating).
    """

    m: Updates
    v: Updates
    n: Updates
    g: Updates
    t: jax.Array  # int32, shape ()


@public_constructor
def scale_by_adan(
    b1: float = 0.98,
    b2: float = 0.92,
    b3: float = 0.99,
    eps: float = 1e-8,
    eps_root: float = 0.0,
) -> GradientTransformation:
    r"""Rescales updates by Adan (adaptive Nesterov momentum).

    With :math:`d_t = g_t - g_{t-1}` (:math:`d_1 = 0`):

    .. math::
        m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t, \quad
        v_t = \beta_2 v_{t-1} + (1-\beta_2) d_t, \quad
        n_t = \beta_3 n_{t-1} + (1-\beta_3) (g_t + \beta_2 d_t)^2, \\
        u_t = \frac{\hat m_t + \beta_2 \hat v_t}{\sqrt{\hat n_t + \epsilon_{root}} + \epsilon},
        \qquad \hat x_t = \frac{x_t}{1 - \beta_x^t}

    This is Algorithm 1 of the paper, whose :math:`\beta` are one minus
    these (its :math:`1-\beta_2` is this :math:`\beta_2`), and the authors'
    implementation (``sail-sg/Adan``). Same arguments, defaults and state as
    ``optax.scale_by_adan``, but **not the same numbers**: optax 0.2.8 weighs
    the gradient difference by :math:`1-\beta_2` (0.08 by default) instead
    of :math:`\beta_2` (0.92) in :math:`n_t` and :math:`u_t`, which disagrees
    with the paper and with ``optax.adan``'s own formula (optax#1715). The two
    agree at the first step and whenever :math:`\beta_2 = 0.5`. For complex
    gradients the square is :math:`|\cdot|^2`. Xie et al., 2022, "Adan:
    Adaptive Nesterov Momentum Algorithm for Faster Optimizing Deep Models".

    Args:
      b1: :math:`\beta_1` in [0, 1), the decay of the gradients' average.
      b2: :math:`\beta_2` in [0, 1), the decay of the differences' average,
        and their weight in :math:`n_t` and :math:`u_t`.
      b3: :math:`\beta_3` in [0, 1), the decay of the second moment.
      eps: :math:`\epsilon \ge 0`, added outside the square root.
      eps_root: :math:`\epsilon_{root} \ge 0`, added inside the square root.

    Example:
      >>> import gradxform as gx
      >>> tx = gx.chain(gx.scale_by_adan(), gx.scale_by_learning_rate(1e-3))
    """
    owner = "scale_by_adan"
    validation.decay_rate(owner, "b1", b1)
    validation.decay_rate(owner, "b2", b2)
    validation.decay_rate(owner, "b3", b3)
    validation.non_negative(owner, "eps", eps)
    validation.non_negative(owner, "eps_root", eps_root)

    def init_fn(params):
        return ScaleByAdanState(
            m=tree.tree_zeros_like(params),
            v=tree.tree_zeros_like(params),
            n=tree.tree_full_like(params, 0, real=True),
            g=tree.tree_zeros_like(params),
            t=numerics.zero_count(),
        )

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        tree.check_same_structure(owner, "state", state.m, updates)
        first = state.t == 0
        t = numerics.safe_increment(state.t)
        corrections = numerics.per_dtype(lambda dtype: tuple(
            numerics.bias_correction(decay, t, dtype) for decay in (b1, b2, b3)
        ))

        def leaf(g, m, v, n, g_prev):
            dtype = numerics.compute_dtype(g.dtype, m.dtype, v.dtype, n.dtype, g_prev.dtype)
            real = numerics.real_dtype(dtype)
            g_c = g.astype(dtype)
            beta_2 = numerics.operand(b2, dtype)
            diff = jnp.where(first, jnp.zeros_like(g_c), lax.sub(g_c, g_prev.astype(dtype)))
            m_new = numerics.moment(b1, m.astype(dtype), g_c)
            v_new = numerics.moment(b2, v.astype(dtype), diff)
            corrected = lax.add(g_c, lax.mul(beta_2, diff))
            n_new = numerics.moment(b3, n.astype(real), numerics.abs_sq(corrected))
            correction_1, correction_2, correction_3 = corrections(real)
            m_hat = lax.div(m_new, numerics.operand(correction_1, dtype))
            v_hat = lax.div(v_new, numerics.operand(correction_2, dtype))
            n_hat = lax.div(n_new, numerics.operand(correction_3, real))
            root = lax.sqrt(lax.add(n_hat, numerics.operand(eps_root, real)))
            denominator = lax.add(root, numerics.operand(eps, real))
            update = lax.div(lax.add(m_hat, lax.mul(beta_2, v_hat)),
                             numerics.operand(denominator, dtype))
            return (
                numerics.store(update, g.dtype),
                numerics.store(m_new, m.dtype),
                numerics.store(v_new, v.dtype),
                numerics.store(n_new, n.dtype),
                numerics.store(g_c, g_prev.dtype),
            )

        updates, m, v, n, g = tree.tree_map_multi(
            leaf, 5, updates, state.m, state.v, state.n, state.g
        )
        return updates, ScaleByAdanState(m=m, v=v, n=n, g=g, t=t)

    return GradientTransformation(init_fn, update_fn)
