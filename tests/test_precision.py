"""Arithmetic runs in at least float32 and at least the params' precision; updates keep the
gradients' dtype, whatever numeric type the hyperparameters have.

* With ``jax_enable_x64`` and float64 params, the bias corrections of Adam,
  AMSGrad, RMSProp and ``ema`` are float64: checked against a float64 NumPy
  reference of the published formula (and optax run live), where a float32
  correction of ``1 - 0.999999**t`` is 0.7% off.
* Hyperparameters given as numpy float64 (or float32) scalars never promote
  bfloat16 gradients to float32 updates, and the swept entries of
  ``tests/factories.py`` (``sweep``: every constructor) run under strict dtype
  promotion with them.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradxform as gx
from tests.factories import FACTORIES, sweep

B2 = 0.999999  # 1 - B2 = 1e-6: float32 holds B2 only to about 6e-8, 6% of 1 - B2
STEPS = 20


def _gradients(rng, shape, steps=STEPS):
    return [rng.normal(size=shape) for _ in range(steps)]


def _adam_reference(grads, b1, b2, eps, learning_rate, amsgrad=False):
    """Adam (or AMSGrad over the raw second moment) in float64 NumPy."""
    m = v = v_max = np.zeros_like(grads[0])
    updates = []
    for t, g in enumerate(grads, start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        v_max = np.maximum(v_max, v)
        second = v_max if amsgrad else v
        m_hat, v_hat = m / (1 - b1**t), second / (1 - b2**t)
        updates.append(-learning_rate * m_hat / (np.sqrt(v_hat) + eps))
    return updates


def _run(tx, params, grads):
    state, updates = tx.init(params), []
    step = jax.jit(tx.update)
    for g in grads:
        u, state = step({"w": jnp.asarray(g)}, state, params)
        updates.append(np.asarray(u["w"]))
    return updates


@pytest.mark.parametrize("amsgrad", [False, True])
def test_float64_adam_matches_a_float64_reference(amsgrad):
    rng = np.random.default_rng(0)
    with jax.enable_x64(True):
        grads = _gradients(rng, (16,))
        params = {"w": jnp.zeros(16, jnp.float64)}
        expected = _adam_reference(grads, 0.9, B2, 1e-8, 1e-3, amsgrad)
        for tx in (gx.adam(1e-3, b2=B2, amsgrad=amsgrad),
                   gx.inject_hyperparams(gx.adam)(1e-3, b2=B2, amsgrad=amsgrad)):
            got = _run(tx, params, grads)
            assert all(u.dtype == np.float64 for u in got)
            np.testing.assert_allclose(got, expected, rtol=1e-11)
        if not amsgrad:  # optax's amsgrad takes the max of the debiased moment
            with jax.numpy_dtype_promotion("standard"):
                theirs = _run(optax.adam(1e-3, b2=B2), params, grads)
            np.testing.assert_allclose(theirs, expected, rtol=1e-11)


def test_float64_rmsprop_and_ema_bias_corrections_are_float64():
    rng = np.random.default_rng(1)
    decay = 0.999999
    with jax.enable_x64(True):
        grads = _gradients(rng, (8,))
        params = {"w": jnp.zeros(8, jnp.float64)}
        nu, e = np.zeros(8), np.zeros(8)
        rms_expected, ema_expected = [], []
        for t, g in enumerate(grads, start=1):
            nu = decay * nu + (1 - decay) * g * g
            e = decay * e + (1 - decay) * g
            rms_expected.append(g / np.sqrt(nu / (1 - decay**t) + 1e-8))
            ema_expected.append(e / (1 - decay**t))
        rms = _run(gx.scale_by_rms(decay, eps=1e-8, bias_correction=True), params, grads)
        ema = _run(gx.ema(decay), params, grads)
        np.testing.assert_allclose(rms, rms_expected, rtol=1e-11)
        np.testing.assert_allclose(ema, ema_expected, rtol=1e-11)


def test_injected_hyperparameters_are_stored_in_float64_for_float64_params():
    with jax.enable_x64(True):
        tx = gx.inject_hyperparams(gx.adam)(1e-3, b2=B2)
        state = tx.init({"w": jnp.zeros(2, jnp.float64)})
        assert state.hyperparams["b2"].dtype == jnp.float64
        assert float(state.hyperparams["b2"]) == B2
    state = tx.init({"w": jnp.zeros(2, jnp.bfloat16)})
    assert state.hyperparams["b2"].dtype == jnp.float32


def _with_numpy_floats(tx, kind):
    """``tx`` built again with every float argument, however deep, a numpy scalar of ``kind``."""

    def convert(value):
        if isinstance(value, gx.GradientTransformation):
            return _with_numpy_floats(value, kind)
        if isinstance(value, float):
            return kind(value)
        if isinstance(value, dict):
            return {key: convert(item) for key, item in value.items()}
        if isinstance(value, list):
            return [convert(item) for item in value]
        if isinstance(value, tuple) and not hasattr(value, "_fields"):
            return tuple(convert(item) for item in value)
        return value

    if getattr(tx, "constructor", None) is None:
        return tx
    children = tuple(convert(child) for child in tx.children)
    return tx.constructor(*children, **{k: convert(v) for k, v in tx.hyperparams.items()})


@pytest.mark.parametrize("kind", [np.float64, np.float32])
@pytest.mark.parametrize("name", sweep(FACTORIES))
def test_numpy_scalar_hyperparameters_keep_bfloat16_updates_under_strict_promotion(name, kind):
    tx = _with_numpy_floats(FACTORIES[name](), kind)
    params = {"kernel": jnp.full((2, 3), 0.5, jnp.bfloat16), "bias": jnp.full(3, -0.25, jnp.bfloat16)}
    grads = jax.tree.map(lambda p: jnp.full_like(p, 0.75), params)
    state = tx.init(params)
    step = jax.jit(tx.update)
    for _ in range(3):
        updates, state = step(grads, state, params)
        for leaf in jax.tree.leaves(updates):
            assert leaf.dtype == jnp.bfloat16, (name, leaf.dtype)


def test_clip_with_a_numpy_float64_bound_is_the_plain_clip():
    # The case that used to fail: np.float64(0.5) promoted bfloat16 gradients to float32.
    grads = {"w": jnp.array([-2.0, 0.25, 3.0], jnp.bfloat16)}
    tx = gx.clip(np.float64(0.5))
    updates, _ = tx.update(grads, tx.init(grads))
    assert updates["w"].dtype == jnp.bfloat16
    np.testing.assert_array_equal(
        np.asarray(updates["w"], np.float32), np.clip(np.asarray(grads["w"], np.float32), -0.5, 0.5))
