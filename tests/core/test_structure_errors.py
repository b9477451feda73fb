"""A tree-structure mismatch names the first key path where the trees differ and what
each has there, also where a leaf is ``None`` or a ``jax.ShapeDtypeStruct`` (whose
printed structures used to look identical)."""

import jax
import jax.numpy as jnp
import pytest

import gradxform as gx


def _message(tx, params, grads):
    with pytest.raises(ValueError) as info:
        tx.update(grads, tx.init(params), params)
    return str(info.value)


def test_a_none_gradient_where_the_state_has_an_array_names_the_leaf():
    params = {"dense": {"kernel": jnp.ones((2, 3)), "bias": jnp.zeros(3)}}
    grads = {"dense": {"kernel": jnp.ones((2, 3)), "bias": None}}
    message = _message(gx.adam(1e-3), params, grads)
    assert message.startswith("adam: the updates' tree structure does not match the state's.")
    assert "At ['dense']['bias'] the state has a float32[3] array but the updates have None." in message
    lines = message.splitlines()
    assert lines[1] != lines[2].replace("state:  ", "updates:"), message  # visibly different


def test_a_missing_key_and_a_shape_dtype_struct_are_named():
    params = {"a": jnp.ones(2), "b": jnp.ones(2)}
    message = _message(gx.sgd(0.1, momentum=0.9), params, {"a": jnp.ones(2)})
    assert "At <root> the state has a dict with keys ['a', 'b'] but the updates have a dict " \
           "with keys ['a']." in message
    shapes = {"a": jax.ShapeDtypeStruct((2,), jnp.float32), "b": None}
    message = _message(gx.adam(1e-3), {"a": jnp.ones(2), "b": jnp.ones(2)}, shapes)
    assert "At ['b'] the state has a float32[2] array but the updates have None." in message


def test_a_tuple_of_the_wrong_length_and_a_subtree_for_a_leaf():
    params = {"layers": (jnp.ones(2), jnp.ones(3))}
    message = _message(gx.adagrad(0.1), params, {"layers": (jnp.ones(2),)})
    assert "At ['layers'] the state has a tuple with keys ['0', '1'] but the updates have a " \
           "tuple with keys ['0']." in message
    message = _message(gx.adagrad(0.1), {"w": jnp.ones(2)}, {"w": {"inner": jnp.ones(2)}})
    assert "At ['w'] the state has a float32[2] array but the updates have a dict with keys " \
           "['inner']." in message


def test_apply_updates_names_the_first_difference():
    with pytest.raises(ValueError, match=r"apply_updates: .* At \['b'\] the params has a float32\[2\] "
                                         r"array but the updates have a dict with keys \['c'\]"):
        gx.apply_updates({"a": jnp.ones(2), "b": jnp.ones(2)},
                         {"a": jnp.ones(2), "b": {"c": jnp.ones(2)}})
