"""NovoGrad: Adam-like moments with one second moment per leaf (per layer).

The second moment is a scalar per leaf, the moving average of the leaf's
squared norm. On a `FlatTree` it is kept per logical leaf (a tree of scalars
shaped like ``FlatTree.logical``): the norms are per-leaf segment reductions
over the buffers, so the state and the updates are the per-leaf ones.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.sharding import NamedSharding, PartitionSpec

from gradxform.core import flat, numerics, tree, validation
from gradxform.core.base import GradientTransformation, Updates, public_constructor


class ScaleByNovogradState(NamedTuple):
    """The step count, the first moment, and one second moment (a scalar) per leaf."""

    count: jax.Array  # int32, shape ()
    mu: Updates
    nu: Updates


def _is_hole(buffer: Any) -> bool:
    """A buffer a mask left out (``None`` or a ``MaskedNode``): no arrays."""
    return not jax.tree.leaves(buffer)


def _per_leaf(target: Any, fn: Any) -> Any:
    """``fn(rows)`` for each logical leaf of ``target``: a tree of its results.

    ``fn`` maps leaves stacked on a leading axis, ``(k, *shape)``, to ``k``
    scalars. A plain tree gives a tree like itself (``None`` kept); a
    `FlatTree` gives a tree like its logical tree, one batched call per run of
    equal-shape leaves, with ``None`` for the leaves of a buffer a mask left out.
    """
    if not flat.is_flat(target):
        return tree.tree_map_skip_none(lambda leaf: fn(leaf[None])[0], target)
    layout = target.layout
    results: list = [None] * len(layout.slots)
    for spec, buffer in zip(layout.buffers, target.buffers):
        if _is_hole(buffer):
            continue
        if spec.kept:
            results[spec.members[0]] = fn(jnp.asarray(buffer)[None])[0]
            continue
        for offset, shape, members in spec.runs(layout.slots):
            length = len(members) * math.prod(shape)
            block = lax.slice_in_dim(buffer, offset, offset + length)
            values = fn(jnp.reshape(block, (len(members), *shape)))
            for row, index in enumerate(members):
                results[index] = values[row]
    return layout.treedef.unflatten(results)


def _per_element(updates: Any, values: Any) -> Any:
    """``values`` (one per logical leaf) laid out like ``updates``: `flat.per_buffer`, with a
    buffer a mask left out kept as it is in ``updates`` (a ``MaskedNode``, no arrays)."""
    laid_out = flat.per_buffer(updates, values)
    if not flat.is_flat(updates):
        return laid_out
    buffers = [mine if _is_hole(mine) else theirs
               for mine, theirs in zip(updates.buffers, laid_out.buffers)]
    return flat.FlatTree(buffers, updates.layout)


def _squared_norms(rows: jax.Array) -> jax.Array:
    """Each row's sum of ``|x|**2``, in at least float32."""
    return jnp.sum(numerics.abs_sq(numerics.upcast(rows)), axis=tuple(range(1, rows.ndim)))


def _scalar_zero(x: Any, dtype: Any) -> jax.Array:
    """A 0-d zero of ``dtype`` on ``x``'s devices, replicated (a scalar state of a sharded leaf)."""
    sharding = getattr(x, "sharding", None)
    if sharding is None or isinstance(x, jax.core.Tracer):
        return jnp.zeros((), dtype)
    if isinstance(sharding, NamedSharding):
        sharding = NamedSharding(sharding.mesh, PartitionSpec(), memory_kind=sharding.memory_kind)
    elif len(sharding.device_set) > 1 and not sharding.is_fully_replicated:
        return jnp.zeros((), dtype)
    return jnp.zeros((), dtype, device=sharding)


def _init_nu(params: Any) -> Any:
    """A zero scalar per trainable leaf, in the real dtype of its squares (float32 for float16)."""

    def leaf(x):
        if x is None or not tree.is_trainable(x):
            return None
        dtype = x.dtype if hasattr(x, "dtype") else numerics.leaf_dtype(x)
        return _scalar_zero(x, numerics.squares_dtype(dtype))

    if not flat.is_flat(params):
        return jax.tree.map(leaf, params, is_leaf=lambda x: x is None)
    layout = params.layout
    zeros: list = [None] * len(layout.slots)
    for spec, buffer in zip(layout.buffers, params.buffers):
        if not _is_hole(buffer) and jnp.issubdtype(spec.dtype, jnp.inexact):
            for index in spec.members:
                zeros[index] = _scalar_zero(buffer, numerics.squares_dtype(spec.dtype))
    return layout.treedef.unflatten(zeros)


@public_constructor
def scale_by_novograd(
    b1: float = 0.9,
    b2: float = 0.25,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    weight_decay: float = 0.0,
    mu_dtype: Any = None,
) -> GradientTransformation:
    r"""Rescales updates by NovoGrad: each leaf's gradient is normalised by its own moving norm.

    .. math::
        v_t = \beta_2 v_{t-1} + (1-\beta_2) \lVert g_t \rVert_2^2, \quad v_1 = \lVert g_1 \rVert_2^2,
        \\
        m_t = \beta_1 m_{t-1} + \frac{g_t}{\sqrt{v_t + \epsilon_{root}} + \epsilon} + \lambda \theta_t,
        \qquad u_t = m_t

    for every leaf :math:`g_t` (a layer's weights), :math:`v_t` being one
    number per leaf. Same formula and defaults as ``optax.scale_by_novograd``,
    whose state layout it has; :math:`v` is kept in the params' real dtype
    (float32 for float16 params, whose range cannot hold a squared norm).
    ``update`` needs the params unless ``weight_decay`` is 0. On a `FlatTree`
    :math:`v` is a tree of scalars shaped like its logical tree, and the norms
    are per logical leaf. Ginsburg et al., 2019, "Stochastic Gradient Methods
    with Layer-wise Adaptive Moments for Training of Deep Networks".

    Args:
      b1: :math:`\beta_1` in [0, 1].
      b2: :math:`\beta_2` in [0, 1).
      eps: :math:`\epsilon \ge 0`, added outside the square root.
      eps_root: :math:`\epsilon_{root} \ge 0`, added inside the square root.
      weight_decay: :math:`\lambda \ge 0`, a number (as optax, not a schedule).
      mu_dtype: dtype of :math:`m`; None keeps the params' dtype.

    Example:
      >>> import gradxform as gx
      >>> tx = gx.chain(gx.scale_by_novograd(), gx.scale_by_learning_rate(1e-2))
    """
    owner = "scale_by_novograd"
    validation.decay_rate(owner, "b1", b1, allow_one=True)
    validation.decay_rate(owner, "b2", b2)
    validation.non_negative(owner, "eps", eps)
    validation.non_negative(owner, "eps_root", eps_root)
    validation.non_negative(owner, "weight_decay", weight_decay)
    validation.float_dtype(owner, "mu_dtype", mu_dtype)
    static_decay = numerics.python_number(weight_decay)
    decays = not (isinstance(static_decay, (int, float)) and static_decay == 0)

    def init_fn(params):
        return ScaleByNovogradState(
            count=numerics.zero_count(), mu=tree.tree_zeros_like(params, mu_dtype),
            nu=_init_nu(params),
        )

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        tree.check_same_structure(owner, "state", state.mu, updates)
        if decays and params is None:
            raise ValueError(f"{owner}: update needs params when weight_decay is not 0, "
                             "got params=None")
        if decays:
            tree.check_same_structure(owner, "params", params, updates, none_matches=True)
        count = numerics.safe_increment(state.count)
        first = count == 1

        def second_moment(norm, nu):
            real = numerics.compute_dtype(norm.dtype, nu.dtype)
            norm = norm.astype(real)
            return jnp.where(first, norm, numerics.moment(b2, nu.astype(real), norm))

        norms = _per_leaf(updates, _squared_norms)
        nu_c = jax.tree.map(second_moment, norms, state.nu)

        def leaf(g, mu, nu, p):
            g_c = numerics.upcast(g, mu.dtype, nu.dtype)
            real = numerics.real_dtype(g_c.dtype)
            step = numerics.root_scaled(g_c, nu.astype(real), eps, eps_root)
            if p is not None:
                decay = numerics.hyperparameter(weight_decay, g_c.dtype)
                step = step + decay * jnp.asarray(p).astype(g_c.dtype)
            beta_1 = numerics.operand(numerics.hyperparameter(b1, g_c.dtype), g_c.dtype)
            mu_new = lax.add(lax.mul(beta_1, mu.astype(g_c.dtype)), step)
            return numerics.store(mu_new, g.dtype), numerics.store(mu_new, mu.dtype)

        params_here = params if decays else jax.tree.map(lambda g: None, updates)
        out, mu = tree.tree_map_multi(
            leaf, 2, updates, state.mu, _per_element(updates, nu_c), params_here
        )
        nu = jax.tree.map(lambda new, old: new.astype(old.dtype), nu_c, state.nu)
        return out, ScaleByNovogradState(count=count, mu=mu, nu=nu)

    return GradientTransformation(init_fn, update_fn)
