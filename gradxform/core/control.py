"""Running an inner transformation only when a traced condition holds."""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from gradxform.core import sparse
from gradxform.core.base import GradientTransformation
from gradxform.core.combine import extra_args_filter


def hold_updates(shapes: Any) -> Any:
    """Updates that leave every parameter bit-for-bit as it is: ``-0.0`` everywhere.

    ``p + (-0.0) == p`` for every ``p``, including ``-0.0`` (``+0.0`` would turn a
    ``-0.0`` parameter into ``+0.0``). Each leaf keeps the sharding in its shape
    (set on a mesh with explicit axes), so both ``lax.cond`` branches agree.
    """
    def hold(s):
        if isinstance(s, sparse.RowSparse):  # empty slots: nothing is written
            indices = jnp.full(s.indices.shape, s.num_rows, s.indices.dtype)
            return sparse.RowSparse._unchecked(indices, hold(s.values), s.num_rows, s.unique)
        return jnp.full(s.shape, -0.0, s.dtype, device=s.sharding)

    return jax.tree.map(hold, shapes, is_leaf=sparse.is_row_sparse)


def update_or_hold(
    condition: jax.Array,
    inner: GradientTransformation,
    inputs: Any,
    inner_state: Any,
    params: Any,
    extra_args: dict,
    prepare: Callable[[Any], Any] = lambda inputs: inputs,
) -> tuple[Any, Any]:
    """``inner.update(prepare(inputs), ...)`` if ``condition``, else (`hold_updates`, ``inner_state``).

    A ``lax.cond``, so neither ``prepare`` nor the inner update is computed on
    steps that hold. ``inner`` gets only the ``extra_args`` its ``update``
    accepts (`extra_args_filter`), as a member of a `chain` does.
    """
    accepted = extra_args_filter(inner.update)(extra_args)

    def run(operands):
        inputs, inner_state, params = operands
        return inner.update(prepare(inputs), inner_state, params, **accepted)

    def hold(operands):
        shapes = jax.eval_shape(lambda: run(operands)[0])
        return hold_updates(shapes), operands[1]

    return jax.lax.cond(condition, run, hold, (inputs, inner_state, params))
