"""Row-sparse leaves: the rows of a table that a step touched, every other row zero.

A `RowSparse` stands for the dense array ``(num_rows, *row_shape)`` that is zero
except at ``indices``, where it holds ``values``; an index that repeats stands
for the sum of its rows, as the gradient of a lookup sums them. It is a pytree
node (``indices`` and ``values`` are its children, ``num_rows`` and ``unique``
its static data), so it crosses ``jit`` boundaries. gradxform's tree helpers
treat it as one leaf.

Rows are read and written here with JAX's gather and scatter in their
out-of-bounds modes: an index outside ``[0, num_rows)`` reads zeros and writes
nothing. It never wraps around (``-1`` is not the last row) and is never
clamped onto a real row. `coalesce` gives each touched row one slot.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from gradxform.core import numerics

_TRACER = jax.core.Tracer


def _is_concrete(x: Any) -> bool:
    return not isinstance(x, _TRACER)


class RowSparse:
    r"""A gradient (or update) for a table that is zero outside some rows.

    It stands for the dense array :math:`G` of shape ``(num_rows, *row_shape)``
    with

    .. math::
        G_r = \textstyle\sum_{k \,:\, \mathrm{indices}_k = r} \mathrm{values}_k

    so a repeated index sums its rows, as the gradient of a lookup does. The
    index ``num_rows`` marks an empty slot (padding): it reads zeros and writes
    nothing. Under ``jit`` any index outside ``[0, num_rows)`` behaves as an
    empty slot; outside ``jit`` one raises here.

    Args:
      indices: integer array of shape ``(n,)``: the rows.
      values: float or complex array of shape ``(n, *row_shape)``.
      num_rows: the table's number of rows (a positive int).
      unique: a promise that no row appears twice among ``indices`` (empty
        slots aside), as after `coalesce`; transforms then skip coalescing.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> g = gx.RowSparse(jnp.array([2, 0, 2]), jnp.ones((3, 2)), num_rows=4)
      >>> g.todense()[2]
      Array([2., 2.], dtype=float32)
    """

    __slots__ = ("indices", "values", "num_rows", "unique")

    def __init__(self, indices: Any, values: Any, num_rows: int, *, unique: bool = False):
        _check_num_rows("RowSparse", num_rows)
        if not isinstance(unique, (bool, np.bool_)):
            raise TypeError(f"RowSparse: unique must be a bool, got {unique!r}")
        indices = indices if isinstance(indices, (jax.Array, _TRACER)) else jnp.asarray(indices)
        values = values if isinstance(values, (jax.Array, _TRACER)) else jnp.asarray(values)
        if not jnp.issubdtype(indices.dtype, jnp.integer) or indices.ndim != 1:
            raise TypeError(
                f"RowSparse: indices must be a 1-D integer array, got {indices.dtype}"
                f"{list(indices.shape)}"
            )
        if not jnp.issubdtype(values.dtype, jnp.inexact):
            raise TypeError(
                f"RowSparse: values must be floating-point or complex, got {values.dtype}"
            )
        if values.ndim < 1 or values.shape[0] != indices.shape[0]:
            raise ValueError(
                f"RowSparse: values must have one row per index, shape ({indices.shape[0]}, ...), "
                f"got shape {tuple(values.shape)} for {indices.shape[0]} indices"
            )
        if _is_concrete(indices):
            _check_indices(np.asarray(indices), num_rows, unique)
        self.indices, self.values = indices, values
        self.num_rows, self.unique = int(num_rows), bool(unique)

    @classmethod
    def _unchecked(cls, indices: Any, values: Any, num_rows: int, unique: bool) -> RowSparse:
        """Builds one without checks (pytree unflattening passes arbitrary placeholders)."""
        made = object.__new__(cls)
        made.indices, made.values, made.num_rows, made.unique = indices, values, num_rows, unique
        return made

    @property
    def row_shape(self) -> tuple:
        return tuple(self.values.shape[1:])

    @property
    def shape(self) -> tuple:
        """The dense shape it stands for: ``(num_rows, *row_shape)``."""
        return (self.num_rows, *self.row_shape)

    @property
    def dtype(self) -> np.dtype:
        return self.values.dtype

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def todense(self) -> jax.Array:
        """The dense array it stands for (the whole table: use only where that is meant)."""
        return densify(self)

    def __radd__(self, other: Any) -> jax.Array:
        """``table + g``: ``g``'s rows added into the table (what ``optax.apply_updates`` does)."""
        return add_rows(jnp.asarray(other), self)

    __add__ = __radd__

    def __repr__(self) -> str:
        return (
            f"RowSparse(indices={self.indices!r}, values={self.values!r}, "
            f"num_rows={self.num_rows}, unique={self.unique})"
        )


def _flatten_with_keys(g: RowSparse):
    children = ((jax.tree_util.GetAttrKey("indices"), g.indices),
                (jax.tree_util.GetAttrKey("values"), g.values))
    return children, (g.num_rows, g.unique)


jax.tree_util.register_pytree_with_keys(
    RowSparse,
    _flatten_with_keys,
    lambda aux, children: RowSparse._unchecked(*children, *aux),
    lambda g: ((g.indices, g.values), (g.num_rows, g.unique)),
)


def _check_num_rows(owner: str, num_rows: Any) -> None:
    if isinstance(num_rows, (bool, np.bool_)) or not isinstance(num_rows, (int, np.integer)) \
            or num_rows < 1:
        raise ValueError(f"{owner}: num_rows must be a positive int, got {num_rows!r}")


def _check_indices(indices: np.ndarray, num_rows: int, unique: bool) -> None:
    """Raises a `ValueError` for a concrete index outside ``[0, num_rows]`` (``num_rows``: an
    empty slot), or, with ``unique``, for a row that appears twice."""
    bad = np.flatnonzero((indices < 0) | (indices > num_rows))
    if bad.size:
        raise ValueError(
            f"RowSparse: indices must lie in [0, {num_rows}) for a table of {num_rows} rows"
            f" ({num_rows} marks an empty slot), got {indices[bad[0]]} at position {bad[0]}"
            + f" ({bad.size} out of range)" * (bad.size > 1)
        )
    if unique:
        rows, counts = np.unique(indices[indices < num_rows], return_counts=True)
        if (counts > 1).any():
            raise ValueError(
                f"RowSparse: unique=True, but indices repeat the rows "
                f"{rows[counts > 1][:5].tolist()}"
            )


def is_row_sparse(x: Any) -> bool:
    return isinstance(x, RowSparse)


def is_leaf_or_none(x: Any) -> bool:
    """``is_leaf`` for tree maps that keep ``None`` entries and take a `RowSparse` whole."""
    return x is None or isinstance(x, RowSparse)


def valid_rows(g: RowSparse) -> jax.Array:
    """A bool per slot: its index is a row of the table (not an empty slot)."""
    return (g.indices >= 0) & (g.indices < g.num_rows)


def _per_row(flags: jax.Array, values: jax.Array) -> jax.Array:
    """One flag per slot, shaped to broadcast against the slots' values."""
    return flags.reshape((-1,) + (1,) * (values.ndim - 1))


def coalesce(g: RowSparse, size: int | None = None) -> RowSparse:
    """``g`` with each touched row in one slot: indices sorted, duplicates summed.

    Duplicates are summed in their order of appearance, as the scatter-add that
    differentiates a lookup sums them, so a row gets the dense gradient's bits.
    Slots left over, and those of indices outside the table, become empty
    slots (index ``num_rows``, zero values). There are ``size`` slots (default:
    as many as ``g`` has), so shapes stay static under ``jit``; where ``g``
    touches more rows than that, see `coalesce_counting`. A ``unique`` ``g``
    keeps its slots; only the values of its empty slots are zeroed.
    """
    return coalesce_counting(g, size)[0]


def coalesce_counting(g: RowSparse, size: int | None = None) -> tuple[RowSparse, jax.Array]:
    """`coalesce`, and the number of distinct rows ``g`` touches (an int32 scalar).

    Where that number exceeds ``size``, the ``size`` rows that appear first in
    ``g`` keep their slots and the others are dropped: the caller compares the
    count with ``size`` to raise, check or log.
    """
    slots = g.indices.shape[0]
    size = slots if size is None else size
    valid = valid_rows(g)
    if g.unique and size == slots:
        return (with_values(g, jnp.where(_per_row(valid, g.values), g.values, 0)),
                jnp.sum(valid).astype(jnp.int32))
    keys = jnp.where(valid, g.indices, g.num_rows).astype(g.indices.dtype)
    # One sort of the keys alone: jnp.unique's inverse, or a sort that carries each
    # key's position, sorts pairs, which costs about 5x as much at 65,536 ids.
    ordered = lax.sort(keys)
    starts = group_starts(ordered, g.num_rows)
    width = max(size, slots)
    group = jnp.cumsum(starts.astype(jnp.int32)) - 1
    rows = jnp.full((width,), g.num_rows, keys.dtype).at[jnp.where(starts, group, width)].set(
        ordered, mode="drop", unique_indices=True)
    slot_of = jnp.searchsorted(rows, keys, side="left", method="scan").astype(jnp.int32)
    if size < slots:
        # Rows may not fit: keep those that appear first in g (as a capacity keeps the
        # first comers), and give the others' keys no slot.
        position = lax.iota(jnp.int32, slots)
        first = jnp.full((slots,), slots, jnp.int32).at[jnp.where(valid, slot_of, slots)].min(
            position, mode="drop")
        seen_first = valid & (first.at[slot_of].get(mode="fill", fill_value=-1) == position)
        arrival = jnp.cumsum(seen_first.astype(jnp.int32)) - 1
        kept = arrival.at[first].get(mode="fill", fill_value=size) < size
        slot = jnp.cumsum(kept.astype(jnp.int32)) - 1
        rows = jnp.full((size,), g.num_rows, keys.dtype).at[jnp.where(kept, slot, size)].set(
            rows, mode="drop", unique_indices=True)
        valid = valid & kept.at[slot_of].get(mode="fill", fill_value=False)
        slot_of = slot.at[slot_of].get(mode="fill", fill_value=size)
    summed = jax.ops.segment_sum(jnp.where(_per_row(valid, g.values), g.values, 0),
                                 jnp.where(valid, slot_of, size), num_segments=size)
    return (RowSparse._unchecked(rows.astype(g.indices.dtype), summed.astype(g.values.dtype),
                                 g.num_rows, True),
            jnp.sum(starts).astype(jnp.int32))


def group_starts(ordered: jax.Array, num_rows: int) -> jax.Array:
    """Where a new row begins among the sorted keys (empty slots, sorted last, excluded)."""
    change = jnp.concatenate([jnp.ones((1,), bool), ordered[1:] != ordered[:-1]])
    return change & (ordered < num_rows)


def densify(g: RowSparse) -> jax.Array:
    """The dense array ``g`` stands for (duplicates summed, empty slots dropped)."""
    zeros = jnp.zeros(g.shape, g.dtype)
    return zeros.at[g.indices].add(g.values, mode="drop", wrap_negative_indices=False)


def gather_rows(table: jax.Array, indices: jax.Array, *, unique: bool = False) -> jax.Array:
    """``table[indices]``, with zeros for an index outside the table (no wrap, no clamp)."""
    return table.at[indices].get(
        mode="fill", fill_value=0, wrap_negative_indices=False,
        indices_are_sorted=unique, unique_indices=unique,
    )


def scatter_rows(table: jax.Array, indices: jax.Array, rows: jax.Array, *,
                 unique: bool = False) -> jax.Array:
    """``table`` with ``rows`` written at ``indices``; an index outside the table writes nothing."""
    return table.at[indices].set(
        rows.astype(table.dtype), mode="drop", wrap_negative_indices=False,
        indices_are_sorted=unique, unique_indices=unique,
    )


def scatter_add_rows(table: jax.Array, indices: jax.Array, rows: jax.Array, *,
                     unique: bool = False) -> jax.Array:
    """``table`` with ``rows`` added at ``indices``; an index outside the table adds nothing."""
    return table.at[indices].add(
        rows.astype(table.dtype), mode="drop", wrap_negative_indices=False,
        indices_are_sorted=unique, unique_indices=unique,
    )


def add_rows(table: jax.Array, g: RowSparse) -> jax.Array:
    """``table`` plus the dense array ``g`` stands for, touching only ``g``'s rows.

    The sum is computed in the wider dtype and stored in the table's, row by row
    as a dense add would. Under ``jit`` with the table donated, XLA writes the
    rows in place.
    """
    if tuple(table.shape) != g.shape:
        raise ValueError(
            f"RowSparse: cannot add rows of a table of shape {g.shape} to an array of shape "
            f"{tuple(table.shape)}"
        )
    g = coalesce(g)
    if g.dtype == table.dtype:
        return scatter_add_rows(table, g.indices, g.values, unique=True)
    rows = gather_rows(table, g.indices, unique=True)
    dtype = numerics.compute_dtype(table.dtype, g.dtype)
    summed = (rows.astype(dtype) + g.values.astype(dtype)).astype(table.dtype)
    return scatter_rows(table, g.indices, summed, unique=True)


def with_values(g: RowSparse, values: jax.Array) -> RowSparse:
    """``g``'s slots holding ``values`` instead."""
    return RowSparse._unchecked(g.indices, values, g.num_rows, g.unique)


def map_values(fn: Callable[[jax.Array], jax.Array], x: Any) -> Any:
    """``fn`` of a dense leaf, or of a `RowSparse` leaf's coalesced rows.

    Coalescing first makes ``fn`` see each touched row of the dense leaf once,
    so any rule with ``fn(0) = 0`` per row (a scale, a clip, a per-leaf norm
    over the rows) gives the dense leaf's numbers on the touched rows.
    """
    if isinstance(x, RowSparse):
        x = coalesce(x)
        return with_values(x, fn(x.values))
    return fn(x)


def rowwise(leaf: Callable, g: RowSparse, *tables: jax.Array, num_states: int) -> tuple:
    """Runs the per-coordinate rule ``leaf`` on the rows ``g`` touches.

    ``leaf(values, *rows)`` gets the coalesced gradient rows and the same rows of
    each of ``tables`` (state leaves first, then read-only ones such as the
    params) and returns ``(update_rows, *new_state_rows)`` for the first
    ``num_states`` tables. Returns the `RowSparse` update and each state table
    with its touched rows written back; other rows are not read or written.
    """
    g = coalesce(g)
    rows = [gather_rows(table, g.indices, unique=True) for table in tables]
    update, *new_rows = leaf(g.values, *rows)
    written = [
        scatter_rows(table, g.indices, new, unique=True)
        for table, new in zip(tables[:num_states], new_rows)
    ]
    return (with_values(g, update), *written)


# Constructor name -> how it treats a RowSparse leaf: "exact" (the dense rule's
# numbers: untouched rows would not move), "lazy" (the rule runs on the touched
# rows only, where the dense rule would move every row) or "routes" (passes
# leaves on to transformations that decide for themselves).
ROW_SPARSE_RULES: dict[str, str] = {}
_KINDS = ("exact", "lazy", "routes")


def row_sparse_rule(kind: str) -> Callable:
    """Declares how a public constructor's transformation treats `RowSparse` leaves.

    Stacked above ``@public_constructor``. A transformation whose constructor
    declares nothing raises a `TypeError` when it meets a `RowSparse` leaf.
    """
    if kind not in _KINDS:
        raise ValueError(f"row_sparse_rule: kind must be one of {_KINDS}, got {kind!r}")

    def register(constructor: Callable) -> Callable:
        ROW_SPARSE_RULES[constructor.__name__] = kind
        return constructor

    return register


def first_row_sparse(tree: Any) -> str | None:
    """The key path of the first `RowSparse` leaf of ``tree``, or None if it has none."""
    # Every checked update asks this while tracing: a plain scan first, paths only when needed
    # (flattening with paths costs about 10x as much on a tree of thousands of leaves).
    leaves = jax.tree.leaves(tree, is_leaf=is_row_sparse)
    if not any(isinstance(leaf, RowSparse) for leaf in leaves):
        return None
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_row_sparse)[0]:
        if isinstance(leaf, RowSparse):
            return "".join(str(key) for key in path) or "<root>"
    return None


def not_sparse_error(owner: str, where: str, why: str = "") -> TypeError:
    """The error raised where a `RowSparse` leaf reaches a rule that has no sparse form."""
    sparse_ones = sorted(name for name, kind in ROW_SPARSE_RULES.items() if kind != "routes")
    return TypeError(
        f"{owner}: cannot take the row-sparse gradient at {where}"
        + (f": {why}" if why else ": its rule has no row-sparse form (it would move every row)")
        + ". Densify that leaf first (RowSparse.todense(), at the cost of the whole table each "
        "step) or use a transformation with a row-sparse rule: " + ", ".join(sparse_ones)
    )


def on_touched_rows(leaf: Callable, num_states: int) -> Callable:
    """``leaf(g, *tables)`` for dense leaves, run by `rowwise` for a `RowSparse` ``g``."""

    def dispatch(g, *tables):
        if isinstance(g, RowSparse):
            return rowwise(leaf, g, *tables, num_states=num_states)
        return leaf(g, *tables)

    return dispatch
