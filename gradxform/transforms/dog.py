"""Distance over gradients: DoG, DoWG and layer-wise DoG, step sizes from the distance travelled.

DoG and DoWG compute one step size for the whole tree: the distance from
the initial params and the sums of squared gradient norms are reduced over
every leaf in at least float32 and kept in float32 (float64 when a leaf is
float64). They run unchanged on `flat_tree` buffers and on sharded leaves
(a sum across devices, nothing gathered). Layer-wise DoG keeps a step size
per leaf, so it needs the per-leaf tree.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradxform.core import flat, numerics, randomness, tree, validation
from gradxform.core.base import GradientTransformation, Params, public_constructor

INIT_STEP_KINDS = ("distance", "learning_rate", "heuristic")


def _scalar_dtype(params: Any) -> Any:
    """float32, or float64 when a trainable leaf is (complex) float64."""
    dtypes = [numerics.real_dtype(numerics.leaf_dtype(p) if not hasattr(p, "dtype") else p.dtype)
              for p in jax.tree.leaves(params) if tree.is_trainable(p)]
    return numerics.compute_dtype(*dtypes)


def _squared_distance(start: Any, params: Any, dtype: Any) -> jax.Array:
    """:math:`\\lVert x_0 - x \\rVert^2` over the leaves of ``start``, in ``dtype``."""
    parts = tree.tree_map_skip_none(
        lambda x0, x: jnp.sum(numerics.abs_sq(numerics.upcast(x0, x.dtype, dtype)
                                              - numerics.upcast(jnp.asarray(x), x0.dtype, dtype))),
        start, params)
    return sum((p.astype(dtype) for p in jax.tree.leaves(parts)), jnp.zeros([], dtype))


def _scaled(step: jax.Array, updates: Any) -> Any:
    return tree.tree_map_skip_none(lambda g: numerics.scale_leaf(step, g), updates)


def _checked(owner: str, updates: Any, start: Any, params: Any) -> None:
    if params is None:
        raise ValueError(f"{owner}: update needs params, got params=None")
    tree.check_same_structure(owner, "state", start, updates)
    tree.check_same_structure(owner, "params", params, updates, none_matches=True)


def _over(numerator: jax.Array, denominator: jax.Array) -> jax.Array:
    """``numerator / denominator``, 0 / 0 excluded: a zero denominator means zero gradients so
    far, whose step is 0 whatever it is multiplied by."""
    return numerator / jnp.where(denominator > 0, denominator, 1)


class DoGState(NamedTuple):
    """optax's ``DoGState``, field for field: whether no update ran yet (bool), the params at
    ``init``, :math:`\\bar r_t` and :math:`G_t` (0-d, float32 or float64)."""

    is_init_step: jax.Array
    init_params: Params
    max_dist: jax.Array
    sum_sq_norm_grads: jax.Array


def check_init_step(owner: str, init_step: Any) -> None:
    """``(kind, value)``: a kind of `INIT_STEP_KINDS` and a positive number."""
    if not (isinstance(init_step, (tuple, list)) and len(init_step) == 2
            and isinstance(init_step[0], str)):
        raise TypeError(f"{owner}: init_step must be a pair (kind, value) with kind one of "
                        f"{INIT_STEP_KINDS}, got {init_step!r}")
    if init_step[0] not in INIT_STEP_KINDS:
        raise ValueError(f"{owner}: init_step's kind must be one of {INIT_STEP_KINDS}, got "
                         f"{init_step!r}")
    with validation.inside("init_step", init_step):
        validation.positive(owner, "init_step[1]", init_step[1])


@public_constructor
def scale_by_dog(init_step: tuple[str, float], eps: float = 1e-8) -> GradientTransformation:
    r"""Scales the updates by DoG's step size: the farthest distance travelled over gradient norms.

    .. math::
        \bar r_t = \max(\bar r_{t-1}, \lVert \theta_t - \theta_0 \rVert), \quad
        G_t = G_{t-1} + \lVert g_t \rVert^2, \qquad
        u_t = \frac{\bar r_t}{\sqrt{G_t + \epsilon}}\, g_t

    with the norms over the whole tree and :math:`\theta_0` the params given
    to ``init``. ``init_step`` sets the start: ``("distance", r)`` gives
    :math:`\bar r_0 = r`; ``("heuristic", \alpha)`` gives
    :math:`\bar r_0 = \alpha (1 + \lVert \theta_0 \rVert)` (so ``init`` needs
    the real params, not placeholders); ``("learning_rate", \eta)`` gives
    :math:`\bar r_0 = 0` and the first step size :math:`\eta`. Same
    arguments, numbers and state as ``optax.contrib``'s DoG transform, with
    the scalars in float32 (float64 for float64 params) rather than the
    params' lowest dtype; with :math:`\epsilon = 0` and zero gradients so far
    the (zero) update is not multiplied by :math:`\bar r / 0`. The updates keep
    the sign of the gradient: ``dog`` adds the learning rate's sign flip. The
    authors recommend averaging the iterates. Ivgi et al., 2023, "DoG is SGD's
    Best Friend: A Parameter-Free Dynamic Step Size Schedule".

    Args:
      init_step: ``(kind, value)`` with kind "distance", "learning_rate" or
        "heuristic" and a value > 0 (1e-6 for the heuristic, 1e-4 with batch
        normalisation, say the authors).
      eps: :math:`\epsilon \ge 0`, added to the sum of squared norms.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> tx = gx.scale_by_dog(("learning_rate", 0.1))
      >>> params = {"w": jnp.array([1.0, 2.0])}
      >>> tx.update({"w": jnp.array([3.0, 4.0])}, tx.init(params), params)[0]["w"]
      Array([0.3, 0.4], dtype=float32)
    """
    owner = "scale_by_dog"
    check_init_step(owner, init_step)
    validation.non_negative(owner, "eps", eps)
    kind, value = init_step

    def init_fn(params):
        dtype, copy = _scalar_dtype(params), tree.tree_copy_params(params)
        if kind == "distance":
            start = jnp.asarray(value, dtype)
        elif kind == "heuristic":
            start = (value * (1 + tree.tree_plain_norm(copy))).astype(dtype)
        else:
            start = jnp.zeros([], dtype)
        return DoGState(is_init_step=jnp.asarray(True), init_params=copy,
                        max_dist=start, sum_sq_norm_grads=jnp.zeros([], dtype))

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        _checked(owner, updates, state.init_params, params)
        dtype = state.max_dist.dtype
        distance = numerics.norm_sqrt(_squared_distance(state.init_params, params, dtype))
        max_dist = jnp.maximum(state.max_dist, distance)
        sum_sq = state.sum_sq_norm_grads + tree.tree_squared_norm(updates).astype(dtype)
        step = _over(max_dist, jnp.sqrt(sum_sq + numerics.hyperparameter(eps, dtype)))
        if kind == "learning_rate":
            step = jnp.where(state.is_init_step, jnp.asarray(value, dtype), step)
        return _scaled(step, updates), DoGState(
            is_init_step=jnp.asarray(False), init_params=state.init_params,
            max_dist=max_dist, sum_sq_norm_grads=sum_sq)

    return GradientTransformation(init_fn, update_fn)


class DoWGState(NamedTuple):
    """optax's ``DoWGState``, field for field: the params at ``init``, :math:`v_t` and
    :math:`\\bar r_t^2` (0-d, float32 or float64)."""

    init_params: Params
    weighted_sq_norm_grads: jax.Array
    estim_sq_dist: jax.Array


@public_constructor
def scale_by_dowg(init_estim_sq_dist: float | None = None, eps: float = 1e-4
                  ) -> GradientTransformation:
    r"""Scales the updates by DoWG's step size: distance over distance-weighted gradients.

    .. math::
        \bar r_t^2 = \max(\bar r_{t-1}^2, \lVert \theta_t - \theta_0 \rVert^2), \quad
        v_t = v_{t-1} + \bar r_t^2 \lVert g_t \rVert^2, \qquad
        u_t = \frac{\bar r_t^2}{\sqrt{v_t} + \epsilon}\, g_t

    with the norms over the whole tree, :math:`\theta_0` the params given to
    ``init`` and :math:`\bar r_0^2` = ``init_estim_sq_dist`` (or
    :math:`\epsilon`). Same arguments, numbers and state as
    ``optax.contrib``'s DoWG transform, with the scalars in float32 (float64
    for float64 params) rather than the params' lowest dtype. The updates
    keep the sign of the gradient: ``dowg`` adds the learning rate's sign
    flip. Khaled et al., 2023, "DoWG Unleashed: An Efficient Universal
    Parameter-Free Gradient Descent Method".

    Args:
      init_estim_sq_dist: :math:`\bar r_0^2 > 0`, a first guess of the squared
        distance to the solution; None means ``eps``.
      eps: :math:`\epsilon > 0`, added to the denominator (and the default
        first guess).

    Example:
      >>> import gradxform as gx
      >>> tx = gx.chain(gx.scale_by_dowg(), gx.scale(-1.0))
    """
    owner = "scale_by_dowg"
    if init_estim_sq_dist is not None:
        validation.positive(owner, "init_estim_sq_dist", init_estim_sq_dist)
    validation.positive(owner, "eps", eps)
    first = eps if init_estim_sq_dist is None else init_estim_sq_dist

    def init_fn(params):
        dtype = _scalar_dtype(params)
        return DoWGState(init_params=tree.tree_copy_params(params), weighted_sq_norm_grads=jnp.zeros([], dtype),
                         estim_sq_dist=jnp.asarray(first, dtype))

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        _checked(owner, updates, state.init_params, params)
        dtype = state.estim_sq_dist.dtype
        estimate = jnp.maximum(state.estim_sq_dist,
                               _squared_distance(state.init_params, params, dtype))
        weighted = estimate * tree.tree_squared_norm(updates).astype(dtype)
        weighted = weighted + state.weighted_sq_norm_grads
        step = estimate / (jnp.sqrt(weighted) + numerics.hyperparameter(eps, dtype))
        return _scaled(step, updates), DoWGState(
            init_params=state.init_params, weighted_sq_norm_grads=weighted,
            estim_sq_dist=estimate)

    return GradientTransformation(init_fn, update_fn)


class ScaleByDistanceOverGradientsState(NamedTuple):
    """optax's ``ScaleByDistanceOverGradientsState``, field for field: per leaf, :math:`\\bar r`
    (0-d) and :math:`G` (shape ``(1,)``), in float32 (float64 for float64 leaves), and the params
    at ``init`` in ``param_dtype``."""

    max_dist: Any
    grad_sum_of_squares: Any
    init_params: Params


def _refuse_flat(owner: str, tree_: Any, what: str) -> None:
    if flat.is_flat(tree_):
        raise TypeError(
            f"{owner}: got a gx.flat_tree buffer as {what}, but {owner} keeps a step size per "
            "leaf (layer-wise DoG) and needs the leaf's shape, which a flat buffer does not "
            "keep. Use the per-leaf tree instead: pass params.unravel() (and its gradients) "
            "rather than the FlatTree, or use scale_by_dog, whose step is global"
        )


@public_constructor
def scale_by_distance_over_gradients(
    reps_rel: float = 1e-6, eps: float = 1e-8, param_dtype: Any = jnp.float32,
    global_scale: float = 1.0,
) -> GradientTransformation:
    r"""Layer-wise DoG (LDoG): each leaf's updates scaled by its own distance over gradients.

    .. math::
        \bar r_{i,t} = \max(\bar r_{i,t-1}, \lVert \theta_{i,t} - \theta_{i,0} \rVert), \quad
        G_{i,t} = G_{i,t-1} + \lVert g_{i,t} \rVert^2, \qquad
        u_{i,t} = s\, \frac{\bar r_{i,t}}{\sqrt{G_{i,t} + \epsilon}}\, g_{i,t}

    for every leaf (layer) :math:`i`, with
    :math:`\bar r_{i,0} = \rho (1 + \lVert \theta_{i,0} \rVert)`. Same
    arguments, numbers and state as ``optax.scale_by_distance_over_gradients``,
    except that a 0-d leaf's update keeps shape ``()`` (optax's has shape
    ``(1,)``), the per-leaf scalars are float32 (float64 for float64 leaves)
    rather than the leaf's dtype, complex leaves keep their imaginary parts in
    ``init_params``, and with :math:`\epsilon = 0` a leaf whose gradients were
    all zero so far gets a zero update rather than :math:`0 \cdot \infty`. The
    step sizes are per leaf, so a `flat_tree` buffer raises a `TypeError` (use
    the per-leaf tree). Ivgi et al., 2023, "DoG is SGD's Best Friend: A
    Parameter-Free Dynamic Step Size Schedule".

    Args:
      reps_rel: :math:`\rho > 0`, the relative first distance (1e-6; 1e-4 with
        batch normalisation, say the authors).
      eps: :math:`\epsilon \ge 0`, added to each sum of squared norms.
      param_dtype: dtype of the stored initial params (None: the params').
      global_scale: :math:`s`, a real factor (typically 1 or -1).

    Example:
      >>> import gradxform as gx
      >>> tx = gx.scale_by_distance_over_gradients(global_scale=-1.0)
    """
    owner = "scale_by_distance_over_gradients"
    validation.positive(owner, "reps_rel", reps_rel)
    validation.non_negative(owner, "eps", eps)
    validation.float_dtype(owner, "param_dtype", param_dtype)
    validation.real_number(owner, "global_scale", global_scale)

    def init_fn(params):
        _refuse_flat(owner, params, "params")

        def first(p):
            norm = tree.tree_plain_norm(jnp.asarray(p))
            return (numerics.hyperparameter(reps_rel, norm.dtype) * (1 + norm)).astype(norm.dtype)

        start = tree.tree_copy_params(params, param_dtype)
        return ScaleByDistanceOverGradientsState(
            # An abstract param (a restore target) has no norm: its zero copy stands in.
            max_dist=tree.tree_map_skip_none(
                lambda x0, p: first(x0 if isinstance(p, jax.ShapeDtypeStruct) else p), start,
                params),
            grad_sum_of_squares=tree.tree_map_skip_none(
                lambda x0, p: randomness.replicated_like(jnp.zeros((1,), _scalar_dtype(p)), p), start,
                params),
            init_params=start)

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        _refuse_flat(owner, updates, "updates")
        _checked(owner, updates, state.init_params, params)

        def leaf(g, r, total, x0, p):
            dtype = r.dtype
            distance = numerics.norm_sqrt(_squared_distance(x0, p, dtype))
            r_new = jnp.maximum(r, distance)
            total_new = total + tree.tree_squared_norm(g).astype(dtype)
            step = numerics.hyperparameter(global_scale, dtype) * _over(
                r_new, jnp.sqrt(total_new + numerics.hyperparameter(eps, dtype)))
            return numerics.scale_leaf(jnp.reshape(step, ()), g), r_new, total_new

        out, max_dist, sums = tree.tree_map_multi(
            leaf, 3, updates, state.max_dist, state.grad_sum_of_squares, state.init_params,
            params)
        return out, ScaleByDistanceOverGradientsState(
            max_dist=max_dist, grad_sum_of_squares=sums, init_params=state.init_params)

    return GradientTransformation(init_fn, update_fn)
