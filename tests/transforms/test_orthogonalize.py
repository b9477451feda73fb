"""Newton–Schulz orthogonalisation, scale_by_muon and scale_by_shape, against optax.contrib live.

* `orthogonalize_via_newton_schulz` equals optax's for each preconditioning,
  one coefficient triple or one per step, on tall and square matrices
  and on a 4-D kernel with dimension numbers (each batch entry alone); the
  result is nearly orthogonal (its singular values lie in optax's band, about
  0.7 to 1.2); bfloat16 input is iterated in float32 and rounded once.
* ``scale_by_muon`` matches ``optax.contrib.scale_by_muon`` over 30 jitted
  steps on a tree of 2-D leaves, a 3-D stack and a 4-D kernel (with
  `MuonDimensionNumbers`), a zero-size matrix and ``None``, for the defaults
  and non-default options (no Nesterov, adaptive, AOL or spectral
  preconditioning, per-step coefficients; Schatten in tests/optimizers/test_muon.py),
  in float32 (updates and every
  state field) and in bfloat16 against optax in float32, a bfloat16 momentum
  included (to bfloat16's tolerance: optax multiplies it by beta rounded to
  bfloat16), on rectangular matrices.
* Complex leaves (with the dual-norm scaling too) match optax.
* ``scale_by_shape`` matches optax's width and consistent-RMS scalings.
* Errors: a leaf that is not a matrix and has no dimension numbers, an axis
  out of range, overlapping axes, bad coefficients, a flat buffer (a
  `TypeError` pointing to the per-leaf tree).
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from optax.contrib import _muon as optax_muon

import gradxform as gx
from tests.helpers import (
    FAST_COMPILE, assert_trees_close, cast_tree, gradient_stream, random_params, trajectory,
)

STEPS = 30
SHAPES = {"dense": {"kernel": (6, 4)}, "blocks": [(4, 4), None], "stack": (2, 3, 5),
          "conv": (3, 3, 2, 4), "empty": (0, 2)}
BF16_SHAPES = {"dense": {"kernel": (8, 3)}, "blocks": [(2, 7), None], "stack": (2, 3, 8),
               "conv": (3, 3, 2, 4), "empty": (0, 2)}
PRECONDITIONINGS = ["frobenius", "spectral", "aol", "schatten"]


def _dims(module):
    """Dimension numbers for `SHAPES`: None (a plain matrix) for the 2-D leaves."""
    numbers = module.MuonDimensionNumbers
    return {"dense": {"kernel": None}, "blocks": [None, None],
            "stack": numbers(1, 2), "conv": numbers((0, 1, 2), 3), "empty": None}


def _optax_dims_fn(updates):
    # optax's tree map needs the dimension numbers' None exactly where the params have None.
    return _dims(optax.contrib)


def _optax_explicit_dims(updates):
    """`_dims` with the 2-D leaves' default written out: optax's scale_by_shape needs it."""
    plain = optax.contrib.MuonDimensionNumbers()
    return {"dense": {"kernel": plain}, "blocks": [plain, None],
            "stack": optax.contrib.MuonDimensionNumbers(1, 2),
            "conv": optax.contrib.MuonDimensionNumbers((0, 1, 2), 3), "empty": plain}


CASES = [
    pytest.param({}, id="defaults"),
    pytest.param({"nesterov": False, "adaptive": True, "beta": 0.8, "eps": 1e-6}, id="adaptive"),
    pytest.param({"preconditioning": "aol", "ns_coeffs": optax_muon._DION_NS_COEFFS},
                 id="aol-dion"),
    pytest.param({"preconditioning": "spectral", "ns_steps": 3}, id="spectral"),
]


def run(tx, params, grads_seq, standard=False):
    """Each step's updates, and the final state."""
    history = trajectory(tx, params, grads_seq, standard)
    return [updates for updates, _, _ in history], history[-1][2]


def _run_both(kwargs, dtype=jnp.float32, shapes=SHAPES):
    params = random_params(0, dtype, shapes)
    grads_seq = gradient_stream(params, STEPS, seed=1)
    ours, state = run(gx.scale_by_muon(**kwargs, weight_dimension_numbers=_dims(gx)), params,
                      grads_seq)
    reference = optax.contrib.scale_by_muon(**kwargs, weight_dimension_numbers=_optax_dims_fn)
    theirs, optax_state = run(reference, cast_tree(params, jnp.float32),
                              [cast_tree(g, jnp.float32) for g in grads_seq], standard=True)
    return grads_seq, ours, state, theirs, optax_state


@pytest.mark.parametrize("kwargs", CASES)
def test_scale_by_muon_matches_optax_with_its_state(kwargs):
    grads_seq, ours, state, theirs, optax_state = _run_both(kwargs)
    for step, (mine, ref) in enumerate(zip(ours, theirs)):
        assert_trees_close(mine, ref, 2e-5, 2e-6, f"step {step}")
    assert type(state).__name__ == type(optax_state).__name__ == "MuonState"
    assert state._fields == optax_state._fields == ("count", "mu", "ns_coeffs")
    assert state.count.dtype == jnp.int32 and int(state.count) == int(optax_state.count) == STEPS
    assert_trees_close(state.mu, optax_state.mu, 1e-5, 1e-7, "mu")
    np.testing.assert_allclose(state.ns_coeffs, optax_state.ns_coeffs, rtol=1e-7)
    assert state.ns_coeffs.dtype == jnp.float32


@pytest.mark.parametrize("kwargs", [
    # optax multiplies a bfloat16 momentum by beta rounded to bfloat16 (0.9492 for 0.95):
    # its numbers drift from the float32 rule by about that much.
    pytest.param({"mu_dtype": jnp.bfloat16}, id="bf16-mu"),
])
def test_scale_by_muon_in_bfloat16_matches_optax_in_float32(kwargs):
    # The iteration multiplies the momentum's smallest singular values by up to about 3.4**5:
    # bfloat16's roundings of a nearly singular (square random) matrix would show up that
    # large, so the matrices here are rectangular, with well separated singular values.
    grads_seq, ours, state, theirs, _ = _run_both(kwargs, jnp.bfloat16, BF16_SHAPES)
    for step, (mine, ref) in enumerate(zip(ours, theirs)):
        assert {x.dtype for x in jax.tree.leaves(mine)} == {jnp.dtype(jnp.bfloat16)}
        assert_trees_close(mine, ref, 5e-2, 5e-2, f"step {step}")
    assert {x.dtype for x in jax.tree.leaves(state.mu)} == {jnp.dtype(jnp.bfloat16)}


def _fast_jit(fn):
    return jax.jit(fn, compiler_options=FAST_COMPILE)


# Tall ones are iterated transposed; square ones are where AOL's rows-or-columns choice shows.
MATRICES = {"tall": (7, 4), "square": (5, 5)}


def test_orthogonalize_matches_optax_for_every_preconditioning():
    matrices = {name: jax.random.normal(jax.random.key(i), shape)
                for i, (name, shape) in enumerate(MATRICES.items())}
    settings = [(name, pre, "standard") for name in MATRICES for pre in PRECONDITIONINGS] + [
        ("tall", pre, "dion") for pre in PRECONDITIONINGS]

    @_fast_jit
    def ours(matrices):
        return [gx.orthogonalize_via_newton_schulz(matrices[name], coeffs, 5, pre)
                for name, pre, coeffs in settings]

    @_fast_jit
    def theirs(matrices):
        presets = {"standard": optax_muon._DEFAULT_NS_COEFFS, "dion": optax_muon._DION_NS_COEFFS}
        with jax.numpy_dtype_promotion("standard"):
            return [optax_muon.orthogonalize_via_newton_schulz(
                matrices[name], jnp.asarray(presets[coeffs]), 5, pre)
                for name, pre, coeffs in settings]

    for setting, got, want in zip(settings, ours(matrices), theirs(matrices)):
        # Entries of order 1; the Dion coefficients (up to 6.9) amplify a last-bit difference.
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=2e-5, err_msg=str(setting))
        if setting[1] != "spectral":  # optax's band: singular values in about [0.7, 1.2]
            singular = np.linalg.svd(np.asarray(got, np.float64), compute_uv=False)
            assert np.all(singular > 0.5) and np.all(singular < 1.3), (setting, singular)


def test_orthogonalize_with_dimension_numbers_matches_optax():
    x = jax.random.normal(jax.random.key(4), (3, 3, 2, 4))
    coeffs = optax_muon._DEFAULT_NS_COEFFS

    @_fast_jit
    def both(x):
        ours = gx.orthogonalize_via_newton_schulz(
            x, coeffs, dimension_numbers=gx.MuonDimensionNumbers((0, 2), -1))
        with jax.numpy_dtype_promotion("standard"):
            theirs = optax_muon.orthogonalize_via_newton_schulz(
                x, jnp.asarray(coeffs), dimension_numbers=optax.contrib.MuonDimensionNumbers((0, 2), -1))
        # Batch axis 1: each of its 3 entries is a (3 * 2, 4) matrix of its own.
        alone = gx.orthogonalize_via_newton_schulz(x[:, 1].reshape(6, 4), coeffs)
        return ours, theirs, alone

    ours, theirs, alone = both(x)
    assert ours.shape == x.shape and ours.dtype == x.dtype
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=2e-6)
    np.testing.assert_allclose(np.asarray(ours)[:, 1].reshape(6, 4), alone, rtol=1e-5, atol=1e-6)


def test_bfloat16_input_is_iterated_in_float32():
    x = jax.random.normal(jax.random.key(5), (6, 4)).astype(jnp.bfloat16)
    low, high = _fast_jit(lambda x: (
        gx.orthogonalize_via_newton_schulz(x, "standard"),
        gx.orthogonalize_via_newton_schulz(x.astype(jnp.float32), "standard")))(x)
    assert low.dtype == jnp.bfloat16
    np.testing.assert_array_equal(low, high.astype(jnp.bfloat16))


@pytest.mark.parametrize("consistent_rms", [None, 0.2])
def test_scale_by_shape_matches_optax(consistent_rms):
    params = random_params(0, shapes=SHAPES)
    grads = gradient_stream(params, 1, seed=2, zero_every=0)[0]
    tx = gx.scale_by_shape(_dims(gx), consistent_rms)
    ours, _ = tx.update(grads, tx.init(params))
    assert ours["empty"].shape == (0, 2)  # optax divides by its fan-in, 0, and raises
    grads["empty"] = ours["empty"] = None
    with jax.numpy_dtype_promotion("standard"):
        reference = optax_muon.scale_by_shape(
            lambda u: dict(_optax_explicit_dims(u), empty=None), consistent_rms)
        theirs, _ = reference.update(grads, reference.init(params))
    assert_trees_close(ours, theirs, 1e-6, 0.0)
    # The stack's matrices are (3, 5): fan_out / fan_in = 5 / 3.
    expected = np.sqrt(5 / 3) if consistent_rms is None else np.sqrt(5) * 0.2
    np.testing.assert_allclose(ours["stack"], grads["stack"] * expected, rtol=1e-6)
    np.testing.assert_allclose(ours["dense"]["kernel"], grads["dense"]["kernel"] * (
        1.0 if consistent_rms is None else np.sqrt(6) * 0.2), rtol=1e-6)


def test_a_single_dimension_numbers_applies_to_every_leaf():
    params = {"a": jnp.ones((2, 3, 4)), "b": [jnp.ones((5, 2, 2)), None]}
    tx = gx.scale_by_muon(weight_dimension_numbers=gx.MuonDimensionNumbers(1, 2))
    expected = gx.scale_by_muon(weight_dimension_numbers={
        "a": gx.MuonDimensionNumbers(1, 2), "b": [gx.MuonDimensionNumbers(1, 2), None]})
    grads = jax.tree.map(lambda p: p * jnp.arange(p.shape[-1], dtype=p.dtype), params)
    got, want = _fast_jit(lambda g: (tx.update(g, tx.init(params))[0],
                                     expected.update(g, expected.init(params))[0]))(grads)
    assert_trees_close(got, want, 0.0, 0.0)


@pytest.mark.parametrize("dims, match", [
    (None, r"the update at \['v'\] has shape \(3,\), but without weight dimension numbers every "
           r"leaf must be a matrix"),
    ({"v": gx.MuonDimensionNumbers(0, 1)}, r"the update at \['v'\] has shape \(3,\); a leaf given "
                                           r"dimension numbers .* must have rank >= 2"),
])
def test_a_leaf_that_is_not_a_matrix_is_named(dims, match):
    params = {"v": jnp.ones(3)}
    tx = gx.scale_by_muon(weight_dimension_numbers=dims)
    with pytest.raises(ValueError, match="scale_by_muon: " + match):
        jax.jit(tx.update)(params, tx.init(params))


def test_an_axis_out_of_range_is_named():
    params = {"w": jnp.ones((2, 3))}
    tx = gx.scale_by_muon(weight_dimension_numbers={"w": gx.MuonDimensionNumbers(0, 2)})
    with pytest.raises(ValueError, match=r"scale_by_muon: the update at \['w'\] has rank 2, but "
                                         r"its dimension numbers .* outside \[-2, 2\)"):
        tx.update(params, tx.init(params))
    tx = gx.scale_by_muon(weight_dimension_numbers={"w": gx.MuonDimensionNumbers(-1, 1)})
    with pytest.raises(ValueError, match="same axis as reduction and output"):
        tx.update(params, tx.init(params))


@pytest.mark.parametrize("kwargs, error, match", [
    ({"ns_coeffs": (1.0, 2.0)}, ValueError, r"ns_coeffs must have shape \(3,\) or \(n, 3\)"),
    ({"ns_coeffs": optax_muon._DION_NS_COEFFS, "ns_steps": 4}, ValueError, "more than ns_steps=4"),
    ({"ns_coeffs": "quintic"}, ValueError, "preset name"),
    ({"preconditioning": "svd"}, ValueError, "preconditioning must be one of"),
    ({"weight_dimension_numbers": {"w": (0, 1)}}, TypeError, "weight_dimension_numbers must be"),
    ({"weight_dimension_numbers": gx.MuonDimensionNumbers(0, 0)}, ValueError, "disjoint"),
])
def test_bad_arguments_name_scale_by_muon(kwargs, error, match):
    with pytest.raises(error, match="scale_by_muon: .*" + match):
        gx.scale_by_muon(**kwargs)


@pytest.mark.parametrize("make", [
    lambda: gx.scale_by_muon(), lambda: gx.scale_by_shape(), lambda: gx.muon(1e-3)])
def test_flat_tree_is_refused_pointing_to_the_per_leaf_tree(make):
    params = {"w": jnp.ones((3, 4)), "v": jnp.ones((4, 2))}
    flat = gx.flat_tree(params)
    tx = make()
    with pytest.raises(TypeError, match=r"scale_by_(muon|shape): got a gx.flat_tree buffer as "
                                        r"params, .*needs the leaf's shape.*Use the per-leaf tree"):
        tx.init(flat)
    with pytest.raises(TypeError, match=r"gx.flat_tree buffer as updates.*2-D shape"):
        jax.jit(tx.update)(flat.ravel(params), tx.init(params), flat)


@pytest.mark.parametrize("adaptive", [False, True])
def test_complex_leaves_match_optax(adaptive):
    rng = np.random.default_rng(6)

    def complex_tree():
        return {"c": jnp.asarray(rng.normal(size=(4, 3)) + 1j * rng.normal(size=(4, 3)),
                                 jnp.complex64),
                "r": jnp.asarray(rng.normal(size=(3, 5)), jnp.float32)}

    params, grads_seq = complex_tree(), [complex_tree() for _ in range(10)]
    ours, state = run(gx.scale_by_muon(adaptive=adaptive), params, grads_seq)
    theirs, optax_state = run(optax.contrib.scale_by_muon(
        adaptive=adaptive, weight_dimension_numbers=lambda u: {"c": None, "r": None}),
        params, grads_seq, standard=True)
    for step, (mine, ref) in enumerate(zip(ours, theirs)):
        assert mine["c"].dtype == jnp.complex64
        for a, e in zip(jax.tree.leaves(mine), jax.tree.leaves(ref)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(e), rtol=2e-5, atol=2e-6,
                                       err_msg=f"step {step}")
    np.testing.assert_allclose(state.mu["c"], optax_state.mu["c"], rtol=1e-5, atol=1e-7)
