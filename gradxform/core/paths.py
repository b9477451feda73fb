"""Key paths of parameter trees as name patterns see them: ``"dense/kernel"``.

A key path joins the dict keys, sequence indices and attribute names from the
root to a leaf with ``/``. Flax wraps parameters in boxes that are pytree nodes
of their own: ``nnx.Variable`` (``nnx.Param``, ...) and linen's
``nn.Partitioned`` / ``nn.LogicallyPartitioned``. A box adds a ``value`` entry
to the key path of the array it holds, and whether a tree is boxed depends on
who calls: ``nnx.Optimizer`` runs ``init`` on ``nnx.Param`` variables and
``update`` on bare arrays, and a linen ``TrainState`` built from boxed params
keeps its boxes until someone unboxes the state. The paths here leave boxes
out, so a pattern selects the same leaves whether or not the tree is boxed.

Boxes are recognised by the names and modules of their classes, so Flax is
never imported.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax

# (module prefix, class name) of the Flax classes whose instances wrap one parameter.
_BOX_CLASSES = (
    ("flax.nnx", "Variable"),  # nnx.Param, nnx.BatchStat, nnx's optimizer variables, ...
    ("flax.nnx", "VariableState"),  # older Flax releases' nnx.State entries
    ("flax.core", "AxisMetadata"),  # nn.Partitioned, nn.LogicallyPartitioned
)


def key_name(key: Any) -> str:
    """The text of one key-path entry: a dict key, an index or an attribute name."""
    for attribute in ("key", "idx", "name"):
        if hasattr(key, attribute):
            return str(getattr(key, attribute))
    return str(key)


def path_string(path: Sequence[Any]) -> str:
    """A key path as ``"dense/kernel"``."""
    return "/".join(key_name(key) for key in path)


def is_box(node: Any) -> bool:
    """True for a Flax box around one parameter (``nnx.Variable``, ``nn.Partitioned``, ...)."""
    for cls in type(node).__mro__:
        module = getattr(cls, "__module__", "") or ""
        if any(module.startswith(prefix) and cls.__name__ == name for prefix, name in _BOX_CLASSES):
            return True
    return False


def _is_box_or_none(node: Any) -> bool:
    return node is None or is_box(node)


def _box_content(box: Any) -> tuple[bool, Any]:
    """``(True, child)`` for a box with exactly one pytree child, else ``(False, None)``."""
    children = jax.tree_util.tree_flatten(box, is_leaf=lambda x: x is not box)[0]
    if len(children) != 1:
        return False, None
    return True, children[0]


def unbox(tree: Any) -> Any:
    """``tree`` with every Flax box replaced by what it holds; ``tree`` itself if it has none."""
    if not any(is_box(node) for node in jax.tree.leaves(tree, is_leaf=is_box)):
        return tree

    def open_box(node):
        if not is_box(node):
            return node
        single, content = _box_content(node)
        return unbox(content) if single else node

    return jax.tree.map(open_box, tree, is_leaf=is_box)


def leaves_with_paths(tree: Any) -> list[tuple[str, Any]]:
    """``(path, leaf)`` for each leaf of ``tree`` in flattening order, ``None`` entries included.

    The paths leave Flax boxes out: ``{"dense": {"kernel": nnx.Param(w)}}``
    gives ``"dense/kernel"``, as ``{"dense": {"kernel": w}}`` does.
    """
    result: list[tuple[str, Any]] = []

    def walk(prefix: tuple, node: Any) -> None:
        if is_box(node):
            single, content = _box_content(node)
            if single:
                walk(prefix, content)
                return
        if node is None:
            result.append((path_string(prefix), None))
            return
        entries = jax.tree_util.tree_flatten_with_path(
            node, is_leaf=lambda x: x is not node and _is_box_or_none(x)
        )[0]
        for keys, item in entries:
            if item is not node and _is_box_or_none(item):
                walk(prefix + tuple(keys), item)
            else:
                result.append((path_string(prefix + tuple(keys)), item))

    walk((), tree)
    return result


def tree_paths(tree: Any) -> Any:
    """A tree like ``tree`` (boxes kept) holding each leaf's path; ``None`` entries kept.

    ``{"params": {"Dense_0": {"bias": b}}}`` gives ``{"params": {"Dense_0": {"bias":
    "params/Dense_0/bias"}}}``, with or without a box around ``b``.
    """
    treedef = jax.tree.structure(tree, is_leaf=lambda x: x is None)
    return treedef.unflatten(
        [None if leaf is None else path for path, leaf in leaves_with_paths(tree)]
    )
