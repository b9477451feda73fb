"""Errors that say what is wrong.

* Every argument of every public function, given a hostile value (a wrong
  type, negative, zero where positive is needed, NaN, inf, a value that is
  finite in Python but not in float32 or that rounds to a forbidden bound
  there, a rate outside [0, 1), a bad regex, a non-transformation, ...),
  raises at the call: `TypeError` for a wrong type, `ValueError` for a bad
  value of the right type, with a message naming the argument and showing the
  value's ``repr``. The table (``tests/hostile_cases.py``) holds 11769 cases
  over 1124 (function, argument) pairs, plus 38 combination cases below; every
  other argument is in its EXEMPT list with a reason, and
  `test_every_argument_is_covered` keeps it that way.
* Gradients whose tree structure does not match the state raise an error that
  names the transformation and the first key path where the two differ, and
  shows both structures, also inside a chain and under ``jit``.
"""

import inspect
import re
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradxform as gx
from tests.hostile_cases import CASES, CONST, EXEMPT, INF, NAN, SGD, SPECS

_STATE_TYPES = {"OptState", "Params", "Updates", "ScalarOrSchedule", "Schedule"}


def _public_functions() -> dict:
    """Public name -> callable over the three ``__all__`` lists, state NamedTuples left out."""
    found, seen = {}, set()
    for prefix, module in (("", gx), ("keras.", gx.keras), ("schedules.", gx.schedules),
                           ("torch.", gx.torch)):
        for name in module.__all__:
            obj = getattr(module, name)
            is_state = inspect.isclass(obj) and name.endswith("State") and issubclass(obj, tuple)
            if not callable(obj) or is_state or name in _STATE_TYPES or id(obj) in seen:
                continue
            seen.add(id(obj))
            found[prefix + name] = obj
    return found


def _pairs() -> set:
    return {
        (name, parameter)
        for name, function in _public_functions().items()
        for parameter in inspect.signature(function).parameters
    }


def test_every_argument_is_covered():
    covered = {(case.owner, case.argument) for case in CASES}
    missing = _pairs() - covered - set(EXEMPT)
    assert not missing, sorted(missing)
    assert not covered & set(EXEMPT), sorted(covered & set(EXEMPT))
    assert set(EXEMPT) <= _pairs(), sorted(set(EXEMPT) - _pairs())
    assert covered <= _pairs(), sorted(covered - _pairs())
    for owner, (ctor, _, _) in SPECS.items():
        assert _public_functions()[owner] is ctor, owner


def test_docstring_states_the_counts():
    doc = " ".join(sys.modules[__name__].__doc__.split())
    table = len({(case.owner, case.argument) for case in CASES})
    expected = (f"holds {len(CASES)} cases over {table} (function, argument) pairs, "
                f"plus {len(_COMBINATIONS)} combination cases")
    assert expected in doc, (expected, doc)


def _case_id(case) -> str:
    value = case.value if case.argument != "kwargs" else ",".join(case.value)
    text = re.sub(r" at 0x[0-9a-f]+|\s+", " ", repr(value))[:40]
    return f"{case.owner}-{case.argument}={text}"


@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
def test_hostile_argument_raises_naming_argument_and_value(case):
    with pytest.raises(case.exc) as info:
        case.ctor(*case.args, **case.kwargs)
    message = str(info.value)
    assert type(info.value) is case.exc, message  # a ValueError is no TypeError in disguise
    # ``**kwargs``: the unknown names and their values; otherwise the argument and its value.
    shown = case.value.items() if case.argument == "kwargs" else [(case.argument, case.value)]
    for argument, value in shown:
        assert argument in message, message
        assert (case.shown or repr(value)) in message, message


def adam_amsgrad(**kwargs):
    return gx.adam(amsgrad=True, **kwargs)


# Cases the table cannot express: another argument set first, or numpy/jax scalar types.
# The argument under test is the *last* key of kwargs.
_COMBINATIONS = [
    (gx.torch.SequentialLR, {"schedulers": [CONST] * 3, "milestones": [20, 10]}, ValueError),
    (gx.torch.OneCycleLR, {"max_lr": 1.0, "epochs": 3, "steps_per_epoch": None}, ValueError),
    (gx.torch.OneCycleLR, {"max_lr": 1.0, "epochs": 2**16, "steps_per_epoch": 2**16}, ValueError),
    (gx.torch.OneCycleLR, {"max_lr": 1.0, "total_steps": 10, "pct_start": 0.1}, ValueError),
    (gx.torch.ReduceLROnPlateau, {"lr": 0.1, "mode": "min", "threshold_mode": "rel",
                                  "threshold": 1.0}, ValueError),
    (gx.torch.StepLR, {"lr": 0.1, "step_size": np.int64(0)}, ValueError),
    (adam_amsgrad, {"learning_rate": 1e-3, "b2": 1.0}, ValueError),
    (gx.scale_by_adam, {"b2": np.bool_(False)}, TypeError),
    (gx.scale_by_adam, {"b1": np.float32(1.5)}, ValueError),
    (gx.scale_by_adam, {"b2": np.float64(NAN)}, ValueError),
    (gx.scale_by_adam, {"b1": jnp.float32(-0.5)}, ValueError),
    (gx.scale_by_adam, {"b1": np.ones(())[()] * INF}, ValueError),
    (gx.scale_by_adam, {"mu_dtype": np.dtype("uint8")}, ValueError),
    (gx.params_ema, {"overwrite_frequency": np.int64(0)}, ValueError),
    (gx.accumulate_gradients, {"inner": gx.sgd(0.1), "every_k": np.int32(-1)}, ValueError),
    (gx.scale_by_rms, {"bias_correction": True, "decay": 1.0}, ValueError),
    (gx.scale_by_stddev, {"bias_correction": True, "decay": 1.0}, ValueError),
    (gx.rmsprop, {"learning_rate": 0.1, "centered": True, "decay": -0.5}, ValueError),
    (gx.rmsprop, {"learning_rate": 0.1, "bias_correction": True, "decay": 1.0}, ValueError),
    (gx.ema, {"debias": True, "decay": 1.0}, ValueError),
    (gx.ema, {"debias": False, "decay": 1.01}, ValueError),
    (gx.sgd, {"learning_rate": 0.1, "momentum": None, "nesterov": "yes"}, TypeError),
    (gx.sgd, {"learning_rate": 0.1, "momentum": None, "accumulator_dtype": "int32"}, ValueError),
    (gx.adamw, {"learning_rate": 1e-3, "mask": []}, ValueError),
    (gx.keras.adam, {"weight_decay": 0.1, "exclude_from_weight_decay": "("}, ValueError),
    (gx.keras.adam, {"use_ema": True, "ema_momentum": 1.5}, ValueError),
    (gx.keras.adagrad, {"gradient_accumulation_steps": np.int64(1)}, ValueError),
    (gx.schedules.warmup_cosine_decay_schedule,
     {"init_value": 0.0, "peak_value": 1.0, "warmup_steps": 50, "decay_steps": 50}, ValueError),
    (gx.schedules.join_schedules, {"schedules": [CONST] * 3, "boundaries": [20, 10]}, ValueError),
    (gx.schedules.join_schedules, {"schedules": [CONST] * 3, "boundaries": [10, 10]}, ValueError),
    (gx.schedules.linear_onecycle_schedule,
     {"transition_steps": 100, "peak_value": 1.0, "pct_final": 0.3, "pct_start": 0.3}, ValueError),
    (gx.schedules.linear_onecycle_schedule,
     {"transition_steps": 5, "peak_value": 1.0, "pct_start": 0.3, "pct_final": 0.35}, ValueError),
    (gx.dynamic_loss_scale, {"inner": SGD, "initial_scale": 2.0**10, "max_loss_scale": 512.0},
     ValueError),
    (gx.dynamic_loss_scale, {"inner": SGD, "initial_scale": 4.0, "min_loss_scale": 8.0}, ValueError),
    (gx.keras.CosineDecayRestarts,
     {"initial_learning_rate": 0.1, "first_decay_steps": 10, "t_mul": np.float32(0.5)}, ValueError),
    # Finite in Python, not in float32 (numpy scalars too).
    (gx.adam, {"learning_rate": np.float64(1e39)}, ValueError),
    (gx.scale_by_adam, {"b2": np.float64(0.99999999)}, ValueError),
    (gx.static_loss_scale, {"loss_scale": np.float64(1e-50)}, ValueError),
]


def _checked_argument(kwargs):
    """The argument under test: the last one given (the others set up the case)."""
    return list(kwargs)[-1]


def _combination_id(case):
    ctor, kwargs, exc = case
    arg = _checked_argument(kwargs)
    return f"{ctor.__name__}-{arg}={kwargs[arg]!r}"


@pytest.mark.parametrize("ctor, kwargs, exc", _COMBINATIONS,
                         ids=[_combination_id(c) for c in _COMBINATIONS])
def test_invalid_combination_raises_naming_argument_and_value(ctor, kwargs, exc):
    argument = _checked_argument(kwargs)
    value = kwargs[argument]
    with pytest.raises(exc) as info:
        ctor(**kwargs)
    message = str(info.value)
    assert argument in message, message
    assert repr(value) in message, message
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
