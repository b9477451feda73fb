"""Errors name the function the user called, the argument or key path, the value, and
the fix, also when the problem is found by a transformation that function builds."""

import jax
import jax.numpy as jnp
import pytest

import gradxform as gx


@pytest.mark.parametrize(
    "call,expected",
    [
        (lambda: gx.adagrad(-1.0), "adagrad: learning_rate must be in [0, inf), got -1.0"),
        (lambda: gx.adam(1e-3, b1=1.5), "adam: b1 must be in [0, 1), got 1.5"),
        (lambda: gx.adamw(1e-3, eps=-1.0), "adamw: eps must be in [0, inf), got -1.0"),
        (lambda: gx.rmsprop(1e-3, decay=2.0), "rmsprop: decay must be in [0, 1], got 2.0"),
        (lambda: gx.adamw(1e-3, mask=3), "adamw: mask must be a pytree of bools"),
        (lambda: gx.sgd(1e39), "sgd: learning_rate must be finite in float32"),
    ],
)
def test_an_argument_checked_by_an_inner_transformation_names_the_function_called(call, expected):
    with pytest.raises(ValueError if "must be in" in expected or "finite" in expected
                       else TypeError) as info:
        call()
    assert str(info.value).startswith(expected), str(info.value)
    assert "scale_by_" not in str(info.value) and "add_decayed" not in str(info.value)


@pytest.mark.parametrize(
    "call,pieces",
    [
        (lambda: gx.adam(lr=1e-3), ["adam:", "lr=0.001", "did you mean learning_rate=0.001?",
                                    "adam(learning_rate, b1=0.9"]),
        (lambda: gx.adam(1e-3, beta_1=0.9), ["adam:", "beta_1=0.9", "did you mean b1=0.9?"]),
        (lambda: gx.sgd(0.1, momentun=0.9), ["sgd:", "momentun=0.9", "did you mean momentum=0.9?"]),
        (lambda: gx.adam(), ["adam:", "missing a required argument: 'learning_rate'",
                             "It takes adam(learning_rate"]),
        (lambda: gx.clip_by_global_norm(1.0, 2.0), ["clip_by_global_norm:", "too many"]),
    ],
)
def test_a_wrong_argument_name_is_named_with_a_suggestion(call, pieces):
    with pytest.raises(TypeError) as info:
        call()
    for piece in pieces:
        assert piece in str(info.value), str(info.value)


def test_a_state_from_another_optimizer_is_a_type_error_naming_both_states():
    params = {"w": jnp.ones(3)}
    with pytest.raises(TypeError) as info:
        gx.adam(1e-3).update(params, gx.sgd(0.1, momentum=0.9).init(params), params)
    message = str(info.value)
    assert message.startswith("adam: the state is a TraceState")
    assert "ScaleByAdamState" in message and "tx.init(params)" in message
    with pytest.raises(TypeError, match="adagrad: the state is a ScaleByAdamState"):
        jax.jit(gx.adagrad(0.1).update)(params, gx.adam(1e-3).init(params))


def test_update_time_errors_name_the_optimizer_called():
    params = {"w": jnp.ones(3)}
    with pytest.raises(ValueError) as info:
        gx.adam(1e-3).update({"w": jnp.ones(2)}, gx.adam(1e-3).init(params))
    assert str(info.value).startswith("adam: the update at ['w'] has shape (2,)")
    with pytest.raises(TypeError, match=r"adamw: gradients must be floating-point .* at \['w'\]"):
        gx.adamw(1e-3).update({"w": jnp.ones(3, jnp.int32)}, gx.adamw(1e-3).init(params), params)


def test_integer_params_get_no_state_instead_of_a_bare_dtype_error():
    state = gx.adam(1e-3).init({"w": jnp.ones(3), "step": jnp.int32(0)})
    assert state[0].mu["step"] is None and state[0].nu["step"] is None
