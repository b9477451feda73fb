"""L-BFGS: the updates multiplied by an inverse-Hessian estimate from the latest differences."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradxform.core import flat, numerics, randomness, tree, validation
from gradxform.core import linesearch_tools as tools
from gradxform.core.base import GradientTransformation, Params, Updates, public_constructor


class ScaleByLBFGSState(NamedTuple):
    """The step count, the latest params and updates, and the memory (optax's fields).

    ``diff_params_memory`` and ``diff_updates_memory`` hold, per leaf, the
    latest ``memory_size`` differences :math:`\\delta w_k` and :math:`\\delta u_k`
    stacked on a leading axis (shape ``(memory_size, *leaf.shape)``, the
    leaf's dtype); ``weights_memory`` the matching :math:`\\rho_k`.
    """

    count: jax.Array  # int32, shape ()
    params: Params
    updates: Updates
    diff_params_memory: Updates
    diff_updates_memory: Updates
    weights_memory: jax.Array


# --- the memory: stacked per leaf; on a flat_tree, a FlatTree of the stacked layout --------------


def _stack(leaf: jax.Array, m: int) -> jax.Array:
    """``m`` copies of ``leaf`` on a new leading axis, sharded like ``leaf`` on the others."""
    return jnp.broadcast_to(leaf[None], (m, *leaf.shape))


def _stacked_layout(layout: flat.Layout, m: int) -> flat.Layout:
    slots = tuple(
        dataclasses.replace(slot, shape=(m, *slot.shape), offset=m * slot.offset)
        for slot in layout.slots
    )
    return flat.Layout(layout.treedef, slots, layout.buffers)


def _memory_zeros(params: Any, m: int) -> Any:
    """The empty memory for ``params``: None where the params have no trainable leaf."""
    zero = tree.tree_zeros_like(params)
    if not flat.is_flat(params):
        return tree.tree_map_skip_none(lambda z: _stack(z, m), zero)
    buffers = []
    for spec, buffer in zip(zero.layout.buffers, zero.buffers):
        if buffer is None:
            buffers.append(None)
        elif spec.kept:
            buffers.append(_stack(buffer, m))
        else:
            buffers.append(jnp.reshape(_stack(buffer, m), (-1,)))
    return flat.FlatTree(buffers, _stacked_layout(zero.layout, m))


def _runs(layout: flat.Layout, spec: flat.BufferSpec) -> list[tuple[int, int, int]]:
    """``(offset, leaves, size)`` of each run of equal-shape leaves of a buffer."""
    return [(offset, len(members), math.prod(shape))
            for offset, shape, members in spec.runs(layout.slots)]


def _rows(memory: Any, like: Any, m: int) -> Any:
    """The memory as a tree like ``like`` (the updates) whose leaves are ``(m, *leaf.shape)``."""
    if not flat.is_flat(like):
        return memory
    layout = like.layout
    buffers = []
    for spec, buffer in zip(layout.buffers, memory.buffers):
        if buffer is None or spec.kept:
            buffers.append(buffer)
            continue
        blocks = [
            jnp.reshape(jnp.swapaxes(jnp.reshape(
                buffer[m * offset:m * (offset + count * size)], (count, m, size)), 0, 1),
                (m, count * size))
            for offset, count, size in _runs(layout, spec)
        ]
        buffers.append(blocks[0] if len(blocks) == 1 else jnp.concatenate(blocks, axis=1))
    return flat.FlatTree(buffers, layout)


def _from_rows(row_view: Any, memory: Any) -> Any:
    """The inverse of `_rows`: the row view stored back in ``memory``'s layout."""
    if not flat.is_flat(row_view):
        return row_view
    layout = row_view.layout
    buffers = []
    for spec, buffer in zip(layout.buffers, row_view.buffers):
        if buffer is None or spec.kept:
            buffers.append(buffer)
            continue
        m = buffer.shape[0]
        blocks = [
            jnp.reshape(jnp.swapaxes(jnp.reshape(
                buffer[:, offset:offset + count * size], (m, count, size)), 0, 1), (-1,))
            for offset, count, size in _runs(layout, spec)
        ]
        buffers.append(blocks[0] if len(blocks) == 1 else jnp.concatenate(blocks))
    return flat.FlatTree(buffers, memory.layout)


def _two_loops(updates, dw_rows, du_rows, rhos, gamma, newest, m):
    """Nocedal & Wright's Algorithm 7.4: ``P_k u`` from the memory, oldest entry at ``newest``."""
    vec = tree.tree_map_skip_none(numerics.upcast, updates)
    order = (newest + jnp.arange(m, dtype=newest.dtype)) % m

    def entry(rows, index):
        return tree.tree_map_skip_none(lambda x: x[index], rows)

    def backward(vec, index):
        alpha = rhos[index] * tools.real_inner(entry(dw_rows, index), vec).astype(rhos.dtype)
        return tools.add_scaled(vec, -alpha, entry(du_rows, index)), alpha

    vec, alphas = jax.lax.scan(backward, vec, order, reverse=True)
    vec = tree.tree_map_skip_none(lambda v: numerics.scale_leaf(gamma, v), vec)

    def forward(vec, index_alpha):
        index, alpha = index_alpha
        beta = rhos[index] * tools.real_inner(entry(du_rows, index), vec).astype(rhos.dtype)
        return tools.add_scaled(vec, alpha - beta, entry(dw_rows, index)), None

    vec, _ = jax.lax.scan(forward, vec, (order, alphas))
    return tools.cast_like(vec, updates)


@public_constructor
def scale_by_lbfgs(
    memory_size: int = 10, scale_init_precond: bool = True
) -> GradientTransformation:
    r"""Multiplies the updates by the L-BFGS estimate of the inverse Hessian.

    .. math::
        u_k \leftarrow P_k u_k, \qquad
        P_{k,j+1} = V_j^\top P_{k,j} V_j + \rho_j\, \delta w_j \delta w_j^\top,
        \quad V_j = I - \rho_j\, \delta u_j \delta w_j^\top,
        \quad \rho_j = \frac{1}{\langle \delta u_j, \delta w_j \rangle},
        \quad P_{k,k-m} = \gamma_k I

    over the latest :math:`m` (``memory_size``) differences
    :math:`\delta w_j = w_{j+1} - w_j` of params and :math:`\delta u_j =
    u_{j+1} - u_j` of updates (a pair with :math:`\langle \delta u_j, \delta
    w_j \rangle = 0` gets :math:`\rho_j = 0`, no effect). With
    ``scale_init_precond``, :math:`\gamma_k = \langle \delta u_{k-1}, \delta
    w_{k-1} \rangle / \lVert \delta u_{k-1} \rVert^2` and, at the first step,
    :math:`\gamma_0 = \min(1, 1/\lVert u_0 \rVert)`; otherwise :math:`\gamma_k
    = 1`. :math:`P_k u_k` is computed by the two-loop recursion, from the
    memory in the state, never as a matrix. The memory is updated first, with
    the params and updates of this call, so that after a line search the pair
    it stores is the accepted step.

    This only gives the direction: chain a negative scale and a line search
    (`lbfgs` does), or a learning rate. Same arguments, state and numbers as
    ``optax.scale_by_lbfgs``; the recursion runs in at least float32 and the
    result is rounded once to the updates' dtype (optax rounds to a bfloat16
    leaf's dtype after each of its :math:`2m` steps), and ``weights_memory``
    has the dtype of the arithmetic, float32 or float64, not JAX's default.
    The params and updates are treated as one vector: the inner products
    cover every leaf, so on sharded params each is a global reduction and the
    memory is sharded like the leaves; on a `flat_tree` buffer the state is a
    `FlatTree` whose ``unravel()`` is the per-leaf state. Nocedal & Wright,
    1999, "Numerical Optimization", Algorithms 7.4 and 7.5; Liu & Nocedal,
    1989, "On the limited memory BFGS method for large scale optimization".

    Args:
      memory_size: :math:`m \ge 1`, the number of pairs kept.
      scale_init_precond: use :math:`\gamma_k` above rather than 1.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> tx = gx.scale_by_lbfgs(memory_size=5)
      >>> w, g = jnp.array([3.0, 4.0]), jnp.array([3.0, 4.0])
      >>> tx.update(g, tx.init(w), w)[0]
      Array([0.6, 0.8], dtype=float32)
    """
    owner = "scale_by_lbfgs"
    m = validation.positive_int(owner, "memory_size", memory_size)
    validation.boolean(owner, "scale_init_precond", scale_init_precond)

    def init_fn(params):
        zeros = tree.tree_zeros_like(params)
        memory = _memory_zeros(params, m)
        weights = randomness.replicated_like(jnp.zeros([m], tools.scalar_dtype(params)), params)
        return ScaleByLBFGSState(numerics.zero_count(), zeros, zeros, memory, memory, weights)

    def step(updates, state, params, *, value_fn, fn_kwargs):
        del value_fn, fn_kwargs
        newest, previous = state.count % m, (state.count - 1) % m
        started = state.count > 0
        rhos = state.weights_memory
        dtype = rhos.dtype

        def difference(new, old):
            diff = numerics.upcast(jnp.asarray(new), old.dtype) - numerics.upcast(old)
            return numerics.store(jnp.where(started, diff, jnp.zeros_like(diff)), old.dtype)

        # 1. The newest pair (zero at the first step) goes into the memory.
        dw = jax.tree.map(lambda o, p: None if o is None else difference(p, o),
                          state.params, params, is_leaf=lambda x: x is None)
        du = jax.tree.map(lambda o, u: None if o is None else difference(u, o),
                          state.updates, updates, is_leaf=lambda x: x is None)
        curvature = tools.real_inner(du, dw).astype(dtype)
        nonzero = curvature != 0
        weight = jnp.where(nonzero & started, 1 / jnp.where(nonzero, curvature, 1), 0.0)
        dw_rows = _rows(state.diff_params_memory, updates, m)
        du_rows = _rows(state.diff_updates_memory, updates, m)
        dw_rows = jax.tree.map(lambda x, d: x.at[previous].set(d), dw_rows, dw)
        du_rows = jax.tree.map(lambda x, d: x.at[previous].set(d), du_rows, du)
        rhos = rhos.at[previous].set(weight.astype(dtype))

        # 2. The initial scale gamma_k.
        if scale_init_precond:
            squared = tree.tree_squared_norm(du).astype(dtype)
            positive = squared > 0
            gamma = jnp.where(positive, curvature / jnp.where(positive, squared, 1), 1.0)
            norm = tree.tree_plain_norm(jax.lax.stop_gradient(updates)).astype(dtype)
            gamma = jnp.where(started, gamma, 1 / jnp.maximum(norm, 1.0))
        else:
            gamma = 1.0

        # 3. P_k u_k by the two loops.
        direction = _two_loops(updates, dw_rows, du_rows, rhos, gamma, newest, m)
        new_state = ScaleByLBFGSState(
            count=numerics.safe_increment(state.count),
            params=tools.cast_like(params, state.params),
            updates=tools.cast_like(updates, state.updates),
            diff_params_memory=_from_rows(dw_rows, state.diff_params_memory),
            diff_updates_memory=_from_rows(du_rows, state.diff_updates_memory),
            weights_memory=rhos,
        )
        return direction, new_state

    run = tools.compiled_when_eager(step)

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        if params is None:
            raise TypeError(f"{owner}: update needs the params, whose differences it remembers")
        tree.check_same_structure(owner, "state", state.updates, updates, none_matches=True)
        tree.check_same_structure(owner, "params", params, updates, none_matches=True)
        return run(updates, state, params)

    return GradientTransformation(init_fn, update_fn)
