"""Pytree helpers shared by the transformations.

``None`` is a leaf-less node in JAX pytrees: it appears where a framework
filtered a parameter out (Equinox's ``eqx.filter``). The helpers here keep such
``None`` entries where they are and never put a Python scalar into a state.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from gradxform.core import checks, numerics


def _is_none(x: Any) -> bool:
    return x is None


def key_name(key: Any) -> str:
    """The text of one key-path entry: a dict key, an index or an attribute name."""
    for attribute in ("key", "idx", "name"):
        if hasattr(key, attribute):
            return str(getattr(key, attribute))
    return str(key)


def path_string(path: Sequence[Any]) -> str:
    """A key path as ``"dense/kernel"``."""
    return "/".join(key_name(key) for key in path)


def tree_map_skip_none(fn: Callable, tree: Any, *rest: Any) -> Any:
    """``jax.tree.map`` that leaves ``None`` entries of ``tree`` as ``None``.

    Leaves of ``tree`` reach ``fn`` as arrays (a Python float becomes a 0-d array).
    """
    return jax.tree.map(
        lambda x, *xs: None if x is None else fn(jnp.asarray(x), *xs),
        tree,
        *rest,
        is_leaf=_is_none,
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
    explicit axes.
    """

    def full(x):
        if dtype is None:
            leaf_dtype = numerics.leaf_dtype(x)
            if real:
                leaf_dtype = numerics.squares_dtype(leaf_dtype)
        else:
            leaf_dtype = np.dtype(dtype)
            if not real and jnp.iscomplexobj(x) and not jnp.issubdtype(leaf_dtype, jnp.complexfloating):
                leaf_dtype = numerics.compute_dtype(leaf_dtype, jnp.complex64)
        return jnp.full_like(x, fill_value, dtype=leaf_dtype)

    return tree_map_skip_none(full, tree)


def tree_zeros_like(tree: Any, dtype: Any = None) -> Any:
    """Zeros shaped like ``tree``; see `tree_full_like`."""
    return tree_full_like(tree, 0, dtype)


def tree_squared_norm(tree: Any) -> jax.Array:
    """The sum of ``|x|**2`` over every element of every leaf, in at least float32."""
    leaves = jax.tree.leaves(tree)
    if not leaves:
        return jnp.zeros([], jnp.float32)
    parts = [
        jnp.sum(numerics.abs_sq(x.astype(numerics.compute_dtype(numerics.leaf_dtype(x)))))
        for x in leaves
    ]
    dtype = numerics.compute_dtype(*(p.dtype for p in parts))
    return sum((p.astype(dtype) for p in parts[1:]), parts[0].astype(dtype))


def tree_plain_norm(tree: Any) -> jax.Array:
    """``sqrt(sum |x|**2)`` over every leaf, in at least float32, with derivative 0 at 0.

    The same numbers as ``optax.tree.norm``; squares that overflow give inf.
    """
    return numerics.norm_sqrt(tree_squared_norm(tree))


def tree_global_norm(tree: Any) -> jax.Array:
    r"""The global L2 norm of a tree, accumulated in at least float32 (optax's ``tree.norm``).

    .. math::
        \lVert T \rVert = \sqrt{\textstyle\sum_i \sum_j |x_{ij}|^2}

    Finite entries whose squares overflow still give their finite norm,
    computed only then, in a ``lax.cond``, as :math:`2^k \lVert 2^{-k} T \rVert`
    with :math:`2^k` the square root of the dtype's range (:math:`2^{64}` in
    float32); a NaN entry gives NaN, an infinite one inf.

    Args:
      tree: a pytree of arrays; ``None`` entries are skipped.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> gx.tree_global_norm({"a": jnp.array([3.0]), "b": jnp.array([4.0])})
      Array(5., dtype=float32)
    """
    plain = tree_plain_norm(tree)
    if not jax.tree.leaves(tree):
        return plain
    # Reached only when the squares overflowed, so the norm is at least 2**64 in
    # float32: entries whose scaled squares underflow (|x| < 2) change it by
    # less than one part in 1e38 each. A fixed power of two, unlike one taken
    # from the largest entry, needs no per-leaf max, which would add a second
    # chain of reductions for XLA:CPU's fusion pass to count (compile time
    # quadratic in the number of leaves).
    scale = 2.0 ** -(jnp.finfo(plain.dtype).maxexp // 2)

    def rescaled():
        scaled = tree_map_skip_none(lambda x: numerics.upcast(x, plain.dtype) * scale, tree)
        return tree_plain_norm(scaled).astype(plain.dtype) / scale

    return jax.lax.cond(jnp.isposinf(plain), rescaled, lambda: plain)


def tree_count_not_finite(tree: Any) -> jax.Array:
    """The number of NaN and infinite entries over every leaf, as an int32 scalar."""
    counts = [jnp.sum(~jnp.isfinite(x)).astype(jnp.int32) for x in jax.tree.leaves(tree)]
    return sum(counts[1:], counts[0]) if counts else jnp.zeros([], jnp.int32)


def tree_all_finite(tree: Any) -> jax.Array:
    """True (a bool scalar) when every entry of every leaf is finite."""
    return tree_count_not_finite(tree) == 0


def structure_mismatch(owner: str, what: str, expected: Any, got: Any) -> ValueError:
    """The error raised when two trees that must match do not."""
    return ValueError(
        f"{owner}: the updates' tree structure does not match the {what}'s.\n"
        f"  updates: {jax.tree.structure(got, is_leaf=_is_none)}\n"
        f"  {what + ':':8} {jax.tree.structure(expected, is_leaf=_is_none)}"
    )


def check_same_structure(owner: str, what: str, expected: Any, updates: Any) -> None:
    """Raises a `ValueError` naming ``owner`` unless ``updates`` is shaped like ``expected``.

    The tree structures must be equal, and so must the shapes of corresponding
    leaves (a gradient of the wrong shape would otherwise broadcast silently).

    Args:
      owner: the transformation doing the check, named in the error.
      what: what ``expected`` is ("state", "params"), named in the error.
      expected: the tree the updates must match.
      updates: the incoming updates.
    """
    # None is compared as an empty node, so a None update where the state holds
    # an array is a mismatch rather than a silent hole in the new state.
    if jax.tree.structure(expected) != jax.tree.structure(updates):
        raise structure_mismatch(owner, what, expected, updates)
    for index, (leaf, reference) in enumerate(zip(jax.tree.leaves(updates), jax.tree.leaves(expected))):
        if np.shape(leaf) != np.shape(reference):
            raise ValueError(
                f"{owner}: the update at {checks.leaf_path(updates, index)} has shape "
                f"{np.shape(leaf)}, but the {what} leaf there has shape {np.shape(reference)}"
            )


def broadcast_prefix(owner: str, prefix: Any, tree: Any, what: str = "mask") -> Any:
    """Expands ``prefix`` (a tree whose leaves stand for whole subtrees) to ``tree``'s shape.

    Used for masks: ``{"w": True, "b": False}`` against ``{"w": {...}, "b": ...}``,
    and for labels. Raises a `ValueError` naming ``owner`` and ``what`` when
    ``prefix`` is not a prefix of ``tree``.
    """
    try:
        return jax.tree.map(
            lambda value, subtree: jax.tree.map(lambda _: value, subtree),
            prefix,
            tree,
            is_leaf=_is_none,
        )
    except (ValueError, TypeError) as error:
        possessive = f"{what}'" if what.endswith("s") else f"{what}'s"
        raise ValueError(
            f"{owner}: the {possessive} tree structure is not a prefix of the params'.\n"
            f"  {what + ':':7} {jax.tree.structure(prefix)}\n"
            f"  params: {jax.tree.structure(tree, is_leaf=_is_none)}"
        ) from error


def tree_map_multi(fn: Callable, num_outputs: int, tree: Any, *rest: Any) -> tuple:
    """Maps ``fn`` (returning ``num_outputs`` arrays) over leaves; returns one tree per output.

    Lets a transformation compute everything for a leaf in one function (moments,
    update) rather than in one ``tree.map`` per quantity. ``None`` entries of
    ``tree`` give ``None`` in every output.
    """
    leaves, treedef = jax.tree.flatten(tree, is_leaf=_is_none)
    rest_leaves = [treedef.flatten_up_to(other) for other in rest]
    results = [
        None if leaf is None else fn(jnp.asarray(leaf), *others)
        for leaf, *others in zip(leaves, *rest_leaves)
    ]
    return tuple(
        treedef.unflatten([None if r is None else r[i] for r in results])
        for i in range(num_outputs)
    )
