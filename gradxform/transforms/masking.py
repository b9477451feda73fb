"""Applying a transformation to some leaves only: `masked`, `freeze`, `set_to_zero`."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax.numpy as jnp

from gradxform.core import masks, tree, validation
from gradxform.core.base import GradientTransformation, init_empty_state, public_constructor


class MaskedState(NamedTuple):
    """The inner transformation's state, built on the selected leaves only."""

    inner_state: Any


def split_by_mask(owner: str, mask: Any, reference: Any, target: Any):
    """``target``'s leaves, treedef and per-leaf flags from ``mask`` resolved on ``reference``."""
    mask_tree = masks.resolve_mask(owner, mask, reference)
    return masks.static_mask_leaves(owner, mask_tree, target)


@public_constructor
def masked(inner: GradientTransformation, mask: Any) -> GradientTransformation:
    r"""Applies ``inner`` to the leaves the mask selects; the others pass through unchanged.

    .. math::
        u_i = \begin{cases} \mathrm{inner}(g)_i & \mathrm{mask}_i \\ g_i & \text{otherwise} \end{cases}

    ``inner`` sees a tree with ``None`` in place of the unselected leaves, so it
    keeps no state for them, and masks nest: a ``masked`` inside a ``masked``
    selects within what the outer one selected (optax#271).

    Args:
      inner: the transformation for the selected leaves.
      mask: a pytree of bools shaped like (a prefix of) the params, a callable
        ``params -> such a tree``, or regex patterns searched in each leaf's key
        path (``"dense/kernel"``). Its entries must be Python bools.

    Example:
      >>> import gradxform as gx
      >>> tx = gx.masked(gx.add_decayed_weights(1e-4), mask=["kernel"])
    """
    owner = "masked"
    validation.transformation(owner, "inner", inner)
    masks.check_mask_argument(owner, "mask", mask)

    def init_fn(params):
        leaves, treedef, flags = split_by_mask(owner, mask, params, params)
        return MaskedState(inner_state=inner.init(masks.select(leaves, treedef, flags)))

    def update_fn(updates, state, params=None, **extra_args):
        if params is not None:
            tree.check_same_structure(owner, "params", params, updates)
        leaves, treedef, flags = split_by_mask(owner, mask, updates if params is None else params, updates)
        new_leaves, inner_state = masks.update_selected(
            inner, state.inner_state, leaves, treedef, flags, params, extra_args
        )
        return treedef.unflatten(new_leaves), MaskedState(inner_state)

    return GradientTransformation(init_fn, update_fn)


@public_constructor
def set_to_zero() -> GradientTransformation:
    r"""Replaces every update by ``-0.0``, which leaves the parameters bit-for-bit unchanged.

    .. math::
        u = -0

    As ``optax.set_to_zero``, except that the zero is negative: ``p + (-0.0)``
    is ``p`` for every ``p``, including ``-0.0``.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> tx = gx.set_to_zero()
      >>> tx.update({"w": jnp.ones(2)}, tx.init({"w": jnp.ones(2)}))[0]["w"]
      Array([-0., -0.], dtype=float32)
    """

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        return tree.tree_map_skip_none(lambda g: jnp.full_like(g, -0.0), updates), state

    return GradientTransformation(init_empty_state, update_fn)


@public_constructor
def freeze(mask: Any) -> GradientTransformation:
    r"""Freezes the parameters the mask selects: their updates are ``-0.0``.

    .. math::
        u_i = \begin{cases} -0 & \mathrm{mask}_i \\ g_i & \text{otherwise} \end{cases}

    ``masked(set_to_zero(), mask)``, as ``optax.freeze``. Put it last in a
    chain, so that whatever comes before it, the frozen parameters do not move.

    Args:
      mask: which parameters are frozen, in any form `masked` accepts.

    Example:
      >>> import gradxform as gx
      >>> tx = gx.chain(gx.adam(1e-3), gx.freeze(["embedding"]))
    """
    return masked(set_to_zero(), mask)
