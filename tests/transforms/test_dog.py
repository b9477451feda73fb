"""scale_by_dog, scale_by_dowg and scale_by_distance_over_gradients (layer-wise DoG).

* ``scale_by_distance_over_gradients`` against ``optax.scale_by_distance_over_gradients``
  over 32 jitted steps of a trajectory on the nested tree, defaults and options,
  state field by field; optax's update of a 0-d leaf has shape ``(1,)``, ours
  ``()`` (compared after a reshape). (DoG and DoWG are compared through their
  aliases in ``tests/optimizers/test_parameter_free.py``.)
* The rules by hand in float64 NumPy: DoG's three starts, DoWG's default
  first guess; with ``eps=0`` and a zero first gradient DoG's update is 0 where
  ``r / sqrt(0) * 0`` would be NaN.
* ``inject_hyperparams`` of layer-wise DoG is bit for bit the plain transform.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradxform as gx
from tests.helpers import assert_trees_bitwise_equal, gradient_stream, random_params
from tests.optimizers.test_parameter_free import against_optax, assert_close, assert_state_fields


@pytest.mark.parametrize("kwargs", [
    {}, dict(reps_rel=1e-3, eps=1e-6, param_dtype=jnp.bfloat16, global_scale=-0.5),
], ids=["defaults", "options"])
def test_layerwise_dog_matches_optax(kwargs):
    pairs, state, ref_state, _ = against_optax(
        gx.scale_by_distance_over_gradients(**kwargs),
        optax.scale_by_distance_over_gradients(**kwargs))
    for step, (mine, theirs) in enumerate(pairs):
        theirs = jax.tree.map(lambda t, m: jnp.reshape(t, m.shape), theirs, mine)
        assert_close(mine, theirs, 1e-5, f"step {step}")
    assert_state_fields(state, ref_state, 1e-5)
    assert all(leaf.shape == (1,) for leaf in jax.tree.leaves(state.grad_sum_of_squares))


def _flat(tree):
    return np.concatenate([np.asarray(x, np.float64).reshape(-1) for x in jax.tree.leaves(tree)])


@pytest.mark.parametrize("init_step", [("heuristic", 1e-3), ("distance", 0.2),
                                       ("learning_rate", 0.05)])
def test_dog_follows_the_rule_in_float64(init_step):
    params = random_params(0)
    grads_seq = gradient_stream(params, 12, seed=2)
    tx = gx.scale_by_dog(init_step, eps=1e-6)
    update, state = jax.jit(tx.update), tx.init(params)
    x0 = x = _flat(params)
    kind, value = init_step
    r = {"heuristic": value * (1 + np.linalg.norm(x0)), "distance": value,
         "learning_rate": 0.0}[kind]
    total = 0.0
    for step, grads in enumerate(grads_seq):
        updates, state = update(grads, state, params)
        g = _flat(grads)
        r, total = max(r, np.linalg.norm(x - x0)), total + g @ g
        rate = value if kind == "learning_rate" and step == 0 else r / np.sqrt(total + 1e-6)
        np.testing.assert_allclose(_flat(updates), rate * g, rtol=2e-5, atol=1e-7)
        params = gx.apply_updates(params, jax.tree.map(lambda u: -u, updates))
        x = _flat(params)


def test_dowg_follows_the_rule_in_float64():
    params = random_params(0)
    grads_seq = gradient_stream(params, 12, seed=2)
    tx = gx.scale_by_dowg()
    update, state = jax.jit(tx.update), tx.init(params)
    x0 = x = _flat(params)
    estimate, weighted = 1e-4, 0.0
    for grads in grads_seq:
        updates, state = update(grads, state, params)
        g = _flat(grads)
        estimate = max(estimate, np.sum((x - x0) ** 2))
        weighted += estimate * (g @ g)
        np.testing.assert_allclose(_flat(updates), estimate / (np.sqrt(weighted) + 1e-4) * g,
                                   rtol=2e-5, atol=1e-7)
        params = gx.apply_updates(params, jax.tree.map(lambda u: -u, updates))
        x = _flat(params)


def test_dog_without_eps_leaves_zero_gradients_at_zero():
    params = {"w": jnp.array([1.0, -2.0])}
    tx = gx.scale_by_dog(("distance", 0.5), eps=0.0)
    update = jax.jit(tx.update)
    updates, state = update({"w": jnp.zeros(2)}, tx.init(params), params)
    np.testing.assert_array_equal(updates["w"], np.zeros(2))
    updates, state = update({"w": jnp.array([3.0, 4.0])}, state, params)
    np.testing.assert_allclose(updates["w"], [0.3, 0.4], rtol=1e-6)  # 0.5 / 5 * g
    assert not bool(state.is_init_step)


def test_inject_hyperparams_of_layerwise_dog_is_bitwise():
    params = random_params(0)
    grads_seq = gradient_stream(params, 20, seed=3)
    kwargs = dict(reps_rel=1e-3, eps=1e-6, global_scale=-1.0)
    plain, injected = (gx.scale_by_distance_over_gradients(**kwargs),
                       gx.inject_hyperparams(gx.scale_by_distance_over_gradients)(**kwargs))
    states = [plain.init(params), injected.init(params)]
    steps = [jax.jit(plain.update), jax.jit(injected.update)]
    p_plain = p_injected = params
    for grads in grads_seq:
        u, states[0] = steps[0](grads, states[0], p_plain)
        u_i, states[1] = steps[1](grads, states[1], p_injected)
        assert_trees_bitwise_equal(u_i, u)
        p_plain, p_injected = gx.apply_updates(p_plain, u), gx.apply_updates(p_injected, u_i)
    assert_trees_bitwise_equal(states[1].inner_state, states[0])
