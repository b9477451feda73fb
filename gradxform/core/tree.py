"""Pytree helpers shared by the transformations.

``None`` is a leaf-less node in JAX pytrees: it appears where a framework
filtered a parameter out (Equinox's ``eqx.filter``). The helpers here keep such
``None`` entries where they are and never put a Python scalar into a state.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from gradxform.core import numerics, sparse
from gradxform.core.paths import key_name


def _as_leaf(x: Any) -> Any:
    return x if isinstance(x, sparse.RowSparse) else jnp.asarray(x)


def leaves(tree: Any) -> list:
    """``jax.tree.leaves`` with each `RowSparse` as one leaf."""
    return jax.tree.leaves(tree, is_leaf=sparse.is_row_sparse)


def entries(tree: Any) -> list:
    """The arrays whose entries make up ``tree``'s: a `RowSparse` gives its coalesced rows."""
    return [sparse.coalesce(x).values if isinstance(x, sparse.RowSparse) else x
            for x in leaves(tree)]


def tree_map_skip_none(fn: Callable, tree: Any, *rest: Any) -> Any:
    """``jax.tree.map`` that leaves ``None`` entries of ``tree`` as ``None``.

    Leaves of ``tree`` reach ``fn`` as arrays (a Python float becomes a 0-d
    array), and a `RowSparse` leaf whole.
    """
    return jax.tree.map(
        lambda x, *xs: None if x is None else fn(_as_leaf(x), *xs),
        tree,
        *rest,
        is_leaf=sparse.is_leaf_or_none,
    )


def tree_full_like(tree: Any, fill_value: Any, dtype: Any = None, *, real: bool = False) -> Any:
    """An array tree like ``tree``, filled with ``fill_value``, each leaf of ``dtype``.

    ``dtype=None`` keeps each leaf's dtype (with ``real=True``, for accumulators
    of squares, `numerics.squares_dtype`: the real counterpart, float32 for
    float16). A real ``dtype`` given for a complex leaf means that precision,
    complex, unless ``real=True``: a float32 moment or accumulator of complex
    gradients must not drop their imaginary parts. A Python scalar leaf becomes
    a strongly typed 0-d array, so that the state's dtypes never change. Each
    leaf keeps its array's sharding: eagerly, and under ``jit`` on a mesh with
    explicit axes. Leaves may be ``jax.ShapeDtypeStruct`` (as for
    ``jax.eval_shape``).

    Integer and bool leaves (an Equinox model's step counters and flags, kept
    by ``eqx.is_array``) are not trained: they get ``None``, no state, like the
    ``None`` gradient JAX gives them.
    """

    def full(x):
        if x is None or not is_trainable(x):
            return None
        leaf_dtype = _state_dtype(x, dtype, real)
        if isinstance(x, jax.ShapeDtypeStruct):
            return jnp.full(x.shape, fill_value, leaf_dtype, device=x.sharding)
        return jnp.full_like(x, fill_value, dtype=leaf_dtype)

    return jax.tree.map(full, tree, is_leaf=sparse.is_leaf_or_none)


def _state_dtype(x: Any, dtype: Any, real: bool) -> np.dtype:
    """The dtype of a state leaf made for the param ``x``: see `tree_full_like`."""
    if dtype is None:
        leaf_dtype = numerics.leaf_dtype(x) if not hasattr(x, "dtype") else np.dtype(x.dtype)
        return numerics.squares_dtype(leaf_dtype) if real else leaf_dtype
    leaf_dtype = np.dtype(dtype)
    if not real and jnp.iscomplexobj(x) and not jnp.issubdtype(leaf_dtype, jnp.complexfloating):
        leaf_dtype = numerics.compute_dtype(leaf_dtype, jnp.complex64)
    return leaf_dtype


def is_trainable(leaf: Any) -> bool:
    """A floating-point or complex leaf (array, ``ShapeDtypeStruct`` or Python float)."""
    dtype = leaf.dtype if hasattr(leaf, "dtype") else numerics.leaf_dtype(leaf)
    return jnp.issubdtype(dtype, jnp.inexact)


def tree_zeros_like(tree: Any, dtype: Any = None) -> Any:
    """Zeros shaped like ``tree``; see `tree_full_like`."""
    return tree_full_like(tree, 0, dtype)


def tree_copy_params(params: Any, dtype: Any = None) -> Any:
    """A copy of each trainable leaf in a buffer of its own (params and state may be donated).

    ``dtype`` as in `tree_full_like` (None keeps each leaf's; a complex leaf
    stays complex). An abstract leaf (``jax.ShapeDtypeStruct``, as a restore
    target gives) becomes zeros: only the state's shapes and dtypes count
    there. ``None``, integer and bool leaves give ``None``.
    """

    def copy(x):
        if x is None or not is_trainable(x):
            return None
        if isinstance(x, jax.ShapeDtypeStruct):
            return tree_full_like(x, 0, dtype)
        return jnp.array(x, dtype=_state_dtype(x, dtype, False), copy=True)

    return jax.tree.map(copy, params, is_leaf=sparse.is_leaf_or_none)


def tree_squared_norm(tree: Any) -> jax.Array:
    """The sum of ``|x|**2`` over every element of every leaf, in at least float32.

    A `RowSparse` leaf counts each row once, after summing its duplicates.
    """
    arrays = entries(tree)
    if not arrays:
        return jnp.zeros([], jnp.float32)
    parts = [
        jnp.sum(numerics.abs_sq(x.astype(numerics.compute_dtype(numerics.leaf_dtype(x)))))
        for x in arrays
    ]
    dtype = numerics.compute_dtype(*(p.dtype for p in parts))
    return sum((p.astype(dtype) for p in parts[1:]), parts[0].astype(dtype))


def tree_plain_norm(tree: Any) -> jax.Array:
    """``sqrt(sum |x|**2)`` over every leaf, in at least float32, with derivative 0 at 0.

    The same numbers as ``optax.tree.norm``; squares that overflow give inf.
    """
    return numerics.norm_sqrt(tree_squared_norm(tree))


_NORM_ORDS = "1, 2 or inf (also written None for 2, 'inf' or 'infinity')"


def _norm_order(ord: Any) -> Any:
    """``ord`` as 1, 2 or ``inf``, for the values ``optax.tree.norm`` accepts; raises otherwise."""
    if ord is None:
        return 2
    if isinstance(ord, str) and ord in ("inf", "infinity"):
        return np.inf
    numbers = (int, float, np.integer, np.floating, str)
    if isinstance(ord, (bool, np.bool_)) or not isinstance(ord, numbers):
        raise TypeError(f"tree_global_norm: ord must be {_NORM_ORDS}, got {ord!r}")
    if isinstance(ord, str) or ord not in (1, 2, np.inf):
        raise ValueError(f"tree_global_norm: ord must be {_NORM_ORDS}, got {ord!r}")
    return np.inf if ord == np.inf else int(ord)


def _tree_abs_reduce(tree: Any, reduce: Callable, combine: Callable) -> jax.Array:
    """``combine`` over the leaves of ``reduce(|x|)``, in at least float32; 0 for no entries."""
    parts = [reduce(jnp.abs(numerics.upcast(jnp.asarray(x)))) for x in entries(tree)]
    if not parts:
        return jnp.zeros([], jnp.float32)
    dtype = numerics.compute_dtype(*(p.dtype for p in parts))
    total = parts[0].astype(dtype)
    for part in parts[1:]:
        total = combine(total, part.astype(dtype))
    return total


def tree_global_norm(tree: Any, ord: int | float | str | None = 2, squared: bool = False) -> jax.Array:
    r"""The global norm of a tree, accumulated in at least float32 (optax's ``tree.norm``).

    Over every entry :math:`x_{ij}` of every leaf, for ``ord`` 2, 1 and inf:

    .. math::
        \lVert T \rVert_2 = \sqrt{\textstyle\sum_i \sum_j |x_{ij}|^2}, \quad
        \lVert T \rVert_1 = \textstyle\sum_i \sum_j |x_{ij}|, \quad
        \lVert T \rVert_\infty = \max_{i,j} |x_{ij}|

    and :math:`\lVert T \rVert^2` with ``squared=True`` (for ord 2, the sum of
    squares itself). Complex entries count by their modulus. For ord 2,
    finite entries whose squares overflow still give their finite norm,
    computed only then, in a ``lax.cond``, as :math:`2^k \lVert 2^{-k} T \rVert`
    with :math:`2^k` the square root of the dtype's range (:math:`2^{64}` in
    float32). A NaN entry gives NaN, an infinite one inf. A tree without
    entries has norm 0 for every ord (``optax.tree.norm`` gives -inf for ord inf).

    Args:
      tree: a pytree of arrays; ``None`` entries are skipped.
      ord: the order, as in ``optax.tree.norm``: 1, 2 or ``inf`` (``None``
        means 2; ``"inf"`` and ``"infinity"`` mean inf).
      squared: return the square of the norm.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> tree = {"a": jnp.array([3.0]), "b": jnp.array([-4.0])}
      >>> gx.tree_global_norm(tree)
      Array(5., dtype=float32)
      >>> gx.tree_global_norm(tree, ord=1), gx.tree_global_norm(tree, ord=jnp.inf, squared=True)
      (Array(7., dtype=float32), Array(16., dtype=float32))
    """
    ord = _norm_order(ord)
    if not isinstance(squared, (bool, np.bool_)):
        raise TypeError(f"tree_global_norm: squared must be a bool, got {squared!r}")
    if ord != 2:
        reduce, combine = (jnp.sum, jnp.add) if ord == 1 else (
            lambda x: jnp.max(x, initial=0), jnp.maximum)
        norm = _tree_abs_reduce(tree, reduce, combine)
        return norm * norm if squared else norm
    if squared:
        return tree_squared_norm(tree)
    plain = tree_plain_norm(tree)
    if not leaves(tree):
        return plain
    # Reached only when the squares overflowed, so the norm is at least 2**64 in
    # float32: entries whose scaled squares underflow (|x| < 2) change it by
    # less than one part in 1e38 each. A fixed power of two, unlike one taken
    # from the largest entry, needs no per-leaf max, which would add a second
    # chain of reductions for XLA:CPU's fusion pass to count (compile time
    # quadratic in the number of leaves).
    scale = 2.0 ** -(jnp.finfo(plain.dtype).maxexp // 2)

    def rescaled():
        scaled = [numerics.upcast(x, plain.dtype) * scale for x in entries(tree)]
        return tree_plain_norm(scaled).astype(plain.dtype) / scale

    return jax.lax.cond(jnp.isposinf(plain), rescaled, lambda: plain)


def tree_count_not_finite(tree: Any) -> jax.Array:
    """The number of NaN and infinite entries over every leaf, as an int32 scalar."""
    counts = [jnp.sum(~jnp.isfinite(x)).astype(jnp.int32) for x in entries(tree)]
    return sum(counts[1:], counts[0]) if counts else jnp.zeros([], jnp.int32)


def tree_all_finite(tree: Any) -> jax.Array:
    """True (a bool scalar) when every entry of every leaf is finite."""
    return tree_count_not_finite(tree) == 0


def _children(node: Any) -> tuple[Any, list]:
    """The one-level treedef of ``node`` and its ``(key, child)`` pairs; a leaf has none."""
    if node is None:
        return None, []
    if isinstance(node, sparse.RowSparse):  # a leaf, standing for its dense array
        return jax.tree.structure(0), []
    entries, _ = jax.tree_util.tree_flatten_with_path(node, is_leaf=lambda x: x is not node)
    treedef = jax.tree.structure(node, is_leaf=lambda x: x is not node)
    if treedef.num_nodes == 1 and treedef.num_leaves == 1:  # a leaf
        return treedef, []
    return treedef, [(path[0], child) for path, child in entries]


def describe_node(node: Any) -> str:
    """What a tree has at one place, for error messages: ``None``, ``a float32[3] array``, ..."""
    if node is None:
        return "None"
    treedef, children = _children(node)
    if not children and treedef.num_leaves == 1:
        dtype, shape = getattr(node, "dtype", None), getattr(node, "shape", None)
        kind = "array" if isinstance(node, (jax.Array, np.ndarray)) else type(node).__name__
        if dtype is not None and shape is not None:
            return f"a {np.dtype(dtype).name}{list(shape)} {kind}"
        return f"a {kind} ({node!r})"
    keys = [key_name(key) for key, _ in children]
    return f"a {type(node).__name__} with keys {keys}"


def first_difference(expected: Any, got: Any, *, none_matches: bool = False) -> tuple | None:
    """The first key path where two trees differ in structure, and what each has there.

    Returns ``(path, expected_here, got_here)`` (``path`` as ``['a'][0]``), or
    None when the structures are equal. With ``none_matches``, a ``None`` on
    either side matches anything (params filtered out of a tree).
    """

    def walk(expected, got, path):
        if none_matches and (expected is None or got is None):
            return None
        expected_def, expected_children = _children(expected)
        got_def, got_children = _children(got)
        same_node = (
            (expected is None) == (got is None)
            and len(expected_children) == len(got_children)
            and (expected_def == got_def if not expected_children
                 else expected_def.node_data() == got_def.node_data())
        )
        if not same_node:
            where = "".join(str(key) for key in path) or "<root>"
            return where, describe_node(expected), describe_node(got)
        for (key, expected_child), (_, got_child) in zip(expected_children, got_children):
            found = walk(expected_child, got_child, path + (key,))
            if found is not None:
                return found
        return None

    return walk(expected, got, ())


def structure_mismatch(
    owner: str, what: str, expected: Any, got: Any, *, none_matches: bool = False
) -> ValueError:
    """The error raised when two trees that must match do not, naming the first difference."""
    difference = first_difference(expected, got, none_matches=none_matches)
    where = "" if difference is None else (
        f" At {difference[0]} the {what} has {difference[1]} but the updates have {difference[2]}."
    )
    return ValueError(
        f"{owner}: the updates' tree structure does not match the {what}'s.{where}\n"
        f"  updates: {jax.tree.structure(got)}\n"
        f"  {what + ':':8} {jax.tree.structure(expected)}"
    )


def check_same_structure(
    owner: str, what: str, expected: Any, updates: Any, *, none_matches: bool = False
) -> None:
    """Raises a `ValueError` naming ``owner`` unless ``updates`` is shaped like ``expected``.

    The tree structures must be equal, and so must the shapes of corresponding
    leaves (a gradient of the wrong shape would otherwise broadcast silently).
    The error names the first key path where they differ and what each has.

    Args:
      owner: the transformation doing the check, named in the error.
      what: what ``expected`` is ("state", "params"), named in the error.
      expected: the tree the updates must match.
      updates: the incoming updates.
      none_matches: a ``None`` on either side matches anything there (a
        parameter filtered out of the params, or an update left out).
    """
    # None is compared as an empty node, so a None update where the state holds
    # an array is a mismatch rather than a silent hole in the new state.
    if none_matches:
        if first_difference(expected, updates, none_matches=True) is not None:
            raise structure_mismatch(owner, what, expected, updates, none_matches=True)
        pairs = _pairs_skip_none(expected, updates)
    else:
        by_leaf = sparse.is_row_sparse
        if jax.tree.structure(expected, is_leaf=by_leaf) != jax.tree.structure(updates,
                                                                               is_leaf=by_leaf):
            raise structure_mismatch(owner, what, expected, updates)
        pairs = zip(jax.tree_util.tree_flatten_with_path(updates, is_leaf=by_leaf)[0],
                    leaves(expected))
    for (path, leaf), reference in pairs:
        if np.shape(leaf) != np.shape(reference):
            where = "".join(str(key) for key in path) or "<root>"
            raise ValueError(
                f"{owner}: the update at {where} has shape "
                f"{np.shape(leaf)}, but the {what} leaf there has shape {np.shape(reference)}"
            )


def _pairs_skip_none(expected: Any, updates: Any) -> list:
    """``((path, update_leaf), expected_leaf)`` where neither side is ``None`` (same structure)."""
    pairs = []
    jax.tree_util.tree_map_with_path(
        lambda path, reference, leaf: None if reference is None or leaf is None
        else pairs.append(((path, leaf), reference)),
        expected, updates, is_leaf=sparse.is_leaf_or_none,
    )
    return pairs


def tree_map_multi(fn: Callable, num_outputs: int, tree: Any, *rest: Any) -> tuple:
    """Maps ``fn`` (returning ``num_outputs`` arrays) over leaves; returns one tree per output.

    Lets a transformation compute everything for a leaf in one function (moments,
    update) rather than in one ``tree.map`` per quantity. ``None`` entries of
    ``tree`` give ``None`` in every output.
    """
    leaves, treedef = jax.tree.flatten(tree, is_leaf=sparse.is_leaf_or_none)
    rest_leaves = [treedef.flatten_up_to(other) for other in rest]
    results = [
        None if leaf is None else fn(_as_leaf(leaf), *others)
        for leaf, *others in zip(leaves, *rest_leaves)
    ]
    return tuple(
        treedef.unflatten([None if r is None else r[i] for r in results])
        for i in range(num_outputs)
    )
