"""COCOB-Backprop: continuous coin betting, an optimizer without a learning rate.

Elementwise: arithmetic in at least float32, the state stored in the params'
dtype (float32 for float16 params, whose range cannot hold ``eps``), the
updates in the gradients' dtype. It runs unchanged on `flat_tree` buffers and
keeps sharded leaves sharded.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax.numpy as jnp
from jax import lax

from gradxform.core import leafwise, numerics, tree, validation
from gradxform.core.base import GradientTransformation, Updates, public_constructor


class COCOBState(NamedTuple):
    """optax's ``COCOBState``, field for field: the params at ``init``, and per entry the
    negated sum of gradients :math:`C`, the largest gradient :math:`L`, the sum of absolute
    gradients :math:`G` and the reward :math:`R`."""

    init_particles: Updates
    cumulative_gradients: Updates
    scale: Updates
    subgradients: Updates
    reward: Updates


def _betting(alpha: Any):
    """The rule for real coordinates: ``(g, p, p0, C, L, G, R) -> (u, C, L, G, R)``."""

    def rule(g, p, p0, cumulative, scale, total, reward):
        magnitude = jnp.abs(g)
        scale = jnp.maximum(scale, magnitude)
        total = total + magnitude
        reward = jnp.maximum(reward - g * (p - p0), 0)
        cumulative = cumulative - g
        bet = cumulative / (scale * jnp.maximum(total + scale, numerics.hyperparameter(
            alpha, scale.dtype) * scale))
        return -p + (p0 + bet * (scale + reward)), cumulative, scale, total, reward

    return rule


@public_constructor
def scale_by_cocob(alpha: float = 100.0, eps: float = 1e-8) -> GradientTransformation:
    r"""COCOB-Backprop's update: each parameter bets a fraction of its winnings on the gradient.

    For each entry, with :math:`\theta_0` the params given to ``init``:

    .. math::
        L_t = \max(L_{t-1}, |g_t|), \quad G_t = G_{t-1} + |g_t|, \quad
        R_t = \max(R_{t-1} - g_t (\theta_t - \theta_0), 0), \quad
        C_t = C_{t-1} - g_t, \\
        u_t = \theta_0 + \frac{C_t\, (L_t + R_t)}{L_t \max(G_t + L_t, \alpha L_t)} - \theta_t

    with :math:`L_0 = \epsilon` and the rest 0. The update moves the params
    to their new value (:math:`\theta_{t+1} = \theta_t + u_t`): the descent
    is built in, so no learning rate follows it (``cocob`` scales the
    gradients before it). Same arguments, numbers and state as
    ``optax.contrib.scale_by_cocob``; the arithmetic runs in at least
    float32, the state of float16 params is float32 (where :math:`\epsilon`
    would round to 0 and the bet be 0 / 0) and a complex entry is two real
    coordinates, each betting on its own. Orabona and Tommasi, 2017,
    "Training Deep Networks without Learning Rates Through Coin Betting",
    Algorithm 2.

    Args:
      alpha: :math:`\alpha \ge 0`, which bounds the fraction bet early on.
      eps: :math:`\epsilon > 0`, the initial :math:`L`.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> tx = gx.scale_by_cocob()
      >>> params = {"w": jnp.array([1.0, -1.0])}
      >>> updates, state = tx.update({"w": jnp.array([0.5, 0.0])}, tx.init(params), params)
    """
    owner = "scale_by_cocob"
    validation.non_negative(owner, "alpha", alpha)
    validation.positive(owner, "eps", eps)
    rule = _betting(alpha)

    def init_fn(params):
        return COCOBState(
            init_particles=tree.tree_copy_params(params),
            cumulative_gradients=leafwise.full_per_part(params, 0), scale=leafwise.full_per_part(params, eps),
            subgradients=leafwise.full_per_part(params, 0), reward=leafwise.full_per_part(params, 0))

    def leaf(g, p, p0, *stats):
        dtype = numerics.compute_dtype(g.dtype, p0.dtype, *(s.dtype for s in stats))
        args = [g, jnp.asarray(p), p0, *stats]
        args = [a.astype(dtype) for a in args]
        if jnp.iscomplexobj(args[0]):
            parts = [rule(*(part(a) for a in args)) for part in (jnp.real, jnp.imag)]
            results = [lax.complex(re, im) for re, im in zip(*parts)]
        else:
            results = rule(*args)
        update, *new = results
        return (numerics.store(update, g.dtype),
                *(numerics.store(n, s.dtype) for n, s in zip(new, stats)))

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        if params is None:
            raise ValueError(f"{owner}: update needs params, got params=None")
        tree.check_same_structure(owner, "state", state.init_particles, updates)
        tree.check_same_structure(owner, "params", params, updates, none_matches=True)
        out, cumulative, scale, total, reward = tree.tree_map_multi(
            leaf, 5, updates, params, state.init_particles, state.cumulative_gradients,
            state.scale, state.subgradients, state.reward)
        return out, COCOBState(
            init_particles=state.init_particles, cumulative_gradients=cumulative, scale=scale,
            subgradients=total, reward=reward)

    return GradientTransformation(init_fn, update_fn)
