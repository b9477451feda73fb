"""torch's ``ReduceLROnPlateau`` as a transformation: `ReduceLROnPlateau`.

torch's scheduler reads a metric at each ``scheduler.step(metric)``; here
``update`` reads it as the keyword argument ``value=``, as `reduce_on_plateau`
(optax's rule) does, and multiplies the updates by the current rate over the
base rate. The state keeps torch's counters and its best value, in at least
float32.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from gradxform.core import numerics, sparse, tree, validation
from gradxform.core.base import GradientTransformation, public_constructor
from gradxform.transforms.plateau import _value as monitored_value

_OWNER = "torch.ReduceLROnPlateau"


class TorchPlateauState(NamedTuple):
    """torch's ``ReduceLROnPlateau`` counters, under `reduce_on_plateau`'s field names."""

    scale: jax.Array  # the current rate over lr: what the next update is multiplied by
    best_value: jax.Array  # torch's best (inf for "min", -inf for "max" at first)
    plateau_count: jax.Array  # int32, shape (): torch's num_bad_epochs
    cooldown_count: jax.Array  # int32, shape (): torch's cooldown_counter


def _check_mode(name: str, value, choices: tuple) -> None:
    validation.string(_OWNER, name, value)
    if value not in choices:
        raise ValueError(f"{_OWNER}: {name} must be one of {choices!r}, got {name}={value!r}")


@sparse.row_sparse_rule("exact")
@public_constructor
def ReduceLROnPlateau(  # noqa: N802 (torch's name)
    lr: float,
    mode: str = "min",
    factor: float = 0.1,
    patience: int = 10,
    threshold: float = 1e-4,
    threshold_mode: str = "rel",
    cooldown: int = 0,
    min_lr: float = 0.0,
    eps: float = 1e-8,
) -> GradientTransformation:
    r"""torch's ``ReduceLROnPlateau``: the rate drops by ``factor`` when the metric stops improving.

    Each ``update`` first multiplies the updates by :math:`\eta_t / \eta` (the
    rate torch's ``optimizer.step()`` uses), then takes the metric :math:`v`
    (``value=``) as torch's ``scheduler.step(v)`` does: with best value :math:`b`,

    .. math::
        \text{better} \iff v < b(1 - \theta) \;(\text{"min", "rel"}),\;
        v < b - \theta \;(\text{"abs"}),\; v > b(1 + \theta),\; v > b + \theta \;(\text{"max"})

    A better value becomes :math:`b` and resets the count of bad steps; during
    ``cooldown`` steps after a reduction bad steps are not counted; when more
    than ``patience`` are, :math:`\eta_{t+1} = \max(\gamma\eta_t, \eta_{min})` if
    that lowers the rate by more than ``eps``. Chain it after a ``gx.torch``
    optimizer built with the same ``lr``:
    ``gx.chain(gx.torch.SGD(lr=0.1), gx.torch.ReduceLROnPlateau(0.1))``, and call
    ``tx.update(grads, state, params, value=loss)`` with the loss (or a
    validation metric) torch's loop passes to ``scheduler.step`` after this step
    (an update without ``value`` raises a `TypeError`). The state is a
    `TorchPlateauState`; ``base lr * state.scale`` is torch's
    ``param_groups[0]["lr"]`` after the step.

    Differences: `reduce_on_plateau` (optax's rule) multiplies the update by the
    rate after reading the value, and reduces after ``patience`` bad values, not
    more than ``patience``; this follows torch. The comparisons run in float32 (float64 for float64
    params), torch's in float64; ``threshold >= 1`` with ``"min"`` and ``"rel"``,
    where torch never sees an improvement, raises; one ``min_lr`` for all params
    (torch's per-group list is not taken).

    Args:
      lr: the optimizer's rate :math:`\eta > 0` (for ``min_lr`` and ``eps``).
      mode: ``"min"`` (the metric should fall) or ``"max"``.
      factor: :math:`\gamma \in [0, 1)`.
      patience: bad steps allowed before a reduction (>= 0).
      threshold: :math:`\theta \ge 0`, the improvement needed.
      threshold_mode: ``"rel"`` or ``"abs"``.
      cooldown: steps after a reduction during which bad steps are not counted (>= 0).
      min_lr: :math:`\eta_{min} \ge 0`.
      eps: the smallest reduction applied (>= 0).

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> tx = gx.torch.ReduceLROnPlateau(0.1, factor=0.5, patience=1)
      >>> grads = {"w": jnp.ones(2)}
      >>> state = tx.init(grads)
      >>> for loss in [3.0, 2.0, 2.0, 2.0]:
      ...     updates, state = tx.update(grads, state, value=jnp.float32(loss))
      >>> state.scale
      Array(0.5, dtype=float32)
    """
    validation.positive(_OWNER, "lr", lr)
    _check_mode("mode", mode, ("min", "max"))
    validation.decay_rate(_OWNER, "factor", factor)
    patience = validation.positive_int(_OWNER, "patience", patience, minimum=0)
    validation.non_negative(_OWNER, "threshold", threshold)
    _check_mode("threshold_mode", threshold_mode, ("rel", "abs"))
    known_threshold = validation.real_number(_OWNER, "threshold", threshold)  # None if traced
    if mode == "min" and threshold_mode == "rel" and (known_threshold or 0.0) >= 1:
        raise ValueError(
            f"{_OWNER}: threshold must be below 1 with mode='min' and threshold_mode='rel', got "
            f"threshold={threshold!r}: no value is below best * (1 - threshold), so torch never "
            "sees an improvement")
    cooldown = validation.positive_int(_OWNER, "cooldown", cooldown, minimum=0)
    validation.non_negative(_OWNER, "min_lr", min_lr)
    validation.non_negative(_OWNER, "eps", eps)
    lowest_scale = min_lr / lr

    def init_fn(params):
        dtypes = [numerics.real_dtype(leaf.dtype) for leaf in jax.tree.leaves(params)
                  if hasattr(leaf, "dtype") and tree.is_trainable(leaf)]
        dtype = numerics.compute_dtype(*dtypes)
        worst = jnp.inf if mode == "min" else -jnp.inf
        return TorchPlateauState(scale=jnp.ones([], dtype), best_value=jnp.full([], worst, dtype),
                                 plateau_count=numerics.zero_count(),
                                 cooldown_count=numerics.zero_count())

    def is_better(current, best):
        sign = -1 if mode == "min" else 1
        margin = sign * numerics.hyperparameter(threshold, best.dtype)
        bound = best * (1 + margin) if threshold_mode == "rel" else best + margin
        return current < bound if mode == "min" else current > bound

    def stepped(state, current):
        """torch's ``scheduler.step(current)``."""
        better = is_better(current, state.best_value)
        bad = jnp.where(better, 0, numerics.safe_increment(state.plateau_count))
        cooling = state.cooldown_count > 0
        bad = jnp.where(cooling, 0, bad)
        cooldown_count = jnp.where(cooling, state.cooldown_count - 1, state.cooldown_count)
        reached = bad > patience
        dtype = state.scale.dtype
        lower = jnp.maximum(state.scale * numerics.hyperparameter(factor, dtype),
                            numerics.hyperparameter(lowest_scale, dtype))
        lowered_by = (state.scale - lower) * numerics.hyperparameter(lr, dtype)
        reduced = reached & (lowered_by > numerics.hyperparameter(eps, dtype))
        return TorchPlateauState(
            scale=jnp.where(reduced, lower, state.scale).astype(state.scale.dtype),
            best_value=jnp.where(better, current, state.best_value),
            plateau_count=jnp.where(reached, 0, bad).astype(jnp.int32),
            cooldown_count=jnp.where(reached, cooldown, cooldown_count).astype(jnp.int32),
        )

    def update_fn(updates, state, params=None, **extra_args):
        if params is not None:  # params are not needed; given, they must match the updates
            tree.check_same_structure(_OWNER, "params", params, updates, none_matches=True)
        current = monitored_value(_OWNER, extra_args).astype(state.best_value.dtype)
        new_updates = tree.tree_map_skip_none(
            lambda g: sparse.map_values(lambda x: numerics.scale_leaf(state.scale, x), g), updates)
        return new_updates, stepped(state, current)

    return GradientTransformation(init_fn, update_fn)
