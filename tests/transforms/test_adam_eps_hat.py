"""``eps_hat=True`` on scale_by_adam and scale_by_amsgrad: Keras's (and TensorFlow's) Adam.

The reference is Keras's update rule written here in NumPy float32::

    alpha = lr * sqrt(1 - b2**t) / (1 - b1**t)
    m += (g - m) * (1 - b1)
    v += (g * g - v) * (1 - b2)
    v_hat = max(v_hat, v)                 # amsgrad only, then v = v_hat
    x -= m * alpha / (sqrt(v) + eps)

and, as mathematics, ``eps_hat=True`` with ``eps`` is the ordinary form with
``eps / sqrt(1 - b2**t)`` at step ``t``: checked step by step from the same state.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradxform as gx
from tests.helpers import assert_trees_close, cast_tree, gradient_stream, random_params

STEPS = 20


def keras_adam_reference(params, grads_seq, lr, b1, b2, eps, amsgrad):
    """Keras's Adam in NumPy float32; the params after each step."""
    f32 = np.float32
    x = [np.asarray(p, f32) for p in jax.tree.leaves(params)]
    m = [np.zeros_like(p) for p in x]
    v = [np.zeros_like(p) for p in x]
    v_hat = [np.zeros_like(p) for p in x]
    treedef = jax.tree.structure(params)
    history = []
    for t, grads in enumerate(grads_seq, start=1):
        step = f32(t)
        alpha = f32(lr) * np.sqrt(f32(1) - f32(b2) ** step) / (f32(1) - f32(b1) ** step)
        for i, g in enumerate(jax.tree.leaves(grads)):
            g = np.asarray(g, f32)
            m[i] += (g - m[i]) * (f32(1) - f32(b1))
            v[i] += (g * g - v[i]) * (f32(1) - f32(b2))
            denom_v = v[i]
            if amsgrad:
                v_hat[i] = np.maximum(v_hat[i], v[i])
                denom_v = v_hat[i]
            x[i] = x[i] - m[i] * alpha / (np.sqrt(denom_v) + f32(eps))
        history.append(jax.tree.unflatten(treedef, [xi.copy() for xi in x]))
    return history


def run_training(tx, params, grads_seq):
    """Applies each step's update; returns the params after each step."""
    update = jax.jit(tx.update)
    apply = jax.jit(gx.apply_updates)
    state = tx.init(params)
    history = []
    for grads in grads_seq:
        updates, state = update(grads, state, params)
        params = apply(params, updates)
        history.append(params)
    return history


def scaling(amsgrad, **kwargs):
    return gx.scale_by_amsgrad(**kwargs) if amsgrad else gx.scale_by_adam(**kwargs)


HYPERS = [
    pytest.param(dict(lr=1e-2, b1=0.9, b2=0.999, eps=1e-7), id="keras-defaults"),
    pytest.param(dict(lr=5e-2, b1=0.8, b2=0.95, eps=1e-2), id="large-eps"),
    pytest.param(dict(lr=1e-1, b1=0.0, b2=0.5, eps=0.3), id="b1=0"),
]


@pytest.mark.parametrize("amsgrad", [False, True], ids=["adam", "amsgrad"])
@pytest.mark.parametrize("hp", HYPERS)
def test_eps_hat_matches_keras_formula(amsgrad, hp):
    params = random_params(0)
    grads_seq = gradient_stream(params, STEPS, seed=3)
    tx = gx.chain(
        scaling(amsgrad, b1=hp["b1"], b2=hp["b2"], eps=hp["eps"], eps_hat=True),
        gx.scale_by_learning_rate(hp["lr"]),
    )
    mine = run_training(tx, params, grads_seq)
    expected = keras_adam_reference(params, grads_seq, amsgrad=amsgrad, **hp)
    for step, (a, e) in enumerate(zip(mine, expected)):
        assert_trees_close(a, e, rtol=1e-5, atol=1e-6, context=f"step {step + 1}")


@pytest.mark.parametrize("amsgrad", [False, True], ids=["adam", "amsgrad"])
def test_eps_hat_differs_from_optax_form(amsgrad):
    """A sanity check that the option matters: with a large eps the two forms differ."""
    params = random_params(0)
    grads_seq = gradient_stream(params, 3, seed=3)
    keras = keras_adam_reference(params, grads_seq, 1.0, 0.9, 0.999, 0.1, amsgrad)
    tx = gx.chain(scaling(amsgrad, eps=0.1, eps_hat=False), gx.scale_by_learning_rate(1.0))
    plain = run_training(tx, params, grads_seq)
    diff = np.abs(np.asarray(plain[0]["dense"]["kernel"]) - keras[0]["dense"]["kernel"])
    assert diff.max() > 1e-3


EQUIVALENCE_CASES = [
    pytest.param(False, {}, id="adam"),
    pytest.param(False, {"nesterov": True}, id="adam-nesterov"),
    pytest.param(False, {"eps_root": 1e-3}, id="adam-eps_root"),
    pytest.param(True, {}, id="amsgrad"),
    pytest.param(True, {"bias_correction_mu": False}, id="amsgrad-no-mu-correction"),
]


@pytest.mark.parametrize("amsgrad, extra", EQUIVALENCE_CASES)
def test_eps_hat_is_eps_over_sqrt_bias_correction(amsgrad, extra):
    """Step t from the same state: eps_hat=True with eps == eps_hat=False with eps/sqrt(1-b2^t).

    (With eps_root, the documented formula ``sqrt(v + eps_root)`` also needs
    ``eps_root / (1-b2^t)`` in the plain form.)
    """
    b1, b2, eps = 0.9, 0.99, 0.05
    params = random_params(1)
    grads_seq = gradient_stream(params, 8, seed=5)
    hat = scaling(amsgrad, b1=b1, b2=b2, eps=eps, eps_hat=True, **extra)
    state = hat.init(params)
    for t, grads in enumerate(grads_seq, start=1):
        correction = 1 - b2**t
        folded = dict(extra)
        if "eps_root" in folded:
            folded["eps_root"] = extra["eps_root"] / correction
        equivalent = scaling(amsgrad, b1=b1, b2=b2, eps=eps / np.sqrt(correction), **folded)
        expected, expected_state = equivalent.update(grads, state, params)
        updates, state = hat.update(grads, state, params)
        assert_trees_close(updates, expected, rtol=2e-6, atol=1e-7, context=f"step {t}")
        assert_trees_close(state, expected_state, rtol=0, atol=0, context=f"state, step {t}")


def test_eps_hat_without_nu_correction_is_the_plain_form():
    """With bias_correction_nu=False there is no correction to fold: eps_hat changes nothing."""
    params = random_params(2)
    grads_seq = gradient_stream(params, 5, seed=6)
    kwargs = dict(eps=0.1, bias_correction_nu=False)
    hat = run_training(gx.scale_by_amsgrad(eps_hat=True, **kwargs), params, grads_seq)
    plain = run_training(gx.scale_by_amsgrad(eps_hat=False, **kwargs), params, grads_seq)
    for a, b in zip(hat, plain):
        assert_trees_close(a, b, rtol=0, atol=0)


def test_nesterov_with_eps_hat_runs_finite_under_jit():
    params = random_params(3)
    grads_seq = gradient_stream(params, 12, seed=7)
    tx = gx.chain(gx.scale_by_adam(nesterov=True, eps_hat=True), gx.scale_by_learning_rate(1e-2))
    history = run_training(tx, params, grads_seq)
    for p in history:
        for leaf in jax.tree.leaves(p):
            assert leaf.dtype == jnp.float32 and np.all(np.isfinite(leaf))
    assert not np.allclose(history[-1]["dense"]["kernel"], params["dense"]["kernel"])


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16], ids=lambda d: d.__name__)
@pytest.mark.parametrize("amsgrad", [False, True], ids=["adam", "amsgrad"])
def test_eps_hat_low_precision_params(dtype, amsgrad):
    """Low-precision params and gradients, float32 moments: each update within one rounding
    of Keras's float32 rule run on the same (float32-cast) values."""
    params = random_params(4, dtype)
    grads_seq = gradient_stream(params, 10, seed=8)
    hp = dict(lr=1e-2, b1=0.9, b2=0.999, eps=1e-7)
    tx = gx.chain(
        scaling(amsgrad, b1=hp["b1"], b2=hp["b2"], eps=hp["eps"], eps_hat=True,
                mu_dtype=jnp.float32, nu_dtype=jnp.float32),
        gx.scale_by_learning_rate(hp["lr"]),
    )
    state = tx.init(params)
    update = jax.jit(tx.update)
    ref_params = cast_tree(params, jnp.float32)
    ref_history = keras_adam_reference(ref_params, [cast_tree(g, jnp.float32) for g in grads_seq],
                                       amsgrad=amsgrad, **hp)
    previous = jax.tree.map(lambda p: np.asarray(p, np.float32), ref_params)
    for step, (grads, ref) in enumerate(zip(grads_seq, ref_history)):
        updates, state = update(grads, state, params)
        for u in jax.tree.leaves(updates):
            assert u.dtype == dtype and np.all(np.isfinite(np.asarray(u, np.float32)))
        expected_updates = jax.tree.map(lambda new, old: new - old, ref, previous)
        assert_trees_close(updates, expected_updates, rtol=1e-2, atol=1e-4, context=f"step {step}")
        previous = ref
