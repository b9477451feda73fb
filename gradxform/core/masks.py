"""Masks: which leaves of a parameter tree a transformation acts on.

A mask is given as one of:

* None: every leaf;
* a pytree of bools shaped like (a prefix of) the params;
* a callable ``params -> such a tree``;
* name patterns: a regular expression, or a list of them, searched
  (``re.search``) in each leaf's key path written as ``"dense/kernel"``.

Key paths join the dict keys, sequence indices and attribute names from the
root to the leaf with ``/``: ``{"params": {"Dense_0": {"bias": b}}}`` gives
``"params/Dense_0/bias"``. A pattern ``"bias"`` matches it anywhere; anchor it
as ``"(^|/)bias$"`` to match only a last component named ``bias``.
"""

from __future__ import annotations

import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gradxform.core import flat, tree
from gradxform.core.tree import path_string


def tree_paths(params: Any) -> Any:
    """A tree like ``params`` holding each leaf's `path_string` (``None`` entries kept)."""
    return jax.tree_util.tree_map_with_path(
        lambda path, leaf: None if leaf is None else path_string(path),
        params,
        is_leaf=lambda x: x is None,
    )


def is_pattern_list(value: Any) -> bool:
    """True for a string or a non-empty list/tuple of strings."""
    if isinstance(value, str):
        return True
    return (
        isinstance(value, (list, tuple))
        and len(value) > 0
        and all(isinstance(item, str) for item in value)
    )


def compile_patterns(owner: str, name: str, patterns: Any) -> re.Pattern | None:
    """Joins regex ``patterns`` into one compiled regex, naming ``owner`` on a bad one.

    None or an empty list gives None (nothing matches).
    """
    if patterns is None:
        return None
    if isinstance(patterns, str):
        patterns = [patterns]
    if not isinstance(patterns, (list, tuple)) or not all(isinstance(p, str) for p in patterns):
        raise TypeError(f"{owner}: {name} must be a regex string or a list of them, got {patterns!r}")
    if not patterns:
        return None
    for pattern in patterns:
        try:
            re.compile(pattern)
        except re.error as error:
            raise ValueError(f"{owner}: {name} has an invalid regex {pattern!r}: {error}") from None
    return re.compile("|".join(f"(?:{p})" for p in patterns))


def match_paths(regex: re.Pattern | None, params: Any) -> Any:
    """A bool per leaf of ``params``: does ``regex`` occur in the leaf's key path."""
    return jax.tree.map(
        lambda path: regex is not None and regex.search(path) is not None,
        tree_paths(flat.logical(params)),
    )


def check_mask_argument(owner: str, name: str, mask: Any) -> None:
    """Validates a mask argument at construction (see the module docstring for its forms)."""
    if mask is None or callable(mask):
        return
    if is_pattern_list(mask):
        compile_patterns(owner, name, mask)
        return
    leaves = jax.tree.leaves(mask)
    if not leaves:
        raise ValueError(
            f"{owner}: {name} must be a pytree of bools, a callable or regex patterns, "
            f"got {mask!r}"
        )
    if any(isinstance(leaf, (str, bytes)) for leaf in leaves):
        raise TypeError(
            f"{owner}: {name} mixes strings with other values; give a list of regex strings "
            f"or a pytree of bools, got {mask!r}"
        )
    for leaf in leaves:
        is_bool = isinstance(leaf, (bool, np.bool_)) or (
            hasattr(leaf, "dtype") and jnp.issubdtype(leaf.dtype, jnp.bool_)
        )
        if not (is_bool or isinstance(leaf, jax.core.Tracer)):
            raise TypeError(
                f"{owner}: {name} must be a pytree of bools, a callable or regex patterns; "
                f"it has the leaf {leaf!r}, got {mask!r}"
            )


def resolve_mask(owner: str, mask: Any, params: Any) -> Any:
    """A bool (or bool array) per leaf of ``params`` from any form of mask.

    For a `flat.FlatTree`, per leaf of its original tree (`flat.logical`).
    """
    params = flat.logical(params)
    if mask is None:
        return jax.tree.map(lambda leaf: None if leaf is None else True, params, is_leaf=lambda x: x is None)
    if is_pattern_list(mask):
        return match_paths(compile_patterns(owner, "mask", mask), params)
    prefix = mask(params) if callable(mask) else mask
    return tree.broadcast_prefix(owner, prefix, params)


def combine_with_exclusion(selected: Any, excluded: Any) -> Any:
    """``selected and not excluded``, leaf by leaf; ``selected`` may hold traced bools."""

    def both(keep, drop):
        if drop:
            return False
        return keep

    return jax.tree.map(both, selected, excluded)


def is_static_false(value: Any) -> bool:
    """True when a mask entry is a Python/numpy ``False`` known before tracing."""
    return isinstance(value, (bool, np.bool_)) and not value


def static_mask_leaves(owner: str, mask_tree: Any, tree: Any) -> tuple[list, Any, list]:
    """``tree``'s leaves (``None`` entries included), its treedef, and one Python bool per leaf.

    A mask decides which leaves an inner transformation sees, i.e. the structure
    of what it is given, so every entry must be known before tracing: a Python
    or numpy bool. An array (or traced) entry raises a `TypeError` naming
    ``owner`` and the leaf's key path.

    For a `flat.FlatTree` the leaves are its buffers, and a buffer whose leaves
    are only partly selected gets a bool array, one entry per element.
    """
    if flat.is_flat(tree):
        logical_leaves, logical_def, logical_flags = static_mask_leaves(owner, mask_tree, tree.logical)
        kept_nones = [None if leaf is None else flag for leaf, flag in zip(logical_leaves, logical_flags)]
        buffer_flags = flat.per_buffer(tree, logical_def.unflatten(kept_nones))
        leaves, treedef = jax.tree.flatten(tree, is_leaf=lambda x: x is None)
        return leaves, treedef, list(buffer_flags.buffers)
    leaves, treedef = jax.tree.flatten(tree, is_leaf=lambda x: x is None)
    try:
        flags = treedef.flatten_up_to(mask_tree)
    except (ValueError, TypeError) as error:
        raise ValueError(
            f"{owner}: the mask's tree structure does not match the params'.\n"
            f"  mask:   {jax.tree.structure(mask_tree)}\n"
            f"  params: {treedef}"
        ) from error
    paths = [path_string(p) for p, _ in jax.tree_util.tree_flatten_with_path(
        tree, is_leaf=lambda x: x is None)[0]]
    result = []
    for leaf, flag, path in zip(leaves, flags, paths):
        if leaf is None:
            result.append(False)
        elif isinstance(flag, (bool, np.bool_)):
            result.append(bool(flag))
        else:
            raise TypeError(
                f"{owner}: the mask must hold Python bools, known before tracing; got "
                f"{flag!r} at {path!r}"
            )
    return leaves, treedef, result


def _is_static(flag: Any) -> bool:
    return isinstance(flag, (bool, np.bool_))


def select(leaves: list, treedef: Any, flags: list, zero_unselected: bool = False) -> Any:
    """The tree with ``None`` in place of every leaf whose flag is False.

    A flag that is a bool array (a partly selected `flat.FlatTree` buffer) keeps
    the leaf, with its unselected elements zeroed if ``zero_unselected``.
    """

    def pick(leaf, flag):
        if _is_static(flag):
            return leaf if flag else None
        return jnp.where(flag, leaf, jnp.zeros_like(leaf)) if zero_unselected else leaf

    return treedef.unflatten([pick(leaf, flag) for leaf, flag in zip(leaves, flags)])


def update_selected(
    inner: Any, inner_state: Any, leaves: list, treedef: Any, flags: list, params: Any, extra_args: dict
) -> tuple[list, Any]:
    """Runs ``inner.update`` on the flagged leaves only (``None`` elsewhere).

    Returns every leaf, the unflagged ones unchanged, and the inner state.
    ``params`` (or None) has the same structure as the leaves' tree. In a partly
    selected `flat.FlatTree` buffer, ``inner`` sees zeros in place of the
    unselected elements, and they keep their old values.
    """
    selected_params = None if params is None else select(treedef.flatten_up_to(params), treedef, flags)
    new_selected, inner_state = inner.update(
        select(leaves, treedef, flags, zero_unselected=True), inner_state, selected_params, **extra_args
    )
    chosen = treedef.flatten_up_to(new_selected)

    def merge(new, old, flag):
        if _is_static(flag):
            return new if flag else old
        return jnp.where(flag, new, old)

    return [merge(new, old, flag) for new, old, flag in zip(chosen, leaves, flags)], inner_state
