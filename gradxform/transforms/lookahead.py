"""Lookahead: fast weights that explore, slow weights that follow them (`lookahead`)."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradxform.core import numerics, tree, validation
from gradxform.core.base import GradientTransformation, OptState, Params, public_constructor
from gradxform.core.combine import extra_args_filter


class LookaheadState(NamedTuple):
    """optax's ``LookaheadState``, field for field: the fast optimizer's state and the phase."""

    fast_state: OptState
    steps_since_sync: jax.Array  # int32, shape (): fast steps since the last sync, in [0, k)


class LookaheadParams(NamedTuple):
    """The fast and the slow params that `lookahead` updates, as optax's ``LookaheadParams``.

    Compute the gradients at ``fast``; evaluate (and export) ``slow``, which
    generalises better (Zhang et al., 2019). Both are trees of the same
    structure, and ``gx.apply_updates(params, updates)`` moves both.
    """

    fast: Params
    slow: Params

    @classmethod
    def init_synced(cls, params: Params) -> LookaheadParams:
        """Fast and slow params that start equal: ``LookaheadParams(fast=params, slow=params)``."""
        return cls(fast=params, slow=params)


def _is_lookahead_params(params: Any) -> bool:
    """A NamedTuple with ``fast`` and ``slow`` fields: ours, or optax's ``LookaheadParams``."""
    fields = getattr(type(params), "_fields", ())
    return isinstance(params, tuple) and "fast" in fields and "slow" in fields


@public_constructor
def lookahead(
    fast_optimizer: GradientTransformation,
    sync_period: int,
    slow_step_size: float,
    reset_state: bool = False,
) -> GradientTransformation:
    r"""Lookahead: ``k`` steps of a fast optimizer, then the slow params move toward the fast ones.

    With fast params :math:`\theta`, slow params :math:`\phi`, the fast
    optimizer's update :math:`u_t` at :math:`\theta_t`, and
    :math:`s_t = [\,t \bmod k = k - 1\,]` (a synchronisation step):

    .. math::
        d_t = \theta_t + u_t - \phi_t, \qquad
        \Delta\phi_t = s_t\, \alpha\, d_t, \qquad
        \Delta\theta_t = u_t - s_t\, (1 - \alpha)\, d_t

    so that after a synchronisation step
    :math:`\phi \leftarrow \phi + \alpha(\theta + u - \phi)` and
    :math:`\theta \leftarrow \phi`. Zhang et al., 2019, "Lookahead Optimizer:
    k steps forward, 1 step back". optax's ``lookahead``: the same arguments,
    state and updates. ``params`` must be a `LookaheadParams`, and the
    updates are one too (fast and slow); apply them unmodified with
    ``gx.apply_updates``, or the fast and slow params fall out of step.

    Three differences from optax, none visible on finite values: arithmetic
    runs in at least float32 (bfloat16 params are rounded once, at the end);
    between synchronisations the slow updates are ``-0.0``, so the slow params
    stay bit for bit as they are (optax's ``0 * d`` turns a NaN in the fast
    params into a NaN in the slow ones at once); and ``reset_state`` selects
    the fresh state with ``where`` rather than optax's ``(1 - s) x + s x_0``,
    which gives NaN from an infinite moment. As in optax, the fresh state is
    ``fast_optimizer.init(params.fast)``, built from the fast params before the
    step. ``init`` also accepts the plain params (as the fast ones), as optax's.
    Elementwise: runs on ``gx.flat_tree`` buffers and on sharded params.

    Args:
      fast_optimizer: the inner optimizer that moves the fast params; it gets
        the extra keyword arguments its ``update`` accepts.
      sync_period: :math:`k \ge 1`, fast steps per synchronisation.
      slow_step_size: :math:`\alpha \in [0, 1]`, how far the slow params move
        toward the fast ones.
      reset_state: re-initialise the fast optimizer's state after each
        synchronisation.

    Example:
      >>> import jax, jax.numpy as jnp, gradxform as gx
      >>> tx = gx.lookahead(gx.sgd(0.1), sync_period=2, slow_step_size=0.5)
      >>> params = gx.LookaheadParams.init_synced({"w": jnp.ones(2)})
      >>> state = tx.init(params)
      >>> for _ in range(2):
      ...     grads = jax.grad(lambda p: jnp.sum(p["w"] ** 2))(params.fast)
      ...     updates, state = tx.update(grads, state, params)
      ...     params = gx.apply_updates(params, updates)
      >>> params.slow["w"], params.fast["w"]
      (Array([0.82, 0.82], dtype=float32), Array([0.82, 0.82], dtype=float32))
    """
    owner = "lookahead"
    validation.transformation(owner, "fast_optimizer", fast_optimizer)
    sync_period = validation.positive_int(owner, "sync_period", sync_period)
    validation.decay_rate(owner, "slow_step_size", slow_step_size, allow_one=True)
    validation.boolean(owner, "reset_state", reset_state)
    accepted = extra_args_filter(fast_optimizer.update)

    def init_fn(params):
        fast = params.fast if _is_lookahead_params(params) else params
        return LookaheadState(
            fast_state=fast_optimizer.init(fast), steps_since_sync=numerics.zero_count()
        )

    def update_fn(updates, state, params=None, **extra_args):
        if not _is_lookahead_params(params):
            raise TypeError(
                f"{owner}: params must be gx.LookaheadParams(fast=..., slow=...), the fast and "
                f"slow params (gx.LookaheadParams.init_synced(params) starts them equal), got "
                f"{type(params).__name__}"
            )
        tree.check_same_structure(owner, "params.fast", params.fast, updates)
        tree.check_same_structure(owner, "params.slow", params.slow, updates)
        fast_updates, fast_state = fast_optimizer.update(
            updates, state.fast_state, params.fast, **accepted(extra_args)
        )
        sync = state.steps_since_sync == sync_period - 1

        def leaf(u, f, s):
            dtype = numerics.compute_dtype(u.dtype, f.dtype, s.dtype)
            u_c, alpha = u.astype(dtype), numerics.hyperparameter(slow_step_size, dtype)
            difference = u_c + f.astype(dtype) - s.astype(dtype)
            fast = jnp.where(sync, u_c - (1 - alpha) * difference, u_c)
            slow = jnp.where(sync, alpha * difference, -0.0)
            return numerics.store(fast, u.dtype), numerics.store(slow, s.dtype)

        new_fast, new_slow = tree.tree_map_multi(leaf, 2, fast_updates, params.fast, params.slow)
        if reset_state:
            fresh = fast_optimizer.init(params.fast)
            fast_state = jax.tree.map(
                lambda current, initial: jnp.where(sync, initial, current), fast_state, fresh
            )
        return params._replace(fast=new_fast, slow=new_slow), LookaheadState(
            fast_state=fast_state,
            steps_since_sync=numerics.cyclic_increment(state.steps_since_sync, sync_period),
        )

    return GradientTransformation(init_fn, update_fn)
