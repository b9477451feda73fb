"""Random keys kept in a state, and where a state leaf made from no input lives.

A key is stored as its raw data (``jax.random.key_data``, uint32) so that the
state is plain arrays; ``jax.random.wrap_key_data(data, impl=impl)`` gives the
typed key back. State made from no input (a key, a vector of scalars) is
placed replicated on the mesh of the params it was made for, as a counter is.
"""

from __future__ import annotations

import numbers
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

SEED_RANGE = (-(2**63), 2**63)  # what jax.random.key accepts for an int seed
KEY_KINDS = "None, an int seed, a jax.random.key or a jax.random.PRNGKey"


def is_typed_key(value: Any) -> bool:
    dtype = getattr(value, "dtype", None)
    return dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)


def check_seed(owner: str, argument: str, value: Any, wanted: str = KEY_KINDS) -> int | None:
    """An int seed as a Python int; None for a tracer. Raises, naming ``argument``, otherwise."""
    if isinstance(value, jax.core.Tracer):
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{owner}: {argument} must be {wanted}, got {value!r}")
    if not SEED_RANGE[0] <= int(value) < SEED_RANGE[1]:
        raise ValueError(
            f"{owner}: {argument} must be an int seed in [-2**63, 2**63), got {value!r}"
        )
    return int(value)


def key_source(owner: str, argument: str, key: Any) -> tuple[Callable[[], jax.Array], Any]:
    """``(make, impl)``: a function giving the key's raw data, and the key's implementation.

    ``key`` may be None (seed 0), an int seed (also a 0-d integer array), a
    typed key (``jax.random.key``) or a raw uint32 key of the default
    implementation (``jax.random.PRNGKey``).
    """
    if key is None:
        return (lambda: jax.random.key_data(jax.random.key(0))), None
    if is_typed_key(key):
        if jnp.shape(key) != ():
            raise ValueError(f"{owner}: {argument} must be a single key (shape ()), got {key!r}")
        return (lambda: jax.random.key_data(key)), jax.random.key_impl(key)
    dtype = getattr(key, "dtype", None)
    if dtype is not None and not isinstance(key, numbers.Integral):
        default_shape = jax.random.key_data(jax.random.key(0)).shape
        if np.dtype(dtype) == np.uint32 and jnp.shape(key) == default_shape:
            return (lambda: jnp.asarray(key, jnp.uint32)), None  # a jax.random.PRNGKey
        if jnp.issubdtype(dtype, jnp.integer) and jnp.shape(key) == ():
            if isinstance(key, jax.core.Tracer):
                return (lambda: jax.random.key_data(jax.random.key(key))), None
            number = check_seed(owner, argument, int(key))
            return (lambda: jax.random.key_data(jax.random.key(number))), None
        raise TypeError(f"{owner}: {argument} must be {KEY_KINDS}, got {key!r}")
    number = check_seed(owner, argument, key)
    return (lambda: jax.random.key_data(jax.random.key(number))), None


def replicated_like(data: jax.Array, params: Any) -> jax.Array:
    """``data`` placed replicated on the mesh of the params (eager ones), like a counter."""
    for leaf in jax.tree.leaves(params):
        if isinstance(leaf, jax.core.Tracer) or not isinstance(leaf, jax.Array):
            continue
        sharding = leaf.sharding
        if isinstance(sharding, jax.sharding.NamedSharding):
            return jax.device_put(data, jax.sharding.NamedSharding(
                sharding.mesh, jax.sharding.PartitionSpec()))
        return data
    return data
