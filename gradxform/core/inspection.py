"""Finding values in a nested optimizer state by name: `tree_get` and `tree_set`.

A name is matched against the key paths of the state, written as in masks
(``"0/count"``, ``"hyperparams/learning_rate"``): NamedTuple fields, dict keys
and sequence indices joined by ``/``. ``"count"`` matches every path ending in
``count``; ``"0/count"`` only those ending in ``0/count``; a leading ``/``
anchors at the root, so ``"/count"`` is only a top-level ``count``. As in
optax, the name of a state's class (``"ScaleByAdamState"``) matches that
state itself.

A name must match one place. Several matches are an error that lists them (as
anchored paths, each usable as a name), so that a chain with two independent
counters never silently returns the wrong one, with one exception: a field
that a state class lists in its ``mirrored_fields`` (the step count that a
schedule's state or `inject_hyperparams` keeps beside the optimizer's own)
yields to the one match that is not mirrored. So ``tree_get(adam_state,
"count")`` is Adam's step count, as in optax, although the learning-rate
scaling keeps a count too, and ``tree_set(adam_state, count=0)`` sets both.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

import jax
import jax.numpy as jnp

from gradxform.core.paths import key_name

# Names a plain optimizer keeps in its closure, not its state.
_HYPERPARAMETER_HINT = (
    " A plain optimizer keeps its hyperparameters (and schedules) in the "
    "transformation, not the state: build it with gx.inject_hyperparams(...) to "
    "have them in the state, or add gx.record_global_norm() to log the norm."
)


def _one_level(node: Any) -> tuple[list[tuple[Any, Any]], Any]:
    """The (key, child) pairs of a pytree node and its treedef, flattened one level only."""
    entries, treedef = jax.tree_util.tree_flatten_with_path(node, is_leaf=lambda x: x is not node)
    return [(path[0] if path else None, child) for path, child in entries], treedef


def _children(node: Any) -> list[tuple[Any, Any]]:
    """The (key, child) pairs of a pytree node; a leaf (array, number) has none."""
    children, _ = _one_level(node)
    if len(children) == 1 and children[0][1] is node:
        return []
    return children


class _Match:
    """One place in a tree: its names, its jax key path, its value and its parent."""

    def __init__(self, names: tuple[str, ...], keys: tuple, value: Any, parent: Any):
        self.names, self.keys, self.value, self.parent = names, keys, value, parent

    @property
    def mirrored(self) -> bool:
        return self.names[-1] in getattr(type(self.parent), "mirrored_fields", ())

    def anchored(self) -> str:
        return "/" + "/".join(self.names)


def _walk(node: Any, names: tuple = (), keys: tuple = ()) -> Iterator[_Match]:
    """Every place below ``node``, parents before their children."""
    for key, child in _children(node):
        child_names, child_keys = names + (key_name(key),), keys + (key,)
        yield _Match(child_names, child_keys, child, node)
        yield from _walk(child, child_names, child_keys)


def _class_names(value: Any) -> set[str]:
    """The names of a NamedTuple state's class and its bases (``"ScaleByAdamState"``)."""
    if not (isinstance(value, tuple) and hasattr(value, "_fields")):
        return set()
    return {cls.__name__ for cls in type(value).__mro__ if cls not in (tuple, object)}


def _find(owner: str, tree: Any, name: str, filtering: Callable | None) -> list[_Match]:
    if not isinstance(name, str) or not name.strip("/"):
        raise TypeError(f"{owner}: key must be a non-empty string such as 'count', got {name!r}")
    if filtering is not None and not callable(filtering):
        raise TypeError(f"{owner}: filtering must be a callable (path, value) -> bool, got {filtering!r}")
    wanted = tuple(name.strip("/").split("/"))
    anchored = name.startswith("/")

    def matches(match):
        if (match.names == wanted) if anchored else (match.names[-len(wanted):] == wanted):
            return True
        return len(wanted) == 1 and not anchored and wanted[0] in _class_names(match.value)

    found = [match for match in _walk(tree) if matches(match)]
    if len(wanted) == 1 and wanted[0] in _class_names(tree):
        found.insert(0, _Match((), (), tree, None))
    if filtering is not None:
        found = [match for match in found if filtering(match.keys, match.value)]
    return found


def _ambiguous(owner: str, name: str, matches: list[_Match]) -> KeyError:
    candidates = ", ".join(match.anchored() for match in matches)
    return KeyError(
        f"{owner}: {name!r} is ambiguous, it matches {len(matches)} places: {candidates}. "
        "Pass one of these paths (a leading '/' anchors at the root), a longer path end, "
        "or a filtering function."
    )


def _not_found(owner: str, tree: Any, name: str) -> KeyError:
    names = sorted({match.names[-1] for match in _walk(tree) if not match.names[-1].isdigit()})
    return KeyError(
        f"{owner}: no {name!r} in the state; the names there are {names}."
        + _HYPERPARAMETER_HINT
    )


def _primary(matches: list[_Match]) -> list[_Match]:
    """The matches without the mirrored counts, when exactly one other match remains."""
    own = [match for match in matches if not match.mirrored]
    return own if len(own) == 1 else matches


def tree_get(tree: Any, key: str, default: Any = None, filtering: Callable | None = None) -> Any:
    r"""Returns the one value in a nested state whose key path ends with ``key``.

    .. math::
        \mathrm{tree\_get}(S, k) = S[p] \quad\text{for the unique key path } p
        \text{ ending in } k

    Same arguments as ``optax.tree.get``; a step count kept only for a
    schedule (see the module docstring) yields to the optimizer's own.

    Args:
      tree: an optimizer state (or any pytree).
      key: a field or key name (``"count"``, ``"learning_rate"``, ``"mu"``),
        the end of a path to tell several apart (``"0/count"``,
        ``"hyperparams/b2"``), a full path from the root (``"/count"``), or the
        name of a state class (``"ScaleByAdamState"``).
      default: returned when nothing matches (as optax, None unless given).
      filtering: ``filtering(path, value) -> bool`` keeps only some matches;
        ``path`` is the jax key path (a tuple of ``jax.tree_util`` keys).

    Returns:
      The matching subtree (an array, or a tree such as ``mu``), or ``default``.

    Raises:
      KeyError: several places match; the message lists them.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> state = gx.adam(1e-3).init({"w": jnp.zeros(3)})
      >>> int(gx.tree_get(state, "count"))
      0
      >>> tx = gx.inject_hyperparams(gx.adam)(learning_rate=gx.schedules.linear_schedule(1e-3, 0.0, 100))
      >>> float(gx.tree_get(tx.init({"w": jnp.zeros(3)}), "learning_rate"))
      0.0010000000474974513
    """
    matches = _primary(_find("tree_get", tree, key, filtering))
    if len(matches) > 1:
        raise _ambiguous("tree_get", key, matches)
    return matches[0].value if matches else default


def _replace(node: Any, names: tuple[str, ...], targets: dict) -> Any:
    if names in targets:
        return targets[names]
    if not any(target[: len(names)] == names for target in targets):
        return node
    children, treedef = _one_level(node)
    replaced = [_replace(child, names + (key_name(key),), targets) for key, child in children]
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


def tree_set(tree: Any, filtering: Callable | None = None, /, **values: Any) -> Any:
    r"""Returns a copy of a nested state with the named values replaced.

    .. math::
        \mathrm{tree\_set}(S, n{=}v)[p] = v \text{ for the path } p \text{ ending in } n,
        \quad S[q] \text{ elsewhere}

    Each name is looked up as in `tree_get` and must match one place (a step
    count and the counts that mirror it are set together). An array is
    replaced by an array of its own dtype and shape, so the new state does not
    trigger a recompilation. A value set into an injected optimizer's
    ``hyperparams`` is checked as the optimizer's constructor checks it, and a
    value that a schedule recomputes at every update cannot be set: both raise.
    To write a path with ``/`` use ``tree_set(state, **{"hyperparams/b2": 0.99})``.

    Args:
      tree: an optimizer state (or any pytree).
      filtering: optionally, ``filtering(path, value) -> bool`` to keep only
        some matches (positional, as in ``optax.tree.set``).
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
        found = _find("tree_set", tree, name, filtering)
        if not found:
            raise _not_found("tree_set", tree, name)
        own = _primary(found)
        if len(own) > 1:
            raise _ambiguous("tree_set", name, found)
        # Mirrored counts move with the count they mirror.
        for match in found:
            check_set = getattr(match.parent, "check_set", None)
            if check_set is not None:
                check_set("tree_set", match.names[-1], value)
            targets[match.names] = _like("tree_set", name, value, match.value)
    return _replace(tree, (), targets)
