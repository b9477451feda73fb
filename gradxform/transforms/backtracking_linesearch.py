"""Backtracking line search: the first step of sufficient decrease (Armijo) on a geometric grid."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradxform.core import numerics, tree, validation
from gradxform.core.base import GradientTransformation, Updates, public_constructor
from gradxform.core import linesearch_tools as tools


class BacktrackingLinesearchInfo(NamedTuple):
    """What the latest search did, for debugging (optax's fields).

    ``num_linesearch_steps``: the objective's evaluations; ``decrease_error``:
    by how much the step taken misses the sufficient decrease (0 when met).
    """

    num_linesearch_steps: jax.Array  # int32, shape ()
    decrease_error: jax.Array


class ScaleByBacktrackingLinesearchState(NamedTuple):
    """The step taken, the objective's value there, its gradient (with ``store_grad``, else
    None), and `BacktrackingLinesearchInfo`. ``value`` is inf after ``init``."""

    learning_rate: jax.Array
    value: jax.Array
    grad: Updates | None
    info: BacktrackingLinesearchInfo


class _Search(NamedTuple):
    learning_rate: jax.Array
    value: jax.Array
    grad: Any
    decrease_error: jax.Array
    count: jax.Array


@public_constructor
def scale_by_backtracking_linesearch(
    max_backtracking_steps: int,
    slope_rtol: float = 1e-4,
    decrease_factor: float = 0.8,
    increase_factor: float = 1.5,
    max_learning_rate: float = 1.0,
    atol: float = 0.0,
    rtol: float = 0.0,
    store_grad: bool = False,
    verbose: bool = False,
) -> GradientTransformation:
    r"""Scales the updates by the first step of sufficient decrease, backtracking from a guess.

    .. math::
        u \leftarrow \eta\, u, \qquad
        f(w + \eta u) \le (1 + \delta) f(w) + c\, \eta \langle u, \nabla f(w) \rangle + \epsilon,
        \qquad \eta \in \{\eta_0 \beta^k\}_{k = 0, 1, \dots}

    with :math:`c` ``slope_rtol``, :math:`\delta` ``rtol``, :math:`\epsilon`
    ``atol``, :math:`\beta` ``decrease_factor`` and the first guess
    :math:`\eta_0 = \min(\gamma\, \eta_{prev}, \eta_{max})` (:math:`\gamma`
    ``increase_factor``, :math:`\eta_{prev}` the previous step, 1 at first).
    If no step meets the condition within ``max_backtracking_steps``
    reductions, the last one is taken, or 0 if the objective was NaN or inf there.

    ``update`` takes the objective as keyword arguments:
    ``tx.update(updates, state, params, value=f(params), grad=grad_f(params),
    value_fn=f, **more)``, where ``more`` are passed on to
    ``value_fn(params, **more)`` (a `TypeError` if it does not take them, or if
    value, grad or value_fn is missing). The updates must be a descent direction
    (:math:`\langle u, \nabla f(w) \rangle < 0`). With ``store_grad`` the
    gradient at the accepted step is computed too (reverse mode, once) and
    kept with the value for `value_and_grad_from_state`.

    Same arguments, defaults, state and numbers as
    ``optax.scale_by_backtracking_linesearch``; the step and errors are kept in
    at least float32, the trial params passed to ``value_fn`` have the params'
    dtypes, and ``increase_factor=float("inf")`` starts every search at
    :math:`\eta_{max}`, as optax's docstring says (optax's own code then
    computes :math:`\infty \cdot 0` after a failed search and gets NaN).
    ``verbose=True`` prints optax's diagnostics with ``jax.debug.print``
    when the search fails. Works on `flat_tree` buffers and sharded params.
    Armijo, 1966; Nocedal & Wright, 1999, "Numerical Optimization", Algorithm
    3.1; Vaswani et al., 2019, "Painless Stochastic Gradient".

    Args:
      max_backtracking_steps: the most reductions of the step per update, >= 0.
      slope_rtol: :math:`c` in [0, 1).
      decrease_factor: :math:`\beta` in (0, 1).
      increase_factor: :math:`\gamma \ge 1`, or inf to start at ``max_learning_rate``.
      max_learning_rate: :math:`\eta_{max} > 0`.
      atol: :math:`\epsilon \ge 0`.
      rtol: :math:`\delta \ge 0`.
      store_grad: also compute and keep the gradient at the accepted step.
      verbose: print diagnostics when a search fails.

    Example:
      >>> import jax, jax.numpy as jnp, gradxform as gx
      >>> f = lambda w: jnp.sum(w ** 2)
      >>> w = jnp.array([1.0, 2.0])
      >>> tx = gx.chain(gx.scale(-1.0), gx.scale_by_backtracking_linesearch(15))
      >>> value, grad = jax.value_and_grad(f)(w)
      >>> updates, state = tx.update(grad, tx.init(w), w, value=value, grad=grad, value_fn=f)
      >>> gx.apply_updates(w, updates)
      Array([-0.6, -1.2], dtype=float32)
    """
    owner = "scale_by_backtracking_linesearch"
    validation.positive_int(owner, "max_backtracking_steps", max_backtracking_steps, minimum=0)
    validation.in_range(owner, "slope_rtol", slope_rtol, low=0.0, high=1.0, high_open=True)
    validation.in_range(owner, "decrease_factor", decrease_factor, low=0.0, high=1.0,
                        low_open=True, high_open=True)
    start_at_max = tools.factor(owner, "increase_factor", increase_factor, low=1.0, allow_inf=True)
    validation.positive(owner, "max_learning_rate", max_learning_rate)
    validation.non_negative(owner, "atol", atol)
    validation.non_negative(owner, "rtol", rtol)
    validation.boolean(owner, "store_grad", store_grad)
    validation.boolean(owner, "verbose", verbose)
    max_steps = int(max_backtracking_steps)

    def init_fn(params):
        dtype = tools.scalar_dtype(params)
        inf = jnp.full([], jnp.inf, dtype)
        return ScaleByBacktrackingLinesearchState(
            learning_rate=jnp.ones([], dtype), value=inf,
            grad=tree.tree_zeros_like(params) if store_grad else None,
            info=BacktrackingLinesearchInfo(numerics.zero_count(), inf))

    def search(updates, state, params, value, grad, *, value_fn, fn_kwargs):
        dtype = state.learning_rate.dtype
        hp = lambda x: numerics.hyperparameter(x, dtype)  # noqa: E731
        value = jnp.asarray(value).astype(dtype)
        slope = tools.real_inner(updates, grad, conjugate=False).astype(dtype)
        zeros = tree.tree_zeros_like(params) if store_grad else None

        def decrease_error(learning_rate, new_value):
            error = new_value - (1.0 + hp(rtol)) * value - learning_rate * hp(slope_rtol) * slope
            return jnp.maximum(jnp.where(jnp.isnan(error), jnp.inf, error), 0.0)

        def body(s: _Search) -> _Search:
            learning_rate = jnp.where(s.count > 0, hp(decrease_factor) * s.learning_rate,
                                      s.learning_rate)
            trial = tools.add_scaled(params, learning_rate, updates)
            if store_grad:
                new_value, pullback = jax.vjp(lambda p: value_fn(p, **fn_kwargs), trial)
                error = decrease_error(learning_rate, jnp.asarray(new_value).astype(dtype))
                last = (error <= hp(atol)) | (s.count == max_steps)
                new_grad = jax.lax.cond(
                    last, lambda: tools.cast_like(pullback(jnp.ones_like(new_value))[0], zeros),
                    lambda: s.grad)
            else:
                new_value, new_grad = tools.call_objective(value_fn, fn_kwargs, trial, False)
                error = decrease_error(learning_rate, jnp.asarray(new_value).astype(dtype))
            return _Search(learning_rate, jnp.asarray(new_value).astype(dtype), new_grad, error,
                           numerics.safe_increment(s.count))

        guess = jnp.full([], hp(max_learning_rate), dtype) if start_at_max else jnp.minimum(
            hp(increase_factor) * state.learning_rate, hp(max_learning_rate))
        start = _Search(guess, value, zeros, jnp.full([], jnp.inf, dtype), numerics.zero_count())
        found = jax.lax.while_loop(
            lambda s: ~(s.decrease_error <= hp(atol)) & (s.count <= max_steps), body, start)
        # An infinite error (NaN or inf values): no step at all, rather than a non-finite one.
        learning_rate = jnp.where(jnp.isinf(found.decrease_error), jnp.zeros_like(guess),
                                  found.learning_rate)
        if verbose:
            _report(found, value, slope, atol)
        info = BacktrackingLinesearchInfo(found.count, found.decrease_error)
        new_state = ScaleByBacktrackingLinesearchState(learning_rate, found.value, found.grad, info)
        return tools.scale_tree(learning_rate, updates), new_state

    run = tools.compiled_when_eager(search)

    def update_fn(updates, state, params=None, **extra_args):
        value, grad, value_fn, fn_kwargs = tools.objective(owner, extra_args)
        tools.check_trees(owner, updates, params, grad)
        if store_grad:
            tree.check_same_structure(owner, "state", state.grad, updates, none_matches=True)
        return run(updates, state, params, value, grad, value_fn=value_fn, fn_kwargs=fn_kwargs)

    return GradientTransformation(init_fn, update_fn)


def _report(found: _Search, value: jax.Array, slope: jax.Array, atol: Any) -> None:
    """optax's messages when the search ends without sufficient decrease."""
    failed = found.decrease_error > numerics.hyperparameter(atol, found.decrease_error.dtype)
    jax.lax.cond(failed, lambda: jax.debug.print(
        "INFO: gradxform.scale_by_backtracking_linesearch:\n"
        "Backtracking linesearch failed to find a stepsize ensuring sufficent decrease.\n"
        "Value at current params: {value},\nSlope along update direction: {slope}\n"
        "Stepsize: {stepsize}\nDecrease Error: {decrease_error}", value=value, slope=slope,
        stepsize=found.learning_rate, decrease_error=found.decrease_error), lambda: None)
    jax.lax.cond(jnp.isinf(found.decrease_error), lambda: jax.debug.print(
        "Using a stepsize of 0 to avoid infinite or nan values."), lambda: None)
