"""``gx.keras`` learning-rate schedules against ``keras.optimizers.schedules``, live.

Keras is evaluated on an int32 scalar step, one step at a time (its
``CosineDecay`` warmup branch takes scalars only), eagerly and jitted (the way
an optimizer calls it). Ours is evaluated on the int32 array of the steps
0..200, eagerly against Keras eager and under ``jax.jit`` against Keras jitted.
Values agree at rtol 1e-6, atol 1e-7.

Eager and jitted results differ slightly: XLA turns ``x / 30.0`` into
``x * (1/30)``, so jitted ``PolynomialDecay`` reaches ``1 - p = -5e-8`` at the
end of the decay, which with ``power=0.5`` Keras turns into NaN from
``decay_steps`` on. gradxform clamps ``1 - p`` at 0 and returns the end rate
there, a documented difference (``PolynomialDecay-2``); everywhere else the
values agree.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import keras
import numpy as np
import pytest

import gradxform as gx

STEPS = np.arange(201, dtype=np.int32)
RTOL, ATOL = 1e-6, 1e-7

CASES = {
    "ExponentialDecay": [
        dict(initial_learning_rate=0.1, decay_steps=10, decay_rate=0.5),
        dict(initial_learning_rate=0.1, decay_steps=7, decay_rate=0.9, staircase=True),
        dict(initial_learning_rate=1.0, decay_steps=3.5, decay_rate=0.96),
    ],
    "PiecewiseConstantDecay": [
        dict(boundaries=[10, 50, 120], values=[1.0, 0.5, 0.1, 0.01]),
        dict(boundaries=[10.5, 50.0, 99.9], values=[0.1, 0.05, 0.01, 0.001]),  # float boundaries
        dict(boundaries=[100], values=[1.0, 2.0]),
    ],
    "PolynomialDecay": [
        dict(initial_learning_rate=0.1, decay_steps=50),
        dict(initial_learning_rate=0.1, decay_steps=30, end_learning_rate=0.001, power=2.0, cycle=True),
        # Keras: NaN from step 30 on under jit; here the end rate (see the module docstring)
        dict(initial_learning_rate=0.1, decay_steps=30, end_learning_rate=0.01, power=0.5),
    ],
    "InverseTimeDecay": [
        dict(initial_learning_rate=0.1, decay_steps=10, decay_rate=0.5),
        dict(initial_learning_rate=0.1, decay_steps=5, decay_rate=0.5, staircase=True),
    ],
    "CosineDecay": [
        dict(initial_learning_rate=0.1, decay_steps=100),
        dict(initial_learning_rate=0.1, decay_steps=100, alpha=0.1),
        dict(initial_learning_rate=0.0, decay_steps=100, alpha=0.1, warmup_target=0.1, warmup_steps=20),
        dict(initial_learning_rate=0.01, decay_steps=150, warmup_target=0.1, warmup_steps=30),
    ],
    "CosineDecayRestarts": [
        dict(initial_learning_rate=0.1, first_decay_steps=10, t_mul=1.0),
        dict(initial_learning_rate=0.1, first_decay_steps=10, t_mul=2.0),
        dict(initial_learning_rate=0.1, first_decay_steps=10, t_mul=2.0, m_mul=0.8, alpha=0.1),
        dict(initial_learning_rate=0.1, first_decay_steps=13, t_mul=1.0, m_mul=0.5, alpha=0.05),
    ],
}
_PARAMS = [
    pytest.param(name, kwargs, id=f"{name}-{i}")
    for name, sets in CASES.items()
    for i, kwargs in enumerate(sets)
]


def _keras_values(schedule, jit: bool) -> np.ndarray:
    """Keras at each scalar step: jitted, or eagerly (vmapped, for speed: op by op, not compiled).

    Without ``jax_debug_nans``: Keras's own NaN (see the module docstring) is
    a reference value here, not a bug of ours."""
    with jax.numpy_dtype_promotion("standard"), jax.debug_nans(False):
        if not jit:
            return np.asarray(jax.vmap(schedule)(jnp.asarray(STEPS)))
        at = jax.jit(schedule)
        return np.array([np.asarray(at(jnp.int32(step))) for step in STEPS])


@pytest.mark.parametrize("name, kwargs", _PARAMS)
def test_schedule_matches_keras_at_every_step(name, kwargs):
    reference = getattr(keras.optimizers.schedules, name)(**kwargs)
    ours = getattr(gx.keras, name)(**kwargs)
    steps = jnp.asarray(STEPS)
    for label, values, expected in (
        ("eager", ours(steps), _keras_values(reference, jit=False)),
        ("jit", jax.jit(ours)(steps), _keras_values(reference, jit=True)),
    ):
        assert values.dtype == jnp.float32
        assert np.all(np.isfinite(values)), f"{name} {label}: NaN or inf"
        if np.any(np.isnan(expected)):  # Keras's NaN at the end of a fractional-power decay
            assert name == "PolynomialDecay" and kwargs.get("power", 1.0) % 1 != 0
            ended = STEPS >= kwargs["decay_steps"]
            assert np.all(ended[np.isnan(expected)])
            np.testing.assert_allclose(values[ended], kwargs["end_learning_rate"], rtol=RTOL)
            values, expected = values[~ended], expected[~ended]
        np.testing.assert_allclose(values, expected, rtol=RTOL, atol=ATOL, err_msg=f"{name} {label}")
    assert float(ours(0)) == pytest.approx(float(expected[0]), rel=RTOL)  # python int step
    if name == "CosineDecay" and "warmup_target" in kwargs:
        assert expected[kwargs["warmup_steps"]] == pytest.approx(kwargs["warmup_target"], rel=RTOL)
    if name == "CosineDecayRestarts":
        assert np.sum(np.diff(expected) > 0) >= 2  # the range holds restarts


@pytest.mark.parametrize("name, kwargs", _PARAMS)
def test_repr_shows_parameters_and_config_has_keras_values(name, kwargs):
    ours = getattr(gx.keras, name)(**kwargs)
    config = ours.get_config()
    expected = getattr(keras.optimizers.schedules, name)(**kwargs).get_config()
    assert config == expected  # same keys, order and values
    assert list(config) == list(expected)
    text = repr(ours)
    assert text.startswith(f"{name}(")
    for key in config:
        assert f"{key}={getattr(ours, key)!r}" in text, (key, text)


_DECAY_STEPS = {
    "ExponentialDecay": ("decay_steps", dict(initial_learning_rate=0.1, decay_rate=0.5)),
    "PolynomialDecay": ("decay_steps", dict(initial_learning_rate=0.1)),
    "InverseTimeDecay": ("decay_steps", dict(initial_learning_rate=0.1, decay_rate=0.5)),
    "CosineDecay": ("decay_steps", dict(initial_learning_rate=0.1)),
    "CosineDecayRestarts": ("first_decay_steps", dict(initial_learning_rate=0.1)),
}


@pytest.mark.parametrize("value", [0, -1, -2.5])
@pytest.mark.parametrize("name", sorted(_DECAY_STEPS))
def test_nonpositive_decay_steps_message_as_keras(name, value):
    argument, kwargs = _DECAY_STEPS[name]
    kwargs = {**kwargs, argument: value}
    with pytest.raises(ValueError) as keras_error:
        getattr(keras.optimizers.schedules, name)(**kwargs)
    with pytest.raises(ValueError) as ours:
        getattr(gx.keras, name)(**kwargs)
    assert str(keras_error.value) in str(ours.value)
    assert f"Received: {argument}={value}" in str(ours.value)


@pytest.mark.parametrize(
    "boundaries, values", [([1, 2], [1.0, 2.0]), ([1], [1.0, 2.0, 3.0]), ([], [1.0, 2.0])]
)
def test_piecewise_length_mismatch_message_as_keras(boundaries, values):
    with pytest.raises(ValueError) as keras_error:
        keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)
    with pytest.raises(ValueError) as ours:
        gx.keras.PiecewiseConstantDecay(boundaries, values)
    assert str(keras_error.value) in str(ours.value)


@pytest.mark.parametrize("every_k", [1, 2, 3, 5])
@pytest.mark.parametrize("name", sorted(CASES))
def test_at_last_micro_step_evaluates_at_the_raw_count(name, every_k):
    schedule = getattr(gx.keras, name)(**CASES[name][-1])
    wrapped = gx.schedules.AtLastMicroStep(schedule, every_k)
    n = jnp.arange(60, dtype=jnp.int32)
    np.testing.assert_array_equal(wrapped(n), schedule(n * every_k + every_k - 1))
    np.testing.assert_array_equal(jax.jit(wrapped)(n), jax.jit(schedule)(n * every_k + every_k - 1))
    for count in (0, 1, 7):
        assert float(wrapped(count)) == float(schedule(count * every_k + every_k - 1))


# Scalar steps on exact multiples of the decay steps, where a floor / ceil / restart changes value:
# eagerly, both divide exactly (Keras is slow eagerly, hence few steps). Jitted, both multiply by a
# rounded reciprocal instead, and agree with each other (test above) but not with these values.
_BOUNDARIES = [
    ("ExponentialDecay", 1, (0, 7, 14, 21, 70, 196)),
    ("InverseTimeDecay", 1, (0, 5, 10, 15, 100)),
    ("PolynomialDecay", 1, (0, 30, 60, 90, 150)),
    ("CosineDecayRestarts", 0, (10, 30, 89, 90, 190)),
    ("PiecewiseConstantDecay", 1, (10, 11, 50, 51, 99, 100)),
]


@pytest.mark.parametrize("name, index, steps", _BOUNDARIES, ids=[b[0] for b in _BOUNDARIES])
def test_scalar_steps_on_boundaries_match_keras_eagerly(name, index, steps):
    kwargs = CASES[name][index]
    reference = getattr(keras.optimizers.schedules, name)(**kwargs)
    ours = getattr(gx.keras, name)(**kwargs)
    for step in steps:
        with jax.numpy_dtype_promotion("standard"):
            expected = np.asarray(reference(jnp.int32(step)))
        np.testing.assert_allclose(
            ours(jnp.int32(step)), expected, rtol=RTOL, atol=ATOL, err_msg=f"{name} at {step}"
        )
