"""Masks: which leaves of a parameter tree a transformation acts on.

A mask is given as one of:

* None: every leaf;
* a pytree of bools shaped like (a prefix of) the params;
* a function ``params -> such a tree``;
* name patterns: a regular expression, or a list of them, searched
  (``re.search``) in each leaf's key path written as ``"dense/kernel"``.

A pytree of bools that is also callable, an ``equinox.Module`` with a
``__call__``, is a tree of bools, as in optax (`is_mask_function`).

Key paths join the dict keys, sequence indices and attribute names from the
root to the leaf with ``/``: ``{"params": {"Dense_0": {"bias": b}}}`` gives
``"params/Dense_0/bias"``. A pattern ``"bias"`` matches it anywhere; anchor it
as ``"(^|/)bias$"`` to match only a last component named ``bias``.

Masks are resolved on the params with their Flax boxes opened (`paths`): the
same leaves are selected whether ``init`` sees ``nnx.Param`` variables and
``update`` bare arrays (``nnx.Optimizer``), or both see boxes (a linen
``TrainState`` of ``nn.LogicallyPartitioned`` params).

`masked` and `partition` give their inner transformations the params with a
`MaskedNode` in place of each part the mask leaves out, as optax does: where
the mask has a False entry, the whole subtree there (a box included) becomes
one `MaskedNode`.
"""

from __future__ import annotations

import re
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gradxform.core import flat, paths
from gradxform.core.combine import extra_args_filter
from gradxform.core.paths import path_string  # noqa: F401  (re-exported)


class MaskedNode(NamedTuple):
    r"""Stands for the parameters a mask leaves out, in the tree an inner transformation sees.

    .. math::
        \mathrm{select}(m, \theta)_i = \theta_i \text{ if } m_i \text{ else MaskedNode()}

    An empty NamedTuple, as optax's ``MaskedNode``: a pytree node without
    children, so tree maps pass it through and the inner state holds nothing
    for it. With ``optax.tree_utils.tree_map_params`` and extra trees shaped
    like the params, pass ``is_leaf=lambda x: isinstance(x, gx.MaskedNode)``.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> state = gx.masked(gx.trace(0.9), {"w": True, "b": False}).init(
      ...     {"w": jnp.ones(2), "b": jnp.ones(3)})
      >>> state.inner_state.trace["b"]
      MaskedNode()
    """


class MaskedState(NamedTuple):
    """The inner transformation's state, built on the selected leaves only."""

    inner_state: Any


def is_masked_node(node: Any) -> bool:
    """True for a `MaskedNode`, gradxform's or optax's (an empty tuple of that name)."""
    return isinstance(node, tuple) and not node and type(node).__name__ == "MaskedNode"


def is_params_placeholder(params: Any) -> bool:
    """True for the stand-in params that ``optax.tree_utils.tree_map_params`` gives ``init``."""
    kind = type(params)
    return kind.__name__ == "_ParamsPlaceholder" and kind.__module__.startswith("optax")


def tree_paths(params: Any) -> Any:
    """A tree like ``params`` holding each leaf's key path (`paths.tree_paths`)."""
    return paths.tree_paths(params)


def is_pattern_list(value: Any) -> bool:
    """True for a string or a non-empty list/tuple of strings."""
    if isinstance(value, str):
        return True
    return (
        isinstance(value, (list, tuple))
        and len(value) > 0
        and all(isinstance(item, str) for item in value)
    )


def is_mask_entry(leaf: Any) -> bool:
    """True for what a mask tree may hold: a bool, a bool array, or a traced value."""
    return (
        isinstance(leaf, (bool, np.bool_, jax.core.Tracer))
        or (hasattr(leaf, "dtype") and jnp.issubdtype(leaf.dtype, jnp.bool_))
    )


def is_label_entry(leaf: Any) -> bool:
    """True for what a label tree may hold: a hashable value (a string, an int, ...)."""
    try:
        hash(leaf)
    except TypeError:
        return False
    return True


def is_mask_function(mask: Any, is_entry: Callable[[Any], bool] = is_mask_entry) -> bool:
    """True when a mask (or, with `is_label_entry`, labels) argument is a function of the params.

    As optax decides, a mask whose pytree leaves are all callable is a function
    (a plain function is its own only leaf), and a callable pytree of entries,
    such as an ``equinox.Module`` of bools with a ``__call__``, is a tree. Any
    other callable is a function too: a bound method of an Equinox model is a
    pytree of the model's arrays, which no mask holds.
    """
    if not callable(mask):
        return False
    leaves = jax.tree.leaves(mask)
    if all(callable(leaf) for leaf in leaves):
        return True
    return not all(is_entry(leaf) for leaf in leaves)


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
    """A bool per leaf of ``params``, laid out like it: does ``regex`` occur in the leaf's path."""
    return jax.tree.map(
        lambda path: regex is not None and regex.search(path) is not None,
        tree_paths(flat.logical(params)),
    )


def check_mask_argument(owner: str, name: str, mask: Any) -> None:
    """Validates a mask argument at construction (see the module docstring for its forms)."""
    if mask is None or is_mask_function(mask):
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
        if not is_mask_entry(leaf):
            raise TypeError(
                f"{owner}: {name} must be a pytree of bools, a callable or regex patterns; "
                f"it has the leaf {leaf!r}, got {mask!r}"
            )


# --- prefixes: a mask or label tree whose leaves stand for whole subtrees --------------


def _is_none(node: Any) -> bool:
    return node is None


class _NotAPrefix(Exception):
    """Raised inside `_map_prefix`; turned into a `ValueError` naming the caller."""


def _is_leaf(node: Any) -> bool:
    leaves = jax.tree.leaves(node)
    return len(leaves) == 1 and leaves[0] is node


def _map_prefix(fn: Callable, prefix: Any, target: Any, keys: tuple = ()) -> Any:
    """``fn(entry, subtree, path)`` for each leaf ``entry`` of ``prefix``, a prefix of ``target``.

    The result is laid out like ``prefix``. A `MaskedNode` of ``target`` (a
    part an outer mask left out) stays as it is, whatever ``prefix`` holds
    there, so that masks nest; a Flax box of ``target`` is looked through when
    ``prefix`` goes below it.
    """
    if is_masked_node(target):
        return target
    if prefix is None:
        return None if target is None else fn(None, target, path_string(keys))
    if _is_leaf(prefix):
        return fn(prefix, target, path_string(keys))
    if target is None:
        raise _NotAPrefix
    if paths.is_box(target):
        contents, box = jax.tree_util.tree_flatten(target, is_leaf=lambda x: x is not target)
        if len(contents) == 1:
            return box.unflatten([_map_prefix(fn, prefix, contents[0], keys)])
    children, prefix_def = jax.tree_util.tree_flatten_with_path(
        prefix, is_leaf=lambda x: x is not prefix
    )
    try:
        subtrees = prefix_def.flatten_up_to(target)
    except (ValueError, TypeError) as error:
        raise _NotAPrefix from error
    return prefix_def.unflatten([
        _map_prefix(fn, child, subtree, keys + tuple(child_keys))
        for (child_keys, child), subtree in zip(children, subtrees)
    ])


def _not_a_prefix(owner: str, what: str, prefix: Any, params: Any) -> ValueError:
    possessive = f"{what}'" if what.endswith("s") else f"{what}'s"
    return ValueError(
        f"{owner}: the {possessive} tree structure is not a prefix of the params'.\n"
        f"  {what + ':':7} {jax.tree.structure(prefix)}\n"
        f"  params: {jax.tree.structure(params, is_leaf=_is_none)}"
    )


def broadcast(owner: str, what: str, prefix: Any, params: Any) -> Any:
    """``prefix`` expanded to one entry per leaf of ``params`` (``None`` entries kept).

    Raises a `ValueError` naming ``owner`` and ``what`` ("mask", "labels")
    when ``prefix`` is not a prefix of ``params``.
    """
    try:
        return _map_prefix(
            lambda entry, subtree, _: jax.tree.map(lambda _: entry, subtree), prefix, params
        )
    except _NotAPrefix:
        raise _not_a_prefix(owner, what, prefix, params) from None


def prefix_on_params(owner: str, mask: Any, params: Any) -> Any:
    """The mask as optax applies it: a prefix of the params with their Flax boxes opened.

    A False entry stands for its whole subtree. ``params`` may be a
    `flat.FlatTree` (the mask is resolved on its logical tree).
    """
    view = paths.unbox(flat.logical(params))
    if mask is None or is_masked_node(view):  # an outer mask left out everything: nothing to ask
        return True
    if is_pattern_list(mask):
        return match_paths(compile_patterns(owner, "mask", mask), view)
    return paths.unbox(mask(view) if is_mask_function(mask) else mask)


def resolve_mask(owner: str, mask: Any, params: Any) -> Any:
    """A bool (or bool array) per leaf of ``params``, laid out like ``params`` (boxes kept).

    For a `flat.FlatTree`, per leaf of its original tree (`flat.logical`).
    """
    params = flat.logical(params)
    if mask is None:
        return jax.tree.map(lambda leaf: True, params)
    view = paths.unbox(params)
    full = broadcast(owner, "mask", prefix_on_params(owner, mask, view), view)
    if view is params:
        return full
    # Boxes hold one leaf each, so both trees list their leaves in the same order.
    return jax.tree.structure(params, is_leaf=_is_none).unflatten(
        jax.tree.leaves(full, is_leaf=_is_none))


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


# --- running a transformation on the selected part -----------------------------------


def _is_static(flag: Any) -> bool:
    return isinstance(flag, (bool, np.bool_))


def selection(owner: str, prefix: Any, target: Any, what: str = "mask") -> Any:
    """One Python bool per entry of ``prefix`` (from `prefix_on_params`), laid out on ``target``.

    A mask decides which parts an inner transformation sees, i.e. the structure
    of what it is given, so every entry must be known before tracing: an array
    (or traced) entry raises a `TypeError` naming ``owner`` and the key path.
    For a `flat.FlatTree` the result has one flag per buffer, and a buffer
    whose leaves are only partly selected gets a bool array, one entry per
    element.
    """

    def static(entry, subtree, path):
        if not _is_static(entry):
            raise TypeError(
                f"{owner}: the {what} must hold Python bools, known before tracing; got "
                f"{entry!r} at {path!r}"
            )
        return bool(entry)

    on = flat.logical(target)
    try:
        flags = _map_prefix(static, prefix, on)
    except _NotAPrefix:
        raise _not_a_prefix(owner, what, prefix, on) from None
    if not flat.is_flat(target):
        return flags
    per_leaf = jax.tree.map(lambda flag, subtree: jax.tree.map(lambda _: flag, subtree), flags, on)
    return flat.per_buffer(target, per_leaf)


def select(flags: Any, tree: Any, zero_unselected: bool = False) -> Any:
    """``tree`` with a `MaskedNode` in place of each part whose flag (from `selection`) is False.

    A flag that is a bool array (a partly selected `flat.FlatTree` buffer) keeps
    the buffer, with its unselected elements zeroed if ``zero_unselected``.
    """

    def pick(flag, part):
        if _is_static(flag):
            return part if flag else MaskedNode()
        return jnp.where(flag, part, jnp.zeros_like(part)) if zero_unselected else part

    return jax.tree.map(pick, flags, tree)


def merge(flags: Any, new: Any, old: Any) -> Any:
    """``new`` where the flag is True, ``old`` elsewhere (element by element for array flags)."""

    def choose(flag, new_part, old_part):
        if _is_static(flag):
            return new_part if flag else old_part
        return jnp.where(flag, new_part, old_part)

    return jax.tree.map(choose, flags, new, old)


def update_selected(
    inner: Any, inner_state: Any, flags: Any, updates: Any, params: Any, extra_args: dict
) -> tuple[Any, Any]:
    """Runs ``inner.update`` on the flagged parts only; returns every update and the inner state.

    ``inner`` sees `select` of the updates and of the params (or None), and of
    ``extra_args`` only those its ``update`` accepts (`extra_args_filter`).
    The unflagged updates come back unchanged. In a partly selected
    `flat.FlatTree` buffer, ``inner`` sees zeros in place of the unselected
    elements, and they keep their old values.
    """
    selected_params = None if params is None else select(flags, params)
    new_selected, inner_state = inner.update(
        select(flags, updates, zero_unselected=True),
        inner_state,
        selected_params,
        **extra_args_filter(inner.update)(extra_args),
    )
    return merge(flags, new_selected, updates), inner_state
