"""Mechanic: a learning-rate tuner wrapped around any optimizer.

The scale :math:`s` and its statistics are a few numbers for the whole tree
(one per :math:`\\beta`), reduced over every leaf in at least float32 and
kept in float32 (float64 when a leaf is float64). The reductions run
unchanged on `flat_tree` buffers and on sharded leaves (a sum across
devices, nothing gathered); the wrapped optimizer runs as it would alone.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradxform.core import numerics, randomness, tree, validation
from gradxform.core.base import GradientTransformation, OptState, Updates, public_constructor
from gradxform.core.combine import extra_args_filter


class MechanicState(NamedTuple):
    """optax's ``MechanicState``, field for field.

    The wrapped optimizer's state, the int32 step count (saturating), and
    per :math:`\\beta` (shape ``(num_betas,)``, float32 or float64) the
    reward ``r``, the largest correlation ``m``, the sum of squares ``v``
    and the scale ``s``; ``x0`` holds the params of the first update.
    """

    base_optimizer_state: OptState
    count: jax.Array  # int32, shape ()
    r: jax.Array
    m: jax.Array
    v: jax.Array
    s: jax.Array
    x0: Updates


def _scalar_dtype(params: Any) -> Any:
    dtypes = [numerics.real_dtype(numerics.leaf_dtype(p) if not hasattr(p, "dtype") else p.dtype)
              for p in jax.tree.leaves(params) if tree.is_trainable(p)]
    return numerics.compute_dtype(*dtypes)


def _real_inner(a: jax.Array, b: jax.Array) -> jax.Array:
    if jnp.iscomplexobj(a):
        return jnp.sum(jnp.real(a) * jnp.real(b) + jnp.imag(a) * jnp.imag(b))
    return jnp.sum(a * b)


def _trainable(params: Any, x0: Any) -> Any:
    """The entries of ``params`` that ``x0`` holds (the trainable ones)."""
    return tree.tree_map_skip_none(lambda x, p: jnp.asarray(p), x0, params)


@public_constructor
def mechanize(
    base_optimizer: GradientTransformation,
    weight_decay: float = 1e-2,
    eps: float = 1e-8,
    s_init: float = 1e-6,
    num_betas: int = 6,
) -> GradientTransformation:
    r"""Mechanic: learns the scale of ``base_optimizer``'s updates, step by step.

    With :math:`b_t` the base optimizer's update (learning rate and sign
    included) for the raw gradients :math:`g_t`, :math:`x_0` the params of
    the first update and :math:`S = \sum_j s_j`:

    .. math::
        \Delta_{t-1} = \frac{x_0 - \theta_t}{S_{t-1} + \epsilon}, \quad
        \tilde g_t = g_t + \lambda S_{t-1} \frac{\lVert g_t \rVert}{\lVert \theta_t \rVert
        + \epsilon} \theta_t, \quad
        h_t = \langle \tilde g_t, \Delta_{t-1} \rangle, \\
        m_{t,j} = \max(\beta_j m_{t-1,j}, |h_t| + \epsilon), \quad
        v_{t,j} = \beta_j^2 v_{t-1,j} + h_t^2, \quad
        r_{t,j} = \beta_j r_{t-1,j} + s_{t-1,j}\, \mathrm{clip}(h_t, \pm m_{t-1,j}), \\
        s_{t,j} = \frac{\frac{s_{init}}{n} m_{t,j} + \max(r_{t,j}, 0)}{\sqrt{v_{t,j}} + \epsilon},
        \qquad u_t = x_0 - S_t (\Delta_{t-1} - b_t) - \theta_t

    for :math:`\beta_j = 1 - 10^{-j}`, :math:`j = 1 \dots n`, the norms and
    the inner product over the whole tree. The sum of the base updates is
    never stored: :math:`\Delta_{t-1}` is recomputed from the params (the
    memory-saving form of the paper). :math:`x_0` is taken at the first
    update, not at ``init``, so that weights loaded in between count. Same
    arguments, numbers and state as ``optax.contrib.mechanize``, with the
    per-:math:`\beta` numbers in float32 (float64 for float64 params) rather
    than the params' lowest dtype, and complex entries counted as two real
    coordinates. Extra keyword arguments of ``update`` reach the base
    optimizer when its update accepts them. Cutkosky et al., 2023,
    "Mechanic: A Learning Rate Tuner".

    Args:
      base_optimizer: the transformation whose updates are rescaled (its
        learning rate is best left at 1, or a schedule peaking at 1).
      weight_decay: :math:`\lambda \ge 0`, Mechanic's own weight decay (not
        the base optimizer's).
      eps: :math:`\epsilon > 0`.
      s_init: :math:`s_{init} > 0`, the first scale.
      num_betas: :math:`n \ge 1`, how many :math:`\beta` run side by side.

    Example:
      >>> import gradxform as gx
      >>> tx = gx.mechanize(gx.adam(1.0))
    """
    owner = "mechanize"
    validation.transformation(owner, "base_optimizer", base_optimizer)
    validation.non_negative(owner, "weight_decay", weight_decay)
    validation.positive(owner, "eps", eps)
    validation.positive(owner, "s_init", s_init)
    num_betas = validation.positive_int(owner, "num_betas", num_betas)
    accepted = extra_args_filter(base_optimizer.update)

    def init_fn(params):
        dtype = _scalar_dtype(params)
        zeros = randomness.replicated_like(jnp.zeros([num_betas], dtype), params)
        return MechanicState(
            base_optimizer_state=base_optimizer.init(params), count=numerics.zero_count(),
            r=zeros, m=zeros, v=zeros, x0=tree.tree_copy_params(params),
            s=randomness.replicated_like(jnp.full([num_betas], s_init, dtype), params),
        )

    def update_fn(updates, state, params=None, **extra_args):
        if params is None:
            raise ValueError(f"{owner}: update needs params, got params=None")
        tree.check_same_structure(owner, "state", state.x0, updates)
        tree.check_same_structure(owner, "params", params, updates, none_matches=True)
        base_updates, base_state = base_optimizer.update(
            updates, state.base_optimizer_state, params, **accepted(extra_args))
        first = state.count == 0
        x0 = tree.tree_map_skip_none(
            lambda x, p: jnp.where(first, jnp.asarray(p).astype(x.dtype), x), state.x0, params)
        dtype = state.s.dtype
        h = lambda value: numerics.hyperparameter(value, dtype)  # noqa: E731
        s_sum = jnp.sum(state.s)
        grad_norm = tree.tree_plain_norm(updates).astype(dtype)
        param_norm = tree.tree_plain_norm(_trainable(params, x0)).astype(dtype)
        coefficient = h(weight_decay) * s_sum * grad_norm / (param_norm + h(eps))
        shrink = s_sum + h(eps)

        def leaf(g, x, p, b):
            c = numerics.compute_dtype(g.dtype, x.dtype, dtype)
            p_c = jnp.asarray(p).astype(c)
            g_wd = g.astype(c) + coefficient.astype(c) * p_c
            delta_prev = (x.astype(c) - p_c) / shrink.astype(c)
            delta = delta_prev - jnp.asarray(b).astype(c)
            return _real_inner(g_wd, delta_prev).astype(dtype), delta, p_c

        correlations, deltas, params_c = tree.tree_map_multi(leaf, 3, updates, x0, params,
                                                             base_updates)
        inner = sum((c for c in jax.tree.leaves(correlations)), jnp.zeros([], dtype))
        betas = jnp.asarray([1.0 - 0.1**j for j in range(1, num_betas + 1)], dtype)
        clipped = jnp.clip(inner, -state.m, state.m)
        m = jnp.maximum(betas * state.m, jnp.abs(inner) + h(eps))
        v = betas**2 * state.v + inner**2
        r = betas * state.r + clipped * state.s
        wealth = h(s_init / num_betas) * m + jnp.maximum(r, 0)
        s = wealth / (jnp.sqrt(v) + h(eps))
        total = jnp.sum(s)

        def step(g, x, delta, p_c):
            new = x.astype(delta.dtype) - total.astype(delta.dtype) * delta
            return numerics.store(new - p_c, g.dtype)

        out = tree.tree_map_skip_none(step, updates, x0, deltas, params_c)
        return out, MechanicState(base_optimizer_state=base_state, count=numerics.safe_increment(
            state.count), r=r, m=m, v=v, s=s, x0=x0)

    return GradientTransformation(init_fn, update_fn)
