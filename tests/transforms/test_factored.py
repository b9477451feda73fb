"""scale_by_factored_rms (Adafactor's second moments) against optax, live.

* 40 jitted steps on a tree holding a factored (256, 130) matrix, a factored
  (3, 200, 150) tensor (its two largest axes are the last two, in the order
  (150, 200)), a (128, 128) matrix (ties broken as ``np.argsort`` breaks them),
  unfactored small matrices, vectors, a scalar, a zero-size leaf and ``None``:
  updates at every step and the final state, field by field, match
  ``optax.scale_by_factored_rms`` to float32 precision, for several argument
  sets (``factored=False``, another ``min_dim_size_to_factor`` and ``decay_rate``,
  a capped ``decay_rate_fn``); bfloat16 params against optax in float32 to
  bfloat16 precision; complex64 leaves too.
* The rule that picks the factored axes equals optax's ``_factored_dims`` on
  many shapes; ``adafactor_decay_rate`` equals optax's ``_decay_rate_pow``
  bit for bit.
* ``step_offset``: from a count past the offset both agree; before it optax's
  decay is NaN and ours is 0 (documented), checked against NumPy.
* A `gx.flat_tree` buffer raises a `TypeError` naming the transformation and
  pointing to the per-leaf tree; a gradient of another shape raises naming
  both shapes.
* On 8 CPU devices (a subprocess): each statistic is sharded like its leaf
  without the reduced axis, eagerly and as ``gx.state_shardings`` derives it;
  the jitted update all-reduces, gathers nothing, keeps the state where it is
  and equals the one-device update.
"""

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from optax._src import factorized as optax_factorized

import gradxform as gx
from tests.helpers import (
    assert_trees_close,
    cast_tree,
    gradient_stream,
    random_params,
    run_optax,
    run_updates,
)

STEPS = 40
SHAPES = {
    "wide": (256, 130),
    "deep": (3, 200, 150),
    "tied": (128, 128),
    "blocks": [(4, 3), None, (7,)],
    "pair": ((130,), {"small": (2, 300), "empty": (0,)}),
    "scalar": (),
}


def _capped(step, decay_rate):
    """Zhai et al.'s variant: Adafactor's decay, capped."""
    return jnp.minimum(optax_factorized._decay_rate_pow(step, 0.8), decay_rate)


CASES = [
    pytest.param({}, id="defaults"),
    pytest.param({"factored": False}, id="unfactored"),
    pytest.param({"decay_rate": 0.5, "epsilon": 1e-20, "min_dim_size_to_factor": 64},
                 id="rates"),
    pytest.param({"min_dim_size_to_factor": 2}, id="small-factored"),
    pytest.param({"decay_rate": 0.99, "decay_rate_fn": _capped}, id="capped-decay"),
]


def _params(dtype=jnp.float32, seed=0):
    return random_params(seed, dtype, SHAPES)


def _compare(kwargs, dtype, rtol, atol, state_rtol, grads_transform=None):
    params = _params(dtype)
    grads_seq = gradient_stream(params, STEPS, seed=1)
    if grads_transform is not None:
        params = grads_transform(params)
        grads_seq = [grads_transform(g) for g in grads_seq]
    ours, state = run_updates(gx.scale_by_factored_rms(**kwargs), params, grads_seq)
    wide = jnp.complex64 if jnp.iscomplexobj(jax.tree.leaves(params)[0]) else jnp.float32
    theirs, optax_state = run_optax(
        optax.scale_by_factored_rms(**kwargs), cast_tree(params, wide),
        [cast_tree(g, wide) for g in grads_seq],
    )
    for step, (mine, ref, grads) in enumerate(zip(ours, theirs, grads_seq)):
        for leaf, g in zip(jax.tree.leaves(mine), jax.tree.leaves(grads)):
            assert leaf.dtype == g.dtype
        if wide == jnp.complex64:
            mine, ref = (jax.tree.map(lambda x: jnp.stack([x.real, x.imag]), t) for t in (mine, ref))
        assert_trees_close(mine, ref, rtol, atol, f"step {step}")
    assert int(state.count) == int(optax_state.count) == STEPS
    for field in ("v_row", "v_col", "v"):
        # optax stores a complex leaf's statistics in its complex dtype, with no imaginary part.
        expected = jax.tree.map(jnp.real, getattr(optax_state, field))
        assert_trees_close(getattr(state, field), expected, state_rtol, 0.0, field)
    return state


@pytest.mark.parametrize("kwargs", CASES)
def test_matches_optax_in_float32(kwargs):
    state = _compare(kwargs, jnp.float32, 1e-5, 1e-6, 1e-5)
    shapes = jax.tree.map(jnp.shape, state)
    if kwargs.get("factored", True) and "min_dim_size_to_factor" not in kwargs:
        # Both branches ran: (256, 130) and (3, 200, 150) factored, the rest not.
        assert shapes.v_row["wide"] == (130,) and shapes.v_col["wide"] == (256,)
        assert shapes.v_row["deep"] == (3, 150) and shapes.v_col["deep"] == (3, 200)
        assert shapes.v["wide"] == shapes.v["deep"] == (1,)
        assert shapes.v["blocks"][2] == (7,) and shapes.v["scalar"] == ()
        assert shapes.v_row["scalar"] == shapes.v_col["blocks"][0] == (1,)


@pytest.mark.parametrize("kwargs", CASES[:2])
def test_matches_optax_in_bfloat16(kwargs):
    """bfloat16 params, gradients and statistics against optax on the same values in float32."""
    state = _compare(kwargs, jnp.bfloat16, 2e-2, 2e-2, 3e-2)
    assert {x.dtype for x in jax.tree.leaves(state)[1:]} == {jnp.dtype(jnp.bfloat16)}


def test_matches_optax_on_complex_leaves():
    """|g|**2 accumulates; the statistics are real here, complex (imaginary part 0) in optax."""

    def to_complex(tree):
        return jax.tree.map(lambda x: jax.lax.complex(x, 0.5 * (x[::-1] if x.ndim else x)), tree)

    state = _compare({}, jnp.float32, 1e-5, 1e-6, 1e-5, grads_transform=to_complex)
    assert {x.dtype for x in jax.tree.leaves(state)[1:]} == {jnp.dtype(jnp.float32)}


def test_factored_axes_are_optax_s():
    rng = np.random.default_rng(0)
    shapes = [(), (5,), (128, 128), (127, 128), (128, 127), (3, 200, 150), (150, 3, 200),
              (200, 200, 3), (1, 130, 1, 130), (130, 130, 130)]
    shapes += [tuple(int(n) for n in rng.integers(1, 300, size=rank)) for rank in (2, 3, 4)
               for _ in range(20)]
    from gradxform.transforms.factored import _factored_dims

    for shape in shapes:
        for factored in (True, False):
            for minimum in (1, 128, 200):
                assert _factored_dims(shape, factored, minimum) == (
                    optax_factorized._factored_dims(shape, factored, minimum)), shape


def test_decay_rate_is_optax_s_bit_for_bit():
    steps = jnp.arange(0, 5000, dtype=jnp.int32)
    for exponent in (0.8, 0.5, 1.0):
        ours = jax.vmap(lambda t: gx.adafactor_decay_rate(t, exponent))(steps)
        with jax.numpy_dtype_promotion("standard"):
            theirs = jax.vmap(lambda t: optax_factorized._decay_rate_pow(t, exponent))(steps)
        np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs))
    assert float(gx.adafactor_decay_rate(0)) == 0.0
    np.testing.assert_allclose(float(gx.adafactor_decay_rate(9, 0.8)), 1 - 10**-0.8, rtol=1e-6)


@pytest.mark.parametrize("step, error", [(-1, ValueError), (2.0, TypeError),
                                         (jnp.ones(2, jnp.int32), TypeError),
                                         (jnp.float32(1), TypeError)])
def test_decay_rate_rejects_a_bad_step(step, error):
    with pytest.raises(error, match="adafactor_decay_rate: step must be"):
        gx.adafactor_decay_rate(step)


def test_step_offset_matches_optax_past_the_offset():
    offset, start = 5, 7
    params = _params()
    grads_seq = gradient_stream(params, STEPS, seed=2)
    ours_tx = gx.scale_by_factored_rms(step_offset=offset, decay_rate=0.7)
    theirs_tx = optax.scale_by_factored_rms(step_offset=offset, decay_rate=0.7)
    state = ours_tx.init(params)._replace(count=jnp.int32(start))
    optax_state = theirs_tx.init(params)._replace(count=jnp.int32(start))
    update, optax_update = jax.jit(ours_tx.update), jax.jit(theirs_tx.update)
    for step, grads in enumerate(grads_seq):
        ours, state = update(grads, state, params)
        with jax.numpy_dtype_promotion("standard"):
            theirs, optax_state = optax_update(grads, optax_state, params)
        assert_trees_close(ours, theirs, 1e-5, 1e-6, f"step {step}")
    assert_trees_close(tuple(state), tuple(optax_state), 1e-5, 0.0, "state")


@pytest.mark.allows_nan
def test_before_the_offset_the_decay_is_zero_where_optax_s_is_nan():
    params = {"w": jnp.ones((4, 3)), "m": jnp.ones((130, 140))}
    grads = jax.tree.map(lambda p: jnp.asarray(
        np.random.default_rng(3).standard_normal(p.shape), jnp.float32), params)
    tx = gx.scale_by_factored_rms(step_offset=3)
    updates, state = tx.update(grads, tx.init(params))
    eps = 1e-30
    squares = np.asarray(grads["w"], np.float64) ** 2 + eps
    np.testing.assert_allclose(state.v["w"], squares, rtol=1e-6)  # decay 0: v = g**2 + eps
    np.testing.assert_allclose(updates["w"], grads["w"] / np.sqrt(squares), rtol=1e-6)
    m = np.asarray(grads["m"], np.float64) ** 2 + eps
    np.testing.assert_allclose(state.v_row["m"], m.mean(axis=1), rtol=1e-5)
    np.testing.assert_allclose(state.v_col["m"], m.mean(axis=0), rtol=1e-5)
    reference = optax.scale_by_factored_rms(step_offset=3)
    with jax.numpy_dtype_promotion("standard"):
        theirs, _ = reference.update(grads, reference.init(params), params)
    assert np.all(np.isnan(theirs["w"])) and np.all(np.isnan(theirs["m"]))


def test_decay_rate_fn_must_return_a_scalar():
    tx = gx.scale_by_factored_rms(decay_rate_fn=lambda step, rate: jnp.full(2, 0.5))
    params = {"w": jnp.ones(3)}
    with pytest.raises(ValueError, match=r"scale_by_factored_rms: decay_rate_fn must return one "
                                         r"number \(shape \(\)\), got shape \(2,\)"):
        tx.update(params, tx.init(params))


@pytest.mark.parametrize("make", [gx.scale_by_factored_rms, lambda: gx.adafactor(1e-2)],
                         ids=["scale_by_factored_rms", "adafactor"])
def test_flat_tree_is_refused_naming_the_transformation(make):
    params = _params()
    flat = gx.flat_tree(params)
    tx = make()
    pattern = (r"scale_by_factored_rms: got a gx.flat_tree buffer as params, .*needs the "
               r"leaf's shape.*Use the per-leaf tree")
    with pytest.raises(TypeError, match=pattern):
        tx.init(flat)
    state = tx.init(params)
    with pytest.raises(TypeError, match=r"(scale_by_factored_rms|adafactor): .*flat_tree"):
        jax.jit(tx.update)(flat.ravel(params), state, params)


def test_a_gradient_of_another_shape_names_both_shapes():
    params = {"m": jnp.ones((256, 130))}
    tx = gx.scale_by_factored_rms()
    with pytest.raises(ValueError, match=r"scale_by_factored_rms: the update at \['m'\] has shape "
                                         r"\(256, 131\), but .*v_row of shape \(130,\)"):
        jax.jit(tx.update)({"m": jnp.ones((256, 131))}, tx.init(params))


def test_init_under_eval_shape_and_on_abstract_params():
    params = _params()
    tx = gx.scale_by_factored_rms()
    abstract = jax.tree.map(lambda p: jax.ShapeDtypeStruct(p.shape, p.dtype), params)
    for state in (jax.eval_shape(tx.init, params), tx.init(abstract)):
        assert jax.tree.map(lambda x: (x.shape, x.dtype), state) == jax.tree.map(
            lambda x: (x.shape, x.dtype), tx.init(params))


_SHARDED_CHECK = r'''
import re
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
import gradxform as gx

assert jax.device_count() == 8
rng = np.random.default_rng(0)
SPECS = {"m": ((16, 8), P("data", "model")), "t": ((2, 8, 12), P(None, "model", "data")),
         "v": ((8,), P("model")), "s": ((), P())}
host = lambda seed: {k: np.random.default_rng(seed).standard_normal(s).astype(np.float32)
                     for k, (s, _) in SPECS.items()}
# Each statistic: its leaf's spec without the reduced axis (placeholders replicated).
WANT = {"v_row": {"m": P("model"), "t": P(None, "model"), "v": P(None), "s": P(None)},
        "v_col": {"m": P("data"), "t": P(None, "data"), "v": P(None), "s": P(None)},
        "v": {"m": P(None), "t": P(None), "v": P("model"), "s": P()}}
tx = gx.scale_by_factored_rms(min_dim_size_to_factor=4)
one = jax.jit(tx.update)
state1 = tx.init({k: jnp.asarray(v) for k, v in host(0).items()})
want = []
for seed in (1, 2, 3):
    u, state1 = one({k: jnp.asarray(v) for k, v in host(seed).items()}, state1)
    want.append((u, state1))
for axis_type in (AxisType.Auto, AxisType.Explicit):
    mesh = jax.make_mesh((4, 2), ("data", "model"), axis_types=(axis_type, axis_type))
    put = lambda tree: {k: jax.device_put(v, NamedSharding(mesh, SPECS[k][1])) for k, v in tree.items()}
    params = put(host(0))
    eager, derived = tx.init(params), gx.state_shardings(tx, params)
    for field, specs in WANT.items():
        for key, spec in specs.items():
            leaf, sharding = getattr(eager, field)[key], getattr(derived, field)[key]
            expected = NamedSharding(mesh, spec)
            assert leaf.sharding.is_equivalent_to(expected, leaf.ndim), (field, key, leaf.sharding)
            assert sharding.is_equivalent_to(expected, leaf.ndim), (field, key, sharding)
    with jax.set_mesh(mesh):
        state = jax.jit(tx.init, out_shardings=derived)(params)
        step = jax.jit(tx.update)
        text = step.lower(put(host(1)), state).compile().as_text()
        assert not re.findall(r"\ball-gather", text), "gathers"
        assert re.findall(r"\ball-reduce", text), "the means are all-reduces"
        for seed, (want_u, want_state) in zip((1, 2, 3), want):
            u, state = step(put(host(seed)), state)
            for a, b in zip(jax.tree.leaves((u, state)), jax.tree.leaves((want_u, want_state))):
                np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-6, atol=1e-7)
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(derived)):
        assert a.sharding.is_equivalent_to(b, a.ndim), (a.sharding, b)
print("OK")
'''


def test_sharded_statistics_on_8_devices_gather_nothing():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
               JAX_PLATFORMS="cpu")
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(_SHARDED_CHECK)], env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0 and "OK" in result.stdout, result.stderr[-3000:]
