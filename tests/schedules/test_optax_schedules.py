"""gradxform.schedules against optax's schedules of the same name, run live.

Each schedule is evaluated at the int32 steps 0..259, eagerly and under
``jax.jit``, on both sides; the values must be equal to float32 rounding
(rtol 1e-6, atol 1e-7; most are bit-identical). The one documented
difference: where XLA's reciprocal rounding makes ``polynomial_schedule``'s
base slightly negative at the end of the decay, optax returns NaN for a
fractional power and gradxform the end value.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradxform as gx

S = gx.schedules
STEPS = jnp.arange(260, dtype=jnp.int32)

CASES = [
    ("constant_schedule", dict(value=0.3)),
    ("linear_schedule", dict(init_value=1.0, end_value=0.01, transition_steps=100)),
    ("linear_schedule", dict(init_value=0.0, end_value=2.0, transition_steps=30, transition_begin=20)),
    ("polynomial_schedule", dict(init_value=1.0, end_value=0.01, power=2, transition_steps=150)),
    ("polynomial_schedule",
     dict(init_value=1.0, end_value=0.01, power=2.5, transition_steps=150, transition_begin=7)),
    ("exponential_decay", dict(init_value=1.0, transition_steps=30, decay_rate=0.7)),
    ("exponential_decay", dict(init_value=1.0, transition_steps=30, decay_rate=0.7,
                               transition_begin=5, staircase=True, end_value=0.05)),
    ("exponential_decay", dict(init_value=0.1, transition_steps=30, decay_rate=1.5, end_value=2.0)),
    ("cosine_decay_schedule", dict(init_value=1.0, decay_steps=200)),
    ("cosine_decay_schedule", dict(init_value=1.0, decay_steps=200, alpha=0.1, exponent=2.0)),
    ("piecewise_constant_schedule", dict(init_value=1.0)),
    ("piecewise_constant_schedule",
     dict(init_value=1.0, boundaries_and_scales={50: 0.5, 120: 0.1, 200: 2.0})),
    ("warmup_constant_schedule", dict(init_value=0.0, peak_value=1.0, warmup_steps=40)),
    ("warmup_cosine_decay_schedule",
     dict(init_value=0.0, peak_value=1.0, warmup_steps=40, decay_steps=230, end_value=0.01,
          exponent=1.5)),
    ("warmup_cosine_decay_schedule",
     dict(init_value=0.1, peak_value=1.0, warmup_steps=0, decay_steps=100)),
    ("sgdr_schedule", dict(cosine_kwargs=[
        dict(init_value=0.0, peak_value=1.0, warmup_steps=10, decay_steps=60),
        dict(init_value=0.0, peak_value=0.5, warmup_steps=5, decay_steps=100, end_value=0.01),
    ])),
    ("linear_onecycle_schedule", dict(transition_steps=200, peak_value=1.0)),
    ("linear_onecycle_schedule",
     dict(transition_steps=120, peak_value=0.5, pct_start=0.2, pct_final=0.7, div_factor=10.0)),
    ("cosine_onecycle_schedule", dict(transition_steps=200, peak_value=1.0, pct_start=0.25)),
]
IDS = [f"{name}-{i}" for i, (name, _) in enumerate(CASES)]


def _values(schedule, jit):
    evaluate = jax.vmap(schedule)
    values = (jax.jit(evaluate) if jit else evaluate)(STEPS)
    return np.broadcast_to(np.asarray(values, np.float32), STEPS.shape)


def _optax_values(name, kwargs, jit):
    # optax's own NaN (if any) is a reference value here: compared, not raised.
    with jax.numpy_dtype_promotion("standard"), jax.debug_nans(False):
        schedule = getattr(optax, name)(**kwargs)
        if name == "constant_schedule":
            return np.full(STEPS.shape, schedule(0), np.float32)
        return _values(schedule, jit)


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize("name, kwargs", CASES, ids=IDS)
def test_matches_optax_at_every_step(name, kwargs, jit):
    ours = getattr(S, name)(**kwargs)
    expected = _optax_values(name, kwargs, jit)
    values = np.full(STEPS.shape, ours(0)) if name == "constant_schedule" else _values(ours, jit)
    assert np.all(np.isfinite(values))
    nan = np.isnan(expected)
    if nan.any():  # optax's NaN at the end of a fractional-power decay (module docstring)
        assert name == "polynomial_schedule" and kwargs["power"] % 1 != 0
        np.testing.assert_allclose(values[nan], kwargs["end_value"], rtol=1e-6)
    np.testing.assert_allclose(values[~nan], expected[~nan], rtol=1e-6, atol=1e-7)


def test_join_schedules_matches_optax():
    ours = S.join_schedules([S.linear_schedule(0.0, 1.0, 10), S.cosine_decay_schedule(1.0, 50)], [10])
    with jax.numpy_dtype_promotion("standard"):
        ref = optax.join_schedules(
            [optax.linear_schedule(0.0, 1.0, 10), optax.cosine_decay_schedule(1.0, 50)], [10]
        )
        expected = _values(ref, jit=True)
    np.testing.assert_allclose(_values(ours, jit=True), expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name, kwargs", CASES, ids=IDS)
def test_repr_is_the_call_that_rebuilds_it(name, kwargs):
    ours = getattr(S, name)(**kwargs)
    text = repr(ours)
    assert text.startswith(f"{name}(")
    rebuilt = eval(text, {name: getattr(S, name)})  # noqa: S307
    assert rebuilt == ours
    if name != "constant_schedule":
        np.testing.assert_array_equal(_values(rebuilt, jit=False), _values(ours, jit=False))


@pytest.mark.parametrize("name, kwargs", CASES, ids=IDS)
def test_schedule_is_hashable_and_equal_by_value(name, kwargs):
    assert hash(getattr(S, name)(**kwargs)) == hash(getattr(S, name)(**kwargs))
    assert getattr(S, name)(**kwargs) == getattr(S, name)(**kwargs)


@pytest.mark.parametrize(
    "make, exc, words",
    [
        (lambda: S.linear_schedule(1.0, 0.0, transition_steps=0), ValueError, "transition_steps"),
        (lambda: S.polynomial_schedule(1.0, 0.0, 2, 10, transition_begin=-1), ValueError,
         "transition_begin"),
        (lambda: S.exponential_decay(1.0, transition_steps=10, decay_rate=0.0), ValueError,
         "decay_rate"),
        (lambda: S.exponential_decay(1.0, transition_steps=2.5, decay_rate=0.5), TypeError,
         "transition_steps"),
        (lambda: S.cosine_decay_schedule(1.0, decay_steps=0), ValueError, "decay_steps"),
        (lambda: S.piecewise_constant_schedule(1.0, {10: -0.5}), ValueError, "-0.5"),
        (lambda: S.warmup_cosine_decay_schedule(0.0, 1.0, warmup_steps=50, decay_steps=50),
         ValueError, "decay_steps"),
        (lambda: S.join_schedules([S.constant_schedule(1.0)], [10]), ValueError, "boundaries"),
        (lambda: S.join_schedules([S.constant_schedule(1.0), 0.5], [10]), TypeError, "callable"),
        (lambda: S.sgdr_schedule([]), ValueError, "cosine_kwargs"),
        (lambda: S.linear_onecycle_schedule(0, peak_value=1.0), ValueError, "transition_steps"),
    ],
)
def test_bad_arguments_raise_where_optax_falls_back_silently(make, exc, words):
    with pytest.raises(exc, match=words):
        make()


def test_schedules_drive_an_optimizer_under_jit_as_optax_does():
    params = {"w": jnp.ones(3)}
    grads = [{"w": jnp.full(3, 0.1 * (i + 1))} for i in range(30)]
    ours = gx.adam(S.warmup_cosine_decay_schedule(0.0, 0.1, 5, 30))
    with jax.numpy_dtype_promotion("standard"):
        ref = optax.adam(optax.warmup_cosine_decay_schedule(0.0, 0.1, 5, 30))
    state, ref_state, p, ref_p = ours.init(params), ref.init(params), params, params
    for g in grads:
        u, state = jax.jit(ours.update)(g, state, p)
        p = gx.apply_updates(p, u)
        with jax.numpy_dtype_promotion("standard"):
            ru, ref_state = jax.jit(ref.update)(g, ref_state, ref_p)
            ref_p = optax.apply_updates(ref_p, ru)
    np.testing.assert_allclose(p["w"], ref_p["w"], rtol=2e-6)
