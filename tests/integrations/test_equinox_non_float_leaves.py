"""Parameters that are not floating point: Equinox models with integer and bool arrays,
``jax.ShapeDtypeStruct`` params, and ``None`` params.

* An Equinox model filtered with ``eqx.is_array`` keeps its int step counter and
  bool flags among the params; ``eqx.filter_grad`` gives ``None`` for them. Every
  optimizer gives those leaves no state and no update, and trains the float
  leaves exactly as optax does on the model filtered to its float leaves
  (optax itself fails on the ``eqx.is_array`` tree for adam and adagrad).
* ``init`` accepts ``jax.ShapeDtypeStruct`` params, as optax's does, and gives
  the state ``init`` gives for arrays of those shapes and dtypes.
* ``apply_updates`` passes ``None`` params through, as optax's does, and leaves a
  param whose update is ``None`` as it is, as ``eqx.apply_updates`` does.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradxform as gx
from tests.factories import FACTORIES


class _Model(eqx.Module):
    weight: jax.Array
    bias: jax.Array
    steps: jax.Array  # int32: not trained
    active: jax.Array  # bool: not trained

    def __call__(self, x):
        return jnp.where(self.active, jnp.tanh(x @ self.weight + self.bias), 0.0)


def _model():
    key = jax.random.key(0)
    return _Model(
        jax.random.normal(key, (3, 2)), jnp.array([0.1, -0.2]), jnp.int32(7), jnp.array([True, False])
    )


_X = jnp.linspace(-1.0, 1.0, 12).reshape(4, 3)
_Y = jnp.array([[0.5, 0.0], [-0.5, 0.0], [0.25, 0.0], [0.0, 0.0]])


@eqx.filter_grad
def _grads(model):
    return jnp.mean((model(_X) - _Y) ** 2)


def _train(tx, model, is_param, steps=5):
    state = tx.init(eqx.filter(model, is_param))
    for _ in range(steps):
        updates, state = tx.update(_grads(model), state, eqx.filter(model, is_param))
        model = eqx.apply_updates(model, updates)
    return model


def _assert_trains_as_optax_on_the_float_leaves(gx_tx, optax_tx):
    """gx on the ``eqx.is_array`` params moves the float leaves as optax on the float ones."""
    ours = _train(gx_tx, _model(), eqx.is_array)
    with jax.numpy_dtype_promotion("standard"):
        theirs = _train(optax_tx, _model(), eqx.is_inexact_array)
    np.testing.assert_allclose(ours.weight, theirs.weight, rtol=1e-6)
    np.testing.assert_allclose(ours.bias, theirs.bias, rtol=1e-6)
    assert int(ours.steps) == 7 and ours.steps.dtype == jnp.int32
    np.testing.assert_array_equal(ours.active, [True, False])
    assert not np.allclose(ours.bias, _model().bias)  # trained, not frozen


@pytest.mark.parametrize("name", ["sgd", "sgd_momentum", "adam", "adagrad", "rmsprop", "adamw"])
def test_equinox_models_with_int_and_bool_leaves_train_as_optax_trains_the_float_ones(name):
    gx_tx, optax_tx = {
        "sgd": (gx.sgd(0.1), optax.sgd(0.1)),
        "sgd_momentum": (gx.sgd(0.1, momentum=0.9), optax.sgd(0.1, momentum=0.9)),
        "adam": (gx.adam(0.05), optax.adam(0.05)),
        "adagrad": (gx.adagrad(0.1), optax.adagrad(0.1)),
        "rmsprop": (gx.rmsprop(0.01), optax.rmsprop(0.01)),
        "adamw": (gx.adamw(0.05, weight_decay=0.1), optax.adamw(0.05, weight_decay=0.1)),
    }[name]
    _assert_trains_as_optax_on_the_float_leaves(gx_tx, optax_tx)


def _rank_labels(params):
    return jax.tree.map(lambda x: "adam" if jnp.ndim(x) >= 2 else "sgd", params)


@pytest.mark.parametrize("name", ["masked", "partition", "freeze", "apply_if_finite"])
def test_wrappers_route_int_and_bool_leaves_as_optax_routes_the_float_ones(name):
    def matrices(params):
        return jax.tree.map(lambda x: jnp.ndim(x) >= 2, params)

    gx_tx, optax_tx = {
        "masked": (gx.masked(gx.adam(0.05), matrices), optax.masked(optax.adam(0.05), matrices)),
        "partition": (
            gx.partition({"adam": gx.adam(0.05), "sgd": gx.sgd(0.1, 0.9)}, _rank_labels),
            optax.partition({"adam": optax.adam(0.05), "sgd": optax.sgd(0.1, 0.9)}, _rank_labels),
        ),
        "freeze": (gx.chain(gx.sgd(0.1), gx.freeze(matrices)),
                   optax.chain(optax.sgd(0.1), optax.freeze(matrices))),
        "apply_if_finite": (gx.apply_if_finite(gx.adam(0.05), 2),
                            optax.apply_if_finite(optax.adam(0.05), 2)),
    }[name]
    _assert_trains_as_optax_on_the_float_leaves(gx_tx, optax_tx)


def test_non_float_leaves_get_no_state_and_an_integer_gradient_a_named_error():
    params = eqx.filter(_model(), eqx.is_array)
    state = gx.adam(1e-3).init(params)
    assert state[0].mu.steps is None and state[0].mu.active is None
    assert state[0].mu.weight.shape == (3, 2)
    grads = jax.tree.map(jnp.ones_like, params)  # an int and a bool "gradient"
    with pytest.raises(TypeError, match=r"adam: gradients must be floating-point.*at \.(steps|active)"):
        gx.adam(1e-3).update(grads, state, params)


def _shapes(tree):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(jnp.shape(x), jnp.result_type(x)), tree)


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_init_accepts_shape_dtype_structs_as_optax_does(name):
    params = {"kernel": jnp.ones((2, 3)), "bias": jnp.zeros(3, jnp.bfloat16), "count": jnp.int32(0)}
    tx = FACTORIES[name]()
    from_arrays = tx.init(params)
    from_shapes = tx.init(_shapes(params))
    assert jax.tree.structure(from_shapes) == jax.tree.structure(from_arrays)
    for got, want in zip(jax.tree.leaves(from_shapes), jax.tree.leaves(from_arrays)):
        assert (got.shape, got.dtype) == (want.shape, want.dtype)
    optax.adam(1e-3).init(_shapes(params))  # the reference accepts them too


def test_apply_updates_passes_none_params_through_and_keeps_params_without_an_update():
    params = {"w": jnp.ones(2), "filtered": None, "steps": jnp.int32(3)}
    updates = {"w": jnp.full(2, 0.5), "filtered": jnp.ones(2), "steps": None}
    got = gx.apply_updates(params, updates)
    assert got["filtered"] is None and got["steps"] is params["steps"]
    np.testing.assert_array_equal(got["w"], [1.5, 1.5])
    reference = optax.apply_updates({"w": params["w"], "filtered": None},
                                    {"w": updates["w"], "filtered": updates["filtered"]})
    assert reference["filtered"] is None
    np.testing.assert_array_equal(got["w"], reference["w"])


def test_weight_decay_skips_none_params_and_none_updates():
    params = {"w": jnp.ones(2), "filtered": None, "steps": jnp.int32(3)}
    updates = {"w": jnp.full(2, 0.5), "filtered": jnp.ones(2), "steps": None}
    for tx in (gx.add_decayed_weights(0.1), gx.decoupled_weight_decay(0.1, 1.0)):
        got, _ = tx.update(updates, tx.init(params), params)
        assert got["steps"] is None
        np.testing.assert_array_equal(got["filtered"], updates["filtered"])
    tx = gx.add_decayed_weights(0.1)
    got, _ = tx.update(updates, tx.init(params), params)
    np.testing.assert_allclose(got["w"], [0.6, 0.6])
