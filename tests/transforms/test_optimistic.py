"""scale_by_optimistic_gradient against optax.scale_by_optimistic_gradient.

50 jitted steps of the same random gradients on a nested tree, float32 and
bfloat16, several (alpha, beta); in float32 the state is compared field by
field at every step. The first step uses the current gradient as the previous
one (optax#1082): its update is ``alpha * g``.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradxform as gx
from tests.helpers import assert_trees_close, compare_with_optax, gradient_stream, random_params

STEPS = 50
CASES = [
    pytest.param({}, id="defaults"),
    pytest.param({"alpha": 0.3, "beta": 2.0}, id="alpha=0.3,beta=2"),
    pytest.param({"alpha": 1.0, "beta": 0.0}, id="beta=0"),
    pytest.param({"alpha": 0.01, "beta": -0.5}, id="negative beta"),
]


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16], ids=lambda d: d.__name__)
@pytest.mark.parametrize("kwargs", CASES)
def test_updates_match_optax(kwargs, dtype):
    compare_with_optax(
        gx.scale_by_optimistic_gradient(**kwargs), optax.scale_by_optimistic_gradient(**kwargs),
        dtype=dtype, steps=STEPS, rtol=1e-5 if dtype == jnp.float32 else None,
    )


@pytest.mark.parametrize("kwargs", CASES[:2])
def test_state_matches_optax_field_by_field(kwargs):
    params = random_params(0)
    grads_seq = gradient_stream(params, STEPS, seed=1)
    tx, reference = gx.scale_by_optimistic_gradient(**kwargs), optax.scale_by_optimistic_gradient(
        **kwargs)
    update, state, ref_state = jax.jit(tx.update), tx.init(params), reference.init(params)
    assert state._fields == ref_state._fields == ("is_initial_step", "previous_gradient")
    assert state.is_initial_step.dtype == ref_state.is_initial_step.dtype == jnp.bool_
    with jax.numpy_dtype_promotion("standard"):
        ref_update = jax.jit(reference.update)
    for step, grads in enumerate(grads_seq):
        _, state = update(grads, state, params)
        with jax.numpy_dtype_promotion("standard"):
            _, ref_state = ref_update(grads, ref_state, params)
        assert bool(state.is_initial_step) is bool(ref_state.is_initial_step) is False
        assert_trees_close(state.previous_gradient, ref_state.previous_gradient, 0, 0,
                           f"step {step}")


def test_first_steps_by_hand():
    tx = gx.scale_by_optimistic_gradient(alpha=0.5, beta=2.0)
    state = tx.init({"w": jnp.zeros(2)})
    assert bool(state.is_initial_step)
    updates, state = tx.update({"w": jnp.array([1.0, -2.0])}, state)
    np.testing.assert_allclose(updates["w"], [0.5, -1.0])  # alpha * g: no previous gradient
    updates, state = tx.update({"w": jnp.array([3.0, 0.0])}, state)
    np.testing.assert_allclose(updates["w"], [2.5 * 3.0 - 2.0, 2.0 * 2.0])  # (a + b) g - b g_prev


def test_previous_gradient_is_stored_in_the_params_dtype():
    params = {"w": jnp.zeros(3, jnp.bfloat16), "c": jnp.zeros(2, jnp.complex64), "skip": None}
    state = gx.scale_by_optimistic_gradient().init(params)
    assert isinstance(state, gx.ScaleByOptimisticGradientState)
    assert state.previous_gradient["w"].dtype == jnp.bfloat16
    assert state.previous_gradient["c"].dtype == jnp.complex64
    assert state.previous_gradient["skip"] is None
    assert not state.is_initial_step.weak_type


@pytest.mark.parametrize("kwargs, error", [
    ({"alpha": float("nan")}, ValueError), ({"beta": "1"}, TypeError),
])
def test_bad_arguments_name_the_transform(kwargs, error):
    with pytest.raises(error, match="scale_by_optimistic_gradient: "):
        gx.scale_by_optimistic_gradient(**kwargs)
