"""Loss scaling for low-precision training: a static factor, or Keras's dynamic scale.

The training loop multiplies the loss by the current scale (`scale_loss`)
before differentiating, so that small float16 gradients do not underflow; these
transformations divide the gradients by the same scale before anything else
sees them. Every scale is kept in float32 and stays in :math:`[2^{-126}, 2^{126}]`,
where it and its reciprocal are normal float32 numbers: XLA divides by a scale
by multiplying with its reciprocal and flushes subnormal numbers to 0, so a
scale of :math:`2^{127}` would unscale every gradient to 0, and a scale of 0
or inf would give NaN.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gradxform.core import control, numerics, sparse, tree, validation
from gradxform.core.base import GradientTransformation, public_constructor

# The scales s for which s and 1/s are both normal float32 numbers.
SMALLEST_SCALE = float(np.finfo(np.float32).tiny)  # 2**-126
LARGEST_SCALE = 1.0 / SMALLEST_SCALE  # 2**126


class StaticLossScaleState(NamedTuple):
    """The constant loss scale, kept in the state so that `scale_loss` can find it."""

    loss_scale: jax.Array  # float32, shape ()


class DynamicLossScaleState(NamedTuple):
    """The current scale, the finite steps since it last changed, the skips, and the inner state."""

    loss_scale: jax.Array  # float32, shape ()
    growth_count: jax.Array  # int32, shape (): consecutive finite steps, Keras's step_counter
    skipped_steps: jax.Array  # int32, shape (): non-finite steps skipped so far
    inner_state: Any


def check_scale(owner: str, name: str, value: Any) -> float | None:
    """A real number in ``[2**-126, 2**126]``, returned as a Python float (None for a tracer)."""
    number = validation.real_number(owner, name, value)
    if number is not None and not SMALLEST_SCALE <= number <= LARGEST_SCALE:
        raise ValueError(
            f"{owner}: {name} must be in [2**-126, 2**126] = [{SMALLEST_SCALE:g}, "
            f"{LARGEST_SCALE:g}], where the scale and its reciprocal, which gradients are "
            f"multiplied by, are normal float32 numbers, got {value!r}"
        )
    return number


def check_dynamic_scales(
    owner: str, initial_scale: Any, min_loss_scale: Any, max_loss_scale: Any
) -> None:
    """Each scale in ``[2**-126, 2**126]``, and ``min_loss_scale <= initial_scale``
    ``<= max_loss_scale``."""
    numbers = [
        check_scale(owner, name, value)
        for name, value in (("initial_scale", initial_scale), ("min_loss_scale", min_loss_scale),
                            ("max_loss_scale", max_loss_scale))
    ]
    if None not in numbers and not numbers[1] <= numbers[0] <= numbers[2]:
        raise ValueError(
            f"{owner}: the scales must satisfy min_loss_scale <= initial_scale <= max_loss_scale, "
            f"got min_loss_scale={min_loss_scale!r}, initial_scale={initial_scale!r}, "
            f"max_loss_scale={max_loss_scale!r}"
        )


def _unscale(updates: Any, loss_scale: jax.Array) -> Any:
    """``g / scale`` computed in at least float32 and stored in the gradients' dtype.

    Dividing in float16 would first round a scale of 2**16 or more to inf.
    """

    def leaf(g):
        dtype = numerics.compute_dtype(g.dtype, loss_scale.dtype)
        return numerics.store(g.astype(dtype) / loss_scale.astype(dtype), g.dtype)

    return tree.tree_map_skip_none(lambda g: sparse.map_values(leaf, g), updates)


@sparse.row_sparse_rule("exact")
@public_constructor
def static_loss_scale(loss_scale: float) -> GradientTransformation:
    r"""Divides the gradients by a constant loss scale (Keras's ``loss_scale_factor``).

    .. math::
        u = g / s

    Put it first in the chain and differentiate ``gx.scale_loss(loss, state)``,
    which is :math:`s \cdot \mathrm{loss}`. Keras divides before accumulating
    and clipping, as this does when it comes first.

    Args:
      loss_scale: :math:`s` in :math:`[2^{-126}, 2^{126}]` (see the module docstring).

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> tx = gx.chain(gx.static_loss_scale(1024.0), gx.adam(1e-3))
      >>> state = tx.init({"w": jnp.ones(2)})
      >>> gx.scale_loss(jnp.float32(0.5), state)
      Array(512., dtype=float32)
    """
    check_scale("static_loss_scale", "loss_scale", loss_scale)

    def init_fn(params):
        del params
        return StaticLossScaleState(loss_scale=jnp.asarray(loss_scale, jnp.float32))

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        return _unscale(updates, state.loss_scale), state

    return GradientTransformation(init_fn, update_fn)


@public_constructor
def dynamic_loss_scale(
    inner: GradientTransformation,
    initial_scale: float = 2.0**15,
    dynamic_growth_steps: int = 2000,
    min_loss_scale: float = 1.0,
    max_loss_scale: float = 2.0**126,
) -> GradientTransformation:
    r"""Dynamic loss scaling around ``inner``, as Keras's ``LossScaleOptimizer``, within bounds.

    The incoming gradients are those of the scaled loss :math:`s \cdot L`, and
    :math:`\hat g = g / s`:

    .. math::
        \begin{cases}
        u = \mathrm{inner}(\hat g); \;\; s \leftarrow 2s \text{ after } N \text{ finite steps
        in a row, if } 2s \le s_{max} & \hat g \text{ finite} \\
        u = -0,\; \mathrm{inner\ state\ unchanged}; \;\; s \leftarrow \max(s/2,\, s_{min})
        & \text{otherwise}
        \end{cases}

    On a step with any NaN or inf in :math:`\hat g` the update is ``-0.0``
    (the params stay bit-for-bit the same), the inner state (moments,
    counters, averages, accumulators, schedules) is left untouched, the scale
    halves and ``skipped_steps`` counts it. After ``dynamic_growth_steps``
    consecutive finite steps the scale doubles, after that step has used the
    old scale. Differentiate ``gx.scale_loss(loss, state)``.

    The scale stays in :math:`[s_{min}, s_{max}]`, so it never becomes 0 or
    inf (Keras bounds it by neither):

    * At the floor, a non-finite step is still held and counted and the scale
      stays at ``min_loss_scale``; the next finite step is applied with it.
      The default, 1.0, is jmp's ``min_loss_scale``. Without a floor (Keras 3,
      torch's ``GradScaler``) enough non-finite steps in a row halve the scale
      to 0, and the next finite step writes :math:`0/0 = \mathrm{NaN}` into
      the params.
    * At the ceiling, a doubling past ``max_loss_scale`` does not happen (the
      count of finite steps still restarts) and the steps go on being applied.
      The default, :math:`2^{126}`, is the largest scale whose reciprocal is a
      normal float32 number: XLA unscales by multiplying with it and flushes
      subnormals to 0. torch's ``GradScaler`` and jmp refuse only a doubling
      that overflows, so theirs stops one doubling later, at :math:`2^{127}`
      (where jmp's gradients, unscaled by XLA, are all 0); Keras doubles on to
      inf, and then skips every later step.

    A step is held when :math:`\hat g` is not finite, which for :math:`s \ge 1`
    is exactly when :math:`g` is not (what Keras and torch test). Below 1,
    :math:`g / s` can overflow although :math:`g` is finite; that step is held
    too rather than writing inf into the params.

    Args:
      inner: the transformation that receives the unscaled gradients.
      initial_scale: the starting scale, :math:`s_{min} \le s \le s_{max}`.
      dynamic_growth_steps: :math:`N \ge 1`.
      min_loss_scale: :math:`s_{min} \ge 2^{-126}`.
      max_loss_scale: :math:`s_{max} \le 2^{126}`.

    Example:
      >>> import gradxform as gx
      >>> tx = gx.dynamic_loss_scale(gx.adam(1e-3), initial_scale=2.0**15)
    """
    owner = "dynamic_loss_scale"
    validation.transformation(owner, "inner", inner)
    check_dynamic_scales(owner, initial_scale, min_loss_scale, max_loss_scale)
    dynamic_growth_steps = validation.positive_int(
        owner, "dynamic_growth_steps", dynamic_growth_steps
    )

    def init_fn(params):
        return DynamicLossScaleState(
            loss_scale=jnp.asarray(initial_scale, jnp.float32),
            growth_count=numerics.zero_count(),
            skipped_steps=numerics.zero_count(),
            inner_state=inner.init(params),
        )

    def update_fn(updates, state, params=None, **extra_args):
        def unscale(grads):
            return _unscale(grads, state.loss_scale)

        # XLA fuses the division into the reduction, so testing what inner would
        # receive costs no more than testing the scaled gradients.
        finite = tree.tree_all_finite(unscale(updates))
        new_updates, inner_state = control.update_or_hold(
            finite, inner, updates, state.inner_state, params, extra_args, prepare=unscale
        )
        at_period = state.growth_count == dynamic_growth_steps - 1
        doubled = state.loss_scale * 2
        grown = jnp.where(at_period & (doubled <= max_loss_scale), doubled, state.loss_scale)
        halved = jnp.maximum(state.loss_scale * 0.5, min_loss_scale)
        growth_count = jnp.where(
            finite & ~at_period, numerics.safe_increment(state.growth_count), 0
        ).astype(jnp.int32)
        skipped = jnp.where(
            finite, state.skipped_steps, numerics.safe_increment(state.skipped_steps)
        )
        return new_updates, DynamicLossScaleState(
            loss_scale=jnp.where(finite, grown, halved),
            growth_count=growth_count,
            skipped_steps=skipped,
            inner_state=inner_state,
        )

    return GradientTransformation(init_fn, update_fn)


def _is_loss_scale_state(node: Any) -> bool:
    return isinstance(node, (StaticLossScaleState, DynamicLossScaleState))


def current_loss_scale(opt_state: Any) -> jax.Array:
    r"""The product of every loss scale in the state; 1.0 when there is none.

    .. math::
        s = \textstyle\prod_j s_j

    Args:
      opt_state: an optimizer state, searched however deeply nested.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> gx.current_loss_scale(gx.static_loss_scale(8.0).init({}))
      Array(8., dtype=float32)
    """
    scale = jnp.ones([], jnp.float32)
    for node in jax.tree.leaves(opt_state, is_leaf=_is_loss_scale_state):
        if isinstance(node, StaticLossScaleState):
            scale = scale * node.loss_scale
        elif isinstance(node, DynamicLossScaleState):
            scale = scale * node.loss_scale * current_loss_scale(node.inner_state)
    return scale


def scale_loss(loss: jax.Array, opt_state: Any) -> jax.Array:
    r"""Multiplies a loss by the state's current loss scale (Keras's ``optimizer.scale_loss``).

    .. math::
        L_{scaled} = s \cdot L

    ``s`` is the product of every `static_loss_scale` and `dynamic_loss_scale`
    in the state (see `current_loss_scale`), so the loss comes back unchanged
    when there is none. The product is computed in at least float32 and
    returned in the loss's dtype.

    Args:
      loss: the loss, a scalar array.
      opt_state: the optimizer state.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> tx = gx.dynamic_loss_scale(gx.sgd(0.1), initial_scale=4.0)
      >>> gx.scale_loss(jnp.float32(0.25), tx.init({"w": jnp.zeros(2)}))
      Array(1., dtype=float32)
    """
    validation.float_array("scale_loss", "loss", loss)
    loss = jnp.asarray(loss)
    scale = current_loss_scale(opt_state)
    dtype = numerics.compute_dtype(loss.dtype)
    return (loss.astype(dtype) * scale.astype(dtype)).astype(loss.dtype)
