"""Reducing the step when the loss stops improving: `reduce_on_plateau`.

``update`` reads the loss (or any monitored value) as the keyword argument
``value=``; the state keeps a handful of scalars, in at least float32, so the
transformation is the same on a per-leaf tree, a `flat_tree` and sharded
params.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gradxform.core import numerics, tree, validation
from gradxform.core.base import GradientTransformation, public_constructor


class ReduceLROnPlateauState(NamedTuple):
    """optax's ``ReduceLROnPlateauState``, field for field.

    The floats are kept in at least float32 (float64 for float64 params),
    where optax keeps ``scale`` in the params' lowest dtype and the values in
    their highest: in bfloat16 a factor 0.1 is 0.1001 and a running mean of
    the loss stalls.
    """

    scale: jax.Array  # the factor the updates are multiplied by
    best_value: jax.Array  # the lowest accumulated value so far (inf at first)
    plateau_count: jax.Array  # int32, shape (): accumulations without improvement
    cooldown_count: jax.Array  # int32, shape (): accumulations left before counting again
    count: jax.Array  # int32, shape (): values accumulated since the last check
    avg_value: jax.Array  # their mean


def _value(owner: str, extra_args: dict) -> jax.Array:
    """The ``value=`` extra argument, checked: one real number."""
    if "value" not in extra_args:
        others = f" (it got only {sorted(extra_args)!r})" if extra_args else ""
        raise TypeError(
            f"{owner}: update needs the monitored value (the loss) as the keyword argument "
            f"value: tx.update(grads, state, params, value=loss){others}"
        )
    value = extra_args["value"]
    dtype = getattr(value, "dtype", None)
    if isinstance(value, (bool, np.bool_)) or not (
        isinstance(value, (int, float)) or (dtype is not None and (
            jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer)))
    ):
        raise TypeError(f"{owner}: value must be the loss, a real number, got {value!r}")
    if np.shape(value) != ():
        raise ValueError(
            f"{owner}: value must be the loss, one number (shape ()), got an array of shape "
            f"{np.shape(value)}; reduce it to a scalar (the mean over the batch)"
        )
    return jnp.asarray(value)


@public_constructor
def reduce_on_plateau(
    factor: float = 0.1,
    patience: int = 10,
    rtol: float = 1e-4,
    atol: float = 0.0,
    cooldown: int = 0,
    accumulation_size: int = 1,
    min_scale: float = 0.0,
) -> GradientTransformation:
    r"""Multiplies the updates by a scale that drops by ``factor`` when the loss plateaus.

    The values passed as ``value=`` are averaged over ``accumulation_size``
    calls; each average :math:`\bar f` is then compared with the best so far,
    :math:`f^\ast`:

    .. math::
        \text{improved} \iff \bar f < (1 - r) f^\ast - a, \qquad
        s \leftarrow \max(\gamma\, s,\ s_{min}) \text{ after } P
        \text{ averages in a row without improvement}

    and the updates are :math:`s\, g`. After a reduction, ``cooldown``
    averages pass before the count of non-improving ones starts again. In a
    chain after the optimizer, ``chain(adam(lr), reduce_on_plateau())``, it
    reduces the learning rate. optax's ``contrib.reduce_on_plateau``: the same
    arguments, state and updates; ``update`` takes the value as a keyword
    argument, ``tx.update(grads, state, params, value=loss)``, and raises a
    `TypeError` without it (params are optional; given, the updates must be
    shaped like them, a `ValueError` otherwise). Differences: the state's floats are kept in at
    least float32 (see `ReduceLROnPlateauState`), the updates are computed
    in at least float32 and keep the gradients' dtype, and ``rtol=1``
    compares with :math:`-a` (optax computes :math:`0 \cdot \infty` = NaN
    at first).

    Args:
      factor: :math:`\gamma \in (0, 1)`, the factor the scale is multiplied by.
      patience: :math:`P \ge 1`, averages without improvement before a reduction.
      rtol: :math:`r \in [0, 1]`, the relative improvement needed.
      atol: :math:`a \ge 0`, the absolute improvement needed (``rtol`` and
        ``atol`` are not both 0).
      cooldown: averages to wait after a reduction before counting again (>= 0).
      accumulation_size: values averaged per comparison (>= 1); with the loss
        of each minibatch, more than 1 smooths its noise.
      min_scale: :math:`s_{min} \in [0, 1]`, below which the scale does not go.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> tx = gx.reduce_on_plateau(factor=0.5, patience=2)
      >>> grads = {"w": jnp.ones(2)}
      >>> state = tx.init(grads)
      >>> for loss in [3.0, 2.0, 2.0, 2.0, 2.0]:
      ...     updates, state = tx.update(grads, state, value=jnp.float32(loss))
      >>> updates["w"], state.scale
      (Array([0.5, 0.5], dtype=float32), Array(0.5, dtype=float32))
    """
    owner = "reduce_on_plateau"
    validation.in_range(owner, "factor", factor, low=0.0, high=1.0, low_open=True, high_open=True)
    patience = validation.positive_int(owner, "patience", patience)
    validation.in_range(owner, "rtol", rtol, low=0.0, high=1.0)
    validation.non_negative(owner, "atol", atol)
    # As numbers (None for traced values): a concrete array compared under a trace is traced.
    tolerances = (validation.real_number(owner, "rtol", rtol),
                  validation.real_number(owner, "atol", atol))
    if tolerances == (0.0, 0.0):
        raise ValueError(
            f"{owner}: at least one of rtol and atol must be positive, got rtol={rtol!r} and "
            f"atol={atol!r}"
        )
    cooldown = validation.positive_int(owner, "cooldown", cooldown, minimum=0)
    accumulation_size = validation.positive_int(owner, "accumulation_size", accumulation_size)
    validation.in_range(owner, "min_scale", min_scale, low=0.0, high=1.0)

    def init_fn(params):
        dtypes = [numerics.real_dtype(leaf.dtype) for leaf in jax.tree.leaves(params)
                  if hasattr(leaf, "dtype") and tree.is_trainable(leaf)]
        dtype = numerics.compute_dtype(*dtypes)
        return ReduceLROnPlateauState(
            scale=jnp.ones([], dtype),
            best_value=jnp.full([], jnp.inf, dtype),
            plateau_count=numerics.zero_count(),
            cooldown_count=numerics.zero_count(),
            count=numerics.zero_count(),
            avg_value=jnp.zeros([], dtype),
        )

    def checked(state, avg):
        """The state after comparing the average ``avg`` with the best value."""
        dtype = avg.dtype
        best = state.best_value
        finite_best = jnp.where(jnp.isfinite(best), best, jnp.zeros_like(best))
        threshold = jnp.where(
            jnp.isfinite(best),
            (1 - numerics.hyperparameter(rtol, dtype)) * finite_best
            - numerics.hyperparameter(atol, dtype),
            best,
        )
        improved = avg < threshold
        plateau = jnp.where(improved, 0, numerics.safe_increment(state.plateau_count))
        cooling = state.cooldown_count > 0
        reached = ~cooling & (plateau >= patience)
        reduced = jnp.where(reached, state.scale * numerics.hyperparameter(factor, dtype),
                            state.scale)
        scale = jnp.where(cooling, state.scale,
                          jnp.maximum(reduced, numerics.hyperparameter(min_scale, dtype)))
        return ReduceLROnPlateauState(
            scale=scale.astype(state.scale.dtype),
            best_value=jnp.where(improved, avg, best),
            plateau_count=jnp.where(cooling | reached, 0, plateau).astype(jnp.int32),
            cooldown_count=jnp.where(
                cooling, state.cooldown_count - 1, jnp.where(reached, cooldown, 0)
            ).astype(jnp.int32),
            count=numerics.zero_count(),
            avg_value=jnp.zeros_like(state.avg_value),
        )

    def update_fn(updates, state, params=None, **extra_args):
        if params is not None:  # params are not needed; given, they must match the updates
            tree.check_same_structure(owner, "params", params, updates, none_matches=True)
        value = _value(owner, extra_args)
        dtype = state.avg_value.dtype
        new_count = numerics.safe_increment(state.count)
        avg = (state.count.astype(dtype) * state.avg_value + value.astype(dtype)) / new_count.astype(
            dtype)
        accumulating = state._replace(count=new_count, avg_value=avg)
        new_state = jax.tree.map(
            lambda done, waiting: jnp.where(new_count == accumulation_size, done, waiting),
            checked(state, avg), accumulating,
        )
        new_updates = tree.tree_map_skip_none(lambda g: numerics.scale_leaf(new_state.scale, g),
                                              updates)
        return new_updates, new_state

    return GradientTransformation(init_fn, update_fn)
