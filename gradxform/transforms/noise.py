"""Gradient noise: `add_noise`, annealed Gaussian noise added to the updates."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gradxform.core import flat, numerics, randomness, tree, validation
from gradxform.core.base import GradientTransformation, public_constructor



class AddNoiseState(NamedTuple):
    """optax's ``AddNoiseState``, field for field: the step count and the random key.

    ``rng_key`` holds the key's raw data (``jax.random.key_data``, a uint32
    array) where optax holds a typed key array, so that the state is plain
    arrays that NumPy, checkpoints and dtype checks handle;
    ``jax.random.wrap_key_data(state.rng_key)`` gives the typed key.
    """

    count: jax.Array  # int32, shape ()
    rng_key: jax.Array  # uint32 key data, shape (2,) for the default threefry keys


def _key_source(owner: str, key: Any, seed: Any) -> tuple[Any, Any]:
    """``(make, impl)`` for ``key``, or for ``seed`` (its older name, an int)."""
    if seed is not None:
        randomness.check_seed(owner, "seed", seed, wanted="an int")
        if key is not None:
            raise ValueError(
                f"{owner}: give key or seed (its older name), not both; got key={key!r} "
                f"and seed={seed!r}"
            )
        key = seed
    return randomness.key_source(owner, "key", key)


def _normal(key: jax.Array, leaf: Any) -> jax.Array:
    """Standard normal noise shaped and typed like ``leaf``, placed as ``leaf`` is."""
    leaf = jnp.asarray(leaf)
    return jax.random.normal(key, leaf.shape, leaf.dtype, out_sharding=jax.typeof(leaf).sharding)


def _widened(xi: jax.Array, dtype: Any) -> jax.Array:
    """Noise drawn in a low precision, in ``dtype`` with exactly its drawn values.

    XLA may drop a float32 -> bfloat16 -> float32 round trip (excess
    precision), which would let the noise differ between two programs that
    draw it alike (a flat and a per-leaf tree); ``reduce_precision`` is kept.
    """
    wide = xi.astype(dtype)
    if np.dtype(xi.dtype) == np.dtype(dtype):
        return wide
    info = jnp.finfo(xi.dtype)  # a real dtype: there is no complex type below complex64
    return jax.lax.reduce_precision(wide, info.nexp, info.nmant)


def _is_hole(buffer: Any) -> bool:
    return not jax.tree.leaves(buffer)


def _flat_noise(keys: jax.Array, updates: flat.FlatTree) -> flat.FlatTree:
    """The noise of the per-leaf tree, laid out in ``updates``' buffers.

    Logical leaf ``i`` (in the tree's order, among the buffers present) gets
    ``keys[i]``, as on the per-leaf tree; each run of equal-shape leaves is one
    batched draw.
    """
    layout = updates.layout
    present = sorted(i for spec, buffer in zip(layout.buffers, updates.buffers)
                     if not _is_hole(buffer) for i in spec.members)
    rank = {slot: position for position, slot in enumerate(present)}
    buffers = []
    for spec, buffer in zip(layout.buffers, updates.buffers):
        if _is_hole(buffer):
            buffers.append(buffer)
            continue
        if spec.kept:
            buffers.append(_normal(keys[rank[spec.members[0]]], buffer))
            continue
        blocks = []
        for _, shape, members in spec.runs(layout.slots):
            run_keys = keys[np.asarray([rank[i] for i in members], np.int32)]
            draw = jax.vmap(lambda k, shape=shape: jax.random.normal(k, shape, spec.dtype))
            blocks.append(jnp.reshape(draw(run_keys), (-1,)))
        buffers.append(jnp.concatenate(blocks) if len(blocks) > 1 else blocks[0])
    return flat.FlatTree(buffers, layout)


def _noise_like(key: jax.Array, updates: Any) -> Any:
    """One standard normal draw per leaf, from ``key`` split once per leaf (as optax does)."""
    if flat.is_flat(updates):
        count = sum(len(spec.members) for spec, buffer in zip(updates.layout.buffers, updates.buffers)
                    if not _is_hole(buffer))
        return _flat_noise(jax.random.split(key, count), updates)
    leaves, treedef = jax.tree.flatten(updates)
    keys = jax.random.split(key, len(leaves))
    return treedef.unflatten([_normal(keys[i], leaf) for i, leaf in enumerate(leaves)])


@public_constructor
def add_noise(eta: float, gamma: float, key: Any = None, *, seed: int | None = None
              ) -> GradientTransformation:
    r"""Adds Gaussian noise whose variance anneals with the step count.

    .. math::
        \sigma_t^2 = \frac{\eta}{t^{\gamma}}, \qquad u_t = g_t + \sigma_t\, \xi_t,
        \quad \xi_t \sim \mathcal{N}(0, I), \quad t = 1, 2, \ldots

    (:math:`t` counts the updates from 1, so the variance is optax's
    :math:`\eta / (1 + t)^\gamma` with its :math:`t` from 0.) Same as
    ``optax.add_noise``, with the same numbers for the same key: each update
    splits the state's key into the next key and a sampling key, splits that
    once per leaf of the updates, and draws each leaf's noise in the leaf's
    dtype. The arithmetic on that noise runs in at least float32 and is
    rounded once to the gradients' dtype (optax computes
    :math:`\sigma_t \xi_t` and the sum in bfloat16 for bfloat16 gradients).
    On a `FlatTree` the noise is the per-leaf tree's, leaf for leaf (one batched
    draw per run of equal shapes); under a mask that selects part of a
    buffer, the unselected leaves of that buffer take keys too, so the noise
    differs from the per-leaf tree's (with the same distribution). Neelakantan
    et al., 2015, *Adding Gradient Noise Improves Learning for Very Deep
    Networks*.

    Args:
      eta: :math:`\eta \ge 0`, the variance of the noise at the first step.
      gamma: :math:`\gamma \ge 0`, the exponent of its annealing.
      key: the random key: an int seed, a ``jax.random.key`` or a
        ``jax.random.PRNGKey``; None means seed 0 (optax warns and uses 0).
      seed: optax's older name for an int ``key``; give ``key`` or ``seed``,
        not both.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> tx = gx.chain(gx.add_noise(eta=0.01, gamma=0.55, key=0), gx.scale_by_learning_rate(0.1))
      >>> state = tx.init({"w": jnp.zeros(3)})
      >>> updates, state = tx.update({"w": jnp.ones(3)}, state)
    """
    owner = "add_noise"
    validation.non_negative(owner, "eta", eta)
    validation.non_negative(owner, "gamma", gamma)
    make_key, impl = _key_source(owner, key, seed)

    def init_fn(params):
        return AddNoiseState(count=numerics.zero_count(),
                             rng_key=randomness.replicated_like(make_key(), params))

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        count = numerics.safe_increment(state.count)
        next_key, sample_key = jax.random.split(jax.random.wrap_key_data(state.rng_key, impl=impl))
        noise = _noise_like(sample_key, updates)

        def deviation(dtype):
            steps = count.astype(dtype) ** numerics.hyperparameter(gamma, dtype)
            return jnp.sqrt(numerics.hyperparameter(eta, dtype) / steps)

        deviations = numerics.per_dtype(deviation)

        def leaf(g, xi):
            g_c = numerics.upcast(g)
            sigma = deviations(numerics.real_dtype(g_c.dtype)).astype(g_c.dtype)
            return numerics.store(g_c + sigma * _widened(xi, g_c.dtype), g.dtype)

        updates = tree.tree_map_skip_none(leaf, updates, noise)
        return updates, AddNoiseState(count=count, rng_key=jax.random.key_data(next_key))

    return GradientTransformation(init_fn, update_fn)
