"""The Keras presets survive ``pickle``: same ``repr``, same updates and states, bit for bit."""

from __future__ import annotations

import pickle

import jax
import pytest

import gradxform as gx
from tests.helpers import assert_trees_bitwise_equal
from tests.keras.harness import gradient_stream, initial_values, to_tree

PRESETS = {
    "adam-defaults": lambda: gx.keras.adam(),
    "adam-everything": lambda: gx.keras.adam(
        learning_rate=gx.keras.CosineDecay(0.01, 14, alpha=0.1), beta_1=0.8, beta_2=0.9,
        epsilon=1e-6, amsgrad=True, weight_decay=0.1, exclude_from_weight_decay=["bias", "gamma"],
        clipnorm=1.0, use_ema=True, ema_momentum=0.9, ema_overwrite_frequency=3,
        loss_scale_factor=128.0, gradient_accumulation_steps=3),
    "adam-lso": lambda: gx.keras.loss_scale_optimizer(
        gx.keras.adam(0.05, global_clipnorm=1.0), initial_scale=1024.0, dynamic_growth_steps=3),
    "adagrad-defaults": lambda: gx.keras.adagrad(),
    "adagrad-everything": lambda: gx.keras.adagrad(
        learning_rate=gx.keras.ExponentialDecay(0.1, 5, 0.5), initial_accumulator_value=0.0,
        epsilon=1e-6, weight_decay=0.3, exclude_from_weight_decay="kernel", clipvalue=0.5,
        use_ema=True, gradient_accumulation_steps=2),
}


def run(tx, steps=7):
    params = to_tree([jax.numpy.asarray(v) for v in initial_values()])
    state = tx.init(params)
    update = jax.jit(tx.update)
    outputs = []
    for grads in gradient_stream(steps):
        updates, state = update(to_tree([jax.numpy.asarray(g) for g in grads]), state, params)
        params = gx.apply_updates(params, updates)
        outputs.append(updates)
    return outputs, state


@pytest.mark.parametrize("case", sorted(PRESETS))
def test_preset_pickle_round_trip(case):
    tx = PRESETS[case]()
    restored = pickle.loads(pickle.dumps(tx))
    assert repr(restored) == repr(tx)
    assert repr(pickle.loads(pickle.dumps(restored))) == repr(tx)
    ours, ours_state = run(tx)
    theirs, theirs_state = run(restored)
    for step, (a, b) in enumerate(zip(ours, theirs)):
        assert_trees_bitwise_equal(b, a, context=f"{case}: step {step}")
    assert_trees_bitwise_equal(theirs_state, ours_state, context=f"{case}: final state")
