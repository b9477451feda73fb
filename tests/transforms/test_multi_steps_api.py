"""``gx.MultiSteps`` / ``gx.multi_steps`` as a drop-in for ``optax.MultiSteps``'s object API.

optax's ``MultiSteps`` is an object with ``init``, ``update``,
``gradient_transformation()``, ``has_updated(state)`` and ``inner_opt``. Here
both spellings return one `GradientTransformation` that has all of them; each
is checked side by side with optax run live: ``has_updated`` after every
micro-step (inside ``jit``), ``gradient_transformation()`` in a training loop,
and ``inner_opt``. The transformation keeps its ``repr``, its config round
trip and ``to_optax``.
"""

from __future__ import annotations

import copy
import functools
import inspect
import json

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradxform as gx
from gradxform.transforms.accumulation import MultiSteps
from tests.helpers import assert_trees_bitwise_equal, assert_trees_close, gradient_stream, random_params

STEPS = 20


def lr_schedule(count):
    return 0.05 / (1.0 + 0.1 * count.astype(jnp.float32))


def every_k(step):
    return 2 + (step % 2)


def with_nan_at(grads_seq, steps):
    out = []
    for step, grads in enumerate(grads_seq):
        if step in steps:
            grads = dict(grads, scalar=jnp.asarray(jnp.nan, grads["scalar"].dtype))
        out.append(grads)
    return out


CASES = {
    "k=3": (dict(every_k_schedule=3), set()),
    "k-schedule-sum": (dict(every_k_schedule=every_k, use_grad_mean=False), set()),
    "skip_not_finite": (dict(every_k_schedule=3, should_skip_update_fn="skip"), {2, 5, 6, 13}),
}


def pair(kwargs):
    """``(gx.MultiSteps(...), optax.MultiSteps(...))`` with the same arguments."""
    gx_kwargs, optax_kwargs = dict(kwargs), dict(kwargs)
    if kwargs.get("should_skip_update_fn") == "skip":
        gx_kwargs["should_skip_update_fn"] = gx.skip_not_finite
        optax_kwargs["should_skip_update_fn"] = optax.skip_not_finite
    return (MultiSteps(gx.adam(lr_schedule), **gx_kwargs),
            optax.MultiSteps(optax.adam(lr_schedule), **optax_kwargs))


@pytest.mark.allows_nan
@pytest.mark.parametrize("case", sorted(CASES))
def test_has_updated_matches_optax_after_every_micro_step(case):
    kwargs, bad_steps = CASES[case]
    mine, ref = pair(kwargs)
    params = random_params(0)
    grads_seq = with_nan_at(gradient_stream(params, STEPS, seed=1), bad_steps)
    mine_state, ref_state = mine.init(params), ref.init(params)
    mine_update, ref_update = jax.jit(mine.update), jax.jit(ref.update)
    mine_has_updated, ref_has_updated = jax.jit(mine.has_updated), jax.jit(ref.has_updated)
    assert not bool(mine.has_updated(mine_state)) and not bool(ref.has_updated(ref_state))
    seen = []
    for step, grads in enumerate(grads_seq):
        mine_updates, mine_state = mine_update(grads, mine_state, params)
        with jax.numpy_dtype_promotion("standard"):
            ref_updates, ref_state = ref_update(grads, ref_state, params)
            expected = ref_has_updated(ref_state)
        got = mine_has_updated(mine_state)
        chex.assert_shape(got, ())
        assert got.dtype == expected.dtype == jnp.bool_, step
        assert bool(got) == bool(expected), f"step {step}"
        assert bool(mine.has_updated(mine_state)) == bool(got)  # eagerly too
        assert_trees_close(mine_updates, ref_updates, rtol=2e-6, atol=1e-7, context=f"step {step}")
        seen.append(bool(got))
    assert 0 < sum(seen) < STEPS  # both answers were given


def test_gradient_transformation_in_a_training_loop_matches_optax():
    mine = MultiSteps(gx.adam(lr_schedule), every_k_schedule=every_k).gradient_transformation()
    ref = optax.MultiSteps(optax.adam(lr_schedule), every_k_schedule=every_k).gradient_transformation()
    assert isinstance(mine, gx.GradientTransformation)
    params = random_params(1)
    grads_seq = gradient_stream(params, STEPS, seed=2)

    @jax.jit
    def mine_step(params, state, grads):
        updates, state = mine.update(grads, state, params)
        return gx.apply_updates(params, updates), state

    @jax.jit
    def ref_step(params, state, grads):
        with jax.numpy_dtype_promotion("standard"):
            updates, state = ref.update(grads, state, params)
            return optax.apply_updates(params, updates), state

    mine_params, mine_state = params, mine.init(params)
    ref_params, ref_state = params, ref.init(params)
    for step, grads in enumerate(grads_seq):
        mine_params, mine_state = mine_step(mine_params, mine_state, grads)
        ref_params, ref_state = ref_step(ref_params, ref_state, grads)
        assert_trees_close(mine_params, ref_params, rtol=2e-6, atol=1e-7, context=f"step {step}")
        assert int(mine_state.gradient_step) == int(ref_state.gradient_step), step
    assert int(ref_state.gradient_step) >= 6


def test_inner_opt_is_the_wrapped_transformation_as_in_optax():
    inner = gx.adam(1e-3)
    optax_inner = optax.adam(1e-3)
    assert optax.MultiSteps(optax_inner, 2).inner_opt is optax_inner  # the reference
    assert MultiSteps(inner, 2).inner_opt is inner
    assert gx.multi_steps(inner, 2).inner_opt is inner
    assert MultiSteps(optax_inner, 2).inner_opt is optax_inner  # an optax inner works too


def test_signature_is_optax_multi_steps_constructor():
    ours = inspect.signature(MultiSteps).parameters
    theirs = dict(inspect.signature(optax.MultiSteps.__init__).parameters)
    theirs.pop("self")
    assert list(ours) == list(theirs)
    for name, parameter in theirs.items():
        assert ours[name].default == parameter.default, name
        assert ours[name].kind == parameter.kind, name


def test_both_spellings_return_one_described_transformation():
    inner = gx.sgd(0.1, momentum=0.9)
    skip = functools.partial(gx.skip_large_updates, max_squared_norm=50.0)
    by_class = MultiSteps(inner, 3, use_grad_mean=False, should_skip_update_fn=skip)
    by_function = gx.multi_steps(inner, 3, use_grad_mean=False, should_skip_update_fn=skip)
    for tx in (by_class, by_function):
        assert isinstance(tx, MultiSteps) and isinstance(tx, gx.GradientTransformation)
        assert isinstance(tx, tuple) and tx._fields == ("init", "update")
        assert tx.gradient_transformation() is tx
        assert callable(tx.has_updated) and tx.inner_opt is inner
    assert repr(by_class) == repr(by_function)
    assert repr(by_function).startswith("multi_steps(inner=sgd(")
    params = {"w": jnp.arange(3.0), "b": jnp.ones(())}
    grads_seq = gradient_stream(params, 7, seed=3)
    rebuilt = gx.from_config(json.loads(json.dumps(gx.to_config(by_class))))
    copied = copy.deepcopy(by_function)
    for other in (rebuilt, copied):
        assert isinstance(other, MultiSteps) and repr(other) == repr(by_class)
    runs = []
    for tx in (by_class, by_function, rebuilt, copied, gx.to_optax(by_class)):
        state, updates = tx.init(params), []
        for grads in grads_seq:
            u, state = tx.update(grads, state, params)
            updates.append(u)
        runs.append((updates, state))
    for updates, state in runs[1:]:
        assert_trees_bitwise_equal(updates, runs[0][0])
        assert_trees_bitwise_equal(state, runs[0][1])


def test_to_optax_and_optax_chain_accept_it():
    tx = optax.chain(gx.to_optax(MultiSteps(gx.identity(), 2)), optax.scale(-1.0))
    params = {"w": jnp.array([1.0, 2.0])}
    state = tx.init(params)
    _, state = tx.update(params, state, params)
    updates, state = tx.update(params, state, params)
    np.testing.assert_array_equal(updates["w"], -params["w"])
    assert bool(MultiSteps(gx.identity(), 2).has_updated(state[0]))


def test_errors_name_the_spelling_used():
    with pytest.raises(TypeError, match="MultiSteps: opt must be a transformation"):
        MultiSteps(3, 2)
    with pytest.raises(ValueError, match="MultiSteps: every_k_schedule must be an int >= 1, got 0"):
        MultiSteps(gx.sgd(0.1), 0)
    with pytest.raises(TypeError, match="multi_steps: inner must be a transformation"):
        gx.multi_steps(3, 2)
    tx = MultiSteps(gx.sgd(0.1), 2)
    with pytest.raises(TypeError, match="MultiSteps.has_updated: state must be the MultiStepsState"):
        tx.has_updated({"mini_step": 0})


def test_multi_steps_object_is_public():
    assert gx.MultiSteps is MultiSteps
