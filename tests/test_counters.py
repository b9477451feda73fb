"""The int32 counters in every state saturate at 2**31 - 1 instead of wrapping.

A wrapped step count would turn bias corrections, schedules and accumulation
windows into nonsense after 2**31 updates. For the swept entries of
``tests/factories.py`` (``sweep``: every constructor), each monotonic counter of its state is set to
2**31 - 2 and six jitted updates run (two accumulation windows of three): the counters end at 2**31 - 1 and stay
there, and the updates stay finite. The counters that only grow on skipped
(non-finite) steps are driven the same way with NaN gradients.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradxform as gx
from tests.factories import FACTORIES, NAMES, sweep

TOP = int(np.iinfo(np.int32).max)
# Counters that only ever grow; the others count within a window (micro steps,
# growth steps, consecutive errors) and are reset by design.
MONOTONIC = {"count", "gradient_step", "skipped_steps", "total_notfinite"}
# Entries that skip non-finite steps and keep a running count of them
# (multi_steps' skip_not_finite keeps only the latest step's count).
GUARDS = ["apply_if_finite", "dynamic_loss_scale", "keras_adagrad_everything"]

_PARAMS = {"kernel": jnp.ones((2, 3)), "bias": jnp.full(3, 0.5), "scalar": jnp.float32(2.0)}


def _field(path):
    names = [getattr(key, "name", getattr(key, "key", None)) for key in path]
    return next((name for name in reversed(names) if isinstance(name, str)), None)


def _set_monotonic(state, value):
    def set_leaf(path, leaf):
        if leaf.dtype == jnp.int32 and leaf.shape == () and _field(path) in MONOTONIC:
            return jnp.asarray(value, jnp.int32)
        return leaf

    return jax.tree_util.tree_map_with_path(set_leaf, state)


def _monotonic_values(state):
    return {
        jax.tree_util.keystr(path): int(leaf)
        for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]
        if leaf.dtype == jnp.int32 and leaf.shape == () and _field(path) in MONOTONIC
    }


def _run(name, grads_seq):
    tx = FACTORIES[name]()
    state = _set_monotonic(tx.init(_PARAMS), TOP - 1)
    update = jax.jit(tx.update)
    outputs = []
    for grads in grads_seq:
        updates, state = update(grads, state, _PARAMS)
        outputs.append(updates)
    return outputs, state


def _grads(scale):
    return jax.tree.map(lambda p: scale * (p + 1.0), _PARAMS)


# apply_every keeps optax's field name ``count`` for its position in the window
# (counted modulo k); tests/transforms/test_periodic.py covers it at k = 2**31 - 1.
WINDOW_NAMED_COUNT = {"apply_every", "apply_every_1"}


@pytest.mark.parametrize("name", sweep(set(NAMES) - WINDOW_NAMED_COUNT))
def test_step_counters_saturate_at_int32_max(name):
    outputs, state = _run(name, [_grads(scale) for scale in (0.5, -1.0, 2.0, 0.1, -3.0, 1.0)])
    counters = _monotonic_values(state)
    for path, value in counters.items():
        if path.endswith(("skipped_steps", "total_notfinite")):
            assert value == TOP - 1, path  # no skipped step: untouched
        else:
            assert value == TOP, (path, value)
    for leaf in jax.tree.leaves(state):
        if leaf.dtype == jnp.int32:
            assert int(leaf) >= 0, leaf  # no counter wrapped to a negative number
    for updates in outputs:
        for leaf in jax.tree.leaves(updates):
            assert np.all(np.isfinite(leaf)), (name, updates)


def test_some_entry_holds_each_counter():
    seen = set()
    for name in NAMES:
        state = FACTORIES[name]().init(_PARAMS)
        seen |= {_field(path) for path, _ in jax.tree_util.tree_flatten_with_path(state)[0]}
    assert MONOTONIC <= seen


@pytest.mark.allows_nan
@pytest.mark.parametrize("name", GUARDS)
def test_skip_counters_saturate_at_int32_max(name):
    nan_grads = jax.tree.map(lambda g: g.at[...].set(jnp.nan) if g.ndim == 0 else g, _grads(1.0))
    _, state = _run(name, [nan_grads, nan_grads, _grads(1.0), nan_grads])
    skip_counters = {
        path: value for path, value in _monotonic_values(state).items()
        if path.endswith(("skipped_steps", "total_notfinite"))
    }
    assert skip_counters, "the guard counts no skipped steps"
    assert all(value == TOP for value in skip_counters.values()), skip_counters


def test_accumulation_windows_stay_periodic_after_the_count_saturates():
    tx = gx.accumulate_gradients(gx.sgd(0.1), every_k=3)
    state = _set_monotonic(tx.init(_PARAMS), TOP - 1)
    update = jax.jit(tx.update)
    emitted = []
    for _ in range(9):
        updates, state = update(_grads(1.0), state, _PARAMS)
        emitted.append(bool(jnp.any(updates["kernel"] != 0)))
    assert int(state.count) == TOP
    assert emitted == [False, False, True] * 3


def test_ema_overwrites_stay_periodic_after_the_count_saturates():
    tx = gx.params_ema(0.5, overwrite_frequency=2)
    state = _set_monotonic(tx.init(_PARAMS), TOP - 1)
    update = jax.jit(tx.update)
    overwritten = []
    for _ in range(6):
        grads = _grads(1.0)
        updates, state = update(grads, state, _PARAMS)
        overwritten.append(bool(jnp.any(updates["kernel"] != grads["kernel"])))
    assert int(state.count) == TOP
    assert overwritten == [False, True] * 3


def test_ema_period_beyond_int32_is_rejected():
    with pytest.raises(ValueError, match=r"params_ema: calls_per_step \* overwrite_frequency must be"):
        gx.params_ema(0.9, overwrite_frequency=2**16, calls_per_step=2**16)
