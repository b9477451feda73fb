"""Sophia: clipped Newton-like steps from a momentum and a diagonal Hessian estimate.

The Hessian's diagonal comes from a transformation of its own, by default
Hutchinson's estimator (`hutchinson_estimator_diag_hessian`), which needs
the objective: ``update(grads, state, params, obj_fn=loss_of_params)``.
The rest is elementwise: arithmetic in at least float32, moments stored in
their dtypes, updates in the gradients'. It runs on `flat_tree` buffers
(the random signs are drawn per logical leaf, as on the per-leaf tree) and
keeps sharded leaves sharded.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from gradxform.core import flat, numerics, randomness, tree, validation
from gradxform.core.base import GradientTransformation, OptState, Updates, public_constructor
from gradxform.core.combine import extra_args_filter



class HutchinsonState(NamedTuple):
    """optax's ``HutchinsonState``: the random key's raw data (uint32; optax may hold a typed
    key), which ``jax.random.wrap_key_data`` turns back into a key."""

    key: jax.Array


def _signs(key: jax.Array, shape: tuple, dtype: Any) -> jax.Array:
    """Rademacher signs in ``dtype``; a complex entry gets one sign per part."""
    if jnp.issubdtype(dtype, jnp.complexfloating):
        parts = jax.random.rademacher(key, (2, *shape), jnp.float32)
        return lax.complex(parts[0], parts[1]).astype(dtype)
    return jax.random.rademacher(key, shape, jnp.float32).astype(dtype)


def _tangents(key: jax.Array, params: Any) -> Any:
    """One draw per logical leaf of ``params`` from ``key`` split once per leaf, as optax's
    ``tree.random_like``; ``float0`` zeros for integer leaves (which have no derivative)."""

    def draw(k, leaf):
        if not tree.is_trainable(leaf):
            return np.zeros(jnp.shape(leaf), jax.dtypes.float0)
        return _signs(k, jnp.shape(leaf), jnp.asarray(leaf).dtype)

    if not flat.is_flat(params):
        leaves, treedef = jax.tree.flatten(params)
        keys = jax.random.split(key, len(leaves))
        return treedef.unflatten([draw(keys[i], leaf) for i, leaf in enumerate(leaves)])
    layout = params.layout
    present = sorted(i for spec, buffer in zip(layout.buffers, params.buffers)
                     if jax.tree.leaves(buffer) for i in spec.members)
    rank = {slot: position for position, slot in enumerate(present)}
    keys = jax.random.split(key, len(present))
    buffers = []
    for spec, buffer in zip(layout.buffers, params.buffers):
        if not jax.tree.leaves(buffer) or spec.kept:
            buffers.append(buffer if not jax.tree.leaves(buffer)
                           else draw(keys[rank[spec.members[0]]], buffer))
            continue
        if not jnp.issubdtype(spec.dtype, jnp.inexact):
            buffers.append(draw(None, buffer))
            continue
        blocks = []
        for _, shape, members in spec.runs(layout.slots):
            run_keys = keys[np.asarray([rank[i] for i in members], np.int32)]
            drawn = jax.vmap(lambda k, shape=shape: _signs(k, shape, spec.dtype))(run_keys)
            blocks.append(jnp.reshape(drawn, (-1,)))
        buffers.append(jnp.concatenate(blocks) if len(blocks) > 1 else blocks[0])
    return flat.FlatTree(buffers, layout)


@public_constructor
def hutchinson_estimator_diag_hessian(random_seed: Any = None) -> GradientTransformation:
    r"""Hutchinson's estimate of the Hessian's diagonal, from ``obj_fn`` given to ``update``.

    .. math::
        \hat h_t = z_t \odot \nabla^2 f(\theta_t)\, z_t, \qquad
        z_t \in \{-1, 1\}^d \text{ uniformly (Rademacher)}, \quad
        \mathbb{E}[\hat h_t] = \operatorname{diag} \nabla^2 f(\theta_t)

    The Hessian-vector product is a forward-mode derivative of
    ``jax.grad(obj_fn)`` at the params; the updates passed in are ignored
    and the estimate is returned in their place. Each ``update`` splits the
    state's key into the next key and a sampling key, splits that once per
    leaf of the params and draws each leaf's signs, as
    ``optax.contrib.hutchinson_estimator_diag_hessian`` (the same numbers for
    the same key), but in each leaf's own dtype (optax casts every sign to
    the params' lowest dtype, which fails for mixed trees), with integer
    leaves left out, and with a complex entry as two real coordinates: an
    independent sign per part, the estimate of each part's own curvature in
    that part. ``update`` needs the params and ``obj_fn``, a function of the
    params alone returning the loss: ``tx.update(grads, state, params,
    obj_fn=lambda p: loss(p, batch))``. Bekas et al., 2007, "An estimator
    for the diagonal of a matrix"; Hutchinson, 1990.

    Args:
      random_seed: the random key: an int seed, a ``jax.random.key`` or a
        ``jax.random.PRNGKey``; None means seed 0.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> tx = gx.hutchinson_estimator_diag_hessian(random_seed=0)
      >>> params = jnp.array([1.0, 2.0])
      >>> loss = lambda p: jnp.sum(p ** 3)
      >>> tx.update(params, tx.init(params), params, obj_fn=loss)[0]
      Array([ 6., 12.], dtype=float32)
    """
    owner = "hutchinson_estimator_diag_hessian"
    make_key, impl = randomness.key_source(owner, "random_seed", random_seed)

    def init_fn(params):
        return HutchinsonState(key=randomness.replicated_like(make_key(), params))

    def update_fn(updates, state, params=None, obj_fn=None, **extra_args):
        del updates, extra_args
        if params is None:
            raise ValueError(f"{owner}: update needs params, got params=None")
        if obj_fn is None or not callable(obj_fn):
            raise TypeError(
                f"{owner}: update needs the objective, a function of the params returning the "
                f"loss, as the keyword argument obj_fn: tx.update(grads, state, params, "
                f"obj_fn=lambda p: loss(p, batch)), got obj_fn={obj_fn!r}")
        next_key, sample_key = jax.random.split(jax.random.wrap_key_data(state.key, impl=impl))
        signs = _tangents(sample_key, params)
        product = jax.jvp(jax.grad(obj_fn, allow_int=True), (params,), (signs,))[1]

        def estimate(z, hz, p):
            if not tree.is_trainable(p):
                return None
            if jnp.iscomplexobj(z):  # jax.grad of a real f of z = x + iy is df/dx - i df/dy
                return lax.complex(jnp.real(hz) * jnp.real(z), -jnp.imag(hz) * jnp.imag(z))
            return hz * z

        diagonal = jax.tree.map(estimate, signs, product, params)
        return diagonal, HutchinsonState(key=jax.random.key_data(next_key))

    return GradientTransformation(init_fn, update_fn)


class SophiaState(NamedTuple):
    """optax's ``SophiaState``, field for field: the int32 step count (saturating), the first
    moment, the moving average of the Hessian's diagonal, and the estimator's state."""

    count: jax.Array  # int32, shape ()
    mu: Updates
    nu: Updates
    hessian_fn_state: OptState


def _componentwise(rule, *arrays):
    """``rule`` on real arrays; on complex ones, on the real and the imaginary parts apart."""
    if not jnp.iscomplexobj(arrays[0]):
        return rule(*arrays)
    parts = [rule(*(part(a) for a in arrays)) for part in (jnp.real, jnp.imag)]
    return lax.complex(parts[0], parts[1])


def _check_arguments(owner, b1, b2, eps, gamma, clip_threshold, update_interval,
                           hessian_diagonal_fn, mu_dtype, verbose, print_win_rate_every_n_steps):
    """The checks of `scale_by_sophia`'s arguments, shared with ``sophia``."""
    validation.decay_rate(owner, "b1", b1)
    validation.decay_rate(owner, "b2", b2)
    validation.positive(owner, "eps", eps)
    validation.non_negative(owner, "gamma", gamma)
    if clip_threshold is not None:
        validation.positive(owner, "clip_threshold", clip_threshold)
    validation.positive_int(owner, "update_interval", update_interval)
    validation.transformation(owner, "hessian_diagonal_fn", hessian_diagonal_fn)
    validation.float_dtype(owner, "mu_dtype", mu_dtype)
    validation.boolean(owner, "verbose", verbose)
    validation.positive_int(owner, "print_win_rate_every_n_steps", print_win_rate_every_n_steps,
                            minimum=0)


@public_constructor
def scale_by_sophia(
    b1: float = 0.965,
    b2: float = 0.99,
    eps: float = 1e-8,
    gamma: float = 0.01,
    clip_threshold: float | None = 1.0,
    update_interval: int = 10,
    hessian_diagonal_fn: GradientTransformation = hutchinson_estimator_diag_hessian(),
    mu_dtype: Any = None,
    verbose: bool = False,
    print_win_rate_every_n_steps: int = 0,
) -> GradientTransformation:
    r"""Sophia's preconditioned, clipped step from a momentum and a Hessian-diagonal average.

    .. math::
        m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t, \qquad
        u_t = \mathrm{clip}\Big(\frac{m_t / (1-\beta_1^t)}{\max(\gamma h_{t-1}, \epsilon)},
        \pm\rho\Big), \\
        h_t = \beta_2 h_{t-1} + (1-\beta_2)\, \hat h_t \ \text{ at steps } t = 1, k+1,
        2k+1, \dots, \quad h_t = h_{t-1} \text{ otherwise}

    where :math:`\hat h_t` is ``hessian_diagonal_fn``'s estimate (Hutchinson's
    by default) and :math:`k` = ``update_interval``; the step uses the
    average of the previous estimates. ``update`` passes its extra keyword
    arguments on to ``hessian_diagonal_fn`` (Hutchinson's needs
    ``obj_fn=``, a function of the params returning the loss), and only on
    the steps that refresh the estimate (a ``lax.cond``). Same arguments,
    defaults, numbers and state as ``optax.contrib``'s Sophia transform; the
    arithmetic runs in at least float32 and a complex entry is two real
    coordinates (each part divided by its own curvature and clipped). With
    ``verbose`` and ``print_win_rate_every_n_steps`` :math:`> 0`, every so
    many steps the share of entries not clipped is printed
    (``jax.debug.print``); the authors keep it between 0.1 and 0.5 by
    tuning :math:`\gamma`. With several devices, ``hessian_diagonal_fn``
    must average its estimate across them (the default computes it from the
    params it is given). Liu et al., 2023, "Sophia: A Scalable Stochastic
    Second-order Optimizer for Language Model Pre-training".

    Args:
      b1: :math:`\beta_1` in [0, 1).
      b2: :math:`\beta_2` in [0, 1); its effective value per step is
        :math:`1 - (1-\beta_2)/k`.
      eps: :math:`\epsilon > 0`, the smallest denominator.
      gamma: :math:`\gamma \ge 0`, the scale of the Hessian diagonal.
      clip_threshold: :math:`\rho > 0`, or None for no clipping.
      update_interval: :math:`k \ge 1`, steps between Hessian estimates.
      hessian_diagonal_fn: the transformation estimating the diagonal from the
        gradients, its state, the params and the extra arguments.
      mu_dtype: dtype of :math:`m`; None keeps the params' dtype.
      verbose: print the share of unclipped entries (needs
        ``clip_threshold``).
      print_win_rate_every_n_steps: how often to print it (an int >= 0; 0
        never).

    Example:
      >>> import jax, jax.numpy as jnp, gradxform as gx
      >>> tx = gx.chain(gx.scale_by_sophia(), gx.scale(-0.1))
      >>> params = {"w": jnp.array([1.0, 2.0])}
      >>> loss = lambda p: jnp.sum(p["w"] ** 2)
      >>> updates, state = tx.update(jax.grad(loss)(params), tx.init(params), params, obj_fn=loss)
    """
    owner = "scale_by_sophia"
    _check_arguments(owner, b1, b2, eps, gamma, clip_threshold, update_interval,
                     hessian_diagonal_fn, mu_dtype, verbose, print_win_rate_every_n_steps)
    interval = int(update_interval)
    every = int(print_win_rate_every_n_steps)
    accepted = extra_args_filter(hessian_diagonal_fn.update)

    def init_fn(params):
        return SophiaState(
            count=numerics.zero_count(), mu=tree.tree_zeros_like(params, mu_dtype),
            nu=tree.tree_zeros_like(params), hessian_fn_state=hessian_diagonal_fn.init(params))

    def ratio(m, h):
        real = m.dtype
        return m / jnp.maximum(numerics.hyperparameter(gamma, real) * h,
                               numerics.hyperparameter(eps, real))

    def clipped(u):
        bound = numerics.hyperparameter(clip_threshold, u.dtype)
        return jnp.clip(u, -bound, bound)

    def update_fn(updates, state, params=None, **extra_args):
        if params is None:
            raise ValueError(f"{owner}: update needs params, got params=None")
        tree.check_same_structure(owner, "state", state.mu, updates)
        tree.check_same_structure(owner, "params", params, updates, none_matches=True)
        count = numerics.safe_increment(state.count)
        corrections = numerics.per_dtype(lambda dtype: numerics.bias_correction(b1, count, dtype))

        def leaf(g, mu, nu):
            c = numerics.compute_dtype(g.dtype, mu.dtype, nu.dtype)
            mu_new = numerics.moment(b1, mu.astype(c), g.astype(c))
            mu_hat = mu_new / corrections(numerics.real_dtype(c)).astype(c)
            u = _componentwise(ratio, mu_hat, nu.astype(c))
            if clip_threshold is None:
                return numerics.store(u, g.dtype), numerics.store(mu_new, mu.dtype), None
            bound = numerics.hyperparameter(clip_threshold, numerics.real_dtype(c))
            kept = sum(jnp.sum(jnp.abs(part(u)) < bound).astype(jnp.int32) for part in (
                (jnp.real, jnp.imag) if jnp.iscomplexobj(u) else (lambda x: x,)))
            return (numerics.store(_componentwise(clipped, u), g.dtype),
                    numerics.store(mu_new, mu.dtype), kept)

        out, mu, kept = tree.tree_map_multi(leaf, 3, updates, state.mu, state.nu)
        if verbose and clip_threshold is not None and every > 0:
            size = sum(x.size * (2 if jnp.iscomplexobj(x) else 1) for x in jax.tree.leaves(out))
            win_rate = sum(jax.tree.leaves(kept), jnp.zeros([], jnp.int32)) / max(size, 1)
            lax.cond(count % every == 0,
                     lambda: jax.debug.print("Sophia optimizer win rate: {}", win_rate),
                     lambda: None)

        def refresh(hessian_state, nu):
            diagonal, hessian_state = hessian_diagonal_fn.update(
                updates, hessian_state, params, **accepted(extra_args))
            tree.check_same_structure(owner, "state", nu, diagonal)

            def average(h, n):
                c = numerics.compute_dtype(h.dtype, n.dtype)
                return numerics.store(numerics.moment(b2, n.astype(c), h.astype(c)), n.dtype)

            return hessian_state, tree.tree_map_skip_none(average, diagonal, nu)

        hessian_state, nu = lax.cond(
            state.count % interval == 0, refresh, lambda h, n: (h, n),
            state.hessian_fn_state, state.nu)
        return out, SophiaState(count=count, mu=mu, nu=nu, hessian_fn_state=hessian_state)

    return GradientTransformation(init_fn, update_fn)
