"""``gx.keras.adafactor`` and ``gx.keras.schedule_free_adamw`` against live Keras 3.

Both run the harness's 24-call gradient stream through Keras's jitted
``stateless_apply`` and through the preset, compared after every call at rtol
1e-5 (their own arguments, then the shared ones cycled over them). Keras's own
tests for the two optimizers are ported below: their expected values are
Keras's.
"""

from __future__ import annotations

import os

import jax.numpy as jnp
import numpy as np
import pytest

import gradxform as gx
from tests.keras.harness import SHARED, check_parity

os.environ.setdefault("KERAS_BACKEND", "jax")
import keras  # noqa: E402

_OWN = {
    "adafactor": [dict(learning_rate=0.5),
                  dict(learning_rate=0.05, beta_2_decay=-0.5, epsilon_1=1e-10, epsilon_2=1e-2,
                       clip_threshold=0.5),
                  dict(learning_rate=0.05, relative_step=False),
                  dict(learning_rate=0.05, beta_2_decay=0.0, clip_threshold=3.0),
                  dict(learning_rate=2.0, epsilon_2=0.0)],
    "schedule_free_adamw": [dict(learning_rate=0.05),
                            dict(learning_rate=0.05, warmup_steps=5, beta_1=0.5, beta_2=0.9),
                            dict(learning_rate=0.05, epsilon=1e-3, beta_1=1.0),
                            dict(learning_rate=0.05, warmup_steps=30, beta_2=0.5),
                            dict(learning_rate=0.05, warmup_steps=1)],
}


def _configs():
    for optimizer, own in sorted(_OWN.items()):
        for i, kwargs in enumerate(own):
            shared = {} if i == 0 else SHARED[(i - 1) % len(SHARED)]
            yield pytest.param(optimizer, {**kwargs, **shared}, id=f"{optimizer}-{i}")


@pytest.mark.parametrize("optimizer, kwargs", list(_configs()))
def test_preset_matches_keras(optimizer, kwargs):
    check_parity(optimizer, kwargs)


def _keras_apply(optimizer, values, grads):
    """Keras's eager ``apply_gradients`` over ``grads``, from ``values``."""
    variables = [keras.Variable(np.asarray(v, np.float32)) for v in values]
    for step in grads:
        optimizer.apply_gradients(zip([jnp.asarray(g, jnp.float32) for g in step], variables))
    return [np.asarray(v.value) for v in variables]


def _gx_apply(tx, values, grads):
    params = [jnp.asarray(v, jnp.float32) for v in values]
    state = tx.init(params)
    for step in grads:
        updates, state = tx.update([jnp.asarray(g, jnp.float32) for g in step], state, params)
        params = gx.apply_updates(params, updates)
    return [np.asarray(p) for p in params]


def test_adafactor_factors_the_last_two_axes_as_keras_does():
    """A (6, 2, 3) leaf: Keras factors axes 1 and 2, optax's rule the two largest (0 and 2)."""
    rng = np.random.default_rng(0)
    values = [rng.standard_normal((6, 2, 3))]
    grads = [[rng.standard_normal((6, 2, 3))] for _ in range(6)]
    ref = _keras_apply(keras.optimizers.Adafactor(learning_rate=0.1), values, grads)
    ours = _gx_apply(gx.keras.adafactor(learning_rate=0.1), values, grads)
    np.testing.assert_allclose(ours[0], ref[0], rtol=1e-5, atol=1e-6)
    largest = gx.chain(gx.scale_by_factored_rms(min_dim_size_to_factor=1, epsilon=1e-30),
                       gx.clip_by_block_rms(1.0), gx.scale_by_param_block_rms(1e-3),
                       gx.scale_by_learning_rate(gx.schedules.relative_step_size(0.1)))
    assert not np.allclose(_gx_apply(largest, values, grads)[0], ref[0], rtol=1e-3)


# Ports of keras/src/optimizers/adafactor_test.py and schedule_free_adamw_test.py.


def _single_step(tx, params, grads):
    return gx.apply_updates(params, tx.update(grads, tx.init(params), params)[0])


def test_keras_adafactor_single_step_1d():
    out = _single_step(gx.keras.adafactor(learning_rate=0.5), jnp.array([1.0, 2.0, 3.0, 4.0]),
                       jnp.array([1.0, 6.0, 7.0, 2.0]))
    np.testing.assert_allclose(out, [-0.3693, 0.6307, 1.6307, 2.6307], rtol=1e-4, atol=1e-4)


def test_keras_adafactor_single_step_2d():
    out = _single_step(gx.keras.adafactor(learning_rate=0.5), jnp.array([[1.0, 2.0], [3.0, 4.0]]),
                       jnp.array([[1.0, 6.0], [7.0, 2.0]]))
    np.testing.assert_allclose(out, [[0.7007, -0.0081], [1.2492, 3.4407]], rtol=1e-4, atol=1e-4)


def test_keras_adafactor_weight_decay_and_its_exclusion():
    """Keras's test decays ``var1`` with three optimizers in turn, and excludes the others."""
    params = {"w": jnp.array(2.0), "exclude": jnp.array(2.0)}
    grads = {"w": jnp.array(0.0), "exclude": jnp.array(0.0)}
    for _ in range(3):
        params = _single_step(gx.keras.adafactor(learning_rate=1.0, weight_decay=0.004,
                                                 exclude_from_weight_decay=["exclude"]),
                              params, grads)
    np.testing.assert_allclose(params["w"], 1.9760959, atol=1e-6)
    np.testing.assert_allclose(params["exclude"], 2.0, atol=1e-6)


def test_keras_schedule_free_weight_decay_exclusion():
    """Keras's test checks only the excluded variable; over two calls (the first returns y to
    z whatever the decay) the decayed one must also move."""
    params = {"w": jnp.array(2.0), "exclude": jnp.array(2.0)}
    grads = {"w": jnp.array(0.5), "exclude": jnp.array(0.5)}

    def two_calls(**kwargs):
        tx = gx.keras.schedule_free_adamw(learning_rate=1.0, **kwargs)
        out, state = params, tx.init(params)
        for _ in range(2):
            updates, state = tx.update(grads, state, out)
            out = gx.apply_updates(out, updates)
        return out

    plain = two_calls()
    decayed = two_calls(weight_decay=0.004, exclude_from_weight_decay=["exclude"])
    np.testing.assert_array_equal(decayed["exclude"], plain["exclude"])
    assert abs(float(decayed["w"]) - float(plain["w"])) > 1e-4


def test_keras_adafactor_correctness_with_golden():
    tx = gx.keras.adafactor(learning_rate=0.5, beta_2_decay=-0.65, epsilon_1=1e-15,
                            epsilon_2=1e-4, clip_threshold=0.9, relative_step=False)
    golden = np.array([
        [0.55] * 10,
        [0.3031, 0.3026, 0.3025, 0.3024, 0.3024, 0.3024, 0.3024, 0.3024, 0.3024, 0.3024],
        [0.1671, 0.1665, 0.1663, 0.1663, 0.1663, 0.1663, 0.1663, 0.1663, 0.1663, 0.1663],
        [0.0923, 0.0916, 0.0915, 0.0914, 0.0914, 0.0914, 0.0914, 0.0914, 0.0914, 0.0914],
        [0.0554, 0.0548, 0.0546, 0.0546, 0.0546, 0.0546, 0.0546, 0.0545, 0.0545, 0.0545]])
    x = jnp.ones(10)
    state = tx.init(x)
    grads = jnp.arange(0.1, 1.1, 0.1)
    updates, state = tx.update(jnp.full(10, 0.01), state, x)
    x = gx.apply_updates(x, updates)
    for row in golden:
        np.testing.assert_allclose(x, row, rtol=5e-4, atol=5e-4)
        updates, state = tx.update(grads, state, x)
        x = gx.apply_updates(x, updates)


def test_keras_schedule_free_warmup_takes_smaller_first_steps():
    params, grads = jnp.array([1.0, 2.0, 3.0]), jnp.ones(3)
    plain = _single_step(gx.keras.schedule_free_adamw(learning_rate=0.5), params, grads)
    warm = _single_step(gx.keras.schedule_free_adamw(learning_rate=0.5, warmup_steps=10),
                        params, grads)
    assert np.all(np.abs(warm - params) < np.abs(plain - params))


def test_keras_schedule_free_multiple_steps_descend():
    tx = gx.keras.schedule_free_adamw(learning_rate=0.01)
    params = jnp.array([1.0, 2.0, 3.0])
    state = tx.init(params)
    for _ in range(10):
        updates, state = tx.update(jnp.full(3, 0.1), state, params)
        params = gx.apply_updates(params, updates)
    assert np.all(np.asarray(params) < [1.0, 2.0, 3.0])


def test_schedule_free_eval_params_reads_the_keras_preset_state():
    """Keras evaluates at y; the averaged x that schedule-free theory evaluates is one call away."""
    tx = gx.keras.schedule_free_adamw(learning_rate=0.1, weight_decay=0.01, use_ema=True)
    params = {"w": jnp.array([1.0, -2.0])}
    state = tx.init(params)
    for _ in range(3):
        updates, state = tx.update({"w": params["w"]}, state, params)
        params = gx.apply_updates(params, updates)
    x = gx.schedule_free_eval_params(state, params)["w"]
    assert x.shape == (2,) and not np.allclose(x, params["w"])


@pytest.mark.parametrize("call, words", [
    (lambda: gx.keras.adafactor(beta_2_decay=0.5), ["keras.adafactor", "beta_2_decay", "0.5"]),
    (lambda: gx.keras.adafactor(epsilon_1=0.0), ["keras.adafactor", "epsilon_1", "0.0"]),
    (lambda: gx.keras.adafactor(clip_threshold=-1.0), ["keras.adafactor", "clip_threshold"]),
    (lambda: gx.keras.schedule_free_adamw(beta_1=0.0),
     ["keras.schedule_free_adamw", "beta_1", "0.0"]),
    (lambda: gx.keras.schedule_free_adamw(warmup_steps=-1),
     ["keras.schedule_free_adamw", "warmup_steps", "-1"]),
])
def test_bad_arguments_raise_naming_the_preset_and_the_argument(call, words):
    with pytest.raises(ValueError) as caught:
        call()
    for word in words:
        assert word in str(caught.value), (word, str(caught.value))
