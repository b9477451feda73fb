"""schedule_free and schedule_free_eval_params against optax.contrib, run live.

* float32: 40 jitted steps of a training loop on both sides (gradients of a
  quadratic at each side's own params plus noise, the updates applied), over a
  nested tree with a 0-d, a zero-size and a ``None`` leaf, for three base
  optimizers and argument sets (a schedule, ``b1`` 0.5 and 1, powers 0, 1 and
  2, a float32 ``z`` for float32 params): the updates, the params, the
  evaluation params and every field of the state agree at every step.
* bfloat16 params with a float32 ``z``, and complex64 params: 30 steps
  against optax on the same values (bfloat16: optax in float32, our updates
  within one bfloat16 rounding; see `tests.helpers.compare_with_optax`).
* ``inject_hyperparams(schedule_free)`` gives the plain updates bit for bit;
  a zero learning rate keeps the params (optax's test) without a NaN on the
  way; params and state can both be donated; ``schedule_free_eval_params``
  finds the state inside a chain and names what is wrong.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradxform as gx
from tests.helpers import (
    FAST_COMPILE,
    assert_trees_bitwise_equal,
    compare_with_optax,
    gradient_stream,
    random_params,
)

STEPS = 40


def _decaying(count):
    return 0.1 / (1.0 + 0.1 * count.astype(jnp.float32))


def _grads(params, noise):
    return jax.tree.map(lambda p, n: 0.3 * p + n, params, noise)


def _trajectory(tx, eval_params, apply, params, noises):
    """Jitted steps applying the updates: (updates, params, eval params, state) per step."""

    @functools.partial(jax.jit, compiler_options=FAST_COMPILE)
    def step(params, state, noise):
        updates, state = tx.update(_grads(params, noise), state, params)
        params = apply(params, updates)
        return updates, params, eval_params(state, params), state

    state = tx.init(params)
    out = []
    for noise in noises:
        updates, params, evaluated, state = step(params, state, noise)
        out.append((updates, params, evaluated, state))
    return out


def _optax_trajectory(tx, params, noises):
    with jax.numpy_dtype_promotion("standard"), jax.debug_nans(False):
        return _trajectory(tx, optax.contrib.schedule_free_eval_params, optax.apply_updates,
                           params, noises)


def _close(actual, expected, what, rtol=1e-5, atol=1e-6):
    assert jax.tree.structure(actual) == jax.tree.structure(expected), what
    for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected)):
        assert a.shape == e.shape, what
        wide = np.complex128 if jnp.iscomplexobj(e) else np.float64
        np.testing.assert_allclose(np.asarray(a, wide), np.asarray(e, wide),
                                   rtol=rtol, atol=atol, err_msg=what)


CASES = [
    pytest.param(lambda m: m.sgd(0.1), dict(learning_rate=0.1), id="sgd-defaults"),
    pytest.param(lambda m: m.adam(_decaying, b1=0.0), dict(
        learning_rate=_decaying, b1=0.5, weight_lr_power=1.0), id="adam-schedule-b1=0.5"),
    pytest.param(lambda m: m.sgd(0.05), dict(
        learning_rate=0.05, b1=1.0, weight_lr_power=0.0, state_dtype=jnp.float32),
        id="sgd-b1=1-power0"),
]


@pytest.mark.parametrize("base, kwargs", CASES)
def test_schedule_free_matches_optax_field_by_field(base, kwargs):
    params = random_params(0)
    noises = gradient_stream(params, STEPS, seed=1)
    ours = _trajectory(gx.schedule_free(base(gx), **kwargs), gx.schedule_free_eval_params,
                       gx.apply_updates, params, noises)
    theirs = _optax_trajectory(optax.contrib.schedule_free(base(optax), **kwargs), params, noises)
    for step, (mine, ref) in enumerate(zip(ours, theirs)):
        (updates, new_params, evaluated, state), (r_updates, r_params, r_eval, r_state) = mine, ref
        _close(updates, r_updates, f"updates at step {step}")
        _close(new_params, r_params, f"params at step {step}")
        _close(evaluated, r_eval, f"eval params at step {step}")
        assert type(state).__name__ == type(r_state).__name__ == "ScheduleFreeState"
        assert state._fields == r_state._fields
        for field in ("b1", "weight_sum", "max_lr", "z"):
            _close(getattr(state, field), getattr(r_state, field), f"{field} at step {step}")
        assert int(state.step_count) == int(r_state.step_count) == step + 2
        for name in ("nu", "mu"):  # the base optimizer's moments, where it keeps them
            try:
                mine_moment = gx.tree_get(state.base_optimizer_state, name)
            except (KeyError, ValueError):
                continue
            _close(mine_moment, optax.tree.get(r_state.base_optimizer_state, name),
                   f"{name} at step {step}")


def test_bfloat16_params_with_a_float32_z():
    """optax gets the float32 values of our bfloat16 params and gradients (params held)."""
    compare_with_optax(
        gx.schedule_free(gx.sgd(0.1), 0.1, state_dtype=jnp.float32),
        optax.contrib.schedule_free(optax.sgd(0.1), 0.1), dtype=jnp.bfloat16, steps=30,
    )
    state = gx.schedule_free(gx.sgd(0.1), 0.1).init(random_params(0, jnp.bfloat16))
    assert {leaf.dtype for leaf in jax.tree.leaves(state.z)} == {jnp.dtype(jnp.bfloat16)}
    # The scalars stay float32: a bfloat16 sum of weights would stall (optax keeps bfloat16).
    assert state.weight_sum.dtype == state.max_lr.dtype == state.b1.dtype == jnp.float32


def test_complex_params_match_optax():
    rng = np.random.default_rng(0)
    params = {"w": jnp.asarray(rng.standard_normal(4) + 1j * rng.standard_normal(4), jnp.complex64)}
    noises = [{"w": jnp.asarray(rng.standard_normal(4) + 1j * rng.standard_normal(4),
                                jnp.complex64)} for _ in range(30)]
    ours = _trajectory(gx.schedule_free(gx.sgd(0.1), 0.1), gx.schedule_free_eval_params,
                       gx.apply_updates, params, noises)
    theirs = _optax_trajectory(optax.contrib.schedule_free(optax.sgd(0.1), 0.1), params, noises)
    for step, (mine, ref) in enumerate(zip(ours, theirs)):
        _close(mine[1], ref[1], f"params at step {step}")
        _close(mine[2], ref[2], f"eval params at step {step}")
        assert mine[3].z["w"].dtype == jnp.complex64


def test_inject_hyperparams_gives_the_plain_updates_bitwise():
    params = random_params(0)
    grads = gradient_stream(params, 25, seed=2)
    plain = gx.schedule_free(gx.adam(1e-2, b1=0.0), 1e-2, b1=0.8, weight_lr_power=1.5)
    injected = gx.inject_hyperparams(gx.schedule_free)(
        gx.adam(1e-2, b1=0.0), 1e-2, b1=0.8, weight_lr_power=1.5)
    steps = (jax.jit(plain.update, compiler_options=FAST_COMPILE),
             jax.jit(injected.update, compiler_options=FAST_COMPILE))
    states = plain.init(params), injected.init(params)
    assert set(states[1].hyperparams) == {"learning_rate", "b1", "weight_lr_power"}
    for g in grads:
        (u1, s1), (u2, s2) = steps[0](g, states[0], params), steps[1](g, states[1], params)
        assert_trees_bitwise_equal(u2, u1)
        assert_trees_bitwise_equal(s2.inner_state, s1)
        states = s1, s2
        params = gx.apply_updates(params, u1)
    # A b1 set in the state is used, and recorded for the evaluation params.
    s2 = gx.tree_set(states[1], **{"hyperparams/b1": 0.5})
    _, s2 = steps[1](grads[0], s2, params)
    assert float(s2.inner_state.b1) == 0.5


def test_zero_learning_rate_keeps_the_params_without_nan():
    """optax's test_learning_rate_zero, run eagerly under jax_debug_nans: 0/0 never happens."""
    tx = gx.schedule_free(gx.sgd(0.0), learning_rate=0.0)
    params = {"w": jnp.array([1.0, 2.0]), "s": jnp.float32(-1.0)}
    state = tx.init(params)
    for _ in range(2):  # eager: every operation is checked for NaN
        grads = jax.tree.map(lambda p: 2 * p, params)
        updates, state = tx.update(grads, state, params)
        params = gx.apply_updates(params, updates)
    evaluated = gx.schedule_free_eval_params(state, params)
    np.testing.assert_allclose(evaluated["w"], [1.0, 2.0])
    assert evaluated["s"].shape == () and evaluated["s"].dtype == jnp.float32
    assert float(state.weight_sum) == 0.0


def test_params_and_state_can_both_be_donated():
    tx = gx.schedule_free(gx.sgd(0.1), 0.1)
    params = {"w": jnp.ones(3)}

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def step(params, state):
        updates, state = tx.update(jax.tree.map(lambda p: 2 * p, params), state, params)
        return gx.apply_updates(params, updates), state

    state = tx.init(params)
    assert state.z["w"] is not params["w"]
    params, state = step(params, state)
    np.testing.assert_allclose(state.z["w"], 0.8)


def test_eval_params_find_the_state_inside_a_chain_and_name_errors():
    tx = gx.chain(gx.clip_by_global_norm(1.0), gx.schedule_free(gx.sgd(0.1), 0.1))
    params = {"w": jnp.array([1.0, -1.0])}
    state = tx.init(params)
    _, state = tx.update({"w": jnp.array([3.0, 4.0])}, state, params)
    np.testing.assert_allclose(gx.schedule_free_eval_params(state, params)["w"],
                               gx.schedule_free_eval_params(state[1], params)["w"])
    with pytest.raises(TypeError, match="schedule_free_eval_params: state must be"):
        gx.schedule_free_eval_params(gx.adam(0.1).init(params), params)
    with pytest.raises(ValueError, match="schedule_free_eval_params: params must have"):
        gx.schedule_free_eval_params(state, {"w": jnp.ones(3)})
    with pytest.raises(TypeError, match="schedule_free: update needs the params"):
        gx.schedule_free(gx.sgd(0.1), 0.1).update(params, state[1])
    with pytest.raises(ValueError, match="schedule_free: b1 must be in"):
        gx.schedule_free(gx.sgd(0.1), 0.1, b1=0.0)
