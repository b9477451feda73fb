"""scale_by_sign and scale_by_lion against optax, and Lion against a float64 NumPy reference.

* Both transforms must match ``optax.scale_by_sign`` / ``optax.scale_by_lion``
  over 50 jitted steps on a nested pytree (scalars, ``None`` and zero-size
  leaves), for several argument sets, in float32, bfloat16 and float16 (low
  precision compared with optax run in float32, see
  `tests.helpers.compare_with_optax`); Lion's state is compared field by field.
* Lion with a bfloat16 momentum is checked against the rule written in NumPy:
  float64 arithmetic, the momentum rounded to bfloat16 when stored.
* sign(0) is 0 and a NaN gradient stays NaN, in the update and in the momentum.
"""

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import optax
import pytest

import gradxform as gx
from tests.helpers import (
    LOW_PRECISION,
    assert_trees_close,
    cast_tree,
    compare_with_optax,
    gradient_stream,
    random_params,
    run_optax,
    run_updates,
)

DTYPES = [jnp.float32, jnp.bfloat16, jnp.float16]
STEPS = 50
BF16 = ml_dtypes.bfloat16

# ---------------------------------------------------------------- scale_by_sign


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_scale_by_sign_matches_optax(dtype):
    ours, theirs = compare_with_optax(gx.scale_by_sign(), optax.scale_by_sign(), dtype=dtype)
    # A sign is exact in every dtype: not merely close, equal.
    for mine, ref in zip(ours, theirs):
        for a, b in zip(jax.tree.leaves(mine), jax.tree.leaves(ref)):
            np.testing.assert_array_equal(np.asarray(a, np.float32), np.asarray(b, np.float32))


def test_scale_by_sign_values_zero_and_infinities():
    g = jnp.array([-3.5, -1e-30, -0.0, 0.0, 2e-38, 7.0, -jnp.inf, jnp.inf])
    tx = gx.scale_by_sign()
    u, state = tx.update({"w": g}, tx.init({"w": g}))
    np.testing.assert_array_equal(u["w"], [-1, -1, 0, 0, 1, 1, -1, 1])
    assert u["w"].dtype == jnp.float32 and state == gx.EmptyState()


def test_scale_by_sign_of_complex_entries_is_their_phase():
    g = jnp.array([3 + 4j, 0j, -2j], jnp.complex64)
    tx = gx.scale_by_sign()
    u = tx.update(g, tx.init(g))[0]
    np.testing.assert_allclose(u, [0.6 + 0.8j, 0, -1j], rtol=1e-6)


@pytest.mark.allows_nan
def test_scale_by_sign_keeps_nan_visible():
    g = {"w": jnp.array([1.0, jnp.nan, -2.0], jnp.bfloat16)}
    tx = gx.scale_by_sign()
    u = jax.jit(tx.update)(g, tx.init(g))[0]["w"]
    assert u.dtype == jnp.bfloat16
    assert np.isnan(float(u[1])) and float(u[0]) == 1 and float(u[2]) == -1


# ---------------------------------------------------------------- scale_by_lion


LION_CASES = [
    pytest.param({}, id="defaults"),
    pytest.param({"b1": 0.5, "b2": 0.9}, id="b1=0.5,b2=0.9"),
    pytest.param({"b1": 0.0, "b2": 0.0}, id="b1=b2=0"),
    pytest.param({"b1": 1.0, "b2": 0.999}, id="b1=1"),
    pytest.param({"b1": 0.8, "mode": "smooth", "smooth_beta": 3.0}, id="smooth"),
    pytest.param({"b2": 0.95, "mode": "refined"}, id="refined"),
]


def _run_both(gx_tx, optax_tx, dtype, seed=0):
    """Updates and states after every jitted step, ours on ``dtype``, optax's in float32."""
    params = random_params(seed, dtype)
    grads_seq = gradient_stream(params, STEPS, seed + 1)
    ours = _history(gx_tx, params, grads_seq, standard=False)
    theirs = _history(optax_tx, cast_tree(params, jnp.float32),
                      [cast_tree(g, jnp.float32) for g in grads_seq], standard=True)
    return grads_seq, ours, theirs


def _history(tx, params, grads_seq, standard):
    update = jax.jit(tx.update)
    with jax.numpy_dtype_promotion("standard" if standard else "strict"):
        state = tx.init(params)
        history = []
        for grads in grads_seq:
            updates, state = update(grads, state, params)
            history.append((updates, state))
    return history


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("kwargs", LION_CASES)
def test_scale_by_lion_matches_optax_updates_and_state(dtype, kwargs):
    # In low precision the momentum is kept in float32, the state the float32
    # optax reference has; only the updates are rounded (exactly, for a sign).
    low = dtype in LOW_PRECISION
    mu_dtype = jnp.float32 if low else None
    grads_seq, ours, theirs = _run_both(
        gx.scale_by_lion(mu_dtype=mu_dtype, **kwargs), optax.scale_by_lion(**kwargs), dtype
    )
    sign_only = kwargs.get("mode", "hard") == "hard"
    tol = 2e-2 if low and not sign_only else 2e-6
    for step, ((u, s), (u_ref, s_ref)) in enumerate(zip(ours, theirs)):
        context = f"step {step}, {dtype.__name__}, {kwargs}"
        assert {x.dtype for x in jax.tree.leaves(u)} == {jnp.dtype(dtype)}, context
        assert type(s).__name__ == type(s_ref).__name__ == "ScaleByLionState"
        assert s._fields == s_ref._fields == ("count", "mu")
        assert int(s.count) == int(s_ref.count) == step + 1, context
        assert s.count.dtype == jnp.int32
        assert_trees_close(u, u_ref, tol, tol, context)
        assert_trees_close(s.mu, s_ref.mu, 2e-6, 1e-7, context)
        for g, m in zip(jax.tree.leaves(grads_seq[step]), jax.tree.leaves(s.mu)):
            assert m.dtype == (jnp.float32 if low else g.dtype), context
    if sign_only:  # the update entries really are -1, 0, 1
        values = np.concatenate([np.ravel(np.asarray(x, np.float32))
                                 for u, _ in ours for x in jax.tree.leaves(u)])
        assert set(np.unique(values)) <= {-1.0, 0.0, 1.0}
        assert {-1.0, 1.0} <= set(np.unique(values))


def lion_reference(grads_seq, b1=0.9, b2=0.99, mu_storage=None, arithmetic=np.float64):
    """Lion's direction in NumPy, leaf by leaf; each step's updates and the final mu.

    Arithmetic in ``arithmetic`` (float64 by default; the rates rounded to it
    once); with ``mu_storage``, the momentum is rounded to that dtype after
    every step, as a stored state is."""
    one_minus_b1, b1_, one_minus_b2, b2_ = (arithmetic(x) for x in (1 - b1, b1, 1 - b2, b2))
    leaves0, treedef = jax.tree.flatten(grads_seq[0])
    m = [np.zeros(x.shape, arithmetic) for x in leaves0]
    outputs = []
    for grads in grads_seq:
        out = []
        for i, g in enumerate(treedef.flatten_up_to(grads)):
            g = np.asarray(g, np.float32).astype(arithmetic)
            out.append(np.sign(one_minus_b1 * g + b1_ * m[i]))
            m[i] = one_minus_b2 * g + b2_ * m[i]
            if mu_storage is not None:
                m[i] = m[i].astype(mu_storage).astype(arithmetic)
        outputs.append(treedef.unflatten(out))
    return outputs, treedef.unflatten(m)


@pytest.mark.parametrize("b1,b2", [(0.9, 0.99), (0.95, 0.98), (0.3, 0.5)])
def test_scale_by_lion_matches_the_float64_rule(b1, b2):
    params = random_params(2)
    grads_seq = gradient_stream(params, STEPS, seed=5)
    ours, state = run_updates(gx.scale_by_lion(b1=b1, b2=b2), params, grads_seq)
    expected, mu = lion_reference(grads_seq, b1, b2)
    for step, (mine, ref) in enumerate(zip(ours, expected)):
        assert_trees_close(mine, ref, 0, 0, context=f"step {step}")
    assert_trees_close(state.mu, mu, 1e-5, 1e-7)


def test_scale_by_lion_bfloat16_momentum_follows_float32_arithmetic():
    """bf16 params and momentum: b1 and b2 stay float32 numbers, only the stored mu rounds.

    optax computes ``b1 * mu`` with b1 rounded to bf16 (0.8984375); gradxform
    follows float32 arithmetic with bf16 storage, sign for sign and, for the
    momentum, bit for bit. (Against float64 arithmetic the bf16 momentum
    drifts by a few ulps over 50 steps: with b2 = 0.99 each step moves it by
    about one ulp, so where a step rounds matters.)"""
    params = random_params(3, jnp.bfloat16)
    grads_seq = gradient_stream(params, STEPS, seed=4)
    ours, state = run_updates(gx.scale_by_lion(), params, grads_seq)
    assert {x.dtype for x in jax.tree.leaves(state.mu)} == {jnp.dtype(jnp.bfloat16)}
    expected, mu = lion_reference(grads_seq, mu_storage=BF16, arithmetic=np.float32)
    for step, (mine, ref) in enumerate(zip(ours, expected)):
        assert {x.dtype for x in jax.tree.leaves(mine)} == {jnp.dtype(jnp.bfloat16)}
        assert_trees_close(mine, ref, 0, 0, context=f"step {step}")
    assert_trees_close(state.mu, mu, 0, 0)
    float64_signs, _ = lion_reference(grads_seq, mu_storage=BF16)
    for step, (mine, ref) in enumerate(zip(ours, float64_signs)):
        assert_trees_close(mine, ref, 0, 0, context=f"step {step} vs float64 arithmetic")


def test_scale_by_lion_bfloat16_momentum_of_float32_params():
    params = random_params(0)
    grads_seq = gradient_stream(params, STEPS, seed=6)
    ours, state = run_updates(gx.scale_by_lion(mu_dtype=jnp.bfloat16), params, grads_seq)
    assert {x.dtype for x in jax.tree.leaves(state.mu)} == {jnp.dtype(jnp.bfloat16)}
    expected, _ = lion_reference(grads_seq, mu_storage=BF16, arithmetic=np.float32)
    for step, (mine, ref) in enumerate(zip(ours, expected)):
        assert {x.dtype for x in jax.tree.leaves(mine)} == {jnp.dtype(jnp.float32)}
        assert_trees_close(mine, ref, 0, 0, context=f"step {step}")
    # optax agrees on all but the signs its bf16-rounded b1 flips.
    theirs, _ = run_optax(optax.scale_by_lion(mu_dtype=jnp.bfloat16), params, grads_seq)
    agree = [np.mean(np.asarray(a, np.float32) == np.asarray(b, np.float32))
             for mine, ref in zip(ours, theirs)
             for a, b in zip(jax.tree.leaves(mine), jax.tree.leaves(ref)) if a.size]
    assert np.mean(agree) > 0.97


def test_scale_by_lion_first_step_and_zero_gradients():
    """m_0 = 0: the first update is sign(g); a zero gradient with zero momentum gives 0."""
    tx = gx.scale_by_lion()
    params = {"w": jnp.zeros(4), "b": jnp.zeros(())}
    state = tx.init(params)
    g = {"w": jnp.array([0.0, -2.0, 3e-30, 0.0]), "b": jnp.zeros(())}
    u, state = tx.update(g, state)
    np.testing.assert_array_equal(u["w"], [0, -1, 1, 0])
    assert float(u["b"]) == 0
    np.testing.assert_allclose(state.mu["w"], [0, -0.02, 3e-32, 0], rtol=1e-6)
    # No gradient now: the direction is the sign of the momentum, 0 where it is 0.
    u, state = tx.update({"w": jnp.zeros(4), "b": jnp.zeros(())}, state)
    np.testing.assert_array_equal(u["w"], [0, -1, 1, 0])
    assert int(state.count) == 2


@pytest.mark.allows_nan
def test_scale_by_lion_nan_gradient_is_visible_in_update_and_momentum():
    tx = gx.scale_by_lion()
    params = {"w": jnp.zeros(3)}
    update = jax.jit(tx.update)
    u, state = update({"w": jnp.array([1.0, jnp.nan, -1.0])}, tx.init(params))
    assert np.isnan(u["w"][1]) and np.isnan(state.mu["w"][1])
    np.testing.assert_array_equal(u["w"][::2], [1, -1])
    u, state = update({"w": jnp.ones(3)}, state)  # the NaN momentum keeps showing
    assert np.isnan(u["w"][1]) and not np.isnan(u["w"][0])


@pytest.mark.parametrize("mode", ["smooth", "refined"])
@pytest.mark.allows_nan
def test_smooth_modes_keep_nan_visible(mode):
    tx = gx.scale_by_lion(mode=mode)
    u, _ = tx.update({"w": jnp.array([jnp.nan, 20.0])}, tx.init({"w": jnp.zeros(2)}))
    assert np.isnan(u["w"][0]) and float(u["w"][1]) == (1.0 if mode == "refined" else
                                                          float(np.tanh(np.float32(2.0))))


def test_scale_by_lion_state_layout_and_dtypes():
    params = random_params(0, jnp.bfloat16)
    state = gx.scale_by_lion().init(params)
    assert isinstance(state, gx.ScaleByLionState)
    assert state.count.dtype == jnp.int32 and state.count.shape == ()
    assert {x.dtype for x in jax.tree.leaves(state.mu)} == {jnp.dtype(jnp.bfloat16)}
    theirs = optax.scale_by_lion().init(params)
    assert jax.tree.structure(state.mu) == jax.tree.structure(theirs.mu)
    state = gx.scale_by_lion(mu_dtype=jnp.float32).init(params)
    assert {x.dtype for x in jax.tree.leaves(state.mu)} == {jnp.dtype(jnp.float32)}


def test_scale_by_lion_count_saturates():
    tx = gx.scale_by_lion()
    params = {"w": jnp.ones(2)}
    state = tx.init(params)._replace(count=jnp.asarray(2**31 - 1, jnp.int32))
    _, state = tx.update({"w": jnp.ones(2)}, state)
    assert int(state.count) == 2**31 - 1


def test_scale_by_lion_on_a_flat_tree_equals_the_per_leaf_run():
    params = random_params(1)
    grads_seq = gradient_stream(params, 20, seed=2)
    tx = gx.scale_by_lion(b1=0.7)
    per_leaf, _ = run_updates(tx, params, grads_seq)
    flat_params = gx.flat_tree(params)
    flat, _ = run_updates(tx, flat_params, [flat_params.ravel(g) for g in grads_seq])
    for step, (a, b) in enumerate(zip(flat, per_leaf)):
        assert_trees_close(a.unravel(), b, 0, 0, context=f"step {step}")


def test_scale_by_lion_structure_mismatch_names_it():
    tx = gx.scale_by_lion()
    state = tx.init({"w": jnp.ones(2)})
    with pytest.raises(ValueError, match="scale_by_lion"):
        tx.update({"v": jnp.ones(2)}, state)
