"""Errors that say what is wrong.

* A bad hyperparameter raises at construction (``ValueError`` for a value out
  of range, ``TypeError`` for a wrong type) and the message names the
  argument and shows the value's ``repr``.
* Gradients whose tree structure does not match the state raise an error that
  names the transformation and shows both structures, also inside a chain and
  under ``jit``.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradxform as gx

NAN = float("nan")
INF = float("inf")



def adam_amsgrad(**kwargs):
    return gx.adam(amsgrad=True, **kwargs)


# (constructor, kwargs, exception). The argument under test is the *last* key of
# kwargs (the others only set the case up); the message must name it and show the
# repr of its value.
_INVALID = [
    # Adam family: b1 and b2 in [0, 1).
    *[
        (ctor, {arg: value}, ValueError)
        for ctor in (gx.scale_by_adam, gx.scale_by_amsgrad)
        for arg in ("b1", "b2")
        for value in (-0.1, 1.0, 1.5, NAN, INF, -INF)
    ],
    *[
        (opt, {"learning_rate": 1e-3, arg: value}, ValueError)
        for opt in (gx.adam, gx.adamw)
        for arg in ("b1", "b2")
        for value in (-0.5, 1.0, 2.0, NAN)
    ],
    (adam_amsgrad, {"learning_rate": 1e-3, "b2": 1.0}, ValueError),
    *[
        (ctor, {arg: value}, ValueError)
        for ctor in (gx.scale_by_adam, gx.scale_by_amsgrad)
        for arg in ("eps", "eps_root")
        for value in (-1e-8, -1.0, NAN, INF)
    ],
    (gx.adam, {"learning_rate": 1e-3, "eps": -1e-8}, ValueError),
    (gx.adamw, {"learning_rate": 1e-3, "eps_root": -1.0}, ValueError),
    # Wrong types for numbers.
    (gx.scale_by_adam, {"b1": True}, TypeError),
    (gx.scale_by_adam, {"b2": np.bool_(False)}, TypeError),
    (gx.scale_by_adam, {"b1": "0.9"}, TypeError),
    (gx.scale_by_adam, {"eps": None}, TypeError),
    (gx.scale_by_adam, {"b1": jnp.ones(2)}, TypeError),
    (gx.scale_by_adam, {"b1": 0.5 + 0.1j}, TypeError),
    (gx.scale_by_amsgrad, {"eps": False}, TypeError),
    (gx.adam, {"learning_rate": True}, TypeError),
    # Numpy and jax scalars are checked too.
    (gx.scale_by_adam, {"b1": np.float32(1.5)}, ValueError),
    (gx.scale_by_adam, {"b2": np.float64(NAN)}, ValueError),
    (gx.scale_by_adam, {"b1": jnp.float32(-0.5)}, ValueError),
    # Bools where a bool is expected.
    (gx.scale_by_adam, {"nesterov": 1}, TypeError),
    (gx.scale_by_adam, {"nesterov": "yes"}, TypeError),
    (gx.scale_by_amsgrad, {"bias_correction_mu": None}, TypeError),
    (gx.scale_by_amsgrad, {"bias_correction_nu": 0}, TypeError),
    (gx.adam, {"learning_rate": 1e-3, "nesterov": "no"}, TypeError),
    # Dtypes.
    (gx.scale_by_adam, {"mu_dtype": "not_a_dtype"}, TypeError),
    (gx.scale_by_adam, {"mu_dtype": 3.5}, TypeError),
    (gx.scale_by_adam, {"mu_dtype": jnp.int32}, ValueError),
    (gx.scale_by_adam, {"nu_dtype": "int8"}, ValueError),
    (gx.scale_by_adam, {"nu_dtype": np.dtype("bool")}, ValueError),
    (gx.scale_by_amsgrad, {"mu_dtype": "uint8"}, ValueError),
    (gx.adam, {"learning_rate": 1e-3, "mu_dtype": "int32"}, ValueError),
    (gx.scale_by_adagrad, {"accumulator_dtype": "int16"}, ValueError),
    (gx.scale_by_adagrad, {"accumulator_dtype": "floaty"}, TypeError),
    (gx.trace, {"decay": 0.9, "accumulator_dtype": "int32"}, ValueError),
    (gx.ema, {"decay": 0.9, "accumulator_dtype": "no_such_dtype"}, TypeError),
    (gx.sgd, {"learning_rate": 0.1, "momentum": 0.9, "accumulator_dtype": "int32"}, ValueError),
    # Clipping thresholds are positive.
    *[
        (ctor, {"max_norm": value}, exc)
        for ctor in (gx.clip_by_global_norm, gx.clip_by_norm)
        for value, exc in ((0.0, ValueError), (-1.0, ValueError), (NAN, ValueError),
                           (INF, ValueError), (True, TypeError), ("1", TypeError))
    ],
    *[
        (gx.clip, {"max_delta": value}, exc)
        for value, exc in ((0.0, ValueError), (-0.5, ValueError), (NAN, ValueError),
                           (INF, ValueError), (False, TypeError))
    ],
    # Adagrad.
    (gx.scale_by_adagrad, {"initial_accumulator_value": -0.1}, ValueError),
    (gx.scale_by_adagrad, {"initial_accumulator_value": NAN}, ValueError),
    (gx.scale_by_adagrad, {"eps": -1e-7}, ValueError),
    (gx.scale_by_adagrad, {"eps": INF}, ValueError),
    (gx.adagrad, {"learning_rate": 0.1, "initial_accumulator_value": -1.0}, ValueError),
    (gx.adagrad, {"learning_rate": 0.1, "eps": -1.0}, ValueError),
    (gx.adagrad, {"learning_rate": 0.1, "initial_accumulator_value": True}, TypeError),
    # Learning rates are non-negative (the sign flip is done for you).
    *[
        (opt, {"learning_rate": value}, exc)
        for opt in (gx.sgd, gx.adagrad, gx.adam, gx.adamw, gx.rmsprop, gx.scale_by_learning_rate)
        for value, exc in ((-1e-3, ValueError), (NAN, ValueError), (INF, ValueError))
    ],
    (gx.scale_by_learning_rate, {"learning_rate": "0.1"}, TypeError),
    (gx.scale_by_learning_rate, {"learning_rate": 0.1, "flip_sign": "yes"}, TypeError),
    # Weight decay is non-negative.
    *[
        (ctor, {**base, "weight_decay": value}, exc)
        for ctor, base in ((gx.add_decayed_weights, {}), (gx.adamw, {"learning_rate": 1e-3}))
        for value, exc in ((-1e-4, ValueError), (NAN, ValueError), (INF, ValueError), (True, TypeError))
    ],
    (gx.add_decayed_weights, {"mask": {}}, ValueError),
    (gx.adamw, {"learning_rate": 1e-3, "mask": []}, ValueError),
    # RMS family.
    *[
        (ctor, {arg: value}, ValueError)
        for ctor in (gx.scale_by_rms, gx.scale_by_stddev)
        for arg, value in (("decay", -0.1), ("decay", 1.5), ("decay", NAN), ("eps", -1e-8),
                           ("initial_scale", -0.1), ("initial_scale", INF))
    ],
    (gx.scale_by_rms, {"bias_correction": True, "decay": 1.0}, ValueError),
    (gx.scale_by_stddev, {"bias_correction": True, "decay": 1.0}, ValueError),
    (gx.scale_by_rms, {"eps_in_sqrt": "true"}, TypeError),
    (gx.scale_by_stddev, {"bias_correction": 1}, TypeError),
    (gx.rmsprop, {"learning_rate": 0.1, "decay": 1.5}, ValueError),
    (gx.rmsprop, {"learning_rate": 0.1, "eps": -1.0}, ValueError),
    (gx.rmsprop, {"learning_rate": 0.1, "initial_scale": -1.0}, ValueError),
    (gx.rmsprop, {"learning_rate": 0.1, "centered": True, "decay": -0.5}, ValueError),
    # Momentum and moving averages.
    (gx.trace, {"decay": -0.1}, ValueError),
    (gx.trace, {"decay": 1.5}, ValueError),
    (gx.trace, {"decay": NAN}, ValueError),
    (gx.trace, {"decay": 0.9, "nesterov": "yes"}, TypeError),
    (gx.ema, {"decay": 1.0}, ValueError),  # debias=True by default: 1 - 1**t = 0
    (gx.ema, {"debias": True, "decay": 1.0}, ValueError),
    (gx.ema, {"decay": -0.5}, ValueError),
    (gx.ema, {"debias": False, "decay": 1.01}, ValueError),
    (gx.ema, {"decay": INF}, ValueError),
    (gx.ema, {"decay": 0.9, "debias": None}, TypeError),
    (gx.sgd, {"learning_rate": 0.1, "momentum": 0.9, "nesterov": "yes"}, TypeError),
    # Scaling.
    (gx.scale, {"step_size": NAN}, ValueError),
    (gx.scale, {"step_size": -INF}, ValueError),
    (gx.scale, {"step_size": True}, TypeError),
    (gx.scale, {"step_size": "2"}, TypeError),
    (gx.scale, {"step_size": jnp.ones(3)}, TypeError),
    # Keras-form features.
    (gx.scale_by_adam, {"eps_hat": 1}, TypeError),
    (gx.scale_by_amsgrad, {"eps_hat": "yes"}, TypeError),
    *[
        (gx.decoupled_weight_decay, {**base, arg: value}, exc)
        for base, arg in (({"learning_rate": 0.1}, "weight_decay"), ({"weight_decay": 0.1}, "learning_rate"))
        for value, exc in ((-0.1, ValueError), (NAN, ValueError), (INF, ValueError), (True, TypeError))
    ],
    *[
        (ctor, {**base, "exclude": value}, exc)
        for ctor, base in ((gx.add_decayed_weights, {}), (gx.decoupled_weight_decay, {"weight_decay": 0.1, "learning_rate": 0.1}))
        for value, exc in (("(", ValueError), ("bias[", ValueError), (3, TypeError), (b"bias", TypeError))
    ],
    (gx.add_decayed_weights, {"mask": "bias("}, ValueError),
    *[
        (gx.params_ema, {arg: value}, exc)
        for arg, value, exc in (
            ("decay", 1.5, ValueError), ("decay", -0.1, ValueError), ("decay", NAN, ValueError),
            ("decay", "0.9", TypeError), ("overwrite_frequency", 0, ValueError),
            ("overwrite_frequency", -3, ValueError), ("overwrite_frequency", 2.0, TypeError),
            ("overwrite_frequency", True, TypeError), ("calls_per_step", 0, ValueError),
            ("calls_per_step", None, TypeError), ("ema_dtype", "int32", ValueError),
        )
    ],
    *[
        (gx.accumulate_gradients, {"inner": gx.sgd(0.1), arg: value}, exc)
        for arg, value, exc in (
            ("every_k", 0, ValueError), ("every_k", -2, ValueError), ("every_k", 2.5, TypeError),
            ("every_k", True, TypeError),
        )
    ],
    (gx.accumulate_gradients, {"inner": gx.sgd(0.1), "every_k": 2, "accumulator_dtype": "int8"}, ValueError),
    *[
        (gx.multi_steps, {"inner": gx.sgd(0.1), **base, arg: value}, exc)
        for base, arg, value, exc in (
            ({}, "every_k_schedule", 0, ValueError), ({}, "every_k_schedule", 1.5, TypeError),
            ({"every_k_schedule": 2}, "use_grad_mean", "yes", TypeError),
            ({"every_k_schedule": 2}, "should_skip_update_fn", 3, TypeError),
            ({"every_k_schedule": 2}, "accumulator_dtype", "int32", ValueError),
        )
    ],
    *[
        (gx.apply_if_finite, {"inner": gx.sgd(0.1), "max_consecutive_errors": value}, exc)
        for value, exc in ((-1, ValueError), (1.5, TypeError), (True, TypeError), (None, TypeError))
    ],
    (gx.inject_hyperparams, {"inner_factory": 3}, TypeError),
    (gx.inject_hyperparams, {"inner_factory": gx.adam, "static_args": ("beta",)}, ValueError),
    (gx.inject_hyperparams, {"inner_factory": gx.adam, "static_args": 7}, TypeError),
    (gx.inject_hyperparams, {"inner_factory": gx.adam, "hyperparam_dtype": "int32"}, ValueError),
    (gx.inject_hyperparams, {"inner_factory": gx.adam, "hyperparam_dtype": "nope"}, TypeError),
    (gx.masked, {"inner": gx.sgd(0.1), "mask": "bias("}, ValueError),
    (gx.masked, {"inner": gx.sgd(0.1), "mask": {}}, ValueError),
    (gx.freeze, {"mask": "(unclosed"}, ValueError),
    (gx.partition, {"transforms": {"a": gx.sgd(0.1)}, "labels": None}, ValueError),
    *[
        (gx.static_loss_scale, {"loss_scale": value}, exc)
        for value, exc in ((0.0, ValueError), (-128.0, ValueError), (NAN, ValueError),
                           (INF, ValueError), (True, TypeError))
    ],
    *[
        (gx.dynamic_loss_scale, {"inner": gx.sgd(0.1), arg: value}, exc)
        for arg, value, exc in (
            ("initial_scale", 0.0, ValueError), ("initial_scale", -1.0, ValueError),
            ("initial_scale", INF, ValueError), ("dynamic_growth_steps", 0, ValueError),
            ("dynamic_growth_steps", 10.0, TypeError),
        )
    ],
]

def _checked_argument(kwargs):
    """The argument under test: the last one given (the others set up the case)."""
    return list(kwargs)[-1]


def _case_id(case):
    ctor, kwargs, exc = case
    name = ctor.__name__
    arg = _checked_argument(kwargs)
    return f"{name}-{arg}={kwargs[arg]!r}"


@pytest.mark.parametrize("ctor, kwargs, exc", _INVALID, ids=[_case_id(c) for c in _INVALID])
def test_invalid_hyperparameter_raises_naming_argument_and_value(ctor, kwargs, exc):
    argument = _checked_argument(kwargs)
    value = kwargs[argument]
    with pytest.raises(exc) as info:
        ctor(**kwargs)
    message = str(info.value)
    assert argument in message, message
    assert repr(value) in message, message
    # A ValueError is not a TypeError in disguise and vice versa.
    assert type(info.value) is exc


@pytest.mark.parametrize(
    "ctor, kwargs, owner",
    [
        (gx.scale_by_adam, {"b1": 1.5}, "scale_by_adam"),
        (gx.scale_by_amsgrad, {"b2": -1.0}, "scale_by_amsgrad"),
        (gx.clip_by_global_norm, {"max_norm": 0.0}, "clip_by_global_norm"),
        (gx.clip_by_norm, {"max_norm": -2.0}, "clip_by_norm"),
        (gx.scale_by_adagrad, {"initial_accumulator_value": -0.1}, "scale_by_adagrad"),
        (gx.ema, {"decay": 1.0}, "ema"),
    ],
)
def test_message_names_the_transformation(ctor, kwargs, owner):
    with pytest.raises(ValueError, match=owner):
        ctor(**kwargs)


def test_out_of_range_message_states_the_interval():
    with pytest.raises(ValueError) as info:
        gx.scale_by_adam(b1=1.5)
    assert str(info.value) == "scale_by_adam: b1 must be in [0, 1), got 1.5"


@pytest.mark.parametrize("ctor", [gx.sgd, gx.rmsprop])
def test_momentum_out_of_range_names_momentum(ctor):
    with pytest.raises(ValueError) as info:
        ctor(0.1, momentum=1.5)
    assert "momentum" in str(info.value)
    assert "1.5" in str(info.value)


def test_adam_nesterov_with_amsgrad_rejected():
    with pytest.raises(ValueError) as info:
        gx.adam(1e-3, nesterov=True, amsgrad=True)
    assert "nesterov" in str(info.value) and "amsgrad" in str(info.value)


@pytest.mark.parametrize(
    "ctor, value",
    [(gx.scale_by_schedule, 0.1), (gx.stateless, "f"), (gx.stateless_with_tree_map, None)],
)
def test_non_callable_function_argument(ctor, value):
    with pytest.raises(TypeError) as info:
        ctor(value)
    assert ctor.__name__ in str(info.value)
    assert repr(value) in str(info.value)


# --- valid edge values are accepted -----------------------------------------------


_VALID = [
    (gx.scale_by_adam, {"b1": 0.0, "b2": 0.0, "eps": 0.0, "eps_root": 0.0}),
    (gx.scale_by_adam, {"b1": np.float32(0.5), "b2": jnp.float32(0.99)}),
    (gx.scale_by_adam, {"mu_dtype": jnp.float16, "nu_dtype": "float32"}),
    (gx.scale_by_adam, {"nesterov": np.bool_(True)}),
    (gx.scale_by_amsgrad, {"b1": 0.0, "eps": 0.0, "bias_correction_nu": False}),
    (gx.clip_by_global_norm, {"max_norm": 1e-30}),
    (gx.clip, {"max_delta": np.float64(3.0)}),
    (gx.scale_by_adagrad, {"initial_accumulator_value": 0.0, "eps": 0.0}),
    (gx.adagrad, {"learning_rate": 0.0}),
    (gx.adam, {"learning_rate": None}),
    (gx.adam, {"learning_rate": lambda count: 0.1}),
    (gx.adamw, {"learning_rate": 1e-3, "weight_decay": 0.0}),
    (gx.add_decayed_weights, {"weight_decay": lambda count: 0.1, "mask": lambda p: p}),
    (gx.scale_by_rms, {"decay": 1.0}),
    (gx.scale_by_rms, {"decay": 0.0, "bias_correction": True}),
    (gx.scale_by_stddev, {"decay": 1.0, "eps": 0.0}),
    (gx.trace, {"decay": 1.0}),
    (gx.trace, {"decay": 0.0, "nesterov": True}),
    (gx.ema, {"decay": 1.0, "debias": False}),
    (gx.ema, {"decay": 0.0}),
    (gx.scale, {"step_size": -1e30}),
    (gx.scale, {"step_size": jnp.array(-0.5)}),
    (gx.sgd, {"learning_rate": 0.1, "momentum": 0.0}),
    (gx.rmsprop, {"learning_rate": 0.1, "momentum": 1.0, "decay": 1.0}),
]


@pytest.mark.parametrize("ctor, kwargs", _VALID, ids=[f"{c.__name__}-{sorted(k)}" for c, k in _VALID])
def test_valid_edge_values_are_accepted(ctor, kwargs):
    tx = ctor(**kwargs)
    assert isinstance(tx, gx.GradientTransformation)


@pytest.mark.parametrize(
    "ctor, kwargs",
    [
        (gx.scale_by_adam, {"mu_dtype": jnp.bfloat16}),
        (gx.scale_by_amsgrad, {"nu_dtype": "bfloat16"}),
        (gx.adam, {"learning_rate": 1e-3, "mu_dtype": jnp.bfloat16}),
        (gx.trace, {"decay": 0.9, "accumulator_dtype": jnp.bfloat16}),
        (gx.ema, {"decay": 0.9, "accumulator_dtype": np.dtype(jnp.bfloat16)}),
        (gx.scale_by_adagrad, {"accumulator_dtype": jnp.bfloat16}),
    ],
    ids=["adam-mu", "amsgrad-nu", "adam-opt-mu", "trace", "ema", "adagrad"],
)
def test_bfloat16_state_dtypes_are_accepted(ctor, kwargs):
    tx = ctor(**kwargs)
    state = tx.init({"w": jnp.zeros(3, jnp.float32)})
    assert jnp.dtype(jnp.bfloat16) in {leaf.dtype for leaf in jax.tree.leaves(state)}


def test_traced_hyperparameters_are_let_through():
    params = {"w": jnp.array([1.0, -1.0])}
    grads = {"w": jnp.array([0.5, 2.0])}

    @jax.jit
    def step(lr, b1):
        tx = gx.adam(lr, b1=b1)
        return tx.update(grads, tx.init(params), params)[0]

    updates = step(jnp.float32(0.1), jnp.float32(0.5))
    # First Adam step: -lr * g / (|g| + eps).
    g = np.array([0.5, 2.0])
    np.testing.assert_allclose(updates["w"], -0.1 * g / (np.abs(g) + 1e-8), rtol=2e-5)


# --- tree structure mismatches ------------------------------------------------------------

_PARAMS = {"w": jnp.ones((2, 3)), "b": jnp.zeros(3), "s": jnp.array(1.0)}
_BAD_GRADS = {
    "renamed_key": {"w": jnp.ones((2, 3)), "c": jnp.zeros(3), "s": jnp.array(1.0)},
    "extra_leaf": {"w": jnp.ones((2, 3)), "b": jnp.zeros(3), "s": jnp.array(1.0), "x": jnp.ones(1)},
    "list_not_dict": [jnp.ones((2, 3)), jnp.zeros(3), jnp.array(1.0)],
}
# A None gradient where the state holds an array (the param was not filtered out).
_NONE_GRADS = {"w": jnp.ones((2, 3)), "b": None, "s": jnp.array(1.0)}

_STATEFUL = {
    "scale_by_adam": gx.scale_by_adam,
    "scale_by_amsgrad": gx.scale_by_amsgrad,
    "scale_by_adagrad": gx.scale_by_adagrad,
    "scale_by_rms": gx.scale_by_rms,
    "scale_by_stddev": gx.scale_by_stddev,
    "trace": lambda: gx.trace(0.9),
    "ema": lambda: gx.ema(0.9),
    "params_ema": lambda: gx.params_ema(0.9),
    "accumulate_gradients": lambda: gx.accumulate_gradients(gx.sgd(0.1), 2),
    "multi_steps": lambda: gx.multi_steps(gx.sgd(0.1), 2),
}


def _assert_names_both_structures(message, owner, grads):
    assert owner in message, message
    assert str(jax.tree.structure(grads, is_leaf=lambda x: x is None)) in message, message
    assert str(jax.tree.structure(_PARAMS)) in message, message


@pytest.mark.parametrize("grads_kind", sorted(_BAD_GRADS))
@pytest.mark.parametrize("owner", sorted(_STATEFUL))
def test_structure_mismatch_names_transform_and_both_structures(owner, grads_kind):
    tx = _STATEFUL[owner]()
    grads = _BAD_GRADS[grads_kind]
    with pytest.raises(ValueError) as info:
        tx.update(grads, tx.init(_PARAMS), _PARAMS)
    _assert_names_both_structures(str(info.value), owner, grads)


@pytest.mark.parametrize("owner", sorted(_STATEFUL))
def test_none_gradient_where_state_has_array_raises(owner):
    tx = _STATEFUL[owner]()
    with pytest.raises(ValueError) as info:
        tx.update(_NONE_GRADS, tx.init(_PARAMS), _PARAMS)
    _assert_names_both_structures(str(info.value), owner, _NONE_GRADS)


@pytest.mark.parametrize("owner", sorted(_STATEFUL))
def test_structure_mismatch_inside_chain_and_under_jit(owner):
    tx = gx.chain(gx.clip_by_global_norm(1.0), _STATEFUL[owner](), gx.scale_by_learning_rate(0.1))
    grads = _BAD_GRADS["renamed_key"]
    state = tx.init(_PARAMS)
    with pytest.raises(ValueError) as info:
        tx.update(grads, state, _PARAMS)
    _assert_names_both_structures(str(info.value), owner, grads)
    with pytest.raises(ValueError) as info:
        jax.jit(tx.update)(grads, state, _PARAMS)
    _assert_names_both_structures(str(info.value), owner, grads)


@pytest.mark.parametrize(
    "make, owner",
    [
        (lambda: gx.adam(0.1), "scale_by_adam"),
        (lambda: gx.adam(0.1, amsgrad=True), "scale_by_amsgrad"),
        (lambda: gx.adagrad(0.1), "scale_by_adagrad"),
        (lambda: gx.rmsprop(0.1, centered=True), "scale_by_stddev"),
        (lambda: gx.sgd(0.1, momentum=0.9), "trace"),
        (lambda: gx.named_chain(("m", gx.ema(0.9)), ("lr", gx.scale(-1.0))), "ema"),
    ],
)
def test_structure_mismatch_in_optimizers_under_jit(make, owner):
    tx = make()
    grads = _BAD_GRADS["extra_leaf"]
    with pytest.raises(ValueError) as info:
        jax.jit(tx.update)(grads, tx.init(_PARAMS), _PARAMS)
    _assert_names_both_structures(str(info.value), owner, grads)


def test_add_decayed_weights_structure_mismatch_with_params():
    tx = gx.add_decayed_weights(0.1)
    grads = _BAD_GRADS["renamed_key"]
    with pytest.raises(ValueError) as info:
        tx.update(grads, tx.init(_PARAMS), _PARAMS)
    _assert_names_both_structures(str(info.value), "add_decayed_weights", grads)


@pytest.mark.parametrize("make", [lambda: gx.add_decayed_weights(0.1), lambda: gx.adamw(0.1)])
def test_add_decayed_weights_needs_params(make):
    tx = make()
    grads = {"w": jnp.ones(2)}
    with pytest.raises(ValueError) as info:
        tx.update(grads, tx.init(grads), None)
    assert "add_decayed_weights" in str(info.value)
    assert "params" in str(info.value)


@pytest.mark.parametrize(
    "mask",
    [
        {"w": True, "b": False},  # a key is missing
        {"w": True, "b": False, "s": True, "z": False},  # an extra key
        [True, False, True],  # a list against a dict
        lambda params: {"w": True},  # a callable returning a bad prefix
    ],
    ids=["missing", "extra", "list", "callable"],
)
def test_mask_not_a_prefix_of_params_raises(mask):
    tx = gx.add_decayed_weights(0.1, mask=mask)
    grads = jax.tree.map(jnp.ones_like, _PARAMS)
    with pytest.raises(ValueError) as info:
        tx.update(grads, tx.init(_PARAMS), _PARAMS)
    assert "add_decayed_weights" in str(info.value)
    assert "mask" in str(info.value)
    with pytest.raises(ValueError, match="add_decayed_weights"):
        jax.jit(gx.adamw(0.1, mask=mask).update)(grads, gx.adamw(0.1).init(_PARAMS), _PARAMS)


def test_valid_prefix_mask_is_accepted_and_applied():
    # Reference: u = g + wd * p where the mask is True, u = g elsewhere.
    tx = gx.add_decayed_weights(0.5, mask={"w": True, "b": False, "s": True})
    params = {"w": jnp.full((2, 3), 2.0), "b": jnp.full(3, 4.0), "s": jnp.array(-2.0)}
    grads = jax.tree.map(jnp.ones_like, params)
    updates, _ = tx.update(grads, tx.init(params), params)
    np.testing.assert_array_equal(updates["w"], np.full((2, 3), 2.0, np.float32))
    np.testing.assert_array_equal(updates["b"], np.ones(3, np.float32))
    np.testing.assert_array_equal(updates["s"], np.float32(0.0))
