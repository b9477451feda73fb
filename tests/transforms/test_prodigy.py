"""scale_by_prodigy against Prodigy's rule in float64 NumPy, where optax's numbers break.

(prodigy against ``optax.contrib.prodigy``, with defaults and every option, is in
``tests/optimizers/test_parameter_free.py``.)

* While every gradient so far is zero, :math:`\\lVert s \\rVert_1 = 0`: optax
  divides 0 by 0 and its estimate :math:`d` is NaN from then on (shown live);
  gradxform keeps :math:`d` and then follows the rule, checked against float64
  NumPy over 30 jitted steps of a trajectory that starts with zero gradients.
* A complex leaf follows the rule in complex arithmetic (``|d g|**2`` in the
  second moment, moduli in the L1 norm, the real part of the inner product).
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax

import gradxform as gx

STEPS = 30


def prodigy_reference(xs, target, zero_steps, lr=1.0, b1=0.9, b2=0.999, eps=1e-8, d0=1e-6,
                      wd=0.0):
    """Prodigy in float64 at the params ``xs`` (one vector per step), with the guard on a
    zero denominator; the update of each step."""
    x0, m, v, s = xs[0], np.zeros_like(xs[0]), np.zeros(xs[0].shape), np.zeros_like(xs[0])
    d, r, b3, out = d0, 0.0, np.sqrt(b2), []
    for t, x in enumerate(xs, start=1):
        g = np.zeros_like(x) if t <= zero_steps else x - target
        step = d * lr * np.sqrt(1 - b2**t) / (1 - b1**t)
        m = b1 * m + (1 - b1) * d * g
        v = b2 * v + (1 - b2) * np.abs(d * g) ** 2
        s = b3 * s + step * d * g / d0
        r = b3 * r + d / d0 * step * np.real(np.vdot(g, x0 - x))
        if np.sum(np.abs(s)) > 0:
            d = max(d, r / np.sum(np.abs(s)))
        out.append(-step * (m / (np.sqrt(v) + d * eps) + wd * x))
    return out


def _run(tx, params, target, steps, zero_steps):
    """Jitted steps along the trajectory; the params before each step and its updates."""
    update = jax.jit(tx.update)
    state, before, out = tx.init(params), [], []
    for t in range(steps):
        grads = jax.tree.map(lambda p, q: (p - q) * float(t >= zero_steps), params, target)
        updates, state = update(grads, state, params)
        before.append(params)
        out.append(updates)
        params = gx.apply_updates(params, updates)
    return before, out, state


def test_zero_first_gradients_keep_the_estimate_where_optax_makes_nan():
    rng = np.random.default_rng(0)
    x, target = rng.standard_normal(6), rng.standard_normal(6)
    params, goal = {"w": jnp.asarray(x, jnp.float32)}, {"w": jnp.asarray(target, jnp.float32)}
    with jax.numpy_dtype_promotion("standard"), jax.debug_nans(False):
        _, _, ref_state = _run(optax.contrib.prodigy(), params, goal, 2, zero_steps=2)
    assert np.isnan(float(ref_state.estim_lr))
    before, ours, state = _run(gx.prodigy(weight_decay=0.01), params, goal, STEPS, zero_steps=2)
    xs = [np.asarray(p["w"], np.float64) for p in before]
    expected = prodigy_reference(xs, target, zero_steps=2, wd=0.01)
    for step, (mine, want) in enumerate(zip(ours, expected)):
        np.testing.assert_allclose(mine["w"], want, rtol=1e-4, atol=1e-12, err_msg=f"step {step}")
    assert float(state[0].estim_lr) > 1e-3  # the estimate grew from 1e-6


def test_a_complex_leaf_follows_the_rule_in_complex_arithmetic():
    rng = np.random.default_rng(1)
    x, target = (rng.standard_normal(5) + 1j * rng.standard_normal(5) for _ in range(2))
    params, goal = {"z": jnp.asarray(x, jnp.complex64)}, {"z": jnp.asarray(target, jnp.complex64)}
    before, ours, state = _run(gx.prodigy(estim_lr0=1e-3), params, goal, STEPS, 0)
    xs = [np.asarray(p["z"], np.complex128) for p in before]
    expected = prodigy_reference(xs, target, zero_steps=0, d0=1e-3)
    for step, (mine, want) in enumerate(zip(ours, expected)):
        np.testing.assert_allclose(mine["z"], want, rtol=1e-4, atol=1e-12, err_msg=f"step {step}")
    assert state[0].estim_lr.dtype == jnp.float32 and float(state[0].estim_lr) > 1e-3


def test_without_eps_an_entry_that_never_had_a_gradient_stays_put():
    params, goal = {"w": jnp.array([1.0, 2.0, -1.0])}, {"w": jnp.array([0.0, 2.0, 0.0])}
    _, ours, _ = _run(gx.prodigy(eps=0.0), params, goal, 5, 0)  # w[1] is at its target
    for updates in ours:
        assert np.all(np.isfinite(updates["w"])) and float(updates["w"][1]) == 0.0
