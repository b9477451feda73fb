"""Weight decay: added to the updates (optax's form) or applied with the learning rate (Keras's)."""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp

from gradxform.core import flat, masks, numerics, sparse, tree, validation
from gradxform.core.base import GradientTransformation, ScalarOrSchedule, public_constructor


class AddDecayedWeightsState(NamedTuple):
    """The step count, the argument of a scheduled ``weight_decay``."""

    count: jax.Array  # int32, shape ()
    mirrored_fields = ("count",)  # a schedule's argument: tree_get prefers the optimizer's count


class DecoupledWeightDecayState(NamedTuple):
    """The step count, the argument of a scheduled learning rate or decay."""

    count: jax.Array  # int32, shape ()
    mirrored_fields = ("count",)  # a schedule's argument: tree_get prefers the optimizer's count


MaskLike = Any | Callable[[Any], Any] | str | Sequence[str] | None


def _check_decay_arguments(owner, weight_decay, mask, exclude):
    validation.scalar_or_schedule(owner, "weight_decay", weight_decay)
    masks.check_mask_argument(owner, "mask", mask)
    return masks.compile_patterns(owner, "exclude", exclude)


def _decays_where(owner, mask, exclude_regex, params):
    """A bool per leaf: in the mask and not excluded by name."""
    selected = masks.resolve_mask(owner, mask, params)
    return masks.combine_with_exclusion(selected, masks.match_paths(exclude_regex, params))


def _map_decaying(owner, decayed_leaf, updates, params, decays):
    """``decayed_leaf(g, p)`` on the leaves that decay, ``g`` unchanged on the others."""

    def leaf(g, p, decays_here):
        if p is None or masks.is_static_false(decays_here):  # no parameter there: nothing to decay
            return g
        p = jnp.asarray(p)
        if isinstance(g, sparse.RowSparse):  # only the touched rows decay
            g = sparse.coalesce(g)
            rows = sparse.gather_rows(p, g.indices, unique=True)
            return sparse.with_values(g, leaf(g.values, rows, decays_here))
        dtype = numerics.compute_dtype(g.dtype, p.dtype)
        decayed = numerics.store(decayed_leaf(g.astype(dtype), p.astype(dtype)), g.dtype)
        if isinstance(decays_here, bool):
            return decayed
        return jnp.where(decays_here, decayed, g)

    tree.check_same_structure(owner, "params", params, updates, none_matches=True)
    return tree.tree_map_skip_none(leaf, updates, params, flat.per_buffer(updates, decays))


def _decay_transform(owner, state_type, weight_decay, mask, exclude_regex, leaf_rule):
    """The init/update pair shared by both decays; ``leaf_rule(count)`` gives ``(g, p) -> u``."""

    def init_fn(params):
        del params
        return state_type(count=numerics.zero_count())

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        if params is None:
            raise ValueError(f"{owner}: update needs params, got params=None")
        new_state = state_type(count=numerics.safe_increment(state.count))
        if isinstance(numerics.python_number(weight_decay), (int, float)) and weight_decay == 0:
            tree.check_same_structure(owner, "params", params, updates, none_matches=True)
            return updates, new_state  # as optax: no 0 * inf = NaN from a zero decay
        decays = _decays_where(owner, mask, exclude_regex, params)
        return _map_decaying(owner, leaf_rule(state.count), updates, params, decays), new_state

    return GradientTransformation(init_fn, update_fn)


@sparse.row_sparse_rule("lazy")
@public_constructor
def add_decayed_weights(
    weight_decay: ScalarOrSchedule = 0.0,
    mask: MaskLike = None,
    *,
    exclude: str | Sequence[str] | None = None,
) -> GradientTransformation:
    r"""Adds the parameters, scaled by the weight decay, to the updates.

    .. math::
        u_i = g_i + \lambda(t)\, \theta_i \quad \text{where } \mathrm{mask}_i, \qquad u_i = g_i
        \text{ elsewhere}

    Placed after ``scale_by_adam`` and before the learning rate, this is AdamW's
    decoupled decay :math:`\theta \leftarrow \theta - \eta(\hat m/(\sqrt{\hat v}+\epsilon) +
    \lambda\theta)`. Same as ``optax.add_decayed_weights``; the state always holds
    the step count, whether or not ``weight_decay`` is scheduled.
    For a `RowSparse` update only the touched rows decay (lazy): the rest of
    the table is not read or written.

    Args:
      weight_decay: :math:`\lambda \ge 0`, or a schedule ``count -> rate``.
      mask: which parameters decay: a pytree of bools shaped like (a prefix of)
        the params, a callable ``params -> such a tree``, or regex patterns
        searched in each leaf's key path (``"dense/kernel"``). None decays all.
      exclude: regex patterns; a leaf whose key path matches one does not
        decay, whatever the mask says (Keras's ``exclude_from_weight_decay``).

    Example:
      >>> import gradxform as gx
      >>> tx = gx.add_decayed_weights(1e-4, exclude=["bias", "norm"])
    """
    owner = "add_decayed_weights"
    exclude_regex = _check_decay_arguments(owner, weight_decay, mask, exclude)

    def leaf_rule(count):
        decay = numerics.schedule_value(weight_decay, count, owner, "weight_decay")
        return lambda g, p: g + numerics.scale_leaf(decay, p)

    return _decay_transform(
        owner, AddDecayedWeightsState, weight_decay, mask, exclude_regex, leaf_rule
    )


@sparse.row_sparse_rule("lazy")
@public_constructor
def decoupled_weight_decay(
    weight_decay: ScalarOrSchedule,
    learning_rate: ScalarOrSchedule,
    mask: MaskLike = None,
    *,
    exclude: str | Sequence[str] | None = None,
) -> GradientTransformation:
    r"""Shrinks each parameter by the plain learning rate times the weight decay (Keras's form).

    .. math::
        u_i = g_i - \theta_i\, \lambda(t)\, \eta(t) \quad \text{where } \mathrm{mask}_i
        \text{ and not excluded}, \qquad u_i = g_i \text{ elsewhere}

    so that, with any optimizer before it, :math:`\theta \leftarrow \theta -
    \theta\lambda\eta - \text{step}`: Keras's ``x -= x * weight_decay * lr``,
    with the plain learning rate, not Adam's bias-corrected step. Unlike
    `add_decayed_weights` it does not depend on where the learning rate is
    applied, so it can follow a complete optimizer:
    ``chain(gx.adam(1e-3), gx.decoupled_weight_decay(0.004, 1e-3))`` is Keras's
    ``AdamW``. For a `RowSparse` update only the touched rows decay (lazy).
    Loshchilov and Hutter, 2019.

    Args:
      weight_decay: :math:`\lambda \ge 0`, or a schedule ``count -> rate``.
      learning_rate: :math:`\eta \ge 0`, or a schedule ``count -> rate``; the
        count is this transformation's own number of updates, from 0.
      mask: which parameters decay, as in `add_decayed_weights`.
      exclude: regex patterns searched in each leaf's key path; matching leaves
        do not decay (``["bias", "norm"]``).

    Example:
      >>> import gradxform as gx
      >>> tx = gx.chain(gx.adam(1e-3), gx.decoupled_weight_decay(0.004, 1e-3, exclude="bias"))
    """
    owner = "decoupled_weight_decay"
    exclude_regex = _check_decay_arguments(owner, weight_decay, mask, exclude)
    validation.scalar_or_schedule(owner, "learning_rate", learning_rate)

    def leaf_rule(count):
        decay = numerics.schedule_value(weight_decay, count, owner, "weight_decay")
        rate = numerics.schedule_value(learning_rate, count, owner, "learning_rate")
        # Keras's order of operations: (x * weight_decay) * learning_rate.
        return lambda g, p: g - (p * numerics.hyperparameter(decay, p.dtype)) * numerics.hyperparameter(
            rate, p.dtype)

    return _decay_transform(
        owner, DecoupledWeightDecayState, weight_decay, mask, exclude_regex, leaf_rule
    )

