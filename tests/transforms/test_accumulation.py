"""multi_steps against optax.MultiSteps (run live), and accumulate_gradients against Keras.

* ``multi_steps`` must give optax's updates *and* state (mini_step,
  gradient_step, acc_grads, the inner state, skip_state) at every step, for
  int and scheduled ``every_k``, mean and sum, and both skip rules.
* ``accumulate_gradients`` is checked against Keras's gradient accumulation
  written in NumPy: sum the micro-steps, hand ``(g + acc) / k`` to the inner on
  the ``k``-th call, emit zeros (here ``-0.0``) in between. The inner runs only
  on update steps, which a host callback counts.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradxform as gx
from tests.helpers import assert_trees_close, gradient_stream, is_none, random_params, run_updates

STEPS = 32


def strict_schedule(count):
    return 0.05 / (1.0 + 0.1 * count.astype(jnp.float32))


def with_bad_values(grads_seq, steps):
    """Puts a NaN or an inf into one leaf at each of ``steps``."""
    out = []
    for step, grads in enumerate(grads_seq):
        if step in steps:
            bad = np.nan if step % 2 else np.inf
            grads = dict(grads, dense=dict(grads["dense"],
                                           bias=grads["dense"]["bias"].at[1].set(bad)))
        out.append(grads)
    return out


def signbit_everywhere(tree):
    return all(np.all(np.signbit(np.asarray(x, np.float32))) for x in jax.tree.leaves(tree))


# --- multi_steps vs optax.MultiSteps ---------------------------------------------------

MULTI_CASES = [
    pytest.param(dict(every_k_schedule=3), set(), id="k=3"),
    pytest.param(dict(every_k_schedule=4, use_grad_mean=False), set(), id="k=4-sum"),
    pytest.param(dict(every_k_schedule=lambda step: 2 + (step % 2)), set(), id="k-schedule"),
    pytest.param(dict(every_k_schedule=lambda step: 1 + (step % 3), use_grad_mean=False), set(),
                 id="k-schedule-sum"),
    pytest.param(dict(every_k_schedule=3, should_skip_update_fn="skip_not_finite"),
                 {2, 9, 10, 17, 25}, id="skip_not_finite"),
    pytest.param(dict(every_k_schedule=lambda step: 2 + (step % 2), use_grad_mean=False,
                      should_skip_update_fn="skip_large_updates"), set(),
                 id="skip_large_updates"),
]


def build_pair(kwargs):
    gx_kwargs, optax_kwargs = dict(kwargs), dict(kwargs)
    skip = kwargs.get("should_skip_update_fn")
    if skip == "skip_not_finite":
        gx_kwargs["should_skip_update_fn"] = gx.skip_not_finite
        optax_kwargs["should_skip_update_fn"] = optax.skip_not_finite
    elif skip == "skip_large_updates":
        gx_kwargs["should_skip_update_fn"] = functools.partial(
            gx.skip_large_updates, max_squared_norm=100.0)
        optax_kwargs["should_skip_update_fn"] = functools.partial(
            optax.skip_large_updates, max_squared_norm=100.0)
    mine = gx.multi_steps(gx.adam(strict_schedule), **gx_kwargs)
    ref = optax.MultiSteps(optax.adam(strict_schedule), **optax_kwargs).gradient_transformation()
    return mine, ref


@pytest.mark.allows_nan
@pytest.mark.parametrize("kwargs, bad_steps", MULTI_CASES)
def test_multi_steps_matches_optax_updates_and_state(kwargs, bad_steps):
    mine_tx, ref_tx = build_pair(kwargs)
    params = random_params(0)
    grads_seq = with_bad_values(gradient_stream(params, STEPS, seed=1), bad_steps)
    mine_update, ref_update = jax.jit(mine_tx.update), jax.jit(ref_tx.update)
    mine_state, ref_state = mine_tx.init(params), ref_tx.init(params)
    emitted = skipped = 0
    for step, grads in enumerate(grads_seq):
        mine, mine_state = mine_update(grads, mine_state, params)
        with jax.numpy_dtype_promotion("standard"):
            ref, ref_state = ref_update(grads, ref_state, params)
        context = f"step {step}"
        assert_trees_close(mine, ref, rtol=2e-6, atol=1e-7, context=context)
        assert int(mine_state.mini_step) == int(ref_state.mini_step), context
        assert int(mine_state.gradient_step) == int(ref_state.gradient_step), context
        assert_trees_close(mine_state.acc_grads, ref_state.acc_grads, 2e-6, 1e-7, context)
        mine_inner = jax.tree.leaves(mine_state.inner_opt_state)
        ref_inner = jax.tree.leaves(ref_state.inner_opt_state)
        assert len(mine_inner) == len(ref_inner)
        for a, b in zip(mine_inner, ref_inner):
            assert a.dtype == b.dtype, context
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-6, atol=1e-7,
                                       err_msg=context)
        assert jax.tree.structure(mine_state.skip_state) == jax.tree.structure(ref_state.skip_state)
        for a, b in zip(jax.tree.leaves(mine_state.skip_state),
                        jax.tree.leaves(ref_state.skip_state)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, err_msg=context)
        did_emit = int(mine_state.gradient_step) > emitted
        if not did_emit:
            assert signbit_everywhere(mine), context  # -0.0, which leaves params unchanged
        emitted = int(mine_state.gradient_step)
        if isinstance(mine_state.skip_state, dict):
            skipped += bool(mine_state.skip_state["should_skip"])
    assert emitted >= 8
    if "should_skip_update_fn" in kwargs:
        assert 0 < skipped < STEPS  # the rule both rejected and accepted micro-steps


def test_multi_steps_low_precision_accumulator_matches_optax():
    params = {"w": jnp.zeros(1)}
    grads = {"w": jnp.full(1, 1 / 3, jnp.float32)}
    mine_tx = gx.multi_steps(gx.identity(), 2, accumulator_dtype=jnp.bfloat16)
    ref_tx = optax.MultiSteps(optax.identity(), 2,
                              accumulator_dtype=jnp.bfloat16).gradient_transformation()
    mine, _ = run_updates(mine_tx, params, [grads, grads])
    with jax.numpy_dtype_promotion("standard"):
        ref, _ = run_updates(ref_tx, params, [grads, grads])
    np.testing.assert_allclose(mine[1]["w"], ref[1]["w"], rtol=2e-6)


@pytest.mark.allows_nan
def test_multi_steps_skipped_micro_step_changes_only_skip_state():
    tx = gx.multi_steps(gx.sgd(0.1), 3, should_skip_update_fn=gx.skip_not_finite)
    params = {"w": jnp.ones(3), "n": None}
    state = tx.init(params)
    good = {"w": jnp.array([1.0, 2.0, 3.0]), "n": None}
    _, state = tx.update(good, state, params)
    updates, new_state = tx.update({"w": jnp.array([1.0, jnp.nan, 3.0]), "n": None}, state, params)
    assert signbit_everywhere(updates)
    for field in ("mini_step", "gradient_step", "acc_grads", "inner_opt_state"):
        jax.tree.map(np.testing.assert_array_equal, getattr(new_state, field), getattr(state, field))
    assert bool(new_state.skip_state["should_skip"]) and int(new_state.skip_state["num_not_finite"]) == 1


def test_multi_steps_bad_skip_rule_output_raises():
    tx = gx.multi_steps(gx.sgd(0.1), 2, should_skip_update_fn=lambda u, s, p: (jnp.array(1), ()))
    params = {"w": jnp.ones(2)}
    with pytest.raises(ValueError, match="multi_steps: should_skip_update_fn must return a boolean"):
        tx.update(params, tx.init(params), params)


# --- accumulate_gradients (Keras) --------------------------------------------------------


def keras_accumulation(grads_seq, k, dtype=np.float32):
    """Keras's accumulation in NumPy: per call, (the mean handed to the inner or None, acc)."""
    leaves0, treedef = jax.tree.flatten(grads_seq[0])
    acc = [np.zeros(x.shape, dtype) for x in leaves0]
    out = []
    for c, grads in enumerate(grads_seq):
        gs = [np.asarray(g) for g in treedef.flatten_up_to(grads)]
        if (c + 1) % k == 0:
            mean = [((g.astype(np.float32) + a.astype(np.float32)) / np.float32(k)).astype(g.dtype)
                    for g, a in zip(gs, acc)]
            acc = [np.zeros_like(a) for a in acc]
            out.append((treedef.unflatten(mean), treedef.unflatten(list(acc))))
        else:
            acc = [(a.astype(np.float32) + g.astype(np.float32)).astype(dtype)
                   for a, g in zip(acc, gs)]
            out.append((None, treedef.unflatten(list(acc))))
    return out


@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_accumulate_gradients_matches_keras(k):
    params = random_params(1)
    grads_seq = gradient_stream(params, 15, seed=2)
    tx = gx.accumulate_gradients(gx.identity(), k)
    update, state = jax.jit(tx.update), tx.init(params)
    for c, (grads, (mean, acc)) in enumerate(zip(grads_seq, keras_accumulation(grads_seq, k))):
        updates, state = update(grads, state, params)
        if mean is None:
            assert signbit_everywhere(updates), f"call {c}"
        else:
            assert_trees_close(updates, mean, rtol=1e-6, atol=1e-7, context=f"call {c}")
        assert_trees_close(state.acc_grads, acc, rtol=1e-6, atol=1e-7, context=f"call {c}")
        assert int(state.count) == c + 1
        assert updates["blocks"][1] is None


@pytest.mark.parametrize("k", [2, 3])
def test_adam_inside_counts_only_real_updates(k):
    """accumulate_gradients(adam, k) == adam fed the window means, its t = number of windows."""
    params = random_params(2)
    grads_seq = gradient_stream(params, 4 * k, seed=3)
    means = [m for m, _ in keras_accumulation(grads_seq, k) if m is not None]
    mine, state = run_updates(gx.accumulate_gradients(gx.adam(1e-2), k), params, grads_seq)
    direct, direct_state = run_updates(gx.adam(1e-2), params, means)
    real = [u for c, u in enumerate(mine) if (c + 1) % k == 0]
    assert len(real) == len(direct) == 4
    for i, (a, b) in enumerate(zip(real, direct)):
        assert_trees_close(a, b, rtol=1e-6, atol=1e-8, context=f"window {i}")
    assert int(state.inner_state[0].count) == 4
    assert_trees_close(state.inner_state, direct_state, rtol=1e-6, atol=1e-8)


def counting_sgd(calls):
    def init(params):
        return jnp.zeros([], jnp.int32)

    def update(updates, state, params=None, *, tag=-1.0):
        jax.debug.callback(lambda t: calls.append(float(t)), jnp.asarray(tag, jnp.float32))
        return jax.tree.map(lambda g: -0.5 * g, updates), state + 1

    return gx.GradientTransformation(init, update)


@pytest.mark.parametrize("wrapper", ["accumulate_gradients", "multi_steps"])
def test_inner_runs_only_on_update_steps_and_gets_extra_args(wrapper):
    calls = []
    inner = counting_sgd(calls)
    tx = (gx.accumulate_gradients(inner, 3) if wrapper == "accumulate_gradients"
          else gx.multi_steps(inner, 3))
    params = {"w": jnp.array([-0.0, 1.0, -2.0]), "n": None}
    update = jax.jit(tx.update)
    state = tx.init(params)
    for c in range(9):
        grads = {"w": jnp.full(3, float(c + 1)), "n": None}
        updates, state = update(grads, state, params, tag=jnp.float32(c))
        jax.effects_barrier()
        if (c + 1) % 3 != 0:
            new_params = gx.apply_updates(params, updates)
            np.testing.assert_array_equal(np.asarray(new_params["w"]).view(np.uint32),
                                          np.asarray(params["w"]).view(np.uint32))
    assert calls == [2.0, 5.0, 8.0]
    jaxpr = jax.make_jaxpr(tx.update)(grads, tx.init(params), params)
    assert any(eqn.primitive.name == "cond" for eqn in jaxpr.jaxpr.eqns)


@pytest.mark.parametrize("grad_dtype, accumulator_dtype", [
    (jnp.bfloat16, None), (jnp.bfloat16, jnp.float32), (jnp.float32, jnp.bfloat16),
    (jnp.float16, jnp.float32),
], ids=["bf16", "bf16-acc-f32", "f32-acc-bf16", "f16-acc-f32"])
def test_accumulator_dtype_and_low_precision(grad_dtype, accumulator_dtype):
    params = random_params(3, grad_dtype)
    grads_seq = gradient_stream(params, 8, seed=4)
    tx = gx.accumulate_gradients(gx.identity(), 4, accumulator_dtype=accumulator_dtype)
    mine, state = run_updates(tx, params, grads_seq)
    acc_dtype = np.dtype(grad_dtype if accumulator_dtype is None else accumulator_dtype)
    expected = keras_accumulation(grads_seq, 4, acc_dtype)
    for c, (u, (mean, _)) in enumerate(zip(mine, expected)):
        assert all(x.dtype == grad_dtype for x in jax.tree.leaves(u))
        if mean is not None:
            assert_trees_close(u, mean, rtol=1e-6, atol=1e-6, context=f"call {c}")
    assert all(a.dtype == acc_dtype for a in jax.tree.leaves(state.acc_grads))


def test_every_k_one_is_the_inner_alone():
    params = random_params(4)
    grads_seq = gradient_stream(params, 6, seed=5)
    mine, _ = run_updates(gx.accumulate_gradients(gx.adam(1e-2), 1), params, grads_seq)
    direct, _ = run_updates(gx.adam(1e-2), params, grads_seq)
    for a, b in zip(mine, direct):  # the same numbers, up to XLA's fusion inside the cond
        assert_trees_close(a, b, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("ctor, kwargs, exc, text", [
    (gx.accumulate_gradients, {"every_k": 0}, ValueError,
     "accumulate_gradients: every_k must be an int >= 1, got 0"),
    (gx.accumulate_gradients, {"every_k": True}, TypeError,
     "accumulate_gradients: every_k must be an int >= 1, got True"),
    (gx.accumulate_gradients, {"every_k": 2.0}, TypeError,
     "accumulate_gradients: every_k must be an int >= 1, got 2.0"),
    (gx.accumulate_gradients, {"every_k": 2, "accumulator_dtype": jnp.int32}, ValueError,
     "accumulate_gradients: accumulator_dtype"),
    (gx.multi_steps, {"every_k_schedule": 0}, ValueError,
     "multi_steps: every_k_schedule must be an int >= 1, got 0"),
    (gx.multi_steps, {"every_k_schedule": 2, "use_grad_mean": 1}, TypeError,
     "multi_steps: use_grad_mean must be a bool, got 1"),
    (gx.multi_steps, {"every_k_schedule": 2, "should_skip_update_fn": 3}, TypeError,
     "multi_steps: should_skip_update_fn must be callable, got 3"),
], ids=["k=0", "k=True", "k=2.0", "int-acc", "ms-k=0", "ms-mean", "ms-skip"])
def test_validation_errors(ctor, kwargs, exc, text):
    with pytest.raises(exc) as info:
        ctor(gx.sgd(0.1), **kwargs)
    assert text in str(info.value)


@pytest.mark.parametrize("ctor", [gx.accumulate_gradients, gx.multi_steps])
def test_inner_must_be_a_transformation(ctor):
    with pytest.raises(TypeError, match="inner must be a transformation"):
        ctor(lambda g: g, 2)


def test_accumulate_numpy_int_every_k_and_structure_mismatch():
    tx = gx.accumulate_gradients(gx.sgd(0.1), np.int64(2))
    params = {"w": jnp.ones(2), "b": jnp.ones(1)}
    with pytest.raises(ValueError, match="accumulate_gradients"):
        tx.update({"w": jnp.ones(2)}, tx.init(params), params)
    assert jax.tree.structure(tx.init(params).acc_grads, is_leaf=is_none) == jax.tree.structure(
        params, is_leaf=is_none)
