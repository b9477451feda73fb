"""A schedule must return one real number per step; anything else raises when the step is traced.

A learning-rate (or weight-decay, or ``every_k``) callable that returns an
array of shape ``(n,)`` used to be broadcast against the updates: each entry
scaled by its own rate, or every leaf of another shape broadcast to ``(n,)``.
Now ``numerics.schedule_value`` raises a `ValueError` naming the function the
user called and the argument, at trace time (under ``jit`` and
``jax.eval_shape`` too, where nothing is computed). A value that is not a real
number at all (a string, a bool, a complex number) raises a `TypeError`.
Scalars of every kind stay valid: Python ints and floats, numpy scalars, 0-d
arrays, int32 counts.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradxform as gx
from gradxform.core import numerics

PARAMS = {"w": jnp.ones(3), "b": jnp.ones(())}
VECTOR = lambda count: jnp.full(3, 0.1)  # noqa: E731
ROW = lambda count: jnp.full((1,), 0.1)  # noqa: E731

# (what the user called, the transformation, the argument the error names). The error is
# raised by the transformation that evaluates the schedule; an optimizer built of it may name
# itself instead.
BUILDERS = [
    ("sgd", lambda f: gx.sgd(f), "learning_rate"),
    ("adam", lambda f: gx.adam(f), "learning_rate"),
    ("keras.adam", lambda f: gx.keras.adam(f), "learning_rate"),
    ("scale_by_learning_rate", lambda f: gx.scale_by_learning_rate(f), "learning_rate"),
    ("scale_by_schedule", lambda f: gx.scale_by_schedule(f), "step_size_fn"),
    ("add_decayed_weights", lambda f: gx.add_decayed_weights(f), "weight_decay"),
    ("decoupled_weight_decay", lambda f: gx.decoupled_weight_decay(f, 0.1), "weight_decay"),
    ("decoupled_weight_decay", lambda f: gx.decoupled_weight_decay(0.1, f), "learning_rate"),
    ("inject_hyperparams(adam)", lambda f: gx.inject_hyperparams(gx.adam)(learning_rate=f),
     "learning_rate"),
]
IDS = [f"{owner}-{argument}" for owner, _, argument in BUILDERS]


def _update(tx, jit=True):
    state = tx.init(PARAMS)
    update = jax.jit(tx.update) if jit else tx.update
    return update(PARAMS, state, PARAMS)


@pytest.mark.parametrize("schedule", [VECTOR, ROW], ids=["shape-(3,)", "shape-(1,)"])
@pytest.mark.parametrize("owner, build, argument", BUILDERS, ids=IDS)
def test_non_scalar_schedule_raises_naming_owner_and_argument(owner, build, argument, schedule):
    tx = build(schedule)
    with pytest.raises(ValueError) as info:
        _update(tx)
    message = str(info.value)
    if owner != "keras.adam":  # a preset is a chain; which name it gives is not schedule_value's
        assert message.split(": ")[0] in (owner, "scale_by_learning_rate"), message
    assert f": {argument} must return one number per step" in message, message
    assert "shape (" in message and repr(schedule) in message, message


@pytest.mark.parametrize("owner, build, argument", BUILDERS[:3], ids=IDS[:3])
def test_non_scalar_schedule_raises_when_only_traced(owner, build, argument):
    tx = build(VECTOR)
    state = jax.eval_shape(tx.init, PARAMS)
    with pytest.raises(ValueError, match=f"{argument} must return one number"):
        jax.eval_shape(tx.update, PARAMS, state, PARAMS)


def test_optax_uses_such_a_schedule_elementwise():
    """What the error prevents: optax scales each entry of the update by its own rate."""
    rates = lambda count: jnp.array([0.1, 0.2, 0.3])  # noqa: E731
    tx = optax.sgd(rates)
    params = {"w": jnp.ones(3)}
    with jax.numpy_dtype_promotion("standard"):
        updates, _ = tx.update(params, tx.init(params))
    np.testing.assert_allclose(updates["w"], [-0.1, -0.2, -0.3], rtol=1e-6)


def test_multi_steps_every_k_schedule_must_return_a_scalar():
    tx = gx.multi_steps(gx.sgd(0.1), every_k_schedule=lambda step: jnp.array([2, 3]))
    with pytest.raises(ValueError, match=r"^multi_steps: every_k_schedule must return one number"):
        _update(tx)


@pytest.mark.parametrize("value, shown", [("0.1", "'0.1'"), (True, "True"), (None, "None"),
                                          (0.1 + 0j, "0.1+0j"), (jnp.array(True), "True")])
def test_non_number_schedule_raises_type_error(value, shown):
    tx = gx.sgd(lambda count: value)
    with pytest.raises(TypeError) as info:
        _update(tx, jit=False)
    message = str(info.value)
    assert message.startswith("sgd: learning_rate must return a real number"), message
    assert shown in message, message


@pytest.mark.parametrize("schedule, rate", [
    (lambda count: 0.5, 0.5),
    (lambda count: 2, 2.0),
    (lambda count: np.float32(0.5), 0.5),
    (lambda count: np.float64(0.5), 0.5),
    (lambda count: jnp.asarray(0.5), 0.5),
    (lambda count: jnp.asarray(0.5, jnp.bfloat16), 0.5),
    (lambda count: 0.5 * (count + 1).astype(jnp.float32) / (count + 1).astype(jnp.float32), 0.5),
    (gx.schedules.linear_schedule(0.5, 0.5, 10), 0.5),
    (gx.keras.ExponentialDecay(0.5, 10, 1.0), 0.5),
], ids=["float", "int", "np.float32", "np.float64", "0-d", "0-d-bf16", "traced", "schedules",
        "keras-schedule"])
def test_scalar_schedules_are_applied(schedule, rate):
    updates, _ = _update(gx.sgd(schedule))
    chex.assert_trees_all_close(updates, jax.tree.map(lambda p: -rate * p, PARAMS), rtol=1e-6)


def test_constant_is_returned_unchanged_and_count_reaches_the_schedule():
    assert numerics.schedule_value(0.25, jnp.int32(3), "f", "x") == 0.25
    value = numerics.schedule_value(lambda count: count * 2, jnp.int32(3), "f", "x")
    assert int(value) == 6
