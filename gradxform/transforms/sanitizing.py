"""Sanitizing updates: `zero_nans`, `keep_params_nonnegative`, `centralize`."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradxform.core import flat, leafwise, numerics, tree
from gradxform.core.base import GradientTransformation, init_empty_state, public_constructor


class ZeroNansState(NamedTuple):
    """optax's ``ZeroNansState``: one bool per parameter, True when the latest update had a NaN."""

    found_nan: Any


def _is_none(x: Any) -> bool:
    return x is None


def _false_on_devices_of(p: Any) -> jax.Array:
    """A ``False`` bool scalar, replicated on the mesh of ``p`` when ``p`` lives on one."""
    flag = jnp.zeros([], jnp.bool_)
    sharding = getattr(p, "sharding", None)
    if isinstance(p, jax.Array) and not isinstance(p, jax.core.Tracer) and isinstance(
            sharding, jax.sharding.NamedSharding):
        return jax.device_put(flag, jax.sharding.NamedSharding(
            sharding.mesh, jax.sharding.PartitionSpec()))
    return flag


def _flags_like(params: Any) -> Any:
    """A ``False`` bool scalar per trainable leaf of ``params`` (per logical leaf of a `FlatTree`)."""
    return jax.tree.map(
        lambda p: None if p is None or not tree.is_trainable(p) else _false_on_devices_of(p),
        params.logical if flat.is_flat(params) else params, is_leaf=_is_none,
    )


def _any_nan(x: jax.Array, axes: Any = None) -> jax.Array:
    return jnp.any(jnp.isnan(x), axis=axes)


def _found_nans(updates: Any) -> Any:
    """Whether each (logical) leaf of ``updates`` holds a NaN: a bool scalar per leaf."""
    if not flat.is_flat(updates):
        return tree.tree_map_skip_none(_any_nan, updates)
    layout = updates.layout
    found: list = [None] * len(layout.slots)
    for spec, buffer in zip(layout.buffers, updates.buffers):
        if not jax.tree.leaves(buffer):  # a buffer a mask left out
            for index in spec.members:
                found[index] = jnp.zeros([], jnp.bool_)
        elif spec.kept:
            found[spec.members[0]] = _any_nan(buffer)
        else:
            for offset, shape, members in spec.runs(layout.slots):
                size = len(members) * math.prod(shape)
                block = jax.lax.slice_in_dim(buffer, offset, offset + size)
                rows = _any_nan(jnp.reshape(block, (len(members), -1)), 1)
                for row, index in enumerate(members):
                    found[index] = rows[row]
    return layout.treedef.unflatten(found)


@public_constructor
def zero_nans() -> GradientTransformation:
    r"""Replaces NaN entries of the updates by 0, and records which leaves had one.

    .. math::
        u = \begin{cases} 0 & g \text{ is NaN} \\ g & \text{otherwise} \end{cases},
        \qquad \mathrm{found\_nan}_i = \exists\, j : g_{ij} \text{ is NaN}

    Same as ``optax.zero_nans``: the state's ``found_nan`` has a bool scalar per
    parameter, True when that leaf's latest update held a NaN (a complex entry
    counts if either part is NaN, and is zeroed whole). Infinities pass
    through. On a `FlatTree` the flags are per logical leaf, as on the tree it
    was built from.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> tx = gx.zero_nans()
      >>> state = tx.init({"w": jnp.zeros(2)})
      >>> updates, state = tx.update({"w": jnp.array([1.0, 2.0])}, state)
      >>> state.found_nan["w"]
      Array(False, dtype=bool)
    """
    owner = "zero_nans"

    def init_fn(params):
        return ZeroNansState(found_nan=_flags_like(params))

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        found = _found_nans(updates)
        if jax.tree.structure(state.found_nan) != jax.tree.structure(found):
            raise tree.structure_mismatch(owner, "state", state.found_nan, found)
        updates = tree.tree_map_skip_none(
            lambda g: jnp.where(jnp.isnan(g), jnp.zeros_like(g), g), updates)
        return updates, ZeroNansState(found_nan=found)

    return GradientTransformation(init_fn, update_fn)


@public_constructor
def keep_params_nonnegative() -> GradientTransformation:
    r"""Shortens the updates that would take a parameter below 0, so that it stops at 0.

    .. math::
        u = \begin{cases} -\theta & \theta + g < 0 \\ g & \text{otherwise} \end{cases}

    Same as ``optax.keep_params_nonnegative``; put it last in a chain. A
    parameter that is already negative is moved to 0. The test
    :math:`\theta + g < 0` runs in at least float32; when the updates have a
    lower precision than the parameters, :math:`-\theta` rounded to the
    updates' dtype is taken one step towards 0 if it would overshoot, so that
    ``apply_updates`` never makes a parameter negative. Complex parameters
    have no order: their updates pass through unchanged (optax raises).

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> tx = gx.keep_params_nonnegative()
      >>> params = {"w": jnp.array([1.0, 0.5])}
      >>> tx.update({"w": jnp.array([-2.0, 0.25])}, tx.init(params), params)[0]["w"]
      Array([-1.  ,  0.25], dtype=float32)
    """
    owner = "keep_params_nonnegative"

    def leaf(u, p):
        if p is None:
            return u
        p = jnp.asarray(p)
        if jnp.iscomplexobj(p) or jnp.iscomplexobj(u):
            return u  # complex numbers have no order: nothing to keep non-negative
        dtype = numerics.compute_dtype(u.dtype, p.dtype)
        p_c, u_c = p.astype(dtype), u.astype(dtype)
        floor = numerics.store(-p_c, u.dtype)
        if u.dtype != p.dtype:  # -p rounded to the updates' dtype may overshoot
            overshoots = p_c + floor.astype(dtype) < 0
            floor = jnp.where(overshoots, jnp.nextafter(floor, jnp.zeros_like(floor)), floor)
        return jnp.where(p_c + u_c < 0, floor, u)

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        if params is None:
            raise ValueError(f"{owner}: update needs params, got params=None")
        tree.check_same_structure(owner, "params", params, updates, none_matches=True)
        return tree.tree_map_skip_none(leaf, updates, params), state

    return GradientTransformation(init_empty_state, update_fn)


def _centralized_rows(rows: jax.Array) -> jax.Array:
    """Each row (a leaf) minus its mean over all axes but the first, for leaves of rank > 1."""
    if rows.ndim <= 2 or rows.size == 0:  # rank 0 or 1 leaves are left as they are
        return rows
    rows_c = numerics.upcast(rows)
    mean = jnp.mean(rows_c, axis=tuple(range(2, rows.ndim)), keepdims=True)
    return numerics.store(rows_c - mean, rows.dtype)


@public_constructor
def centralize() -> GradientTransformation:
    r"""Gradient centralization: subtracts from each matrix its mean over all axes but the first.

    .. math::
        u_{i,:} = g_{i,:} - \frac{1}{m} \sum_{j} g_{i,j} \quad \text{for leaves of rank} \ge 2,
        \qquad u = g \text{ otherwise}

    where :math:`i` runs over the leading axis and :math:`j` over the
    :math:`m` entries of the other axes. Same as ``optax.centralize``, with the
    mean in at least float32. Yong et al., 2020, *Gradient Centralization: A
    New Optimization Technique for Deep Neural Networks*.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> tx = gx.centralize()
      >>> g = {"w": jnp.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])}
      >>> tx.update(g, tx.init(g))[0]["w"]
      Array([[-1.,  0.,  1.],
             [-1.,  0.,  1.]], dtype=float32)
    """

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        return leafwise.map_leafwise(_centralized_rows, updates), state

    return GradientTransformation(init_empty_state, update_fn)
