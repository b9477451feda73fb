"""Applying a transformation to some leaves only: `masked`, `freeze`, `set_to_zero`."""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp

from gradxform.core import masks, sparse, tree, validation
from gradxform.core.base import GradientTransformation, init_empty_state, public_constructor
from gradxform.core.masks import MaskedNode, MaskedState  # noqa: F401  (public here)


def _flags(owner: str, mask: Any, reference: Any, target: Any) -> Any:
    """Which parts of ``target`` the inner transformation sees: ``mask`` resolved on ``reference``."""
    return masks.selection(owner, masks.prefix_on_params(owner, mask, reference), target)


@sparse.row_sparse_rule("routes")
@public_constructor
def masked(inner: GradientTransformation, mask: Any) -> GradientTransformation:
    r"""Applies ``inner`` to the leaves the mask selects; the others pass through unchanged.

    .. math::
        u_i = \begin{cases} \mathrm{inner}(g)_i & \mathrm{mask}_i \\ g_i & \text{otherwise} \end{cases}

    As ``optax.masked``, ``inner`` sees the params with a `MaskedNode` in place
    of each unselected part (where the mask has False, the whole subtree), so
    it keeps no state for them; the state is a `MaskedState`. Masks nest: a
    ``masked`` inside a ``masked`` selects within what the outer one selected
    (optax#271). Masks, callables and patterns see the params with Flax boxes
    (``nnx.Param``, ``nn.Partitioned``) opened, so ``init`` on boxed params and
    ``update`` on bare gradients select the same leaves.

    Args:
      inner: the transformation for the selected leaves; it gets only the extra
        keyword arguments its ``update`` accepts.
      mask: a pytree of bools shaped like (a prefix of) the params, a function
        ``params -> such a tree``, or regex patterns searched in each leaf's key
        path (``"dense/kernel"``). Its entries must be Python bools. As in
        optax, an ``equinox.Module`` of bools is a tree even if it has a
        ``__call__``.

    Example:
      >>> import gradxform as gx
      >>> tx = gx.masked(gx.add_decayed_weights(1e-4), mask=["kernel"])
    """
    owner = "masked"
    validation.transformation(owner, "inner", inner)
    masks.check_mask_argument(owner, "mask", mask)

    def init_fn(params):
        if masks.is_params_placeholder(params):  # optax.tree_utils.tree_map_params, as optax
            return MaskedState(inner_state=inner.init(params))
        flags = _flags(owner, mask, params, params)
        return MaskedState(inner_state=inner.init(masks.select(flags, params)))

    def update_fn(updates, state, params=None, **extra_args):
        if params is not None:
            tree.check_same_structure(owner, "params", params, updates, none_matches=True)
        flags = _flags(owner, mask, updates if params is None else params, updates)
        new_updates, inner_state = masks.update_selected(
            inner, state.inner_state, flags, updates, params, extra_args
        )
        return new_updates, MaskedState(inner_state)

    return GradientTransformation(init_fn, update_fn)


@sparse.row_sparse_rule("exact")
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
        return tree.tree_map_skip_none(
            lambda g: sparse.map_values(lambda x: jnp.full_like(x, -0.0), g), updates), state

    return GradientTransformation(init_empty_state, update_fn)


@sparse.row_sparse_rule("routes")
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
