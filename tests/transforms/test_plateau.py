"""reduce_on_plateau against optax.contrib, run live, and against the rule in float64 NumPy.

* float32: 48 jitted steps fed a loss that falls, plateaus (within and outside
  the tolerances), improves again and plateaus again, over a nested tree with a
  0-d, a zero-size and a ``None`` leaf, for the defaults and for non-default
  factors, patiences, tolerances, cooldowns, accumulation sizes and minimum
  scales: the updates and every field of the state agree at every step, and
  the runs do reduce the scale, cool down and accumulate (so the comparison
  says something). The scales also follow the rule written in float64 NumPy.
* bfloat16 gradients: the updates within one bfloat16 rounding of optax's in
  float32; the state is float32, the same as for float32 params (optax's
  would be bfloat16).
* ``rtol=1``: no NaN (optax computes ``0 * inf`` at first and then never sees
  an improvement); the NumPy rule is followed.
* ``inject_hyperparams(reduce_on_plateau)`` gives the plain updates and state
  bit for bit, and a factor set in its state is used; errors name the
  transformation and the value.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradxform as gx
from tests.helpers import FAST_COMPILE, assert_trees_bitwise_equal, gradient_stream, random_params

# Falls, plateaus (3.4 give or take less than rtol), improves, plateaus again, falls, plateaus.
LOSSES = [5.0, 4.0, 3.5, 3.4] + [3.4, 3.40001, 3.4, 3.39999, 3.45, 3.4] * 2 + [
    2.0, 1.9, 1.9, 1.91, 1.9, 1.9, 1.9, 1.95, 1.9, 1.9] + [1.0, 0.99, 0.98] + [0.98] * 11


def _run(tx, grads_seq, values):
    @functools.partial(jax.jit, compiler_options=FAST_COMPILE)
    def step(grads, state, value):
        return tx.update(grads, state, value=value)

    state = tx.init(grads_seq[0])
    out = []
    for grads, value in zip(grads_seq, values):
        updates, state = step(grads, state, jnp.float32(value))
        out.append((updates, state))
    return out


def reference_scales(values, factor=0.1, patience=10, rtol=1e-4, atol=0.0, cooldown=0,
                     accumulation_size=1, min_scale=0.0):
    """The documented rule in float64: the scale after each value."""
    scale, best, plateau, cool, count, avg, scales = 1.0, math.inf, 0, 0, 0, 0.0, []
    for value in values:
        avg, count = (count * avg + value) / (count + 1), count + 1
        if count == accumulation_size:
            threshold = (1 - rtol) * best - atol if math.isfinite(best) else best
            improved = avg < threshold
            best = avg if improved else best
            plateau = 0 if improved else plateau + 1
            if cool > 0:
                plateau, cool = 0, cool - 1
            elif plateau >= patience:
                scale, plateau, cool = max(scale * factor, min_scale), 0, cooldown
            count, avg = 0, 0.0
        scales.append(scale)
    return scales


CASES = [
    pytest.param(dict(), id="defaults"),
    pytest.param(dict(factor=0.5, patience=2, cooldown=3), id="cooldown"),
    pytest.param(dict(factor=0.3, patience=2, rtol=1e-2, atol=1e-3, cooldown=1,
                      accumulation_size=3, min_scale=0.1), id="accumulation-min_scale"),
    pytest.param(dict(factor=0.5, patience=1, rtol=0.0, atol=0.05), id="atol-only"),
]


@pytest.mark.parametrize("kwargs", CASES)
def test_matches_optax_field_by_field_and_the_rule(kwargs):
    params = random_params(0)
    grads_seq = gradient_stream(params, len(LOSSES), seed=1)
    ours = _run(gx.reduce_on_plateau(**kwargs), grads_seq, LOSSES)
    with jax.numpy_dtype_promotion("standard"), jax.debug_nans(False):
        theirs = _run(optax.contrib.reduce_on_plateau(**kwargs), grads_seq, LOSSES)
    expected_scales = reference_scales(LOSSES, **kwargs)
    for step, ((updates, state), (r_updates, r_state)) in enumerate(zip(ours, theirs)):
        assert state._fields == r_state._fields
        for field in state._fields:
            mine, ref = getattr(state, field), getattr(r_state, field)
            assert mine.dtype == ref.dtype and mine.shape == ref.shape == (), field
            np.testing.assert_array_equal(mine, ref, err_msg=f"{field} at step {step}")
        for a, e in zip(jax.tree.leaves(updates), jax.tree.leaves(r_updates)):
            np.testing.assert_allclose(a, e, rtol=1e-6, atol=0, err_msg=f"updates at step {step}")
        np.testing.assert_allclose(float(state.scale), expected_scales[step], rtol=1e-6)
    scales = {float(state.scale) for _, state in ours}
    assert len(scales) >= 3, scales  # the scale did drop, twice at least
    if kwargs.get("cooldown"):
        assert any(int(state.cooldown_count) > 0 for _, state in ours)
    if kwargs.get("accumulation_size", 1) > 1:
        assert {int(state.count) for _, state in ours} == {0, 1, 2}
    if "min_scale" in kwargs:
        assert min(scales) == np.float32(kwargs["min_scale"])


def test_bfloat16_gradients_keep_a_float32_state():
    params = random_params(0, jnp.bfloat16)
    grads_seq = gradient_stream(params, 30, seed=1)
    kwargs = dict(factor=0.1, patience=2, cooldown=1)
    ours = _run(gx.reduce_on_plateau(**kwargs), grads_seq, LOSSES)
    as_f32 = [jax.tree.map(lambda g: g.astype(jnp.float32), g) for g in grads_seq]
    with jax.numpy_dtype_promotion("standard"), jax.debug_nans(False):
        theirs = _run(optax.contrib.reduce_on_plateau(**kwargs), as_f32, LOSSES)
    in_f32 = _run(gx.reduce_on_plateau(**kwargs), as_f32, LOSSES)
    for step, ((updates, state), (r_updates, _), (_, state32)) in enumerate(
            zip(ours, theirs, in_f32)):
        assert_trees_bitwise_equal(state, state32, f"state at step {step}")
        for a, e in zip(jax.tree.leaves(updates), jax.tree.leaves(r_updates)):
            assert a.dtype == jnp.bfloat16
            np.testing.assert_allclose(np.asarray(a, np.float32), e, rtol=8e-3, atol=1e-30)
    assert float(ours[-1][1].scale) < 0.1  # reduced at least twice; 0.1 is 0.1001 in bfloat16
    assert optax.contrib.reduce_on_plateau().init(params).scale.dtype == jnp.bfloat16


def test_rtol_one_follows_the_rule_without_nan():
    """Eager, under jax_debug_nans: optax's (1 - 1) * inf would raise here."""
    kwargs = dict(factor=0.5, patience=2, rtol=1.0, atol=0.5)
    tx = gx.reduce_on_plateau(**kwargs)
    grads = {"w": jnp.ones(2)}
    state, scales = tx.init(grads), []
    for value in LOSSES[:6]:
        _, state = tx.update(grads, state, value=jnp.float32(value))
        scales.append(float(state.scale))
    assert float(state.best_value) == LOSSES[0] and scales[-1] == 0.25  # reduced twice
    np.testing.assert_allclose(scales, reference_scales(LOSSES[:6], **kwargs), rtol=1e-7)


def test_inject_hyperparams_gives_the_plain_updates_bitwise():
    kwargs = dict(factor=0.5, patience=2, rtol=1e-3, atol=1e-4, cooldown=1, accumulation_size=2,
                  min_scale=0.01)
    params = random_params(0)
    grads_seq = gradient_stream(params, len(LOSSES), seed=1)
    plain = _run(gx.reduce_on_plateau(**kwargs), grads_seq, LOSSES)
    injected_tx = gx.inject_hyperparams(gx.reduce_on_plateau)(**kwargs)
    injected = _run(injected_tx, grads_seq, LOSSES)
    for step, ((u1, s1), (u2, s2)) in enumerate(zip(plain, injected)):
        assert_trees_bitwise_equal(u2, u1, f"updates at step {step}")
        assert_trees_bitwise_equal(s2.inner_state, s1, f"state at step {step}")
    assert set(injected[0][1].hyperparams) == {"factor", "rtol", "atol", "min_scale"}
    # A factor set in the state is the one the next reduction uses.
    state = gx.tree_set(injected_tx.init(params), factor=0.25)
    step = jax.jit(injected_tx.update, compiler_options=FAST_COMPILE)
    for value in [1.0, 1.0, 1.0, 1.0, 1.0, 1.0]:
        _, state = step(params, state, value=jnp.float32(value))
    assert float(state.inner_state.scale) == 0.25


def test_errors_name_the_transformation_and_the_value():
    tx = gx.reduce_on_plateau()
    grads = {"w": jnp.ones(2)}
    with pytest.raises(TypeError, match="reduce_on_plateau: update needs the monitored value"):
        tx.update(grads, tx.init(grads))
    with pytest.raises(ValueError, match=r"reduce_on_plateau: value must be .* shape \(2,\)"):
        tx.update(grads, tx.init(grads), value=jnp.ones(2))
    with pytest.raises(TypeError, match="reduce_on_plateau: value must be the loss, a real number"):
        tx.update(grads, tx.init(grads), value="1.0")
    with pytest.raises(ValueError, match="reduce_on_plateau: at least one of rtol and atol"):
        gx.reduce_on_plateau(rtol=0.0, atol=0.0)
