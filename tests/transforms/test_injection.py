"""inject_hyperparams: bit-for-bit the plain optimizer, hyperparameters readable and settable.

optax's version is not bitwise equal to the plain optimizer (optax#583, #1532)
and stores hyperparameters in the params' dtype (optax#1414); these tests hold
ours to both.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradxform as gx
from tests.helpers import (
    assert_trees_bitwise_equal,
    gradient_stream,
    jit_counting_traces,
    random_params,
)

STEPS = 100
WARMUP_COSINE = gx.schedules.warmup_cosine_decay_schedule(0.0, 1e-2, 10, STEPS, 1e-4)
KERAS_DECAY = gx.schedules.ExponentialDecay(0.05, 10, 0.9)

# (factory, arguments): every optimizer, each hyperparameter kind (constant,
# schedule, decay rates whose complement 1 - b matters), wrappers and presets.
CASES = {
    "adam": (gx.adam, dict(learning_rate=1e-3)),
    "adam_scheduled": (gx.adam, dict(learning_rate=WARMUP_COSINE, b1=0.85, b2=0.995)),
    "nadam": (gx.adam, dict(learning_rate=3e-3, b1=0.93, nesterov=True)),
    "amsgrad": (gx.adam, dict(learning_rate=1e-3, amsgrad=True)),
    "adamw": (gx.adamw, dict(learning_rate=WARMUP_COSINE, weight_decay=1e-2)),
    "adagrad": (gx.adagrad, dict(learning_rate=0.1, initial_accumulator_value=0.3)),
    "sgd_nesterov": (gx.sgd, dict(learning_rate=0.05, momentum=0.9, nesterov=True)),
    "rmsprop": (
        gx.rmsprop,
        dict(learning_rate=0.01, decay=0.95, centered=True, momentum=0.9, bias_correction=True),
    ),
    "clipped_chain": (
        lambda max_norm=0.7, decay=0.999, learning_rate=0.01: gx.chain(
            gx.clip_by_global_norm(max_norm), gx.ema(decay, debias=True),
            gx.scale_by_learning_rate(learning_rate),
        ),
        {},
    ),
    "accumulated": (
        lambda learning_rate=1e-3, b2=0.99: gx.accumulate_gradients(
            gx.adam(learning_rate, b2=b2), every_k=3
        ),
        {},
    ),
    "keras_adam": (
        gx.keras.adam,
        dict(learning_rate=1e-3, weight_decay=0.004, clipnorm=0.5, use_ema=True,
             ema_overwrite_frequency=5, exclude_from_weight_decay=["bias"]),
    ),
    "keras_adam_accumulated": (
        gx.keras.adam,
        dict(learning_rate=KERAS_DECAY, amsgrad=True, gradient_accumulation_steps=3,
             use_ema=True, loss_scale_factor=8.0),
    ),
    "keras_adagrad": (gx.keras.adagrad, dict(learning_rate=KERAS_DECAY, global_clipnorm=1.0)),
}
LOW_PRECISION_CASES = ["adam_scheduled", "nadam", "rmsprop", "keras_adam"]


def _trajectory(tx, params, grads_seq):
    """Updates, params and states after each of the jitted training steps."""
    update = jax.jit(tx.update)
    state = tx.init(params)
    history = []
    for grads in grads_seq:
        updates, state = update(grads, state, params)
        params = gx.apply_updates(params, updates)
        history.append((updates, params, state))
    return history


@pytest.mark.parametrize(
    "name,dtype",
    [(name, jnp.float32) for name in CASES]
    + [(name, jnp.bfloat16) for name in LOW_PRECISION_CASES],
)
def test_bitwise_equal_to_the_plain_optimizer_over_100_steps(name, dtype):
    factory, arguments = CASES[name]
    params = random_params(0, dtype)
    grads_seq = gradient_stream(params, STEPS, seed=3)
    plain = _trajectory(factory(**arguments), params, grads_seq)
    injected = _trajectory(gx.inject_hyperparams(factory)(**arguments), params, grads_seq)
    for step, ((u, p, s), (u_i, p_i, s_i)) in enumerate(zip(plain, injected)):
        context = f"{name}, {dtype.__name__}, step {step}"
        assert_trees_bitwise_equal(u_i, u, context)
        assert_trees_bitwise_equal(p_i, p, context)
        assert_trees_bitwise_equal(s_i.inner_state, s, context)


@pytest.mark.parametrize("name", ["adam", "sgd_nesterov", "keras_adagrad"])
def test_a_step_that_fuses_apply_updates_differs_at_most_in_the_last_bits(name):
    """Documented limit: XLA may fuse the plain optimizer's last multiply with the
    parameter add (an FMA), which it cannot do across inject's lax.cond. From the
    same params and state, one fused step of each agrees to a few ulps."""
    factory, arguments = CASES[name]
    params = random_params()

    def fused(tx):
        def step(grads, state, params):
            updates, state = tx.update(grads, state, params)
            return gx.apply_updates(params, updates), state

        return jax.jit(step)

    injected = gx.inject_hyperparams(factory)(**arguments)
    injected_step, plain_step = fused(injected), fused(factory(**arguments))
    state = injected.init(params)
    for grads in gradient_stream(params, STEPS, seed=3):
        expected, _ = plain_step(grads, state.inner_state, params)
        params, state = injected_step(grads, state, params)
        chex.assert_trees_all_close(params, expected, rtol=3e-7, atol=2e-8)


def test_hyperparameters_stay_float32_with_bfloat16_params():
    params = random_params(0, jnp.bfloat16)
    tx = gx.inject_hyperparams(gx.adam)(learning_rate=1e-3, b2=0.999)
    state = tx.init(params)
    for name, value in state.hyperparams.items():
        assert value.dtype == jnp.float32, name
    assert float(state.hyperparams["b2"]) == float(np.float32(0.999)) != 1.0
    # optax's inject_hyperparams rounds b2 to the params' dtype, where it is 1.0.
    with jax.numpy_dtype_promotion("standard"):
        optax_state = optax.inject_hyperparams(optax.adam)(learning_rate=1e-3, b2=0.999).init(
            params
        )
    assert float(optax_state.hyperparams["b2"]) == 1.0


def test_state_lists_every_float_argument_and_evaluates_schedules():
    tx = gx.inject_hyperparams(gx.adamw)(learning_rate=WARMUP_COSINE, mask=lambda p: p)
    state = tx.init(random_params())
    assert sorted(state.hyperparams) == ["b1", "b2", "eps", "eps_root", "learning_rate",
                                         "weight_decay"]
    assert isinstance(state, gx.InjectHyperparamsState)


def test_scheduled_values_follow_the_schedule_as_optax_logs_them():
    params = random_params()
    grads_seq = gradient_stream(params, 30)
    ours = gx.inject_hyperparams(gx.adam)(learning_rate=WARMUP_COSINE)
    theirs = optax.inject_hyperparams(optax.adam)(
        learning_rate=optax.warmup_cosine_decay_schedule(0.0, 1e-2, 10, STEPS, 1e-4)
    )
    state, optax_state = ours.init(params), None
    with jax.numpy_dtype_promotion("standard"):
        optax_state = theirs.init(params)
    update, schedule = jax.jit(ours.update), jax.jit(WARMUP_COSINE)
    for step, grads in enumerate(grads_seq):
        np.testing.assert_allclose(
            state.hyperparams["learning_rate"], optax_state.hyperparams["learning_rate"],
            rtol=1e-6, err_msg=f"step {step}",
        )
        assert float(gx.tree_get(state, "learning_rate")) == float(
            state.hyperparams["learning_rate"]
        )
        _, state = update(grads, state, params)
        with jax.numpy_dtype_promotion("standard"):
            _, optax_state = theirs.update(grads, optax_state, params)
        assert float(state.hyperparams["learning_rate"]) == float(schedule(jnp.int32(step)))


def test_changing_a_value_takes_effect_without_recompiling():
    """Given values: bitwise the plain optimizer. Changed values: the plain optimizer
    built with them, to float tolerance (they are runtime values now, which XLA
    cannot fold as it folds the plain optimizer's constants). Restored: bitwise again."""
    params = random_params()
    grads_seq = gradient_stream(params, 15, zero_every=0)
    tx = gx.inject_hyperparams(gx.adam)(learning_rate=1e-3)
    update, traces = jit_counting_traces(tx.update)
    state = tx.init(params)
    for step, grads in enumerate(grads_seq):
        changed = 5 <= step < 10
        if step == 5:
            state = gx.tree_set(state, learning_rate=5e-4, b2=0.99)
        if step == 10:
            state = gx.tree_set(state, learning_rate=1e-3, b2=0.999)
        plain = gx.adam(np.float32(5e-4), b2=np.float32(0.99)) if changed else gx.adam(1e-3)
        expected, _ = jax.jit(plain.update)(grads, state.inner_state, params)
        updates, state = update(grads, state, params)
        if changed:
            chex.assert_trees_all_close(updates, expected, rtol=1e-5, atol=1e-10)
            assert float(state.hyperparams["b2"]) == float(np.float32(0.99))
        else:
            assert_trees_bitwise_equal(updates, expected, f"step {step}")
    assert len(traces) == 1


def test_a_python_float_set_in_the_state_is_accepted():
    params = random_params()
    tx = gx.inject_hyperparams(gx.sgd)(learning_rate=0.1)
    state = tx.init(params)
    state.hyperparams["learning_rate"] = 0.0
    grads = jax.tree.map(jnp.ones_like, params)
    updates, state = jax.jit(tx.update)(grads, state, params)
    assert all(not np.any(np.asarray(u)) for u in jax.tree.leaves(updates))
    assert state.hyperparams["learning_rate"].dtype == jnp.float32


def test_static_args_ints_and_masks_are_not_injected():
    tx = gx.inject_hyperparams(gx.adamw, static_args="b1")(
        learning_rate=1e-3, mask=gx.schedules.constant_schedule(1.0)
    )
    state = tx.init(random_params())
    assert "b1" not in state.hyperparams and "mask" not in state.hyperparams
    accumulated = gx.inject_hyperparams(gx.keras.adam)(gradient_accumulation_steps=2)
    assert "gradient_accumulation_steps" not in accumulated.init(random_params()).hyperparams


def test_init_under_eval_shape_and_state_dtypes_are_stable():
    params = random_params()
    tx = gx.inject_hyperparams(gx.adam)(learning_rate=WARMUP_COSINE)
    shapes = jax.eval_shape(tx.init, params)
    state = tx.init(params)
    assert jax.tree.structure(shapes) == jax.tree.structure(state)
    _, new_state = jax.jit(tx.update)(params, state, params)
    for before, after in zip(jax.tree.leaves(state), jax.tree.leaves(new_state)):
        assert before.dtype == after.dtype and before.shape == after.shape


def test_describes_itself_and_the_optimizer_it_builds():
    tx = gx.inject_hyperparams(gx.adam)(learning_rate=1e-3)
    assert tx.name == "inject_hyperparams"
    assert tx.hyperparams["inner_factory"] is gx.adam
    assert tx.hyperparams["arguments"]["learning_rate"] == 1e-3
    assert repr(tx.inner) == repr(gx.adam(1e-3))
    assert repr(tx) == (
        "inject_hyperparams(adam)(learning_rate=0.001, b1=0.9, b2=0.999, eps=1e-08, "
        "eps_root=0.0, mu_dtype=None, nesterov=False, amsgrad=False)"
    )
    keras = gx.inject_hyperparams(gx.keras.adagrad, static_args="epsilon")(0.1)
    assert repr(keras).startswith("inject_hyperparams(keras.adagrad, static_args=('epsilon',))(")


@pytest.mark.parametrize(
    "call,error,match",
    [
        (lambda: gx.inject_hyperparams(3), TypeError, "inner_factory must be callable, got 3"),
        (lambda: gx.inject_hyperparams(gx.adam, static_args=("beta",)), ValueError,
         r"static_args=\('beta',\) names \['beta'\], which are not arguments of adam"),
        (lambda: gx.inject_hyperparams(gx.adam, static_args=(1,)), TypeError, "static_args"),
        (lambda: gx.inject_hyperparams(gx.adam, hyperparam_dtype=jnp.int32), ValueError,
         "hyperparam_dtype"),
        (lambda: gx.inject_hyperparams(gx.adam)(learning_rate=1e-3, b1=1.5), ValueError,
         r"b1 must be in \[0, 1\), got 1.5"),
        (lambda: gx.inject_hyperparams(gx.adam)(rate=1e-3), TypeError, "rate"),
    ],
)
def test_bad_arguments_fail_at_construction(call, error, match):
    with pytest.raises(error, match=match):
        call()
