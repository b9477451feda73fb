"""scale_by_adadelta against optax.scale_by_adadelta and a float64 NumPy reference.

* 50 jitted steps of the same random gradients on a nested tree (scalars,
  ``None`` leaves, a zero-size leaf, zero-gradient steps), float32 and
  bfloat16 (the bfloat16 run is compared with optax run in float32), for
  several ``rho`` and ``eps``; in float32 the state is compared field by
  field at every step.
* Zeiler's rule written in float64 NumPy, and its first step by hand.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradxform as gx
from tests.helpers import (
    assert_trees_close,
    compare_with_optax,
    gradient_stream,
    random_params,
)

STEPS = 50
CASES = [
    pytest.param({}, id="defaults"),
    pytest.param({"rho": 0.5, "eps": 1e-3}, id="rho=0.5"),
    pytest.param({"rho": 0.99, "eps": 1e-8}, id="rho=0.99"),
    pytest.param({"rho": 1.0, "eps": 1e-4}, id="rho=1"),
]


def _states_per_step(tx, params, grads_seq):
    update, state, states = jax.jit(tx.update), tx.init(params), []
    for grads in grads_seq:
        _, state = update(grads, state, params)
        states.append(state)
    return states


@pytest.mark.parametrize("kwargs", CASES)
def test_matches_optax_updates_and_state_in_float32(kwargs):
    compare_with_optax(gx.scale_by_adadelta(**kwargs), optax.scale_by_adadelta(**kwargs),
                       steps=STEPS, rtol=1e-5)
    params = random_params(0)
    grads_seq = gradient_stream(params, STEPS, seed=1)
    ours = _states_per_step(gx.scale_by_adadelta(**kwargs), params, grads_seq)
    theirs = []
    state = optax.scale_by_adadelta(**kwargs).init(params)
    with jax.numpy_dtype_promotion("standard"):
        update = jax.jit(optax.scale_by_adadelta(**kwargs).update)
        for grads in grads_seq:
            state = update(grads, state, params)[1]
            theirs.append(state)
    for step, (mine, ref) in enumerate(zip(ours, theirs)):
        assert type(mine).__name__ == type(ref).__name__ and mine._fields == ref._fields
        for field in ref._fields:
            assert_trees_close(getattr(mine, field), getattr(ref, field), 1e-5, 1e-7,
                               f"step {step}, {field}")


@pytest.mark.parametrize("kwargs", CASES[:2])
def test_matches_optax_in_bfloat16(kwargs):
    # The two averages are stored in bfloat16 (the params' dtype, as in optax) and round at
    # every step; the updates still agree to bfloat16 precision (compare_with_optax's 2e-2).
    compare_with_optax(gx.scale_by_adadelta(**kwargs), optax.scale_by_adadelta(**kwargs),
                       dtype=jnp.bfloat16, steps=STEPS)


def adadelta_reference(grads_seq, rho=0.9, eps=1e-6):
    """Zeiler's Algorithm 1 (without the learning rate) in float64 NumPy; each step's updates."""
    leaves0, treedef = jax.tree.flatten(grads_seq[0])
    e_g = [np.zeros(x.shape) for x in leaves0]
    e_x = [np.zeros(x.shape) for x in leaves0]
    outputs = []
    for grads in grads_seq:
        out = []
        for i, g in enumerate(treedef.flatten_up_to(grads)):
            g = np.asarray(g, np.float64)
            e_g[i] = rho * e_g[i] + (1 - rho) * g * g
            delta = np.sqrt(e_x[i] + eps) / np.sqrt(e_g[i] + eps) * g
            e_x[i] = rho * e_x[i] + (1 - rho) * delta * delta
            out.append(delta)
        outputs.append(treedef.unflatten(out))
    return outputs


@pytest.mark.parametrize("kwargs", [{}, {"rho": 0.5, "eps": 1e-3}])
def test_matches_a_float64_reference(kwargs):
    params = random_params(0)
    grads_seq = gradient_stream(params, STEPS, seed=2)
    tx = gx.scale_by_adadelta(**kwargs)
    update, state = jax.jit(tx.update), tx.init(params)
    for step, expected in enumerate(adadelta_reference(grads_seq, **kwargs)):
        updates, state = update(grads_seq[step], state, params)
        assert_trees_close(updates, expected, 2e-5, 1e-7, f"step {step}")


def test_first_step_by_hand():
    # E[g^2]_1 = (1 - rho) g^2 and E[dx^2]_0 = 0: u = sqrt(eps) / sqrt((1 - rho) g^2 + eps) g.
    g = jnp.array([3.0, -0.5, 0.0])
    tx = gx.scale_by_adadelta(rho=0.9, eps=1e-2)
    updates, state = tx.update({"w": g}, tx.init({"w": g}))
    expected = np.sqrt(1e-2) / np.sqrt(0.1 * np.array([9.0, 0.25, 0.0]) + 1e-2) * np.array(
        [3.0, -0.5, 0.0])
    np.testing.assert_allclose(updates["w"], expected, rtol=1e-6)
    np.testing.assert_allclose(state.e_x["w"], 0.1 * expected**2, rtol=1e-6)


def test_state_layout_and_dtypes():
    params = {"w": jnp.zeros(3, jnp.bfloat16), "h": jnp.zeros(2, jnp.float16),
              "c": jnp.zeros(2, jnp.complex64), "skip": None}
    state = gx.scale_by_adadelta().init(params)
    assert isinstance(state, gx.ScaleByAdaDeltaState)
    assert state._fields == optax.ScaleByAdaDeltaState._fields == ("e_g", "e_x")
    # Averages of squares: real, and float32 for float16 params (whose range cannot hold them).
    for field in state:
        assert field["w"].dtype == jnp.bfloat16
        assert field["h"].dtype == jnp.float32
        assert field["c"].dtype == jnp.float32
        assert field["skip"] is None


def test_complex_gradients_use_the_squared_modulus():
    g = jnp.array([3.0 + 4.0j, -1.0j])
    tx = gx.scale_by_adadelta(rho=0.5, eps=1e-2)
    updates, _ = tx.update({"w": g}, tx.init({"w": g}))
    # The modulus's square 25 and 1 enter the average, and the update keeps the phase.
    expected = np.sqrt(1e-2) / np.sqrt(0.5 * np.array([25.0, 1.0]) + 1e-2) * np.asarray(g)
    np.testing.assert_allclose(np.asarray(updates["w"]), expected, rtol=1e-6)


@pytest.mark.parametrize("kwargs, message", [
    ({"rho": 1.5}, r"scale_by_adadelta: rho must be in \[0, 1\], got 1.5"),
    ({"eps": 0.0}, r"scale_by_adadelta: eps must be in \(0, inf\), got 0.0"),
])
def test_bad_arguments_name_the_transform(kwargs, message):
    with pytest.raises(ValueError, match=message):
        gx.scale_by_adadelta(**kwargs)
