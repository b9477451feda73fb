"""Clipping per block: by each leaf's RMS (`clip_by_block_rms`), and by the parameters'
norms unit by unit (`adaptive_grad_clip`).

The norms are reduced in at least float32 and stay exact for finite entries
whose squares overflow. On a `flat_tree` buffer they are segment reductions
over each logical leaf (`leafwise.map_leafwise`), so the results are those of the
per-leaf run. A sharded leaf is reduced where it lies (under ``jit``, XLA
all-reduces the partial sums); nothing is gathered.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gradxform.core import leafwise, numerics, tree, validation
from gradxform.core.base import GradientTransformation, init_empty_state, public_constructor


@public_constructor
def clip_by_block_rms(threshold: float) -> GradientTransformation:
    r"""Scales each leaf down so that its root mean square is at most :math:`\tau`.

    .. math::
        r_i = \sqrt{\tfrac{1}{n_i} \textstyle\sum_j |g_{ij}|^2}, \qquad
        u_i = \frac{g_i}{\max(1,\; r_i / \tau)}

    for every leaf (block) :math:`i` of :math:`n_i` entries. Same as
    ``optax.clip_by_block_rms``; Adafactor's update clipping (Shazeer and
    Stern, 2018, "Adafactor: Adaptive Learning Rates with Sublinear Memory
    Cost"). A leaf within the bound is returned bit for bit. The RMS is taken
    in at least float32, and stays exact for finite entries whose squares
    overflow (optax then divides by infinity, zeroing the leaf); an empty leaf
    has RMS 0. As in optax, an infinite entry makes its leaf's RMS infinite
    (that entry NaN, the others 0), a NaN entry its whole leaf NaN. The
    params are not needed; when given, their tree must match the updates'.
    Runs on `flat_tree` buffers (a segment reduction per leaf) and on sharded
    leaves (no gather).

    Args:
      threshold: :math:`\tau > 0`, the largest RMS of a leaf.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> tx = gx.clip_by_block_rms(1.0)
      >>> tx.update({"w": jnp.array([3.0, -3.0])}, tx.init({"w": jnp.zeros(2)}))[0]["w"]
      Array([ 1., -1.], dtype=float32)
    """
    owner = "clip_by_block_rms"
    validation.positive(owner, "threshold", threshold)

    def rows_clipped(rows):
        rows_c = numerics.upcast(rows)
        inv_scale, scaled_norm = numerics.rows_norm_parts(rows_c)
        count = max(math.prod(rows.shape[1:]), 1)  # an empty leaf: 0 / 1, never 0 / 0
        rms = (scaled_norm / math.sqrt(count)) / inv_scale
        bound = numerics.hyperparameter(threshold, rms.dtype)
        denominator = jnp.maximum(1, rms / bound)
        return numerics.store(rows_c / denominator.astype(rows_c.dtype), rows.dtype)

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        if params is not None:  # unused, but a mismatch means the updates are not the params'
            tree.check_same_structure(owner, "params", params, updates, none_matches=True)
        return leafwise.map_leafwise(rows_clipped, updates), state

    return GradientTransformation(init_empty_state, update_fn)


def _check_axis(owner: str, axis: Any) -> None:
    """None, an int, or a tuple of distinct ints."""
    if axis is None:
        return
    items = axis if isinstance(axis, tuple) else (axis,)
    for item in items:
        if isinstance(item, (bool, np.bool_)) or not isinstance(item, (int, np.integer)):
            raise TypeError(f"{owner}: axis must be None, an int or a tuple of ints, got {axis!r}")
    if len(set(int(item) for item in items)) != len(items):
        raise ValueError(f"{owner}: axis must not repeat an axis, got {axis!r}")


def _unit_axes(owner: str, shape: tuple[int, ...], axis: Any) -> tuple[int, ...]:
    """The axes of a leaf of ``shape`` that one unit spans, as ``optax.unitwise_norm`` picks them.

    Without ``axis``: the whole leaf when it has at most one dimension longer
    than 1; else axis 0 for 2-D and 3-D leaves (a dense kernel ``(in, out)``,
    a multi-head one), axes 0-2 for 4-D (a convolution ``HWIO``), 0-3 for 5-D.
    """
    ndim = len(shape)
    if axis is not None:
        axes = tuple(int(a) for a in (axis if isinstance(axis, tuple) else (axis,)))
        if any(not -ndim <= a < ndim for a in axes):
            raise ValueError(f"{owner}: axis={axis!r} is out of range for a leaf of shape {shape}")
        normalized = tuple(a % ndim for a in axes)
        if len(set(normalized)) != len(normalized):
            raise ValueError(f"{owner}: axis={axis!r} names one axis twice for a leaf of shape {shape}")
        return normalized
    if sum(length != 1 for length in shape) <= 1:
        return tuple(range(ndim))
    defaults = {2: (0,), 3: (0,), 4: (0, 1, 2), 5: (0, 1, 2, 3)}
    if ndim not in defaults:
        raise ValueError(
            f"{owner}: a leaf of shape {shape} has no default unit (leaves of 1 to 5 dimensions "
            "do); pass axis= to name the axes a unit spans"
        )
    return defaults[ndim]


def _unit_norms(rows: jax.Array, axes: tuple[int, ...]) -> jax.Array:
    """The L2 norm over ``axes`` of ``rows`` (kept as size-1 axes), in at least float32.

    Finite entries whose squares overflow still give their norm: only then, in
    one ``lax.cond``, each unit is scaled by a power of two near its largest
    magnitude (exact) and its norm scaled back, as `numerics.rows_norm_parts`
    does for whole rows.
    """
    rows = numerics.upcast(rows)
    plain = numerics.norm_sqrt(jnp.sum(numerics.abs_sq(rows), axis=axes, keepdims=True))
    overflowed = jnp.isposinf(plain)

    def rescaled():
        largest = jnp.max(jnp.abs(rows), axis=axes, keepdims=True, initial=0).astype(plain.dtype)
        rescue = overflowed & jnp.isfinite(largest)
        top = jnp.finfo(plain.dtype).maxexp - 2  # 2**-top is still a normal number
        exponent = jnp.clip(jnp.floor(jnp.log2(jnp.where(rescue, largest, 1))), 0, top)
        inv_scale = jnp.ldexp(jnp.ones_like(plain), -exponent.astype(jnp.int32))
        scaled = jnp.sqrt(jnp.sum(numerics.abs_sq(rows * inv_scale.astype(rows.dtype)), axis=axes,
                                  keepdims=True))
        return jnp.where(rescue, scaled / inv_scale, plain)

    return jax.lax.cond(jnp.any(overflowed), rescaled, lambda: plain)


@public_constructor
def adaptive_grad_clip(
    clipping: float, eps: float = 1e-3, axis: int | tuple[int, ...] | None = None
) -> GradientTransformation:
    r"""Adaptive gradient clipping (AGC): each unit's update at most :math:`\lambda` times its
    parameters' norm.

    .. math::
        M_k = \lambda \max(\lVert\theta_k\rVert_2, \epsilon), \qquad
        u_k = \begin{cases} g_k & \lVert g_k\rVert_2 < M_k \\
        g_k\, M_k / \max(\lVert g_k\rVert_2, 10^{-6}) & \text{otherwise} \end{cases}

    for every unit :math:`k`, a slice of a leaf, as ``optax.unitwise_norm``
    cuts them: with ``axis=None``, a leaf with at most one dimension longer
    than 1 is one unit; otherwise a unit spans axis 0 of a 2-D or 3-D leaf
    (one unit per output column of a dense kernel), axes 0-2 of a 4-D one
    (per output channel of a ``HWIO`` convolution), axes 0-3 of a 5-D one;
    other leaves need ``axis``. Same as ``optax.adaptive_grad_clip``. Brock
    et al., 2021, "High-Performance Large-Scale Image Recognition Without
    Normalization". Norms are taken in at least float32 and stay exact for
    finite entries whose squares overflow (optax's become infinite: the unit
    is then zeroed, or NaN where both norms are).
    Unclipped units are returned bit for bit. Needs the params. Runs on
    `flat_tree` buffers (a segment reduction per leaf) and on sharded leaves
    (partial sums all-reduced, no gather).

    Args:
      clipping: :math:`\lambda \ge 0`, the largest ratio of a unit's update
        norm to its parameters' norm.
      eps: :math:`\epsilon \ge 0`, the smallest parameter norm (so that zero
        initialised parameters can move).
      axis: the axis or axes a unit spans, for every leaf (negative numbers
        count from the end); None picks them by the leaf's shape, as above.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> tx = gx.adaptive_grad_clip(0.1)
      >>> params = {"w": jnp.array([3.0, 4.0])}
      >>> tx.update({"w": jnp.array([6.0, 8.0])}, tx.init(params), params)[0]["w"]
      Array([0.3, 0.4], dtype=float32)
    """
    owner = "adaptive_grad_clip"
    validation.non_negative(owner, "clipping", clipping)
    validation.non_negative(owner, "eps", eps)
    _check_axis(owner, axis)

    def unit_norms(rows):
        axes = tuple(a + 1 for a in _unit_axes(owner, rows.shape[1:], axis))
        return jnp.broadcast_to(_unit_norms(rows, axes), rows.shape)

    def leaf(g, p, g_norm, p_norm):
        if p is None:
            raise ValueError(
                f"{owner}: every update needs its parameter, but params holds None where the "
                f"updates hold {tree.describe_node(g)}"
            )
        dtype = numerics.compute_dtype(g.dtype, jnp.asarray(p).dtype)
        real = numerics.real_dtype(dtype)
        g_norm, p_norm = g_norm.astype(real), p_norm.astype(real)
        largest = numerics.hyperparameter(clipping, real) * jnp.maximum(
            p_norm, numerics.hyperparameter(eps, real))
        # A factor of exactly 1 leaves an unclipped unit bit for bit; a product (not a
        # select between g and the clipped g) also takes g's sharding when the norms,
        # broadcast from fewer axes, have another one.
        factor = jnp.where(g_norm < largest, 1, largest / jnp.maximum(g_norm, 1e-6))
        return numerics.store(g.astype(dtype) * factor.astype(dtype), g.dtype)

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        if params is None:
            raise ValueError(f"{owner}: update needs params, got params=None")
        tree.check_same_structure(owner, "params", params, updates, none_matches=True)
        g_norms = leafwise.map_leafwise(unit_norms, updates)
        p_norms = leafwise.map_leafwise(unit_norms, params)
        return tree.tree_map_skip_none(leaf, updates, params, g_norms, p_norms), state

    return GradientTransformation(init_empty_state, update_fn)
