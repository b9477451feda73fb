"""Applying updates periodically: `apply_every`, optax's accumulate-and-emit transform."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from gradxform.core import numerics, tree, validation
from gradxform.core.base import GradientTransformation, Updates, public_constructor


class ApplyEvery(NamedTuple):
    """optax's ``ApplyEvery`` state: the call count modulo ``k`` and the running sum."""

    count: jax.Array  # int32, shape (): calls so far modulo k, in [0, k)
    grad_acc: Updates


@public_constructor
def apply_every(k: int = 1) -> GradientTransformation:
    r"""Sums the updates of ``k`` calls and emits the sum on every ``k``-th call, zeros between.

    With :math:`c` the call count (from 0, kept modulo :math:`k`) and :math:`A`
    the sum:

    .. math::
        A_c = \begin{cases} g_c & c \bmod k = 0 \\ A_{c-1} + g_c & \text{otherwise} \end{cases},
        \qquad u_c = \begin{cases} A_c & c \bmod k = k - 1 \\ -0 & \text{otherwise} \end{cases}

    Same as ``optax.apply_every``, except that the calls that emit nothing
    emit ``-0.0`` (``p + (-0.0)`` is ``p`` bit for bit, ``-0.0`` included;
    optax emits ``0 \cdot A``, whose sign follows :math:`A`). The sum is
    computed in at least float32 and kept in the params' dtype. Transforms
    chained before it still update their state on every call; to run a whole
    optimizer once per window on the mean gradient, use `multi_steps` or
    `accumulate_gradients`.

    Args:
      k: :math:`k \ge 1`, the calls per emitted update.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> tx = gx.apply_every(k=2)
      >>> state = tx.init({"w": jnp.zeros(1)})
      >>> u, state = tx.update({"w": jnp.ones(1)}, state)
      >>> u, state = tx.update({"w": jnp.ones(1)}, state)
      >>> u["w"]
      Array([2.], dtype=float32)
    """
    owner = "apply_every"
    k = validation.positive_int(owner, "k", k)

    def init_fn(params):
        return ApplyEvery(count=numerics.zero_count(), grad_acc=tree.tree_zeros_like(params))

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        tree.check_same_structure(owner, "state", state.grad_acc, updates)
        continuing = state.count != 0
        emit = state.count == k - 1

        def leaf(g, acc):
            dtype = numerics.compute_dtype(g.dtype, acc.dtype)
            g_c = g.astype(dtype)
            total = jnp.where(continuing, acc.astype(dtype) + g_c, g_c)
            update = jnp.where(emit, total, jnp.full_like(total, -0.0))
            return numerics.store(update, g.dtype), numerics.store(total, acc.dtype)

        updates, grad_acc = tree.tree_map_multi(leaf, 2, updates, state.grad_acc)
        return updates, ApplyEvery(
            count=numerics.cyclic_increment(state.count, k), grad_acc=grad_acc)

    return GradientTransformation(init_fn, update_fn)
