"""lion, sign_sgd and signum against optax's, and under inject_hyperparams.

* Each alias must match optax's over 50 jitted steps on a nested pytree
  (scalars, ``None`` and zero-size leaves), with several argument sets
  (schedules, masks, non-default rates), in float32 and bfloat16 (bfloat16
  compared with optax run in float32, see `tests.helpers.compare_with_optax`).
  The moment each one keeps (Lion's ``mu``, Signum's ``ema``) is compared
  field by field with optax's state.
* ``inject_hyperparams(alias)`` gives bit for bit the plain alias's updates,
  params and state over 30 jitted steps, and a value changed in its state
  acts as the alias built with that value.
* lion, sign_sgd and signum converge on a quadratic.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradxform as gx
from tests.helpers import (
    LOW_PRECISION,
    assert_trees_bitwise_equal,
    assert_trees_close,
    compare_with_optax,
    gradient_stream,
    random_params,
    trajectory,
)

DTYPES = [jnp.float32, jnp.bfloat16]
STEPS = 50


def _decaying(count):
    return 1e-2 / (1.0 + count.astype(jnp.float32))


def _matrices(params):
    return jax.tree.map(lambda p: p.ndim >= 2, params)


LION_CASES = [
    pytest.param(dict(learning_rate=1e-3), id="defaults"),
    pytest.param(dict(learning_rate=3e-4, b1=0.95, b2=0.98, weight_decay=0.1), id="rates"),
    pytest.param(dict(learning_rate=_decaying, weight_decay=0.0), id="schedule-no-decay"),
    pytest.param(dict(learning_rate=1e-2, weight_decay=_decaying, mask=_matrices), id="mask"),
]


def _state_dtypes(dtype, name):
    return {name: jnp.float32} if dtype in LOW_PRECISION else {}


# Updates, params and states after each jitted step, the params moved by the updates;
# optax's runs keep the NaN checks on.
_trajectory = functools.partial(trajectory, move=True, compiler_options=None, check_nans=True)


def _compare_states(gx_tx, optax_tx, dtype, field):
    """Runs both on moving params; the first chain member's state must match optax's."""
    params = random_params(0, dtype)
    grads_seq = gradient_stream(params, STEPS, seed=1)
    ours = _trajectory(gx_tx, params, grads_seq)
    theirs = _trajectory(optax_tx, params, grads_seq, standard=True)
    for step, ((_, _, s), (_, _, s_ref)) in enumerate(zip(ours, theirs)):
        first, first_ref = s[0], s_ref[0]
        assert type(first).__name__ == type(first_ref).__name__
        assert first._fields == first_ref._fields == ("count", field)
        assert int(first.count) == int(first_ref.count) == step + 1
        assert_trees_close(getattr(first, field), getattr(first_ref, field), 2e-6, 1e-7,
                           context=f"step {step}")


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("kwargs", LION_CASES)
def test_lion_matches_optax(dtype, kwargs):
    compare_with_optax(
        gx.lion(**kwargs, **_state_dtypes(dtype, "mu_dtype")), optax.lion(**kwargs), dtype=dtype
    )


@pytest.mark.parametrize("kwargs", LION_CASES[1:3])
def test_lion_state_matches_optax_on_moving_params(kwargs):
    _compare_states(gx.lion(**kwargs), optax.lion(**kwargs), jnp.float32, "mu")


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("learning_rate", [0.1, _decaying], ids=["constant", "schedule"])
def test_sign_sgd_matches_optax(dtype, learning_rate):
    compare_with_optax(gx.sign_sgd(learning_rate), optax.sign_sgd(learning_rate), dtype=dtype)


SIGNUM_CASES = [
    pytest.param(dict(learning_rate=1e-3), id="defaults"),
    pytest.param(dict(learning_rate=_decaying, beta=0.5), id="schedule-beta=0.5"),
    pytest.param(dict(learning_rate=0.1, beta=0.0), id="beta=0"),
    pytest.param(dict(learning_rate=0.1, beta=0.99), id="beta=0.99"),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("kwargs", SIGNUM_CASES)
def test_signum_matches_optax(dtype, kwargs):
    compare_with_optax(
        gx.signum(**kwargs, **_state_dtypes(dtype, "accumulator_dtype")), optax.signum(**kwargs),
        dtype=dtype,
    )


@pytest.mark.parametrize("kwargs", SIGNUM_CASES[:2])
def test_signum_state_matches_optax_on_moving_params(kwargs):
    _compare_states(gx.signum(**kwargs), optax.signum(**kwargs), jnp.float32, "ema")


@pytest.mark.parametrize("beta", [0.9, 0.5])
def test_signum_is_lion_with_equal_rates_and_no_decay(beta):
    """Lion's c_t = (1-b1) g_t + b1 m_{t-1} is Signum's average m_t when b1 = b2 = beta."""
    params = random_params(2)
    grads_seq = gradient_stream(params, 30, seed=7)
    signum = _trajectory(gx.signum(0.01, beta=beta), params, grads_seq)
    lion = _trajectory(gx.lion(0.01, b1=beta, b2=beta, weight_decay=0.0), params, grads_seq)
    for step, ((u, _, _), (u_lion, _, _)) in enumerate(zip(signum, lion)):
        assert_trees_bitwise_equal(u, u_lion, f"step {step}")


def test_signum_and_lion_differ_in_which_average_they_read():
    """g = 1 then -0.5: Signum's average 0.09 - 0.05 > 0 steps down again, Lion's
    c = -0.05 + 0.9 * 0.01 < 0 steps up (its momentum has weight b2 = 0.99)."""
    params = {"w": jnp.zeros(1)}
    grads = [{"w": jnp.array([1.0])}, {"w": jnp.array([-0.5])}]
    for tx, expected in ((gx.signum(1.0), [-1.0, -1.0]), (gx.lion(1.0, weight_decay=0.0),
                                                          [-1.0, 1.0])):
        steps = [float(u["w"][0]) for u, _, _ in _trajectory(tx, params, grads)]
        assert steps == expected, tx


def test_lion_weight_decay_is_multiplied_by_the_learning_rate():
    params = {"w": jnp.array([2.0, -4.0, 0.0])}
    tx = gx.lion(0.1, weight_decay=0.5)
    updates, _ = tx.update({"w": jnp.array([1.0, 1.0, 0.0])}, tx.init(params), params)
    # -lr * (sign(0.1 g) + wd * p)
    np.testing.assert_allclose(updates["w"], [-0.1 * (1 + 1.0), -0.1 * (1 - 2.0), 0.0], rtol=1e-6)


@pytest.mark.allows_nan
@pytest.mark.parametrize("factory", [gx.sign_sgd, gx.signum, gx.lion])
def test_a_nan_gradient_gives_a_nan_update(factory):
    params = {"w": jnp.ones(3)}
    tx = factory(0.1)
    updates, _ = jax.jit(tx.update)({"w": jnp.array([1.0, jnp.nan, 0.0])}, tx.init(params), params)
    assert np.isnan(updates["w"][1])
    assert float(updates["w"][0]) < 0 and not np.isnan(updates["w"][2])


# --------------------------------------------------------------- inject_hyperparams

INJECT_CASES = {
    "lion": (gx.lion, dict(learning_rate=3e-3, b1=0.85, b2=0.995, weight_decay=0.02)),
    "lion_schedule_mask": (gx.lion, dict(learning_rate=_decaying, b1=0.9, b2=0.99,
                                         weight_decay=1e-2, mask=_matrices)),
    "sign_sgd": (gx.sign_sgd, dict(learning_rate=0.01)),
    "signum": (gx.signum, dict(learning_rate=0.01, beta=0.8)),
}


@pytest.mark.parametrize(
    "name,dtype",
    [(name, jnp.float32) for name in INJECT_CASES] + [("lion", jnp.bfloat16),
                                                      ("signum", jnp.bfloat16)],
)
def test_inject_hyperparams_is_bitwise_the_plain_alias(name, dtype):
    factory, arguments = INJECT_CASES[name]
    params = random_params(0, dtype)
    grads_seq = gradient_stream(params, 30, seed=3)
    plain = _trajectory(factory(**arguments), params, grads_seq)
    injected = _trajectory(gx.inject_hyperparams(factory)(**arguments), params, grads_seq)
    for step, ((u, p, s), (u_i, p_i, s_i)) in enumerate(zip(plain, injected)):
        context = f"{name}, {dtype.__name__}, step {step}"
        assert_trees_bitwise_equal(u_i, u, context)
        assert_trees_bitwise_equal(p_i, p, context)
        assert_trees_bitwise_equal(s_i.inner_state, s, context)


@pytest.mark.parametrize("name,value", [("b1", 0.5), ("b2", 0.9), ("weight_decay", 0.3),
                                        ("learning_rate", 0.02)])
def test_a_value_changed_in_the_state_acts_as_the_alias_built_with_it(name, value):
    arguments = dict(INJECT_CASES["lion"][1])
    tx = gx.inject_hyperparams(gx.lion)(**arguments)
    params = random_params(1)
    grads_seq = gradient_stream(params, 20, seed=4)
    expected = _trajectory(gx.lion(**{**arguments, name: value}), params, grads_seq)
    update = jax.jit(tx.update)
    state = tx.init(params)
    state = gx.tree_set(state, **{name: value})
    for step, (grads, (u_ref, _, _)) in enumerate(zip(grads_seq, expected)):
        updates, state = update(grads, state, params)
        params = jax.tree.map(lambda p, u: p + u, params, updates)
        assert_trees_close(updates, u_ref, 1e-6, 1e-9, context=f"{name} step {step}")


# --------------------------------------------------------------------- convergence


@pytest.mark.parametrize("tx", [gx.lion(0.01, weight_decay=0.0), gx.sign_sgd(0.01),
                                gx.signum(0.01)], ids=["lion", "sign_sgd", "signum"])
def test_converges_on_a_quadratic(tx):
    target = jnp.array([1.0, -2.0, 0.5, 3.0])

    def loss(params):
        return jnp.sum((params["w"] - target) ** 2)

    @jax.jit
    def step(params, state):
        updates, state = tx.update(jax.grad(loss)(params), state, params)
        return gx.apply_updates(params, updates), state

    params = {"w": jnp.zeros(4)}
    state = tx.init(params)
    for _ in range(800):
        params, state = step(params, state)
    # Sign steps of size 0.01 end within a step of the minimum (Lion's slow momentum,
    # b2 = 0.99, overshoots first: it settles after about 500 steps).
    np.testing.assert_allclose(params["w"], target, atol=0.05)
    assert float(loss(params)) < 1e-2
