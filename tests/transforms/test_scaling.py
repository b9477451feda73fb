"""scale, scale_by_schedule and scale_by_learning_rate against optax."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradxform as gx
from tests.helpers import compare_with_optax, random_params, run_updates

DTYPES = [jnp.float32, jnp.bfloat16, jnp.float16]


def decaying(count):
    return 0.5 * 0.97 ** count.astype(jnp.float32)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("step_size", [0.3, -1.7, 0.0])
def test_scale_matches_optax(dtype, step_size):
    compare_with_optax(gx.scale(step_size), optax.scale(step_size), dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_scale_by_schedule_matches_optax(dtype):
    compare_with_optax(gx.scale_by_schedule(decaying), optax.scale_by_schedule(decaying), dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("learning_rate", [0.05, decaying], ids=["constant", "schedule"])
@pytest.mark.parametrize("flip_sign", [True, False])
def test_scale_by_learning_rate_matches_optax(dtype, learning_rate, flip_sign):
    compare_with_optax(
        gx.scale_by_learning_rate(learning_rate, flip_sign=flip_sign),
        optax.scale_by_learning_rate(learning_rate, flip_sign=flip_sign),
        dtype=dtype,
    )


def test_learning_rate_as_jax_scalar_matches_float():
    params = random_params()
    grads = [jax.tree.map(jnp.ones_like, params)]
    from_float, _ = run_updates(gx.scale_by_learning_rate(0.1), params, grads)
    from_array, _ = run_updates(gx.scale_by_learning_rate(jnp.float32(0.1)), params, grads)
    for a, b in zip(jax.tree.leaves(from_float), jax.tree.leaves(from_array)):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_allclose(a, -0.1 * np.ones(a.shape, np.float32))


def test_learning_rate_state_schema_does_not_depend_on_scheduling():
    params = random_params()
    constant = gx.scale_by_learning_rate(0.1).init(params)
    scheduled = gx.scale_by_learning_rate(decaying).init(params)
    assert jax.tree.structure(constant) == jax.tree.structure(scheduled)
    assert constant.count.dtype == scheduled.count.dtype == jnp.int32


def test_schedule_sees_the_step_count():
    seen = []
    tx = gx.scale_by_schedule(lambda count: seen.append(int(count)) or 1.0)
    state = tx.init({"w": jnp.ones(2)})
    for _ in range(3):
        _, state = tx.update({"w": jnp.ones(2)}, state)
    assert seen == [0, 1, 2]


def test_learning_rate_none_is_identity():
    tx = gx.scale_by_learning_rate(None)
    grads = {"w": jnp.arange(3.0)}
    updates, _ = tx.update(grads, tx.init(grads))
    np.testing.assert_array_equal(updates["w"], grads["w"])
