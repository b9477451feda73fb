"""Weight decay added to the updates (L2 / AdamW-style decoupled decay)."""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gradxform.core import numerics, tree, validation
from gradxform.core.base import GradientTransformation, ScalarOrSchedule, public_constructor


class AddDecayedWeightsState(NamedTuple):
    """The step count, the argument of a scheduled ``weight_decay``."""

    count: jax.Array  # int32, shape ()


def resolve_mask(owner: str, mask: Any, params: Any) -> Any:
    """A bool per leaf of ``params`` from ``mask``: None (all True), a prefix tree, or a callable."""
    if mask is None:
        return tree.tree_map_skip_none(lambda _: True, params)
    prefix = mask(params) if callable(mask) else mask
    return tree.broadcast_prefix(owner, prefix, params)


@public_constructor
def add_decayed_weights(
    weight_decay: ScalarOrSchedule = 0.0,
    mask: Any | Callable[[Any], Any] | None = None,
) -> GradientTransformation:
    r"""Adds the parameters, scaled by the weight decay, to the updates.

    .. math::
        u_i = g_i + \lambda(t)\, \theta_i \quad \text{where } \mathrm{mask}_i, \qquad u_i = g_i
        \text{ elsewhere}

    Placed after ``scale_by_adam`` and before the learning rate, this is AdamW's
    decoupled decay :math:`\theta \leftarrow \theta - \eta(\hat m/(\sqrt{\hat v}+\epsilon) +
    \lambda\theta)`. Same as ``optax.add_decayed_weights``; the state always holds
    the step count, whether or not ``weight_decay`` is scheduled.

    Args:
      weight_decay: :math:`\lambda \ge 0`, or a schedule ``count -> rate``.
      mask: which parameters decay: a pytree of bools shaped like (a prefix of)
        the params, or a callable ``params -> such a tree``. None decays all.

    Example:
      >>> import gradxform as gx
      >>> no_bias = lambda params: {k: k != "b" for k in params}
      >>> tx = gx.add_decayed_weights(1e-4, mask=no_bias)
    """
    owner = "add_decayed_weights"
    validation.scalar_or_schedule(owner, "weight_decay", weight_decay)
    validation.tree_or_callable(owner, "mask", mask)

    def init_fn(params):
        del params
        return AddDecayedWeightsState(count=numerics.zero_count())

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        if params is None:
            raise ValueError(f"{owner}: update needs params, got params=None")
        tree.check_same_structure(owner, "params", params, updates)
        decay = numerics.schedule_value(weight_decay, state.count)
        decays = resolve_mask(owner, mask, params)

        def leaf(g, p, decays_here):
            if isinstance(decays_here, (bool, np.bool_)) and not decays_here:
                return g
            p = jnp.asarray(p)
            g_c = numerics.upcast(g, p.dtype)
            decayed = numerics.store(g_c + numerics.scale_leaf(decay, p.astype(g_c.dtype)), g.dtype)
            return decayed if isinstance(decays_here, (bool, np.bool_)) else jnp.where(decays_here, decayed, g)

        new_state = AddDecayedWeightsState(count=numerics.safe_increment(state.count))
        if isinstance(weight_decay, (int, float)) and weight_decay == 0:
            return updates, new_state  # as optax: no 0 * inf = NaN from a zero decay
        return tree.tree_map_skip_none(leaf, updates, params, decays), new_state

    return GradientTransformation(init_fn, update_fn)
