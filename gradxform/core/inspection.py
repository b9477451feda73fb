"""Finding values in a nested optimizer state by name: `tree_get` and `tree_set`.

A name is matched against the key paths of the state, written as in masks
(``"0/count"``, ``"hyperparams/learning_rate"``): NamedTuple fields, dict keys
and sequence indices joined by ``/``. ``"count"`` matches every path ending in
``count``; ``"0/count"`` only those ending in ``0/count``; a leading ``/``
anchors at the root, so ``"/count"`` is only a top-level ``count``. A name must
match exactly one place: several matches are an error that lists them (as
anchored paths, each usable as a name), so that a chain with two counters never
silently returns the wrong one.
"""

from __future__ import annotations

from typing import Any, Iterator

import jax
import jax.numpy as jnp

from gradxform.core.tree import key_name

_MISSING = object()
# Names a plain optimizer keeps in its closure, not its state.
_HYPERPARAMETER_HINT = (
    " A plain optimizer keeps its hyperparameters (and schedules) in the "
    "transformation, not the state: build it with gx.inject_hyperparams(...) to "
    "have them in the state, or add gx.record_global_norm() to log the norm."
)


def _one_level(node: Any) -> tuple[list[tuple[str, Any]], Any]:
    """The named children of a pytree node and its treedef, flattened one level only."""
    entries, treedef = jax.tree_util.tree_flatten_with_path(node, is_leaf=lambda x: x is not node)
    return [(key_name(path[0]) if path else "", child) for path, child in entries], treedef


def _children(node: Any) -> list[tuple[str, Any]]:
    """The named children of a pytree node; a leaf (array, number) has none."""
    children, _ = _one_level(node)
    if len(children) == 1 and children[0][1] is node:
        return []
    return children


def _walk(node: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """Every (path, subtree) below ``node``, parents before their children."""
    for name, child in _children(node):
        yield path + (name,), child
        yield from _walk(child, path + (name,))


def _find(owner: str, tree: Any, name: str) -> list[tuple[tuple[str, ...], Any]]:
    if not isinstance(name, str) or not name.strip("/"):
        raise TypeError(f"{owner}: name must be a non-empty string such as 'count', got {name!r}")
    wanted = tuple(name.strip("/").split("/"))
    if name.startswith("/"):
        return [(path, value) for path, value in _walk(tree) if path == wanted]
    return [(path, value) for path, value in _walk(tree) if path[-len(wanted):] == wanted]


def _one(owner: str, tree: Any, name: str) -> tuple[tuple[str, ...], Any] | None:
    """The single match of ``name``; None if there is none; an error if several."""
    matches = _find(owner, tree, name)
    if len(matches) > 1:
        candidates = ", ".join("/" + "/".join(path) for path, _ in matches)
        raise KeyError(
            f"{owner}: {name!r} is ambiguous, it matches {len(matches)} places: {candidates}. "
            "Pass one of these paths (a leading '/' anchors at the root), or a longer path end."
        )
    return matches[0] if matches else None


def _not_found(owner: str, tree: Any, name: str) -> KeyError:
    names = sorted({path[-1] for path, _ in _walk(tree) if not path[-1].isdigit()})
    return KeyError(
        f"{owner}: no {name!r} in the state; the names there are {names}."
        + _HYPERPARAMETER_HINT
    )


def tree_get(tree: Any, name: str, default: Any = _MISSING) -> Any:
    r"""Returns the one value in a nested state whose key path ends with ``name``.

    .. math::
        \mathrm{tree\_get}(S, n) = S[p] \quad\text{for the unique key path } p
        \text{ ending in } n

    Args:
      tree: an optimizer state (or any pytree).
      name: a field or key name (``"count"``, ``"learning_rate"``, ``"mu"``),
        the end of a path to tell several apart (``"0/count"``,
        ``"hyperparams/b2"``), or a full path from the root (``"/count"``).
      default: returned when nothing matches; without it that is a `KeyError`
        listing the names the state has.

    Returns:
      The matching subtree (an array, or a tree such as ``mu``).

    Raises:
      KeyError: nothing matches (and no default), or several places match; the
        message lists them.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> tx = gx.inject_hyperparams(gx.adam)(learning_rate=gx.schedules.linear_schedule(1e-3, 0.0, 100))
      >>> state = tx.init({"w": jnp.zeros(3)})
      >>> float(gx.tree_get(state, "learning_rate"))
      0.0010000000474974513
      >>> int(gx.tree_get(state, "inner_state/0/count"))
      0
    """
    match = _one("tree_get", tree, name)
    if match is not None:
        return match[1]
    if default is not _MISSING:
        return default
    raise _not_found("tree_get", tree, name)


def _replace(node: Any, path: tuple[str, ...], targets: dict) -> Any:
    if path in targets:
        return targets[path]
    if not any(target[: len(path)] == path for target in targets):
        return node
    children, treedef = _one_level(node)
    replaced = [_replace(child, path + (name,), targets) for name, child in children]
    return jax.tree_util.tree_unflatten(treedef, replaced)


def _like(owner: str, name: str, value: Any, old: Any) -> Any:
    """``value`` as an array of ``old``'s dtype and shape, so the state's structure is unchanged."""
    if not hasattr(old, "dtype"):
        return value
    new = jnp.asarray(value)
    if new.shape != old.shape:
        raise ValueError(
            f"{owner}: {name} must have shape {old.shape} like the value it replaces, "
            f"got shape {new.shape}"
        )
    return new.astype(old.dtype)


def tree_set(tree: Any, **values: Any) -> Any:
    r"""Returns a copy of a nested state with the named values replaced.

    .. math::
        \mathrm{tree\_set}(S, n{=}v)[p] = v \text{ for the unique path } p \text{ ending in } n,
        \quad S[q] \text{ elsewhere}

    Each name is looked up as in `tree_get` and must match exactly once. An
    array is replaced by an array of its own dtype and shape, so the new state
    does not trigger a recompilation. To write a path with ``/`` use
    ``tree_set(state, **{"hyperparams/b2": 0.99})``.

    Args:
      tree: an optimizer state (or any pytree).
      **values: name (or path end) to new value.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> tx = gx.inject_hyperparams(gx.sgd)(learning_rate=0.1)
      >>> state = gx.tree_set(tx.init({"w": jnp.zeros(3)}), learning_rate=0.05)
      >>> float(state.hyperparams["learning_rate"])
      0.05000000074505806
    """
    targets = {}
    for name, value in values.items():
        match = _one("tree_set", tree, name)
        if match is None:
            raise _not_found("tree_set", tree, name)
        path, old = match
        targets[path] = _like("tree_set", name, value, old)
    return _replace(tree, (), targets)
