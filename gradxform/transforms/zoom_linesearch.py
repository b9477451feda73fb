"""The zoom line search: a step meeting the strong Wolfe conditions along the updates.

`_loop` runs the search for one update: Nocedal & Wright's Algorithms 3.5
(bracketing) and 3.6 (zoom). While no interval is known, each iteration tries a
larger step; once one is bracketed, each iteration tries a point inside it, the
minimiser of a cubic or quadratic interpolant when it lies well inside, else
the midpoint. A point is accepted when it meets both the sufficient decrease
(Armijo, or Hager and Zhang's approximate form) and the curvature condition,
within ``tol``. When the loop gives up, the best point of sufficient decrease
seen is taken if there is one. The decisions and the arithmetic are optax
0.2.8's.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gradxform.core import linesearch_tools as tools
from gradxform.core import numerics, tree, validation
from gradxform.core.base import GradientTransformation, Updates, public_constructor

INITIAL_GUESS_STRATEGIES = ("one", "keep")


class ZoomLinesearchInfo(NamedTuple):
    """What the latest search did, for debugging (optax's fields).

    ``num_linesearch_steps``: the objective's evaluations; ``decrease_error``
    and ``curvature_error``: by how much the step taken misses each condition
    (0 when it meets it). A positive curvature error alone is benign (the
    largest step may be too small); a positive decrease error means the values
    may not decrease.
    """

    num_linesearch_steps: jax.Array  # int32, shape ()
    decrease_error: jax.Array
    curvature_error: jax.Array


class ScaleByZoomLinesearchState(NamedTuple):
    """The step taken, the objective's value and gradient there, and `ZoomLinesearchInfo`.

    ``value`` and ``grad`` are those at the new params: `value_and_grad_from_state`
    hands them to the next step. ``value`` is inf after ``init``.
    """

    learning_rate: jax.Array
    value: jax.Array
    grad: Updates
    info: ZoomLinesearchInfo


class Rules(NamedTuple):
    """The hyperparameters of the search (numbers, or arrays when injected)."""

    max_steps: int
    max_stepsize: Any  # None: no bound
    tol: Any
    increase_factor: Any
    slope_rtol: Any
    curv_rtol: Any  # None: no curvature condition (curv_rtol=inf)
    approx_dec_rtol: Any  # None: Armijo's condition only
    interval_threshold: Any
    verbose: bool


class Search(NamedTuple):
    """The loop's state: the latest point, the bracket, the best safe point, the flags."""

    count: jax.Array
    stepsize: jax.Array
    value: jax.Array
    grad: Any
    slope: jax.Array
    decrease_error: jax.Array
    curvature_error: jax.Array
    interval_found: jax.Array
    done: jax.Array
    failed: jax.Array
    low: jax.Array
    value_low: jax.Array
    slope_low: jax.Array
    high: jax.Array
    value_high: jax.Array
    slope_high: jax.Array
    cubic_ref: jax.Array
    value_cubic_ref: jax.Array
    safe_stepsize: jax.Array
    safe_value: jax.Array
    safe_grad: Any


class _Line(NamedTuple):
    """The objective along the update direction, and its value and slope at step 0."""

    evaluate: Callable  # stepsize -> (value, grad, slope)
    value_init: jax.Array
    slope_init: jax.Array
    dtype: np.dtype

    def hp(self, value: Any) -> Any:
        """A hyperparameter ready to meet the search's scalars."""
        return numerics.hyperparameter(value, self.dtype)


def _errors(rules: Rules, line: _Line, stepsize, value, slope):
    """The sufficient decrease and curvature errors at a point: 0 when met, inf for NaN."""
    hp = line.hp
    c1 = hp(rules.slope_rtol)
    decrease = value - line.value_init - c1 * stepsize * line.slope_init
    if rules.approx_dec_rtol is not None:
        # Hager & Zhang's approximate decrease, once the value is within
        # approx_dec_rtol * |f(w)| of f(w) (their equations 23, 26-27).
        approximate = slope - (2 * c1 - 1.0) * line.slope_init
        close = value - line.value_init - hp(rules.approx_dec_rtol) * jnp.abs(line.value_init)
        decrease = jnp.minimum(jnp.maximum(approximate, close), decrease)
    decrease = jnp.maximum(decrease, 0.0)
    decrease = jnp.where(jnp.isnan(decrease), jnp.inf, decrease)
    if rules.curv_rtol is None:  # curv_rtol = inf: only a zero initial slope fails it (as optax)
        met = (jnp.abs(line.slope_init) > 0) & jnp.isfinite(slope)
        curvature = jnp.where(met, 0.0, jnp.inf).astype(line.dtype)
    else:
        curvature = jnp.abs(slope) - hp(rules.curv_rtol) * jnp.abs(line.slope_init)
        curvature = jnp.maximum(curvature, 0.0)
        curvature = jnp.where(jnp.isnan(curvature), jnp.inf, curvature)
    return decrease, curvature


def _bracket_trial(rules: Rules, line: _Line, s: Search, guess):
    """Algorithm 3.5's next step: ``guess`` first, then larger ones (up to the largest)."""
    stepsize = jnp.where(s.count == 0, guess, line.hp(rules.increase_factor) * s.stepsize)
    reached = jnp.asarray(False)
    if rules.max_stepsize is not None:
        reached = stepsize >= line.hp(rules.max_stepsize)
        stepsize = jnp.minimum(stepsize, line.hp(rules.max_stepsize))
    return stepsize, reached


def _bracket(rules: Rules, line: _Line, s: Search, stepsize, reached, point) -> Search:
    """Algorithm 3.5: keep growing the step until an interval holds a good one."""
    value, grad, slope, decrease, curvature = point
    error = jnp.maximum(decrease, curvature)
    tol = line.hp(rules.tol)
    safe = tools.where_tree(decrease <= tol, (stepsize, value, grad),
                            (s.safe_stepsize, s.safe_value, s.safe_grad))
    high_is_new = (decrease > 0.0) | ((value >= s.value) & (s.count > 0))
    low_is_new = (slope >= 0.0) & ~high_is_new
    previous, new = (s.stepsize, s.value, s.slope), (stepsize, value, slope)
    low, value_low, slope_low, high, value_high, slope_high = tools.where_tree(
        low_is_new, new + previous, previous + new)
    found = high_is_new | low_is_new | (error <= tol)
    done = (error <= tol) | (reached & ~found)
    if rules.verbose:  # the bracketing phase's verdict (this is computed in the zoom's too)
        tools.report_no_interval(reached & ~found & ~s.interval_found, line.value_init,
                                 line.slope_init, stepsize, decrease, curvature)
    return Search(
        numerics.safe_increment(s.count), stepsize, value, grad, slope, decrease, curvature,
        found, done, (s.count + 1 >= rules.max_steps) & ~done,
        low, value_low, slope_low, high, value_high, slope_high, low, value_low, *safe)


def _zoom_trial(s: Search):
    """Algorithm 3.6's next point: the cubic's or the quadratic's minimiser if well inside the
    bracket, else its middle."""
    width = jnp.abs(s.high - s.low)
    left, right = jnp.minimum(s.high, s.low), jnp.maximum(s.high, s.low)
    cubic, cubic_ok = tools.cubic_minimum(
        s.low, s.value_low, s.slope_low, s.high, s.value_high, s.cubic_ref, s.value_cubic_ref)
    use_cubic = cubic_ok & (cubic > left + 0.2 * width) & (cubic < right - 0.2 * width)
    quadratic, quadratic_ok = tools.quadratic_minimum(
        s.low, s.value_low, s.slope_low, s.high, s.value_high)
    use_quadratic = ~use_cubic & quadratic_ok & (
        (quadratic > left + 0.1 * width) & (quadratic < right - 0.1 * width))
    return jnp.where(use_cubic, cubic,
                     jnp.where(use_quadratic, quadratic, (s.low + s.high) / 2.0)), width


def _zoom(rules: Rules, line: _Line, s: Search, middle, width, point) -> Search:
    """Algorithm 3.6: shrink the bracket around the point tried."""
    value, grad, slope, decrease, curvature = point
    error = jnp.maximum(decrease, curvature)
    tol = line.hp(rules.tol)
    # The best point of sufficient decrease so far, in case curvature is never met.
    safe = tools.where_tree((decrease <= tol) & (value < s.safe_value), (middle, value, grad),
                            (s.safe_stepsize, s.safe_value, s.safe_grad))
    done = error <= tol
    high_is_middle = (decrease > 0.0) | (value >= s.value_low)
    high_is_low = (slope * (s.high - s.low) >= 0.0) & ~high_is_middle
    point, old_low, old_high = (middle, value, slope), (s.low, s.value_low, s.slope_low), (
        s.high, s.value_high, s.slope_high)
    high = tools.where_tree(high_is_low, old_low,
                            tools.where_tree(high_is_middle, point, old_high))
    low = tools.where_tree(high_is_middle, old_low, point)
    # The point the bracket just lost is the cubic's third point.
    cubic_ref, value_cubic_ref = tools.where_tree(
        high_is_middle | high_is_low, old_high[:2], old_low[:2])
    # Give up at the last step, or once the bracket is below the threshold and a
    # safe point exists (a very steep function may need tiny steps: go on without one).
    too_small = width <= line.hp(rules.interval_threshold)
    failed = ((s.count + 1 >= rules.max_steps) | (too_small & (safe[0] > 0.0))) & ~done
    return Search(
        numerics.safe_increment(s.count), middle, value, grad, slope, decrease, curvature,
        s.interval_found, done, failed, *low, *high, cubic_ref, value_cubic_ref, *safe)


def _fall_back(rules: Rules, line: _Line, s: Search) -> Search:
    """The loop gave up: take the safe point if there is one (or if the last is outside the
    objective's domain), else the last point."""
    use_safe = (s.safe_stepsize > 0.0) | jnp.isinf(s.decrease_error)
    stepsize, value, grad = tools.where_tree(use_safe, (s.safe_stepsize, s.safe_value, s.safe_grad),
                                             (s.stepsize, s.value, s.grad))
    if rules.verbose:
        tools.report_zoom_failure(s, line.value_init, line.slope_init,
                                  line.hp(rules.interval_threshold))
    return s._replace(stepsize=stepsize, value=value, grad=grad)


def _loop(rules: Rules, evaluate: Callable, value, grad, slope, guess, dtype) -> Search:
    """Runs the loop from step 0 (value, grad, slope there) with the first trial ``guess``."""
    line = _Line(evaluate, value, slope, dtype)
    zero = jnp.zeros([], dtype)
    inf = jnp.full([], jnp.inf, dtype)
    false = jnp.asarray(False)
    start = Search(numerics.zero_count(), zero, value, grad, slope, inf, inf, false, false, false,
                   zero, value, slope, zero, value, slope, zero, value, zero, value, grad)

    def body(s: Search) -> Search:
        # One evaluation of the objective per iteration, at the bracketing step or the zoom's
        # point: the two updates of the state are cheap, and both are computed.
        step, reached = _bracket_trial(rules, line, s, guess)
        middle, width = _zoom_trial(s)
        stepsize = jnp.where(s.interval_found, middle, step)
        value, grad, slope = line.evaluate(stepsize)
        point = (value, grad, slope, *_errors(rules, line, stepsize, value, slope))
        s = tools.where_tree(s.interval_found, _zoom(rules, line, s, middle, width, point),
                             _bracket(rules, line, s, step, reached, point))
        return jax.lax.cond(s.failed, lambda s: _fall_back(rules, line, s), lambda s: s, s)

    return jax.lax.while_loop(lambda s: ~(s.done | s.failed), body, start)


def check_zoom_arguments(owner, max_linesearch_steps, max_learning_rate, tol, increase_factor,
                         slope_rtol, curv_rtol, approx_dec_rtol, stepsize_precision,
                         initial_guess_strategy, verbose) -> bool:
    """Validates the arguments; returns whether ``curv_rtol`` is inf (no curvature condition)."""
    validation.positive_int(owner, "max_linesearch_steps", max_linesearch_steps)
    if max_learning_rate is not None:
        validation.positive(owner, "max_learning_rate", max_learning_rate)
    validation.non_negative(owner, "tol", tol)
    tools.factor(owner, "increase_factor", increase_factor, low=1.0, allow_inf=False)
    validation.in_range(owner, "slope_rtol", slope_rtol, low=0.0, high=1.0, high_open=True)
    no_curvature = tools.factor(owner, "curv_rtol", curv_rtol, low=0.0, allow_inf=True)
    if approx_dec_rtol is not None:
        validation.non_negative(owner, "approx_dec_rtol", approx_dec_rtol)
    validation.non_negative(owner, "stepsize_precision", stepsize_precision)
    validation.string(owner, "initial_guess_strategy", initial_guess_strategy)
    if initial_guess_strategy not in INITIAL_GUESS_STRATEGIES:
        raise ValueError(f"{owner}: initial_guess_strategy must be one of "
                         f"{INITIAL_GUESS_STRATEGIES}, got {initial_guess_strategy!r}")
    validation.boolean(owner, "verbose", verbose)
    return no_curvature


@public_constructor
def scale_by_zoom_linesearch(
    max_linesearch_steps: int,
    max_learning_rate: float | None = None,
    tol: float = 0.0,
    increase_factor: float = 2.0,
    slope_rtol: float = 1e-4,
    curv_rtol: float = 0.9,
    approx_dec_rtol: float | None = 1e-6,
    stepsize_precision: float = 1e-5,
    initial_guess_strategy: str = "keep",
    verbose: bool = False,
) -> GradientTransformation:
    r"""Scales the updates by a step meeting the strong Wolfe conditions, found by zoom.

    .. math::
        u \leftarrow \eta\, u, \qquad
        f(w + \eta u) \le f(w) + c_1 \eta \langle u, \nabla f(w) \rangle + \epsilon,
        \qquad |\langle \nabla f(w + \eta u), u \rangle|
        \le c_2 |\langle \nabla f(w), u \rangle| + \epsilon

    with :math:`c_1` ``slope_rtol``, :math:`c_2` ``curv_rtol`` and
    :math:`\epsilon` ``tol``. Near a minimum, where the first condition can
    only see differences above :math:`\sqrt{\varepsilon_{machine}}`, it is
    replaced by Hager and Zhang's approximate decrease
    :math:`\langle \nabla f(w + \eta u), u \rangle \le (2 c_1 - 1)
    \langle \nabla f(w), u \rangle + \epsilon` once
    :math:`f(w + \eta u) \le f(w) + c_3 |f(w)|` (:math:`c_3` ``approx_dec_rtol``).
    The search brackets an interval of good steps, growing the first guess by
    ``increase_factor`` (Nocedal & Wright's Algorithm 3.5), then shrinks it by
    cubic or quadratic interpolation, or bisection (Algorithm 3.6). When it
    fails it takes the best step of sufficient decrease seen, or, with none,
    the last one tried (0 when the objective was NaN or inf there).

    ``update`` takes the objective as keyword arguments:
    ``tx.update(updates, state, params, value=f(params), grad=grad_f(params),
    value_fn=f, **more)``, where ``more`` are passed on to
    ``value_fn(params, **more)`` (a `TypeError` if it does not take them, or
    if value, grad or value_fn is missing). The updates must be a descent
    direction (:math:`\langle u, \nabla f(w) \rangle < 0`): a transformation
    before this one turns gradients into one (a negative scale). The new
    value and gradient stay in the state for `value_and_grad_from_state`.

    Same arguments, defaults, state and numbers as
    ``optax.scale_by_zoom_linesearch``; the search's scalars (step, value,
    errors) are kept in at least float32, the trial params passed to
    ``value_fn`` have the params' dtypes, and ``curv_rtol=float("inf")``
    drops the curvature condition as optax's docstring says. ``verbose=True``
    prints optax's diagnostics with ``jax.debug.print`` when the search fails.
    Works on `flat_tree` buffers and on sharded params (the inner products are
    global reductions). Nocedal & Wright, 1999, "Numerical Optimization",
    Algorithms 3.5 and 3.6; Hager & Zhang, 2006, "Algorithm 851: CG_DESCENT".

    Args:
      max_linesearch_steps: the most evaluations of the objective per update, >= 1.
      max_learning_rate: the largest step :math:`\eta > 0`, or None for no bound.
      tol: :math:`\epsilon \ge 0`, the tolerance on both conditions.
      increase_factor: by how much (>= 1) a step grows while bracketing.
      slope_rtol: :math:`c_1` in [0, 1).
      curv_rtol: :math:`c_2 \ge 0`; ``inf`` drops the curvature condition.
      approx_dec_rtol: :math:`c_3 \ge 0`, or None to use Armijo's condition only.
      stepsize_precision: once the bracket is narrower than this (>= 0) and a
        step of sufficient decrease is known, the search stops with it.
      initial_guess_strategy: ``"one"`` (first try :math:`\eta = 1`, for
        L-BFGS) or ``"keep"`` (the previous step, for gradient descent).
      verbose: print diagnostics when a search fails.

    Example:
      >>> import jax, jax.numpy as jnp, gradxform as gx
      >>> f = lambda w: jnp.sum((w - 1.0) ** 2)
      >>> w = jnp.array([3.0, -1.0])
      >>> tx = gx.chain(gx.scale(-1.0), gx.scale_by_zoom_linesearch(max_linesearch_steps=10))
      >>> value, grad = jax.value_and_grad(f)(w)
      >>> updates, state = tx.update(grad, tx.init(w), w, value=value, grad=grad, value_fn=f)
      >>> gx.apply_updates(w, updates)
      Array([1., 1.], dtype=float32)
    """
    owner = "scale_by_zoom_linesearch"
    no_curvature = check_zoom_arguments(
        owner, max_linesearch_steps, max_learning_rate, tol, increase_factor, slope_rtol,
        curv_rtol, approx_dec_rtol, stepsize_precision, initial_guess_strategy, verbose)
    rules = Rules(
        max_steps=int(max_linesearch_steps), max_stepsize=max_learning_rate, tol=tol,
        increase_factor=increase_factor, slope_rtol=slope_rtol,
        curv_rtol=None if no_curvature else curv_rtol, approx_dec_rtol=approx_dec_rtol,
        interval_threshold=stepsize_precision, verbose=bool(verbose))

    def init_fn(params):
        dtype = tools.scalar_dtype(params)
        inf = jnp.full([], jnp.inf, dtype)
        return ScaleByZoomLinesearchState(
            learning_rate=jnp.ones([], dtype), value=inf, grad=tree.tree_zeros_like(params),
            info=ZoomLinesearchInfo(numerics.zero_count(), inf, inf))

    def search(updates, state, params, value, grad, *, value_fn, fn_kwargs):
        dtype = state.learning_rate.dtype
        grad = tools.cast_like(grad, state.grad)

        def evaluate(stepsize):
            trial = tools.add_scaled(params, stepsize, updates)
            trial_value, trial_grad = tools.call_objective(value_fn, fn_kwargs, trial, True)
            trial_grad = tools.cast_like(trial_grad, state.grad)
            slope = tools.real_inner(trial_grad, updates, conjugate=False).astype(dtype)
            return jnp.asarray(trial_value).astype(dtype), trial_grad, slope

        slope = tools.real_inner(updates, grad).astype(dtype)
        guess = jnp.ones([], dtype) if initial_guess_strategy == "one" else state.learning_rate
        found = _loop(rules, evaluate, jnp.asarray(value).astype(dtype), grad, slope, guess,
                      dtype)
        info = ZoomLinesearchInfo(found.count, found.decrease_error, found.curvature_error)
        new_state = ScaleByZoomLinesearchState(found.stepsize, found.value, found.grad, info)
        return tools.scale_tree(found.stepsize, updates), new_state

    run = tools.compiled_when_eager(search)

    def update_fn(updates, state, params=None, **extra_args):
        value, grad, value_fn, fn_kwargs = tools.objective(owner, extra_args)
        tools.check_trees(owner, updates, params, grad)
        tree.check_same_structure(owner, "state", state.grad, updates, none_matches=True)
        return run(updates, state, params, value, grad, value_fn=value_fn, fn_kwargs=fn_kwargs)

    return GradientTransformation(init_fn, update_fn)
