"""Sharded params on a 4 x 2 ("data", "model") mesh, with the tree shape the property tests use."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

# The keys of tests.helpers.nested_shapes(), so the masks and labels of
# tests.test_properties.FACTORIES apply; shapes large enough to split.
SPECS = {
    "dense": {"kernel": ((8, 4), P("data", "model")), "bias": ((4,), P("model"))},
    "blocks": [((2, 6), P(None, "model")), None, ((), P())],
    "pair": (((16,), P(("data", "model"))), {"inner": ((1, 3), P()), "empty": ((0,), P())}),
    "scalar": ((), P()),
}


def _is_spec(x: Any) -> bool:
    return isinstance(x, tuple) and len(x) == 2 and isinstance(x[1], P)


def make_mesh(axis_type: AxisType = AxisType.Auto) -> jax.sharding.Mesh:
    return jax.make_mesh((4, 2), ("data", "model"), axis_types=(axis_type, axis_type))


def host_tree(seed: int, specs: Any = SPECS) -> Any:
    """Random float32 numpy leaves shaped like ``specs``; ``None`` stays ``None``."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(
        lambda s: rng.standard_normal(s[0]).astype(np.float32), specs, is_leaf=_is_spec
    )


def shardings(mesh: jax.sharding.Mesh, specs: Any = SPECS, replicated: bool = False) -> Any:
    return jax.tree.map(
        lambda s: NamedSharding(mesh, P() if replicated else s[1]), specs, is_leaf=_is_spec
    )


def on_mesh(tree: Any, mesh: jax.sharding.Mesh, replicated: bool = False) -> Any:
    return jax.device_put(tree, shardings(mesh, replicated=replicated))


def on_one_device(tree: Any) -> Any:
    return jax.device_put(jax.tree.map(jnp.asarray, tree), jax.devices()[0])


def spec_of(array: jax.Array) -> P:
    """The partition spec of ``array``, with trailing ``None`` entries dropped."""
    entries = list(array.sharding.spec)
    while entries and entries[-1] is None:
        entries.pop()
    return P(*entries)
