"""conditionally_transform and conditionally_mask against optax's, run live.

* 36 jitted steps on a nested tree with a 0-d, a zero-size and a ``None``
  leaf, for several conditions (periodic, a warm start, one driven by an extra
  argument) and inner transformations, in float32: the updates and every state
  field (``step``, the inner moments) equal optax's (rtol 1e-5; the skipped
  steps exactly). In bfloat16, against optax in float32 on the same values,
  to one bfloat16 rounding.
* The field order of each state is optax's (``ConditionallyMaskState`` has
  ``step`` first).
* A skipped step does not run the inner update (a host callback counts its
  runs) and keeps its state bit for bit; `conditionally_mask`'s zero is
  ``-0.0``, so the params stay bit for bit, ``-0.0`` ones included.
* The step counter saturates at 2**31 - 1, and the condition still sees it.
* An injected inner optimizer gives the plain one's updates bit for bit.
* A condition that does not return one bool raises, naming the wrapper.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradxform as gx
from tests.helpers import (
    LOW_PRECISION, assert_trees_bitwise_equal, assert_trees_close, cast_tree, gradient_stream,
    random_params,
)

STEPS = 36
WRAPPERS = {"transform": (gx.conditionally_transform, optax.conditionally_transform),
            "mask": (gx.conditionally_mask, optax.conditionally_mask)}


def every_third(step):
    return step % 3 == 0


def after_warm_start(step):
    return step >= 5


def while_loss_is_high(step, loss):
    return jnp.logical_and(loss > 1.0, step != 7)


def _loss(step):
    """The extra argument fed at ``step``: high at some steps, low at others."""
    return jnp.float32(2.0 if step % 4 < 2 else 0.5)


INNERS = {
    "adam": (lambda: gx.adam(1e-2), lambda: optax.adam(1e-2)),
    "clip_sgd_momentum": (
        lambda: gx.chain(gx.clip_by_global_norm(1.0), gx.sgd(0.1, momentum=0.9)),
        lambda: optax.chain(optax.clip_by_global_norm(1.0), optax.sgd(0.1, momentum=0.9))),
}
CONDITIONS = [("every_third", every_third, False), ("after_warm_start", after_warm_start, False),
              ("while_loss_is_high", while_loss_is_high, True)]


def _run(tx, params, grads_seq, *, forward):
    update = jax.jit(tx.update)
    state, out = tx.init(params), []
    for step, grads in enumerate(grads_seq):
        extra = {"loss": _loss(step)} if forward else {}
        updates, state = update(grads, state, params, **extra)
        out.append((updates, state))
    return out


def _run_optax(tx, params, grads_seq, *, forward):
    with jax.numpy_dtype_promotion("standard"), jax.debug_nans(False):
        return _run(tx, params, grads_seq, forward=forward)


def _inner_moments(state):
    found = {}
    for name in ("mu", "nu", "trace"):
        try:
            found[name] = gx.tree_get(state.inner_state, name)
        except (KeyError, ValueError):
            continue
    return found


@pytest.mark.parametrize("condition", CONDITIONS, ids=[c[0] for c in CONDITIONS])
@pytest.mark.parametrize("inner", sorted(INNERS))
@pytest.mark.parametrize("wrapper", sorted(WRAPPERS))
def test_float32_matches_optax_field_by_field(wrapper, inner, condition):
    _, fn, forward = condition
    ours_wrap, ref_wrap = WRAPPERS[wrapper]
    ours_inner, ref_inner = INNERS[inner]
    params = random_params(0)
    grads_seq = gradient_stream(params, STEPS, seed=1)
    ours = _run(ours_wrap(ours_inner(), fn, forward_extra_args=forward), params, grads_seq,
                forward=forward)
    theirs = _run_optax(ref_wrap(ref_inner(), fn, forward_extra_args=forward), params, grads_seq,
                        forward=forward)
    ran = 0
    for step, ((u, s), (ru, rs)) in enumerate(zip(ours, theirs)):
        context = f"{wrapper}/{inner}/{condition[0]} step {step}"
        assert s._fields == rs._fields, context
        assert s.step.dtype == jnp.int32 and int(s.step) == int(rs.step) == step + 1, context
        runs = bool(fn(jnp.int32(step), **({"loss": _loss(step)} if forward else {})))
        ran += runs
        assert_trees_close(u, ru, rtol=1e-5, atol=1e-6, context=context)
        if not runs and wrapper == "transform":
            assert_trees_bitwise_equal(u, grads_seq[step], context)  # passed on as they are
        mine = _inner_moments(s)
        assert mine, context
        for name, value in mine.items():
            assert_trees_close(value, optax.tree.get(rs.inner_state, name), rtol=1e-5, atol=1e-6,
                               context=f"{context}: {name}")
        if inner == "adam":
            assert int(gx.tree_get(s, "count")) == int(optax.tree.get(rs.inner_state, "count"))
    assert 0 < ran < STEPS


@pytest.mark.parametrize("dtype", LOW_PRECISION, ids=["bfloat16", "float16"])
@pytest.mark.parametrize("wrapper", sorted(WRAPPERS))
def test_low_precision_is_one_rounding_from_optax_in_float32(wrapper, dtype):
    ours_wrap, ref_wrap = WRAPPERS[wrapper]
    params = random_params(0, dtype)
    grads_seq = gradient_stream(params, STEPS, seed=1)
    ours = _run(ours_wrap(gx.adam(1e-2), every_third), params, grads_seq, forward=False)
    theirs = _run_optax(ref_wrap(optax.adam(1e-2), every_third), cast_tree(params, jnp.float32),
                        [cast_tree(g, jnp.float32) for g in grads_seq], forward=False)
    for step, ((u, _), (ru, _)) in enumerate(zip(ours, theirs)):
        for leaf in jax.tree.leaves(u):
            assert leaf.dtype == dtype
        assert_trees_close(u, ru, rtol=2e-2, atol=2e-2 * 1e-2, context=f"step {step}")


def test_state_layouts_are_optax_ones():
    assert gx.ConditionallyMaskState._fields == optax.ConditionallyMaskState._fields == (
        "step", "inner_state")
    assert gx.ConditionallyTransformState._fields == optax.ConditionallyTransformState._fields == (
        "inner_state", "step")


@pytest.mark.parametrize("wrapper", sorted(WRAPPERS))
def test_a_held_step_does_not_run_the_inner_update_and_keeps_its_state(wrapper):
    calls = []

    def count_calls(updates, params):
        jax.debug.callback(lambda: calls.append(1))
        return updates

    inner = gx.chain(gx.stateless(count_calls), gx.adam(0.1))
    tx = WRAPPERS[wrapper][0](inner, every_third)
    params = {"w": jnp.array([1.0, -0.0, 2.0]), "b": jnp.array(-0.0)}
    grads = jax.tree.map(lambda p: jnp.full_like(p, 0.5), params)
    update = jax.jit(tx.update)
    state = tx.init(params)
    for step in range(7):
        updates, new_state = update(grads, state, params)
        jax.effects_barrier()
        if step % 3 == 0:
            assert len(calls) == step // 3 + 1
        else:
            assert len(calls) == (step // 3) + 1, "the inner update ran on a held step"
            assert_trees_bitwise_equal(new_state.inner_state, state.inner_state)
            if wrapper == "mask":
                assert all(np.all(np.signbit(x)) and not np.any(x) for x in jax.tree.leaves(updates))
                assert_trees_bitwise_equal(gx.apply_updates(params, updates), params)
            else:
                assert_trees_bitwise_equal(updates, grads)
        state = new_state


@pytest.mark.parametrize("wrapper", sorted(WRAPPERS))
def test_the_step_counter_saturates_and_the_condition_still_sees_it(wrapper):
    top = 2**31 - 1
    tx = WRAPPERS[wrapper][0](gx.sgd(0.1), lambda step: step == top)
    params = {"w": jnp.ones(2)}
    state = tx.init(params)._replace(step=jnp.int32(top - 2))
    update = jax.jit(tx.update)
    outputs = []
    for _ in range(4):
        updates, state = update({"w": jnp.ones(2)}, state, params)
        outputs.append(np.asarray(updates["w"]))
        assert int(state.step) >= top - 1
    assert int(state.step) == top
    held = np.full(2, -0.0 if wrapper == "mask" else 1.0)
    np.testing.assert_array_equal(outputs[0], held)  # at top - 2
    np.testing.assert_array_equal(outputs[1], held)  # at top - 1
    np.testing.assert_allclose(outputs[2], -0.1)  # at top, and it stays there
    np.testing.assert_allclose(outputs[3], -0.1)


@pytest.mark.parametrize("wrapper", sorted(WRAPPERS))
def test_extra_arguments_reach_the_condition_only_when_forwarded_and_the_inner_if_accepted(wrapper):
    seen = []

    def inner_update(updates, state, params=None, *, loss=None):
        seen.append(loss)
        return updates, state

    inner = gx.GradientTransformation(lambda params: (), inner_update)
    params = {"w": jnp.ones(2)}
    forwarded = WRAPPERS[wrapper][0](inner, lambda step, loss, **rest: loss > 1.0,
                                     forward_extra_args=True)
    forwarded.update({"w": jnp.ones(2)}, forwarded.init(params), params, loss=2.0, other=3)
    assert seen and set(seen) == {2.0}  # (traced once more, for the shapes, by the mask)
    seen.clear()
    not_forwarded = WRAPPERS[wrapper][0](inner, lambda step: True)
    not_forwarded.update({"w": jnp.ones(2)}, not_forwarded.init(params), params, loss=0.5)
    assert seen and set(seen) == {0.5}


@pytest.mark.parametrize("wrapper", sorted(WRAPPERS))
def test_an_injected_inner_gives_the_plain_updates_bit_for_bit(wrapper):
    make = WRAPPERS[wrapper][0]
    plain = make(gx.adam(1e-2, b2=0.99), every_third)
    injected = make(gx.inject_hyperparams(gx.adam)(1e-2, b2=0.99), every_third)
    whole = gx.inject_hyperparams(make)(gx.adam(1e-2, b2=0.99), every_third)
    params = random_params(2)
    grads_seq = gradient_stream(params, 24, seed=3)
    expected = _run(plain, params, grads_seq, forward=False)
    for tx in (injected, whole):
        for step, ((u, s), (eu, es)) in enumerate(zip(_run(tx, params, grads_seq, forward=False),
                                                      expected)):
            assert_trees_bitwise_equal(u, eu, f"{tx!r} step {step}")
            assert_trees_bitwise_equal(gx.tree_get(s, "mu"), gx.tree_get(es, "mu"))


@pytest.mark.parametrize("wrapper", sorted(WRAPPERS))
@pytest.mark.parametrize(
    "condition, exc, shown",
    [
        (lambda step: jnp.ones(2, bool), ValueError, "shape (2,)"),
        (lambda step: 0.5, TypeError, "got 0.5"),
        (lambda step: step.astype(jnp.float32), TypeError, "must return a bool"),
    ],
)
def test_a_condition_that_is_not_one_bool_raises_naming_the_wrapper(wrapper, condition, exc,
                                                                    shown):
    tx = WRAPPERS[wrapper][0](gx.sgd(0.1), condition)
    params = {"w": jnp.ones(2)}
    for update in (tx.update, jax.jit(tx.update)):
        with pytest.raises(exc) as info:
            update({"w": jnp.ones(2)}, tx.init(params), params)
        message = str(info.value)
        assert message.startswith(f"conditionally_{wrapper}: should_transform_fn") and shown in message


def test_an_integer_condition_counts_as_true_when_nonzero_as_in_lax_cond():
    tx = gx.conditionally_mask(gx.sgd(0.1), lambda step: step % 2)
    params = {"w": jnp.ones(1)}
    state = tx.init(params)
    out = []
    for _ in range(3):
        u, state = tx.update({"w": jnp.ones(1)}, state, params)
        out.append(float(u["w"][0]))
    np.testing.assert_allclose(out, [0.0, -0.1, 0.0])


def test_repr_names_the_condition():
    tx = gx.conditionally_mask(gx.sgd(0.1), every_third)
    assert repr(tx) == (f"conditionally_mask(inner={gx.sgd(0.1)!r}, "
                        "should_transform_fn=<function every_third>, forward_extra_args=False)")
