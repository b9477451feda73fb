"""Hypothesis strategies for parameter trees.

A tree *spec* is drawn first (pure data: nested dicts, lists and tuples, possibly
empty, with `LeafSpec` or ``None`` leaves); `build` turns it into arrays. The
shapes come from a small pool, so that eager runs reuse JAX's compiled
primitives across examples instead of compiling new ones for every shape.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import strategies as st

# 0-d, zero-size, and small vectors and matrices.
SHAPES = [(), (0,), (1,), (3,), (2, 3), (0, 2), (1, 1)]
# Names that the factories' patterns ("bias", "kernel", "^pair", "blocks", "scalar") select.
KEYS = ["kernel", "bias", "w", "blocks", "pair", "scalar", "emb"]
DTYPES = [jnp.float32, jnp.bfloat16, jnp.float16, jnp.complex64]
DTYPES_X64 = [*DTYPES, jnp.float64, jnp.complex128]


class LeafSpec(NamedTuple):
    shape: tuple
    dtype: Any


def _is_leaf_spec(x: Any) -> bool:
    return x is None or isinstance(x, LeafSpec)


def leaf_specs(dtypes) -> st.SearchStrategy:
    return st.builds(LeafSpec, st.sampled_from(SHAPES), st.sampled_from(dtypes))


def tree_specs(dtypes, max_leaves: int = 6) -> st.SearchStrategy:
    """Nested dicts, lists and tuples (empty ones too) of leaves and ``None``."""
    leaves = st.one_of(leaf_specs(dtypes), leaf_specs(dtypes), st.none())

    def containers(children):
        return st.one_of(
            st.dictionaries(st.sampled_from(KEYS), children, max_size=3),
            st.lists(children, max_size=3),
            st.lists(children, max_size=3).map(tuple),
        )

    # The whole tree is never None: update(..., params=None) means "no params".
    return st.recursive(leaves, containers, max_leaves=max_leaves).filter(lambda t: t is not None)


def build(spec: Any, seed: int, scale: float = 1.0) -> Any:
    """Random normal arrays (complex ones with both parts random) for a spec."""
    rng = np.random.default_rng(seed)

    def make(leaf: LeafSpec | None):
        if leaf is None:
            return None
        values = rng.standard_normal(leaf.shape)
        if jnp.issubdtype(leaf.dtype, jnp.complexfloating):
            values = values + 1j * rng.standard_normal(leaf.shape)
        return jnp.asarray(scale * values, dtype=leaf.dtype)

    return jax.tree.map(make, spec, is_leaf=_is_leaf_spec)


class Case(NamedTuple):
    """Params and a stream of gradients, all built from one spec."""

    spec: Any
    seed: int
    gradient_scales: tuple

    def params(self):
        return build(self.spec, self.seed)

    def gradients(self):
        return [build(self.spec, self.seed + 1 + step, scale)
                for step, scale in enumerate(self.gradient_scales)]


def cases(dtypes, steps: int = 3) -> st.SearchStrategy:
    """A spec, a seed, and one gradient scale per step (zero included: the zero paths)."""
    scales = st.sampled_from([0.0, 1e-3, 1.0, 30.0])
    return st.builds(
        Case, tree_specs(dtypes), st.integers(0, 2**20), st.tuples(*[scales] * steps)
    )
