"""noisy_sgd against optax.noisy_sgd, and under inject_hyperparams.

* 40 jitted steps on the nested tree, float32 and bfloat16, constant and
  scheduled learning rates, several (eta, gamma, key): the updates equal
  optax's, and the state (the add_noise member's count and key) too.
* ``inject_hyperparams(gx.noisy_sgd)`` gives the plain optimizer's updates,
  params and inner state bit for bit over 30 jitted steps; eta and gamma are
  injected, the key is not.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradxform as gx
from tests.helpers import (
    DEFAULT_COMPILE,
    assert_trees_bitwise_equal,
    assert_trees_close,
    gradient_stream,
    random_params,
    run_optax,
    run_updates,
)

STEPS = 40


def _decaying(count):
    return 0.1 / (1.0 + count.astype(jnp.float32))


CASES = [
    pytest.param(dict(learning_rate=0.1), id="defaults"),
    pytest.param(dict(learning_rate=0.03, eta=0.2, gamma=1.0, key=17), id="eta-gamma-key"),
    pytest.param(dict(learning_rate=_decaying, eta=0.05, key=3), id="schedule"),
]


@pytest.mark.parametrize("kwargs", CASES)
def test_float32_matches_optax(kwargs):
    params = random_params(0)
    grads_seq = gradient_stream(params, STEPS, seed=1)
    ours, our_state = run_updates(gx.noisy_sgd(**kwargs), params, grads_seq)
    optax_kwargs = dict(kwargs, key=kwargs.get("key", 0))  # optax warns without a key
    theirs, their_state = run_optax(optax.noisy_sgd(**optax_kwargs), params, grads_seq)
    for step, (mine, ref) in enumerate(zip(ours, theirs)):
        assert_trees_close(mine, ref, 1e-6, 1e-8, context=f"step {step}")
    noise, their_noise = our_state[0], their_state[0]
    assert noise._fields == their_noise._fields == ("count", "rng_key")
    np.testing.assert_array_equal(noise.count, their_noise.count)
    np.testing.assert_array_equal(noise.rng_key, jax.random.key_data(their_noise.rng_key))


def test_bfloat16_matches_optax_to_bfloat16_precision():
    params = random_params(0, jnp.bfloat16)
    grads_seq = gradient_stream(params, STEPS, seed=1)
    ours, _ = run_updates(gx.noisy_sgd(0.1, eta=0.2, key=4), params, grads_seq)
    theirs, _ = run_optax(optax.noisy_sgd(0.1, eta=0.2, key=4), params, grads_seq)
    for step, (mine, ref) in enumerate(zip(ours, theirs)):
        assert {leaf.dtype for leaf in jax.tree.leaves(mine)} == {jnp.dtype(jnp.bfloat16)}
        assert_trees_close(mine, ref, 2e-2, 2e-3, context=f"step {step}")


def test_is_a_chain_of_add_noise_and_the_learning_rate():
    tx = gx.noisy_sgd(0.1, eta=0.02, key=5)
    assert repr(tx.inner) == (
        "chain(add_noise(eta=0.02, gamma=0.55, key=5, seed=None), "
        "scale_by_learning_rate(learning_rate=0.1, flip_sign=True))")
    rebuilt = gx.from_config(gx.to_config(tx))
    params = random_params(0)
    grads_seq = gradient_stream(params, 3, seed=1)
    for a, b in zip(run_updates(tx, params, grads_seq)[0], run_updates(rebuilt, params, grads_seq)[0]):
        assert_trees_bitwise_equal(a, b)


def _trajectory(tx, params, grads_seq, compiler_options=None):
    update = jax.jit(tx.update, compiler_options=compiler_options)
    state, history = tx.init(params), []
    for grads in grads_seq:
        updates, state = update(grads, state, params)
        params = gx.apply_updates(params, updates)
        history.append((updates, params, state))
    return history


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16], ids=lambda d: d.__name__)
@pytest.mark.parametrize("kwargs", [
    pytest.param(dict(learning_rate=0.05), id="defaults"),
    pytest.param(dict(learning_rate=gx.schedules.linear_schedule(0.1, 0.01, 20), eta=0.3,
                      gamma=0.9, key=11), id="scheduled"),
])
def test_inject_hyperparams_is_bitwise_the_plain_optimizer(kwargs, dtype):
    params = random_params(0, dtype)
    grads_seq = gradient_stream(params, 30, seed=3)
    plain = _trajectory(gx.noisy_sgd(**kwargs), params, grads_seq, DEFAULT_COMPILE)
    injected_tx = gx.inject_hyperparams(gx.noisy_sgd)(**kwargs)
    injected = _trajectory(injected_tx, params, grads_seq, DEFAULT_COMPILE)
    for step, ((u, p, s), (u_i, p_i, s_i)) in enumerate(zip(plain, injected)):
        context = f"{dtype.__name__}, step {step}"
        assert_trees_bitwise_equal(u_i, u, context)
        assert_trees_bitwise_equal(p_i, p, context)
        assert_trees_bitwise_equal(s_i.inner_state, s, context)
    state = injected[-1][2]
    assert {"eta", "gamma"} <= set(state.hyperparams) and "key" not in state.hyperparams
    assert {v.dtype for v in state.hyperparams.values()} == {jnp.dtype(jnp.float32)}


def test_injected_eta_can_be_changed_and_is_checked():
    params = random_params(0)
    grads = gradient_stream(params, 1, seed=3)[0]
    tx = gx.inject_hyperparams(gx.noisy_sgd)(0.1, eta=0.1, key=2)
    state = tx.init(params)
    state.hyperparams["eta"] = jnp.float32(0.0)
    updates, _ = jax.jit(tx.update)(grads, state, params)
    expected = jax.tree.map(lambda g: -0.1 * g, grads)  # no noise left
    assert_trees_close(updates, expected, 1e-6, 1e-7)
    with pytest.raises(ValueError, match="eta"):
        state.hyperparams["eta"] = -1.0
