"""Public forms of the core's row-sparse helpers, with their formulas."""

from __future__ import annotations

from types import MappingProxyType

import jax

from gradxform.core import sparse
from gradxform.core.sparse import RowSparse
from gradxform.sparse import slots


def coalesce(g: RowSparse, size: int | None = None, *, overflow: str = "raise") -> RowSparse:
    r"""The same row-sparse array with one slot per touched row.

    .. math::
        \mathrm{coalesce}(g) = \mathrm{RowSparse}\big(\mathrm{sort}(\mathrm{unique}(i)),\;
        (\textstyle\sum_{k : i_k = r} v_k)_r\big)

    Duplicates are summed in their order of appearance (the bits of a dense
    scatter-add); leftover slots, and slots whose index lies outside the
    table, become empty slots (index ``num_rows``, zero values). There are
    ``size`` slots (default: as many as ``g`` has), so shapes stay static under
    ``jit``. Where ``g`` touches more than ``size`` rows, ``overflow`` decides:
    ``"raise"`` (a `ValueError` when ``g`` is concrete; under ``jit``, raised at
    trace time asking for another mode), ``"checkify"`` (a
    ``jax.experimental.checkify`` check) or ``"drop"`` (the ``size`` rows that
    appear first in ``g`` are kept, the others dropped).

    Args:
      g: a `RowSparse`.
      size: the number of slots of the result, a positive int; None keeps ``g``'s.
      overflow: ``"raise"``, ``"checkify"`` or ``"drop"``, for more touched rows
        than ``size``.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> g = gx.sparse.coalesce(gx.RowSparse(jnp.array([2, 0, 2]), jnp.ones((3, 1)), 4))
      >>> g.indices, g.values[:, 0]
      (Array([0, 2, 4], dtype=int32), Array([1., 2., 0.], dtype=float32))
      >>> gx.sparse.coalesce(g, 2).indices
      Array([0, 2], dtype=int32)
    """
    owner = "sparse.coalesce"
    if not isinstance(g, RowSparse):
        raise TypeError(f"{owner}: g must be a RowSparse, got {type(g).__name__}")
    slots.check_overflow_mode(owner, overflow)
    if size is None:
        return sparse.coalesce(g)
    size = slots.positive_int(owner, "size", size)
    coalesced, touched = sparse.coalesce_counting(g, size)
    if size < g.indices.shape[0]:
        slots.check_overflow(owner, "g", touched, size, overflow, "size")
    return coalesced


def densify(g: RowSparse) -> jax.Array:
    r"""The dense array a `RowSparse` stands for (the whole table: use it only where meant).

    .. math::
        G_r = \textstyle\sum_{k : i_k = r} v_k, \quad r = 0, \dots, \mathrm{num\_rows} - 1

    Args:
      g: a `RowSparse`.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> gx.sparse.densify(gx.RowSparse(jnp.array([1, 1]), jnp.ones((2, 2)), 3))[1]
      Array([2., 2.], dtype=float32)
    """
    if not isinstance(g, RowSparse):
        raise TypeError(f"sparse.densify: g must be a RowSparse, got {type(g).__name__}")
    return sparse.densify(g)


def row_sparse_rules() -> MappingProxyType:
    r"""How each public transformation treats a `RowSparse` leaf, by constructor name.

    .. math::
        \mathrm{exact}: u_r = 0,\ S_r \text{ unchanged for untouched rows } r; \quad
        \mathrm{lazy}: \text{untouched rows skipped}; \quad \mathrm{routes}

    ``"exact"``: the dense rule's numbers (an untouched row would not move
    anyway); ``"lazy"``: the rule runs on the touched rows only, where the dense
    rule would also move untouched rows (momentum decay, weight decay);
    ``"routes"``: passes leaves on to transformations that decide. Every other
    transformation raises a `TypeError` when it meets a `RowSparse` leaf.

    Example:
      >>> import gradxform as gx
      >>> gx.sparse.row_sparse_rules()["scale_by_adagrad"]
      'exact'
    """
    return MappingProxyType(dict(sorted(sparse.ROW_SPARSE_RULES.items())))
