"""The catalogue pieces added for ``gx.torch``'s Adamax, NAdam, RAdam and ASGD.

* ``scale_by_nadam`` (Dozat's momentum schedule): its rule written in float64
  NumPy, over a nested tree with zero-gradient steps, for several arguments;
  Keras 3's ``Nadam`` run live (``momentum_decay=1``, ``eps=1e-7``); its state;
  bfloat16 params.
* ``scale_by_adamax(accurate_bias_correction=True)`` and ``scale_by_radam(eps_hat=True,
  accurate_bias_correction=True)``: float64 NumPy references of torch's formulas.
* ``params_average``: the running mean of the params from ``t0`` on (float64
  reference), exact weights past float32's 2**24, read by ``finalize_params``.
* ``averaged_sgd_schedule``: ASGD's step size, a scheduled rate one step late.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import keras
import numpy as np
import pytest

import gradxform as gx
from gradxform.schedules.averaged_sgd import averaged_sgd_schedule
from gradxform.transforms.nadam import scale_by_nadam
from gradxform.transforms.params_ema import ParamsAverageState, params_average
from tests.helpers import gradient_stream, random_params, run_updates

STEPS = 30


def _leaves(tree):
    return [np.asarray(x, np.float64) for x in jax.tree.leaves(tree)]


def _assert_updates_close(ours, expected, rtol, atol=1e-7, context=""):
    for step, (mine, theirs) in enumerate(zip(ours, expected, strict=True)):
        for i, (a, b) in enumerate(zip(_leaves(mine), theirs, strict=True)):
            np.testing.assert_allclose(a, b, rtol=rtol, atol=atol,
                                       err_msg=f"{context}: step {step}, leaf {i}")


# --- scale_by_nadam ----------------------------------------------------------------------


def nadam_reference(grads_seq, b1=0.9, b2=0.999, eps=1e-8, momentum_decay=4e-3):
    """Dozat's NAdam in float64: the updates at every step, and the products Pi_t."""
    m = [np.zeros_like(g) for g in _leaves(grads_seq[0])]
    v = [np.zeros_like(g) for g in m]
    product, outputs, products = 1.0, [], []
    for t, grads in enumerate(grads_seq, start=1):
        mu = b1 * (1 - 0.5 * 0.96 ** (t * momentum_decay))
        mu_next = b1 * (1 - 0.5 * 0.96 ** ((t + 1) * momentum_decay))
        product *= mu
        step = []
        for i, g in enumerate(_leaves(grads)):
            m[i] = b1 * m[i] + (1 - b1) * g
            v[i] = b2 * v[i] + (1 - b2) * g * g
            numerator = (1 - mu) / (1 - product) * g + mu_next / (1 - product * mu_next) * m[i]
            step.append(numerator / (np.sqrt(v[i] / (1 - b2**t)) + eps))
        outputs.append(step)
        products.append(product)
    return outputs, products


@pytest.mark.parametrize("kwargs", [
    {},
    dict(momentum_decay=0.0),
    dict(momentum_decay=1.0, eps=1e-7),  # Keras's schedule
    dict(b1=0.5, b2=0.9, eps=1e-3, momentum_decay=0.5),
    dict(b1=0.999, b2=0.999, momentum_decay=50.0),  # mu_t near 1 from the first step
    dict(b1=0.0),
])
def test_scale_by_nadam_matches_its_float64_rule(kwargs):
    params = random_params()
    grads = gradient_stream(params, STEPS)
    ours, state = run_updates(scale_by_nadam(**kwargs, accurate_bias_correction=True), params,
                              grads)
    expected, products = nadam_reference(grads, **kwargs)
    # Pi_t is kept in float32, as torch and Keras keep it: it gains a rounding per step,
    # which 1 - Pi_t magnifies by Pi_t / (1 - Pi_t) (about 10 with b1 = 0.999).
    rtol = 2e-5 if kwargs.get("b1") == 0.999 else 2e-6
    _assert_updates_close(ours, expected, rtol=rtol, context=str(kwargs))
    np.testing.assert_allclose(float(state.mu_product), products[-1], rtol=STEPS * 2e-7)
    assert int(state.count) == STEPS


def test_scale_by_nadam_float32_bias_correction_is_keras_arithmetic():
    """Without ``accurate_bias_correction``, 1 - b2**t is float32's (off by up to 5e-5 of
    itself at b2 = 0.999): the updates are the float64 rule's to 5e-5, not to 2e-6."""
    params = random_params()
    grads = gradient_stream(params, 8)
    expected, _ = nadam_reference(grads)
    ours, _ = run_updates(scale_by_nadam(), params, grads)
    _assert_updates_close(ours, expected, rtol=5e-5, context="float32 correction")


def test_scale_by_nadam_is_keras_nadam_with_momentum_decay_one():
    rng = np.random.default_rng(0)
    shapes = [(3, 4), (4,), ()]
    start = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    grads = [[rng.standard_normal(s).astype(np.float32) * (0 if t == 5 else 1) for s in shapes]
             for t in range(20)]
    optimizer = keras.optimizers.Nadam(learning_rate=0.01)
    variables = [keras.Variable(x) for x in start]
    with jax.numpy_dtype_promotion("standard"):  # Keras is not strict-promotion clean
        expected = []
        for g in grads:
            optimizer.apply_gradients(zip([jnp.asarray(x) for x in g], variables))
            expected.append([np.asarray(v.value) for v in variables])
    tx = gx.chain(scale_by_nadam(momentum_decay=1.0, eps=1e-7), gx.scale_by_learning_rate(0.01))
    params = [jnp.asarray(x) for x in start]
    state = tx.init(params)
    for step, g in enumerate(grads):
        updates, state = tx.update([jnp.asarray(x) for x in g], state, params)
        params = gx.apply_updates(params, updates)
        for a, b in zip(params, expected[step]):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6, err_msg=f"step {step}")


def test_scale_by_nadam_state_and_low_precision_params():
    params = {"w": jnp.ones((2, 3), jnp.bfloat16), "b": jnp.zeros(3, jnp.float16)}
    tx = scale_by_nadam()
    state = jax.eval_shape(tx.init, params)
    assert state._fields == ("count", "mu_product", "mu", "nu")
    abstract = tx.init(jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params))
    assert jax.tree.map(lambda x: (x.shape, x.dtype), abstract) == jax.tree.map(
        lambda x: (x.shape, x.dtype), state)
    assert state.mu_product.dtype == jnp.float32 and state.mu_product.shape == ()
    assert state.mu["w"].dtype == jnp.bfloat16 and state.nu["b"].dtype == jnp.float32
    grads = {"w": jnp.full((2, 3), 0.5, jnp.bfloat16), "b": jnp.full(3, -2.0, jnp.float16)}
    updates, new_state = jax.jit(tx.update)(grads, tx.init(params), params)
    assert updates["w"].dtype == jnp.bfloat16 and updates["b"].dtype == jnp.float16
    expected, products = nadam_reference([grads])
    np.testing.assert_allclose(np.asarray(updates["b"], np.float64), expected[0][0], rtol=1e-3)
    np.testing.assert_allclose(float(new_state.mu_product), products[0], rtol=1e-6)


# --- scale_by_adamax / scale_by_radam options -----------------------------------------------


def test_adamax_accurate_bias_correction_is_torchs_float64_correction():
    b1, b2, eps = 0.999, 0.99, 1e-8
    params = random_params()
    grads = gradient_stream(params, 10)
    m = [np.zeros_like(g) for g in _leaves(grads[0])]
    u = [np.zeros_like(g) for g in m]
    expected = []
    for t, g_tree in enumerate(grads, start=1):
        step = []
        for i, g in enumerate(_leaves(g_tree)):
            m[i] = b1 * m[i] + (1 - b1) * g
            u[i] = np.maximum(b2 * u[i], np.abs(g) + eps)
            step.append(m[i] / (1 - b1**t) / u[i])
        expected.append(step)
    ours, _ = run_updates(gx.scale_by_adamax(b1, b2, eps, accurate_bias_correction=True),
                          params, grads)
    _assert_updates_close(ours, expected, rtol=1e-6, context="accurate")


@pytest.mark.parametrize("b2", [0.999, 0.8])
def test_radam_eps_hat_and_accurate_correction_are_torchs_formula(b2):
    """torch: r_t * m_hat * sqrt(1 - b2**t) / (sqrt(v_t) + eps) where rho_t > 5, else m_hat."""
    b1, eps = 0.9, 1e-2
    params = random_params()
    grads = gradient_stream(params, STEPS)
    m = [np.zeros_like(g) for g in _leaves(grads[0])]
    v = [np.zeros_like(g) for g in m]
    rho_inf = 2 / (1 - b2) - 1
    expected, rectified = [], 0
    for t, g_tree in enumerate(grads, start=1):
        rho = rho_inf - 2 * t * b2**t / (1 - b2**t)
        rate = math.sqrt((rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho)) \
            if rho > 5 else None
        rectified += rate is not None
        step = []
        for i, g in enumerate(_leaves(g_tree)):
            m[i] = b1 * m[i] + (1 - b1) * g
            v[i] = b2 * v[i] + (1 - b2) * g * g
            m_hat = m[i] / (1 - b1**t)
            step.append(m_hat if rate is None else
                        rate * m_hat * math.sqrt(1 - b2**t) / (np.sqrt(v[i]) + eps))
        expected.append(step)
    assert 0 < rectified < STEPS
    tx = gx.scale_by_radam(b1, b2, eps, eps_hat=True, accurate_bias_correction=True)
    ours, _ = run_updates(tx, params, grads)
    _assert_updates_close(ours, expected, rtol=3e-6, context=f"b2={b2}")
    # optax's placement, the default, differs while 1 - b2**t is far from 1: by far more
    # than the tolerance above, at some step.
    default, _ = run_updates(gx.scale_by_radam(b1, b2, eps), params, grads)
    assert any(not np.allclose(np.asarray(a), np.asarray(b), rtol=1e-4)
               for step in range(STEPS)
               for a, b in zip(jax.tree.leaves(default[step]), jax.tree.leaves(ours[step])))


# --- params_average ------------------------------------------------------------------------


@pytest.mark.parametrize("t0", [0, 4, 2.5, 1e6])
def test_params_average_is_the_mean_of_the_params_from_t0_on(t0):
    params = random_params()
    grads = gradient_stream(params, 12)
    tx = gx.chain(gx.sgd(0.1, momentum=0.9), params_average(t0))
    state = tx.init(params)
    step = jax.jit(tx.update)
    history = []
    average = None
    for k, g in enumerate(grads):
        updates, state = step(g, state, params)
        params = gx.apply_updates(params, updates)
        history.append(_leaves(params))
        weight = 1 / max(1, k - t0)
        average = history[-1] if weight == 1 else [
            a + weight * (p - a) for a, p in zip(average, history[-1])]
        found = _leaves(gx.finalize_params(params, state))
        for a, b in zip(found, average):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7, err_msg=f"call {k}")
    if t0 == 4:  # after call k the mean of the params after calls 5..k
        mean = [np.mean(leaf, axis=0) for leaf in zip(*history[5:])]
        for a, b in zip(_leaves(gx.finalize_params(params, state)), mean):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_params_average_weights_stay_exact_past_float32s_integers():
    """count - t0 at count 2**25 + 3, t0 = 2**25: in float32 the count would round to 2**25 + 4."""
    tx = params_average(t0=2**25)
    params = {"w": jnp.array([3.0, -6.0])}
    state = ParamsAverageState(count=jnp.int32(2**25 + 3), average={"w": jnp.zeros(2)})
    _, state = tx.update({"w": jnp.zeros(2)}, state, params)
    np.testing.assert_allclose(np.asarray(state.average["w"]), [1.0, -2.0], rtol=1e-7)
    fractional = params_average(t0=2**25 + 0.5)
    state = ParamsAverageState(count=jnp.int32(2**25 + 3), average={"w": jnp.zeros(2)})
    _, state = fractional.update({"w": jnp.zeros(2)}, state, params)
    np.testing.assert_allclose(np.asarray(state.average["w"]), [3.0 / 2.5, -6.0 / 2.5], rtol=1e-7)


def test_params_average_needs_params_and_passes_updates_through():
    tx = params_average(t0=1)
    params = {"w": jnp.ones(2)}
    updates = {"w": jnp.array([0.5, -0.25])}
    out, _ = tx.update(updates, tx.init(params), params)
    np.testing.assert_array_equal(out["w"], updates["w"])
    with pytest.raises(ValueError, match="params_average: update needs params"):
        tx.update(updates, tx.init(params))
    assert jax.eval_shape(params_average(average_dtype=jnp.bfloat16).init, params).average[
        "w"].dtype == jnp.bfloat16


def test_finalize_params_reads_the_last_average_of_either_kind():
    params = {"w": jnp.ones(2)}
    grads = [{"w": jnp.array([1.0, -1.0])}] * 3
    for first, second in [(gx.params_ema(0.5), params_average(0)),
                          (params_average(0), gx.params_ema(0.5))]:
        tx = gx.chain(gx.sgd(0.1), first, second)
        state = tx.init(params)
        p = params
        for g in grads:
            updates, state = tx.update(g, state, p)
            p = gx.apply_updates(p, updates)
        last = state[-1]
        expected = last.ema if isinstance(last, gx.ParamsEmaState) else last.average
        np.testing.assert_array_equal(gx.finalize_params(p, state)["w"], expected["w"])


# --- averaged_sgd_schedule --------------------------------------------------------------------


def test_averaged_sgd_schedule_is_torchs_step_size():
    lr, lambd, alpha = 0.05, 0.3, 0.75
    constant = averaged_sgd_schedule(lr, lambd=lambd, alpha=alpha)
    for k in (0, 1, 7, 1000):
        assert float(constant(k)) == pytest.approx(lr / (1 + lambd * lr * k) ** alpha, rel=1e-6)

    def schedule(count):
        return 0.1 * 0.5 ** jnp.asarray(count, jnp.float32)

    lagged = averaged_sgd_schedule(schedule, lambd=lambd, alpha=alpha)
    values = jax.jit(jax.vmap(lagged))(jnp.arange(6))
    for k, value in enumerate(np.asarray(values)):
        rate = 0.1 * 0.5 ** max(k - 1, 0)  # torch's eta at step k: from step k - 1's rate
        assert value == pytest.approx(rate / (1 + lambd * rate * k) ** alpha, rel=1e-6)
    assert repr(constant) == "averaged_sgd_schedule(learning_rate=0.05, lambd=0.3, alpha=0.75)"
