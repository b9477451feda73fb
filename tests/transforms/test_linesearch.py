"""The line searches (`scale_by_zoom_linesearch`, `scale_by_backtracking_linesearch`) and
`value_and_grad_from_state`, against optax 0.2.8 run live.

* Whole runs: 30+ jitted steps of a descent direction and a line search on a nested-tree
  quadratic (scalar, ``None`` and zero-size leaves), Rosenbrock, and a logistic regression
  whose data reach ``value_fn`` as extra keyword arguments; the value and gradient come
  from `value_and_grad_from_state` in both libraries. Params, values and every state field
  agree at each step (float32, rtol 1e-5), for default and non-default arguments, including
  ``curv_rtol=inf`` and ``increase_factor=inf``.
* Single searches where the search fails, as in optax's own tests: an uphill direction, a
  largest step too small, too few steps, a very flat objective, an objective that is NaN
  past some step, an interval whose high end is below its low end. Same state as optax,
  and the same diagnostics printed with ``verbose=True``.
* bfloat16 params: a step the search accepts at once equals optax's on the float32 values.
* Named errors: no ``value``/``grad``/``value_fn``, extra arguments ``value_fn`` does not
  take, a value that is not one number; `value_and_grad_from_state` on a state without a
  value, with two, or with ``grad=None``.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradxform as gx
from tests.helpers import FAST_COMPILE, assert_trees_close, random_params

STEPS = 30


@contextlib.contextmanager
def optax_rules():
    """optax relies on standard promotion and makes NaN inside its searches (its cubic step)."""
    with jax.numpy_dtype_promotion("standard"), jax.debug_nans(False):
        yield


def _stepper(tx, from_state: Callable, fn: Callable, apply: Callable, compiler_options: Any,
             fn_kwargs: dict) -> Callable:
    value_and_grad = from_state(fn)

    def step(params, state):
        value, grad = value_and_grad(params, state=state, **fn_kwargs)
        updates, state = tx.update(grad, state, params, value=value, grad=grad, value_fn=fn,
                                   **fn_kwargs)
        return apply(params, updates), state, value

    return jax.jit(step, compiler_options=compiler_options)


def run(tx, from_state: Callable, fn: Callable, params: Any, steps: int = STEPS,
        apply: Callable = gx.apply_updates, compiler_options: Any = FAST_COMPILE,
        **fn_kwargs) -> list:
    """``(params, state, value)`` before and after each of ``steps`` jitted steps (the value
    at the params before the step); one compilation."""
    step = _stepper(tx, from_state, fn, apply, compiler_options, fn_kwargs)
    out = [(params, tx.init(params), None)]
    for _ in range(steps):
        out.append(step(*out[-1][:2]))
    return out


def as_optax_state(state: Any, template: Any) -> Any:
    """Our state in optax's types, field for field (a chain member whose layout differs,
    optax's constant learning rate without a count, keeps optax's own)."""
    if isinstance(template, tuple) and not hasattr(template, "_fields"):
        return tuple(as_optax_state(mine, theirs) for mine, theirs in zip(state, template))
    leaves = jax.tree.leaves(state)
    if len(leaves) != len(jax.tree.leaves(template)):
        return template
    return jax.tree.unflatten(jax.tree.structure(template), leaves)


def assert_state_like_optax(mine: Any, theirs: Any, rtol: float, atol: float, where: str) -> None:
    """Field by field: same NamedTuple fields (optax's names and order), same values."""
    if hasattr(theirs, "_fields"):
        assert mine._fields == theirs._fields, (where, mine._fields, theirs._fields)
        for field in theirs._fields:
            assert_state_like_optax(getattr(mine, field), getattr(theirs, field), rtol, atol,
                                    f"{where}.{field}")
    elif isinstance(theirs, (tuple, list)):
        assert len(mine) == len(theirs), where
        for index, (a, b) in enumerate(zip(mine, theirs)):
            assert_state_like_optax(a, b, rtol, atol, f"{where}[{index}]")
    else:
        assert_leaves_close(mine, theirs, rtol, atol, where)


def assert_leaves_close(mine: Any, theirs: Any, rtol: float, atol: float, where: str) -> None:
    """Same structure and shapes; each leaf within ``rtol`` of the leaf's largest magnitude
    (a last-bit difference in the params moves Rosenbrock's gradient by 1e-5 of its size)."""
    assert jax.tree.structure(mine) == jax.tree.structure(theirs), where
    for a, e in zip(jax.tree.leaves(mine), jax.tree.leaves(theirs)):
        wide = np.complex128 if np.iscomplexobj(e) else np.float64
        a, e = np.asarray(a).astype(wide), np.asarray(e).astype(wide)
        assert a.shape == e.shape, where
        scale = float(np.max(np.abs(e), initial=0.0, where=np.isfinite(e)))
        np.testing.assert_allclose(a, e, rtol=rtol, atol=atol + rtol * scale, err_msg=where)


def fresh(fn: Callable) -> Callable:
    """`jax.value_and_grad` with `value_and_grad_from_state`'s signature (nothing reused)."""
    return lambda params, state, **kwargs: jax.value_and_grad(fn)(params, **kwargs)


def compare_runs(gx_tx, optax_tx, fn, params, steps=STEPS, rtol=1e-5, atol=1e-6, *,
                 reuse=True, skip=(), **fn_kwargs):
    """Runs ours for ``steps`` steps; each step also runs optax from the same params and state
    (ours, converted field for field), and both must give the same params, value and state.

    One step at a time: a last-bit difference between the two compiled programs would
    otherwise grow along the run (a line search's interpolation and L-BFGS's differences
    near a minimum magnify it), whatever the agreement of each step. With ``reuse`` the
    value and gradient come from `value_and_grad_from_state`, else from
    ``jax.value_and_grad``; ``skip`` names chain members whose states differ by design.
    """
    ours, theirs = (gx.value_and_grad_from_state, optax.value_and_grad_from_state) if reuse else (
        fresh, fresh)
    mine = run(gx_tx, ours, fn, params, steps, **fn_kwargs)
    with optax_rules():
        step = _stepper(optax_tx, theirs, fn, optax.apply_updates, FAST_COMPILE, fn_kwargs)
        template = optax_tx.init(params)
    for index, ((p, s, _), (new_p, new_s, v)) in enumerate(zip(mine, mine[1:])):
        with optax_rules():
            q, t, w = step(p, as_optax_state(s, template))
        assert_leaves_close(v, w, rtol, atol, f"value at step {index}")
        assert_leaves_close(new_p, q, rtol, atol, f"params after step {index}")
        kept = [i for i in range(len(t)) if i not in skip]
        assert_state_like_optax([new_s[i] for i in kept], [t[i] for i in kept], rtol, atol,
                                f"state after step {index}")
    return mine[1:]


# --- objectives -------------------------------------------------------------------------------

_SHAPES_PARAMS = random_params(0)
_CURVATURE = jax.tree.map(lambda p: 0.5 + jnp.abs(p), random_params(1))
_CENTRE = random_params(2)


def nested_quadratic(params):
    """Diagonal curvatures per entry, plus a coupling of all entries (a dense Hessian)."""
    terms = jax.tree.map(lambda p, h, c: 0.5 * jnp.sum(h * (p - c) ** 2), params, _CURVATURE,
                         _CENTRE)
    total = sum(jax.tree.map(jnp.sum, jax.tree.leaves(params)))
    return sum(jax.tree.leaves(terms)) + 0.1 * total**2


def rosenbrock(params):
    x, y = params["x"], params["y"]
    return jnp.sum(100.0 * (y - x**2) ** 2 + (1.0 - x) ** 2)


ROSENBROCK_START = {"x": jnp.array([-1.2, 0.5, 1.5, -0.3]), "y": jnp.array([1.0, -0.3, 2.0, 0.1])}

_RNG = np.random.default_rng(3)
FEATURES = jnp.asarray(_RNG.standard_normal((40, 5)), jnp.float32)
LABELS = jnp.asarray(_RNG.uniform(size=40) < 0.4, jnp.float32)


def logistic(params, features, labels):
    logits = features @ params["w"] + params["b"]
    return jnp.mean(jax.nn.softplus(logits) - labels * logits) + 0.01 * jnp.sum(params["w"] ** 2)


LOGISTIC_START = {"w": jnp.zeros(5), "b": jnp.zeros([])}


# --- whole runs against optax ----------------------------------------------------------------

ZOOM_OPTIONS = dict(max_learning_rate=4.0, tol=1e-7, increase_factor=1.5, slope_rtol=1e-3,
                    curv_rtol=0.5, approx_dec_rtol=None, stepsize_precision=1e-3,
                    initial_guess_strategy="one")
BACKTRACKING_OPTIONS = dict(slope_rtol=1e-3, decrease_factor=0.5, increase_factor=2.0,
                            max_learning_rate=2.0, atol=1e-7, rtol=1e-6, store_grad=True)


def _descent(linesearch_name, kwargs, learning_rate=1.0):
    """``sgd`` then the line search, in both libraries."""
    mine = getattr(gx, linesearch_name)(**kwargs)
    theirs = getattr(optax, linesearch_name)(**kwargs)
    return (gx.chain(gx.scale(-learning_rate), mine),
            optax.chain(optax.scale(-learning_rate), theirs))


@pytest.mark.parametrize("objective", ["nested_quadratic", "rosenbrock"])
def test_zoom_runs_as_optax(objective):
    fn, start = {"nested_quadratic": (nested_quadratic, _SHAPES_PARAMS),
                 "rosenbrock": (rosenbrock, ROSENBROCK_START)}[objective]
    kwargs = dict(max_linesearch_steps=15) if objective == "nested_quadratic" else dict(
        max_linesearch_steps=10, **ZOOM_OPTIONS)
    mine = compare_runs(*_descent("scale_by_zoom_linesearch", kwargs, 0.5), fn, start)
    values = [float(v) for _, _, v in mine]
    assert values[-1] < 0.5 * values[0]
    counts = {int(s[1].info.num_linesearch_steps) for _, s, _ in mine}
    assert max(counts) > 1  # the searches did bracket and zoom


def test_zoom_with_data_arguments_and_no_curvature_condition_runs_as_optax():
    tx = dict(max_linesearch_steps=12, curv_rtol=float("inf"))
    mine = compare_runs(
        *_descent("scale_by_zoom_linesearch", tx | dict(curv_rtol=jnp.inf), 1.0), logistic,
        LOGISTIC_START, features=FEATURES, labels=LABELS)
    assert gx.scale_by_zoom_linesearch(**tx).hyperparams["curv_rtol"] == float("inf")
    assert all(float(s[1].info.curvature_error) == 0.0 for _, s, _ in mine)


@pytest.mark.parametrize("options", ["default", "options"])
def test_backtracking_runs_as_optax(options):
    kwargs = dict(max_backtracking_steps=20, store_grad=True) if options == "default" else dict(
        max_backtracking_steps=12, **BACKTRACKING_OPTIONS)
    fn, start = (nested_quadratic, _SHAPES_PARAMS) if options == "default" else (
        rosenbrock, ROSENBROCK_START)
    mine = compare_runs(*_descent("scale_by_backtracking_linesearch", kwargs, 1.0), fn, start)
    assert float(mine[-1][2]) < 0.5 * float(mine[0][2])


def test_backtracking_without_stored_gradient_and_infinite_increase_runs_as_optax():
    # store_grad=False keeps no gradient: fresh ones at every step.
    kwargs = dict(max_backtracking_steps=15, increase_factor=float("inf"), max_learning_rate=0.8)
    mine = compare_runs(*_descent("scale_by_backtracking_linesearch", kwargs, 1.0), logistic,
                        LOGISTIC_START, reuse=False, features=FEATURES, labels=LABELS)
    assert all(s[1].grad is None for _, s, _ in mine)
    assert all(float(s[1].learning_rate) <= np.float32(0.8) for _, s, _ in mine)


# --- single searches, where they fail --------------------------------------------------------


def _searcher(tx, fn, **update_kwargs):
    """One jitted search: ``(w, u) -> (updates, state)``, from ``tx.init(w)``."""

    def search(w, u):
        value, grad = jax.value_and_grad(fn)(w)
        return tx.update(u, tx.init(w), w, value=value, grad=grad, value_fn=fn, **update_kwargs)

    return jax.jit(search, compiler_options=FAST_COMPILE)


def _search(tx, fn, w, u, **update_kwargs):
    updates, state = _searcher(tx, fn, **update_kwargs)(w, u)
    jax.effects_barrier()  # the diagnostics are printed
    return jax.block_until_ready(updates), state


def _both(name, kwargs, fn, w, u, capfd=None):
    """One search in each library; returns our state and what we printed."""
    mine, state = _search(getattr(gx, name)(**kwargs), fn, w, u)
    printed = capfd.readouterr().out if capfd is not None else ""
    with optax_rules():
        theirs, optax_state = _search(getattr(optax, name)(**kwargs), fn, w, u)
    if capfd is not None:
        capfd.readouterr()
    assert_trees_close(mine, theirs, 1e-5, 1e-7, name)
    assert_state_like_optax(state, optax_state, 1e-5, 1e-7, name)
    return state, printed


def _dot(w):
    return jnp.dot(w, w)


def test_zoom_uphill_direction_takes_no_step_and_says_so(capfd):
    u = jnp.array([1.0, 0.0])
    state, printed = _both("scale_by_zoom_linesearch",
                           dict(max_linesearch_steps=18, curv_rtol=0.5, verbose=True),
                           _dot, 60 * u, u, capfd)
    assert float(state.learning_rate) < 1e-5
    assert optax._src.linesearch.FLAG_NOT_A_DESCENT_DIRECTION.strip() in printed
    assert optax._src.linesearch.FLAG_NO_STEPSIZE_FOUND in printed


def test_zoom_largest_step_too_small_takes_it(capfd):
    u = jnp.array([1.0, 0.0])
    state, printed = _both("scale_by_zoom_linesearch",
                           dict(max_linesearch_steps=10, curv_rtol=0.5, max_learning_rate=10.0,
                                verbose=True), _dot, -60 * u, u, capfd)
    assert float(state.learning_rate) == 10.0
    assert optax._src.linesearch.FLAG_INTERVAL_NOT_FOUND in printed
    assert optax._src.linesearch.FLAG_CURVATURE_COND_NOT_SATISFIED in printed


def test_zoom_too_few_steps_and_flat_objective(capfd):
    u = jnp.array([1.0, 0.0])
    state, printed = _both("scale_by_zoom_linesearch",
                           dict(max_linesearch_steps=5, curv_rtol=0.5, verbose=True),
                           _dot, -60 * u, u, capfd)
    assert float(state.learning_rate) == 16.0
    assert float(state.info.curvature_error) > 0
    assert optax._src.linesearch.FLAG_NOT_A_DESCENT_DIRECTION.strip() not in printed

    def flat(w):
        return jnp.exp(-1 / w**2)

    w = jnp.asarray(-0.2)
    _, printed = _both("scale_by_zoom_linesearch", dict(max_linesearch_steps=30, verbose=True),
                       flat, w, -jax.grad(flat)(w), capfd)
    assert optax._src.linesearch.FLAG_INTERVAL_TOO_SMALL in printed


def test_zoom_bracket_with_high_below_low():
    # First trial: sufficient decrease, positive slope, curvature not met (jax#16236).
    w = jnp.asarray(-1.0)
    state, _ = _both("scale_by_zoom_linesearch", dict(max_linesearch_steps=20),
                     lambda x: x**2, w, -1.95 * w)
    assert float(state.info.decrease_error) == 0 and float(state.info.curvature_error) == 0


@pytest.mark.allows_nan  # the objective itself is NaN past the step 0.5
def test_objective_nan_past_a_step_backs_off():
    w, u = jnp.asarray(1.0), jnp.asarray(-2.0)
    state, _ = _both("scale_by_zoom_linesearch", dict(max_linesearch_steps=30), jnp.log, w, u)
    assert float(state.learning_rate) > 0.0  # 0.5, where the value is -inf (as optax)
    # Backtracking from 1.5: NaN, then 1.2 (NaN), 0.96 (NaN), ... down to a finite value.
    state, _ = _both("scale_by_backtracking_linesearch", dict(max_backtracking_steps=30),
                     jnp.log, w, u)
    assert 0.0 < float(state.learning_rate) < 0.5


def test_backtracking_uphill_direction_fails_and_says_so(capfd):
    u = jnp.array([1.0, 0.0])
    state, printed = _both("scale_by_backtracking_linesearch",
                           dict(max_backtracking_steps=6, verbose=True), _dot, 60 * u, u, capfd)
    assert float(state.info.decrease_error) > 0
    assert int(state.info.num_linesearch_steps) == 7
    assert "failed to find a stepsize ensuring sufficent decrease" in printed


# --- bfloat16 ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["scale_by_zoom_linesearch", "scale_by_backtracking_linesearch"])
def test_bfloat16_params_take_optaxs_step(name):
    """A Newton step of a diagonal quadratic: both accept the first guess, 1."""
    centre = jnp.array([0.5, -1.0, 2.0])

    def fn(w):
        return jnp.sum((w.astype(jnp.float32) - centre) ** 2)

    search = _searcher(getattr(gx, name)(10), fn)
    with optax_rules():
        reference = _searcher(getattr(optax, name)(10), fn)
    w = jnp.array([3.0, 1.0, -2.0], jnp.bfloat16)
    for _ in range(2):
        updates, state = search(w, -0.5 * jax.grad(fn)(w))  # the Newton step
        assert updates.dtype == jnp.bfloat16
        assert state.grad is None or state.grad.dtype == jnp.bfloat16
        w32 = w.astype(jnp.float32)
        with optax_rules():
            ref_updates, ref_state = reference(w32, -0.5 * jax.grad(fn)(w32))
        assert float(state.learning_rate) == float(ref_state.learning_rate) == 1.0
        assert_trees_close(updates, ref_updates, 2e-2, 2e-2, name)
        w = gx.apply_updates(w, updates)
    np.testing.assert_allclose(np.asarray(w, np.float32), centre, atol=2e-2)


# --- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["scale_by_zoom_linesearch", "scale_by_backtracking_linesearch"])
def test_update_without_the_objective_raises_naming_the_transformation(name):
    tx = getattr(gx, name)(5)
    w = jnp.array([1.0, 2.0])
    full = dict(value=_dot(w), grad=2 * w, value_fn=_dot)
    for missing in ("value", "grad", "value_fn"):
        given = {k: v for k, v in full.items() if k != missing}
        with pytest.raises(TypeError, match=rf"{name}: update needs .*missing \['{missing}'\]"):
            tx.update(-w, tx.init(w), w, **given)
    with pytest.raises(TypeError, match=rf"{name}: unexpected keyword arguments \['batch'\]"):
        tx.update(-w, tx.init(w), w, batch=w, **full)
    with pytest.raises(ValueError, match=rf"{name}: value must be .*one number"):
        tx.update(-w, tx.init(w), w, **dict(full, value=w))
    with pytest.raises(TypeError, match=rf"{name}: value_fn must be a function"):
        tx.update(-w, tx.init(w), w, **dict(full, value_fn=3))
    with pytest.raises(TypeError, match=rf"{name}: update needs the params"):
        tx.update(-w, tx.init(w), **full)
    with pytest.raises(ValueError, match=rf"{name}: the updates' tree structure"):
        tx.update(-w, tx.init(w), w, **dict(full, grad={"w": w}))
    # Extra arguments value_fn takes are passed on.
    updates, _ = tx.update(-w, tx.init(w), w, **dict(full, value_fn=lambda p, scale: scale * _dot(p)),
                           scale=1.0)
    assert updates.shape == (2,)


def test_value_and_grad_from_state_errors_and_reuse():
    w = jnp.array([1.0, 2.0, 3.0])
    value_and_grad = jax.jit(gx.value_and_grad_from_state(_dot))
    with pytest.raises(ValueError, match="value_and_grad_from_state: no value or gradient"):
        value_and_grad(w, state=gx.adam(0.1).init(w))
    with pytest.raises(ValueError, match="value_and_grad_from_state: no value or gradient"):
        value_and_grad(w, state=gx.scale_by_backtracking_linesearch(5).init(w))  # grad None
    two = gx.chain(gx.scale_by_zoom_linesearch(5), gx.scale_by_zoom_linesearch(5))
    with pytest.raises(KeyError, match="'value' is ambiguous"):
        value_and_grad(w, state=two.init(w))

    tx = gx.chain(gx.scale(-1.0), gx.scale_by_backtracking_linesearch(15, store_grad=True))
    state = tx.init(w)
    value, grad = value_and_grad(w, state=state)  # inf in the state: computed
    np.testing.assert_allclose(value, 14.0)
    updates, state = tx.update(grad, state, w, value=value, grad=grad, value_fn=_dot)
    w = gx.apply_updates(w, updates)
    # From the state now: a function that would give 1.0 is not called.
    stored_value, stored_grad = jax.jit(gx.value_and_grad_from_state(lambda p: jnp.sum(p) * 0 + 1))(
        w, state=state)
    np.testing.assert_allclose(stored_value, _dot(w), rtol=1e-6)
    np.testing.assert_allclose(stored_grad, 2 * w, rtol=1e-6)
