"""Momentum (`trace`) and exponential moving averages of updates (`ema`)."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradxform.core import numerics, sparse, tree, validation
from gradxform.core.base import GradientTransformation, Params, public_constructor


class TraceState(NamedTuple):
    """The momentum buffer."""

    trace: Params


class DampenedTraceState(NamedTuple):
    """The step count and the momentum buffer, for `trace` with ``dampening``."""

    count: jax.Array  # int32, shape ()
    trace: Params


@sparse.row_sparse_rule("lazy")
@public_constructor
def trace(
    decay: float, nesterov: bool = False, accumulator_dtype: Any = None, *,
    dampening: float | None = None,
) -> GradientTransformation:
    r"""Heavy-ball momentum: a decaying sum of past updates.

    .. math::
        t_k = g_k + \mu\, t_{k-1}, \qquad
        u_k = \begin{cases} g_k + \mu\, t_k & \text{nesterov} \\ t_k & \text{otherwise}\end{cases}

    Same as ``optax.trace``; note that unlike `ema` there is no :math:`(1-\mu)`.
    With ``dampening`` :math:`d`, ``torch.optim.SGD``'s buffer instead:
    :math:`t_1 = g_1` and :math:`t_k = \mu\, t_{k-1} + (1-d)\, g_k` after, which
    needs a step count in the state (`DampenedTraceState`).
    A `RowSparse` leaf is lazy: only the touched rows' momentum is updated and
    steps; an untouched row neither decays nor moves. Polyak, 1964; Sutskever
    et al., 2013.

    Args:
      decay: the momentum :math:`\mu` in [0, 1].
      nesterov: use Nesterov's look-ahead form.
      accumulator_dtype: dtype of :math:`t`; None keeps the params' dtype.
      dampening: None (optax's rule), or torch's :math:`d` in [0, 1], which
        scales every gradient but the first.

    Example:
      >>> import gradxform as gx
      >>> tx = gx.chain(gx.trace(decay=0.9), gx.scale_by_learning_rate(0.01))
    """
    owner = "trace"
    validation.decay_rate(owner, "decay", decay, allow_one=True)
    validation.boolean(owner, "nesterov", nesterov)
    validation.float_dtype(owner, "accumulator_dtype", accumulator_dtype)
    if dampening is not None:
        validation.decay_rate(owner, "dampening", dampening, allow_one=True)

    def init_fn(params):
        buffers = tree.tree_zeros_like(params, accumulator_dtype)
        if dampening is None:
            return TraceState(trace=buffers)
        return DampenedTraceState(count=numerics.zero_count(), trace=buffers)

    def leaf(g, t, first=None):
        g_c = numerics.upcast(g, t.dtype)
        factor = numerics.hyperparameter(decay, g_c.dtype)
        if first is None:
            t_new = g_c + factor * t.astype(g_c.dtype)
        else:  # torch: the first buffer is the gradient itself
            kept = g_c * (1 - numerics.hyperparameter(dampening, g_c.dtype))
            t_new = jnp.where(first, g_c, factor * t.astype(g_c.dtype) + kept)
        update = g_c + factor * t_new if nesterov else t_new
        return numerics.store(update, g.dtype), numerics.store(t_new, t.dtype)

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        tree.check_same_structure(owner, "state", state.trace, updates)
        if dampening is None:
            updates, new_trace = tree.tree_map_multi(
                sparse.on_touched_rows(leaf, num_states=1), 2, updates, state.trace)
            return updates, TraceState(trace=new_trace)
        first = state.count == 0
        updates, new_trace = tree.tree_map_multi(
            sparse.on_touched_rows(lambda g, t: leaf(g, t, first), num_states=1), 2, updates,
            state.trace)
        return updates, DampenedTraceState(count=numerics.safe_increment(state.count),
                                           trace=new_trace)

    return GradientTransformation(init_fn, update_fn)


class EmaState(NamedTuple):
    """The step count and the moving average."""

    count: jax.Array  # int32, shape ()
    ema: Params


@public_constructor
def ema(decay: float, debias: bool = True, accumulator_dtype: Any = None) -> GradientTransformation:
    r"""An exponential moving average of the updates, optionally debiased.

    .. math::
        e_t = \rho\, e_{t-1} + (1-\rho)\, g_t, \quad e_0 = 0, \qquad
        u_t = \begin{cases} e_t / (1-\rho^t) & \text{debias} \\ e_t & \text{otherwise}\end{cases}

    Same as ``optax.ema``. (An average of the *parameters*, as in Keras's
    ``use_ema``, is a different transform.)

    Args:
      decay: :math:`\rho`, in [0, 1) when ``debias`` (1 would divide by zero),
        otherwise in [0, 1].
      debias: divide by :math:`1-\rho^t`.
      accumulator_dtype: dtype of :math:`e`; None keeps the params' dtype.

    Example:
      >>> import gradxform as gx
      >>> tx = gx.chain(gx.ema(decay=0.9), gx.scale_by_learning_rate(0.01))
    """
    owner = "ema"
    validation.boolean(owner, "debias", debias)
    validation.decay_rate(owner, "decay", decay, allow_one=not debias)
    validation.float_dtype(owner, "accumulator_dtype", accumulator_dtype)

    def init_fn(params):
        return EmaState(
            count=numerics.zero_count(), ema=tree.tree_zeros_like(params, accumulator_dtype)
        )

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        tree.check_same_structure(owner, "state", state.ema, updates)
        count = numerics.safe_increment(state.count)
        corrections = numerics.per_dtype(lambda dtype: numerics.bias_correction(decay, count, dtype))

        def leaf(g, e):
            g_c = numerics.upcast(g, e.dtype)
            correction = corrections(numerics.real_dtype(g_c.dtype))
            e_new = numerics.moment(decay, e.astype(g_c.dtype), g_c)
            update = e_new / correction.astype(g_c.dtype) if debias else e_new
            return numerics.store(update, g.dtype), numerics.store(e_new, e.dtype)

        updates, new_ema = tree.tree_map_multi(leaf, 2, updates, state.ema)
        return updates, EmaState(count=count, ema=new_ema)

    return GradientTransformation(init_fn, update_fn)
