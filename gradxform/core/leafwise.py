"""Per-leaf operations that see each logical leaf whole, on trees and on `FlatTree` buffers.

A function given here receives leaves stacked as rows (``(k, *shape)``, one
leaf per row) and returns arrays of the same shapes. On a plain tree each leaf
is one row; on a `FlatTree` each run of equal-shape leaves inside a buffer is
one block, so a per-leaf reduction is one batched reduction per distinct shape.
`map_leaves_jointly` hands all blocks to one call, so that a rare slow path
(a norm rescued from overflow) can be one ``lax.cond`` for the whole tree
instead of one per leaf.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import jax
import jax.numpy as jnp

from gradxform.core import tree
from gradxform.core.flat import FlatTree, _is_hole, _joined, is_flat


def map_leaves_jointly(fn: Callable[[list], list], target: Any) -> Any:
    """``fn`` applied once to every logical leaf of ``target``, as a list of row blocks.

    ``fn`` takes a list of arrays (leaves stacked on a leading axis, one leaf
    per row) and returns a list of arrays of the same shapes, in order. The
    result has ``target``'s structure (a `FlatTree` for a `FlatTree`); ``None``
    entries and masked-out buffers stay as they are.
    """
    if not is_flat(target):
        leaves, treedef = jax.tree.flatten(target, is_leaf=lambda x: x is None)
        present = [i for i, leaf in enumerate(leaves) if leaf is not None]
        mapped = fn([jnp.asarray(leaves[i])[None] for i in present])
        out = list(leaves)
        for i, rows in zip(present, mapped):
            out[i] = rows[0]
        return treedef.unflatten(out)
    layout = target.layout
    blocks, places = [], []  # places[i]: (buffer index, run length) of blocks[i]; -1: kept
    for index, (spec, buffer) in enumerate(zip(layout.buffers, target.buffers)):
        if _is_hole(buffer):
            continue
        if spec.kept:
            blocks.append(buffer[None])
            places.append((index, -1))
            continue
        expected = sum(layout.slots[i].size for i in spec.members)
        if jnp.shape(buffer) != (expected,):
            raise ValueError(
                f"map_leafwise: buffer {spec.name} has shape {jnp.shape(buffer)}, its layout "
                f"holds {expected} elements"
            )
        for offset, shape, members in spec.runs(layout.slots):
            length = len(members) * math.prod(shape)
            block = jax.lax.slice_in_dim(buffer, offset, offset + length)
            blocks.append(jnp.reshape(block, (len(members), *shape)))
            places.append((index, length))
    mapped = fn(blocks)
    pieces: dict[int, list] = {}
    buffers = list(target.buffers)
    for (index, length), rows in zip(places, mapped):
        if length < 0:
            buffers[index] = rows[0]
        else:
            pieces.setdefault(index, []).append(jnp.reshape(rows, (length,)))
    for index, parts in pieces.items():
        buffers[index] = _joined(parts)
    return FlatTree(buffers, layout)


def map_leafwise(fn: Callable[[jax.Array], jax.Array], target: Any) -> Any:
    """``fn`` applied to each logical leaf, as rows; ``None`` entries stay ``None``.

    ``fn`` takes leaves stacked on a new leading axis, one leaf per row, and
    returns an array of that shape: a leaf of a plain tree is one row, a run of
    equal-shape leaves in a `FlatTree` buffer one ``(k, *shape)`` block.
    """
    if not is_flat(target):
        return tree.tree_map_skip_none(lambda leaf: fn(leaf[None])[0], target)
    return map_leaves_jointly(lambda blocks: [fn(block) for block in blocks], target)
