"""Skipping steps whose gradients hold a NaN or an inf: `apply_if_finite`."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradxform.core import control, numerics, sparse, tree, validation
from gradxform.core.base import GradientTransformation, public_constructor


class ApplyIfFiniteState(NamedTuple):
    """optax's ``ApplyIfFiniteState``, field for field."""

    notfinite_count: jax.Array  # int32: consecutive non-finite steps
    last_finite: jax.Array  # bool: whether the last step was finite
    total_notfinite: jax.Array  # int32: non-finite steps so far
    inner_state: Any


@sparse.row_sparse_rule("routes")
@public_constructor
def apply_if_finite(inner: GradientTransformation, max_consecutive_errors: int) -> GradientTransformation:
    r"""Skips the steps whose gradients hold a NaN or an inf (optax's ``apply_if_finite``).

    .. math::
        u = \begin{cases} \mathrm{inner}(g) & g \text{ finite, or more than } N
        \text{ non-finite steps in a row} \\ -0 & \text{otherwise} \end{cases}

    On a skipped step the update is ``-0.0``, so the params stay bit-for-bit the
    same, and the inner state is left untouched; only the counters move. After
    ``max_consecutive_errors`` skips in a row, the next non-finite step is
    applied (as optax does) so that training does not silently stall.

    Args:
      inner: the transformation to protect.
      max_consecutive_errors: :math:`N \ge 0`.

    Example:
      >>> import gradxform as gx
      >>> tx = gx.apply_if_finite(gx.adam(1e-3), max_consecutive_errors=5)
    """
    owner = "apply_if_finite"
    validation.transformation(owner, "inner", inner)
    max_consecutive_errors = validation.positive_int(
        owner, "max_consecutive_errors", max_consecutive_errors, minimum=0
    )

    def init_fn(params):
        return ApplyIfFiniteState(
            notfinite_count=numerics.zero_count(),
            last_finite=jnp.array(True, jnp.bool_),
            total_notfinite=numerics.zero_count(),
            inner_state=inner.init(params),
        )

    def update_fn(updates, state, params=None, **extra_args):
        finite = tree.tree_all_finite(updates)
        notfinite_count = jnp.where(
            finite, jnp.zeros([], jnp.int32), numerics.safe_increment(state.notfinite_count)
        )
        apply = jnp.logical_or(finite, notfinite_count > max_consecutive_errors)
        new_updates, inner_state = control.update_or_hold(
            apply, inner, updates, state.inner_state, params, extra_args
        )
        return new_updates, ApplyIfFiniteState(
            notfinite_count=notfinite_count,
            last_finite=finite,
            total_notfinite=jnp.where(
                finite, state.total_notfinite, numerics.safe_increment(state.total_notfinite)
            ),
            inner_state=inner_state,
        )

    return GradientTransformation(init_fn, update_fn)
