"""`scale_by_shape`: Muon's step scale, a factor of each matrix's fan-in and fan-out."""

from __future__ import annotations

import math
from typing import Any, Callable

from gradxform.core import numerics, validation
from gradxform.core.base import EmptyState, GradientTransformation, public_constructor
from gradxform.core.matrices import (
    MuonDimensionNumbers,
    check_dimension_numbers,
    map_matrices,
    refuse_flat,
)


@public_constructor
def scale_by_shape(
    weight_dimension_numbers: MuonDimensionNumbers | Any | Callable[[Any], Any] | None = None,
    consistent_rms: float | None = None,
) -> GradientTransformation:
    r"""Scales each matrix update by a factor of its shape: Muon's step-size transfer rule.

    .. math::
        u = g \sqrt{\max(1, d_{out} / d_{in})} \quad\text{or, with } \rho =
        \mathrm{consistent\_rms}, \quad u = g\, \rho \sqrt{\max(d_{in}, d_{out})}

    with :math:`d_{in}` and :math:`d_{out}` the sizes of the leaf's reduction
    and output axes (see `MuonDimensionNumbers`). The first is Jordan's width
    scaling; the second, Liu et al. (2025), gives an orthogonalised update an
    RMS of about :math:`\rho` whatever its shape (0.2 matches AdamW's). optax's
    ``contrib._muon.scale_by_shape``, whose ``None`` dimension numbers fail on a
    tree: here they mean that every leaf is a plain matrix. It needs each
    leaf's shape, so it refuses a ``gx.flat_tree`` buffer.

    Args:
      weight_dimension_numbers: a `MuonDimensionNumbers` for every leaf, a tree
        of them shaped like (a prefix of) the params (a None entry: a 2-D
        leaf, axes 0 and 1), or a callable ``params -> such a tree``. None:
        every leaf is a 2-D matrix.
      consistent_rms: :math:`\rho \ge 0`, or None for the width scaling.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> tx = gx.scale_by_shape()
      >>> tx.update({"w": jnp.ones((2, 8))}, tx.init({"w": jnp.ones((2, 8))}))[0]["w"][0, 0]
      Array(2., dtype=float32)
    """
    owner = "scale_by_shape"
    check_dimension_numbers(owner, "weight_dimension_numbers", weight_dimension_numbers)
    if consistent_rms is not None:
        validation.non_negative(owner, "consistent_rms", consistent_rms)

    def init_fn(params):
        refuse_flat(owner, params, "params")
        return EmptyState()

    def leaf(view, g):
        if g.size == 0:
            return g
        if consistent_rms is None:
            return numerics.scale_leaf(math.sqrt(max(1.0, view.fan_out / view.fan_in)), g)
        rms = numerics.python_number(consistent_rms)
        base = math.sqrt(max(view.fan_in, view.fan_out))
        factor = base * rms if isinstance(rms, (int, float)) else (
            numerics.hyperparameter(rms, numerics.compute_dtype(rms.dtype)) * base)
        return numerics.scale_leaf(factor, g)

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        refuse_flat(owner, updates, "updates")
        (updates,) = map_matrices(owner, "weight_dimension_numbers", weight_dimension_numbers,
                                  lambda view, g: (leaf(view, g),), 1, updates)
        return updates, state

    return GradientTransformation(init_fn, update_fn)
