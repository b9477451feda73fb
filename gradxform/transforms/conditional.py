"""Running an inner transformation only on the steps a function chooses.

`conditionally_transform` passes the updates through on the other steps,
`conditionally_mask` zeroes them. Both evaluate ``should_transform_fn`` on a
step counter they keep, and run the inner update in a ``lax.cond``: on the
other steps it is not computed, and its state is kept bit for bit.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from gradxform.core import control, numerics, validation
from gradxform.core.base import GradientTransformation, OptState, public_constructor
from gradxform.core.combine import extra_args_filter

class ConditionallyTransformState(NamedTuple):
    """optax's ``ConditionallyTransformState``, field for field."""

    inner_state: OptState
    step: jax.Array  # int32, shape (): updates so far (saturating)


class ConditionallyMaskState(NamedTuple):
    """optax's ``ConditionallyMaskState``, field for field (``step`` first, as there)."""

    step: jax.Array  # int32, shape (): updates so far (saturating)
    inner_state: OptState


def _check_arguments(owner: str, inner: Any, should_transform_fn: Any, forward_extra_args: Any):
    validation.transformation(owner, "inner", inner)
    if not callable(should_transform_fn):
        raise TypeError(
            f"{owner}: should_transform_fn must be callable, got {should_transform_fn!r}"
        )
    validation.boolean(owner, "forward_extra_args", forward_extra_args)


def _condition(owner: str, should_transform_fn: Callable[..., Any], step: jax.Array,
               extra_args: dict, forward_extra_args: bool) -> jax.Array:
    """``should_transform_fn(step, **extra_args)`` as a bool scalar; anything else raises."""
    value = should_transform_fn(step, **(extra_args if forward_extra_args else {}))
    dtype = getattr(value, "dtype", None)
    if isinstance(value, (bool, int)) or (
        dtype is not None and (dtype == jnp.bool_ or jnp.issubdtype(dtype, jnp.integer))
    ):
        if jnp.shape(value) == ():
            return jnp.asarray(value).astype(jnp.bool_)
        raise ValueError(
            f"{owner}: should_transform_fn must return one bool (shape ()), got an array of shape "
            f"{jnp.shape(value)} from should_transform_fn={should_transform_fn!r}"
        )
    raise TypeError(
        f"{owner}: should_transform_fn must return a bool, got {value!r} from "
        f"should_transform_fn={should_transform_fn!r}"
    )


@public_constructor
def conditionally_transform(
    inner: GradientTransformation,
    should_transform_fn: Callable[..., Any],
    forward_extra_args: bool = False,
) -> GradientTransformation:
    r"""Runs ``inner`` on the steps ``should_transform_fn`` chooses; passes the updates on else.

    With :math:`t` the number of earlier updates (int32, from 0, saturating)
    and :math:`c` the condition:

    .. math::
        (u, S_{inner}) = \begin{cases} \mathrm{inner}(g, S_{inner}) & c(t) \\
        (g, S_{inner}) & \text{otherwise} \end{cases}

    optax's ``conditionally_transform``: the same arguments and state. The
    inner update runs in a ``lax.cond``, so it is not computed on the other
    steps, and its state stays bit for bit as it was. To zero the updates
    instead, use `conditionally_mask`.

    Args:
      inner: the transformation to run; it gets the extra keyword arguments its
        ``update`` accepts.
      should_transform_fn: ``c``, called with the step count (an int32 array of
        shape ()) and, with ``forward_extra_args``, the extra keyword arguments
        of ``update``; it returns a bool of shape ().
      forward_extra_args: pass ``update``'s extra keyword arguments to
        ``should_transform_fn`` too.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> tx = gx.conditionally_transform(gx.scale(10.0), lambda step: step % 2 == 0)
      >>> state = tx.init({"w": jnp.ones(1)})
      >>> for _ in range(3):
      ...     updates, state = tx.update({"w": jnp.ones(1)}, state)
      ...     print(updates["w"])
      [10.]
      [1.]
      [10.]
    """
    owner = "conditionally_transform"
    _check_arguments(owner, inner, should_transform_fn, forward_extra_args)
    accepted = extra_args_filter(inner.update)

    def init_fn(params):
        return ConditionallyTransformState(
            inner_state=inner.init(params), step=numerics.zero_count()
        )

    def update_fn(updates, state, params=None, **extra_args):
        condition = _condition(
            owner, should_transform_fn, state.step, extra_args, forward_extra_args
        )
        inner_args = accepted(extra_args)

        def run(operands):
            updates, inner_state, params = operands
            return inner.update(updates, inner_state, params, **inner_args)

        def pass_on(operands):
            return operands[0], operands[1]

        new_updates, inner_state = jax.lax.cond(
            condition, run, pass_on, (updates, state.inner_state, params)
        )
        return new_updates, ConditionallyTransformState(
            inner_state=inner_state, step=numerics.safe_increment(state.step)
        )

    return GradientTransformation(init_fn, update_fn)


@public_constructor
def conditionally_mask(
    inner: GradientTransformation,
    should_transform_fn: Callable[..., Any],
    forward_extra_args: bool = False,
) -> GradientTransformation:
    r"""Runs ``inner`` on the steps ``should_transform_fn`` chooses; the updates are zero otherwise.

    With :math:`t` the number of earlier updates (int32, from 0, saturating)
    and :math:`c` the condition:

    .. math::
        (u, S_{inner}) = \begin{cases} \mathrm{inner}(g, S_{inner}) & c(t) \\
        (-0, S_{inner}) & \text{otherwise} \end{cases}

    optax's ``conditionally_mask``: the same arguments and state. The inner
    update runs in a ``lax.cond``, so it is not computed on the other steps,
    and its state stays bit for bit as it was. One difference: the zero is
    ``-0.0`` (optax's is ``+0.0``), which leaves every parameter bit for bit
    as it is, ``-0.0`` ones included. To pass the updates through instead,
    use `conditionally_transform`.

    Args:
      inner: the transformation to run; it gets the extra keyword arguments its
        ``update`` accepts.
      should_transform_fn: ``c``, called with the step count (an int32 array of
        shape ()) and, with ``forward_extra_args``, the extra keyword arguments
        of ``update``; it returns a bool of shape ().
      forward_extra_args: pass ``update``'s extra keyword arguments to
        ``should_transform_fn`` too.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> tx = gx.conditionally_mask(gx.sgd(0.1), lambda step: step >= 1)
      >>> state = tx.init({"w": jnp.ones(1)})
      >>> for _ in range(2):
      ...     updates, state = tx.update({"w": jnp.ones(1)}, state)
      ...     print(updates["w"])
      [-0.]
      [-0.1]
    """
    owner = "conditionally_mask"
    _check_arguments(owner, inner, should_transform_fn, forward_extra_args)

    def init_fn(params):
        return ConditionallyMaskState(step=numerics.zero_count(), inner_state=inner.init(params))

    def update_fn(updates, state, params=None, **extra_args):
        condition = _condition(
            owner, should_transform_fn, state.step, extra_args, forward_extra_args
        )
        new_updates, inner_state = control.update_or_hold(
            condition, inner, updates, state.inner_state, params, extra_args
        )
        return new_updates, ConditionallyMaskState(
            step=numerics.safe_increment(state.step), inner_state=inner_state
        )

    return GradientTransformation(init_fn, update_fn)
