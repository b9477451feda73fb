"""clip_by_block_rms and adaptive_grad_clip (AGC).

* Each must match optax's over 50 jitted steps on a nested pytree (scalars,
  ``None`` and zero-size leaves, a step of zero gradients every seventh), with
  several argument sets, in float32, bfloat16 and float16 (low precision
  compared with optax run in float32, `tests.helpers.compare_with_optax`).
  Their state is optax's ``EmptyState``.
* AGC's units follow ``optax.unitwise_norm``'s rule by shape (1-D to 5-D
  leaves, leaves with size-1 axes) and an explicit ``axis`` (an int, a
  negative one, a tuple), checked against optax on a tree of such leaves;
  a 6-D leaf without ``axis`` and an axis out of range raise, naming the
  transformation.
* Leaves (units) within the bound come back bit for bit.
* Finite entries whose squares overflow float32: the RMS and the unit norms
  are still right (float64 NumPy reference), where optax's are infinite.
* Non-finite gradients: the NaN and inf pattern equals optax's.
* On a `flat_tree` (all leaves in buffers or some kept apart, a bfloat16
  buffer, equal shapes side by side) the updates equal the per-leaf run.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradxform as gx
from tests.helpers import (
    compare_with_optax,
    gradient_stream,
    random_params,
    run_optax,
    run_updates,
)

DTYPES = [jnp.float32, jnp.bfloat16, jnp.float16]
STEPS = 50

# Every rank optax's unitwise_norm knows, with size-1 axes that make a leaf a vector.
RANKS = {
    "vector": (5,), "row": (1, 5), "column": (5, 1), "dense": (4, 3), "heads": (2, 3, 4),
    "squeezed3": (3, 1, 1), "conv": (2, 2, 3, 4), "conv_1x1": (1, 1, 3, 4),
    "conv3d": (2, 2, 2, 3, 2), "scalar": (), "one": (1, 1), "none": None, "empty": (0, 2),
}
NO_SCALARS = {k: v for k, v in RANKS.items() if k not in ("scalar", "vector", "row", "column",
                                                            "squeezed3", "one", "empty")}


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("threshold", [0.1, 1.0, 100.0])
def test_clip_by_block_rms_matches_optax(threshold, dtype):
    compare_with_optax(gx.clip_by_block_rms(threshold), optax.clip_by_block_rms(threshold),
                       dtype=dtype, steps=STEPS)


AGC_CASES = [
    pytest.param(dict(clipping=0.05), id="clips-most"),
    pytest.param(dict(clipping=1.0), id="clips-some"),
    pytest.param(dict(clipping=0.1, eps=0.5), id="eps-engaged"),
    pytest.param(dict(clipping=0.2, eps=0.0), id="eps=0"),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("kwargs", AGC_CASES)
def test_adaptive_grad_clip_matches_optax(kwargs, dtype):
    compare_with_optax(gx.adaptive_grad_clip(**kwargs), optax.adaptive_grad_clip(**kwargs),
                       dtype=dtype, steps=STEPS)


@pytest.mark.parametrize(
    "shapes, axis",
    [(RANKS, None), (NO_SCALARS, 0), (NO_SCALARS, -1), (NO_SCALARS, (0, 1))],
    ids=["by-rank", "axis=0", "axis=-1", "axis=(0, 1)"],
)
def test_adaptive_grad_clip_units_match_optax_unitwise_norm(shapes, axis):
    compare_with_optax(gx.adaptive_grad_clip(0.3, axis=axis),
                       optax.adaptive_grad_clip(0.3, axis=axis), shapes=shapes, steps=15)


@pytest.mark.parametrize("name", ["clip_by_block_rms", "adaptive_grad_clip"])
def test_state_is_optaxs_empty_state(name):
    params = random_params(0)
    grads = gradient_stream(params, 2, seed=1)
    _, state = run_updates(getattr(gx, name)(0.5), params, grads)
    _, their_state = run_optax(getattr(optax, name)(0.5), params, grads)
    assert type(state).__name__ == type(their_state).__name__ == "EmptyState"


def test_units_within_the_bound_come_back_bit_for_bit():
    params = {"w": jnp.asarray(np.random.default_rng(0).standard_normal((5, 4)), jnp.float32)}
    grads = {"w": params["w"] * jnp.array([0.01, 0.01, 10.0, 10.0])}  # columns 0, 1 small
    tx = gx.adaptive_grad_clip(0.5)
    updates = jax.jit(tx.update)(grads, tx.init(params), params)[0]["w"]
    np.testing.assert_array_equal(np.asarray(updates[:, :2]).view(np.uint32),
                                  np.asarray(grads["w"][:, :2]).view(np.uint32))
    norms = np.linalg.norm(np.asarray(updates, np.float64), axis=0)
    bound = 0.5 * np.linalg.norm(np.asarray(params["w"], np.float64), axis=0)
    np.testing.assert_allclose(norms[2:], bound[2:], rtol=1e-6)
    for g in (jnp.full(4, 0.25, jnp.bfloat16), jnp.zeros(3, jnp.float16)):
        tx = gx.clip_by_block_rms(0.5)
        out = jax.jit(tx.update)({"w": g}, tx.init({"w": g}))[0]["w"]
        assert out.dtype == g.dtype
        np.testing.assert_array_equal(np.asarray(out, np.float32), np.asarray(g, np.float32))


def test_norms_survive_squares_that_overflow_float32():
    rng = np.random.default_rng(0)
    g = (rng.standard_normal((6, 3)) * 1e25).astype(np.float32)
    p = (rng.standard_normal((6, 3)) * 1e22).astype(np.float32)
    g64, p64 = g.astype(np.float64), p.astype(np.float64)
    rms = np.sqrt(np.mean(g64 * g64))
    want_rms = g64 / max(1.0, rms / 1e20)
    tx = gx.clip_by_block_rms(1e20)
    out = jax.jit(tx.update)({"w": jnp.asarray(g)}, tx.init({"w": g}))[0]["w"]
    np.testing.assert_allclose(np.asarray(out), want_rms.astype(np.float32), rtol=2e-6)

    g_norm = np.linalg.norm(g64, axis=0)
    bound = 0.01 * np.linalg.norm(p64, axis=0)
    want = np.where(g_norm < bound, g64, g64 * bound / g_norm)
    tx = gx.adaptive_grad_clip(0.01)
    out = jax.jit(tx.update)({"w": jnp.asarray(g)}, tx.init({"w": p}), {"w": jnp.asarray(p)})[0]
    np.testing.assert_allclose(np.asarray(out["w"]), want.astype(np.float32), rtol=2e-6)
    assert np.all(np.abs(np.asarray(out["w"])) > 0)
    # optax: both norms inf, the factor inf / inf: the whole leaf NaN.
    with jax.numpy_dtype_promotion("standard"), jax.debug_nans(False):
        theirs, _ = optax.adaptive_grad_clip(0.01).update(
            {"w": jnp.asarray(g)}, optax.EmptyState(), {"w": jnp.asarray(p)})
    assert np.all(np.isnan(np.asarray(theirs["w"])))


@pytest.mark.allows_nan
@pytest.mark.parametrize("poison", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("name", ["clip_by_block_rms", "adaptive_grad_clip"])
def test_non_finite_pattern_matches_optax(name, poison):
    params = random_params(0)
    grads = gradient_stream(params, 1, seed=4)[0]
    kernel = np.array(grads["dense"]["kernel"])
    kernel[1, 2] = poison
    grads["dense"]["kernel"] = jnp.asarray(kernel)
    ours, theirs = getattr(gx, name)(0.5), getattr(optax, name)(0.5)
    mine, _ = jax.jit(ours.update)(grads, ours.init(params), params)
    with jax.numpy_dtype_promotion("standard"):
        ref, _ = theirs.update(grads, theirs.init(params), params)
    for a, b in zip(jax.tree.leaves(mine), jax.tree.leaves(ref)):
        a, b = np.asarray(a), np.asarray(b)
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
        np.testing.assert_array_equal(np.isinf(a), np.isinf(b))
    assert np.any(~np.isfinite(np.asarray(mine["dense"]["kernel"])))


# --- flat_tree buffers -----------------------------------------------------------------------


def _mixed(seed, scale=1.0):
    rng = np.random.default_rng(seed)

    def leaf(*shape, dtype=jnp.float32):
        return jnp.asarray(scale * rng.standard_normal(shape), dtype)

    return {
        "dense": {"kernel": leaf(4, 3), "bias": leaf(3)},
        "blocks": [{"kernel": leaf(4, 3), "norm": leaf(3)}, {"kernel": leaf(4, 3), "bias": leaf(3)}],
        "conv": [leaf(2, 2, 3, 4), leaf(2, 2, 3, 4), leaf(1, 5)],
        "pair": (leaf(3), {"empty": leaf(0)}),
        "zero": jnp.zeros((2, 2)),
        "scalar": leaf(),
        "half": {"kernel": leaf(2, 3, dtype=jnp.bfloat16), "bias": leaf(3, dtype=jnp.bfloat16)},
    }


FLAT_TRANSFORMS = {
    "clip_by_block_rms": lambda: gx.clip_by_block_rms(0.5),
    "adaptive_grad_clip": lambda: gx.adaptive_grad_clip(0.1),
    "adaptive_grad_clip_eps": lambda: gx.adaptive_grad_clip(0.3, eps=0.5),
    "masked_adaptive_grad_clip": lambda: gx.masked(gx.adaptive_grad_clip(0.1), ["kernel", "conv"]),
}
LAYOUTS = {"buffers": None, "kept": lambda path, leaf: path in ("blocks/1/kernel", "conv/0")}


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("name", FLAT_TRANSFORMS)
def test_flat_tree_equals_the_per_leaf_run(name, layout):
    params = _mixed(0)
    grads = [_mixed(seed, scale) for seed, scale in ((1, 0.03), (2, 30.0), (3, 0.0))]
    flat = gx.flat_tree(params, keep=LAYOUTS[layout])
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


def test_adaptive_grad_clip_errors_name_the_leaf_and_the_rule():
    tx = gx.adaptive_grad_clip(0.1)
    six = {"w": jnp.ones((2, 2, 1, 2, 2, 2))}
    with pytest.raises(ValueError, match=r"adaptive_grad_clip: a leaf of shape \(2, 2, 1, 2, 2, 2\) "
                                         r"has no default unit.*axis="):
        tx.update(six, tx.init(six), six)
    vector = {"w": jnp.ones((1, 1, 1, 1, 1, 4))}  # at most one axis longer than 1: one unit
    np.testing.assert_array_equal(tx.update(vector, tx.init(vector), vector)[0]["w"],
                                  np.full((1, 1, 1, 1, 1, 4), 0.1, np.float32))
    tx = gx.adaptive_grad_clip(0.1, axis=1)
    params = {"w": jnp.ones(3)}
    with pytest.raises(ValueError, match=r"adaptive_grad_clip: axis=1 is out of range for a leaf "
                                         r"of shape \(3,\)"):
        jax.jit(tx.update)(params, tx.init(params), params)
    tx = gx.adaptive_grad_clip(0.1, axis=(1, -1))
    params = {"w": jnp.ones((3, 2))}
    with pytest.raises(ValueError, match=r"axis=\(1, -1\) names one axis twice"):
        tx.update(params, tx.init(params), params)
    with pytest.raises(ValueError, match="adaptive_grad_clip: update needs params"):
        tx.update(params, tx.init(params))
    with pytest.raises(ValueError, match="adaptive_grad_clip: every update needs its parameter"):
        gx.adaptive_grad_clip(0.1).update({"w": jnp.ones(2)}, gx.EmptyState(), {"w": None})


def test_examples_in_the_docstrings_are_the_formulas():
    tx = gx.clip_by_block_rms(2.0)
    g = jnp.array([3.0, -3.0, 6.0, 0.0])  # rms sqrt(54 / 4) = 3.674
    expected = np.asarray(g) / (np.sqrt(54 / 4) / 2.0)
    np.testing.assert_allclose(tx.update({"w": g}, tx.init({"w": g}))[0]["w"], expected, rtol=1e-6)
    tx = gx.adaptive_grad_clip(0.1, eps=10.0)  # eps above ||p|| = 5: bound 0.1 * 10 = 1
    params = {"w": jnp.array([3.0, 4.0])}
    out = tx.update({"w": jnp.array([6.0, 8.0])}, tx.init(params), params)[0]["w"]
    np.testing.assert_allclose(out, np.array([0.6, 0.8]), rtol=1e-6)
