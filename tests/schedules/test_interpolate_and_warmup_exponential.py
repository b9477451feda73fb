"""piecewise_interpolate_schedule and warmup_exponential_decay_schedule against optax, run live.

Each schedule is evaluated on both sides at the int32 steps 0..299 and at the
edge steps of its arguments (each boundary, the end of the warmup, the start of
the decay, one step either side of each, and steps up to 2**31 - 1), eagerly
and under ``jax.jit``; the values must agree to float32 rounding (rtol 1e-6,
atol 1e-7). Also: the repr is the call, schedules are equal and hash by value,
pickle and the config round trip keep them, they drive an optimizer under jit as
optax's do, and bad arguments (where optax logs and falls back, or fails later)
raise at construction, naming the schedule and the argument.
"""

import pickle

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradxform as gx

S = gx.schedules
TOP = 2**31 - 1

PIECEWISE = [
    dict(interpolate_type="linear", init_value=1.0, boundaries_and_scales={4: 0.1, 8: 0.01}),
    dict(interpolate_type="cosine", init_value=1.0, boundaries_and_scales={4: 0.1, 8: 0.01}),
    # Unsorted keys, a boundary at 0, a zero scale, growth, one-step intervals.
    dict(interpolate_type="linear", init_value=0.5,
         boundaries_and_scales={150: 0.0, 0: 2.0, 40: 3.0, 41: 0.25, 100: 1.0}),
    dict(interpolate_type="cosine", init_value=-2.0,
         boundaries_and_scales={10: 0.5, 11: 4.0, 250: 0.1, 2**31 - 2: 2.0}),
    dict(interpolate_type="cosine", init_value=3.0, boundaries_and_scales={}),
    dict(interpolate_type="linear", init_value=3.0, boundaries_and_scales=None),
    dict(interpolate_type="linear", init_value=1.0, boundaries_and_scales={1: 0.5}),
]
WARMUP_EXPONENTIAL = [
    dict(init_value=0.0, peak_value=1.0, warmup_steps=10, transition_steps=10, decay_rate=0.5),
    dict(init_value=0.1, peak_value=2.0, warmup_steps=25, transition_steps=7, decay_rate=0.8,
         transition_begin=13, staircase=True),
    dict(init_value=0.0, peak_value=1.0, warmup_steps=30, transition_steps=20, decay_rate=0.3,
         end_value=0.05),
    # Growth, bounded from above.
    dict(init_value=0.5, peak_value=0.1, warmup_steps=5, transition_steps=30, decay_rate=1.5,
         transition_begin=3, end_value=0.4),
    # No warmup: the decay from step 0, as optax's join at boundary 0.
    dict(init_value=5.0, peak_value=1.0, warmup_steps=0, transition_steps=15, decay_rate=0.9),
    dict(init_value=0.0, peak_value=1.0, warmup_steps=1, transition_steps=1, decay_rate=0.99,
         staircase=True, end_value=0.9),
]
CASES = ([("piecewise_interpolate_schedule", kwargs) for kwargs in PIECEWISE]
         + [("warmup_exponential_decay_schedule", kwargs) for kwargs in WARMUP_EXPONENTIAL])
IDS = [f"{name.split('_')[0]}-{i}" for i, (name, _) in enumerate(CASES)]


def _edges(name, kwargs):
    """The steps where the schedule changes regime, one either side, and very late steps."""
    if name == "piecewise_interpolate_schedule":
        marks = list(kwargs["boundaries_and_scales"] or {})
    else:
        warmup = kwargs["warmup_steps"]
        begin = warmup + kwargs.get("transition_begin", 0)
        marks = [warmup, begin, begin + kwargs["transition_steps"]]
    steps = {s + d for s in marks for d in (-1, 0, 1)} | {0, 1000, 10**6, 2**24 + 1, TOP - 1, TOP}
    return jnp.asarray(sorted(s for s in steps if 0 <= s <= TOP), jnp.int32)


def _steps(name, kwargs):
    return jnp.concatenate([jnp.arange(300, dtype=jnp.int32), _edges(name, kwargs)])


def _values(schedule, steps, jit):
    evaluate = jax.vmap(schedule)
    values = (jax.jit(evaluate) if jit else evaluate)(steps)
    return np.broadcast_to(np.asarray(values, np.float32), steps.shape)


def _optax_values(name, kwargs, steps, jit):
    with jax.numpy_dtype_promotion("standard"), jax.debug_nans(False):
        return _values(getattr(optax, name)(**kwargs), steps, jit)


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize("name, kwargs", CASES, ids=IDS)
def test_matches_optax_at_every_step_and_at_the_edges(name, kwargs, jit):
    steps = _steps(name, kwargs)
    expected = _optax_values(name, kwargs, steps, jit)
    values = _values(getattr(S, name)(**kwargs), steps, jit)
    assert np.all(np.isfinite(expected))
    np.testing.assert_allclose(values, expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name, kwargs", CASES, ids=IDS)
def test_a_python_int_step_gives_optax_value(name, kwargs):
    ours = getattr(S, name)(**kwargs)
    with jax.numpy_dtype_promotion("standard"):
        ref = getattr(optax, name)(**kwargs)
        for step in (0, 3, 4, 9, 10, 11, 57):
            np.testing.assert_allclose(float(ours(step)), float(ref(step)), rtol=1e-6, atol=1e-7)


def test_the_documented_piecewise_values_are_optax_documented_ones():
    # optax's own docstring example: 1.0, 0.55, 0.1, 0.0505, 0.001, 0.001 at steps 0, 2, ..., 10.
    s = S.piecewise_interpolate_schedule("linear", 1.0, {4: 0.1, 8: 0.01})
    np.testing.assert_allclose([float(s(t)) for t in range(0, 11, 2)],
                               [1.0, 0.55, 0.1, 0.0505, 0.001, 0.001], rtol=1e-6)


def test_warmup_exponential_is_the_join_of_its_two_pieces_in_float64():
    # An independent reference: the formula evaluated in float64 with NumPy.
    kwargs = WARMUP_EXPONENTIAL[1]
    s = S.warmup_exponential_decay_schedule(**kwargs)
    steps = np.arange(200)
    w, t, r, b = (kwargs[k] for k in ("warmup_steps", "transition_steps", "decay_rate",
                                       "transition_begin"))
    v0, peak = kwargs["init_value"], kwargs["peak_value"]
    exponent = np.floor(np.maximum(steps - w - b, 0) / t)
    expected = np.where(steps < w, v0 + (peak - v0) * steps / w, peak * r**exponent)
    np.testing.assert_allclose(_values(s, jnp.asarray(steps, jnp.int32), True), expected,
                               rtol=2e-6)


@pytest.mark.parametrize("name, kwargs", CASES, ids=IDS)
def test_repr_is_the_call_and_schedules_compare_by_value(name, kwargs):
    ours = getattr(S, name)(**kwargs)
    text = repr(ours)
    assert text.startswith(f"{name}(")
    rebuilt = eval(text, {name: getattr(S, name)})  # noqa: S307
    assert rebuilt == ours and hash(rebuilt) == hash(ours)
    copied = pickle.loads(pickle.dumps(ours))
    assert copied == ours
    steps = jnp.arange(60, dtype=jnp.int32)
    np.testing.assert_array_equal(_values(copied, steps, False), _values(ours, steps, False))


def test_config_round_trip_keeps_them_inside_an_optimizer():
    for name, kwargs in (CASES[2], CASES[-3]):
        tx = gx.adam(getattr(S, name)(**kwargs))
        rebuilt = gx.from_config(gx.to_config(tx))
        assert repr(rebuilt) == repr(tx)


@pytest.mark.parametrize("name, kwargs", [CASES[1], CASES[8]], ids=["piecewise", "warmup"])
def test_drives_an_optimizer_under_jit_as_optax_does(name, kwargs):
    params = {"w": jnp.linspace(-1.0, 1.0, 5)}
    grads = [{"w": jnp.full(5, 0.1 * (i % 7 - 3))} for i in range(40)]
    ours = gx.sgd(getattr(S, name)(**kwargs), momentum=0.9)
    with jax.numpy_dtype_promotion("standard"):
        ref = optax.sgd(getattr(optax, name)(**kwargs), momentum=0.9)
        ref_state = ref.init(params)
    state, p, ref_p = ours.init(params), params, params
    update = jax.jit(ours.update)
    ref_update = jax.jit(ref.update)
    for g in grads:
        u, state = update(g, state, p)
        p = gx.apply_updates(p, u)
        with jax.numpy_dtype_promotion("standard"):
            ru, ref_state = ref_update(g, ref_state, ref_p)
            ref_p = optax.apply_updates(ref_p, ru)
    np.testing.assert_allclose(p["w"], ref_p["w"], rtol=2e-6, atol=1e-7)


def test_injected_schedule_is_logged_as_optax_logs_it():
    schedule = S.warmup_exponential_decay_schedule(0.0, 1.0, 5, 5, 0.5, transition_begin=2)
    tx = gx.inject_hyperparams(gx.sgd)(learning_rate=schedule)
    params = {"w": jnp.ones(3)}
    state = tx.init(params)
    with jax.numpy_dtype_promotion("standard"):
        ref = optax.inject_hyperparams(optax.sgd)(
            learning_rate=optax.warmup_exponential_decay_schedule(0.0, 1.0, 5, 5, 0.5, 2))
        ref_state = ref.init(params)
    for _ in range(20):
        _, state = jax.jit(tx.update)({"w": jnp.ones(3)}, state, params)
        with jax.numpy_dtype_promotion("standard"):
            _, ref_state = jax.jit(ref.update)({"w": jnp.ones(3)}, ref_state, params)
        np.testing.assert_allclose(state.hyperparams["learning_rate"],
                                   ref_state.hyperparams["learning_rate"], rtol=1e-6)


@pytest.mark.parametrize(
    "make, exc, shown",
    [
        # optax: ValueError as well, but without the value.
        (lambda: S.piecewise_interpolate_schedule("quadratic", 1.0), ValueError, "'quadratic'"),
        (lambda: S.piecewise_interpolate_schedule("linear", 1.0, {5: -0.5}), ValueError, "-0.5"),
        # optax accepts these and fails (or gives a float boundary) when evaluated.
        (lambda: S.piecewise_interpolate_schedule("linear", 1.0, {2.5: 0.5}), TypeError, "2.5"),
        (lambda: S.piecewise_interpolate_schedule("linear", 1.0, [(5, 0.5)]), TypeError, "[(5, 0.5)]"),
        # optax logs these and returns a constant, or starts at 0.
        (lambda: S.warmup_exponential_decay_schedule(0.0, 1.0, 5, 0, 0.5), ValueError,
         "transition_steps"),
        (lambda: S.warmup_exponential_decay_schedule(0.0, 1.0, 5, 10, 0.0), ValueError,
         "decay_rate"),
        (lambda: S.warmup_exponential_decay_schedule(0.0, 1.0, 5, 10, 0.5, transition_begin=-1),
         ValueError, "transition_begin"),
        (lambda: S.warmup_exponential_decay_schedule(0.0, 1.0, -1, 10, 0.5), ValueError,
         "warmup_steps"),
        (lambda: S.warmup_exponential_decay_schedule(0.0, 1.0, 5, 10, 0.5, staircase=1),
         TypeError, "staircase"),
    ],
)
def test_bad_arguments_raise_naming_the_schedule(make, exc, shown):
    with pytest.raises(exc) as info:
        make()
    message = str(info.value)
    assert message.startswith("schedules.") and shown in message, message
