"""What L-BFGS and the line searches share: inner products of trees, steps along a
direction, the objective passed to ``update``, interpolation, diagnostics.

Inner products are accumulated in at least float32, one ``tensordot`` per leaf
added in the leaves' order, as optax's ``tree.vdot``; under a mesh with
explicit axes the result is asked for replicated, so no leaf is gathered.

The minimisers of cubic and quadratic interpolants return the critical point
and whether it exists: a zero denominator, a negative discriminant or a
non-finite result gives ``valid=False`` (and a finite placeholder point),
where scipy's and optax's versions return NaN or inf and let the comparisons
that follow reject it. No operation makes a NaN.
"""

from __future__ import annotations

import inspect
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from gradxform.core import numerics, tree, validation

_HIGHEST = lax.Precision.HIGHEST


def _is_none(x: Any) -> bool:
    return x is None


def _dtype(leaf: Any) -> np.dtype:
    return np.dtype(leaf.dtype) if hasattr(leaf, "dtype") else numerics.leaf_dtype(leaf)


def scalar_dtype(params: Any) -> np.dtype:
    """The dtype of the scalars a line search keeps (step, value, errors): the real
    `numerics.compute_dtype` of the params' floating-point leaves (float32 for none)."""
    dtypes = [_dtype(x) for x in jax.tree.leaves(params) if jnp.issubdtype(_dtype(x), jnp.inexact)]
    return numerics.real_dtype(numerics.compute_dtype(*dtypes))


def _pairs(a: Any, b: Any) -> list:
    """The leaves of ``a`` and ``b`` side by side, where neither is None."""
    leaves, treedef = jax.tree.flatten(a, is_leaf=_is_none)
    others = treedef.flatten_up_to(b)
    return [(x, y) for x, y in zip(leaves, others) if x is not None and y is not None]


def _leaf_dot(x: jax.Array, y: jax.Array, conjugate: bool) -> jax.Array:
    x, y = jnp.asarray(x), jnp.asarray(y)
    dtype = numerics.compute_dtype(x.dtype, y.dtype)
    x, y = x.astype(dtype), y.astype(dtype)
    if conjugate and jnp.iscomplexobj(x):
        x = jnp.conj(x)
    sharding = None
    mesh = jax.typeof(x).sharding.mesh
    if not mesh.empty and mesh.are_all_axes_explicit:
        sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    return jnp.real(jnp.tensordot(x, y, x.ndim, precision=_HIGHEST, out_sharding=sharding))


def real_inner(a: Any, b: Any, *, conjugate: bool = True) -> jax.Array:
    """``Re sum(conj(a) * b)`` over every leaf (``Re sum(a * b)`` without ``conjugate``).

    A real scalar in at least float32; leaves that are None in either tree are
    skipped; 0 for no leaves.
    """
    parts = [_leaf_dot(x, y, conjugate) for x, y in _pairs(a, b)]
    if not parts:
        return jnp.zeros([], jnp.float32)
    dtype = numerics.compute_dtype(*(p.dtype for p in parts))
    total = parts[0].astype(dtype)
    for part in parts[1:]:
        total = total + part.astype(dtype)
    return total


def add_scaled(x: Any, step: jax.Array, y: Any) -> Any:
    """``x + step * y`` leaf by leaf, computed in at least float32, in ``x``'s dtypes."""

    def leaf(a, b):
        dtype = numerics.compute_dtype(a.dtype, b.dtype, step.dtype)
        result = a.astype(dtype) + step.astype(dtype) * b.astype(dtype)
        return numerics.store(result, a.dtype)

    return jax.tree.map(lambda a, b: None if a is None else leaf(jnp.asarray(a), jnp.asarray(b)),
                        x, y, is_leaf=_is_none)


def scale_tree(step: jax.Array, updates: Any) -> Any:
    """``step * updates``, each leaf in its own dtype."""
    return tree.tree_map_skip_none(lambda g: numerics.scale_leaf(step, g), updates)


def where_tree(condition: jax.Array, x: Any, y: Any) -> Any:
    """``x`` where ``condition`` holds, else ``y`` (trees of the same structure)."""
    return jax.tree.map(lambda a, b: None if a is None else jnp.where(condition, a, b),
                        x, y, is_leaf=_is_none)


def cast_like(x: Any, like: Any) -> Any:
    """``x`` with the dtypes of ``like``, leaf by leaf; None where ``like`` has None."""
    return jax.tree.map(lambda b, a: None if b is None else numerics.store(jnp.asarray(a), b.dtype),
                        like, x, is_leaf=_is_none)


def _is_positive_inf(value: Any) -> bool:
    if isinstance(value, (bool, np.bool_, jax.core.Tracer)):
        return False
    dtype = getattr(value, "dtype", None)
    real = isinstance(value, (int, float)) or (
        dtype is not None and np.shape(value) == () and jnp.issubdtype(dtype, jnp.floating))
    return real and float(value) == math.inf


def factor(owner: str, name: str, value: Any, *, low: float, allow_inf: bool) -> bool:
    """Checks a number ``>= low`` (``inf`` too when ``allow_inf``); returns whether it is inf."""
    if allow_inf and _is_positive_inf(value):
        return True
    validation.in_range(owner, name, value, low=low)
    return False


# --- the objective: value=, grad=, value_fn= and the arguments value_fn takes -------------------

_NEEDED = ("value", "grad", "value_fn")


def objective(owner: str, extra_args: dict) -> tuple[Any, Any, Callable, dict]:
    """``value``, ``grad``, ``value_fn`` and the keyword arguments ``value_fn`` takes.

    Raises a `TypeError` naming ``owner`` when one of the three is missing,
    when ``value_fn`` is not callable or ``value`` not one real number, and
    when some extra argument is taken by nothing (as optax's line searches).
    """
    missing = [name for name in _NEEDED if name not in extra_args]
    if missing:
        raise TypeError(
            f"{owner}: update needs the objective as keyword arguments value= (its value at "
            "params), grad= (its gradient there) and value_fn= (the function of the params); "
            f"missing {missing}: tx.update(grads, state, params, value=value, grad=grad, "
            "value_fn=fn), e.g. with gx.value_and_grad_from_state(fn) for value and grad"
        )
    value, grad, value_fn = (extra_args[name] for name in _NEEDED)
    if not callable(value_fn):
        raise TypeError(f"{owner}: value_fn must be a function of the params, got {value_fn!r}")
    dtype = getattr(value, "dtype", None)
    if isinstance(value, (bool, np.bool_)) or not (
        isinstance(value, (int, float)) or (dtype is not None and jnp.issubdtype(dtype, jnp.number)
                                            and not jnp.issubdtype(dtype, jnp.complexfloating))
    ):
        raise TypeError(
            f"{owner}: value must be the objective's value, a real number, got {value!r}")
    if np.shape(value) != ():
        raise ValueError(
            f"{owner}: value must be the objective's value, one number (shape ()), got an array "
            f"of shape {np.shape(value)}"
        )
    rest = {key: item for key, item in extra_args.items() if key not in _NEEDED}
    return value, grad, value_fn, _function_kwargs(owner, value_fn, rest)


def _function_kwargs(owner: str, value_fn: Callable, rest: dict) -> dict:
    """The extra arguments ``value_fn`` accepts; any other one is an error."""
    try:
        parameters = list(inspect.signature(value_fn).parameters.values())
    except (TypeError, ValueError):  # no signature to read: give it everything
        return rest
    if any(p.kind is p.VAR_KEYWORD for p in parameters):
        return rest
    names = {p.name for p in parameters[1:] if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    unused = sorted(key for key in rest if key not in names)
    if unused:
        raise TypeError(
            f"{owner}: unexpected keyword arguments {unused}: update passes its extra keyword "
            f"arguments to value_fn, which does not take them (it takes {sorted(names)})"
        )
    return rest


def check_trees(owner: str, updates: Any, params: Any, grad: Any) -> None:
    """The updates, the params and the gradient have one structure and shapes."""
    if params is None:
        raise TypeError(f"{owner}: update needs the params, to evaluate value_fn along the updates")
    tree.check_same_structure(owner, "params", params, updates, none_matches=True)
    tree.check_same_structure(owner, "grad", grad, updates, none_matches=True)


def call_objective(value_fn: Callable, fn_kwargs: dict, params: Any, with_grad: bool) -> tuple:
    """``(value, grad)`` of ``value_fn`` at ``params`` (``grad`` None without ``with_grad``)."""
    if with_grad:
        return jax.value_and_grad(value_fn)(params, **fn_kwargs)
    return value_fn(params, **fn_kwargs), None


def compiled_when_eager(impl: Callable) -> Callable:
    """``impl``, run through one ``jax.jit`` of its own when called outside any trace.

    Called eagerly, a ``lax.while_loop`` or ``lax.scan`` is compiled anew at every
    call (its body is a new function each time), several seconds for a line
    search. Jitted once per transformation, with ``value_fn`` static, repeated
    eager calls compile once per ``value_fn`` and tree structure. Under ``jit``,
    ``vmap`` or ``eval_shape``, when ``value_fn`` is not hashable, or when an
    argument for it is not an array (a Python number it may branch on), ``impl``
    runs as it is. The jitted function lives as long as the transformation.
    """
    jitted = jax.jit(impl, static_argnames=("value_fn",))

    def call(*args: Any, value_fn: Callable | None = None, fn_kwargs: Any = None) -> Any:
        traced = any(isinstance(x, jax.core.Tracer) for x in jax.tree.leaves((args, fn_kwargs)))
        arrays = all(isinstance(x, (jax.Array, np.ndarray)) for x in jax.tree.leaves(fn_kwargs))
        try:
            hash(value_fn)
        except TypeError:
            arrays = False
        if traced or not arrays:
            return impl(*args, value_fn=value_fn, fn_kwargs=fn_kwargs)
        return jitted(*args, value_fn=value_fn, fn_kwargs=fn_kwargs)

    return call


# --- interpolation, for the zoom line search ---------------------------------------------------


def _nonzero(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``x`` with 0 replaced by 1, and whether it was non-zero."""
    ok = x != 0
    return jnp.where(ok, x, jnp.ones_like(x)), ok


def cubic_minimum(a, fa, fpa, b, fb, c, fc) -> tuple[jax.Array, jax.Array]:
    r"""The local minimiser of the cubic through ``(a, fa)``, ``(b, fb)``, ``(c, fc)`` with
    slope ``fpa`` at ``a``.

    .. math::
        p(x) = A (x-a)^3 + B (x-a)^2 + f'_a (x-a) + f_a, \qquad
        x^\star = a + \frac{-B + \sqrt{B^2 - 3 A f'_a}}{3A}

    with :math:`A, B` solving the 2x2 system of the two other points (Nocedal &
    Wright, section 3.5; scipy's ``_cubicmin``).
    """
    db, dc = b - a, c - a
    denominator, ok = _nonzero((db * dc) ** 2 * (db - dc))
    matrix = jnp.array([[dc**2, -(db**2)], [-(dc**3), db**3]])
    rhs = jnp.array([fb - fa - fpa * db, fc - fa - fpa * dc])
    coefficients = jnp.dot(matrix, rhs, precision=lax.Precision.HIGHEST) / denominator
    big_a, big_b = coefficients[0], coefficients[1]
    radical = big_b * big_b - 3.0 * big_a * fpa
    real_root = radical >= 0
    safe_a, a_ok = _nonzero(big_a)
    root = jnp.sqrt(jnp.where(real_root, radical, jnp.zeros_like(radical)))
    point = a + (-big_b + root) / (3.0 * safe_a)
    valid = ok & a_ok & real_root & jnp.isfinite(point)
    return jnp.where(valid, point, a), valid


def quadratic_minimum(a, fa, fpa, b, fb) -> tuple[jax.Array, jax.Array]:
    r"""The critical point of the quadratic through ``(a, fa)`` and ``(b, fb)`` with slope
    ``fpa`` at ``a``.

    .. math::
        p(x) = B (x-a)^2 + f'_a (x-a) + f_a, \qquad x^\star = a - \frac{f'_a}{2B}
    """
    db = b - a
    squared, ok = _nonzero(db**2)
    big_b = (fb - fa - fpa * db) / squared
    safe_b, b_ok = _nonzero(big_b)
    point = a - fpa / (2.0 * safe_b)
    valid = ok & b_ok & jnp.isfinite(point)
    return jnp.where(valid, point, a), valid


# --- diagnostics, printed with verbose=True ------------------------------------------------------

FLAG_INTERVAL_NOT_FOUND = (
    "No interval satisfying curvature condition. "
    "Consider increasing maximal possible stepsize of the linesearch."
)
FLAG_INTERVAL_TOO_SMALL = "Length of searched interval has been reduced below threshold."
FLAG_CURVATURE_COND_NOT_SATISFIED = (
    "Returning stepsize with sufficient decrease but curvature condition not satisfied."
)
FLAG_NO_STEPSIZE_FOUND = "Linesearch failed, no stepsize satisfying sufficient decrease found."
FLAG_NOT_A_DESCENT_DIRECTION = (
    "The linesearch failed because the provided direction is not a descent direction. "
)


def say(condition: jax.Array, message: str, **values: Any) -> None:
    """Prints ``message``, formatted with ``values``, from inside a computation if ``condition``."""
    jax.lax.cond(condition, lambda: jax.debug.print(message, **values), lambda: None)


def report_no_interval(condition, value_init, slope_init, stepsize, decrease, curvature) -> None:
    """optax's message when the zoom line search reaches its largest step without a bracket."""
    say(condition,
        "INFO: gradxform.scale_by_zoom_linesearch:\nValue at current params: {v}\n"
        "Slope along update direction: {s}\nStepsize reached: {t}\nDecrease Error: {d}\n"
        "Curvature Error: {c}" + FLAG_INTERVAL_NOT_FOUND + "\n" + FLAG_CURVATURE_COND_NOT_SATISFIED,
        v=value_init, s=slope_init, t=stepsize, d=decrease, c=curvature)


def report_zoom_failure(s: Any, value_init: Any, slope_init: Any, threshold: Any) -> None:
    """optax's diagnostics when the zoom line search gives up (its loop state ``s``)."""
    jax.debug.print(
        "INFO: gradxform.scale_by_zoom_linesearch:\nValue at current params: {v}\n"
        "Slope along update direction: {s}\nStepsize reached: {t}\nDecrease Error: {d}\n"
        "Curvature Error: {c}", v=value_init, s=slope_init, t=s.stepsize,
        d=s.decrease_error, c=s.curvature_error)
    width = jnp.abs(s.low - s.high)
    say(width <= threshold, FLAG_INTERVAL_TOO_SMALL + " Interval length: {w}.", w=width)
    say(s.safe_stepsize > 0.0,
        FLAG_CURVATURE_COND_NOT_SATISFIED + " Stepsize ensuring sufficient decrease: {t}.",
        t=s.safe_stepsize)
    failed = s.safe_stepsize <= 0.0
    descent = slope_init < 0.0
    say(failed, FLAG_NO_STEPSIZE_FOUND)
    say(failed & ~descent,
        FLAG_NOT_A_DESCENT_DIRECTION + "The slope (={s}) at stepsize=0 should be negative",
        s=slope_init)
    say(failed & descent, "Consider augmenting the maximal number of linesearch iterations.")
    eps = float(np.finfo(np.float32).eps)
    say(failed & descent & (s.stepsize < eps),
        "Computed stepsize (={t}) is below machine precision (={e}), consider passing to "
        "higher precision like x64, using jax.config.update('jax_enable_x64', True).",
        t=s.stepsize, e=eps)
    say(failed & descent & (jnp.abs(slope_init) > 1e16),
        "Very large absolute slope at stepsize=0. (|slope|={s}). The objective is badly "
        "conditioned. Consider reparameterizing objective (e.g., normalizing parameters) or "
        "finding a better guess for the initial parameters for the solver.",
        s=jnp.abs(slope_init))
    outside = jnp.isinf(s.decrease_error)
    say(failed & outside, "Cannot even make a step without getting Inf or Nan. The linesearch "
        "won't make a step and the optimizer is stuck.")
    say(failed & ~outside, "Making an unsafe step, not decreasing enough the objective. "
        "Convergence of the solver is compromised as it does not reduce values.")
