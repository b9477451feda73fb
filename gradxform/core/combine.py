"""Combining transformations: `chain` and `named_chain`."""

from __future__ import annotations

import collections
import inspect
from typing import Any, Callable

import jax

from gradxform.core import checks, sparse
from gradxform.core.base import GradientTransformation, public_constructor

_UPDATE_POSITIONALS = 3  # updates, state, params


def extra_args_filter(update: Callable) -> Callable[[dict], dict]:
    """Decides, from ``update``'s signature, which extra keyword arguments it accepts.

    An update with ``**kwargs`` gets every extra argument; otherwise it gets only
    those it names. A plain optax transformation ``update(updates, state,
    params=None)`` thus gets none, an optax ``GradientTransformationExtraArgs``
    all of them. Decided once, when the chain is built.
    """
    try:
        parameters = list(inspect.signature(update).parameters.values())
    except (TypeError, ValueError):  # a builtin or C callable without a signature
        return lambda extra_args: {}
    if any(p.kind is p.VAR_KEYWORD for p in parameters):
        return lambda extra_args: extra_args
    names = {
        p.name
        for p in parameters[_UPDATE_POSITIONALS:]
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }
    return lambda extra_args: {k: v for k, v in extra_args.items() if k in names}


def _check_member_states(owner: str, state: Any, expected: int | list[str]) -> None:
    """A chain's state is a tuple of ``expected`` entries; a named chain's a dict of those keys."""
    if isinstance(expected, int):
        valid = isinstance(state, (tuple, list)) and len(state) == expected
        wanted = f"a tuple with one state per member ({expected})"
    else:
        valid = isinstance(state, dict) and sorted(state) == sorted(expected)
        wanted = f"a dict with one state per member, keyed {expected!r}"
    if not valid:
        raise ValueError(
            f"{owner}: expected {wanted}, got {jax.tree.structure(state)}. {checks.RESTORE_HINT}"
        )


@sparse.row_sparse_rule("routes")
@public_constructor
def chain(*transforms: GradientTransformation) -> GradientTransformation:
    r"""Applies transformations one after another.

    .. math::
        u \leftarrow T_n(\dots T_2(T_1(g)))

    The state is a tuple with one entry per member. Members may be gradxform or
    optax transformations; extra keyword arguments given to ``update`` reach
    each member whose ``update`` accepts them (decided by its signature).

    Args:
      *transforms: the members, applied in order.

    Example:
      >>> import gradxform as gx
      >>> tx = gx.chain(gx.clip_by_global_norm(1.0), gx.scale_by_adam(), gx.scale(-1e-3))
    """
    for index, tx in enumerate(transforms):
        if not (callable(getattr(tx, "init", None)) and callable(getattr(tx, "update", None))):
            raise TypeError(
                f"chain: member {index} of transforms must be a transformation with init and "
                f"update, got {tx!r}"
            )
    filters = tuple(extra_args_filter(tx.update) for tx in transforms)

    def init_fn(params):
        return tuple(tx.init(params) for tx in transforms)

    def update_fn(updates, state, params=None, **extra_args):
        _check_member_states("chain", state, len(transforms))
        new_states = []
        for index, (tx, member_state, accepted) in enumerate(zip(transforms, state, filters)):
            _check_sparse_member(index, tx, updates)
            updates, member_state = tx.update(updates, member_state, params, **accepted(extra_args))
            new_states.append(member_state)
        return updates, tuple(new_states)

    return GradientTransformation(init_fn, update_fn)


def _check_sparse_member(index: int, tx: Any, updates: Any) -> None:
    """A member that is not a gradxform transformation cannot be trusted with a `RowSparse`.

    Another library maps its rule over the leaf's two arrays (indices too).
    """
    if getattr(tx, "name", None) is None:
        where = sparse.first_row_sparse(updates)
        if where is not None:
            raise sparse.not_sparse_error(
                "chain", where, f"member {index} is not a gradxform transformation with a "
                "row-sparse rule, and would read the leaf as its indices and values")


@sparse.row_sparse_rule("routes")
@public_constructor
def named_chain(*transforms: tuple[str, GradientTransformation]) -> GradientTransformation:
    r"""`chain` whose state is an ``OrderedDict`` keyed by member name, in the chain's order.

    .. math::
        u \leftarrow T_{name_n}(\dots T_{name_1}(g))

    Args:
      *transforms: ``(name, transformation)`` pairs, applied in order; names
        must be unique strings.

    Example:
      >>> import gradxform as gx
      >>> tx = gx.named_chain(("clip", gx.clip_by_global_norm(1.0)), ("lr", gx.scale(-0.1)))
      >>> sorted(tx.init({"w": 1.0}))
      ['clip', 'lr']
    """
    for index, pair in enumerate(transforms):
        if not (isinstance(pair, tuple) and len(pair) == 2 and isinstance(pair[0], str)):
            raise TypeError(
                f"named_chain: transforms[{index}] must be a (str name, transformation) pair, "
                f"got {pair!r}"
            )
        tx = pair[1]
        if not (callable(getattr(tx, "init", None)) and callable(getattr(tx, "update", None))):
            raise TypeError(
                f"named_chain: transforms[{index}] must be a (name, transformation) pair with "
                f"init and update, got {pair!r}"
            )
    names = [name for name, _ in transforms]
    if len(set(names)) != len(names):
        raise ValueError(f"named_chain: names must be unique, got {names!r}")
    inner = chain(*(tx for _, tx in transforms))

    # An OrderedDict, as optax's: pytrees sort a plain dict's keys, and the state
    # should list the members in the chain's order.
    def init_fn(params):
        return collections.OrderedDict(zip(names, inner.init(params)))

    def update_fn(updates, state, params=None, **extra_args):
        _check_member_states("named_chain", state, names)
        ordered = tuple(state[name] for name in names)
        updates, new_states = inner.update(updates, ordered, params, **extra_args)
        return updates, collections.OrderedDict(zip(names, new_states))

    return GradientTransformation(init_fn, update_fn)
