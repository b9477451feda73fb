"""scale_by_cocob: complex entries, float16 state, and the rule by hand.

(cocob against ``optax.contrib.cocob``, with defaults and every option, is in
``tests/optimizers/test_parameter_free.py``.)

* The rule (Algorithm 2 of the paper) in float64 NumPy over 30 jitted steps.
* A complex entry is two real coordinates: a complex leaf's run equals the
  run of its real and imaginary parts as two real leaves.
* float16 params keep their state in float32: with a zero first gradient
  optax's float16 :math:`L = \\epsilon` rounds to 0 and its update is 0 / 0
  (NaN, shown live); gradxform's is 0, and later steps follow the float32 run
  to float16 precision.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax

import gradxform as gx

STEPS = 30


def _run(tx, params, grads_seq):
    update = jax.jit(tx.update)
    state, out = tx.init(params), []
    for grads in grads_seq:
        updates, state = update(grads, state, params)
        out.append(updates)
        params = gx.apply_updates(params, updates)
    return out, state


def _grads(rng, shape, steps, dtype=np.float32):
    return [rng.standard_normal(shape).astype(dtype) * (step % 5 != 4) for step in range(steps)]


def test_cocob_follows_algorithm_2_in_float64():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(6)
    grads = _grads(rng, 6, STEPS)
    ours, _ = _run(gx.scale_by_cocob(alpha=10.0, eps=1e-4), {"w": jnp.asarray(x, jnp.float32)},
                   [{"w": jnp.asarray(g)} for g in grads])
    x0, c, scale, total, reward = x.copy(), 0.0, np.full(6, 1e-4), 0.0, 0.0
    for step, g in enumerate(grads):
        g = g.astype(np.float64)
        scale, total = np.maximum(scale, np.abs(g)), total + np.abs(g)
        reward, c = np.maximum(reward - g * (x - x0), 0), c - g
        new = x0 + c / (scale * np.maximum(total + scale, 10.0 * scale)) * (scale + reward)
        np.testing.assert_allclose(ours[step]["w"], new - x, rtol=1e-4, atol=1e-6)
        x = x + np.asarray(ours[step]["w"], np.float64)


def test_a_complex_entry_is_two_real_coordinates():
    rng = np.random.default_rng(1)
    re, im = rng.standard_normal(4), rng.standard_normal(4)
    g_re, g_im = _grads(rng, 4, 12), _grads(rng, 4, 12)
    tx = gx.scale_by_cocob()
    complex_grads = [{"z": jnp.asarray(a + 1j * b, jnp.complex64)} for a, b in zip(g_re, g_im)]
    complex_run, _ = _run(tx, {"z": jnp.asarray(re + 1j * im, jnp.complex64)}, complex_grads)
    real_run, _ = _run(tx, {"z": [jnp.asarray(re, jnp.float32), jnp.asarray(im, jnp.float32)]},
                       [{"z": [jnp.asarray(a), jnp.asarray(b)]} for a, b in zip(g_re, g_im)])
    for c, r in zip(complex_run, real_run):
        np.testing.assert_allclose(np.real(c["z"]), r["z"][0], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(np.imag(c["z"]), r["z"][1], rtol=1e-5, atol=1e-6)


def test_float16_state_is_float32_where_optax_makes_nan():
    rng = np.random.default_rng(2)
    x = rng.standard_normal(5).astype(np.float16)
    grads = [np.zeros(5, np.float16)] + [g.astype(np.float16) for g in _grads(rng, 5, 11)]
    params = {"w": jnp.asarray(x)}
    with jax.numpy_dtype_promotion("standard"), jax.debug_nans(False):
        theirs, _ = _run(optax.contrib.scale_by_cocob(), params, [{"w": jnp.asarray(grads[0])}])
    assert np.all(np.isnan(np.asarray(theirs[0]["w"], np.float32)))
    ours, state = _run(gx.scale_by_cocob(), params, [{"w": jnp.asarray(g)} for g in grads])
    assert state.scale["w"].dtype == jnp.float32 and state.init_particles["w"].dtype == jnp.float16
    wide, _ = _run(gx.scale_by_cocob(), {"w": jnp.asarray(x, jnp.float32)},
                   [{"w": jnp.asarray(g, jnp.float32)} for g in grads])
    np.testing.assert_array_equal(np.asarray(ours[0]["w"], np.float32), np.zeros(5))
    for mine, want in zip(ours, wide):
        np.testing.assert_allclose(np.asarray(mine["w"], np.float32), want["w"], rtol=1e-2,
                                   atol=2e-3)
