"""SM3: one accumulator per slice along each axis, instead of one per parameter.

For a leaf of shape :math:`(n_1, \\dots, n_k)` SM3 keeps :math:`k` vectors, the
:math:`i`-th of length :math:`n_i` (memory :math:`\\sum_i n_i` rather than
:math:`\\prod_i n_i`). Like the factored moments of `scale_by_factored_rms`,
they are reductions over a leaf's own axes: a `gx.flat_tree` buffer is refused,
and on a sharded leaf the maxima are all-reduces, each vector sharded like its
axis of the leaf.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import NamedSharding, PartitionSpec

from gradxform.core import flat, numerics, tree, validation
from gradxform.core.base import GradientTransformation, Updates, public_constructor


class ScaleBySM3State(NamedTuple):
    """Per leaf, one accumulator vector per axis (``mu``), and the momentum (``nu``)."""

    mu: Updates
    nu: Updates


def _axis_zeros(leaf: Any, axis: int, dtype: Any) -> jax.Array:
    """Zeros of length ``leaf.shape[axis]``, sharded as that axis of ``leaf`` is."""
    others = tuple(i for i in range(len(leaf.shape)) if i != axis)
    if isinstance(leaf, jax.core.Tracer):  # JAX's sharding types give the reduced sharding
        target = jax.eval_shape(functools.partial(jnp.sum, axis=others), leaf)
        return jnp.zeros_like(target, dtype=dtype)
    sharding = getattr(leaf, "sharding", None)
    if isinstance(sharding, NamedSharding):
        spec = tuple(sharding.spec) + (None,) * len(leaf.shape)
        sharding = NamedSharding(sharding.mesh, PartitionSpec(spec[axis]))
    elif not isinstance(sharding, jax.sharding.SingleDeviceSharding):
        sharding = None
    return jnp.zeros((leaf.shape[axis],), dtype, device=sharding)


def _refuse_flat(owner: str, tree_: Any, what: str) -> None:
    if flat.is_flat(tree_):
        raise TypeError(
            f"{owner}: got a gx.flat_tree buffer as {what}, but {owner} (and sm3, which uses it) "
            "keeps one accumulator per slice along each axis of a leaf and needs the leaf's "
            "shape, which a flat buffer does not keep. Use the per-leaf tree instead: pass "
            "params.unravel() (and its gradients) rather than the FlatTree"
        )


def _covers(leaf: Any) -> list:
    """The accumulators of one leaf: one per axis; a 0-d leaf has one, of shape ()."""
    dtype = numerics.squares_dtype(
        np.dtype(leaf.dtype) if hasattr(leaf, "dtype") else numerics.leaf_dtype(leaf))
    ndim = len(getattr(leaf, "shape", ()))
    if ndim < 2:  # the accumulator has the leaf's own shape and sharding
        return [tree.tree_full_like(leaf, 0, dtype, real=True)]
    return [_axis_zeros(leaf, axis, dtype) for axis in range(ndim)]


@public_constructor
def scale_by_sm3(b1: float = 0.9, b2: float = 1.0, eps: float = 1e-8) -> GradientTransformation:
    r"""Rescales by SM3's cover-wise accumulated squared gradients, then takes momentum.

    .. math::
        a_t = c\, g_t^2 + \beta_2 \min_i \mu^{(i)}_{t-1}[j_i], \quad
        c = \begin{cases} 1 & \beta_2 = 1 \\ 1-\beta_2 & \text{otherwise} \end{cases} \\
        \mu^{(i)}_t[j] = \max_{\text{entries with index } j \text{ on axis } i} a_t, \qquad
        \nu_t = \beta_1 \nu_{t-1} + (1-\beta_1) \frac{g_t}{\sqrt{a_t + \epsilon}}, \quad
        u_t = \nu_t

    with :math:`g/\sqrt{a + \epsilon} = 0` where :math:`a = 0`. For a leaf of
    rank :math:`k \ge 2`, :math:`\mu^{(i)}` is a vector along axis :math:`i`;
    a vector or 0-d leaf keeps one accumulator of its own shape (the minimum and
    maximum are then the entry itself, so with :math:`\beta_2 = 1` it is
    Adagrad). With the default :math:`\beta_2 = 1` this is SM3-II of Anil et al.,
    2019. Same rule, state layout and defaults as ``optax.scale_by_sm3``, where
    optax runs: optax fails on 0-d leaves (its state holds no accumulator for
    them; here ``mu`` holds one, of shape ``()``), on empty leaves of rank 2 or
    more, and on complex leaves, which here accumulate :math:`|g|^2`.
    Accumulators are stored in the leaf's real dtype (float32 for float16),
    :math:`\nu` in the leaf's dtype. The accumulators need each leaf's shape: a
    `gx.flat_tree` buffer raises a `TypeError` (use the per-leaf tree).

    Args:
      b1: :math:`\beta_1` in [0, 1), the momentum of the scaled updates.
      b2: :math:`\beta_2` in [0, 1], the decay of the accumulators.
      eps: :math:`\epsilon \ge 0`, added to the accumulator under the root.

    Example:
      >>> import gradxform as gx
      >>> tx = gx.chain(gx.scale_by_sm3(), gx.scale_by_learning_rate(0.1))
    """
    owner = "scale_by_sm3"
    validation.decay_rate(owner, "b1", b1)
    validation.decay_rate(owner, "b2", b2, allow_one=True)
    validation.non_negative(owner, "eps", eps)

    def init_fn(params):
        _refuse_flat(owner, params, "params")
        mu = jax.tree.map(lambda p: None if p is None or not tree.is_trainable(p) else _covers(p),
                          params, is_leaf=lambda x: x is None)
        return ScaleBySM3State(mu=mu, nu=tree.tree_zeros_like(params))

    def squares_weight(dtype):
        """:math:`c`: 1 when b2 is 1, else 1 - b2 (an injected b2 is an array)."""
        beta = numerics.python_number(b2)
        if isinstance(beta, (int, float)):
            return 1.0 if beta == 1 else 1 - beta
        beta = jnp.asarray(beta).astype(dtype)
        return jnp.where(beta == 1, jnp.ones_like(beta), 1 - beta)

    def leaf(g, mu, nu):
        if len(mu) != max(g.ndim, 1) or any(
            m.shape != (g.shape if g.ndim < 2 else (g.shape[i],)) for i, m in enumerate(mu)
        ):
            raise ValueError(
                f"{owner}: an update of shape {g.shape} does not match its accumulators, of "
                f"shapes {[m.shape for m in mu]}"
            )
        dtype = numerics.compute_dtype(g.dtype, nu.dtype, *(m.dtype for m in mu))
        real = numerics.real_dtype(dtype)
        g_c = g.astype(dtype)
        if g.ndim < 2:
            previous = mu[0].astype(real)
        else:
            expanded = [jnp.expand_dims(m.astype(real), [j for j in range(g.ndim) if j != i])
                        for i, m in enumerate(mu)]
            previous = functools.reduce(jnp.minimum, expanded)
        weight = numerics.hyperparameter(squares_weight(real), real)
        decay = numerics.hyperparameter(b2, real)
        accum = weight * numerics.abs_sq(g_c) + decay * previous
        root = lax.rsqrt(accum + numerics.hyperparameter(eps, real))
        inverse = jnp.where(accum > 0, root, jnp.zeros_like(root))
        nu_new = numerics.moment(b1, nu.astype(dtype), g_c * inverse.astype(dtype))
        if g.ndim < 2:
            mu_new = [accum.astype(mu[0].dtype)]
        else:
            mu_new = [jnp.max(accum, axis=[j for j in range(g.ndim) if j != i], initial=0)
                      .astype(m.dtype) for i, m in enumerate(mu)]
        return numerics.store(nu_new, g.dtype), mu_new, numerics.store(nu_new, nu.dtype)

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        _refuse_flat(owner, updates, "updates")
        tree.check_same_structure(owner, "state", state.nu, updates)
        leaves, treedef = jax.tree.flatten(updates, is_leaf=lambda x: x is None)
        mus, nus = treedef.flatten_up_to(state.mu), treedef.flatten_up_to(state.nu)
        results = [None if g is None else leaf(jnp.asarray(g), mu, nu)
                   for g, mu, nu in zip(leaves, mus, nus)]
        new_updates, mu, nu = (
            treedef.unflatten([None if r is None else r[i] for r in results]) for i in range(3))
        return new_updates, ScaleBySM3State(mu=mu, nu=nu)

    return GradientTransformation(init_fn, update_fn)
