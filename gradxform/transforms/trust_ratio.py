"""Per-block scaling by the parameters: trust ratios (LARS, LAMB, Fromage) and block norms.

A *block* is one leaf of the parameter tree (a weight matrix, a bias
vector). Each transformation here multiplies a leaf's update by a number
computed from that leaf's parameters (and, for the trust ratio, from the
update itself). The norms are reduced in at least float32, and stay exact
for finite entries whose squares overflow (`numerics.rows_norm_parts`).

On a `flat_tree` buffer the per-leaf norms are segment reductions, one per
run of equal-shape leaves (`leafwise.map_leafwise`), broadcast back over each
leaf's elements: the results are those of the per-leaf run. A leaf sharded
over several devices is reduced where it lies; under ``jit`` XLA adds the
partial sums across devices (an all-reduce of one number per leaf), and
nothing is gathered.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import jax
import jax.numpy as jnp

from gradxform.core import leafwise, numerics, tree, validation
from gradxform.core.base import GradientTransformation, init_empty_state, public_constructor


def _row_norms(rows: jax.Array) -> jax.Array:
    """Each row's L2 norm, shape ``(k, 1, ..., 1)``, in at least float32."""
    inv_scale, scaled_norm = numerics.rows_norm_parts(numerics.upcast(rows))
    return scaled_norm / inv_scale


def _row_rms(rows: jax.Array) -> jax.Array:
    """Each row's root mean square, shape ``(k, 1, ..., 1)``; 0 for an empty leaf."""
    inv_scale, scaled_norm = numerics.rows_norm_parts(numerics.upcast(rows))
    count = max(math.prod(rows.shape[1:]), 1)  # an empty leaf: 0 / 1, never 0 / 0
    return (scaled_norm / math.sqrt(count)) / inv_scale


def _per_leaf(statistic: Callable[[jax.Array], jax.Array], target: Any) -> Any:
    """``statistic`` of each logical leaf of ``target``, repeated over the leaf's elements.

    ``statistic`` maps leaves stacked as rows to one value per row; the result
    has ``target``'s structure (a `FlatTree` for a `FlatTree`), ready to meet
    it element by element.
    """
    return leafwise.map_leafwise(lambda rows: jnp.broadcast_to(statistic(rows), rows.shape), target)


def _at_least(norm: jax.Array, floor: Any) -> jax.Array:
    """optax's ``safe_norm`` on a computed norm: ``floor`` where ``norm <= floor``."""
    floor = numerics.hyperparameter(floor, norm.dtype)
    return jnp.where(norm <= floor, floor, norm)


def _scaled_by_params(owner: str, updates: Any, params: Any, statistics: tuple,
                      rule: Callable) -> Any:
    """Each leaf ``g`` times ``rule(*stats)``, in the compute dtype, stored in ``g``'s dtype.

    ``statistics`` are ``(statistic, of_updates)`` pairs: a per-row function and
    whether it is taken of the updates (else of the params). ``rule`` receives
    the statistics cast to the real compute dtype of ``g`` and ``p``.
    """
    if params is None:
        raise ValueError(f"{owner}: update needs params, got params=None")
    tree.check_same_structure(owner, "params", params, updates, none_matches=True)
    stats = [_per_leaf(statistic, updates if of_updates else params)
             for statistic, of_updates in statistics]

    def leaf(g, p, *values):
        if p is None:
            raise ValueError(
                f"{owner}: every update needs its parameter, but params holds None where the "
                f"updates hold {tree.describe_node(g)}"
            )
        dtype = numerics.compute_dtype(g.dtype, jnp.asarray(p).dtype)
        real = numerics.real_dtype(dtype)
        factor = rule(*(value.astype(real) for value in values))
        return numerics.store(g.astype(dtype) * factor.astype(dtype), g.dtype)

    return tree.tree_map_skip_none(leaf, updates, params, *stats)


@public_constructor
def scale_by_trust_ratio(
    min_norm: float = 0.0, trust_coefficient: float = 1.0, eps: float = 0.0
) -> GradientTransformation:
    r"""Scales each leaf's update by its trust ratio, the parameters' norm over the update's.

    .. math::
        n_\theta = \max(\lVert\theta_i\rVert_2, m), \quad n_u = \max(\lVert g_i\rVert_2, m),
        \qquad u_i = g_i \cdot \begin{cases} 1 & n_\theta = 0 \text{ or } n_u = 0 \\
        \dfrac{c\, n_\theta}{n_u + \epsilon} & \text{otherwise} \end{cases}

    for every leaf (layer) :math:`i`, the norms over the whole leaf. Same as
    ``optax.scale_by_trust_ratio``; it is the layer-wise step of LARS (You et
    al., 2017, "Large Batch Training of Convolutional Networks") and LAMB (You
    et al., 2020, "Large Batch Optimization for Deep Learning: Training BERT
    in 76 minutes"). A zero norm (zero parameters, or a zero update) leaves
    the update as it is, so freshly zeroed layers still move. The norms are
    taken in at least float32 and the ratio is never formed as
    :math:`0/0`. As in optax, an infinite update entry makes its leaf's ratio
    0 (that entry NaN, the others 0) and a NaN entry makes its whole leaf
    NaN. Finite entries whose squares overflow still give the right norms
    (optax's are infinite, its ratio NaN). Needs the params. Runs
    on `flat_tree` buffers (a segment norm per leaf) and on sharded leaves
    (no gather).

    Args:
      min_norm: :math:`m \ge 0`, the floor of both norms (0: none).
      trust_coefficient: :math:`c \ge 0`, a multiplier of the ratio.
      eps: :math:`\epsilon \ge 0`, added to the update's norm.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> tx = gx.scale_by_trust_ratio()
      >>> params = {"w": jnp.array([3.0, 4.0])}
      >>> tx.update({"w": jnp.array([0.0, 0.5])}, tx.init(params), params)[0]["w"]
      Array([0., 5.], dtype=float32)
    """
    owner = "scale_by_trust_ratio"
    validation.non_negative(owner, "min_norm", min_norm)
    validation.non_negative(owner, "trust_coefficient", trust_coefficient)
    validation.non_negative(owner, "eps", eps)

    def rule(update_norm, param_norm):
        param_norm = _at_least(param_norm, min_norm)
        update_norm = _at_least(update_norm, min_norm)
        zero = (param_norm == 0) | (update_norm == 0)
        coefficient = numerics.hyperparameter(trust_coefficient, param_norm.dtype)
        shift = numerics.hyperparameter(eps, param_norm.dtype)
        # Where a norm is 0 the ratio is replaced by 1: divide by 1 there, never 0 / 0.
        denominator = jnp.where(zero, 1, update_norm + shift)
        return jnp.where(zero, 1, coefficient * param_norm / denominator)

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        statistics = ((_row_norms, True), (_row_norms, False))
        return _scaled_by_params(owner, updates, params, statistics, rule), state

    return GradientTransformation(init_empty_state, update_fn)


@public_constructor
def scale_by_param_block_norm(min_scale: float = 1e-3) -> GradientTransformation:
    r"""Multiplies each leaf's update by the L2 norm of that leaf's parameters.

    .. math::
        u_i = g_i \cdot \max(\lVert\theta_i\rVert_2, s)

    for every leaf (block) :math:`i`, the norm over the whole leaf. Same as
    ``optax.scale_by_param_block_norm``: it makes a step relative to the size
    of the layer it changes, as in Fromage and Nero (Bernstein et al., 2020,
    "On the distance between two neural networks and the stability of
    learning"). The norm is taken in at least float32. Needs the params. Runs
    on `flat_tree` buffers (a segment norm per leaf) and on sharded leaves
    (no gather).

    Args:
      min_scale: :math:`s \ge 0`, the smallest factor (for zero parameters).

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> tx = gx.scale_by_param_block_norm()
      >>> params = {"w": jnp.array([3.0, 4.0])}
      >>> tx.update({"w": jnp.array([1.0, -1.0])}, tx.init(params), params)[0]["w"]
      Array([ 5., -5.], dtype=float32)
    """
    owner = "scale_by_param_block_norm"
    validation.non_negative(owner, "min_scale", min_scale)

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        rule = lambda param_norm: _at_least(param_norm, min_scale)  # noqa: E731
        return _scaled_by_params(owner, updates, params, ((_row_norms, False),), rule), state

    return GradientTransformation(init_empty_state, update_fn)


@public_constructor
def scale_by_param_block_rms(min_scale: float = 1e-3) -> GradientTransformation:
    r"""Multiplies each leaf's update by the root mean square of that leaf's parameters.

    .. math::
        u_i = g_i \cdot \max\Big(\sqrt{\tfrac{1}{n_i} \textstyle\sum_j \theta_{ij}^2},\; s\Big)

    for every leaf (block) :math:`i` of :math:`n_i` entries. Same as
    ``optax.scale_by_param_block_rms``; Adafactor's relative step size
    (Shazeer and Stern, 2018, "Adafactor: Adaptive Learning Rates with
    Sublinear Memory Cost"). The mean is taken in at least float32; an empty
    leaf has RMS 0 (optax computes :math:`0/0` there, a NaN multiplying no
    entries). Needs the params. Runs on `flat_tree` buffers (a segment norm
    per leaf) and on sharded leaves (no gather).

    Args:
      min_scale: :math:`s \ge 0`, the smallest factor (for zero parameters).

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> tx = gx.scale_by_param_block_rms()
      >>> params = {"w": jnp.array([3.0, -3.0])}
      >>> tx.update({"w": jnp.array([1.0, 2.0])}, tx.init(params), params)[0]["w"]
      Array([3., 6.], dtype=float32)
    """
    owner = "scale_by_param_block_rms"
    validation.non_negative(owner, "min_scale", min_scale)

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        rule = lambda param_rms: _at_least(param_rms, min_scale)  # noqa: E731
        return _scaled_by_params(owner, updates, params, ((_row_rms, False),), rule), state

    return GradientTransformation(init_empty_state, update_fn)
