"""Properties every public transform, optimizer, wrapper and preset must have.

Hypothesis draws the parameter trees (``tests/strategies.py``): nested dicts,
lists and tuples, empty containers, ``None`` leaves, 0-d and zero-size arrays,
with each leaf float32, bfloat16, float16 or complex64 (float64 and complex128
too in the x64 test), and gradient streams of scale 0 to 30. For the swept entries of
``tests/factories.py`` (``sweep``: every constructor; every entry with
``GRADXFORM_FULL_SWEEP=1``) and every drawn tree:

* updates have the gradients' tree structure, shapes and dtypes;
* the state after ``update`` has the structure, shapes and dtypes of ``init``'s,
  also when ``update`` runs in one branch of ``lax.cond`` (tracing both branches
  fails when they differ);
* ``jax.jit(tx.update)`` traces once over three calls: no recompilation;
* the jitted and the eager update agree, in updates and state;
* ``jax.eval_shape(tx.init, ...)`` works, on arrays and on abstract params, and
  matches ``init``; the state holds strongly typed arrays only;
* updates are finite for finite gradients.

The examples per test come from the hypothesis profile (root ``conftest.py``);
the x64 test draws half as many. The jitted updates compile with
``FAST_COMPILE`` (``tests/helpers.py``): thousands of small programs, each
compared with the eager run.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings

import gradxform as gx
from tests.factories import FACTORIES, NAMES, UNNAMED_CONSTRUCTORS, constructors_covered, sweep
from tests.helpers import FAST_COMPILE, is_none, jit_counting_traces
from tests.strategies import DTYPES, DTYPES_X64, cases

__all__ = ["FACTORIES", "NAMES"]

# jit and eager may round differently (XLA fuses and reassociates); one rounding
# of the leaf's dtype, a few times over, is the allowed difference.
_TOLERANCE = {
    jnp.dtype(jnp.float64): 1e-10, jnp.dtype(jnp.complex128): 1e-10,
    jnp.dtype(jnp.float32): 1e-5, jnp.dtype(jnp.complex64): 1e-5,
    jnp.dtype(jnp.float16): 4e-3, jnp.dtype(jnp.bfloat16): 2e-2,
}


def _assert_updates_like_gradients(updates, grads):
    assert jax.tree.structure(updates, is_leaf=is_none) == jax.tree.structure(grads, is_leaf=is_none)
    for u, g in zip(jax.tree.leaves(updates), jax.tree.leaves(grads)):
        assert (u.shape, u.dtype) == (g.shape, g.dtype), ((u.shape, u.dtype), (g.shape, g.dtype))


def _assert_finite(tree, what):
    for leaf in jax.tree.leaves(tree):
        assert np.all(np.isfinite(np.asarray(leaf))), f"{what}: {leaf}"


def _assert_same_layout(state, reference):
    chex.assert_trees_all_equal_structs(state, reference)
    chex.assert_trees_all_equal_shapes_and_dtypes(state, reference)


def _assert_close(actual, expected, what):
    chex.assert_trees_all_equal_structs(actual, expected)
    for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected)):
        a, e = np.asarray(a), np.asarray(e)
        tolerance = _TOLERANCE.get(a.dtype, 0.0)  # counters and flags: exactly equal
        scale = max(1.0, float(np.max(np.abs(e)))) if e.size else 1.0
        wide = np.complex128 if np.iscomplexobj(e) else np.float64
        np.testing.assert_allclose(
            a.astype(wide), e.astype(wide), rtol=tolerance, atol=tolerance * scale, err_msg=what
        )


def _check_init(tx, params):
    state = tx.init(params)
    _assert_same_layout(jax.eval_shape(tx.init, params), state)
    # As a restore target (Orbax): abstract params, no arrays at all.
    abstract = jax.tree.map(lambda p: jax.ShapeDtypeStruct(p.shape, p.dtype), params)
    _assert_same_layout(jax.eval_shape(tx.init, abstract), state)
    # Python scalars or weak types in the state would make jit retrace.
    for leaf in jax.tree.leaves(state):
        assert isinstance(leaf, jax.Array) and not leaf.weak_type, leaf
    return state


def _check_cond_layout(tx, grads, state, params):
    def maybe_update(pred):
        return jax.lax.cond(pred, lambda: tx.update(grads, state, params), lambda: (grads, state))

    updates, new_state = jax.eval_shape(maybe_update, True)
    _assert_updates_like_gradients(updates, grads)
    _assert_same_layout(new_state, state)


def check_properties(tx, case):
    params = case.params()
    init_state = _check_init(tx, params)
    jitted, traces = jit_counting_traces(tx.update, FAST_COMPILE)
    jit_state = eager_state = init_state
    for step, grads in enumerate(case.gradients()):
        _check_cond_layout(tx, grads, eager_state, params)
        jit_updates, jit_state = jitted(grads, jit_state, params)
        eager_updates, eager_state = tx.update(grads, eager_state, params)
        assert len(traces) == 1, f"retraced at call {step + 1}"
        for updates, state in ((jit_updates, jit_state), (eager_updates, eager_state)):
            _assert_updates_like_gradients(updates, grads)
            _assert_finite(updates, f"updates at step {step}")
            _assert_same_layout(state, init_state)
        _assert_close(jit_updates, eager_updates, f"updates at step {step}")
        _assert_close(jit_state, eager_state, f"state at step {step}")


# Three random trees per entry (each example compiles the entry afresh); the "thorough"
# hypothesis profile scales this up with the others.
@pytest.mark.parametrize("name", sweep(NAMES))
@settings(max_examples=max(1, settings().max_examples * 3 // 5))
@given(case=cases(DTYPES))
def test_properties_hold_on_random_trees(name, case):
    check_properties(FACTORIES[name](), case)


@pytest.mark.parametrize("name", sweep(NAMES))
@settings(max_examples=max(1, settings().max_examples // 5))  # one tree in float64 each
@given(case=cases(DTYPES_X64, steps=2))
def test_properties_hold_with_float64(name, case):
    with jax.enable_x64(True):
        check_properties(FACTORIES[name](), case)


def _public_constructors():
    """Every public function of gx and gx.keras that returns a transformation."""
    names = {
        name for name in gx.__all__
        if callable(getattr(gx, name)) and getattr(getattr(gx, name), "__annotations__", {})
        .get("return") in ("GradientTransformation", gx.GradientTransformation)
    }
    return names | {f"keras.{name}" for name in ("adam", "adagrad", "loss_scale_optimizer")} | {
        "to_optax", "from_config"
    }


def test_factories_cover_every_public_constructor():
    covered = set().union(*(constructors_covered(FACTORIES[name]()) for name in NAMES))
    for constructor, entries in UNNAMED_CONSTRUCTORS.items():
        assert all(entry in FACTORIES for entry in entries), constructor
        covered.add(constructor)
    assert "scale_by_adam" in _public_constructors()  # the enumeration finds constructors
    assert sorted(_public_constructors() - covered) == []


@pytest.mark.parametrize("name", ["adam", "rmsprop_centered_momentum", "adamw", "scale_by_schedule"])
def test_lax_cond_runs_both_branches(name):
    tx = FACTORIES[name]()
    params = {"w": jnp.arange(6.0).reshape(2, 3), "b": jnp.ones(3)}
    grads = jax.tree.map(lambda p: 0.5 - p, params)
    state = tx.init(params)
    expected_updates, expected_state = tx.update(grads, state, params)

    @jax.jit
    def maybe_update(pred, grads, state):
        return jax.lax.cond(pred, lambda: tx.update(grads, state, params), lambda: (grads, state))

    updates, new_state = maybe_update(True, grads, state)
    chex.assert_trees_all_close(updates, expected_updates, rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_close(new_state, expected_state, rtol=1e-5, atol=1e-6)
    skipped_updates, kept_state = maybe_update(False, grads, state)
    chex.assert_trees_all_equal(skipped_updates, grads)
    chex.assert_trees_all_equal(kept_state, state)
