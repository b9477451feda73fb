"""incremental_update and periodic_update against optax's, in jitted training loops.

* incremental_update: a Polyak average over 40 jitted steps of a moving
  nested tree (scalars, ``None``, a zero-size leaf) equals optax's in float32
  (constant and traced step sizes), and in bfloat16 is the float64 rule with
  one rounding per step, where optax rounds in bfloat16 arithmetic.
* periodic_update: a target copy refreshed every ``P`` steps, with the step
  count traced, equals optax's at every step.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradxform as gx
from tests.helpers import (
    assert_trees_bitwise_equal,
    assert_trees_close,
    gradient_stream,
    random_params,
)

STEPS = 40


def _online_params(dtype, steps=STEPS):
    """A sequence of parameter trees, as a training loop would produce them."""
    params = random_params(0, dtype)
    trajectory = []
    for grads in gradient_stream(params, steps, seed=1):
        params = gx.apply_updates(params, jax.tree.map(lambda g: g * 0.1, grads))
        trajectory.append(params)
    return trajectory


def _polyak(update, start, trajectory, step_size):
    update = jax.jit(update)
    average, history = start, []
    for params in trajectory:
        average = update(params, average, step_size)
        history.append(average)
    return history


@pytest.mark.parametrize("step_size", [0.01, 0.5, 1.0, 0.0, "traced"])
def test_incremental_update_matches_optax_in_float32(step_size):
    trajectory = _online_params(jnp.float32)
    size = jnp.float32(0.05) if step_size == "traced" else step_size
    ours = _polyak(gx.incremental_update, trajectory[0], trajectory, size)
    with jax.numpy_dtype_promotion("standard"):
        theirs = _polyak(optax.incremental_update, trajectory[0], trajectory, size)
    for step, (mine, ref) in enumerate(zip(ours, theirs)):
        assert_trees_close(mine, ref, 1e-6, 1e-7, context=f"step {step}")
        assert {leaf.dtype for leaf in jax.tree.leaves(mine)} == {jnp.dtype(jnp.float32)}


def test_incremental_update_bfloat16_rounds_once_per_step():
    step_size = 0.1
    trajectory = _online_params(jnp.bfloat16)
    ours = _polyak(gx.incremental_update, trajectory[0], trajectory, step_size)
    with jax.numpy_dtype_promotion("standard"):
        theirs = _polyak(optax.incremental_update, trajectory[0], trajectory, step_size)
    treedef = jax.tree.structure(trajectory[0])
    previous = trajectory[0]
    for step, (params, mine, ref) in enumerate(zip(trajectory, ours, theirs)):
        # Each step from the previous average: the float64 rule, rounded once to bfloat16
        # (half an ulp; many values lie on a tie, which float32's 0.1 breaks either way).
        for got, n, a in zip(jax.tree.leaves(mine), treedef.flatten_up_to(params),
                             treedef.flatten_up_to(previous)):
            want = step_size * np.asarray(n, np.float64) + (1 - step_size) * np.asarray(a, np.float64)
            assert got.dtype == jnp.bfloat16
            np.testing.assert_allclose(np.asarray(got, np.float64), want,
                                       rtol=2**-8 + 2**-20, atol=1e-30, err_msg=f"step {step}")
        previous = mine
        assert_trees_close(mine, ref, 2e-2, 2e-2, context=f"step {step} vs optax")


def test_incremental_update_keeps_the_average_dtype_and_none():
    new = {"w": jnp.ones(3, jnp.float32), "n": None, "s": 2.0}
    old = {"w": jnp.zeros(3, jnp.bfloat16), "n": None, "s": 0.0}
    out = gx.incremental_update(new, old, 0.25)
    assert out["n"] is None and out["w"].dtype == jnp.bfloat16
    np.testing.assert_allclose(out["w"], 0.25)
    np.testing.assert_allclose(out["s"], 0.5)


@pytest.mark.parametrize("period", [1, 3, 7])
def test_periodic_update_matches_optax_with_a_traced_step(period):
    trajectory = _online_params(jnp.float32)
    ours_update = jax.jit(gx.periodic_update, static_argnums=3)
    their_update = jax.jit(optax.periodic_update, static_argnums=3)
    target = their_target = trajectory[0]
    for step, params in enumerate(trajectory, start=1):
        count = jnp.int32(step)
        target = ours_update(params, target, count, period)
        with jax.numpy_dtype_promotion("standard"):
            their_target = their_update(params, their_target, count, period)
        assert_trees_bitwise_equal(target, their_target, f"step {step}")
        latest = step - step % period
        assert_trees_bitwise_equal(target, trajectory[latest - 1] if latest else trajectory[0])


def test_periodic_update_with_array_period_and_python_steps():
    new, old = {"w": jnp.ones(2), "n": None}, {"w": jnp.zeros(2), "n": None}
    assert gx.periodic_update(new, old, 6, jnp.int32(3))["w"].tolist() == [1.0, 1.0]
    assert gx.periodic_update(new, old, 7, np.int64(3))["w"].tolist() == [0.0, 0.0]
    mixed = gx.periodic_update({"w": jnp.ones(2)}, {"w": jnp.zeros(2, jnp.bfloat16)}, 0, 2)
    assert mixed["w"].dtype == jnp.bfloat16 and mixed["w"].tolist() == [1.0, 1.0]


@pytest.mark.parametrize("function, extra", [
    (gx.incremental_update, (0.5,)), (gx.periodic_update, (0, 2)),
], ids=["incremental_update", "periodic_update"])
def test_trees_of_different_structures_or_shapes_raise(function, extra):
    name = function.__name__
    with pytest.raises(ValueError, match=rf"{name}: new_tensors and old_tensors .*'b'"):
        function({"a": jnp.ones(2), "b": jnp.ones(2)}, {"a": jnp.ones(2), "c": jnp.ones(2)}, *extra)
    with pytest.raises(ValueError, match=rf"{name}: new_tensors\['a'\] has shape \(3,\)"):
        function({"a": jnp.ones(3)}, {"a": jnp.ones(2)}, *extra)
