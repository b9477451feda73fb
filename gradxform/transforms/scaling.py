"""Scaling by a constant, a schedule, or the learning rate."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax

from gradxform.core import numerics, sparse, tree, validation
from gradxform.core.base import (
    GradientTransformation,
    Schedule,
    ScalarOrSchedule,
    init_empty_state,
    public_constructor,
)
from gradxform.core.primitives import identity


class ScaleByScheduleState(NamedTuple):
    """The number of updates so far, the argument of the schedule.

    Its ``count`` mirrors the step count an optimizer before it keeps:
    ``gx.tree_get(state, "count")`` returns that other count when there is one.
    """

    count: jax.Array  # int32, shape ()
    mirrored_fields = ("count",)


def _scale_tree(factor, updates):
    return tree.tree_map_skip_none(
        lambda g: sparse.map_values(lambda x: numerics.scale_leaf(factor, x), g), updates)


def _scaled_by_schedule(
    step_size: Any, owner: str, argument: str, sign: int = 1
) -> GradientTransformation:
    """Multiplies by ``sign`` times ``step_size`` (a constant, or a schedule of the count)."""

    def init_fn(params):
        del params
        return ScaleByScheduleState(count=numerics.zero_count())

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        factor = numerics.schedule_value(step_size, state.count, owner, argument)
        if sign != 1:
            factor = sign * factor
        updates = _scale_tree(factor, updates)
        return updates, ScaleByScheduleState(count=numerics.safe_increment(state.count))

    return GradientTransformation(init_fn, update_fn)


@sparse.row_sparse_rule("exact")
@public_constructor
def scale(step_size: float | jax.Array) -> GradientTransformation:
    r"""Multiplies the updates by a constant.

    .. math::
        u \leftarrow s \cdot g

    The product is computed in at least float32 and returned in ``g``'s dtype.

    Args:
      step_size: the constant :math:`s`, any finite real number.

    Example:
      >>> import gradxform as gx
      >>> tx = gx.scale(-0.1)
      >>> tx.update({"w": 2.0}, tx.init({"w": 0.0}))[0]["w"]
      Array(-0.2, dtype=float32)
    """
    validation.real_number("scale", "step_size", step_size)

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        return _scale_tree(step_size, updates), state

    return GradientTransformation(init_empty_state, update_fn)


@sparse.row_sparse_rule("exact")
@public_constructor
def scale_by_schedule(step_size_fn: Schedule) -> GradientTransformation:
    r"""Multiplies the updates by a schedule of the step count.

    .. math::
        u_t \leftarrow s(t) \cdot g_t, \qquad t = 0, 1, 2, \dots

    Args:
      step_size_fn: a callable ``count -> factor``; ``count`` is an int32 scalar
        that starts at 0.

    Example:
      >>> import gradxform as gx
      >>> tx = gx.scale_by_schedule(lambda count: 0.5 ** count)
    """
    if not callable(step_size_fn):
        raise TypeError(f"scale_by_schedule: step_size_fn must be callable, got {step_size_fn!r}")
    return _scaled_by_schedule(step_size_fn, "scale_by_schedule", "step_size_fn")


@sparse.row_sparse_rule("exact")
@public_constructor
def scale_by_learning_rate(
    learning_rate: ScalarOrSchedule | None, *, flip_sign: bool = True
) -> GradientTransformation:
    r"""Multiplies the updates by minus the learning rate: the last step of an optimizer.

    .. math::
        u_t \leftarrow -\eta(t) \cdot g_t \quad(\text{or } +\eta(t) g_t \text{ if not flip\_sign})

    The state always holds the step count, whether ``learning_rate`` is a
    constant or a schedule, so switching between the two keeps checkpoints
    compatible (optax drops the count for a constant).

    Args:
      learning_rate: a non-negative number, a jax scalar, or a schedule
        ``count -> rate``. None means no scaling at all (the identity).
      flip_sign: multiply by :math:`-\eta` (descent) when True, by :math:`\eta`
        when False.

    Example:
      >>> import gradxform as gx
      >>> tx = gx.scale_by_learning_rate(0.1)
      >>> tx.update({"w": 2.0}, tx.init({"w": 0.0}))[0]["w"]
      Array(-0.2, dtype=float32)
    """
    if learning_rate is None:
        return identity()
    validation.scalar_or_schedule("scale_by_learning_rate", "learning_rate", learning_rate)
    validation.boolean("scale_by_learning_rate", "flip_sign", flip_sign)
    sign = -1 if flip_sign else 1
    return _scaled_by_schedule(learning_rate, "scale_by_learning_rate", "learning_rate", sign)
