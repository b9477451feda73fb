"""weight_decay_first: the rule reads the params after the decay, and the updates add up."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradxform as gx

PARAMS = {"w": jnp.array([[1.0, -2.0], [0.5, 3.0]]), "b": jnp.array([0.25, -0.75])}
GRADS = {"w": jnp.array([[0.1, 0.2], [-0.3, 0.4]]), "b": jnp.array([1.0, -1.0])}


def test_the_rule_sees_the_decayed_params_and_the_updates_add():
    decay = gx.decoupled_weight_decay(0.2, 0.5)
    tx = gx.weight_decay_first(decay, gx.scale_by_trust_ratio())
    updates, state = jax.jit(tx.update)(GRADS, tx.init(PARAMS), PARAMS)
    for key in PARAMS:
        p, g = np.asarray(PARAMS[key], np.float64), np.asarray(GRADS[key], np.float64)
        decayed = p - 0.2 * 0.5 * p
        ratio = np.linalg.norm(decayed) / np.linalg.norm(g)
        np.testing.assert_allclose(updates[key], (decayed - p) + ratio * g, rtol=1e-6)
    assert isinstance(state, gx.WeightDecayFirstState)


def test_a_rule_that_ignores_the_params_gives_the_chain_in_either_order():
    decay, rule = gx.decoupled_weight_decay(0.1, 0.3), gx.chain(gx.scale_by_adam(),
                                                                gx.scale_by_learning_rate(0.3))
    first, after = gx.weight_decay_first(decay, rule), gx.chain(rule, decay)
    s1, s2 = first.init(PARAMS), after.init(PARAMS)
    for _ in range(3):
        u1, s1 = first.update(GRADS, s1, PARAMS)
        u2, s2 = after.update(GRADS, s2, PARAMS)
        for a, b in zip(jax.tree.leaves(u1), jax.tree.leaves(u2)):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_bad_arguments_and_missing_params_raise():
    with pytest.raises(TypeError, match=r"weight_decay_first.*decay"):
        gx.weight_decay_first(0.1, gx.sgd(0.1))
    with pytest.raises(TypeError, match=r"weight_decay_first.*rule"):
        gx.weight_decay_first(gx.add_decayed_weights(0.1), None)
    tx = gx.weight_decay_first(gx.add_decayed_weights(0.1), gx.sgd(0.1))
    with pytest.raises(ValueError, match=r"weight_decay_first: update needs params"):
        tx.update(GRADS, tx.init(PARAMS))
