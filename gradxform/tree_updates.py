"""Updating a slow copy of the parameters: `incremental_update` and `periodic_update`.

These are functions of trees, not transformations (as in optax): a training
loop calls them on its own copy of the parameters (a Polyak average for
evaluation, a target network in reinforcement learning).
"""

from __future__ import annotations

import numbers
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gradxform.core import numerics, tree, validation
from gradxform.core.base import Params


def _check_trees(owner: str, new_tensors: Any, old_tensors: Any) -> None:
    """``new_tensors`` and ``old_tensors`` have the same structure and leaf shapes."""
    difference = tree.first_difference(new_tensors, old_tensors)
    if difference is not None:
        where, new_here, old_here = difference
        raise ValueError(
            f"{owner}: new_tensors and old_tensors must have the same tree structure; at {where} "
            f"new_tensors has {new_here} but old_tensors has {old_here}"
        )
    for (path, new), old in zip(jax.tree_util.tree_flatten_with_path(new_tensors)[0],
                                jax.tree.leaves(old_tensors)):
        if np.shape(new) != np.shape(old):
            raise ValueError(
                f"{owner}: new_tensors{jax.tree_util.keystr(path)} has shape {np.shape(new)}, but "
                f"old_tensors has shape {np.shape(old)} there"
            )


def _step_count(owner: str, name: str, value: Any, minimum: int) -> Any:
    """An int (Python, numpy, or a 0-d integer array) ``>= minimum``; tracers pass unchecked."""
    if isinstance(value, jax.core.Tracer):
        return value
    if isinstance(value, (bool, np.bool_)) or isinstance(value, numbers.Integral):
        return validation.positive_int(owner, name, value, minimum=minimum)
    dtype = getattr(value, "dtype", None)
    if dtype is None or jnp.shape(value) != () or not jnp.issubdtype(dtype, jnp.integer):
        raise TypeError(f"{owner}: {name} must be an int >= {minimum}, got {value!r}")
    if int(value) < minimum:
        raise ValueError(f"{owner}: {name} must be an int >= {minimum}, got {value!r}")
    return value


def incremental_update(new_tensors: Params, old_tensors: Params, step_size: Any) -> Params:
    r"""Moves a running (Polyak) average of the parameters towards their latest values.

    .. math::
        \bar\theta \leftarrow \alpha\, \theta + (1 - \alpha)\, \bar\theta

    Same as ``optax.incremental_update``, computed in at least float32 and
    returned in ``old_tensors``' dtypes. ``None`` entries stay ``None``. Polyak
    and Juditsky, 1992, *Acceleration of Stochastic Approximation by Averaging*.

    Args:
      new_tensors: the latest values :math:`\theta`.
      old_tensors: the average :math:`\bar\theta`, a tree of the same structure and shapes.
      step_size: :math:`\alpha \in [0, 1]`; a number, or a 0-d array (traced under ``jit``).

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> gx.incremental_update({"w": jnp.ones(2)}, {"w": jnp.zeros(2)}, step_size=0.1)["w"]
      Array([0.1, 0.1], dtype=float32)
    """
    owner = "incremental_update"
    validation.decay_rate(owner, "step_size", step_size, allow_one=True)
    _check_trees(owner, new_tensors, old_tensors)

    def leaf(new, old):
        old = jnp.asarray(old)
        dtype = numerics.compute_dtype(new.dtype, old.dtype)
        rate = numerics.hyperparameter(step_size, dtype)
        average = rate * new.astype(dtype) + (1.0 - rate) * old.astype(dtype)
        return numerics.store(average, old.dtype)

    return tree.tree_map_skip_none(leaf, new_tensors, old_tensors)


def periodic_update(
    new_tensors: Params, old_tensors: Params, steps: Any, update_period: Any
) -> Params:
    r"""Replaces a slow copy of the parameters by their latest values every ``update_period`` steps.

    .. math::
        \bar\theta \leftarrow \begin{cases} \theta & s \bmod P = 0 \\ \bar\theta &
        \text{otherwise} \end{cases}

    Same as ``optax.periodic_update`` (one ``lax.cond``, so nothing is copied
    on the other steps); the result has ``old_tensors``' dtypes. Mnih et al.,
    2015, *Human-level control through deep reinforcement learning*; Grill et
    al., 2020, *Bootstrap Your Own Latent*.

    Args:
      new_tensors: the latest values :math:`\theta`.
      old_tensors: the slow copy :math:`\bar\theta`, a tree of the same structure and shapes.
      steps: :math:`s \ge 0`, the number of updates of the online parameters: an int or a
        0-d integer array (traced under ``jit``).
      update_period: :math:`P \ge 1`, an int or a 0-d integer array.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> gx.periodic_update({"w": jnp.ones(2)}, {"w": jnp.zeros(2)}, steps=10, update_period=5)["w"]
      Array([1., 1.], dtype=float32)
    """
    owner = "periodic_update"
    steps = _step_count(owner, "steps", steps, 0)
    update_period = _step_count(owner, "update_period", update_period, 1)
    _check_trees(owner, new_tensors, old_tensors)
    steps = jnp.asarray(steps)
    if not isinstance(update_period, int):
        update_period = jnp.asarray(update_period).astype(steps.dtype)
    due = jnp.remainder(steps, update_period) == 0

    def latest():
        return jax.tree.map(lambda new, old: jnp.asarray(new).astype(jnp.asarray(old).dtype),
                            new_tensors, old_tensors)

    def kept():
        return jax.tree.map(jnp.asarray, old_tensors)

    return jax.lax.cond(due, latest, kept)
