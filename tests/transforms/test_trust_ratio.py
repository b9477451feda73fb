"""scale_by_trust_ratio, scale_by_param_block_norm and scale_by_param_block_rms.

* Each must match optax's over 50 jitted steps on a nested pytree (scalars,
  ``None`` and zero-size leaves, a step of zero gradients every seventh), with
  several argument sets, in float32, bfloat16 and float16 (low precision
  compared with optax run in float32, `tests.helpers.compare_with_optax`).
  Their state is optax's ``EmptyState``, compared as such.
* Zero parameters and zero updates (the ratio taken as 1) match optax and
  make no NaN, eagerly (``jax_debug_nans`` is on) and under ``jit``; the
  derivative through the trust ratio at zero parameters is finite.
* Finite entries whose squares overflow float32: the norms are still right
  (float64 NumPy reference), where optax's are infinite (its ratio is NaN).
* Non-finite updates: the NaN and inf pattern equals optax's.
* On a `flat_tree` (all leaves in buffers, or some kept apart, a bfloat16
  buffer, equal shapes side by side, and under a mask that selects part of a
  buffer) the updates equal the per-leaf run.
* Errors: ``params=None``; a params tree holding ``None`` where an update is.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradxform as gx
from tests.helpers import (
    assert_trees_close,
    compare_with_optax,
    gradient_stream,
    random_params,
    run_optax,
    run_updates,
)

DTYPES = [jnp.float32, jnp.bfloat16, jnp.float16]
STEPS = 50

TRUST_CASES = [
    pytest.param({}, id="defaults"),
    pytest.param({"min_norm": 0.5}, id="min_norm"),  # floors some leaves' norms
    pytest.param({"trust_coefficient": 0.02, "eps": 1e-3}, id="coefficient-eps"),
    pytest.param({"min_norm": 1e-2, "trust_coefficient": 3.0, "eps": 0.5}, id="all"),
]
BLOCK_CASES = [
    pytest.param({}, id="defaults"),
    pytest.param({"min_scale": 0.0}, id="no-floor"),
    pytest.param({"min_scale": 1.5}, id="floor-engaged"),  # above the small leaves' norms
]


def _both(name):
    return getattr(gx, name), getattr(optax, name)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("kwargs", TRUST_CASES)
def test_scale_by_trust_ratio_matches_optax(dtype, kwargs):
    compare_with_optax(gx.scale_by_trust_ratio(**kwargs), optax.scale_by_trust_ratio(**kwargs),
                       dtype=dtype, steps=STEPS)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("kwargs", BLOCK_CASES)
@pytest.mark.parametrize("name", ["scale_by_param_block_norm", "scale_by_param_block_rms"])
def test_param_block_scaling_matches_optax(name, kwargs, dtype):
    ours, theirs = _both(name)
    compare_with_optax(ours(**kwargs), theirs(**kwargs), dtype=dtype, steps=STEPS)


@pytest.mark.parametrize("name", ["scale_by_trust_ratio", "scale_by_param_block_norm",
                                  "scale_by_param_block_rms"])
def test_state_is_optaxs_empty_state(name):
    ours, theirs = _both(name)
    params = random_params(0)
    grads = gradient_stream(params, 2, seed=1)
    _, state = run_updates(ours(), params, grads)
    _, their_state = run_optax(theirs(), params, grads)
    assert type(state).__name__ == type(their_state).__name__ == "EmptyState"
    assert state._fields == their_state._fields == ()


def _zeroed(tree, keys):
    return {k: (jax.tree.map(jnp.zeros_like, v) if k in keys else v) for k, v in tree.items()}


@pytest.mark.parametrize("kwargs", [{}, {"eps": 1e-3}, {"min_norm": 1e-3}])
def test_zero_params_and_zero_updates_take_ratio_one_without_nan(kwargs):
    """Zero kernels, zero scalar, zero gradients of the biases: as optax, and no 0 / 0."""
    params = _zeroed(random_params(0), {"dense", "scalar"})
    grads = [_zeroed(g, {"pair"}) for g in gradient_stream(params, 8, seed=2)]
    tx = gx.scale_by_trust_ratio(**kwargs)
    eager, _ = run_updates(tx, params, grads[:2], jit=False)  # debug_nans checks every operation
    ours, _ = run_updates(tx, params, grads)
    theirs, _ = run_optax(optax.scale_by_trust_ratio(**kwargs), params, grads)
    for step, (mine, ref) in enumerate(zip(ours, theirs)):
        assert_trees_close(mine, ref, 2e-6, 1e-7, context=f"step {step}")
    for mine, ref in zip(eager, ours):
        assert_trees_close(mine, ref, 2e-6, 1e-7)
    if "min_norm" not in kwargs:  # ratio 1: zero-parameter leaves' updates are the gradients
        np.testing.assert_array_equal(ours[0]["dense"]["kernel"], grads[0]["dense"]["kernel"])


def test_derivative_at_zero_params_is_finite():
    tx = gx.scale_by_trust_ratio()
    grads = {"w": jnp.array([1.0, -2.0, 0.5])}

    def loss(params):
        return jnp.sum(tx.update(grads, tx.init(params), params)[0]["w"] ** 2)

    for params in ({"w": jnp.zeros(3)}, {"w": jnp.array([0.3, 0.0, -1.0])}):
        gradient = jax.grad(loss)(params)["w"]
        assert np.all(np.isfinite(np.asarray(gradient))), gradient


def test_norms_survive_squares_that_overflow_float32():
    """||p|| ~ 1e30, ||u|| ~ 1e25: float32 squares overflow, the norms themselves do not."""
    rng = np.random.default_rng(0)
    p = rng.standard_normal(6).astype(np.float32) * np.float32(1e30)
    g = rng.standard_normal(6).astype(np.float32) * np.float32(1e25)
    params, grads = {"w": jnp.asarray(p), "b": jnp.ones(2)}, {"w": jnp.asarray(g), "b": jnp.ones(2)}
    p64, g64 = p.astype(np.float64), g.astype(np.float64)
    cases = {
        gx.scale_by_trust_ratio(): g64 * np.linalg.norm(p64) / np.linalg.norm(g64),
        gx.scale_by_param_block_norm(): g64 * np.linalg.norm(p64),
        gx.scale_by_param_block_rms(): g64 * np.sqrt(np.mean(p64 * p64)),
    }
    for tx, expected in cases.items():
        updates = jax.jit(tx.update)(grads, tx.init(params), params)[0]
        with np.errstate(over="ignore"):
            want = expected.astype(np.float32)
        if not np.all(np.isfinite(want)):  # u * ||p|| overflows float32 itself: inf, as it must
            np.testing.assert_array_equal(np.asarray(updates["w"]), want)
            continue
        np.testing.assert_allclose(np.asarray(updates["w"]), want, rtol=2e-6)
    with jax.numpy_dtype_promotion("standard"), jax.debug_nans(False):
        theirs, _ = optax.scale_by_trust_ratio().update(grads, optax.EmptyState(), params)
    assert np.all(np.isnan(np.asarray(theirs["w"])))  # optax: inf / inf


@pytest.mark.allows_nan
@pytest.mark.parametrize("poison", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("name", ["scale_by_trust_ratio", "scale_by_param_block_norm",
                                  "scale_by_param_block_rms"])
def test_non_finite_pattern_matches_optax(name, poison):
    ours, theirs = _both(name)
    params = random_params(0)
    grads = gradient_stream(params, 1, seed=4)[0]
    kernel = np.array(grads["dense"]["kernel"])
    kernel[1, 2] = poison
    grads["dense"]["kernel"] = jnp.asarray(kernel)
    mine, _ = jax.jit(ours().update)(grads, ours().init(params), params)
    with jax.numpy_dtype_promotion("standard"):
        ref, _ = theirs().update(grads, theirs().init(params), params)
    for a, b in zip(jax.tree.leaves(mine), jax.tree.leaves(ref)):
        a, b = np.asarray(a), np.asarray(b)
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
        np.testing.assert_array_equal(np.isinf(a), np.isinf(b))
    assert np.any(~np.isfinite(np.asarray(mine["dense"]["kernel"])))


# --- flat_tree buffers -----------------------------------------------------------------------


def _mixed(seed, scale=1.0):
    """Equal shapes in several places, a bfloat16 pair, a zero-size leaf, a zero leaf, a scalar."""
    rng = np.random.default_rng(seed)

    def leaf(*shape, dtype=jnp.float32):
        return jnp.asarray(scale * rng.standard_normal(shape), dtype)

    return {
        "dense": {"kernel": leaf(4, 3), "bias": leaf(3)},
        "blocks": [{"kernel": leaf(4, 3), "norm": leaf(3)}, {"kernel": leaf(4, 3), "bias": leaf(3)}],
        "embedding": leaf(6, 2),
        "pair": (leaf(3), {"empty": leaf(0)}),
        "zero": jnp.zeros((2, 2)),
        "scalar": leaf(),
        "half": {"kernel": leaf(2, 3, dtype=jnp.bfloat16), "bias": leaf(3, dtype=jnp.bfloat16)},
    }


FLAT_TRANSFORMS = {
    "trust_ratio": lambda: gx.scale_by_trust_ratio(),
    "trust_ratio_options": lambda: gx.scale_by_trust_ratio(0.5, 0.1, 1e-3),
    "block_norm": lambda: gx.scale_by_param_block_norm(),
    "block_rms": lambda: gx.scale_by_param_block_rms(0.2),
    "masked_trust_ratio": lambda: gx.masked(gx.scale_by_trust_ratio(), ["kernel", "^pair"]),
}
LAYOUTS = {"buffers": None, "kept": lambda path, leaf: path in ("blocks/1/kernel", "embedding")}


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("name", FLAT_TRANSFORMS)
def test_flat_tree_equals_the_per_leaf_run(name, layout):
    params = _mixed(0)
    grads = [_mixed(seed, scale) for seed, scale in ((1, 0.3), (2, 30.0), (3, 0.0))]
    flat = gx.flat_tree(params, keep=LAYOUTS[layout])
    assert any(len(spec.members) > 3 for spec in flat.layout.buffers)
    tx = FLAT_TRANSFORMS[name]()
    want, _ = run_updates(tx, params, grads)
    got, _ = run_updates(tx, flat, [flat.ravel(g) for g in grads])
    for step, (g, w) in enumerate(zip(got, want)):
        assert isinstance(g, gx.FlatTree) and g.layout == flat.layout
        for a, e in zip(jax.tree.leaves(g.unravel()), jax.tree.leaves(w)):
            assert a.dtype == e.dtype and a.shape == e.shape
            tolerance = 1e-2 if a.dtype == jnp.bfloat16 else 2e-6
            np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(e, np.float64),
                                       rtol=tolerance, atol=1e-7, err_msg=f"{name}, step {step}")


# --- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["scale_by_trust_ratio", "scale_by_param_block_norm",
                                  "scale_by_param_block_rms"])
def test_update_needs_params(name):
    tx = getattr(gx, name)()
    grads = {"w": jnp.ones(2)}
    with pytest.raises(ValueError, match=f"{name}: update needs params, got params=None"):
        tx.update(grads, tx.init(grads))
    with pytest.raises(ValueError, match=f"{name}: every update needs its parameter"):
        tx.update({"w": jnp.ones(2), "b": jnp.ones(1)}, tx.init(grads), {"w": jnp.ones(2), "b": None})
    # A None update (a leaf without gradient) stays None.
    updates, _ = tx.update({"w": jnp.ones(2), "b": None}, tx.init(grads),
                           {"w": jnp.ones(2), "b": jnp.ones(1)})
    assert updates["b"] is None


def test_examples_in_the_docstrings_are_the_formulas():
    params = {"w": jnp.array([3.0, 4.0])}
    grads = {"w": jnp.array([0.0, 0.5])}
    tx = gx.scale_by_trust_ratio(trust_coefficient=0.5, eps=0.5)
    np.testing.assert_allclose(tx.update(grads, tx.init(params), params)[0]["w"],
                               np.array([0.0, 0.5]) * 0.5 * 5.0 / (0.5 + 0.5), rtol=1e-7)
    tx = gx.scale_by_param_block_rms(min_scale=10.0)  # floor above the RMS (3.54)
    np.testing.assert_allclose(tx.update(grads, tx.init(params), params)[0]["w"],
                               np.array([0.0, 5.0]), rtol=1e-7)
