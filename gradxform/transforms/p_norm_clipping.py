"""Clipping by the global p-norm, with an offset in the divisor (``torch.nn.utils.clip_grad_norm_``)."""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
from jax.experimental import checkify

from gradxform.core import numerics, sparse, tree, validation
from gradxform.core.base import GradientTransformation, init_empty_state, public_constructor


def _norm_type(owner: str, norm_type: Any) -> float:
    norm_type = numerics.python_number(norm_type)
    if isinstance(norm_type, (int, float)) and not isinstance(norm_type, bool) and math.isinf(
            norm_type) and norm_type > 0:
        return math.inf
    value = validation.real_number(owner, "norm_type", norm_type)
    if value is None:
        raise TypeError(f"{owner}: norm_type must be a Python number (it picks the norm's "
                        f"formula), got {norm_type!r}")
    if not value > 0:
        raise ValueError(f"{owner}: norm_type must be > 0 (or inf), got {norm_type!r}")
    return value


def global_p_norm(updates: Any, p: float) -> jax.Array:
    """``(sum |x|**p) ** (1/p)`` over every entry (``max |x|`` for p = inf), in at least float32."""
    entries = [numerics.upcast(jnp.abs(jnp.asarray(x))) for x in tree.entries(updates)]
    if not entries:
        return jnp.zeros([], jnp.float32)
    if math.isinf(p):
        return jnp.max(jnp.stack([jnp.max(x, initial=0) for x in entries]))
    if p == 2:
        return tree.tree_plain_norm(updates)
    total = sum(jnp.sum(x ** p) for x in entries)
    return total ** (1 / p)


@sparse.row_sparse_rule("exact")
@public_constructor
def clip_by_global_p_norm(max_norm: float, norm_type: float = 2.0, eps: float = 0.0, *,
                          error_if_nonfinite: bool = False) -> GradientTransformation:
    r"""Scales all updates down together when their global p-norm exceeds :math:`c`.

    .. math::
        n = \Big(\textstyle\sum_i \sum_j |g_{ij}|^p\Big)^{1/p}
        \;(\max_{ij} |g_{ij}| \text{ for } p = \infty), \qquad
        u_i = g_i \min\Big(1, \frac{c}{n + \delta}\Big)

    ``torch.nn.utils.clip_grad_norm_`` is ``norm_type=p`` with
    :math:`\delta = 10^{-6}`; with ``norm_type=2, eps=0`` it is
    `clip_by_global_norm` (which computes the same scale as :math:`c/\max(n, c)`).
    A `RowSparse` leaf counts each row once, after summing duplicates. With a
    non-finite norm the updates become non-finite (as in torch), unless
    ``error_if_nonfinite`` adds a ``jax.experimental.checkify`` check that fails
    then (torch raises a ``RuntimeError``): wrap the step in
    ``checkify.checkify`` and throw the error it returns.

    Args:
      max_norm: :math:`c > 0`.
      norm_type: :math:`p > 0`, or ``inf``.
      eps: :math:`\delta \ge 0`, added to the norm in the divisor.
      error_if_nonfinite: check that :math:`n` is finite (checkify).

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> tx = gx.clip_by_global_p_norm(1.0, norm_type=1.0)
      >>> tx.update({"a": jnp.array([3.0, -1.0])}, tx.init(None))[0]["a"]
      Array([ 0.75, -0.25], dtype=float32)
    """
    owner = "clip_by_global_p_norm"
    validation.positive(owner, "max_norm", max_norm)
    p = _norm_type(owner, norm_type)
    validation.non_negative(owner, "eps", eps)
    validation.boolean(owner, "error_if_nonfinite", error_if_nonfinite)

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        norm = global_p_norm(updates, p)
        if error_if_nonfinite:
            checkify.check(jnp.isfinite(norm), f"{owner}: the global norm of order {p} of the "
                           "updates is {norm}, not finite, so it cannot be clipped", norm=norm)
        bound = numerics.hyperparameter(max_norm, norm.dtype)
        scale = jnp.minimum(bound / (norm + numerics.hyperparameter(eps, norm.dtype)), 1)

        def leaf(g):
            g_c = numerics.upcast(g, norm.dtype)
            return (g_c * scale.astype(g_c.dtype)).astype(g.dtype)

        return tree.tree_map_skip_none(lambda g: sparse.map_values(leaf, g), updates), state

    return GradientTransformation(init_empty_state, update_fn)
