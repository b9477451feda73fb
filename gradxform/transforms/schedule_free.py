"""Schedule-free learning: interpolation and averaging in place of momentum and a decay schedule.

`schedule_free` wraps a base optimizer (without momentum): the params it is
given are the interpolated point :math:`y`, where gradients are taken; its
state keeps the base optimizer's iterates :math:`z`, and the average
:math:`x`, where the model should be evaluated, is recovered from the two by
`schedule_free_eval_params`. The aliases (``gx.schedule_free_adamw``,
``gx.schedule_free_sgd``) live in `gradxform.optimizers.schedule_free`.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradxform.core import numerics, tree, validation
from gradxform.core.base import (
    GradientTransformation,
    OptState,
    Params,
    ScalarOrSchedule,
    public_constructor,
)
from gradxform.core.combine import extra_args_filter


class ScheduleFreeState(NamedTuple):
    """optax's ``ScheduleFreeState``, field for field.

    The scalars are kept in at least float32 (float64 for float64 params),
    where optax keeps them in the params' lowest dtype: a bfloat16 running sum
    of weights stops growing after a few hundred steps.
    """

    b1: jax.Array  # the interpolation b1 of the latest update (schedule_free_eval_params reads it)
    weight_sum: jax.Array  # sum of the averaging weights max_lr**weight_lr_power so far
    step_count: jax.Array  # int32, shape (): starts at 1, as optax's; the schedule's argument
    max_lr: jax.Array  # the largest learning rate seen so far
    base_optimizer_state: OptState
    z: Params  # the base optimizer's iterates, in state_dtype (default: the params' dtypes)


def _scalar_dtype(params: Any) -> Any:
    """float32, or float64 when a trainable leaf is float64 (complex128)."""
    dtypes = [numerics.real_dtype(leaf.dtype) for leaf in jax.tree.leaves(params)
              if hasattr(leaf, "dtype") and tree.is_trainable(leaf)]
    return numerics.compute_dtype(*dtypes)


def _averaging_weight(weight: jax.Array, total: jax.Array) -> jax.Array:
    """``weight / total``: 0 where optax's ``nan_to_num`` turns 0/0 or inf/inf into 0, NaN kept."""
    ok = (total > 0) & jnp.isfinite(weight)
    ratio = jnp.where(ok, weight / jnp.where(ok, total, jnp.ones_like(total)), jnp.zeros_like(total))
    return jnp.where(jnp.isnan(weight) | jnp.isnan(total), weight + total, ratio)


def _previous_x(y: jax.Array, z: jax.Array, b1: Any) -> jax.Array:
    """:math:`x = (y - (1 - \\beta_1) z) / \\beta_1`, in ``y``'s (compute) dtype."""
    return (y - (1 - b1) * z) / b1


@public_constructor
def schedule_free(
    base_optimizer: GradientTransformation,
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    weight_lr_power: float = 2.0,
    state_dtype: Any = None,
) -> GradientTransformation:
    r"""Makes ``base_optimizer`` schedule-free: iterate averaging replaces momentum and decay.

    With :math:`y_t` the params (where gradients are taken), :math:`z_t` the
    base optimizer's iterates, :math:`u_t` its update at :math:`y_t`,
    :math:`\eta_t` the learning rate at the step count :math:`t` (from 1) and
    :math:`x_t = (y_t - (1 - \beta_1) z_t) / \beta_1` the averaged iterate:

    .. math::
        z_{t+1} = z_t + u_t, \qquad
        c_t = \frac{\bar\eta_t^{\,p}}{\sum_{s \le t} \bar\eta_s^{\,p}}, \quad
        \bar\eta_t = \max_{s \le t} \eta_s, \\
        x_{t+1} = (1 - c_t)\, x_t + c_t\, z_{t+1}, \qquad
        y_{t+1} = \beta_1 x_{t+1} + (1 - \beta_1) z_{t+1}

    and the update is :math:`y_{t+1} - y_t`. Evaluate the model at
    :math:`x`: `schedule_free_eval_params`. The base optimizer must not use
    momentum (``gx.adam(lr, b1=0.0)``, ``gx.sgd(lr)``), and ``learning_rate``
    should be its learning rate (a constant, or a warmup without decay).
    Defazio et al., 2024, "The Road Less Scheduled".

    optax's ``contrib.schedule_free``: the same arguments, state and updates.
    Differences: arithmetic runs in at least float32 (bfloat16 params and
    updates are rounded once), the state's scalars are kept in at least
    float32, ``state.b1`` is the ``b1`` of the latest update (optax keeps the
    first; they differ only when ``inject_hyperparams`` changes it), and the
    weight :math:`c_t` is computed without an intermediate NaN. ``update``
    needs the params. Elementwise: runs on ``gx.flat_tree`` buffers and on
    sharded params, :math:`z` sharded like them.

    Args:
      base_optimizer: the optimizer whose updates move :math:`z`; it gets the
        extra keyword arguments its ``update`` accepts.
      learning_rate: :math:`\eta_t \ge 0`, a number or a schedule evaluated at
        the step count (1 at the first update, as optax).
      b1: :math:`\beta_1 \in (0, 1]`, the interpolation between :math:`x` and
        :math:`z`.
      weight_lr_power: :math:`p \ge 0`, the power of the learning rate in the
        averaging weights (small early rates, during warmup, weigh less).
      state_dtype: the dtype of :math:`z` (for complex params, that precision,
        complex); None keeps each param's dtype.

    Example:
      >>> import jax, jax.numpy as jnp, gradxform as gx
      >>> tx = gx.schedule_free(gx.sgd(0.5), learning_rate=0.5)
      >>> params = jnp.array([1.0, -2.0])
      >>> state = tx.init(params)
      >>> for _ in range(3):
      ...     grads = jax.grad(lambda p: jnp.sum(p ** 2) / 2)(params)
      ...     updates, state = tx.update(grads, state, params)
      ...     params = gx.apply_updates(params, updates)
      >>> gx.schedule_free_eval_params(state, params)
      Array([ 0.27291664, -0.5458333 ], dtype=float32)
    """
    owner = "schedule_free"
    validation.transformation(owner, "base_optimizer", base_optimizer)
    validation.scalar_or_schedule(owner, "learning_rate", learning_rate)
    validation.in_range(owner, "b1", b1, low=0.0, high=1.0, low_open=True)
    validation.non_negative(owner, "weight_lr_power", weight_lr_power)
    validation.float_dtype(owner, "state_dtype", state_dtype)
    accepted = extra_args_filter(base_optimizer.update)

    def init_fn(params):
        dtype = _scalar_dtype(params)
        z = tree.tree_copy_params(params, state_dtype)
        return ScheduleFreeState(
            b1=jnp.asarray(numerics.hyperparameter(b1, dtype), dtype),
            weight_sum=jnp.zeros([], dtype),
            step_count=jnp.ones([], jnp.int32),
            max_lr=jnp.zeros([], dtype),
            base_optimizer_state=base_optimizer.init(params),
            z=z,
        )

    def update_fn(updates, state, params=None, **extra_args):
        if params is None:
            raise TypeError(f"{owner}: update needs the params: tx.update(grads, state, params)")
        tree.check_same_structure(owner, "params", params, updates, none_matches=True)
        dtype = state.max_lr.dtype
        lr = numerics.schedule_value(learning_rate, state.step_count, owner, "learning_rate")
        max_lr = jnp.maximum(state.max_lr, jnp.asarray(lr).astype(dtype))
        weight = max_lr ** numerics.hyperparameter(weight_lr_power, dtype)
        total = state.weight_sum + weight
        ck = _averaging_weight(weight, total)
        base_updates, base_state = base_optimizer.update(
            updates, state.base_optimizer_state, params, **accepted(extra_args)
        )

        def leaf(g, u, y, z):
            if g is None:
                return None, z
            compute = numerics.compute_dtype(g.dtype, u.dtype, y.dtype, z.dtype)
            b, c = numerics.hyperparameter(b1, compute), ck.astype(compute)
            z_old = z.astype(compute)
            z_new = numerics.store(z_old + u.astype(compute), z.dtype)
            z_c, y_c = z_new.astype(compute), y.astype(compute)
            x = (1 - c) * _previous_x(y_c, z_old, b) + c * z_c
            new_y = b * x + (1 - b) * z_c
            return numerics.store(new_y - y_c, g.dtype), z_new

        leaves, treedef = jax.tree.flatten(updates, is_leaf=lambda x: x is None)
        others = [treedef.flatten_up_to(t) for t in (base_updates, params, state.z)]
        results = [leaf(*(None if x is None else jnp.asarray(x) for x in parts))
                   for parts in zip(leaves, *others)]
        new_updates = treedef.unflatten([r[0] for r in results])
        z = treedef.unflatten([r[1] for r in results])
        return new_updates, ScheduleFreeState(
            b1=jnp.asarray(numerics.hyperparameter(b1, dtype)).astype(state.b1.dtype),
            weight_sum=total,
            step_count=numerics.safe_increment(state.step_count),
            max_lr=max_lr,
            base_optimizer_state=base_state,
            z=z,
        )

    return GradientTransformation(init_fn, update_fn)


def _find_state(state: Any) -> ScheduleFreeState | None:
    """The one `ScheduleFreeState` in ``state`` (itself, or inside a chain or a wrapper)."""
    found = []

    def walk(node):
        if isinstance(node, ScheduleFreeState):
            found.append(node)
        elif isinstance(node, tuple):  # NamedTuples and chains' tuples
            for child in node:
                walk(child)
        elif isinstance(node, dict):
            for child in node.values():
                walk(child)

    walk(state)
    return found[0] if len(found) == 1 else None


def schedule_free_eval_params(state: OptState, params: Params) -> Params:
    r"""The params to evaluate a schedule-free model at: the average :math:`x`.

    .. math::
        x = \frac{y - (1 - \beta_1)\, z}{\beta_1}

    with :math:`y` the params trained by `schedule_free` (or its aliases),
    :math:`z` and :math:`\beta_1` from its state. optax's
    ``contrib.schedule_free_eval_params``, computed in at least float32 and
    returned in each param's dtype. ``state`` may also be a state holding one
    `ScheduleFreeState` (a chain's, or ``inject_hyperparams``'s).

    Args:
      state: the schedule-free optimizer's state.
      params: the params it trains (:math:`y`), shaped like the state's ``z``.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> tx = gx.schedule_free_sgd(0.1)
      >>> params = jnp.array([1.0, 2.0])
      >>> state = tx.init(params)
      >>> updates, state = tx.update(jnp.array([1.0, -1.0]), state, params)
      >>> gx.schedule_free_eval_params(state, gx.apply_updates(params, updates))
      Array([0.8999999, 2.1      ], dtype=float32)
    """
    owner = "schedule_free_eval_params"
    found = _find_state(state)
    if found is None:
        raise TypeError(
            f"{owner}: state must be the state of gx.schedule_free (a ScheduleFreeState, or a "
            f"state holding exactly one), got {state!r}"
        )
    mismatched = params is None or (
        tree.first_difference(found.z, params, none_matches=True) is not None)
    if not mismatched:
        agree = []
        jax.tree.map(
            lambda z, p: agree.append(z is None or p is None or jnp.shape(z) == jnp.shape(p)),
            found.z, params, is_leaf=lambda x: x is None)
        mismatched = not all(agree)
    if mismatched:
        raise ValueError(
            f"{owner}: params must have the structure and shapes of the params the state was "
            f"initialised with (its z: {jax.tree.structure(found.z)}), got {params!r}"
        )

    def leaf(y, z):
        if z is None:
            return y
        dtype = numerics.compute_dtype(y.dtype, z.dtype, found.b1.dtype)
        b = found.b1.astype(dtype)
        return numerics.store(_previous_x(y.astype(dtype), z.astype(dtype), b), y.dtype)

    return jax.tree.map(lambda y, z: None if y is None else leaf(jnp.asarray(y), z),
                        params, found.z, is_leaf=lambda x: x is None)
