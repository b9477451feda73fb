"""AdaMax: Adam with the infinity norm of the gradients in place of their second moment.

Arithmetic runs in at least float32 (`numerics.compute_dtype`); the first
moment is stored in the params' dtype, the infinity norm in their real dtype
(float32 for float16 params), and updates come out in the gradients' dtype.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from gradxform.core import numerics, tree, validation
from gradxform.core.base import GradientTransformation, Updates, public_constructor


class ScaleByAdamaxState(NamedTuple):
    """The step count, the first moment and the infinity norm: optax's ``ScaleByAdamState`` layout."""

    count: jax.Array  # int32, shape ()
    mu: Updates
    nu: Updates


@public_constructor
def scale_by_adamax(b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8, *,
                    eps_in_max: bool = True,
                    accurate_bias_correction: bool = False) -> GradientTransformation:
    r"""Rescales updates by AdaMax: Adam with the infinity norm in place of the second moment.

    .. math::
        m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t, \quad
        v_t = \max(\beta_2 v_{t-1}, |g_t| + \epsilon), \qquad
        u_t = \frac{m_t / (1-\beta_1^t)}{v_t}

    Same formula and defaults as ``optax.scale_by_adamax`` (and
    ``torch.optim.Adamax``). With ``eps_in_max=False``, Keras's form:
    :math:`v_t = \max(\beta_2 v_{t-1}, |g_t|)` and :math:`u_t = (m_t / (1-\beta_1^t))
    / (v_t + \epsilon)`; the two differ where :math:`|g|` is near
    :math:`\epsilon`. The state has the
    fields of optax's ``ScaleByAdamState``, :math:`v` being the infinity norm
    (in the params' real dtype, float32 for float16 params). Where
    :math:`v_t = 0`, possible only with :math:`\epsilon = 0`, the update is 0
    (optax divides by 0 there). Kingma and Ba, 2015, section 7.

    Args:
      b1: :math:`\beta_1` in [0, 1).
      b2: :math:`\beta_2` in [0, 1), the decay of the infinity norm.
      eps: :math:`\epsilon \ge 0`, added to :math:`|g_t|`.
      eps_in_max: add :math:`\epsilon` inside the maximum (optax, torch) or to
        :math:`v_t` after it (Keras).
      accurate_bias_correction: compute :math:`1-\beta_1^t` to float32's precision,
        as torch does in float64 (optax and Keras compute ``1 - b1**t`` in float32,
        off by up to 5e-5 of itself in the first steps at :math:`\beta_1 = 0.999`).

    Example:
      >>> import gradxform as gx
      >>> tx = gx.chain(gx.scale_by_adamax(), gx.scale_by_learning_rate(2e-3))
    """
    owner = "scale_by_adamax"
    validation.decay_rate(owner, "b1", b1)
    validation.decay_rate(owner, "b2", b2)
    validation.non_negative(owner, "eps", eps)
    validation.boolean(owner, "eps_in_max", eps_in_max)
    validation.boolean(owner, "accurate_bias_correction", accurate_bias_correction)

    def init_fn(params):
        return ScaleByAdamaxState(
            count=numerics.zero_count(), mu=tree.tree_zeros_like(params),
            nu=tree.tree_full_like(params, 0, real=True),
        )

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        tree.check_same_structure(owner, "state", state.mu, updates)
        count = numerics.safe_increment(state.count)
        corrections = numerics.per_dtype(lambda dtype: numerics.bias_correction(
            b1, count, dtype, accurate=accurate_bias_correction))

        def leaf(g, mu, nu):
            dtype = numerics.compute_dtype(g.dtype, mu.dtype, nu.dtype)
            g_c, real = g.astype(dtype), numerics.real_dtype(dtype)
            mu_new = numerics.moment(b1, mu.astype(g_c.dtype), g_c)
            epsilon = numerics.operand(eps, real)
            magnitude = jnp.abs(g_c).astype(real)
            if eps_in_max:
                magnitude = lax.add(magnitude, epsilon)
            decayed = lax.mul(numerics.operand(b2, real), nu.astype(real))
            nu_new = lax.max(magnitude, decayed)
            norm = nu_new if eps_in_max else lax.add(nu_new, epsilon)
            positive = lax.gt(norm, numerics.operand(0, real))
            divisor = lax.select(positive, norm, lax.full_like(norm, 1))
            mu_hat = mu_new / corrections(real).astype(mu_new.dtype)
            update = jnp.where(positive, mu_hat / divisor.astype(mu_hat.dtype), 0)
            return (numerics.store(update.astype(mu_hat.dtype), g.dtype),
                    numerics.store(mu_new, mu.dtype), nu_new.astype(nu.dtype))

        updates, mu, nu = tree.tree_map_multi(leaf, 3, updates, state.mu, state.nu)
        return updates, ScaleByAdamaxState(count=count, mu=mu, nu=nu)

    return GradientTransformation(init_fn, update_fn)
