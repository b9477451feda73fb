"""record_global_norm: the norm of the raw gradients, logged in the state (optax#326)."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradxform as gx
from tests.helpers import gradient_stream, random_params


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_records_the_norm_before_clipping_and_changes_nothing(dtype):
    params = random_params(0, dtype)
    tx = gx.chain(gx.record_global_norm(), gx.clip_by_global_norm(1.0), gx.adam(1e-3))
    plain = gx.chain(gx.clip_by_global_norm(1.0), gx.adam(1e-3))
    state, plain_state = tx.init(params), plain.init(params)
    assert float(gx.tree_get(state, "global_norm")) == 0.0
    for grads in gradient_stream(params, 10):
        updates, state = jax.jit(tx.update)(grads, state, params)
        expected, plain_state = jax.jit(plain.update)(grads, plain_state, params)
        chex.assert_trees_all_equal(updates, expected)
        with jax.numpy_dtype_promotion("standard"):
            reference = optax.tree.norm(jax.tree.map(lambda g: g.astype(jnp.float32), grads))
        norm = gx.tree_get(state, "global_norm")
        assert norm.dtype == jnp.float32
        np.testing.assert_allclose(norm, reference, rtol=1e-6)


@pytest.mark.allows_nan
def test_non_finite_gradients_give_a_non_finite_norm():
    tx = gx.record_global_norm()
    params = {"w": jnp.zeros(3)}
    _, state = tx.update({"w": jnp.array([1.0, jnp.inf, 0.0])}, tx.init(params))
    assert np.isinf(state.global_norm)
    _, state = tx.update({"w": jnp.array([1.0, jnp.nan, 0.0])}, state)
    assert np.isnan(state.global_norm)


def test_none_leaves_and_empty_trees():
    tx = gx.record_global_norm()
    state = tx.init({"a": None, "b": jnp.ones(2)})
    _, state = tx.update({"a": None, "b": jnp.array([3.0, 4.0])}, state)
    assert float(state.global_norm) == 5.0
    _, state = tx.update({}, tx.init({}))
    assert float(state.global_norm) == 0.0
