"""Row-sparse gradients of a loss, without ever building a table's dense gradient.

The loss looks its embedding tables up through a ``lookup`` it is handed.
`value_and_grad` differentiates with respect to the looked-up rows instead of
the tables: it adds a zero "row perturbation" to each lookup's result and
differentiates with respect to those, so the tables' gradients come out as
`RowSparse` rows and the dense ``(num_rows, ...)`` cotangent never exists.

To know the perturbations' shapes, the loss is traced once abstractly
(``jax.make_jaxpr``) before it is differentiated. That first trace also checks
that no table is used other than through ``lookup`` (a tied output layer
would need the dense gradient, which this path would silently drop).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from gradxform.core import paths, sparse, tree, validation
from gradxform.sparse import slots
from gradxform.sparse.ids import check_ids, check_ids_argument, int_ids, valid_and_padding

_OWNER = "sparse.value_and_grad"


def _rows(owner: str, name: str, table: jax.Array, ids: jax.Array, padding_id: int | None,
          invalid_ids: str) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``table[ids]`` with zeros for padding and dropped ids; the ids to record; the kept mask."""
    num_rows = table.shape[0]
    valid, padding = valid_and_padding(ids, num_rows, padding_id)
    if invalid_ids != "drop":
        check_ids(owner, name, ids, num_rows, padding_id, valid, padding, invalid_ids)
    recorded = jnp.where(valid, ids, num_rows).astype(jnp.int32)
    rows = sparse.gather_rows(table, recorded.reshape(-1)).reshape(ids.shape + table.shape[1:])
    return rows, recorded, valid


def lookup(table: jax.Array, ids: Any, *, padding_id: int | None = None,
           invalid_ids: str = "raise") -> jax.Array:
    r"""Rows of an embedding table, with the same rules as `value_and_grad`'s lookup.

    .. math::
        \mathrm{rows}_k = \begin{cases} T_{\mathrm{ids}_k} & 0 \le \mathrm{ids}_k <
        \mathrm{num\_rows},\ \mathrm{ids}_k \ne \mathrm{padding\_id} \\ 0 & \text{otherwise}
        \end{cases}

    The default ``lookup`` of a loss written for `value_and_grad`, so that the
    same loss runs under ``jax.grad`` (dense gradients). An id out of range
    never reads another row (see `value_and_grad` for ``invalid_ids``).

    Args:
      table: an array ``(num_rows, *row_shape)``.
      ids: an integer array of any shape.
      padding_id: an id that means "no feature": it reads zeros and gets no gradient.
      invalid_ids: ``"raise"``, ``"checkify"`` or ``"drop"``, for ids outside the table.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> gx.sparse.lookup(jnp.eye(3), jnp.array([2, -1]), padding_id=-1)
      Array([[0., 0., 1.],
             [0., 0., 0.]], dtype=float32)
    """
    owner = "sparse.lookup"
    check_ids_argument(owner, padding_id, invalid_ids)
    table = jnp.asarray(table)
    if table.ndim < 1:
        raise ValueError(f"{owner}: table must have a row axis, got shape {table.shape}")
    ids = int_ids(owner, ids)
    rows, _, valid = _rows(owner, "the table", table, ids, padding_id, invalid_ids)
    # The gather already read zeros there; the select stays, as in value_and_grad's lookup:
    # without it in both, XLA fuses the two gradients differently and their bits part.
    return jnp.where(valid.reshape(valid.shape + (1,) * (table.ndim - 1)), rows, 0)


def _table_positions(owner: str, params: Any, tables: Sequence[str]) -> list[int]:
    """The flattening index of each named table among ``params``' leaves."""
    entries = [(path, leaf) for path, leaf in paths.leaves_with_paths(params) if leaf is not None]
    found = []
    for name in tables:
        matches = [i for i, (path, _) in enumerate(entries)
                   if path == name or path.endswith("/" + name)]
        if len(matches) != 1:
            listing = ", ".join(repr(path) for path, _ in entries[:20])
            raise ValueError(
                f"{owner}: tables names {name!r}, which matches "
                f"{'no' if not matches else len(matches)} leaves of the params; give a path "
                f"that names exactly one (paths: {listing})"
            )
        leaf = entries[matches[0]][1]
        if np.ndim(leaf) < 1 or not jnp.issubdtype(jnp.result_type(leaf), jnp.inexact):
            raise TypeError(
                f"{owner}: table {name!r} must be a float array with a row axis, got "
                f"{jnp.result_type(leaf)}{list(np.shape(leaf))}"
            )
        found.append(matches[0])
    return found


def _resolver(owner: str, tables: Sequence[str], leaves: list, positions: list[int]):
    """Maps what the loss passes to ``lookup`` (a table or its name) to the table's number."""
    by_identity = {id(leaves[position]): k for k, position in enumerate(positions)}

    def resolve(table: Any) -> int:
        if isinstance(table, str) and table in tables:
            return list(tables).index(table)
        if id(table) in by_identity:
            return by_identity[id(table)]
        raise ValueError(
            f"{owner}: lookup got {table!r:.80} which is not one of the tables {list(tables)}: "
            "pass the table as the loss received it in its params, or its name"
        )

    return resolve


def _used_directly(closed: Any, positions: list[int]) -> list[int]:
    """Which of the tables' inputs the traced loss uses for anything (not through lookup)."""
    jaxpr = closed.jaxpr
    table_vars = {id(jaxpr.invars[position]): k for k, position in enumerate(positions)}
    used = set()
    for eqn in jaxpr.eqns:
        used.update(table_vars[id(v)] for v in eqn.invars if id(v) in table_vars)
    used.update(table_vars[id(v)] for v in jaxpr.outvars if id(v) in table_vars)
    return sorted(used)


def value_and_grad(
    fun: Callable[..., Any],
    tables: str | Sequence[str],
    *,
    has_aux: bool = False,
    padding_id: int | None = None,
    invalid_ids: str = "raise",
    max_rows: int | Mapping[str, int] | None = None,
    overflow: str = "raise",
) -> Callable[..., tuple[Any, Any]]:
    r"""``jax.value_and_grad`` whose gradients for embedding tables are `RowSparse`.

    ``fun(params, *args, lookup=lookup, **kwargs)`` looks each table up with
    ``lookup(table, ids)`` (the table as it got it in ``params``, or its name),
    which returns ``table[ids]`` with zeros for padding. For a table :math:`T`
    looked up at ids :math:`i_1, \dots, i_n` (all lookups of one call, in call
    order) giving rows :math:`r_k = T_{i_k}`:

    .. math::
        \frac{\partial L}{\partial T} = \mathrm{RowSparse}\Big(i,\;
        \Big(\frac{\partial L}{\partial r_k}\Big)_k\Big), \qquad
        \Big(\frac{\partial L}{\partial T}\Big)_j = \sum_{k \,:\, i_k = j}
        \frac{\partial L}{\partial r_k}

    coalesced: one slot per touched row, duplicates summed in order of
    appearance (the dense gradient's sums, bit for bit, when each table is
    looked up once per call). The number of slots is the number of ids, or
    ``max_rows`` where that is smaller, so shapes are static under ``jit``.
    Every other float leaf gets its dense gradient; integer and bool leaves
    (an Equinox module's counters) get None.

    Padding ids read zeros and get no gradient. Other ids outside
    ``[0, num_rows)`` are data, and never read or write another row (no
    wrap-around, no clamping). What they do is chosen by ``invalid_ids``:

    * ``"raise"``: a `ValueError` naming the table, the id and its position,
      when the ids are concrete. Under ``jit`` the ids are traced and cannot
      raise, so this raises at trace time asking for one of the two others;
    * ``"checkify"``: a ``jax.experimental.checkify`` check; wrap the step in
      ``checkify.checkify`` and ``err.throw()`` the error it returns;
    * ``"drop"``: they read zeros and get no gradient; `count_invalid_ids`
      counts them for logging.

    Skewed ids touch far fewer rows than there are ids, and each slot costs
    time in every transformation (at 65,536 Zipf ids on 1M rows, about 10,000
    rows: 13,184 slots made an Adagrad step 4.6x faster than 65,536).
    ``max_rows`` bounds them. How many rows a batch touches is data, so
    ``overflow`` chooses what happens when a table's lookups touch more:

    * ``"raise"``: a `ValueError` naming the table and the count, when the ids
      are concrete; under ``jit``, raises at trace time asking for another;
    * ``"checkify"``: a ``checkify`` check, as above;
    * ``"drop"``: the ``max_rows`` rows whose first lookup comes first keep
      their slots; the others get no gradient this step (like a capacity
      limit). `count_touched_rows` counts the rows for logging.

    A table used other than through ``lookup`` (a tied output layer) raises a
    `TypeError`: its gradient would be dense. Train it densely by leaving it
    out of ``tables``.

    Args:
      fun: the loss, ``fun(params, *args, lookup=..., **kwargs)``; returns a
        real scalar, or ``(scalar, aux)`` with ``has_aux``.
      tables: the key paths of the tables in ``params`` (``"embed"``,
        ``"params/Embed_0/embedding"``); a path's last parts are enough when
        they name one leaf. Flax boxes are left out of paths.
      has_aux: as in ``jax.value_and_grad``.
      padding_id: the id that means "no feature" (``-1``, or a row such as 0).
      invalid_ids: ``"raise"``, ``"checkify"`` or ``"drop"``, for ids outside the table.
      max_rows: the most rows a gradient holds (a positive int for every table,
        or a mapping from paths as in ``tables`` to ints); None: one slot per id.
      overflow: ``"raise"``, ``"checkify"`` or ``"drop"``, for lookups that touch
        more than ``max_rows`` rows of a table.

    Returns:
      ``grad_fn(params, *args, **kwargs) -> (value, grads)``, with ``value`` the
      loss (or ``(loss, aux)``) and ``grads`` shaped like ``params``.

    Example:
      >>> import jax, jax.numpy as jnp, gradxform as gx
      >>> params = {"embed": jnp.ones((1000, 4)), "w": jnp.ones(4)}
      >>> def loss(params, ids, lookup=gx.sparse.lookup):
      ...     return jnp.sum(lookup(params["embed"], ids) @ params["w"])
      >>> value, grads = gx.sparse.value_and_grad(loss, "embed")(params, jnp.array([3, 3, 7]))
      >>> grads["embed"].indices, grads["embed"].values[:2, 0]
      (Array([   3,    7, 1000], dtype=int32), Array([2., 1.], dtype=float32))
    """
    owner = _OWNER
    if not callable(fun):
        raise TypeError(f"{owner}: fun must be callable, got {fun!r}")
    tables = [tables] if isinstance(tables, str) else tables
    if not isinstance(tables, (list, tuple)) or not tables or not all(
            isinstance(name, str) for name in tables) or len(set(tables)) != len(tables):
        raise TypeError(f"{owner}: tables must be a path or a list of distinct paths, got {tables!r}")
    tables = tuple(tables)
    validation.boolean(owner, "has_aux", has_aux)
    check_ids_argument(owner, padding_id, invalid_ids)
    bounds = slots.bounds(owner, max_rows, tables)
    slots.check_overflow_mode(owner, overflow)

    def grad_fn(params, *args, **kwargs):
        leaves, treedef = jax.tree.flatten(params)
        positions = _table_positions(owner, params, tables)
        shapes = [jnp.shape(leaves[p]) for p in positions]
        dtypes = [jnp.result_type(leaves[p]) for p in positions]
        calls = _probe(fun, args, kwargs, leaves, treedef, tables, positions, shapes, dtypes)
        deltas = [jnp.zeros(ids_shape + shapes[k][1:], dtypes[k]) for k, ids_shape in calls]
        # Integer and bool leaves (an Equinox model's counters) get None, as elsewhere.
        trained = [i for i, leaf in enumerate(leaves)
                   if i not in positions and tree.is_trainable(leaf)]
        dense = [leaves[i] for i in trained]

        def inner(dense, deltas):
            full = list(leaves)
            for i, leaf in zip(trained, dense):
                full[i] = leaf
            resolve = _resolver(owner, tables, full, positions)
            recorded = []

            def lookup_rows(table, ids):
                k = resolve(table)
                ids = int_ids(owner, ids)
                if len(recorded) >= len(calls) or calls[len(recorded)] != (k, ids.shape):
                    raise ValueError(f"{owner}: fun looked its tables up differently in two "
                                     "traces; lookups must not depend on values")
                table = full[positions[k]]
                rows, ids_kept, valid = _rows(owner, repr(tables[k]), table, ids, padding_id,
                                              invalid_ids)
                rows = rows + deltas[len(recorded)]
                recorded.append(ids_kept)
                return jnp.where(valid.reshape(valid.shape + (1,) * (table.ndim - 1)), rows, 0)

            out = fun(treedef.unflatten(full), *args, lookup=lookup_rows, **kwargs)
            loss, aux = out if has_aux else (out, None)
            return loss, (aux, recorded)

        (loss, (aux, recorded)), (dense_grads, row_grads) = jax.value_and_grad(
            inner, argnums=(0, 1), has_aux=True)(dense, deltas)
        grads = [None] * len(leaves)
        for i, grad in zip(trained, dense_grads):
            grads[i] = grad
        for k, position in enumerate(positions):
            mine = [c for c, (table, _) in enumerate(calls) if table == k]
            indices = jnp.concatenate([recorded[c].reshape(-1) for c in mine] or
                                      [jnp.zeros((0,), jnp.int32)])
            values = jnp.concatenate([row_grads[c].reshape((-1,) + shapes[k][1:]) for c in mine]
                                     or [jnp.zeros((0,) + shapes[k][1:], dtypes[k])])
            # A bound at or above the number of ids cannot overflow: one slot per id.
            size = bounds[k] if bounds[k] is not None and bounds[k] < indices.shape[0] else None
            grads[position], touched = sparse.coalesce_counting(
                sparse.RowSparse._unchecked(indices, values, shapes[k][0], False), size)
            if size is not None:
                slots.check_overflow(owner, f"the table {tables[k]!r}", touched,
                                     size, overflow, "max_rows")
        value = (loss, aux) if has_aux else loss
        return value, treedef.unflatten(grads)

    return grad_fn


def _probe(fun, args, kwargs, leaves, treedef, tables, positions, shapes, dtypes) -> list[tuple]:
    """Traces ``fun`` abstractly: the ``(table, ids shape)`` of each lookup, in call order.

    Raises a `TypeError` if ``fun`` uses a table other than through ``lookup``.
    """
    calls: list[tuple] = []

    def probe(traced):
        calls.clear()
        resolve = _resolver(_OWNER, tables, traced, positions)

        def lookup_shape(table, ids):
            k = resolve(table)
            ids = int_ids(_OWNER, ids)
            calls.append((k, ids.shape))
            return jnp.zeros(ids.shape + shapes[k][1:], dtypes[k])

        return fun(treedef.unflatten(traced), *args, lookup=lookup_shape, **kwargs)

    closed = jax.make_jaxpr(probe)(list(leaves))
    used = _used_directly(closed, positions)
    if used:
        raise TypeError(
            f"{_OWNER}: fun uses the table {tables[used[0]]!r} other than through lookup (for "
            "example as a tied output layer), so its gradient would be dense and this path "
            "would drop it. Leave it out of tables to train it with dense gradients."
        )
    return calls
