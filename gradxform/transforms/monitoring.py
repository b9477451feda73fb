"""Recording what the updates look like, for logging: `record_global_norm`."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from gradxform.core import tree
from gradxform.core.base import GradientTransformation, public_constructor


class RecordGlobalNormState(NamedTuple):
    """The global L2 norm of the updates this transformation last saw (float32)."""

    global_norm: jax.Array  # float32, shape ()


@public_constructor
def record_global_norm() -> GradientTransformation:
    r"""Passes the updates through unchanged and keeps their global norm in the state.

    .. math::
        u = g, \qquad S.\mathrm{global\_norm} = \sqrt{\textstyle\sum_i \lVert g_i \rVert_2^2}

    Put it before ``clip_by_global_norm`` to log the norm of the raw gradients
    (optax#326), and read it with ``gx.tree_get(state, "global_norm")``. The
    norm is accumulated in at least float32 and stored in float32; a
    non-finite gradient gives a non-finite norm. It is 0 after ``init``.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> tx = gx.chain(gx.record_global_norm(), gx.clip_by_global_norm(1.0), gx.sgd(0.1))
      >>> params = {"w": jnp.zeros(2)}
      >>> _, state = tx.update({"w": jnp.array([3.0, 4.0])}, tx.init(params), params)
      >>> float(gx.tree_get(state, "global_norm"))
      5.0
    """

    def init_fn(params):
        del params
        return RecordGlobalNormState(global_norm=jnp.zeros([], jnp.float32))

    def update_fn(updates, state, params=None, **extra_args):
        del state, params, extra_args
        norm = tree.tree_global_norm(updates).astype(jnp.float32)
        return updates, RecordGlobalNormState(global_norm=norm)

    return GradientTransformation(init_fn, update_fn)
