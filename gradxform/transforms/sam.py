"""Sharpness-aware minimisation: `sam`, and the gradient `normalize` its ascent step uses.

SAM takes the gradient at a point perturbed uphill from the params and applies
it at the params themselves. `sam` wraps two optimizers: the adversarial one
makes the uphill steps (``chain(normalize(), scale(-rho))`` for the paper's
:math:`\\rho\\, g / \\lVert g \\rVert`), the outer one the real step.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradxform.core import numerics, tree, validation
from gradxform.core.base import (
    EmptyState,
    GradientTransformation,
    OptState,
    Params,
    init_empty_state,
    public_constructor,
)
from gradxform.core.combine import extra_args_filter
from gradxform.core.primitives import apply_updates

# optax's name for normalize's state.
NormalizeState = EmptyState


def _is_none(x: Any) -> bool:
    return x is None


@public_constructor
def normalize() -> GradientTransformation:
    r"""Divides the updates by their global norm.

    .. math::
        u = \frac{g}{\lVert g \rVert_2}, \qquad u = 0 \text{ where } \lVert g \rVert_2 = 0

    with :math:`\lVert g \rVert_2` over every entry of every leaf, accumulated
    in at least float32. optax's ``contrib.normalize``, for the adversarial
    step of `sam`; one difference: an all-zero gradient stays zero, where
    optax's gives NaN (0/0). A NaN or infinite entry makes every entry NaN,
    as in optax. On ``gx.flat_tree`` buffers and sharded leaves the norm
    covers every entry, as on the per-leaf tree.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> tx = gx.normalize()
      >>> tx.update({"a": jnp.array([3.0]), "b": jnp.array([4.0])}, tx.init(None))[0]
      {'a': Array([0.6], dtype=float32), 'b': Array([0.8], dtype=float32)}
    """

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        norm = tree.tree_global_norm(updates)
        positive = norm > 0
        divisor = jnp.where(positive, norm, jnp.ones_like(norm))

        def leaf(g):
            dtype = numerics.compute_dtype(g.dtype, divisor.dtype)
            return numerics.store(g.astype(dtype) / divisor.astype(dtype), g.dtype)

        return tree.tree_map_skip_none(leaf, updates), state

    return GradientTransformation(init_empty_state, update_fn)


class SAMState(NamedTuple):
    """optax's ``SAMState``, field for field."""

    steps_since_sync: jax.Array  # int32, shape (): adversarial steps since the last outer one
    opt_state: OptState  # the outer optimizer's
    adv_state: OptState  # the adversarial optimizer's
    cache: Params | None  # the params at the start of the cycle; None with opaque_mode


def _check_params(owner: str, params: Any, updates: Any) -> None:
    if params is None:
        raise TypeError(f"{owner}: update needs the params: tx.update(grads, state, params)")
    tree.check_same_structure(owner, "params", params, updates, none_matches=True)


def _negated(updates: Any, like: Any) -> Any:
    """``-u`` in the dtype of the gradient ``like`` holds there."""
    return jax.tree.map(lambda u, g: None if u is None else numerics.store(-u, g.dtype),
                        updates, like, is_leaf=_is_none)


@public_constructor
def sam(
    optimizer: GradientTransformation,
    adv_optimizer: GradientTransformation,
    sync_period: int = 2,
    reset_state: bool = True,
    opaque_mode: bool = False,
    batch_axis_name: str | None = None,
) -> GradientTransformation:
    r"""Sharpness-aware minimisation: ``k - 1`` adversarial steps uphill, then one outer step.

    With :math:`k` the sync period, the params :math:`\theta_0` at the start of
    a cycle, the adversarial optimizer's updates :math:`a_i` and the outer
    optimizer's update :math:`o` (from the gradient at the last adversarial
    point, computed with :math:`\theta_0` as its params):

    .. math::
        \theta_{i+1} = \theta_i - a_i(\nabla f(\theta_i)) \quad (i < k - 1), \qquad
        \theta_0 \leftarrow \theta_0 + o(\nabla f(\theta_{k-1}))

    so ``chain(normalize(), scale(-rho))`` as adversarial optimizer makes the
    paper's step :math:`\theta_0 + \rho\, g / \lVert g \rVert`. By default
    (transparent mode) each ``update`` makes one of the :math:`k` steps: the
    adversarial updates move the params uphill, and the outer step's update
    is :math:`\theta_0 - \theta_{k-1} + o`. With ``opaque_mode`` each
    ``update`` makes a whole cycle: it calls ``grad_fn(params, i)`` (an extra
    keyword argument of ``update``, returning the gradients at ``params``)
    :math:`k - 1` times and returns only :math:`o`. Foret et al., 2021,
    "Sharpness-Aware Minimization for Efficiently Improving Generalization".

    optax's ``contrib.sam``: the same arguments, state and updates, with these
    differences. Each step runs only the optimizer it needs (a ``lax.cond``;
    optax runs both and blends the results arithmetically, so that a NaN from
    the unused one, such as optax's ``normalize`` of a zero gradient, spoils
    the step). With ``sync_period=1`` there is no adversarial step and the
    updates are the outer optimizer's at the params (optax's then mix in the
    previous step's params). The inner optimizers get the extra keyword
    arguments their ``update`` accepts (``grad_fn`` excepted); optax passes
    none. Arithmetic in at least float32; updates in the gradients' dtypes.

    Args:
      optimizer: the outer optimizer, which makes the real step.
      adv_optimizer: the adversarial optimizer; its updates are negated (a
        descent optimizer then climbs).
      sync_period: :math:`k \ge 1`, steps per cycle: :math:`k - 1`
        adversarial, one outer.
      reset_state: re-initialise the adversarial optimizer's state after each
        outer step.
      opaque_mode: run a whole cycle in each ``update``, with the gradient
        function ``grad_fn(params, i)`` passed to ``update``; use it when a call
        has other effects (batch-norm statistics) that must not see the
        adversarial points.
      batch_axis_name: with ``opaque_mode``, the ``pmap``/``shard_map`` axis to
        average ``grad_fn``'s gradients over (``jax.lax.pmean``); None for none.
        Ignored otherwise, as in optax.

    Example:
      >>> import jax, jax.numpy as jnp, gradxform as gx
      >>> loss = lambda p: jnp.sum((p - 1.0) ** 2)
      >>> tx = gx.sam(gx.sgd(0.1), gx.chain(gx.normalize(), gx.sgd(0.05)))
      >>> params = jnp.zeros(2)
      >>> state = tx.init(params)
      >>> for _ in range(4):  # two adversarial and two outer steps
      ...     updates, state = tx.update(jax.grad(loss)(params), state, params)
      ...     params = gx.apply_updates(params, updates)
      >>> params
      Array([0.37272793, 0.37272793], dtype=float32)
    """
    owner = "sam"
    validation.transformation(owner, "optimizer", optimizer)
    validation.transformation(owner, "adv_optimizer", adv_optimizer)
    sync_period = validation.positive_int(owner, "sync_period", sync_period)
    validation.boolean(owner, "reset_state", reset_state)
    validation.boolean(owner, "opaque_mode", opaque_mode)
    validation.string(owner, "batch_axis_name", batch_axis_name, allow_none=True)
    outer_accepts = extra_args_filter(optimizer.update)
    adv_accepts = extra_args_filter(adv_optimizer.update)

    def init_fn(params):
        cache = None
        if not opaque_mode:  # a copy: params and state may both be donated
            cache = tree.tree_copy_params(params)
        return SAMState(
            steps_since_sync=numerics.zero_count(),
            opt_state=optimizer.init(params),
            adv_state=adv_optimizer.init(params),
            cache=cache,
        )

    def outer_step(grads, opt_state, adv_state, params, cache, extra_args):
        """The outer update at ``cache``, made relative to ``params``."""
        updates, opt_state = optimizer.update(grads, opt_state, cache, **outer_accepts(extra_args))

        def leaf(u, g, c, p):
            if u is None:
                return None
            dtype = numerics.compute_dtype(u.dtype, c.dtype, p.dtype)
            step = (c.astype(dtype) - p.astype(dtype)) + u.astype(dtype)
            return numerics.store(step, g.dtype)

        updates = jax.tree.map(leaf, updates, grads, cache, params, is_leaf=_is_none)
        if reset_state:
            adv_state = adv_optimizer.init(params)
        return updates, opt_state, adv_state

    def transparent_update(updates, state, params, extra_args):
        first = state.steps_since_sync == 0
        # The cycle's start: the params themselves on its first step (optax reads the cache
        # saved at the previous step, which differs only for sync_period=1).
        cache = jax.tree.map(lambda c, p: None if c is None else jnp.where(first, p, c),
                             state.cache, params, is_leaf=_is_none)
        if sync_period == 1:
            new_updates, opt_state, adv_state = outer_step(
                updates, state.opt_state, state.adv_state, params, cache, extra_args)
        else:
            def outer(operands):
                return outer_step(*operands, cache, extra_args)

            def adversarial(operands):
                grads, opt_state, adv_state, params = operands
                adv_updates, adv_state = adv_optimizer.update(
                    grads, adv_state, params, **adv_accepts(extra_args))
                return _negated(adv_updates, grads), opt_state, adv_state

            new_updates, opt_state, adv_state = jax.lax.cond(
                state.steps_since_sync == sync_period - 1, outer, adversarial,
                (updates, state.opt_state, state.adv_state, params),
            )
        return new_updates, SAMState(
            steps_since_sync=numerics.cyclic_increment(state.steps_since_sync, sync_period),
            opt_state=opt_state, adv_state=adv_state, cache=cache,
        )

    def opaque_update(updates, state, params, grad_fn, extra_args):
        if grad_fn is None:
            raise TypeError(
                f"{owner}: with opaque_mode=True, update needs the gradient function as the "
                f"keyword argument grad_fn: tx.update(grads, state, params, grad_fn=grad_fn), "
                f"with grad_fn(params, i) returning the gradients at params"
            )
        adv_params, grads, adv_state = params, updates, state.adv_state
        for i in range(sync_period - 1):
            adv_updates, adv_state = adv_optimizer.update(
                grads, adv_state, adv_params, **adv_accepts(extra_args))
            adv_params = apply_updates(adv_params, _negated(adv_updates, grads))
            grads = grad_fn(adv_params, i)
            tree.check_same_structure(owner, "grad_fn output", grads, updates, none_matches=True)
            if batch_axis_name is not None:
                grads = jax.lax.pmean(grads, axis_name=batch_axis_name)
        if reset_state:
            adv_state = adv_optimizer.init(params)
        new_updates, opt_state = optimizer.update(
            grads, state.opt_state, params, **outer_accepts(extra_args))
        new_updates = jax.tree.map(
            lambda u, g: None if u is None else numerics.store(u, g.dtype),
            new_updates, updates, is_leaf=_is_none)
        return new_updates, SAMState(
            steps_since_sync=numerics.zero_count(), opt_state=opt_state, adv_state=adv_state,
            cache=None,
        )

    def update_fn(updates, state, params=None, **extra_args):
        _check_params(owner, params, updates)
        grad_fn = extra_args.pop("grad_fn", None)
        if opaque_mode:
            return opaque_update(updates, state, params, grad_fn, extra_args)
        return transparent_update(updates, state, params, extra_args)

    return GradientTransformation(init_fn, update_fn)

