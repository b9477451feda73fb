"""zero_nans, keep_params_nonnegative and centralize against optax.

* zero_nans: the updates and the ``found_nan`` flags equal optax's over 40
  jitted steps, without NaN (under ``jax_debug_nans``: zeroing makes none) and
  with NaN fed on purpose in some leaves at some steps; per logical leaf on a
  `FlatTree`.
* keep_params_nonnegative: 40 training steps of ``sgd`` then the constraint
  follow optax's parameters, which never go below 0; with updates of a lower
  precision than the params, ``-p`` is rounded towards 0 so that it still holds.
* centralize: optax's rule (rank >= 2 leaves minus their mean over all axes
  but the first), and a float64 NumPy reference for 3-d and zero-size leaves.
"""

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import optax
import pytest

import gradxform as gx
from tests.helpers import (
    assert_trees_bitwise_equal,
    assert_trees_close,
    compare_with_optax,
    gradient_stream,
    random_params,
    run_optax,
    run_updates,
)

STEPS = 40
DTYPES = [jnp.float32, jnp.bfloat16]

# ------------------------------------------------------------------------ zero_nans


def _with_nans(grads_seq, every=3):
    """Every ``every``-th step puts NaN into some entries of every other leaf."""
    rng = np.random.default_rng(0)
    out = []
    for step, grads in enumerate(grads_seq):
        leaves, treedef = jax.tree.flatten(grads)
        if step % every == 0:
            poisoned = []
            for index, leaf in enumerate(leaves):
                host = np.array(leaf, np.float32)
                if index % 2 == step % 2 and host.size:
                    host.reshape(-1)[rng.integers(0, host.size, 1 + host.size // 3)] = np.nan
                poisoned.append(jnp.asarray(host, leaf.dtype))
            leaves = poisoned
        out.append(treedef.unflatten(leaves))
    return out


def _compare_zero_nans(params, grads_seq):
    tx, reference = gx.zero_nans(), optax.zero_nans()
    state, their_state = tx.init(params), reference.init(params)
    assert state._fields == their_state._fields == ("found_nan",)
    assert_trees_bitwise_equal(state.found_nan, their_state.found_nan, "init")
    step = jax.jit(tx.update)
    with jax.numpy_dtype_promotion("standard"), jax.debug_nans(False):
        their_step = jax.jit(reference.update)
    for index, grads in enumerate(grads_seq):
        updates, state = step(grads, state)
        with jax.numpy_dtype_promotion("standard"), jax.debug_nans(False):
            expected, their_state = their_step(grads, their_state)
        assert_trees_bitwise_equal(updates, expected, f"step {index}")
        assert_trees_bitwise_equal(state.found_nan, their_state.found_nan, f"step {index}")
    return state


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_zero_nans_without_nans_is_optax_and_makes_no_nan(dtype):
    params = random_params(0, dtype)
    state = _compare_zero_nans(params, gradient_stream(params, STEPS, seed=1))
    assert not any(bool(flag) for flag in jax.tree.leaves(state.found_nan))


@pytest.mark.allows_nan
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_zero_nans_with_nans_is_optax(dtype):
    params = random_params(0, dtype)
    grads_seq = _with_nans(gradient_stream(params, STEPS, seed=1))
    _compare_zero_nans(params, grads_seq)
    tx = gx.zero_nans()
    updates, state = tx.update(grads_seq[0], tx.init(params))
    assert all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree.leaves(updates))
    flags = jax.tree.leaves(state.found_nan)
    assert any(bool(f) for f in flags) and not all(bool(f) for f in flags)


@pytest.mark.allows_nan
def test_zero_nans_keeps_infinities_and_zeroes_complex_nans_whole():
    grads = {"x": jnp.array([np.inf, -np.inf, np.nan, 1.0]),
             "z": jnp.array([complex(np.nan, 1.0), complex(2.0, 3.0)], jnp.complex64)}
    tx = gx.zero_nans()
    updates, state = tx.update(grads, tx.init(grads))
    np.testing.assert_array_equal(updates["x"], [np.inf, -np.inf, 0.0, 1.0])
    np.testing.assert_array_equal(updates["z"], np.array([0, 2 + 3j], np.complex64))
    assert bool(state.found_nan["x"]) and bool(state.found_nan["z"])


@pytest.mark.allows_nan
def test_zero_nans_on_a_flat_tree_flags_each_logical_leaf():
    params = {"a": jnp.zeros((2, 3)), "b": jnp.zeros(4), "c": [jnp.zeros((2, 3)), None],
              "d": jnp.zeros(()), "e": jnp.zeros(5), "h": jnp.zeros(3, jnp.bfloat16)}
    grads = jax.tree.map(jnp.ones_like, params)
    grads["c"][0] = grads["c"][0].at[1, 2].set(np.nan)
    grads["h"] = grads["h"].at[0].set(np.nan)
    flat = gx.flat_tree(params, keep=lambda path, leaf: path == "e")
    tx = gx.zero_nans()
    state = tx.init(flat)
    assert jax.tree.structure(state.found_nan) == jax.tree.structure(
        tx.init(params).found_nan)
    updates, state = jax.jit(tx.update)(flat.ravel(grads), state)
    want_updates, want_state = tx.update(grads, tx.init(params))
    assert_trees_bitwise_equal(updates.unravel(), want_updates)
    assert_trees_bitwise_equal(state.found_nan, want_state.found_nan)
    assert bool(state.found_nan["c"][0]) and bool(state.found_nan["h"])
    assert not bool(state.found_nan["a"]) and not bool(state.found_nan["e"])


def test_zero_nans_state_of_another_tree_raises():
    tx = gx.zero_nans()
    state = tx.init({"a": jnp.zeros(2)})
    with pytest.raises(ValueError, match="zero_nans"):
        tx.update({"b": jnp.zeros(2)}, state)


# ---------------------------------------------------------- keep_params_nonnegative


def _train(tx, params, grads_seq, standard=False):
    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates) if standard else gx.apply_updates(
            params, updates), state

    step = jax.jit(step)
    state, trajectory = tx.init(params), []
    for grads in grads_seq:
        params, state = step(params, state, grads)
        trajectory.append(params)
    return trajectory


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("learning_rate", [0.1, 0.5])
def test_keep_params_nonnegative_follows_optax_and_stays_nonnegative(dtype, learning_rate):
    params = jax.tree.map(jnp.abs, random_params(0, dtype))
    grads_seq = gradient_stream(params, STEPS, seed=1)
    ours = _train(gx.chain(gx.sgd(learning_rate), gx.keep_params_nonnegative()), params, grads_seq)
    with jax.numpy_dtype_promotion("standard"):
        theirs = _train(optax.chain(optax.sgd(learning_rate), optax.keep_params_nonnegative()),
                        params, grads_seq, standard=True)
    tolerance = 1e-6 if dtype == jnp.float32 else 2e-2
    for step, (mine, ref) in enumerate(zip(ours, theirs)):
        assert_trees_close(mine, ref, tolerance, tolerance, context=f"step {step}")
        assert all(bool(jnp.all(leaf >= 0)) for leaf in jax.tree.leaves(mine)), step
    assert any(bool(jnp.any(leaf == 0)) for leaf in jax.tree.leaves(ours[-1]))  # it clipped


def test_keep_params_nonnegative_moves_negative_params_to_zero_as_optax():
    params = {"w": jnp.array([-1.0, 2.0, 0.5, 0.0]), "n": None}
    updates = {"w": jnp.array([0.5, -3.0, 0.25, -0.0]), "n": None}
    tx = gx.keep_params_nonnegative()
    ours, _ = tx.update(updates, tx.init(params), params)
    theirs, _ = optax.keep_params_nonnegative().update(updates, optax.EmptyState(), params)
    assert_trees_bitwise_equal(ours, theirs)
    np.testing.assert_array_equal(ours["w"], [1.0, -2.0, 0.25, -0.0])


def test_lower_precision_updates_never_take_a_param_below_zero():
    """float32 params, bfloat16 updates: -p rounded to bfloat16 may be larger than p."""
    rng = np.random.default_rng(0)
    p = np.abs(rng.standard_normal(4096)).astype(np.float32) + np.float32(1e-3)
    params = {"w": jnp.asarray(p)}
    updates = {"w": jnp.full(4096, -10.0, jnp.bfloat16)}
    tx = gx.keep_params_nonnegative()
    out, _ = jax.jit(tx.update)(updates, tx.init(params), params)
    assert out["w"].dtype == jnp.bfloat16
    # The reference: -p rounded to bfloat16 towards zero, in NumPy.
    nearest = (-p).astype(ml_dtypes.bfloat16)
    toward_zero = np.where(nearest.astype(np.float64) < -p.astype(np.float64),
                           np.nextafter(nearest, np.zeros_like(nearest)), nearest)
    np.testing.assert_array_equal(np.asarray(out["w"]), toward_zero)
    assert np.any(nearest.astype(np.float64) < -p.astype(np.float64))  # the case arises
    new = gx.apply_updates(params, out)["w"]
    assert bool(jnp.all(new >= 0))


def test_keep_params_nonnegative_needs_params_and_leaves_complex_leaves_alone():
    tx = gx.keep_params_nonnegative()
    with pytest.raises(ValueError, match="keep_params_nonnegative: update needs params"):
        tx.update({"w": jnp.ones(2)}, tx.init({"w": jnp.ones(2)}))
    z = {"w": jnp.ones(2, jnp.complex64), "r": jnp.ones(2)}
    grads = {"w": jnp.full(2, -5 - 5j, jnp.complex64), "r": jnp.full(2, -5.0)}
    updates, _ = tx.update(grads, tx.init(z), z)
    assert_trees_bitwise_equal(updates["w"], grads["w"])
    np.testing.assert_array_equal(updates["r"], [-1.0, -1.0])
    with pytest.raises(ValueError, match="keep_params_nonnegative"):
        tx.update({"w": jnp.ones(2)}, tx.init({"v": jnp.ones(2)}), {"v": jnp.ones(2)})


# ----------------------------------------------------------------------- centralize

SHAPES = {
    "dense": {"kernel": (4, 3), "bias": (3,)},
    "conv": (3, 2, 2, 4),
    "blocks": [(2, 2), None, ()],
    "pair": ((5,), {"inner": (1, 3), "empty": (0,), "empty_rows": (3, 0), "no_rows": (0, 4)}),
    "scalar": (),
}


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_centralize_matches_optax(dtype):
    compare_with_optax(gx.centralize(), optax.centralize(), dtype=dtype, steps=STEPS,
                       shapes=SHAPES, rtol=1e-5 if dtype == jnp.float32 else None)


def test_centralize_is_the_float64_rule():
    params = random_params(0, jnp.float32, SHAPES)
    grads_seq = gradient_stream(params, 30, seed=1)
    ours, state = run_updates(gx.centralize(), params, grads_seq)
    assert state == gx.EmptyState()
    for step, (updates, grads) in enumerate(zip(ours, grads_seq)):
        for u, g in zip(jax.tree.leaves(updates), jax.tree.leaves(grads)):
            g = np.asarray(g, np.float64)
            if g.ndim > 1 and g.size:
                g = g - g.mean(axis=tuple(range(1, g.ndim)), keepdims=True)
            np.testing.assert_allclose(u, g, rtol=1e-5, atol=1e-6, err_msg=f"step {step}")


def test_centralize_on_a_flat_tree_is_per_leaf():
    params = random_params(0, jnp.float32, SHAPES)
    grads_seq = gradient_stream(params, 30, seed=1)
    want, _ = run_updates(gx.centralize(), params, grads_seq)
    flat = gx.flat_tree(params, keep=lambda path, leaf: path == "conv")
    got, _ = run_updates(gx.centralize(), flat, [flat.ravel(g) for g in grads_seq])
    for step, (g, w) in enumerate(zip(got, want)):
        assert_trees_close(g.unravel(), w, 1e-6, 1e-6, context=f"step {step}")


def test_centralize_example_from_optax():
    grad = jnp.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    tx = gx.centralize()
    updates, _ = tx.update(grad, tx.init(grad))
    theirs, _ = run_optax(optax.centralize(), grad, [grad])
    np.testing.assert_array_equal(updates, theirs[0])
    np.testing.assert_array_equal(updates, [[-1.0, 0.0, 1.0], [-1.0, 0.0, 1.0]])
