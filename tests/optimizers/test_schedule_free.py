"""schedule_free_sgd and schedule_free_adamw against optax.contrib, run live.

* float32: 35 jitted steps of a training loop on both sides over a nested tree
  with a 0-d, a zero-size and a ``None`` leaf, for default and non-default
  arguments (warmup, weight decay, ``b1``, ``b2``, ``eps``, the averaging
  power): the updates, the params, the evaluation params, the schedule-free
  scalars, ``z`` and the second moment agree at every step.
* bfloat16 params with a float32 ``z`` (AdamW): 30 steps, optax in float32 on
  the same values; our updates within one bfloat16 rounding.
* ``inject_hyperparams`` of each alias gives the plain alias's updates and
  state bit for bit over 25 jitted steps.
* The warmup is optax's ``warmup_constant_schedule`` bit for bit; the AdamW
  alias is ``schedule_free(adamw(b1=0))`` (optax's own test); errors name the
  alias and its argument.
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

STEPS = 35


def _train(tx, eval_params, apply, params, noises):
    @functools.partial(jax.jit, compiler_options=FAST_COMPILE)
    def step(params, state, noise):
        grads = jax.tree.map(lambda p, n: 0.3 * p + n, params, noise)
        updates, state = tx.update(grads, state, params)
        params = apply(params, updates)
        return updates, params, eval_params(state, params), state

    state = tx.init(params)
    out = []
    for noise in noises:
        updates, params, evaluated, state = step(params, state, noise)
        out.append((updates, params, evaluated, state))
    return out


def _close(actual, expected, what):
    assert jax.tree.structure(actual) == jax.tree.structure(expected), what
    for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected)):
        np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(e, np.float64),
                                   rtol=1e-5, atol=1e-6, err_msg=what)


CASES = [
    pytest.param("schedule_free_sgd", {}, id="sgd-defaults"),
    pytest.param("schedule_free_sgd", dict(
        learning_rate=0.05, warmup_steps=5, b1=0.8, weight_decay=1e-2, weight_lr_power=1.0,
        state_dtype=jnp.float32), id="sgd-everything"),
    pytest.param("schedule_free_adamw", {}, id="adamw-defaults"),
    pytest.param("schedule_free_adamw", dict(
        learning_rate=1e-2, warmup_steps=4, b1=0.95, b2=0.99, eps=1e-6, weight_decay=1e-2,
        weight_lr_power=3.0), id="adamw-everything"),
]


@pytest.mark.parametrize("name, kwargs", CASES)
def test_alias_matches_optax_field_by_field(name, kwargs):
    params = random_params(0)
    noises = gradient_stream(params, STEPS, seed=1)
    ours = _train(getattr(gx, name)(**kwargs), gx.schedule_free_eval_params, gx.apply_updates,
                  params, noises)
    with jax.numpy_dtype_promotion("standard"), jax.debug_nans(False):
        theirs = _train(getattr(optax.contrib, name)(**kwargs),
                        optax.contrib.schedule_free_eval_params, optax.apply_updates, params, noises)
    for step, ((updates, new_params, evaluated, state), (r_updates, r_params, r_eval, r_state)) in (
            enumerate(zip(ours, theirs))):
        _close(updates, r_updates, f"updates at step {step}")
        _close(new_params, r_params, f"params at step {step}")
        _close(evaluated, r_eval, f"eval params at step {step}")
        assert state._fields == r_state._fields
        for field in ("b1", "weight_sum", "max_lr", "z"):
            _close(getattr(state, field), getattr(r_state, field), f"{field} at step {step}")
        assert int(state.step_count) == int(r_state.step_count)
        if name == "schedule_free_adamw":
            _close(state.base_optimizer_state[0].nu, r_state.base_optimizer_state[0].nu,
                   f"nu at step {step}")
            assert int(state.base_optimizer_state[0].count) == step + 1


def test_bfloat16_params_with_a_float32_z():
    compare_with_optax(
        gx.schedule_free_adamw(1e-2, warmup_steps=3, weight_decay=1e-2, state_dtype=jnp.float32),
        optax.contrib.schedule_free_adamw(1e-2, warmup_steps=3, weight_decay=1e-2),
        dtype=jnp.bfloat16, steps=30,
    )


@pytest.mark.parametrize("name, kwargs", [
    ("schedule_free_sgd", dict(learning_rate=0.1, b1=0.8, weight_decay=1e-3)),
    ("schedule_free_adamw", dict(learning_rate=1e-2, warmup_steps=3, b2=0.99, weight_decay=1e-3)),
])
def test_inject_hyperparams_gives_the_plain_updates_bitwise(name, kwargs):
    params = random_params(0)
    grads = gradient_stream(params, 25, seed=2)
    plain, injected = getattr(gx, name)(**kwargs), gx.inject_hyperparams(getattr(gx, name))(**kwargs)
    steps = (jax.jit(plain.update, compiler_options=FAST_COMPILE),
             jax.jit(injected.update, compiler_options=FAST_COMPILE))
    states = plain.init(params), injected.init(params)
    assert "weight_lr_power" in states[1].hyperparams
    for g in grads:
        (u1, s1), (u2, s2) = steps[0](g, states[0], params), steps[1](g, states[1], params)
        assert_trees_bitwise_equal(u2, u1)
        assert_trees_bitwise_equal(s2.inner_state, s1)
        states, params = (s1, s2), gx.apply_updates(params, u1)
    # The evaluation params are found inside the injected state.
    assert_trees_bitwise_equal(gx.schedule_free_eval_params(states[1], params),
                               gx.schedule_free_eval_params(states[0], params))


def test_warmup_is_optax_warmup_constant_schedule():
    ours = gx.schedules.warmup_constant_schedule(0.0, 0.3, 7)
    theirs = optax.warmup_constant_schedule(0.0, 0.3, 7)
    counts = jnp.arange(12, dtype=jnp.int32)
    with jax.numpy_dtype_promotion("standard"):
        expected = jax.jit(jax.vmap(theirs))(counts)
    np.testing.assert_allclose(jax.jit(jax.vmap(ours))(counts), expected, rtol=1e-7)
    inner = gx.schedule_free_sgd(0.3, warmup_steps=7).inner  # the schedule_free it builds
    assert inner.hyperparams["learning_rate"] == ours
    assert repr(inner.hyperparams["base_optimizer"]).startswith(
        "sgd(learning_rate=warmup_constant_schedule(")


def test_adamw_alias_is_schedule_free_around_adamw_without_momentum():
    """optax's test_schedule_free_adamw: the alias and the wrapper around adamw(b1=0)."""
    params = {"w": jnp.array([1.0, 2.0])}

    def run(tx):
        p, state = params, tx.init(params)
        update = jax.jit(tx.update, compiler_options=FAST_COMPILE)
        for _ in range(5):
            updates, state = update(jax.tree.map(lambda x: 2 * x, p), state, p)
            p = gx.apply_updates(p, updates)
        return p

    alias = run(gx.schedule_free_adamw(learning_rate=1.0, b1=0.9, weight_decay=1e-4))
    wrapped = run(gx.schedule_free(gx.adamw(1.0, b1=0.0, weight_decay=1e-4), 1.0, b1=0.9))
    np.testing.assert_allclose(alias["w"], wrapped["w"], rtol=1e-6, atol=1e-6)


def test_errors_name_the_alias_and_its_argument():
    with pytest.raises(TypeError, match="schedule_free_sgd: with warmup_steps, learning_rate must"):
        gx.schedule_free_sgd(gx.schedules.constant_schedule(0.1), warmup_steps=3)
    with pytest.raises(ValueError, match=r"schedule_free_adamw: b2 must be in \[0, 1\), got 1.0"):
        gx.schedule_free_adamw(b2=1.0)
    with pytest.raises(ValueError, match=r"schedule_free_sgd: b1 must be in \(0, 1\], got 0.0"):
        gx.schedule_free_sgd(b1=0.0)
    # A schedule is accepted without warmup, and used by both the base optimizer and the weights.
    schedule = gx.schedules.constant_schedule(0.1)
    tx = gx.schedule_free_sgd(schedule)
    assert tx.inner.hyperparams["learning_rate"] is schedule
