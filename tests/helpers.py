"""Shared test helpers: random pytrees, gradient streams, and the optax comparison harness."""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

LOW_PRECISION = (jnp.bfloat16, jnp.float16)


def is_none(x: Any) -> bool:
    return x is None


def nested_shapes() -> dict:
    """A tree shape with every kind of node: dicts, lists, tuples, scalars, None, zero-size."""
    return {
        "dense": {"kernel": (4, 3), "bias": (3,)},
        "blocks": [(2, 2), None, ()],
        "pair": ((5,), {"inner": (1, 3), "empty": (0,)}),
        "scalar": (),
    }


def tree_from_shapes(shapes: Any, rng: np.random.Generator, dtype: Any, scale: float = 1.0):
    """A tree of random normal arrays, one per shape tuple; None stays None."""

    def make(shape):
        return jnp.asarray(scale * rng.standard_normal(shape), dtype=dtype)

    return jax.tree.map(make, shapes, is_leaf=lambda x: isinstance(x, tuple) and all(
        isinstance(d, int) for d in x
    ))


def random_params(seed: int = 0, dtype: Any = jnp.float32, shapes: Any = None):
    rng = np.random.default_rng(seed)
    return tree_from_shapes(nested_shapes() if shapes is None else shapes, rng, dtype)


def gradient_stream(params: Any, steps: int, seed: int = 1, zero_every: int = 7):
    """``steps`` random gradient trees shaped like ``params``, of varying scale.

    Every ``zero_every``-th step is all zeros, to exercise the zero-gradient paths.
    """
    rng = np.random.default_rng(seed)
    stream = []
    for step in range(steps):
        scale = 0.0 if zero_every and step % zero_every == zero_every - 1 else rng.uniform(0.1, 3.0)

        def make(p):
            return jnp.asarray(scale * rng.standard_normal(p.shape), dtype=p.dtype)

        stream.append(jax.tree.map(make, params))
    return stream


def assert_trees_bitwise_equal(actual: Any, expected: Any, context: str = "") -> None:
    """Same structure, shapes and dtypes, and every leaf equal byte for byte (-0.0 is not 0.0)."""
    assert jax.tree.structure(actual, is_leaf=is_none) == jax.tree.structure(
        expected, is_leaf=is_none
    ), context
    for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected)):
        a, e = np.atleast_1d(np.asarray(a)), np.atleast_1d(np.asarray(e))
        assert a.dtype == e.dtype and a.shape == e.shape, context
        np.testing.assert_array_equal(a.view(np.uint8), e.view(np.uint8), err_msg=context)


# XLA CPU options that compile 4-5x faster: graph-level passes still run, the
# backend does not optimise. For tests that compile many small programs and
# compare them with runs under the same options (or with eager runs).
FAST_COMPILE = {"xla_cpu_use_fusion_emitters": False, "xla_backend_optimization_level": 0}
# XLA's own defaults, which a user's jax.jit compiles with. The suite compiles with
# FAST_COMPILE's options unless told otherwise (conftest.py); a test of what the default
# compile guarantees (an injected hyperparameter bit for bit the plain value) pins these.
DEFAULT_COMPILE = {"xla_cpu_use_fusion_emitters": True, "xla_backend_optimization_level": 3}


def trajectory(tx, params, grads_seq, standard=False, move=False, compiler_options=FAST_COMPILE,
               check_nans=None):
    """``(updates, params, state)`` after each step, one compiled update reused.

    ``move`` adds each step's updates to the params. ``standard``: as optax runs
    (standard dtype promotion and, unless ``check_nans`` says otherwise, no NaN
    checks). ``compiler_options``: `FAST_COMPILE` by default (not for bitwise
    comparisons: without backend optimisation, XLA rounds the same program
    differently inside a conditional); None leaves the process's options.
    """
    with jax.numpy_dtype_promotion("standard" if standard else "strict"), \
            jax.debug_nans(not standard if check_nans is None else check_nans):
        update = jax.jit(tx.update, compiler_options=compiler_options)
        state, history = tx.init(params), []
        for grads in grads_seq:
            updates, state = update(grads, state, params)
            if move:
                params = jax.tree.map(lambda p, u: (p + u).astype(p.dtype), params, updates)
            history.append((updates, params, state))
    return history


def jit_counting_traces(fn: Callable, compiler_options: dict | None = None) -> tuple[Callable, list]:
    """``jax.jit(fn)`` and a list that grows by one each time JAX traces ``fn``."""
    traces = []

    def traced(*args, **kwargs):
        traces.append(None)
        return fn(*args, **kwargs)

    return jax.jit(traced, compiler_options=compiler_options), traces


def cast_tree(tree: Any, dtype: Any):
    return jax.tree.map(lambda x: x.astype(dtype), tree)


def run_updates(tx, params, grads_seq, *, jit: bool = True, **extra_args):
    """Feeds ``grads_seq`` through ``tx`` (params held fixed); returns the updates and final state."""
    update = jax.jit(tx.update) if jit else tx.update
    state = tx.init(params)
    outputs = []
    for grads in grads_seq:
        updates, state = update(grads, state, params, **extra_args)
        outputs.append(updates)
    return outputs, state


def run_optax(optax_tx, params, grads_seq):
    """The same loop for an optax transformation, under standard dtype promotion.

    Without ``jax_debug_nans``: a NaN optax makes is a reference value, compared
    with ours like any other."""
    with jax.numpy_dtype_promotion("standard"), jax.debug_nans(False):
        return run_updates(optax_tx, params, grads_seq)


def assert_trees_close(actual, expected, rtol: float, atol: float, context: str = ""):
    """Leaf-by-leaf closeness; structure, shapes and (when asked) dtypes must agree."""
    assert jax.tree.structure(actual, is_leaf=is_none) == jax.tree.structure(
        expected, is_leaf=is_none
    ), context
    for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected)):
        assert a.shape == e.shape, context
        np.testing.assert_allclose(
            np.asarray(a, dtype=np.float64), np.asarray(e, dtype=np.float64),
            rtol=rtol, atol=atol, err_msg=context,
        )


def compare_with_optax(
    gx_tx,
    optax_tx,
    *,
    dtype: Any = jnp.float32,
    steps: int = 50,
    seed: int = 0,
    rtol: float | None = None,
    atol: float | None = None,
    shapes: Any = None,
    grads_transform: Callable | None = None,
):
    """Runs ``steps`` jitted steps of the same random gradients through both.

    For float32 the two must agree to float tolerance. For bfloat16/float16,
    gradxform runs on the low-precision params and gradients, and the reference
    is optax on the same values cast to float32 (gradxform computes in float32
    and rounds once, where optax would round hyperparameters to the low dtype,
    optax#1414); the tolerance is then that of one low-precision rounding.
    """
    params = random_params(seed, dtype, shapes)
    grads_seq = gradient_stream(params, steps, seed + 1)
    if grads_transform is not None:
        grads_seq = [grads_transform(g) for g in grads_seq]
    gx_updates, _ = run_updates(gx_tx, params, grads_seq)
    ref_params = cast_tree(params, jnp.float32)
    ref_grads = [cast_tree(g, jnp.float32) for g in grads_seq]
    ref_updates, _ = run_optax(optax_tx, ref_params, ref_grads)
    low = dtype in LOW_PRECISION
    rtol = rtol if rtol is not None else (2e-2 if low else 2e-6)
    atol = atol if atol is not None else (2e-2 if low else 1e-6)
    for step, (mine, ref) in enumerate(zip(gx_updates, ref_updates)):
        for leaf, g in zip(jax.tree.leaves(mine), jax.tree.leaves(grads_seq[step])):
            assert leaf.dtype == g.dtype, f"step {step}: update dtype {leaf.dtype} != {g.dtype}"
        assert_trees_close(mine, ref, rtol, atol, context=f"step {step}, {dtype.__name__}")
    return gx_updates, ref_updates
