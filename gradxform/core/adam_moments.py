"""Adam's per-leaf moment arithmetic, shared by the Adam-family transforms.

Shared so that each transform built on it (``scale_by_adam``,
``scale_by_lazy_adam``) computes the same operations in the same order, and
their updates agree bit for bit where their rules do.
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax

from gradxform.core import numerics, tree, validation


def check_adam_arguments(owner, b1, b2, eps, eps_root, mu_dtype, nu_dtype):
    validation.decay_rate(owner, "b1", b1)
    validation.decay_rate(owner, "b2", b2)
    validation.non_negative(owner, "eps", eps)
    validation.non_negative(owner, "eps_root", eps_root)
    validation.float_dtype(owner, "mu_dtype", mu_dtype)
    validation.float_dtype(owner, "nu_dtype", nu_dtype)


def init_moments(params, mu_dtype, nu_dtype):
    """First moments in ``mu_dtype`` (or the params'), second in ``nu_dtype`` (or real)."""

    return tree.tree_zeros_like(params, mu_dtype), tree.tree_full_like(params, 0, nu_dtype, real=True)


def moments(g, mu, nu, b1, b2):
    """Both moment updates for one leaf, in the compute dtype."""
    dtype = numerics.compute_dtype(g.dtype, mu.dtype, nu.dtype)
    real = numerics.real_dtype(dtype)
    g_c = g.astype(dtype)
    mu_new = numerics.moment(b1, mu.astype(dtype), g_c)
    nu_new = numerics.moment(b2, nu.astype(real), numerics.abs_sq(g_c))
    return g_c, mu_new, nu_new


def scaled(mu_hat, nu, correction_2, eps, eps_root, eps_hat):
    """``mu_hat / (sqrt(nu / c2 + eps_root) + eps)``, or in the epsilon-hat form
    ``mu_hat * sqrt(c2) / (sqrt(nu + eps_root) + eps)``; ``correction_2`` None: no correction."""
    if correction_2 is None:
        nu_hat, numerator = nu, mu_hat
    elif eps_hat:
        nu_hat = nu
        numerator = mu_hat * jnp.sqrt(correction_2).astype(mu_hat.dtype)
    else:
        nu_hat, numerator = lax.div(nu, numerics.operand(correction_2, nu.dtype)), mu_hat
    real = nu_hat.dtype
    root = lax.sqrt(lax.add(nu_hat, numerics.operand(eps_root, real)))
    denominator = lax.add(root, numerics.operand(eps, real))
    return lax.div(numerator, lax.convert_element_type(denominator, mu_hat.dtype))
