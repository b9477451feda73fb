"""Per-leaf operations that see each logical leaf whole, on trees and on `FlatTree` buffers.

A function given to `map_leafwise` receives leaves stacked as rows
(``(k, *shape)``, one leaf per row) and returns an array of that shape. On a
plain tree each leaf is one row; on a `FlatTree` each run of equal-shape leaves
inside a buffer is one block, so that a per-leaf reduction is one batched
reduction per distinct shape, not one per leaf.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from gradxform.core import numerics, sparse, tree
from gradxform.core.flat import FlatTree, _is_hole, _joined, is_flat


def map_leafwise(fn: Callable[[jax.Array], jax.Array], target: Any) -> Any:
    """``fn`` applied to each logical leaf, as rows; ``None`` entries stay ``None``.

    ``fn`` takes leaves stacked on a new leading axis, one leaf per row, and
    returns an array of that shape. A leaf of a plain tree is one row. On a
    `FlatTree`, each run of equal-shape leaves is one ``(k, *shape)`` block: a
    segment operation with one batched reduction per distinct shape, and one
    ``lax.cond`` where ``fn`` has one (under ``vmap`` a cond per leaf would run
    both branches).
    """
    def one_row(leaf):
        return sparse.map_values(lambda rows: fn(rows[None])[0], leaf)

    if not is_flat(target):
        return tree.tree_map_skip_none(one_row, target)
    layout = target.layout
    buffers = []
    for spec, buffer in zip(layout.buffers, target.buffers):
        if _is_hole(buffer) or spec.kept:
            buffers.append(buffer if _is_hole(buffer) else one_row(buffer))
            continue
        expected = sum(layout.slots[i].size for i in spec.members)
        if jnp.shape(buffer) != (expected,):
            raise ValueError(
                f"map_leafwise: buffer {spec.name} has shape {jnp.shape(buffer)}, its layout "
                f"holds {expected} elements"
            )
        blocks = []
        for offset, shape, members in spec.runs(layout.slots):
            length = len(members) * math.prod(shape)
            block = jax.lax.slice_in_dim(buffer, offset, offset + length)
            mapped = fn(jnp.reshape(block, (len(members), *shape)))
            blocks.append(jnp.reshape(mapped, (length,)))
        buffers.append(_joined(blocks))
    return FlatTree(buffers, layout)


def full_per_part(params: Any, value: float) -> Any:
    """State leaves filled with ``value``, for rules that treat a complex entry as two reals.

    Each leaf has the param's dtype (float32 for float16, whose range such
    accumulators outgrow), and a complex leaf holds ``value`` in both parts.
    Integer, bool and ``None`` leaves get ``None``.
    """

    def fill(p):
        if p is None or not tree.is_trainable(p):
            return None
        dtype = np.dtype(p.dtype if hasattr(p, "dtype") else numerics.leaf_dtype(p))
        if numerics.real_dtype(dtype) == np.float16:
            dtype = numerics.compute_dtype(dtype)
        both = complex(value, value) if jnp.issubdtype(dtype, jnp.complexfloating) else value
        return tree.tree_full_like(p, both, dtype)

    return jax.tree.map(fill, params, is_leaf=lambda x: x is None)
