"""Ids looked up in a table: checking them, and counting the invalid and the distinct.

An id is valid when it names a row, ``0 <= id < num_rows``; the padding id
means "no feature". What an invalid id does is the caller's ``invalid_ids``
mode: ``"raise"`` (eagerly; under ``jit`` this asks for another mode),
``"checkify"`` or ``"drop"``.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import checkify

from gradxform.core import sparse

MODES = ("raise", "checkify", "drop")


def check_ids_argument(owner: str, padding_id: Any, invalid_ids: Any = "raise") -> None:
    if padding_id is not None and (isinstance(padding_id, (bool, np.bool_))
                                   or not isinstance(padding_id, (int, np.integer))):
        raise TypeError(f"{owner}: padding_id must be an int or None, got {padding_id!r}")
    if invalid_ids not in MODES:
        raise ValueError(f"{owner}: invalid_ids must be one of {MODES}, got {invalid_ids!r}")


def int_ids(owner: str, ids: Any) -> jax.Array:
    ids = ids if isinstance(ids, (jax.Array, jax.core.Tracer)) else jnp.asarray(ids)
    if not jnp.issubdtype(ids.dtype, jnp.integer):
        raise TypeError(f"{owner}: ids must be an integer array, got {ids.dtype}{list(ids.shape)}")
    return ids


def valid_and_padding(ids: jax.Array, num_rows: int, padding_id: int | None):
    padding = jnp.zeros(ids.shape, bool) if padding_id is None else ids == padding_id
    valid = (ids >= 0) & (ids < num_rows) & ~padding
    return valid, padding


def count_invalid_ids(ids: Any, num_rows: int, padding_id: int | None = None) -> jax.Array:
    r"""The number of ids that are neither a row of the table nor the padding id.

    .. math::
        n = \#\{k : \mathrm{ids}_k \notin [0, \mathrm{num\_rows}) \text{ and }
        \mathrm{ids}_k \ne \mathrm{padding\_id}\}

    With ``invalid_ids="drop"`` these ids read zero rows and get no gradient;
    log this count to see how many a batch had.

    Args:
      ids: an integer array of any shape.
      num_rows: the table's number of rows.
      padding_id: the id that marks "no feature", or None.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> gx.sparse.count_invalid_ids(jnp.array([0, 3, -1, 7]), num_rows=4, padding_id=-1)
      Array(1, dtype=int32)
    """
    owner = "sparse.count_invalid_ids"
    sparse._check_num_rows(owner, num_rows)
    check_ids_argument(owner, padding_id, "raise")
    valid, padding = valid_and_padding(int_ids(owner, ids), num_rows, padding_id)
    return jnp.sum(~(valid | padding)).astype(jnp.int32)


def check_ids(owner: str, table: str, ids: jax.Array, num_rows: int, padding_id: int | None,
               valid: jax.Array, padding: jax.Array, mode: str) -> None:
    """Raises for an id outside the table (``"raise"``), or adds a ``checkify`` check."""
    allowed = f"[0, {num_rows})" + ("" if padding_id is None else f" or padding_id={padding_id}")
    if mode == "checkify":
        checkify.check(jnp.all(valid | padding), f"{owner}: an id looked up in {table} lies "
                       f"outside {allowed}")
        return
    # Under checkify (without jit) the ids stay concrete but what is computed from them is traced.
    if isinstance(ids, jax.core.Tracer) or isinstance(valid, jax.core.Tracer):
        raise ValueError(
            f"{owner}: the ids looked up in {table} are traced (inside jit), so an id outside "
            "the table cannot raise a Python error. Choose what such ids do: "
            "invalid_ids='checkify' (wrap the step in jax.experimental.checkify.checkify and "
            "check the error it returns) or invalid_ids='drop' (they read zeros and get no "
            "gradient; count them with gx.sparse.count_invalid_ids)."
        )
    bad = np.flatnonzero(~np.asarray(valid | padding))
    if bad.size:
        position = np.unravel_index(bad[0], ids.shape)
        raise ValueError(
            f"{owner}: the ids looked up in {table} must lie in {allowed}, got "
            f"{np.asarray(ids).flat[bad[0]]} at position {tuple(int(i) for i in position)} "
            f"({bad.size} invalid). Pass invalid_ids='drop' to read zeros for them and drop "
            "their gradient."
        )


def count_touched_rows(ids: Any, num_rows: int, padding_id: int | None = None) -> jax.Array:
    r"""The number of distinct rows ``ids`` look up (padding and ids outside the table aside).

    .. math::
        n = \big|\{\mathrm{ids}_k\} \cap [0, \mathrm{num\_rows})
        \setminus \{\mathrm{padding\_id}\}\big|

    A gradient from `value_and_grad` has a slot for each of these rows; log
    this count over batches to choose ``max_rows``, or to see how often it is
    exceeded with ``overflow="drop"``.

    Args:
      ids: an integer array of any shape (every id of one table in a step).
      num_rows: the table's number of rows.
      padding_id: the id that marks "no feature", or None.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> gx.sparse.count_touched_rows(jnp.array([5, 2, 5, -1, 9]), num_rows=8, padding_id=-1)
      Array(2, dtype=int32)
    """
    owner = "sparse.count_touched_rows"
    sparse._check_num_rows(owner, num_rows)
    check_ids_argument(owner, padding_id)
    flat = int_ids(owner, ids).reshape(-1)
    valid, _ = valid_and_padding(flat, num_rows, padding_id)
    keys = jnp.where(valid, flat, num_rows)
    return jnp.sum(sparse.group_starts(jax.lax.sort(keys), num_rows)).astype(jnp.int32)
