"""Checks on what ``update`` receives, each naming the transformation.

They run when ``update`` is traced (under ``jit``, once per compilation) and
look only at tree structure, shapes and dtypes, never at values:

* gradients are floating-point or complex: an integer or bool gradient raises
  `TypeError` (it would otherwise be truncated, or fail deep inside);
* the state is the NamedTuple ``init`` returned: a state restored from a
  checkpoint without a target arrives as plain dicts and lists, and raises a
  `TypeError` saying how to restore it, instead of an ``AttributeError``.

Tree structures and shapes are compared against the state or the params by
``tree.check_same_structure``, where the transformation knows what to compare.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gradxform.core import sparse

RESTORE_HINT = (
    "A checkpoint restored without a target comes back as plain dicts and lists; restore it "
    "with the target jax.eval_shape(tx.init, params) to get the state's types back."
)


def leaf_path(tree: Any, index: int) -> str:
    """The key path of ``tree``'s leaf number ``index``, as ``['dense']['kernel']``."""
    path = jax.tree_util.tree_flatten_with_path(tree, is_leaf=sparse.is_row_sparse)[0][index][0]
    return "".join(str(key) for key in path) or "<root>"


def _dtype(leaf: Any) -> np.dtype:
    return np.dtype(leaf.dtype if hasattr(leaf, "dtype") else np.result_type(leaf))


def _is_inexact(leaf: Any) -> bool:
    return jnp.issubdtype(_dtype(leaf), jnp.inexact)


def gradient_dtypes(owner: str, updates: Any) -> None:
    """Raises a `TypeError` naming ``owner`` and the leaf unless every leaf is inexact."""
    for index, leaf in enumerate(jax.tree.leaves(updates, is_leaf=sparse.is_row_sparse)):
        if not _is_inexact(leaf):
            raise TypeError(
                f"{owner}: gradients must be floating-point or complex, got {_dtype(leaf).name} "
                f"at {leaf_path(updates, index)}. Leave integer leaves out with masked, partition or "
                "set_to_zero, or pass None for them."
            )


def row_sparse_gradients(owner: str, updates: Any) -> None:
    """Raises a `TypeError` naming ``owner`` if a `RowSparse` leaf reaches it without a rule.

    Constructors declare their rule with `sparse.row_sparse_rule`; a
    transformation without one would read a row-sparse gradient as its two
    arrays, or densify it, so it refuses it instead.
    """
    if owner in sparse.ROW_SPARSE_RULES:
        return
    where = sparse.first_row_sparse(updates)
    if where is not None:
        raise sparse.not_sparse_error(owner, where)


def state_from_init(owner: str, state: Any, made: type | None = None) -> None:
    """Raises a `TypeError` naming ``owner`` unless ``state`` is what ``init`` makes.

    ``state`` must be a tuple, and of the NamedTuple type ``made`` when ``init``
    is known to make one: a state of another optimizer would otherwise fail
    with an ``AttributeError`` on a field it lacks, or be misread.
    """
    if not isinstance(state, tuple):
        raise TypeError(
            f"{owner}: the state must be what init returned (a NamedTuple or tuple), got a "
            f"{type(state).__name__}: {jax.tree.structure(state)}. {RESTORE_HINT}"
        )
    if made is not None and hasattr(made, "_fields") and not isinstance(state, made):
        raise TypeError(
            f"{owner}: the state is a {type(state).__name__}, but {owner}'s init makes a "
            f"{made.__name__}: it comes from another transformation. Pass the state that this "
            "optimizer's init returned (tx.init(params)), or restore a checkpoint with the "
            "target jax.eval_shape(tx.init, params)."
        )
