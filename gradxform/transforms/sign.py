"""Sign-based updates: the sign of the gradient (`scale_by_sign`) and Lion (`scale_by_lion`).

Each update entry is -1, 0 or 1 (a phase of modulus 1 for complex entries),
so the step size is the learning rate alone. The sign of 0 is 0, and the
sign of NaN is NaN: a NaN gradient shows in the update rather than becoming
a silent zero step. A sign is exact in every dtype.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from gradxform.core import numerics, tree, validation
from gradxform.core.base import GradientTransformation, Updates, init_empty_state, public_constructor

LION_MODES = ("hard", "smooth", "refined")


@public_constructor
def scale_by_sign() -> GradientTransformation:
    r"""Replaces each update entry by its sign.

    .. math::
        u_i = \operatorname{sign}(g_i) \in \{-1, 0, 1\}

    Same as ``optax.scale_by_sign``. :math:`\operatorname{sign}(0) = 0` (also
    for :math:`-0`, which stays :math:`-0`), NaN stays NaN, and a complex entry
    becomes :math:`g_i / |g_i|`. The rule is elementwise and keeps no state, so
    it runs unchanged on a `flat_tree` buffer and on sharded leaves. Bernstein
    et al., 2018, "signSGD: Compressed Optimisation for Non-Convex Problems".

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> tx = gx.scale_by_sign()
      >>> tx.update({"w": jnp.array([-2.5, 0.0, 3.0])}, tx.init({"w": jnp.zeros(3)}))[0]["w"]
      Array([-1.,  0.,  1.], dtype=float32)
    """

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        return tree.tree_map_skip_none(lax.sign, updates), state

    return GradientTransformation(init_empty_state, update_fn)


class ScaleByLionState(NamedTuple):
    """The step count and the momentum :math:`m`; optax's ``ScaleByLionState``, field for field."""

    count: jax.Array  # int32, shape ()
    mu: Updates


def _lion_direction(mode, smooth_beta):
    """``c -> u`` for one leaf in the compute dtype: the sign, or a smooth variant of it."""
    if mode == "hard":
        return lax.sign
    if mode == "smooth":
        return lambda c: jnp.tanh(numerics.hyperparameter(smooth_beta, c.dtype) * c)
    # refined: linear inside the unit ball, the sign outside (NaN fails |c| < 1: stays NaN).
    return lambda c: jnp.where(jnp.abs(c) < 1, c, lax.sign(c))


@public_constructor
def scale_by_lion(
    b1: float = 0.9,
    b2: float = 0.99,
    mu_dtype: Any = None,
    *,
    mode: str = "hard",
    smooth_beta: float = 1.0,
) -> GradientTransformation:
    r"""Rescales updates by Lion: the sign of an interpolation of momentum and gradient.

    .. math::
        c_t = (1-\beta_1)\, g_t + \beta_1 m_{t-1}, \qquad u_t = \operatorname{sign}(c_t), \\
        m_t = (1-\beta_2)\, g_t + \beta_2 m_{t-1}, \quad m_0 = 0

    The update reads the momentum *before* this step's gradient enters it
    (:math:`m_{t-1}`), and the momentum has no bias correction. With ``mode``
    "smooth", :math:`u_t = \tanh(\beta_s c_t)`; with "refined",
    :math:`u_t = c_t` where :math:`|c_t| < 1` and :math:`\operatorname{sign}(c_t)`
    elsewhere. Same formula, defaults and state as ``optax.scale_by_lion``; the
    arithmetic runs in at least float32, so with bfloat16 momentum
    :math:`\beta_1 = 0.9` is not rounded to 0.8984 (optax rounds it). A NaN
    gradient gives a NaN update and momentum. Elementwise: it runs on
    `flat_tree` buffers and keeps sharded leaves sharded. Chen et al., 2023,
    "Symbolic Discovery of Optimization Algorithms".

    Args:
      b1: :math:`\beta_1` in [0, 1], the weight of the momentum in the update.
      b2: :math:`\beta_2` in [0, 1], the decay of the momentum.
      mu_dtype: dtype of :math:`m`; None keeps the params' dtype.
      mode: "hard" (the sign, Lion itself), "smooth" or "refined" (see above).
      smooth_beta: :math:`\beta_s > 0`, the slope of "smooth" at 0.

    Example:
      >>> import gradxform as gx
      >>> tx = gx.chain(gx.scale_by_lion(b1=0.9, b2=0.99), gx.scale_by_learning_rate(1e-4))
    """
    owner = "scale_by_lion"
    validation.decay_rate(owner, "b1", b1, allow_one=True)
    validation.decay_rate(owner, "b2", b2, allow_one=True)
    validation.float_dtype(owner, "mu_dtype", mu_dtype)
    validation.string(owner, "mode", mode)
    if mode not in LION_MODES:
        raise ValueError(f"{owner}: mode must be one of {LION_MODES}, got {mode!r}")
    validation.positive(owner, "smooth_beta", smooth_beta)
    direction = _lion_direction(mode, smooth_beta)

    def init_fn(params):
        return ScaleByLionState(count=numerics.zero_count(), mu=tree.tree_zeros_like(params, mu_dtype))

    def leaf(g, mu):
        dtype = numerics.compute_dtype(g.dtype, mu.dtype)
        g_c, mu_c = g.astype(dtype), mu.astype(dtype)
        update = direction(numerics.moment(b1, mu_c, g_c))
        mu_new = numerics.moment(b2, mu_c, g_c)
        return numerics.store(update, g.dtype), numerics.store(mu_new, mu.dtype)

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        tree.check_same_structure(owner, "state", state.mu, updates)
        updates, mu = tree.tree_map_multi(leaf, 2, updates, state.mu)
        return updates, ScaleByLionState(count=numerics.safe_increment(state.count), mu=mu)

    return GradientTransformation(init_fn, update_fn)
