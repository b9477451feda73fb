"""The objective's value and gradient, reused from a line search's state."""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from gradxform.core.inspection import tree_get


def value_and_grad_from_state(value_fn: Callable[..., Any]) -> Callable[..., tuple[Any, Any]]:
    r"""`jax.value_and_grad` of ``value_fn``, taken from the optimizer state when it is there.

    .. math::
        (f(w), \nabla f(w)) = \begin{cases} (v_S, g_S) & v_S \text{ finite} \\
        \mathrm{value\_and\_grad}(f)(w) & \text{otherwise} \end{cases}

    where :math:`v_S, g_S` are the ``value`` and ``grad`` a line search
    (`scale_by_zoom_linesearch`, or `scale_by_backtracking_linesearch` with
    ``store_grad=True``) left in the state: the objective at the params its
    step led to, which are the params of the next call. After ``init`` the
    value is inf, so the first call computes them. The returned function is
    ``f(params, *args, state, **kwargs)``: ``args`` and ``kwargs`` go to
    ``value_fn`` when it is called. The choice is a ``lax.cond``, so it works
    under ``jit``; the stored values are returned in the dtypes ``value_fn``
    gives. As ``optax.value_and_grad_from_state``: a state with no ``value``
    or ``grad`` (or a ``grad`` of None) raises a `ValueError`, one with
    several a `KeyError` (from `tree_get`). Only for deterministic objectives:
    with a minibatch the stored values are another batch's.

    Args:
      value_fn: the objective ``value_fn(params, *args, **kwargs)``, returning
        one real number, differentiable in its first argument.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> f = lambda w: jnp.sum(w ** 2)
      >>> tx = gx.chain(gx.scale(-1.0), gx.scale_by_zoom_linesearch(max_linesearch_steps=10))
      >>> w = jnp.array([1.0, 2.0])
      >>> state = tx.init(w)
      >>> value_and_grad = gx.value_and_grad_from_state(f)
      >>> value, grad = value_and_grad(w, state=state)
      >>> updates, state = tx.update(grad, state, w, value=value, grad=grad, value_fn=f)
      >>> w = gx.apply_updates(w, updates)
      >>> value_and_grad(w, state=state)  # stored by the line search, not recomputed
      (Array(0., dtype=float32), Array([0., 0.], dtype=float32))
    """
    if not callable(value_fn):
        raise TypeError(f"value_and_grad_from_state: value_fn must be a function, got {value_fn!r}")
    compute = jax.value_and_grad(value_fn)

    def value_and_grad(params: Any, *fn_args: Any, state: Any, **fn_kwargs: Any) -> tuple:
        value, grad = tree_get(state, "value"), tree_get(state, "grad")
        if value is None or grad is None:
            raise ValueError(
                "value_and_grad_from_state: no value or gradient in the state; a line search "
                "that stores them must be part of the optimizer (scale_by_zoom_linesearch, or "
                "scale_by_backtracking_linesearch with store_grad=True)"
            )
        shapes = jax.eval_shape(compute, params, *fn_args, **fn_kwargs)
        stored = jax.tree.map(lambda x, s: jnp.asarray(x).astype(s.dtype), (value, grad), shapes)
        return jax.lax.cond(
            jnp.isfinite(value), lambda: stored, lambda: compute(params, *fn_args, **fn_kwargs)
        )

    return value_and_grad
