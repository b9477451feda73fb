r"""NAdam with Dozat's momentum schedule: torch's ``NAdam`` and Keras's ``Nadam`` rule.

Arithmetic runs in at least float32 (`numerics.compute_dtype`); the moments
are stored as in `scale_by_adam` (the first in the params' dtype, the second
in their real dtype, float32 for float16 params), the running product of the
momentum schedule in the widest real compute dtype of the params (float32, or
float64 for float64 params), and updates come out in the gradients' dtype.
The per-leaf rule is elementwise: it runs unchanged on `flat_tree` buffers and
keeps sharded leaves sharded.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gradxform.core import adam_moments, numerics, tree, validation
from gradxform.core.base import GradientTransformation, Updates, public_constructor

# Dozat's schedule decays 0.96 per unit of t * momentum_decay (torch and Keras both).
_SCHEDULE_BASE = 0.96


class ScaleByNadamState(NamedTuple):
    """The step count, the product of the momentum schedule so far, and the two moments."""

    count: jax.Array  # int32, shape ()
    mu_product: jax.Array  # shape (), starts at 1
    mu: Updates
    nu: Updates


def _product_dtype(params) -> np.dtype:
    """The widest real compute dtype of the params' floating leaves (float32 at least)."""
    # A leaf may be abstract (a jax.ShapeDtypeStruct, as a restore target gives).
    dtypes = [x.dtype if hasattr(x, "dtype") else numerics.leaf_dtype(x)
              for x in jax.tree.leaves(params)]
    inexact = [d for d in dtypes if jnp.issubdtype(d, jnp.inexact)]
    return numerics.real_dtype(numerics.compute_dtype(*inexact))


def _coefficients(b1, momentum_decay, count, product):
    r"""``(1 - mu_t) / (1 - Pi_t)``, ``mu_{t+1} / (1 - Pi_t mu_{t+1})`` and ``Pi_t``, in
    ``product``'s dtype.

    :math:`1-\mu_t = (1-\beta_1) + \tfrac12\beta_1 x_t` and :math:`1 - \Pi_t\mu_{t+1} =
    (1-\Pi_t) + \Pi_t(1-\mu_{t+1})` are sums of positive terms: no cancellation,
    even for :math:`\beta_1` near 1 (written as ``1 - mu`` they lose up to
    :math:`\epsilon_{32}/(1-\beta_1)` of themselves).
    """
    dtype = product.dtype
    beta_1 = numerics.hyperparameter(b1, dtype)
    decay = numerics.hyperparameter(momentum_decay, dtype)
    base = numerics.operand(_SCHEDULE_BASE, dtype)

    def schedule(step):
        """``(mu, 1 - mu)`` at ``step``."""
        x = jnp.power(base, step.astype(dtype) * decay)
        return beta_1 * (1 - 0.5 * x), (1 - beta_1) + 0.5 * beta_1 * x

    mu_t, one_minus_mu_t = schedule(count)
    mu_next, one_minus_mu_next = schedule(numerics.safe_increment(count))
    product = product * mu_t
    one_minus_product = 1 - product
    one_minus_next = one_minus_product + product * one_minus_mu_next
    return one_minus_mu_t / one_minus_product, mu_next / one_minus_next, product


@public_constructor
def scale_by_nadam(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    momentum_decay: float = 4e-3,
    *,
    accurate_bias_correction: bool = False,
) -> GradientTransformation:
    r"""Rescales updates by NAdam with Dozat's momentum schedule (torch's NAdam, Keras's Nadam).

    .. math::
        \mu_t = \beta_1 \left(1 - \tfrac12\, 0.96^{\,t\psi}\right), \quad
        \Pi_t = \prod_{i=1}^{t} \mu_i, \quad
        m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t, \quad
        v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2, \\
        u_t = \frac{\dfrac{1-\mu_t}{1-\Pi_t}\, g_t + \dfrac{\mu_{t+1}}{1-\Pi_t\,\mu_{t+1}}\, m_t}
        {\sqrt{v_t / (1-\beta_2^t)} + \epsilon}

    Dozat, 2016, "Incorporating Nesterov Momentum into Adam", with the
    momentum schedule :math:`\mu_t` and its running product :math:`\Pi_t`
    (kept in the state, as torch and Keras keep it). This is the rule of
    ``torch.optim.NAdam`` (``momentum_decay`` :math:`\psi`, default 0.004) and
    of Keras's ``Nadam``, which is the same with :math:`\psi = 1`
    (:math:`\mu_t = \beta_1(1 - \tfrac12 0.96^t)`) and ``eps=1e-7``. It is
    *not* optax's ``nadam`` (`scale_by_adam` with ``nesterov=True``), whose
    momentum is the constant :math:`\beta_1` and whose first moment is debiased
    by :math:`1-\beta_1^t`. With :math:`\psi = 0`, :math:`\mu_t = \beta_1/2`.
    Complex gradients use :math:`|g_t|^2` in :math:`v`.

    Args:
      b1: :math:`\beta_1` in [0, 1), the momentum the schedule tends to.
      b2: :math:`\beta_2` in [0, 1).
      eps: :math:`\epsilon \ge 0`, added outside the square root.
      momentum_decay: :math:`\psi \ge 0`, how fast :math:`\mu_t` rises from
        :math:`\beta_1/2` towards :math:`\beta_1`.
      accurate_bias_correction: compute :math:`1-\beta_2^t` to float32's precision,
        as torch does in float64 (Keras computes ``1 - b2**t`` in float32, off by
        up to 5e-5 of itself in the first steps at :math:`\beta_2 = 0.999`).

    Example:
      >>> import gradxform as gx
      >>> tx = gx.chain(gx.scale_by_nadam(momentum_decay=4e-3), gx.scale_by_learning_rate(2e-3))
    """
    owner = "scale_by_nadam"
    adam_moments.check_adam_arguments(owner, b1, b2, eps, 0.0, None, None)
    validation.non_negative(owner, "momentum_decay", momentum_decay)
    validation.boolean(owner, "accurate_bias_correction", accurate_bias_correction)

    def init_fn(params):
        mu, nu = adam_moments.init_moments(params, None, None)
        return ScaleByNadamState(count=numerics.zero_count(),
                                 mu_product=jnp.ones([], _product_dtype(params)), mu=mu, nu=nu)

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        tree.check_same_structure(owner, "state", state.mu, updates)
        count = numerics.safe_increment(state.count)
        coefficient_g, coefficient_m, product = _coefficients(
            b1, momentum_decay, count, state.mu_product)
        per_dtype = numerics.per_dtype(lambda dtype: (
            coefficient_g.astype(dtype), coefficient_m.astype(dtype),
            numerics.bias_correction(b2, count, dtype, accurate=accurate_bias_correction)))

        def leaf(g, mu, nu):
            g_c, mu_new, nu_new = adam_moments.moments(g, mu, nu, b1, b2)
            weight_g, weight_m, correction_2 = per_dtype(nu_new.dtype)
            numerator = (weight_g.astype(g_c.dtype) * g_c
                         + weight_m.astype(mu_new.dtype) * mu_new)
            update = adam_moments.scaled(numerator, nu_new, correction_2, eps, 0.0, False)
            return (numerics.store(update, g.dtype), numerics.store(mu_new, mu.dtype),
                    nu_new.astype(nu.dtype))

        updates, mu, nu = tree.tree_map_multi(leaf, 3, updates, state.mu, state.nu)
        return updates, ScaleByNadamState(count=count, mu_product=product, mu=mu, nu=nu)

    return GradientTransformation(init_fn, update_fn)
