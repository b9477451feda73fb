"""apply_every against optax.apply_every: the same emitted sums and the same state.

40 jitted steps on the nested tree (scalars, ``None``, a zero-size leaf), for
several ``k``, in float32 and bfloat16, with the state (``count``,
``grad_acc``) compared field by field at every step. The steps that emit
nothing emit ``-0.0``, which leaves every parameter bit-for-bit unchanged
(optax emits ``0 * A``, a zero whose sign follows ``A``).
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradxform as gx
from tests.helpers import assert_trees_close, gradient_stream, random_params

STEPS = 40


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16], ids=lambda d: d.__name__)
@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_matches_optax_updates_and_state_at_every_step(k, dtype):
    params = random_params(0, dtype)
    grads_seq = gradient_stream(params, STEPS, seed=1)
    ours, theirs = gx.apply_every(k), optax.apply_every(k)
    state, their_state = ours.init(params), theirs.init(params)
    assert state._fields == their_state._fields == ("count", "grad_acc")
    step = jax.jit(ours.update)
    with jax.numpy_dtype_promotion("standard"):
        their_step = jax.jit(theirs.update)
    tolerance = 1e-6 if dtype == jnp.float32 else 1e-2
    for index, grads in enumerate(grads_seq):
        updates, state = step(grads, state)
        with jax.numpy_dtype_promotion("standard"):
            expected, their_state = their_step(grads, their_state)
        context = f"k={k}, step {index}"
        assert_trees_close(updates, expected, tolerance, tolerance, context)
        assert {leaf.dtype for leaf in jax.tree.leaves(updates)} == {jnp.dtype(dtype)}
        assert state.count.dtype == jnp.int32
        np.testing.assert_array_equal(state.count, their_state.count, err_msg=context)
        assert_trees_close(state.grad_acc, their_state.grad_acc, tolerance, tolerance, context)
        assert {leaf.dtype for leaf in jax.tree.leaves(state.grad_acc)} == {jnp.dtype(dtype)}


def test_emits_the_float64_sum_of_each_window():
    k = 3
    params = random_params(0)
    grads_seq = gradient_stream(params, 30, seed=2)
    tx = gx.apply_every(k)
    state = tx.init(params)
    step = jax.jit(tx.update)
    for index, grads in enumerate(grads_seq):
        updates, state = step(grads, state)
        window = grads_seq[index - index % k:index + 1]
        for leaf_index, leaf in enumerate(jax.tree.leaves(updates)):
            if index % k == k - 1:
                expected = sum(np.asarray(jax.tree.leaves(g)[leaf_index], np.float64)
                               for g in window)
                np.testing.assert_allclose(leaf, expected, rtol=1e-6, atol=1e-6)
            else:  # -0.0 everywhere: p + u is p, bit for bit
                assert np.all(np.signbit(leaf)) and not np.any(leaf), (index, leaf)


def test_skipped_steps_leave_params_bitwise_unchanged():
    params = {"w": jnp.array([-0.0, 0.0, 1.5, -2.0])}
    tx = gx.apply_every(2)
    updates, _ = tx.update({"w": jnp.array([1.0, -1.0, 3.0, 0.0])}, tx.init(params))
    new = gx.apply_updates(params, updates)
    np.testing.assert_array_equal(np.asarray(new["w"]).view(np.uint32),
                                  np.asarray(params["w"]).view(np.uint32))


def test_state_of_another_tree_raises():
    tx = gx.apply_every(2)
    with pytest.raises(ValueError, match="apply_every"):
        tx.update({"b": jnp.zeros(2)}, tx.init({"a": jnp.zeros(2)}))


def test_inside_a_chain_with_optax_sgd():
    params = random_params(0)
    grads_seq = gradient_stream(params, 30, seed=3)
    ours = gx.chain(gx.apply_every(4), gx.sgd(0.1, momentum=0.9))
    theirs = optax.chain(optax.apply_every(4), optax.sgd(0.1, momentum=0.9))
    state, their_state = ours.init(params), theirs.init(params)
    for grads in grads_seq:
        updates, state = jax.jit(ours.update)(grads, state)
        with jax.numpy_dtype_promotion("standard"):
            expected, their_state = jax.jit(theirs.update)(grads, their_state)
        assert_trees_close(updates, expected, 1e-6, 1e-6)


def test_count_is_kept_modulo_k_and_never_wraps():
    """optax keeps ``count`` modulo k (so it is not a saturating step counter): with the
    largest k, the window closes at k - 1 and starts again at 0, never negative."""
    k = 2**31 - 1
    params = {"w": jnp.ones(2)}
    tx = gx.apply_every(k)
    state = tx.init(params)._replace(count=jnp.int32(k - 2))
    step = jax.jit(tx.update)
    counts, emitted = [], []
    for _ in range(3):
        updates, state = step({"w": jnp.ones(2)}, state)
        counts.append(int(state.count))
        emitted.append(not np.signbit(updates["w"][0]))
    assert counts == [k - 1, 0, 1] and emitted == [False, True, False]
