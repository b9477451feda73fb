"""Properties every public transform and optimizer must have (DESIGN.md, "Numerics and testing").

For each of them, on nested trees with ``None`` leaves, 0-d and zero-size arrays:

* ``jax.jit(tx.update)`` traces once: no recompilation on the second and third call;
* the jitted and the eager update agree, and updates are finite for finite gradients;
* updates have the gradients' dtype (float32, bfloat16, float16);
* the state's structure and dtypes after ``update`` are those of ``init``, also when
  ``update`` runs in one branch of ``lax.cond`` and the other returns the old state;
* ``jax.eval_shape(tx.init, params)`` works (also on abstract params) and matches the
  real ``init``.

Compilation is the cost here, so float32 is jitted and the low-precision checks run
eagerly or abstractly (``eval_shape`` traces without compiling).
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradxform as gx
from tests.helpers import gradient_stream, is_none, jit_counting_traces, random_params


def _decaying(count):
    return 0.1 / (1.0 + count.astype(jnp.float32))


def _matrices_only(params):
    return jax.tree.map(lambda p: p.ndim >= 2, params)


# A prefix of tests.helpers.nested_shapes(): whole subtrees decay or not.
_PREFIX_MASK = {
    "dense": True,
    "blocks": False,
    "pair": (True, {"inner": True, "empty": False}),
    "scalar": False,
}

FACTORIES = {
    "scale": lambda: gx.scale(-0.5),
    "scale_by_learning_rate": lambda: gx.scale_by_learning_rate(0.1),
    "scale_by_learning_rate_schedule": lambda: gx.scale_by_learning_rate(_decaying),
    "scale_by_schedule": lambda: gx.scale_by_schedule(_decaying),
    "scale_by_adagrad": lambda: gx.scale_by_adagrad(),
    "scale_by_adam": lambda: gx.scale_by_adam(),
    "scale_by_adam_nesterov": lambda: gx.scale_by_adam(nesterov=True),
    "scale_by_amsgrad": lambda: gx.scale_by_amsgrad(),
    "scale_by_rms": lambda: gx.scale_by_rms(),
    "scale_by_rms_debiased": lambda: gx.scale_by_rms(bias_correction=True, eps_in_sqrt=False),
    "scale_by_stddev": lambda: gx.scale_by_stddev(),
    "trace": lambda: gx.trace(0.9),
    "trace_nesterov": lambda: gx.trace(0.9, nesterov=True),
    "ema": lambda: gx.ema(0.9),
    "ema_biased": lambda: gx.ema(0.9, debias=False),
    "clip": lambda: gx.clip(0.5),
    "clip_by_norm": lambda: gx.clip_by_norm(1.0),
    "clip_by_global_norm": lambda: gx.clip_by_global_norm(1.0),
    "add_decayed_weights": lambda: gx.add_decayed_weights(1e-2),
    "add_decayed_weights_mask": lambda: gx.add_decayed_weights(_decaying, mask=_matrices_only),
    "add_decayed_weights_prefix_mask": lambda: gx.add_decayed_weights(1e-2, mask=_PREFIX_MASK),
    "identity": lambda: gx.identity(),
    "chain": lambda: gx.chain(
        gx.clip_by_global_norm(1.0), gx.scale_by_adam(), gx.scale_by_learning_rate(1e-2)
    ),
    "named_chain": lambda: gx.named_chain(
        ("clip", gx.clip(1.0)), ("momentum", gx.trace(0.9)), ("lr", gx.scale(-0.1))
    ),
    "sgd": lambda: gx.sgd(0.1),
    "sgd_momentum": lambda: gx.sgd(0.1, momentum=0.9, nesterov=True),
    "adagrad": lambda: gx.adagrad(0.1),
    "adam": lambda: gx.adam(1e-3),
    "adam_schedule": lambda: gx.adam(_decaying),
    "adam_amsgrad": lambda: gx.adam(1e-3, amsgrad=True),
    "adamw": lambda: gx.adamw(1e-3, weight_decay=1e-2, mask=_PREFIX_MASK),
    "rmsprop": lambda: gx.rmsprop(1e-3),
    "rmsprop_centered_momentum": lambda: gx.rmsprop(1e-3, centered=True, momentum=0.9),
    "scale_by_adam_eps_hat": lambda: gx.scale_by_adam(eps_hat=True),
    "scale_by_amsgrad_eps_hat": lambda: gx.scale_by_amsgrad(eps_hat=True),
    "add_decayed_weights_exclude": lambda: gx.add_decayed_weights(1e-2, exclude=["bias", "^pair"]),
    "decoupled_weight_decay": lambda: gx.decoupled_weight_decay(
        1e-2, _decaying, mask=_matrices_only, exclude="(^|/)kernel$"
    ),
    "params_ema": lambda: gx.params_ema(0.9),
    "params_ema_overwrite": lambda: gx.params_ema(0.9, overwrite_frequency=2, calls_per_step=2),
    "accumulate_gradients": lambda: gx.accumulate_gradients(gx.adam(1e-3), every_k=2),
    "multi_steps": lambda: gx.multi_steps(gx.adam(1e-3), every_k_schedule=2),
    "multi_steps_skip": lambda: gx.multi_steps(
        gx.sgd(0.1), lambda step: 2 + step % 2, should_skip_update_fn=gx.skip_not_finite
    ),
    "static_loss_scale": lambda: gx.static_loss_scale(128.0),
    "dynamic_loss_scale": lambda: gx.dynamic_loss_scale(gx.adam(1e-3), 2.0**4, 2),
    "masked_patterns": lambda: gx.masked(gx.adam(1e-3), mask=["kernel", "^pair"]),
    "masked_nested": lambda: gx.masked(gx.masked(gx.trace(0.9), _PREFIX_MASK), _matrices_only),
    "freeze": lambda: gx.chain(gx.adam(1e-3), gx.freeze(["bias"])),
    "set_to_zero": lambda: gx.set_to_zero(),
    "partition": lambda: gx.partition(
        {"adam": gx.adam(1e-3), "sgd": gx.sgd(0.1, momentum=0.9)},
        lambda p: jax.tree.map(lambda x: "adam" if x.ndim >= 2 else "sgd", p),
    ),
    "partition_by_patterns": lambda: gx.partition_by_patterns(
        [("bias|scalar", gx.sgd(0.1)), ("blocks", gx.adagrad(0.1))], default=gx.adam(1e-3)
    ),
    "apply_if_finite": lambda: gx.apply_if_finite(gx.adam(1e-3), max_consecutive_errors=2),
    "inject_adam_scheduled": lambda: gx.inject_hyperparams(gx.adam)(
        learning_rate=gx.schedules.warmup_cosine_decay_schedule(0.0, 1e-2, 3, 20), b2=0.99
    ),
    "inject_keras_adam": lambda: gx.inject_hyperparams(gx.keras.adam)(
        1e-3, weight_decay=0.01, clipnorm=1.0, use_ema=True, gradient_accumulation_steps=2
    ),
    "record_global_norm": lambda: gx.chain(
        gx.record_global_norm(), gx.clip_by_global_norm(1.0), gx.sgd(0.1)
    ),
    "keras_adam_everything": lambda: gx.keras.adam(
        gx.keras.CosineDecay(1e-3, 10, warmup_target=1e-2, warmup_steps=2),
        amsgrad=True, weight_decay=0.01, clipnorm=1.0, use_ema=True, ema_overwrite_frequency=2,
        loss_scale_factor=8.0, gradient_accumulation_steps=2, exclude_from_weight_decay=["bias"],
    ),
    "keras_adagrad_everything": lambda: gx.keras.loss_scale_optimizer(
        gx.keras.adagrad(0.1, weight_decay=0.01, global_clipnorm=1.0, use_ema=True,
                         gradient_accumulation_steps=3),
        initial_scale=2.0**4, dynamic_growth_steps=2,
    ),
}
NAMES = sorted(FACTORIES)
LOW_PRECISION = [jnp.bfloat16, jnp.float16]
ALL_DTYPES = [jnp.float32, *LOW_PRECISION]


def _dtype_id(dtype):
    return jnp.dtype(dtype).name


def _setup(dtype, steps):
    params = random_params(0, dtype)
    # Every third step is all zeros: the zero-gradient paths must stay finite too.
    grads_seq = gradient_stream(params, steps, seed=1, zero_every=3)
    return params, grads_seq


def _assert_update_dtypes(updates, grads):
    assert jax.tree.structure(updates, is_leaf=is_none) == jax.tree.structure(grads, is_leaf=is_none)
    for u, g in zip(jax.tree.leaves(updates), jax.tree.leaves(grads)):
        assert u.dtype == g.dtype, (u.dtype, g.dtype)
        assert u.shape == g.shape


def _assert_finite(tree):
    for leaf in jax.tree.leaves(tree):
        assert np.all(np.isfinite(np.asarray(leaf, np.float32))), leaf


def _assert_same_state_layout(state, reference):
    chex.assert_trees_all_equal_structs(state, reference)
    chex.assert_trees_all_equal_shapes_and_dtypes(state, reference)


@pytest.mark.parametrize("name", NAMES)
def test_jit_traces_once_and_agrees_with_eager(name):
    tx = FACTORIES[name]()
    params, grads_seq = _setup(jnp.float32, steps=3)
    jitted, traces = jit_counting_traces(tx.update)
    init_state = tx.init(params)
    jit_state = eager_state = init_state
    for step, grads in enumerate(grads_seq):
        jit_updates, jit_state = jitted(grads, jit_state, params)
        assert len(traces) == 1, f"retraced at call {step + 1}"
        eager_updates, eager_state = tx.update(grads, eager_state, params)

        _assert_update_dtypes(jit_updates, grads)
        _assert_update_dtypes(eager_updates, grads)
        _assert_finite(jit_updates)
        _assert_same_state_layout(jit_state, init_state)
        _assert_same_state_layout(eager_state, init_state)
        chex.assert_trees_all_close(jit_updates, eager_updates, rtol=1e-5, atol=1e-6)
        chex.assert_trees_all_close(jit_state, eager_state, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", LOW_PRECISION, ids=_dtype_id)
@pytest.mark.parametrize("name", NAMES)
def test_low_precision_updates_keep_dtype_and_stay_finite(name, dtype):
    tx = FACTORIES[name]()
    params, grads_seq = _setup(dtype, steps=2)
    init_state = tx.init(params)
    state = init_state
    for grads in grads_seq:
        updates, state = tx.update(grads, state, params)
        _assert_update_dtypes(updates, grads)
        _assert_finite(updates)
        _assert_same_state_layout(state, init_state)


@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=_dtype_id)
@pytest.mark.parametrize("name", NAMES)
def test_state_layout_is_stable_under_lax_cond(name, dtype):
    tx = FACTORIES[name]()
    params, grads_seq = _setup(dtype, steps=1)
    grads = grads_seq[0]
    state = tx.init(params)

    def maybe_update(pred, grads, state, params):
        return jax.lax.cond(
            pred, lambda: tx.update(grads, state, params), lambda: (grads, state)
        )

    # Tracing both branches is what fails when their state dtypes or structures differ.
    updates_shape, state_shape = jax.eval_shape(maybe_update, True, grads, state, params)
    _assert_update_dtypes(updates_shape, grads)
    _assert_same_state_layout(state_shape, state)


@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=_dtype_id)
@pytest.mark.parametrize("name", NAMES)
def test_eval_shape_of_init_matches_init(name, dtype):
    tx = FACTORIES[name]()
    params = random_params(0, dtype)
    state = tx.init(params)
    _assert_same_state_layout(jax.eval_shape(tx.init, params), state)
    # As a restore target (orbax): abstract params, no arrays at all.
    abstract_params = jax.tree.map(lambda p: jax.ShapeDtypeStruct(p.shape, p.dtype), params)
    _assert_same_state_layout(jax.eval_shape(tx.init, abstract_params), state)
    # The state holds arrays only, never Python scalars (they would make jit retrace).
    for leaf in jax.tree.leaves(state):
        assert isinstance(leaf, jax.Array), type(leaf)
        assert not leaf.weak_type


@pytest.mark.parametrize("name", ["adam", "rmsprop_centered_momentum", "adamw", "scale_by_schedule"])
def test_lax_cond_runs_both_branches(name):
    tx = FACTORIES[name]()
    params, grads_seq = _setup(jnp.float32, steps=2)
    state = tx.init(params)
    expected_updates, expected_state = tx.update(grads_seq[0], state, params)

    @jax.jit
    def maybe_update(pred, grads, state):
        return jax.lax.cond(
            pred, lambda: tx.update(grads, state, params), lambda: (grads, state)
        )

    updates, new_state = maybe_update(True, grads_seq[0], state)
    chex.assert_trees_all_close(updates, expected_updates, rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_close(new_state, expected_state, rtol=1e-5, atol=1e-6)
    skipped_updates, kept_state = maybe_update(False, grads_seq[0], state)
    chex.assert_trees_all_equal(skipped_updates, grads_seq[0])
    chex.assert_trees_all_equal(kept_state, state)


def test_count_saturates_instead_of_wrapping():
    tx = gx.scale_by_adam()
    params = {"w": jnp.ones(2)}
    state = tx.init(params)._replace(count=jnp.array(np.iinfo(np.int32).max, jnp.int32))
    updates, new_state = jax.jit(tx.update)({"w": jnp.array([0.5, -0.5])}, state)
    assert new_state.count.dtype == jnp.int32
    assert int(new_state.count) == np.iinfo(np.int32).max
    # With a huge count the bias corrections are 1, so the update is m / (sqrt(v) + eps)
    # computed from the (zero) moments plus this gradient.
    g = np.array([0.5, -0.5])
    m, v = 0.1 * g, 0.001 * g**2
    np.testing.assert_allclose(updates["w"], m / (np.sqrt(v) + 1e-8), rtol=1e-5)
