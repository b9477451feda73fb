"""identity, stateless, stateless_with_tree_map and apply_updates.

References are NumPy formulas and ``optax.apply_updates`` (run under standard
dtype promotion, as optax needs it).
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradxform as gx
from tests.helpers import (
    assert_trees_close,
    gradient_stream,
    is_none,
    random_params,
    run_optax,
    run_updates,
)


def _np(tree):
    return jax.tree.map(lambda x: np.asarray(x, np.float64), tree)


# --- identity ----------------------------------------------------------------------


def test_identity_returns_updates_unchanged():
    params = random_params(0)
    grads = gradient_stream(params, 1)[0]
    tx = gx.identity()
    state = tx.init(params)
    assert state == gx.EmptyState()
    updates, new_state = tx.update(grads, state, params, anything=1)
    assert new_state == gx.EmptyState()
    assert jax.tree.structure(updates, is_leaf=is_none) == jax.tree.structure(grads, is_leaf=is_none)
    for u, g in zip(jax.tree.leaves(updates), jax.tree.leaves(grads)):
        assert u.dtype == g.dtype
        np.testing.assert_array_equal(np.asarray(u), np.asarray(g))


def test_identity_under_jit():
    grads = {"a": jnp.array([1.0, -2.0], jnp.bfloat16), "b": None}
    tx = gx.identity()
    updates, _ = jax.jit(tx.update)(grads, tx.init(grads))
    assert updates["b"] is None
    assert updates["a"].dtype == jnp.bfloat16
    np.testing.assert_array_equal(np.asarray(updates["a"], np.float32), [1.0, -2.0])


# --- stateless ----------------------------------------------------------------------------


def test_stateless_applies_whole_tree_function_with_params():
    def f(updates, params):
        return jax.tree.map(lambda g, p: g * 2.0 + p, updates, params)

    tx = gx.stateless(f)
    params = {"w": jnp.array([1.0, 2.0]), "b": jnp.array(3.0)}
    grads = {"w": jnp.array([0.5, -0.5]), "b": jnp.array(1.0)}
    state = tx.init(params)
    assert state == gx.EmptyState()
    updates, new_state = tx.update(grads, state, params)
    assert new_state == gx.EmptyState()
    np.testing.assert_array_equal(updates["w"], np.array([2.0, 1.0], np.float32))
    np.testing.assert_array_equal(updates["b"], np.float32(5.0))


def test_stateless_receives_none_params():
    seen = []

    def f(updates, params):
        seen.append(params)
        return jax.tree.map(lambda g: -g, updates)

    tx = gx.stateless(f)
    updates, _ = tx.update({"w": jnp.array([1.0])}, tx.init({"w": jnp.zeros(1)}))
    assert seen == [None]
    np.testing.assert_array_equal(updates["w"], np.array([-1.0], np.float32))


def test_stateless_matches_optax_stateless_in_chain():
    def f(updates, params):
        return jax.tree.map(lambda g, p: g - 0.1 * p, updates, params)

    params = random_params(3)
    grads_seq = gradient_stream(params, 3)
    ours = gx.chain(gx.stateless(f), gx.scale(-0.5))
    theirs = optax.chain(optax.stateless(f), optax.scale(-0.5))
    updates, _ = run_updates(ours, params, grads_seq)
    expected, _ = run_optax(theirs, params, grads_seq)
    for mine, ref in zip(updates, expected):
        assert_trees_close(mine, ref, rtol=1e-6, atol=1e-7)


def test_stateless_rejects_non_callable():
    with pytest.raises(TypeError, match="stateless"):
        gx.stateless(3.0)


# --- stateless_with_tree_map -------------------------------------------------------------


def test_stateless_with_tree_map_leafwise_and_none_leaves():
    tx = gx.stateless_with_tree_map(lambda g, p: g * p)
    params = {"a": jnp.array([1.0, 2.0, 3.0]), "b": None, "c": [jnp.array(-2.0)]}
    grads = {"a": jnp.array([4.0, 5.0, 6.0]), "b": None, "c": [jnp.array(0.5)]}
    updates, state = tx.update(grads, tx.init(params), params)
    assert state == gx.EmptyState()
    assert updates["b"] is None
    np.testing.assert_array_equal(updates["a"], np.array([4.0, 10.0, 18.0], np.float32))
    np.testing.assert_array_equal(updates["c"][0], np.float32(-1.0))


def test_stateless_with_tree_map_without_params_passes_none():
    seen = []

    def f(g, p):
        seen.append(p)
        return g + 1.0

    tx = gx.stateless_with_tree_map(f)
    grads = {"a": jnp.array([1.0]), "b": None, "c": jnp.array(2.0)}
    updates, _ = tx.update(grads, tx.init(grads))
    assert seen == [None, None]
    assert updates["b"] is None
    np.testing.assert_array_equal(updates["a"], np.array([2.0], np.float32))
    np.testing.assert_array_equal(updates["c"], np.float32(3.0))


def test_stateless_with_tree_map_matches_optax():
    def f(g, p):
        return g * 0.5 + p * 0.25

    params = random_params(5)
    grads = gradient_stream(params, 1)[0]
    ours = gx.stateless_with_tree_map(f)
    theirs = optax.stateless_with_tree_map(f)
    updates, _ = jax.jit(ours.update)(grads, ours.init(params), params)
    with jax.numpy_dtype_promotion("standard"):
        expected, _ = jax.jit(theirs.update)(grads, theirs.init(params), params)
    assert_trees_close(updates, expected, rtol=1e-6, atol=1e-7)


def test_stateless_with_tree_map_structure_mismatch():
    tx = gx.stateless_with_tree_map(lambda g, p: g)
    with pytest.raises(ValueError, match="stateless_with_tree_map"):
        tx.update({"a": jnp.ones(2)}, gx.EmptyState(), {"b": jnp.ones(2)})


def test_stateless_with_tree_map_rejects_non_callable():
    with pytest.raises(TypeError, match="stateless_with_tree_map"):
        gx.stateless_with_tree_map(None)


# --- apply_updates ----------------------------------------------------------------------


def _optax_apply(params, updates):
    with jax.numpy_dtype_promotion("standard"):
        return optax.apply_updates(params, updates)


@pytest.mark.parametrize(
    "param_dtype, update_dtype",
    [
        (jnp.float32, jnp.float32),
        (jnp.bfloat16, jnp.float32),
        (jnp.float16, jnp.float32),
        (jnp.float32, jnp.bfloat16),
        (jnp.float32, jnp.float16),
    ],
    ids=lambda d: jnp.dtype(d).name,
)
def test_apply_updates_equals_optax_and_keeps_param_dtype(param_dtype, update_dtype):
    params = random_params(0, param_dtype)
    updates = jax.tree.map(
        lambda g: jnp.asarray(np.asarray(g, np.float32).astype(jnp.dtype(update_dtype))),
        gradient_stream(params, 1)[0],
    )
    result = jax.jit(gx.apply_updates)(params, updates)
    with jax.numpy_dtype_promotion("standard"):
        expected = jax.jit(optax.apply_updates)(params, updates)
    assert jax.tree.structure(result, is_leaf=is_none) == jax.tree.structure(params, is_leaf=is_none)
    for r, e, p, u in zip(
        jax.tree.leaves(result), jax.tree.leaves(expected), jax.tree.leaves(params), jax.tree.leaves(updates)
    ):
        assert r.dtype == p.dtype
        assert r.shape == p.shape
        np.testing.assert_array_equal(np.asarray(r, np.float64), np.asarray(e, np.float64))
        # NumPy reference: sum in float64 (exact for these dtypes), rounded once to the param dtype.
        ref = (np.asarray(p, np.float64) + np.asarray(u, np.float64)).astype(np.float32)
        ref = ref.astype(jnp.dtype(param_dtype)).astype(np.float64)
        np.testing.assert_array_equal(np.asarray(r, np.float64), ref)


def test_apply_updates_bf16_params_do_not_lose_small_f32_updates_to_double_rounding():
    # bfloat16's spacing at 1 is 2**-7. 1 + (2**-8 + 2**-20) is just above the halfway
    # point, so adding in float32 and rounding once gives 1 + 2**-7; casting the update
    # to bfloat16 first would give 1 + 2**-8, an exact tie, rounded to even: 1.
    params = {"w": jnp.array([1.0], jnp.bfloat16)}
    updates = {"w": jnp.array([2.0**-8 + 2.0**-20], jnp.float32)}
    result = gx.apply_updates(params, updates)
    assert result["w"].dtype == jnp.bfloat16
    np.testing.assert_array_equal(np.asarray(result["w"], np.float64), [1.0 + 2.0**-7])
    np.testing.assert_array_equal(
        np.asarray(result["w"], np.float64), np.asarray(_optax_apply(params, updates)["w"], np.float64)
    )


def test_apply_updates_none_leaves_stay_none():
    params = {"a": jnp.array([1.0, 2.0]), "frozen": None, "nested": [None, jnp.array(3.0)]}
    updates = {"a": jnp.array([0.5, -1.0]), "frozen": None, "nested": [None, jnp.array(-3.0)]}
    result = gx.apply_updates(params, updates)
    assert result["frozen"] is None
    assert result["nested"][0] is None
    np.testing.assert_array_equal(result["a"], np.array([1.5, 1.0], np.float32))
    np.testing.assert_array_equal(result["nested"][1], np.float32(0.0))
    expected = _optax_apply(params, updates)
    assert jax.tree.structure(result, is_leaf=is_none) == jax.tree.structure(expected, is_leaf=is_none)


def test_apply_updates_under_jit_and_zero_size():
    params = {"e": jnp.zeros((0, 3)), "s": jnp.array(1.0, jnp.float16)}
    updates = {"e": jnp.zeros((0, 3)), "s": jnp.array(0.25, jnp.float32)}
    result = jax.jit(gx.apply_updates)(params, updates)
    assert result["e"].shape == (0, 3)
    assert result["s"].dtype == jnp.float16
    np.testing.assert_array_equal(np.asarray(result["s"], np.float32), np.float32(1.25))


def test_apply_updates_structure_mismatch():
    with pytest.raises(ValueError, match="apply_updates"):
        gx.apply_updates({"a": jnp.ones(2)}, {"b": jnp.ones(2)})


def test_full_step_with_apply_updates_matches_optax_sgd():
    params = random_params(1)
    grads_seq = gradient_stream(params, 3)
    tx = gx.sgd(0.1, momentum=0.9)
    ref = optax.sgd(0.1, momentum=0.9)

    @jax.jit
    def step(p, state, grads):
        updates, state = tx.update(grads, state, p)
        return gx.apply_updates(p, updates), state

    @jax.jit
    def ref_step(p, state, grads):
        updates, state = ref.update(grads, state, p)
        return optax.apply_updates(p, updates), state

    p, state = params, tx.init(params)
    with jax.numpy_dtype_promotion("standard"):
        q, ref_state = params, ref.init(params)
        for grads in grads_seq:
            q, ref_state = ref_step(q, ref_state, grads)
    for grads in grads_seq:
        p, state = step(p, state, grads)
    assert_trees_close(p, q, rtol=1e-6, atol=1e-6)
