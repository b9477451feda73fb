"""Loss scaling against live Keras 3.15.1: ``LossScaleOptimizer``, ``loss_scale_factor``, ``scale_loss``.

Dynamic runs feed the gradients of the *scaled* loss (each side multiplies the
harness's gradients by its own current scale) and inject inf / NaN at chosen
calls. Besides the params at every call and the finalized params, the loss
scale after every call must be identical: ours read with
``gx.current_loss_scale(state)``, Keras's from its ``dynamic_scale`` variable.
Also: the hand-written chains of public transforms are bitwise the presets.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import keras
import numpy as np
import pytest

import gradxform as gx
from tests.keras.harness import (
    SCHEDULES,
    STEPS,
    ScheduleSpec,
    assert_runs_equal,
    check_parity,
    gradient_stream,
    initial_values,
    make_gradxform,
    make_keras,
    run_gradxform,
    run_keras,
    to_tree,
)

# Non-finite gradients are what this module feeds on purpose.
pytestmark = pytest.mark.allows_nan

LSO = dict(initial_scale=1024.0, dynamic_growth_steps=3)
INF, NAN = np.inf, np.nan

_DYNAMIC_CASES = {
    "adam": ("adam", dict(learning_rate=0.05), {5: INF, 6: NAN, 12: -INF, 13: NAN, 20: INF}),
    "adagrad-acc0": (
        "adagrad",
        dict(learning_rate=0.05, initial_accumulator_value=0.0),
        {2: NAN, 9: INF, 10: INF, 18: -INF},
    ),
    # Non-finite calls in the middle and at the end of accumulation windows [3,4,5], [6,7,8].
    "adam-gas3-inside-window": (
        "adam",
        dict(learning_rate=0.05, gradient_accumulation_steps=3),
        {4: INF, 7: NAN, 8: -INF, 15: NAN},
    ),
    "adam-gas3-ema": (
        "adam",
        dict(
            learning_rate=0.05, gradient_accumulation_steps=3, use_ema=True, ema_momentum=0.9,
            ema_overwrite_frequency=2,
        ),
        {0: NAN, 4: INF, 11: NAN, 12: INF},
    ),
    "amsgrad-every-option": (
        "adam",
        dict(
            learning_rate=ScheduleSpec.named("PiecewiseConstantDecay"), beta_2=0.9, amsgrad=True,
            weight_decay=0.1, exclude_from_weight_decay=["bias", "gamma"], clipnorm=1.0,
            use_ema=True, ema_momentum=0.9, ema_overwrite_frequency=3, gradient_accumulation_steps=2,
        ),
        {3: INF, 7: NAN, 8: NAN, 16: -INF},
    ),
    "adagrad-every-option": (
        "adagrad",
        dict(
            learning_rate=ScheduleSpec.named("CosineDecay"), initial_accumulator_value=0.0,
            weight_decay=0.3, global_clipnorm=1.0, use_ema=True, ema_overwrite_frequency=4,
            gradient_accumulation_steps=3,
        ),
        {1: INF, 5: NAN, 14: INF, 15: INF},
    ),
}


def _keras_variable(opt, name):
    (value,) = [v.value for v in opt.variables if v.name == name]
    return np.asarray(value)


@pytest.mark.parametrize("case", sorted(_DYNAMIC_CASES))
def test_dynamic_loss_scaling_matches_keras(case):
    optimizer, kwargs, nonfinite = _DYNAMIC_CASES[case]
    ours, ref = check_parity(optimizer, kwargs, lso=LSO, nonfinite=nonfinite)
    # (check_parity compared the scale after every call, exactly.)
    assert len(set(ref.loss_scales)) > 2, "the scale should both grow and shrink"
    state = ours.state
    assert float(state.loss_scale) == float(_keras_variable(ref.optimizer, "dynamic_scale"))
    assert int(state.growth_count) == int(_keras_variable(ref.optimizer, "step_counter"))
    # The inner optimizer saw exactly the finite calls (its raw counter did not move on the others).
    inner_raw = int(_keras_variable(ref.optimizer.inner_optimizer, "iteration"))
    assert inner_raw == STEPS - len(nonfinite) == STEPS - int(state.skipped_steps)


def test_documented_loss_scale_sequence_reproduced_from_keras():
    """keras_semantics section 7: initial 1024, growth 3, non-finite at calls 5, 6, 12, 13 of 20."""
    nonfinite = {5: INF, 6: NAN, 12: INF, 13: NAN}
    ours, ref = check_parity(
        "adam", dict(learning_rate=0.05), lso=LSO, nonfinite=nonfinite, grads=gradient_stream(20)
    )
    np.testing.assert_array_equal(ours.loss_scales, ref.loss_scales)
    # The shape of Keras's sequence, read from Keras rather than written down here.
    previous = [LSO["initial_scale"]] + ref.loss_scales[:-1]
    for step, (before, after) in enumerate(zip(previous, ref.loss_scales)):
        assert after in (before / 2, before, before * 2)
        assert (after == before / 2) == (step in nonfinite)
    (adam_state,) = [
        s for s in jax.tree.leaves(ours.state, is_leaf=lambda x: isinstance(x, gx.ScaleByAdamState))
        if isinstance(s, gx.ScaleByAdamState)
    ]
    assert int(adam_state.count) == int(ref.optimizer.iterations) == 20 - len(nonfinite)


def test_scale_stops_at_the_floor_where_keras_goes_to_zero_and_nan():
    """150 non-finite calls from 2**15: the scales are Keras's while Keras's stay >= 2**-126.

    Then Keras's is 0 and its next finite call writes NaN into every variable;
    ours stays at 2**-126 and the finite calls leave the params finite.
    """
    floor, skips = 2.0**-126, 150
    lso = dict(initial_scale=2.0**15, dynamic_growth_steps=2000)
    kwargs, grads = dict(learning_rate=0.05), gradient_stream(skips + 3)
    nonfinite = {step: NAN for step in range(skips)}
    ref = run_keras("adam", kwargs, lso=lso, grads=grads, nonfinite=nonfinite)
    ours = run_gradxform(make_gradxform("adam", kwargs, lso), grads=grads, nonfinite=nonfinite)
    for step, (scale, keras_scale) in enumerate(zip(ours.loss_scales[:skips], ref.loss_scales)):
        assert scale == max(keras_scale, floor), step
    assert ref.loss_scales[skips - 1] == 0.0 and ours.loss_scales[skips - 1] == floor
    for leaf, initial in zip(ours.trajectory[skips - 1], initial_values()):
        np.testing.assert_array_equal(leaf, initial)  # every non-finite call held, on both sides
    assert all(np.isnan(leaf).all() for leaf in ref.trajectory[-1])
    assert all(np.isfinite(leaf).all() for leaf in ours.trajectory[-1])
    assert int(ours.state.skipped_steps) == skips


# --------------------------------------------------------------------------- scale_loss

LOSSES = [jnp.float32(0.37), jnp.float32(3e-5), jnp.float32(-12.5)]


def _keras_scale_loss(opt, loss):
    with jax.numpy_dtype_promotion("standard"):
        return np.asarray(opt.scale_loss(loss))


def _assert_same_scaled_losses(opt, state, label):
    for loss in LOSSES:
        ours = gx.scale_loss(loss, state)
        assert ours.dtype == jnp.float32, label
        np.testing.assert_array_equal(ours, _keras_scale_loss(opt, loss), err_msg=label)


@pytest.mark.parametrize("optimizer", ["adam", "adagrad"])
@pytest.mark.parametrize("factor", [None, 128.0, 3.0])
def test_scale_loss_with_static_factor(optimizer, factor):
    kwargs = dict(learning_rate=0.05, gradient_accumulation_steps=2)
    if factor is not None:
        kwargs["loss_scale_factor"] = factor
    params = to_tree([jnp.asarray(v) for v in initial_values()])
    _assert_same_scaled_losses(
        make_keras(optimizer, kwargs), make_gradxform(optimizer, kwargs).init(params), "fresh"
    )
    ours, ref = check_parity(optimizer, kwargs)
    _assert_same_scaled_losses(ref.optimizer, ours.state, "after 24 calls")


@pytest.mark.parametrize("calls", [6, STEPS])
def test_scale_loss_with_dynamic_scale(calls):
    kwargs = dict(learning_rate=0.05)
    params = to_tree([jnp.asarray(v) for v in initial_values()])
    state = make_gradxform("adam", kwargs, LSO).init(params)
    unbuilt = make_keras("adam", kwargs, LSO)
    _assert_same_scaled_losses(unbuilt, state, "before build")
    with jax.numpy_dtype_promotion("standard"):
        unbuilt.build([keras.Variable(v, name=n) for v, n in zip(initial_values(), "abcde")])
    _assert_same_scaled_losses(unbuilt, state, "built, no call yet")
    nonfinite = {1: INF, 4: NAN, 17: INF}
    ours, ref = check_parity(
        "adam", kwargs, lso=LSO, nonfinite=nonfinite, grads=gradient_stream(calls)
    )
    assert float(gx.current_loss_scale(ours.state)) != LSO["initial_scale"]
    _assert_same_scaled_losses(ref.optimizer, ours.state, f"after {calls} calls")


# --------------------------------------------------------------------------- hand-written chains


def _hand_adam():
    lr = gx.schedules.AtLastMicroStep(gx.keras.CosineDecay(**SCHEDULES["CosineDecay"]), 3)
    update = gx.chain(
        gx.clip_by_norm(1.0),
        gx.scale_by_adam(b1=0.9, b2=0.999, eps=1e-7, eps_hat=True),
        gx.scale_by_learning_rate(lr),
        gx.decoupled_weight_decay(0.1, lr, exclude=["bias", "gamma"]),
    )
    return gx.chain(
        gx.static_loss_scale(128.0),
        gx.accumulate_gradients(update, 3),
        gx.params_ema(0.9, 3, calls_per_step=3),
    )


def _hand_adagrad():
    lr = gx.keras.ExponentialDecay(**SCHEDULES["ExponentialDecay"])
    return gx.chain(
        gx.static_loss_scale(4.0),
        gx.clip_by_global_norm(1.0),
        gx.scale_by_adagrad(initial_accumulator_value=0.0, eps=1e-7),
        gx.scale_by_learning_rate(lr),
        gx.decoupled_weight_decay(0.3, lr),
        gx.params_ema(0.99, calls_per_step=1),
    )


_HAND = {
    "adam": (_hand_adam, dict(
        learning_rate=gx.keras.CosineDecay(**SCHEDULES["CosineDecay"]), weight_decay=0.1,
        exclude_from_weight_decay=["bias", "gamma"], clipnorm=1.0, use_ema=True,
        ema_momentum=0.9, ema_overwrite_frequency=3, loss_scale_factor=128.0,
        gradient_accumulation_steps=3,
    )),
    "adagrad": (_hand_adagrad, dict(
        learning_rate=gx.keras.ExponentialDecay(**SCHEDULES["ExponentialDecay"]),
        initial_accumulator_value=0.0, weight_decay=0.3, global_clipnorm=1.0, use_ema=True,
        loss_scale_factor=4.0,
    )),
}


@pytest.mark.parametrize("optimizer", sorted(_HAND))
def test_hand_written_chain_is_bitwise_the_preset(optimizer):
    make_hand, kwargs = _HAND[optimizer]
    preset = getattr(gx.keras, optimizer)(**kwargs)
    assert repr(make_hand()) == repr(preset)
    assert_runs_equal(run_gradxform(make_hand()), run_gradxform(preset), f"hand-written {optimizer}")
    # The same without the static scale, around dynamic loss scaling, with non-finite calls.
    hand = gx.chain(*make_hand().children[1:])
    kwargs = {k: v for k, v in kwargs.items() if k != "loss_scale_factor"}
    lso_preset = gx.keras.loss_scale_optimizer(getattr(gx.keras, optimizer)(**kwargs), **LSO)
    nonfinite = {2: INF, 9: NAN}
    assert_runs_equal(
        run_gradxform(gx.dynamic_loss_scale(hand, **LSO), nonfinite=nonfinite),
        run_gradxform(lso_preset, nonfinite=nonfinite),
        f"hand-written {optimizer} under dynamic loss scaling",
    )
