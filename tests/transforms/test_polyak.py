"""scale_by_polyak against optax.scale_by_polyak, with the loss passed as ``value``.

The loss is real: a stochastic weighted least-squares loss of a nested
parameter tree (scalars, ``None`` leaves, a zero-size leaf), with new random
weights at each step. Its value and gradient come from ``jax.value_and_grad``
at the current parameters, which then take the step. In float32 gradxform
and optax each follow their own trajectory for 50 jitted steps and must agree
at every step; in bfloat16 both see gradxform's parameters and optax runs in
float32. Also: the named errors for a missing or malformed ``value``.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradxform as gx
from tests.helpers import assert_trees_close, random_params

STEPS = 50
CASES = [
    pytest.param({}, id="defaults"),
    pytest.param({"f_min": 0.5, "max_learning_rate": 0.3, "eps": 1e-3}, id="options"),
    pytest.param({"f_min": 2.0, "variant": "sps+"}, id="sps+"),
    pytest.param({"f_min": 2.0, "variant": "sps", "max_learning_rate": 10.0}, id="sps below f_min"),
]


def _problem(seed=0, dtype=jnp.float32):
    """Start params, and each step's weights of the loss ``sum_t w * (p - c)**2 / 2 + 1``."""
    params = random_params(seed, dtype)
    rng = np.random.default_rng(seed + 10)
    target = jax.tree.map(lambda p: jnp.asarray(rng.standard_normal(p.shape), jnp.float32), params)
    weights = [jax.tree.map(lambda p: jnp.asarray(rng.uniform(0.2, 2.0, p.shape), jnp.float32),
                            params) for _ in range(STEPS)]

    @jax.jit
    def value_and_grad(params, weights):
        def loss(params):
            terms = jax.tree.map(lambda p, c, w: jnp.sum(w * (p.astype(jnp.float32) - c) ** 2),
                                 params, target, weights)
            return 1.0 + 0.5 * sum(jax.tree.leaves(terms), jnp.zeros([], jnp.float32))

        return jax.value_and_grad(loss)(params)

    return params, weights, value_and_grad


@pytest.mark.parametrize("kwargs", CASES)
def test_trajectory_matches_optax_in_float32(kwargs):
    params, weights, value_and_grad = _problem()
    tx, reference = gx.scale_by_polyak(**kwargs), optax.scale_by_polyak(**kwargs)
    ours, theirs = params, params
    update, state = jax.jit(tx.update), tx.init(params)
    with jax.numpy_dtype_promotion("standard"):
        ref_update, ref_state = jax.jit(reference.update), reference.init(params)
    losses = []
    for step, w in enumerate(weights):
        value, grads = value_and_grad(ours, w)
        updates, state = update(grads, state, ours, value=value)
        with jax.numpy_dtype_promotion("standard"):
            ref_value, ref_grads = value_and_grad(theirs, w)
            ref_updates, ref_state = ref_update(ref_grads, ref_state, theirs, value=ref_value)
        assert_trees_close(updates, ref_updates, 1e-5, 1e-6, f"step {step}")
        assert state == ref_state == optax.EmptyState()
        ours, theirs = gx.apply_updates(ours, jax.tree.map(jnp.negative, updates)), (
            optax.apply_updates(theirs, jax.tree.map(jnp.negative, ref_updates)))
        losses.append(float(value))
    assert_trees_close(ours, theirs, 1e-5, 1e-6, "params after the steps")
    if kwargs.get("f_min", 0.0) == 0.0:  # the loss is at least 1: Polyak's steps make progress
        assert losses[-1] < losses[0]


@pytest.mark.parametrize("kwargs", CASES[:3])
def test_bfloat16_matches_optax_in_float32(kwargs):
    params, weights, value_and_grad = _problem(dtype=jnp.bfloat16)
    tx, reference = gx.scale_by_polyak(**kwargs), optax.scale_by_polyak(**kwargs)
    update, state = jax.jit(tx.update), tx.init(params)
    for step, w in enumerate(weights):
        value, grads = value_and_grad(params, w)
        updates, state = update(grads, state, params, value=value)
        with jax.numpy_dtype_promotion("standard"):
            f32 = jax.tree.map(lambda g: g.astype(jnp.float32), grads)
            ref_updates, _ = reference.update(f32, optax.EmptyState(), None, value=value)
        for leaf in jax.tree.leaves(updates):
            assert leaf.dtype == jnp.bfloat16
        assert_trees_close(updates, ref_updates, 2e-2, 1e-6, f"step {step}")
        params = gx.apply_updates(params, jax.tree.map(jnp.negative, updates))


def test_step_by_hand():
    g = {"a": jnp.array([3.0, 0.0]), "b": jnp.array(4.0)}  # |g|^2 = 25
    tx = gx.scale_by_polyak(f_min=1.0, max_learning_rate=10.0, eps=5.0)
    updates, _ = tx.update(g, tx.init(g), value=7.0)  # step = (7 - 1) / (25 + 5) = 0.2
    np.testing.assert_allclose(updates["a"], [0.6, 0.0], rtol=1e-6)
    np.testing.assert_allclose(updates["b"], 0.8, rtol=1e-6)
    capped, _ = gx.scale_by_polyak(max_learning_rate=0.1).update(g, (), value=100.0)
    np.testing.assert_allclose(capped["b"], 0.4, rtol=1e-6)
    # Below f_min: "sps" steps backwards, "sps+" does not step.
    below, _ = gx.scale_by_polyak(f_min=2.0).update(g, (), value=-23.0)
    np.testing.assert_allclose(below["b"], -4.0, rtol=1e-6)
    plus, _ = gx.scale_by_polyak(f_min=2.0, variant="sps+").update(g, (), value=-23.0)
    np.testing.assert_array_equal(plus["b"], 0.0)


def test_zero_gradient_gives_a_zero_step_without_nan():
    # jax_debug_nans is on for this test: 0 / 0 anywhere would raise.
    tx = gx.scale_by_polyak()
    grads = {"w": jnp.zeros(3), "v": jnp.zeros((0,))}
    updates, _ = jax.jit(tx.update)(grads, tx.init(grads), value=jnp.float32(5.0))
    np.testing.assert_array_equal(updates["w"], np.zeros(3))


def test_value_may_be_a_traced_loss_of_another_dtype():
    g = {"w": jnp.array([1.0, 1.0], jnp.bfloat16)}
    tx = gx.scale_by_polyak()
    for value in (jnp.float16(1.0), jnp.bfloat16(1.0), 1, 1.0, np.float64(1.0)):
        updates, _ = jax.jit(tx.update)(g, tx.init(g), value=value)
        assert updates["w"].dtype == jnp.bfloat16
        np.testing.assert_array_equal(np.asarray(updates["w"], np.float32), [0.5, 0.5])


@pytest.mark.parametrize("call", ["plain", "jit", "chain", "inject"])
def test_missing_value_is_a_named_type_error(call):
    g = {"w": jnp.ones(2)}
    tx = {
        "plain": gx.scale_by_polyak(), "jit": gx.scale_by_polyak(),
        "chain": gx.chain(gx.scale(-1.0), gx.scale_by_polyak()),
        "inject": gx.inject_hyperparams(gx.scale_by_polyak)(f_min=0.5),
    }[call]
    update = jax.jit(tx.update) if call == "jit" else tx.update
    # The error names the function the user called (and where it was found).
    owner = "inject_hyperparams" if call == "inject" else "scale_by_polyak"
    with pytest.raises(TypeError, match=f"{owner}: update needs the current loss as the "
                                        r"keyword argument value: tx.update\(grads, state, "
                                        r"params, value=loss\)") as info:
        update(g, tx.init(g), g)
    assert call != "inject" or "found by the scale_by_polyak it builds" in str(info.value)


@pytest.mark.parametrize("value, error, message", [
    (jnp.ones(3), ValueError, r"value must be the loss, one number \(shape \(\)\), got an array "
                              r"of shape \(3,\)"),
    (True, TypeError, "value must be the loss, a real number, got True"),
    (1.0 + 2.0j, TypeError, "value must be the loss, a real number"),
    ("1.0", TypeError, "value must be the loss, a real number"),
])
def test_malformed_value_is_a_named_error(value, error, message):
    g = {"w": jnp.ones(2)}
    tx = gx.scale_by_polyak()
    with pytest.raises(error, match=f"scale_by_polyak: {message}"):
        tx.update(g, tx.init(g), value=value)


def test_gradients_must_be_shaped_like_the_params():
    tx = gx.scale_by_polyak()
    params = {"w": jnp.ones(2)}
    with pytest.raises(ValueError, match=r"scale_by_polyak: the update at \['w'\] has shape"):
        tx.update({"w": jnp.ones(3)}, tx.init(params), params, value=1.0)


@pytest.mark.parametrize("kwargs, error, message", [
    ({"variant": "sps-"}, ValueError, r"variant must be one of \('sps', 'sps\+'\), got 'sps-'"),
    ({"variant": 1}, TypeError, "variant must be a str, got 1"),
    ({"max_learning_rate": -1.0}, ValueError, r"max_learning_rate must be in \[0, inf\)"),
])
def test_bad_arguments_name_the_transform(kwargs, error, message):
    with pytest.raises(error, match=f"scale_by_polyak: {message}"):
        gx.scale_by_polyak(**kwargs)
