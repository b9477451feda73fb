"""apply_if_finite against optax.apply_if_finite (run live).

* Over a scripted stream with NaN and inf at chosen steps, including more bad
  steps in a row than ``max_consecutive_errors`` (so the "give up and apply"
  path runs and NaN reaches the inner), the updates and every state field must
  match optax's at every step.
* A skipped step emits ``-0.0`` (params bit-for-bit unchanged, even ``-0.0``
  ones), leaves the whole inner state bit-for-bit as it was, and does not run
  the inner update at all (a host callback counts its runs; the jaxpr has a cond).
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradxform as gx
from tests.helpers import assert_trees_close, gradient_stream, random_params

# Non-finite gradients are what this module feeds on purpose.
pytestmark = pytest.mark.allows_nan

STEPS = 30


def strict_schedule(count):
    return 0.05 / (1.0 + 0.1 * count.astype(jnp.float32))


# step -> (leaf, value): NaN/inf in several kinds of leaf, including the 0-d ones.
BAD = {3: ("bias", np.nan), 7: ("scalar", np.inf), 8: ("kernel", -np.inf),
       12: ("bias", np.nan), 13: ("block", np.inf), 14: ("kernel", np.nan), 15: ("scalar", np.nan),
       16: ("bias", np.inf), 22: ("block", np.nan), 27: ("kernel", np.inf)}


def poison(grads, leaf, value):
    grads = jax.tree.map(lambda x: x, grads)  # a copy of the containers
    if leaf == "bias":
        grads["dense"]["bias"] = grads["dense"]["bias"].at[1].set(value)
    elif leaf == "kernel":
        grads["dense"]["kernel"] = grads["dense"]["kernel"].at[2, 0].set(value)
    elif leaf == "block":
        grads["blocks"][2] = jnp.asarray(value, jnp.float32)
    else:
        grads["scalar"] = jnp.asarray(value, jnp.float32)
    return grads


def scripted_stream(params, steps=STEPS, bad=BAD, seed=1):
    return [poison(g, *bad[s]) if s in bad else g
            for s, g in enumerate(gradient_stream(params, steps, seed=seed))]


def bits(x):
    x = np.asarray(x).reshape(-1)
    return x.view({1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}[x.dtype.itemsize])


def assert_bitwise_trees(a, b, context=""):
    assert jax.tree.structure(a) == jax.tree.structure(b), context
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        assert x.dtype == y.dtype and x.shape == y.shape, context
        np.testing.assert_array_equal(bits(x), bits(y), err_msg=context)


@pytest.mark.parametrize("max_errors", [0, 2, 3])
def test_matches_optax_updates_and_state(max_errors):
    params = random_params(0)
    grads_seq = scripted_stream(params)
    mine_tx = gx.apply_if_finite(gx.adam(strict_schedule), max_errors)
    ref_tx = optax.apply_if_finite(optax.adam(strict_schedule), max_errors)
    mine_update, ref_update = jax.jit(mine_tx.update), jax.jit(ref_tx.update)
    mine_state, ref_state = mine_tx.init(params), ref_tx.init(params)
    gave_up = skipped = 0
    for step, grads in enumerate(grads_seq):
        mine, mine_state = mine_update(grads, mine_state, params)
        with jax.numpy_dtype_promotion("standard"):
            ref, ref_state = ref_update(grads, ref_state, params)
        context = f"step {step}"
        assert_trees_close(mine, ref, rtol=2e-6, atol=1e-7, context=context)  # NaN where optax's
        for field in ("notfinite_count", "last_finite", "total_notfinite"):
            a, b = getattr(mine_state, field), getattr(ref_state, field)
            assert a.dtype == b.dtype and a.shape == b.shape == (), (context, field)
            assert a.item() == b.item(), (context, field)
        mine_inner, ref_inner = (jax.tree.leaves(s.inner_state) for s in (mine_state, ref_state))
        assert len(mine_inner) == len(ref_inner)
        for a, b in zip(mine_inner, ref_inner):
            assert a.dtype == b.dtype, context
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-6, atol=1e-7,
                                       err_msg=context)
        if step in BAD:
            if int(mine_state.notfinite_count) > max_errors:
                gave_up += 1
                assert not all(np.all(np.isfinite(x)) for x in jax.tree.leaves(mine)), context
            else:
                skipped += 1
                assert all(np.all(np.signbit(x)) for x in jax.tree.leaves(mine)), context
    assert int(mine_state.total_notfinite) == len(BAD)
    assert gave_up > 0 and (max_errors == 0 or skipped > 0)
    # NaN reached adam's moments on the give-up steps and stays there, as in optax.
    assert any(np.isnan(np.asarray(x)).any() for x in jax.tree.leaves(mine_state.inner_state[0].nu))


def skip_inner():
    """Adam with a scheduled learning rate and a params EMA: every kind of counter."""
    return gx.chain(gx.scale_by_adam(), gx.scale_by_learning_rate(strict_schedule),
                    gx.params_ema(0.9, overwrite_frequency=4))


def test_skipped_step_holds_params_and_the_whole_inner_state_bitwise():
    params = random_params(1)
    params["dense"]["bias"] = jnp.array([-0.0, 0.0, 2.0])
    params["scalar"] = jnp.array(-0.0)
    tx = gx.apply_if_finite(skip_inner(), 5)
    update, state = jax.jit(tx.update), tx.init(params)
    grads_seq = scripted_stream(params, 18, bad={s: v for s, v in BAD.items() if s < 18})
    for step, grads in enumerate(grads_seq):
        updates, new_state = update(grads, state, params)
        new_params = gx.apply_updates(params, updates)
        if step in BAD:
            assert all(np.all(np.signbit(x)) and not np.any(x) for x in jax.tree.leaves(updates))
            assert all(u.dtype == g.dtype for u, g in zip(jax.tree.leaves(updates),
                                                          jax.tree.leaves(grads)))
            assert_bitwise_trees(new_params, params, f"step {step}")
            old_leaves, new_leaves = (jax.tree.leaves(s.inner_state) for s in (state, new_state))
            assert len(old_leaves) == len(new_leaves)
            for a, b in zip(old_leaves, new_leaves):
                np.testing.assert_array_equal(a, b, err_msg=f"step {step}")
                np.testing.assert_array_equal(bits(a), bits(b), err_msg=f"step {step}")
            assert not bool(new_state.last_finite)
        else:
            assert int(new_state.inner_state[0].count) == int(state.inner_state[0].count) + 1
            assert int(new_state.inner_state[2].count) == int(state.inner_state[2].count) + 1
        state, params = new_state, new_params
    assert int(state.inner_state[0].count) == 18 - len([s for s in BAD if s < 18])


def counting_inner(calls):
    def scale(updates, params):
        leaf = jax.tree.leaves(updates)[0]
        jax.debug.callback(lambda x: calls.append(float(x)), leaf.reshape(-1)[0])
        return jax.tree.map(lambda g: -0.5 * g, updates)

    return gx.stateless(scale)


def test_inner_is_not_run_on_skipped_steps():
    calls = []
    tx = gx.apply_if_finite(counting_inner(calls), 10)
    params = {"w": jnp.ones(3), "none": None}
    update, state = jax.jit(tx.update), tx.init(params)
    for step in range(6):
        value = np.nan if step in (1, 4) else float(step)
        grads = {"w": jnp.array([float(step), value, 1.0]), "none": None}
        updates, state = update(grads, state, params)
        jax.effects_barrier()
        assert updates["none"] is None
    assert calls == [0.0, 2.0, 3.0, 5.0]
    jaxpr = jax.make_jaxpr(tx.update)(grads, tx.init(params), params)
    assert any(eqn.primitive.name == "cond" for eqn in jaxpr.jaxpr.eqns)


@pytest.mark.parametrize("value, exc", [
    (-1, ValueError), (1.5, TypeError), (True, TypeError), (None, TypeError), ("3", TypeError),
])
def test_max_consecutive_errors_validation(value, exc):
    with pytest.raises(exc, match="apply_if_finite: max_consecutive_errors must be an int >= 0"):
        gx.apply_if_finite(gx.sgd(0.1), value)


def test_numpy_int_accepted_and_inner_must_be_a_transformation():
    gx.apply_if_finite(gx.sgd(0.1), np.int64(3))
    for inner in (lambda g: g, None, 0.1):
        with pytest.raises(TypeError, match="apply_if_finite: inner must be a transformation"):
            gx.apply_if_finite(inner, 3)


def is_acc(x):
    return isinstance(x, gx.AccumulateGradientsState)


def test_skips_keras_micro_steps_entirely():
    """Around Keras adam with EMA and accumulation, a bad micro-step is as if never fed."""
    params = {"w": jnp.asarray(np.random.default_rng(2).standard_normal((3, 2)), jnp.float32),
              "b": jnp.array([0.5, -0.0])}

    def keras_tx():
        return gx.keras.adam(learning_rate=0.01, use_ema=True, gradient_accumulation_steps=2)

    tx = gx.apply_if_finite(keras_tx(), 3)
    bad = {1: ("w", np.nan), 4: ("b", np.inf), 5: ("w", -np.inf)}  # each with a half-full window
    rng = np.random.default_rng(3)
    grads_seq = []
    for step in range(12):
        grads = {"w": jnp.asarray(rng.standard_normal((3, 2)), jnp.float32),
                 "b": jnp.asarray(rng.standard_normal(2), jnp.float32)}
        if step in bad:
            name, value = bad[step]
            grads[name] = grads[name].at[0].set(value)
        grads_seq.append(grads)
    start = params
    update, state = jax.jit(tx.update), tx.init(params)
    outputs = []
    for step, grads in enumerate(grads_seq):
        updates, new_state = update(grads, state, params)
        if step in bad:
            assert all(np.all(np.signbit(x)) for x in jax.tree.leaves(updates)), step
            # accumulator, counters, adam moments and the EMA: all untouched
            assert_bitwise_trees(new_state.inner_state, state.inner_state, f"step {step}")
            (acc,) = [x for x in jax.tree.leaves(new_state.inner_state, is_leaf=is_acc)
                      if is_acc(x)]
            assert int(acc.count) % 2 == 1 and np.any(acc.acc_grads["w"]), step
        else:
            outputs.append(updates)
        params, state = gx.apply_updates(params, updates), new_state
    # The same as the Keras chain alone fed only the finite micro-steps.
    direct_tx = keras_tx()
    direct_update, direct_state = jax.jit(direct_tx.update), direct_tx.init(start)
    direct_params = start
    good = [g for step, g in enumerate(grads_seq) if step not in bad]
    assert len(good) == len(outputs) == 9
    for call, (grads, mine) in enumerate(zip(good, outputs)):
        updates, direct_state = direct_update(grads, direct_state, direct_params)
        assert_trees_close(mine, updates, rtol=1e-6, atol=1e-8, context=f"call {call}")
        direct_params = gx.apply_updates(direct_params, updates)
    assert_trees_close(params, direct_params, rtol=1e-6, atol=1e-8)
    assert_trees_close(state.inner_state, direct_state, rtol=1e-6, atol=1e-8)


# --- integer arguments ------------------------------------------------------------------------


@pytest.mark.parametrize("value", [np.int8(2), np.int16(2), np.uint8(2), np.uint32(2)],
                         ids=["int8", "int16", "uint8", "uint32"])
def test_small_numpy_int_max_errors_works_like_python_int(value):
    tx = gx.apply_if_finite(gx.sgd(0.1), value)
    params = {"w": jnp.ones(2)}
    updates, state = jax.jit(tx.update)({"w": jnp.array([np.nan, 1.0])}, tx.init(params), params)
    assert np.all(np.signbit(updates["w"])) and int(state.notfinite_count) == 1


def test_max_errors_beyond_int32_is_rejected_or_never_gives_up():
    try:
        tx = gx.apply_if_finite(gx.sgd(0.1), 2**31)
    except ValueError as error:
        assert "apply_if_finite: max_consecutive_errors" in str(error)
        return
    params = {"w": jnp.ones(2)}
    updates, _ = jax.jit(tx.update)({"w": jnp.array([np.nan, 1.0])}, tx.init(params), params)
    assert np.all(np.signbit(updates["w"]))


@pytest.mark.parametrize("make", [
    lambda v: gx.accumulate_gradients(gx.sgd(0.1), v),
    lambda v: gx.multi_steps(gx.sgd(0.1), v),
    lambda v: gx.params_ema(0.9, overwrite_frequency=v, calls_per_step=v),
    lambda v: gx.dynamic_loss_scale(gx.sgd(0.1), 4.0, v),
], ids=["accumulate_gradients", "multi_steps", "params_ema", "dynamic_loss_scale"])
def test_numpy_int_arguments_meet_int32_counters_under_strict_promotion(make):
    tx = make(np.uint8(2))
    params = {"w": jnp.ones(2)}
    state = tx.init(params)
    for _ in range(3):
        updates, state = jax.jit(tx.update)({"w": jnp.array([0.5, 1.0])}, state, params)
        params = gx.apply_updates(params, updates)
    assert np.all(np.isfinite(params["w"]))
