"""The simplest transformations, and applying updates to parameters."""

from __future__ import annotations

from typing import Any, Callable

import jax.numpy as jnp
from jax import lax

from gradxform.core import numerics, sparse, tree
from gradxform.core.base import (
    EmptyState,
    GradientTransformation,
    Params,
    Updates,
    init_empty_state,
    public_constructor,
)


@sparse.row_sparse_rule("routes")
@public_constructor
def identity() -> GradientTransformation:
    r"""Passes the updates through unchanged.

    .. math::
        u \leftarrow g

    Example:
      >>> import gradxform as gx
      >>> tx = gx.identity()
      >>> tx.update({"w": 1.0}, tx.init({"w": 0.0}))[0]
      {'w': 1.0}
    """

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        return updates, state

    return GradientTransformation(init_empty_state, update_fn)


@sparse.row_sparse_rule("routes")
@public_constructor
def stateless(f: Callable[[Updates, Params | None], Updates]) -> GradientTransformation:
    r"""A transformation without state from a function of the whole trees.

    .. math::
        u \leftarrow f(g, \theta)

    Args:
      f: ``f(updates, params) -> updates``; ``params`` may be None.

    Example:
      >>> import jax, gradxform as gx
      >>> tx = gx.stateless(lambda g, p: jax.tree.map(lambda x: 2 * x, g))
    """
    if not callable(f):
        raise TypeError(f"stateless: f must be callable, got {f!r}")

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        return f(updates, params), state

    return GradientTransformation(init_empty_state, update_fn)


@public_constructor
def stateless_with_tree_map(
    f: Callable[[Any, Any], Any],
) -> GradientTransformation:
    r"""A transformation without state from a function of one leaf.

    .. math::
        u_i \leftarrow f(g_i, \theta_i)

    Args:
      f: ``f(update_leaf, param_leaf) -> update_leaf``; ``param_leaf`` is None
        when no params are given. ``None`` update leaves are kept.

    Example:
      >>> import gradxform as gx
      >>> tx = gx.stateless_with_tree_map(lambda g, p: g * 2)
    """
    if not callable(f):
        raise TypeError(f"stateless_with_tree_map: f must be callable, got {f!r}")

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        if params is None:
            return tree.tree_map_skip_none(lambda g: f(g, None), updates), state
        tree.check_same_structure(
            "stateless_with_tree_map", "params", params, updates, none_matches=True
        )
        return tree.tree_map_skip_none(f, updates, params), state

    return GradientTransformation(init_empty_state, update_fn)


def apply_updates(params: Params, updates: Updates) -> Params:
    r"""Adds the updates to the parameters, keeping each parameter's dtype.

    .. math::
        \theta \leftarrow \theta + u

    The sum is computed in the wider of the two dtypes and cast back to the
    parameter's dtype. ``None`` parameters stay ``None`` (as in optax), and a
    ``None`` update leaves its parameter as it is (as ``eqx.apply_updates``
    does: integer leaves of an Equinox model get no gradient and no update).

    A `RowSparse` update is added to its rows only, by a scatter into the
    parameter: under ``jit`` with the params donated, the table is updated in
    place and no dense update is ever built.

    Args:
      params: a tree of parameters.
      updates: a tree of updates of the same structure and shapes.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> gx.apply_updates({"w": jnp.ones(2)}, {"w": jnp.full(2, -0.5)})["w"]
      Array([0.5, 0.5], dtype=float32)
    """
    tree.check_same_structure("apply_updates", "params", params, updates, none_matches=True)

    def add(p, u):
        if u is None:
            return p
        p = jnp.asarray(p)
        if isinstance(u, sparse.RowSparse):
            return sparse.add_rows(p, u)
        u = jnp.asarray(u)
        dtype = numerics.compute_dtype(p.dtype, u.dtype)
        if dtype == p.dtype == u.dtype:
            return lax.add(p, u)
        return (p.astype(dtype) + u.astype(dtype)).astype(p.dtype)

    return tree.tree_map_skip_none(add, params, updates)


__all__ = [
    "EmptyState",
    "apply_updates",
    "identity",
    "stateless",
    "stateless_with_tree_map",
]
