"""hutchinson_estimator_diag_hessian and scale_by_sophia's own behaviour.

(Sophia against ``optax.contrib.sophia``, with defaults and every option, is in
``tests/optimizers/test_parameter_free.py``.)

* Hutchinson's estimate equals optax's for the same key, step after step, and
  the keys in the states agree; an int seed, ``jax.random.key``,
  ``jax.random.PRNGKey`` and None (seed 0) are the same key.
* For an objective that is a sum over entries, the estimate of a real entry
  is the exact second derivative; a complex entry's two parts carry their own
  second derivatives plus the same cross term ``±d²f/dadb``.
* ``update`` without ``obj_fn`` or params raises, naming the estimator.
* ``verbose`` prints the win rate every ``print_win_rate_every_n_steps`` steps.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradxform as gx
from tests.factories import quartic_objective
from tests.helpers import FAST_COMPILE, random_params


def test_hutchinson_matches_optax_for_the_same_key():
    params = random_params(0)
    key = jax.random.PRNGKey(42)
    ours, theirs = (gx.hutchinson_estimator_diag_hessian(key),
                    optax.contrib.hutchinson_estimator_diag_hessian(key))
    step = jax.jit(lambda s, p: ours.update(p, s, p, obj_fn=quartic_objective),
                   compiler_options=FAST_COMPILE)
    with jax.numpy_dtype_promotion("standard"):
        ref_step = jax.jit(lambda s, p: theirs.update(p, s, p, obj_fn=quartic_objective),
                           compiler_options=FAST_COMPILE)
        state, ref_state = ours.init(params), theirs.init(params)
        for _ in range(3):
            estimate, state = step(state, params)
            expected, ref_state = ref_step(ref_state, params)
            np.testing.assert_array_equal(state.key, ref_state.key)
            for a, b, p in zip(jax.tree.leaves(estimate), jax.tree.leaves(expected),
                               jax.tree.leaves(params)):
                np.testing.assert_allclose(a, b, rtol=1e-6)
                np.testing.assert_allclose(np.abs(a), 1 + np.asarray(p) ** 2, rtol=1e-5)


def test_every_kind_of_key_is_the_same_key():
    params = {"w": jnp.arange(4.0)}
    keys = [gx.hutchinson_estimator_diag_hessian(key).init(params).key
            for key in (None, 0, jax.random.key(0), jax.random.PRNGKey(0), np.int64(0))]
    for key in keys:
        assert key.dtype == jnp.uint32
        np.testing.assert_array_equal(key, jax.random.PRNGKey(0))
    other = gx.hutchinson_estimator_diag_hessian(1).init(params).key
    assert np.any(np.asarray(other) != np.asarray(keys[0]))


def test_a_complex_entry_is_two_real_coordinates():
    a, b = np.array([0.5, -1.0, 2.0]), np.array([1.5, 0.25, -1.0])
    params = {"z": jnp.asarray(a + 1j * b, jnp.complex64), "x": jnp.asarray(a, jnp.float32)}
    tx = gx.hutchinson_estimator_diag_hessian(7)
    estimate, _ = jax.jit(lambda s: tx.update(params, s, params, obj_fn=quartic_objective))(
        tx.init(params))
    # f = q/2 + q**2/12, q = a**2 + b**2 (a real entry: b = 0).
    q = a**2 + b**2
    h_aa, h_bb, h_ab = 1 + (q + 2 * a**2) / 3, 1 + (q + 2 * b**2) / 3, 2 * a * b / 3
    z = np.asarray(estimate["z"], np.complex128)
    np.testing.assert_allclose(np.abs(z.real - h_aa), np.abs(h_ab), rtol=1e-5)
    np.testing.assert_allclose(z.real - h_aa, z.imag - h_bb, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(estimate["x"], 1 + a**2, rtol=1e-6)


def test_update_needs_the_objective_and_the_params():
    params = {"w": jnp.ones(2)}
    tx = gx.hutchinson_estimator_diag_hessian()
    with pytest.raises(TypeError, match="hutchinson_estimator_diag_hessian: update needs the "
                                        "objective.*obj_fn"):
        tx.update(params, tx.init(params), params)
    with pytest.raises(ValueError, match="hutchinson_estimator_diag_hessian: update needs params"):
        tx.update(params, tx.init(params), obj_fn=quartic_objective)
    sophia = gx.sophia(0.1)
    with pytest.raises(TypeError, match="obj_fn"):
        sophia.update(params, sophia.init(params), params)


def test_verbose_prints_the_win_rate(capfd):
    params = {"w": jnp.array([0.5, -1.0, 2.0, 0.0])}
    tx = gx.scale_by_sophia(verbose=True, print_win_rate_every_n_steps=2, update_interval=1)
    step = jax.jit(lambda g, s, p: tx.update(g, s, p, obj_fn=quartic_objective))
    state = tx.init(params)
    for _ in range(4):
        _, state = step(params, state, params)
    jax.effects_barrier()
    assert capfd.readouterr().out.count("Sophia optimizer win rate:") == 2
