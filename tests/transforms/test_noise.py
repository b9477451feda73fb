"""add_noise against optax.add_noise: the same noise for the same key, step for step.

* float32: updates and state (count, key) equal optax's over 40 jitted steps on
  the nested tree (dicts, lists, tuples, scalars, ``None``, a zero-size leaf),
  for several (eta, gamma, key) sets, with int, typed and raw keys.
* bfloat16: optax draws each leaf's noise in bfloat16, as gradxform does, and
  returns float32 updates; gradxform's bfloat16 updates are optax's rounded
  once to bfloat16.
* The standard deviation follows sqrt(eta / t**gamma), checked in float64
  NumPy on the noise of zero gradients.
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
    random_params,
    run_optax,
    run_updates,
)

STEPS = 40
CASES = [
    pytest.param(dict(eta=0.01, gamma=0.55), 0, id="defaults-seed0"),
    pytest.param(dict(eta=0.3, gamma=1.0), 7, id="eta0.3-gamma1-seed7"),
    pytest.param(dict(eta=2.0, gamma=0.0), 123456789, id="no-annealing"),
    pytest.param(dict(eta=0.0, gamma=0.55), 1, id="eta0"),
]


def _assert_states_equal(ours, theirs, context):
    """Field by field: the count, and the key (optax's typed key as raw data)."""
    assert type(ours).__name__ == "AddNoiseState" and ours._fields == theirs._fields == (
        "count", "rng_key")
    assert ours.count.dtype == jnp.int32
    np.testing.assert_array_equal(ours.count, theirs.count, err_msg=context)
    np.testing.assert_array_equal(ours.rng_key, jax.random.key_data(theirs.rng_key),
                                  err_msg=context)


@pytest.mark.parametrize("kwargs, seed", CASES)
def test_float32_matches_optax_updates_and_state(kwargs, seed):
    params = random_params(0)
    grads_seq = gradient_stream(params, STEPS, seed=1)
    ours, our_state = run_updates(gx.add_noise(**kwargs, key=seed), params, grads_seq)
    theirs, their_state = run_optax(optax.add_noise(**kwargs, key=seed), params, grads_seq)
    for step, (mine, ref) in enumerate(zip(ours, theirs)):
        assert_trees_close(mine, ref, 1e-6, 1e-7, context=f"step {step}")
    _assert_states_equal(our_state, their_state, "final state")


def test_state_matches_optax_at_every_step():
    params = random_params(2)
    grads_seq = gradient_stream(params, STEPS, seed=3)
    ours, theirs = gx.add_noise(0.1, 0.55, key=11), optax.add_noise(0.1, 0.55, key=11)
    our_state, their_state = ours.init(params), theirs.init(params)
    _assert_states_equal(our_state, their_state, "init")
    our_step = jax.jit(ours.update)
    with jax.numpy_dtype_promotion("standard"):
        their_step = jax.jit(theirs.update)
        for step, grads in enumerate(grads_seq):
            mine, our_state = our_step(grads, our_state)
            ref, their_state = their_step(grads, their_state)
            assert_trees_close(mine, ref, 1e-6, 1e-7, context=f"step {step}")
            _assert_states_equal(our_state, their_state, f"step {step}")


@pytest.mark.parametrize("make_key", [
    pytest.param(lambda: jax.random.key(5), id="typed"),
    pytest.param(lambda: jax.random.PRNGKey(5), id="raw-PRNGKey"),
    pytest.param(lambda: jax.random.key(5, impl="rbg"), id="typed-rbg"),
    pytest.param(lambda: np.int64(5), id="numpy-int"),
    pytest.param(lambda: jnp.int32(5), id="jax-int"),
])
def test_keys_of_every_kind_give_optax_numbers(make_key):
    params = random_params(0)
    grads_seq = gradient_stream(params, 30, seed=1)
    key = make_key()
    optax_key = jax.random.wrap_key_data(key) if key.dtype == jnp.uint32 else key
    ours, our_state = run_updates(gx.add_noise(0.05, 0.55, key), params, grads_seq)
    theirs, their_state = run_optax(optax.add_noise(0.05, 0.55, optax_key), params, grads_seq)
    for step, (mine, ref) in enumerate(zip(ours, theirs)):
        assert_trees_close(mine, ref, 1e-6, 1e-7, context=f"step {step}")
    _assert_states_equal(our_state, their_state, "final state")


def test_bfloat16_is_the_float64_rule_on_optax_noise_rounded_once():
    """optax draws the same bfloat16 noise but computes sigma * xi and the sum in bfloat16.

    optax's noise itself is recovered exactly from eta=1, gamma=0 on zero
    gradients (sigma = 1): the keys do not depend on eta, gamma or the
    gradients. The float64 rule on it, rounded once to bfloat16, is then the
    reference: gradxform rounds once (float32 arithmetic on the bfloat16
    noise), so it is within half a bfloat16 ulp of the float64 value, except
    where that lies within float32 rounding of a tie. optax's own bfloat16
    result agrees to bfloat16 precision.
    """
    eta, gamma = 0.2, 0.55
    params = random_params(0, jnp.bfloat16)
    grads_seq = gradient_stream(params, 30, seed=1)
    ours, our_state = run_updates(gx.add_noise(eta, gamma, key=3), params, grads_seq)
    zeros = [jax.tree.map(jnp.zeros_like, g) for g in grads_seq]
    noise, _ = run_optax(optax.add_noise(1.0, 0.0, key=3), params, zeros)
    theirs, their_state = run_optax(optax.add_noise(eta, gamma, key=3), params, grads_seq)
    for t, (mine, xi, grads, ref) in enumerate(zip(ours, noise, grads_seq, theirs), start=1):
        sigma = np.sqrt(eta / t**gamma)
        for a, x, g, b in zip(*map(jax.tree.leaves, (mine, xi, grads, ref))):
            assert a.dtype == x.dtype == jnp.bfloat16
            g64, x64 = np.asarray(g, np.float64), np.asarray(x, np.float64)
            error = np.abs(np.asarray(a, np.float64) - (g64 + sigma * x64))
            # One rounding to bfloat16: half an ulp, at most 2**-8 of the value (plus float32's).
            bound = (2.0**-8 + 2.0**-22) * np.abs(g64 + sigma * x64)
            assert np.all(error <= bound), (t, float(np.max(error - bound)))
            np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64),
                                       rtol=2e-2, atol=2e-2, err_msg=f"step {t} vs optax")
    _assert_states_equal(our_state, their_state, "final state")


def test_key_and_seed_are_the_same_thing():
    params = random_params(0)
    grads_seq = gradient_stream(params, 30, seed=1)
    by_key, _ = run_updates(gx.add_noise(0.1, 0.55, key=9), params, grads_seq)
    by_seed, _ = run_updates(gx.add_noise(0.1, 0.55, seed=9), params, grads_seq)
    for a, b in zip(by_key, by_seed):
        assert_trees_close(a, b, 0, 0)
    by_default, _ = run_updates(gx.add_noise(0.1, 0.55), params, grads_seq)
    theirs, _ = run_optax(optax.add_noise(0.1, 0.55, key=0), params, grads_seq)
    for a, b in zip(by_default, theirs):
        assert_trees_close(a, b, 1e-6, 1e-7)


def test_giving_key_and_seed_raises():
    with pytest.raises(ValueError, match=r"add_noise: give key or seed .*key=1.*seed=2"):
        gx.add_noise(0.1, 0.55, key=1, seed=2)
    with pytest.raises(ValueError, match=r"noisy_sgd: give key or seed"):
        gx.noisy_sgd(0.1, key=1, seed=2)


def test_a_batch_of_keys_is_rejected():
    with pytest.raises(ValueError, match=r"add_noise: key must be a single key"):
        gx.add_noise(0.1, 0.55, key=jax.random.split(jax.random.key(0), 3))


def test_standard_deviation_anneals_as_the_formula_says():
    """Zero gradients: the update is the noise, whose sample std is sqrt(eta / t**gamma)."""
    eta, gamma, n = 0.5, 0.55, 200_000
    tx = gx.add_noise(eta, gamma, key=4)
    params = {"w": jnp.zeros(n), "v": jnp.zeros((2, 3))}
    state = tx.init(params)
    step = jax.jit(tx.update)
    for t in range(1, 6):
        updates, state = step(jax.tree.map(jnp.zeros_like, params), state)
        noise = np.asarray(updates["w"], np.float64)
        expected = np.sqrt(eta / t**gamma)
        assert abs(noise.mean()) < 5 * expected / np.sqrt(n)
        np.testing.assert_allclose(noise.std(), expected, rtol=1e-2)
    assert int(state.count) == 5


def test_leaves_get_independent_noise_and_steps_fresh_noise():
    tx = gx.add_noise(1.0, 0.0, key=0)
    params = {"a": jnp.zeros(64), "b": jnp.zeros(64)}
    state = tx.init(params)
    first, state = tx.update(params, state)
    second, _ = tx.update(params, state)
    assert not np.array_equal(first["a"], first["b"])
    assert not np.array_equal(first["a"], second["a"])


def test_complex_gradients_get_complex_noise_like_optax():
    params = {"z": jnp.asarray(np.arange(6.0) + 1j, jnp.complex64).reshape(2, 3)}
    grads_seq = [jax.tree.map(lambda x: x * (k + 1), params) for k in range(30)]
    ours, _ = run_updates(gx.add_noise(0.1, 0.55, key=2), params, grads_seq)
    theirs, _ = run_optax(optax.add_noise(0.1, 0.55, key=2), params, grads_seq)
    for a, b in zip(ours, theirs):
        assert a["z"].dtype == jnp.complex64
        np.testing.assert_allclose(a["z"], b["z"], rtol=1e-6, atol=1e-6)


def test_flat_tree_noise_is_the_per_leaf_noise():
    params = random_params(0)
    params = {**params, "half": jnp.ones((2, 3), jnp.bfloat16)}
    grads_seq = gradient_stream(params, 30, seed=1)
    tx = gx.add_noise(0.3, 0.55, key=8)
    want, want_state = run_updates(tx, params, grads_seq)
    flat = gx.flat_tree(params, keep=lambda path, leaf: path == "dense/kernel")
    got, got_state = run_updates(tx, flat, [flat.ravel(g) for g in grads_seq])
    for step, (g, w) in enumerate(zip(got, want)):
        for a, b in zip(jax.tree.leaves(g.unravel()), jax.tree.leaves(w)):
            assert a.dtype == b.dtype
            tolerance = 0 if a.dtype == jnp.bfloat16 else 1e-6  # one rounding of the same value
            np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64),
                                       rtol=tolerance, atol=1e-7, err_msg=f"step {step}")
    np.testing.assert_array_equal(got_state.rng_key, want_state.rng_key)


def test_masked_noise_matches_optax_masked():
    params = random_params(0)
    grads_seq = gradient_stream(params, 30, seed=1)

    def mask(tree):
        return jax.tree.map(lambda x: x.ndim >= 2, tree)

    ours, _ = run_updates(gx.masked(gx.add_noise(0.2, 0.55, key=6), mask), params, grads_seq)
    theirs, _ = run_optax(optax.masked(optax.add_noise(0.2, 0.55, key=6), mask), params, grads_seq)
    for a, b in zip(ours, theirs):
        assert_trees_close(a, b, 1e-6, 1e-7)


def test_repr_and_config_round_trip():
    tx = gx.add_noise(0.01, 0.55, key=3)
    assert repr(tx) == "add_noise(eta=0.01, gamma=0.55, key=3, seed=None)"
    rebuilt = gx.from_config(gx.to_config(tx))
    params = random_params(0)
    grads_seq = gradient_stream(params, 3, seed=1)
    for a, b in zip(run_updates(tx, params, grads_seq)[0], run_updates(rebuilt, params, grads_seq)[0]):
        assert_trees_close(a, b, 0, 0)
