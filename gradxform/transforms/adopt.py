"""ADOPT: Adam with the gradient normalised by the previous second moment, then averaged."""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from gradxform.core import numerics, tree, validation
from gradxform.core.base import GradientTransformation, Updates, public_constructor


class ScaleByAdoptState(NamedTuple):
    """The step count and the first and second moments.

    optax keeps ADOPT's state in its ``ScaleByAdamState``, whose fields, in
    this order, these are.
    """

    count: jax.Array  # int32, shape ()
    mu: Updates
    nu: Updates


def adopt_clip_value(count: Any) -> jax.Array:
    r"""ADOPT's default clipping bound at a step: the step count to the power 1/4.

    .. math::
        c(t) = t^{1/4}

    The default ``clip_value_fn`` of `scale_by_adopt` and `adopt`: optax's
    ``lambda x: x**0.25``, computed in float32 so that it takes the int32 step
    count under strict dtype promotion. Taniguchi et al., 2024, section 4.

    Args:
      count: the step count :math:`t \ge 0`, an int or an integer scalar array.

    Example:
      >>> import gradxform as gx
      >>> float(gx.adopt_clip_value(16))
      2.0
    """
    owner = "adopt_clip_value"
    if isinstance(count, (jax.Array, np.ndarray)) and not isinstance(count, (bool, np.bool_)):
        if not jnp.issubdtype(count.dtype, jnp.integer) or count.shape != ():
            raise TypeError(f"{owner}: count must be an int or an integer scalar array, got "
                            f"{count!r}")
        if not isinstance(count, jax.core.Tracer) and int(count) < 0:
            raise ValueError(f"{owner}: count must be >= 0, got {count!r}")
    else:
        validation.positive_int(owner, "count", count, minimum=0)
    return lax.convert_element_type(jnp.asarray(count), jnp.float32) ** np.float32(0.25)


def _clip_modulus(x: jax.Array, bound: jax.Array) -> jax.Array:
    """``x`` clipped to ``[-bound, bound]``; a complex entry clipped in modulus, keeping its phase."""
    if not jnp.iscomplexobj(x):
        return jnp.clip(x, -bound, bound)
    modulus = jnp.abs(x)
    over = modulus > bound
    return jnp.where(over, x * (bound / jnp.where(over, modulus, 1)).astype(x.dtype), x)


@public_constructor
def scale_by_adopt(
    b1: float = 0.9,
    b2: float = 0.9999,
    eps: float = 1e-6,
    mu_dtype: Any = None,
    *,
    nesterov: bool = False,
    use_clipping: bool = True,
    clip_value_fn: Callable[[jax.Array], Any] = adopt_clip_value,
) -> GradientTransformation:
    r"""Rescales updates by ADOPT: normalise by the previous second moment, then average.

    .. math::
        n_t = \mathrm{clip}\!\left(\frac{g_t}{\max(\sqrt{v_{t-1}}, \epsilon)},
        c(t-1)\right), \qquad m_t = \beta_1 m_{t-1} + (1-\beta_1) n_t, \qquad
        v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2, \qquad u_t = m_t

    for :math:`t \ge 2`; at the first step :math:`v_1 = g_1^2` and :math:`m_1 = m_0 = 0`
    (so the first update is 0). With ``nesterov``,
    :math:`u_t = \beta_1 m_t + (1-\beta_1) n_t`. The clip bound :math:`c` is
    ``clip_value_fn`` of the step count from 0 (by default :math:`t^{1/4}`);
    without ``use_clipping`` there is none. Because :math:`g_t` is divided by
    :math:`v_{t-1}`, which does not contain it, ADOPT converges for any
    :math:`\beta_2`. A complex entry is clipped in modulus, keeping its phase.
    Same rule, defaults and state fields as ``optax.contrib.scale_by_adopt``.
    Taniguchi et al., 2024.

    Args:
      b1: :math:`\beta_1` in [0, 1].
      b2: :math:`\beta_2` in [0, 1].
      eps: :math:`\epsilon > 0`, the floor of :math:`\sqrt{v}`.
      mu_dtype: dtype of :math:`m`; None keeps the params' dtype.
      nesterov: Nesterov's form of the momentum.
      use_clipping: clip the normalised gradient.
      clip_value_fn: :math:`c`, a function of the int32 step count (from 0)
        returning one number.

    Example:
      >>> import gradxform as gx
      >>> tx = gx.chain(gx.scale_by_adopt(), gx.scale_by_learning_rate(1e-3))
    """
    owner = "scale_by_adopt"
    validation.decay_rate(owner, "b1", b1, allow_one=True)
    validation.decay_rate(owner, "b2", b2, allow_one=True)
    validation.positive(owner, "eps", eps)
    validation.float_dtype(owner, "mu_dtype", mu_dtype)
    validation.boolean(owner, "nesterov", nesterov)
    validation.boolean(owner, "use_clipping", use_clipping)
    if not callable(clip_value_fn):
        raise TypeError(f"{owner}: clip_value_fn must be callable, got {clip_value_fn!r}")

    def init_fn(params):
        return ScaleByAdoptState(
            count=numerics.zero_count(), mu=tree.tree_zeros_like(params, mu_dtype),
            nu=tree.tree_full_like(params, 0, real=True))

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        tree.check_same_structure(owner, "state", state.mu, updates)
        started = state.count > 0
        # The first step only fills v: b2 is 0 there, and m keeps its value (b1 is 1).
        beta_1 = jnp.where(started, numerics.hyperparameter(b1, jnp.float32), 1.0)
        beta_2 = jnp.where(started, numerics.hyperparameter(b2, jnp.float32), 0.0)
        bound = None
        if use_clipping:
            bound = numerics.schedule_value(clip_value_fn, state.count, owner, "clip_value_fn")

        def leaf(g, mu, nu):
            dtype = numerics.compute_dtype(g.dtype, mu.dtype, nu.dtype)
            real = numerics.real_dtype(dtype)
            g_c = g.astype(dtype)
            floor = numerics.operand(eps, real)
            normalised = g_c / jnp.maximum(jnp.sqrt(nu.astype(real)), floor).astype(dtype)
            if bound is not None:
                normalised = _clip_modulus(normalised, numerics.operand(bound, real))
            nu_new = numerics.moment(beta_2.astype(real), nu.astype(real), numerics.abs_sq(g_c))
            mu_new = numerics.moment(beta_1.astype(real), mu.astype(dtype), normalised)
            update = numerics.moment(beta_1.astype(real), mu_new, normalised) if nesterov else mu_new
            return (numerics.store(update, g.dtype), numerics.store(mu_new, mu.dtype),
                    nu_new.astype(nu.dtype))

        updates, mu, nu = tree.tree_map_multi(leaf, 3, updates, state.mu, state.nu)
        return updates, ScaleByAdoptState(numerics.safe_increment(state.count), mu, nu)

    return GradientTransformation(init_fn, update_fn)
