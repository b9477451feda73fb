"""Schedule arguments that make no sense raise at construction, naming the schedule.

Each rejected argument is one for which the reference library, run live,
returns inf or NaN at some step or silently drops a piece of the schedule:

* a negative ``power`` / ``exponent`` raises the decay's base, which reaches 0
  at the end of the decay, to a negative power: inf from that step on (optax's
  ``polynomial_schedule``, ``cosine_decay_schedule``,
  ``warmup_cosine_decay_schedule`` and so ``sgdr_schedule``; Keras's
  ``PolynomialDecay``). 0 stays valid: ``0 ** 0 = 1``.
* Keras's ``CosineDecayRestarts`` with ``t_mul < 1``: the periods shrink and add
  up to ``first_decay_steps / (1 - t_mul)`` steps, after which Keras returns NaN.
* ``join_schedules`` boundaries that do not increase strictly from 1, Keras's
  ``PiecewiseConstantDecay`` with two equal boundaries, and one-cycle
  fractions whose phases end on the same step (or in the wrong order): a
  schedule, a value or a phase is never used.

Also: valid arguments next to the rejected ones (exponent 0, ``t_mul = 1``,
``pct_start = 0``) still give the reference's values, and two schedules whose
discarded branch used to make a NaN (which ``jax_debug_nans``, on in every test,
turns into an error) now give the reference's values without one.
"""

import jax
import jax.numpy as jnp
import keras
import numpy as np
import optax
import pytest

import gradxform as gx

S = gx.schedules
STEPS = jnp.arange(0, 61, dtype=jnp.int32)


def optax_at(name, kwargs, steps):
    """optax's values, its own inf or NaN included."""
    with jax.numpy_dtype_promotion("standard"), jax.debug_nans(False):
        schedule = getattr(optax, name)(**kwargs)
        return np.array([float(schedule(jnp.int32(t))) for t in steps])


def keras_at(name, kwargs, steps):
    """Keras's values, eagerly, its own inf or NaN included."""
    with jax.numpy_dtype_promotion("standard"), jax.debug_nans(False):
        schedule = getattr(keras.optimizers.schedules, name)(**kwargs)
        return np.array([float(schedule(jnp.int32(t))) for t in steps])


def assert_raises_naming(make, exc, owner, *shown):
    with pytest.raises(exc) as info:
        make()
    message = str(info.value)
    assert message.startswith(f"{owner}: "), message
    for text in shown:
        assert text in message, message


# --- negative exponents ------------------------------------------------------------------------

# (library, name, arguments with the negative exponent, its argument name, the step where the
# reference's base reaches 0)
NEGATIVE_EXPONENTS = [
    ("optax", "polynomial_schedule",
     dict(init_value=1.0, end_value=0.01, power=-0.5, transition_steps=10), "power", 10),
    ("optax", "polynomial_schedule",
     dict(init_value=1.0, end_value=0.0, power=-2, transition_steps=10, transition_begin=5),
     "power", 15),
    ("optax", "cosine_decay_schedule", dict(init_value=1.0, decay_steps=10, exponent=-1.0),
     "exponent", 10),
    ("optax", "warmup_cosine_decay_schedule",
     dict(init_value=0.0, peak_value=1.0, warmup_steps=2, decay_steps=10, exponent=-1.5),
     "exponent", 10),
    ("keras", "PolynomialDecay", dict(initial_learning_rate=1.0, decay_steps=10, power=-1.0),
     "power", 10),
    ("keras", "PolynomialDecay",
     dict(initial_learning_rate=1.0, decay_steps=10, power=-0.5, cycle=True), "power", 20),
]


@pytest.mark.parametrize("library, name, kwargs, argument, step", NEGATIVE_EXPONENTS,
                         ids=[f"{n}-{a}={k[a]}" for _, n, k, a, _ in NEGATIVE_EXPONENTS])
def test_negative_exponent_raises_where_the_reference_returns_inf(
        library, name, kwargs, argument, step):
    reference = (optax_at if library == "optax" else keras_at)(name, kwargs, [step - 1, step])
    assert np.isfinite(reference[0]) and np.isinf(reference[1])  # inf where the base is 0
    ours = getattr(S if library == "optax" else gx.keras, name)
    owner = f"schedules.{name}" if library == "optax" else f"keras.{name}"
    assert_raises_naming(lambda: ours(**kwargs), ValueError, owner, argument, repr(kwargs[argument]),
                         ">= 0")


def test_negative_exponent_in_an_sgdr_cycle_raises_naming_sgdr():
    cycle = dict(init_value=0.0, peak_value=1.0, warmup_steps=2, decay_steps=10, exponent=-1.0)
    assert_raises_naming(lambda: S.sgdr_schedule([cycle]), ValueError, "schedules.sgdr_schedule",
                         "cosine_kwargs[0]", "exponent", "-1.0")


ZERO_EXPONENTS = [
    ("optax", "polynomial_schedule",
     dict(init_value=1.0, end_value=0.01, power=0, transition_steps=10)),
    ("optax", "cosine_decay_schedule", dict(init_value=1.0, decay_steps=10, exponent=0.0)),
    ("optax", "warmup_cosine_decay_schedule",
     dict(init_value=0.0, peak_value=1.0, warmup_steps=2, decay_steps=10, exponent=0.0)),
    ("keras", "PolynomialDecay", dict(initial_learning_rate=1.0, decay_steps=10, power=0.0)),
]


@pytest.mark.parametrize("library, name, kwargs", ZERO_EXPONENTS,
                         ids=[n for _, n, _ in ZERO_EXPONENTS])
def test_zero_exponent_is_valid_and_matches_the_reference(library, name, kwargs):
    steps = range(0, 25)
    reference = (optax_at if library == "optax" else keras_at)(name, kwargs, steps)
    schedule = getattr(S if library == "optax" else gx.keras, name)(**kwargs)
    ours = np.array([float(schedule(jnp.int32(t))) for t in steps])
    assert np.all(np.isfinite(ours))
    np.testing.assert_allclose(ours, reference, rtol=1e-6, atol=1e-7)


# --- Keras's CosineDecayRestarts with t_mul < 1 -------------------------------------------------


@pytest.mark.parametrize("t_mul", [0.5, 0.9, 1e-3])
def test_cosine_decay_restarts_t_mul_below_one_raises_where_keras_returns_nan(t_mul):
    kwargs = dict(initial_learning_rate=1.0, first_decay_steps=10, t_mul=t_mul)
    end = int(np.ceil(10 / (1 - t_mul)))  # the periods add up to 10 / (1 - t_mul) steps
    reference = keras_at("CosineDecayRestarts", kwargs, [0, end + 1, end + 100])
    assert np.isfinite(reference[0]) and np.isnan(reference[1:]).all()
    assert_raises_naming(lambda: gx.keras.CosineDecayRestarts(**kwargs), ValueError,
                         "keras.CosineDecayRestarts", "t_mul", repr(t_mul), ">= 1")


def test_cosine_decay_restarts_t_mul_one_still_matches_keras():
    kwargs = dict(initial_learning_rate=1.0, first_decay_steps=7, t_mul=1.0, m_mul=0.5)
    steps = range(0, 40, 3)
    ours = gx.keras.CosineDecayRestarts(**kwargs)
    np.testing.assert_allclose([float(ours(jnp.int32(t))) for t in steps],
                               keras_at("CosineDecayRestarts", kwargs, steps), rtol=1e-6, atol=1e-7)


# --- pieces a schedule would never use -----------------------------------------------------------

ONE, TWO, THREE = (S.constant_schedule(v) for v in (1.0, 2.0, 3.0))


@pytest.mark.parametrize("boundaries", [[20, 10], [10, 10], [0, 10]])
def test_join_schedules_boundaries_must_increase_strictly_from_one(boundaries):
    # optax runs the three and never uses at least one of them.
    used = set(optax_at("join_schedules",
                        dict(schedules=[optax.constant_schedule(v) for v in (1.0, 2.0, 3.0)],
                             boundaries=boundaries), range(0, 40)))
    assert len(used) < 3
    assert_raises_naming(lambda: S.join_schedules([ONE, TWO, THREE], boundaries), ValueError,
                         "schedules.join_schedules", "boundaries", repr(boundaries))


def test_join_schedules_single_boundary_at_zero_raises():
    assert_raises_naming(lambda: S.join_schedules([ONE, TWO], [0]), ValueError,
                         "schedules.join_schedules", "boundaries", "[0]")


def test_join_schedules_length_mismatch_names_both_lists():
    assert_raises_naming(lambda: S.join_schedules([ONE, TWO, THREE], [10]), ValueError,
                         "schedules.join_schedules", "boundaries", "[10]", "3 schedules")


def test_warmup_cosine_without_warmup_is_the_decay_alone_as_in_optax():
    kwargs = dict(init_value=0.1, peak_value=1.0, warmup_steps=0, decay_steps=30, exponent=2.0)
    np.testing.assert_allclose(
        np.asarray(jax.vmap(S.warmup_cosine_decay_schedule(**kwargs))(STEPS)),
        optax_at("warmup_cosine_decay_schedule", kwargs, STEPS), rtol=1e-6, atol=1e-7)


ONECYCLES = [
    ("linear_onecycle_schedule", dict(transition_steps=100, pct_start=0.9), "pct_start", "0.9"),
    ("linear_onecycle_schedule", dict(transition_steps=100, pct_final=0.2), "pct_final", "0.2"),
    ("linear_onecycle_schedule", dict(transition_steps=100, pct_start=0.5, pct_final=0.5),
     "pct_final", "0.5"),
    ("linear_onecycle_schedule", dict(transition_steps=100, pct_final=1.0), "pct_final", "1.0"),
    # 0.3 and 0.85 of 1 step both end on step 0
    ("linear_onecycle_schedule", dict(transition_steps=1), "transition_steps=1", "0.85"),
    ("linear_onecycle_schedule", dict(transition_steps=5, pct_start=0.3, pct_final=0.35),
     "pct_start", "0.35"),
    ("cosine_onecycle_schedule", dict(transition_steps=100, pct_start=1.0), "pct_start", "1.0"),
]


@pytest.mark.parametrize("name, kwargs, argument, shown", ONECYCLES,
                         ids=[f"{n}-{sorted(k.items())}" for n, k, _, _ in ONECYCLES])
def test_onecycle_phases_must_end_on_distinct_steps_in_order(name, kwargs, argument, shown):
    assert_raises_naming(lambda: getattr(S, name)(peak_value=1.0, **kwargs), ValueError,
                         f"schedules.{name}", argument, shown)


def test_onecycle_pct_final_one_drops_a_phase_in_optax():
    """Why pct_final=1 raises: optax ends at peak / final_div_factor, not peak / (div * final)."""
    kwargs = dict(transition_steps=100, peak_value=1.0, pct_final=1.0)
    (end,) = optax_at("linear_onecycle_schedule", kwargs, [100])
    assert not np.isclose(end, 1.0 / (25.0 * 1e4)) and np.isclose(end, 1.0 / 1e4)


@pytest.mark.parametrize("name, kwargs", [
    ("linear_onecycle_schedule", dict(transition_steps=100, peak_value=1.0, pct_start=0.0)),
    ("linear_onecycle_schedule", dict(transition_steps=2, peak_value=1.0)),
    ("cosine_onecycle_schedule", dict(transition_steps=100, peak_value=1.0, pct_start=0.0)),
    ("cosine_onecycle_schedule", dict(transition_steps=1, peak_value=1.0)),
])
def test_onecycle_edge_cases_that_stay_valid_match_optax(name, kwargs):
    steps = range(0, 110)
    schedule = getattr(S, name)(**kwargs)
    np.testing.assert_allclose([float(schedule(jnp.int32(t))) for t in steps],
                               optax_at(name, kwargs, steps), rtol=1e-6, atol=1e-7)


def test_keras_piecewise_equal_boundaries_raise_where_keras_skips_a_value():
    kwargs = dict(boundaries=[10, 10], values=[1.0, 2.0, 3.0])
    assert 2.0 not in keras_at("PiecewiseConstantDecay", kwargs, range(0, 30))
    assert_raises_naming(lambda: gx.keras.PiecewiseConstantDecay(**kwargs), ValueError,
                         "keras.PiecewiseConstantDecay", "boundaries", "[10, 10]")


# --- no NaN in a discarded branch ---------------------------------------------------------------


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_keras_cosine_decay_without_warmup_steps_makes_no_nan(jit):
    kwargs = dict(initial_learning_rate=1.0, decay_steps=10, warmup_target=2.0, warmup_steps=0)
    schedule = gx.keras.CosineDecay(**kwargs)
    evaluate = jax.jit(schedule) if jit else schedule
    ours = [float(evaluate(jnp.int32(t))) for t in range(0, 14)]  # raises on a NaN
    np.testing.assert_allclose(ours, keras_at("CosineDecay", kwargs, range(0, 14)), rtol=1e-6,
                               atol=1e-7)


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_exponential_decay_before_transition_begin_makes_no_nan(jit):
    # Before transition_begin the discarded power 1e-10 ** -5 overflows; times 0, it was NaN.
    kwargs = dict(init_value=0.0, transition_steps=1, decay_rate=1e-10, transition_begin=5)
    schedule = S.exponential_decay(**kwargs)
    evaluate = jax.jit(schedule) if jit else schedule
    steps = range(0, 10)
    np.testing.assert_array_equal([float(evaluate(jnp.int32(t))) for t in steps],
                                  optax_at("exponential_decay", kwargs, steps))
