"""scale_by_sm3 against optax, live, and against a float64 NumPy SM3 where optax cannot run.

* 40 jitted steps on a tree with a (256, 130) matrix, a (3, 20, 15) tensor,
  vectors (one of them empty) and ``None``: updates at every step and the
  final ``mu`` (one vector per axis) and ``nu`` match ``optax.scale_by_sm3``
  to float32 precision, for the defaults (SM3-II, ``b2=1``), a decaying
  ``b2 < 1`` and no momentum; bfloat16 params against optax in float32.
* Where optax fails (0-d leaves, empty leaves of rank >= 2, complex leaves),
  the rule is checked against SM3 written in float64 NumPy; a 0-d leaf is
  SM3 on a one-element vector, checked against optax on that vector.
* A `gx.flat_tree` buffer raises a `TypeError` naming the transformation.
* On 8 CPU devices (a subprocess): each accumulator is sharded like its axis
  of the leaf; the jitted update gathers nothing and equals the one-device one.
"""

import functools
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

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
SHAPES = {"wide": (256, 130), "deep": (3, 20, 15), "blocks": [(4, 3), None, (7,)],
          "pair": ((5,), {"empty": (0,)})}
CASES = [
    pytest.param({}, id="defaults"),
    pytest.param({"b1": 0.5, "b2": 0.99, "eps": 1e-3}, id="decaying"),
    pytest.param({"b1": 0.0, "b2": 1.0, "eps": 0.0}, id="no-momentum"),
]


def _compare(kwargs, dtype, rtol, atol):
    params = random_params(0, dtype, SHAPES)
    grads_seq = gradient_stream(params, STEPS, seed=1)
    ours, state = run_updates(gx.scale_by_sm3(**kwargs), params, grads_seq)
    theirs, optax_state = run_optax(
        optax.scale_by_sm3(**kwargs), cast_tree(params, jnp.float32),
        [cast_tree(g, jnp.float32) for g in grads_seq],
    )
    for step, (mine, ref, grads) in enumerate(zip(ours, theirs, grads_seq)):
        assert {x.dtype for x in jax.tree.leaves(mine)} == {jnp.dtype(dtype)}
        assert_trees_close(mine, ref, rtol, atol, f"step {step}")
    assert_trees_close(state.mu, optax_state.mu, rtol, 0.0, "mu")
    assert_trees_close(state.nu, optax_state.nu, rtol, atol, "nu")
    return state


@pytest.mark.parametrize("kwargs", CASES)
def test_matches_optax_in_float32(kwargs):
    state = _compare(kwargs, jnp.float32, 1e-5, 1e-6)
    shapes = jax.tree.map(jnp.shape, state.mu)
    assert shapes["wide"] == [(256,), (130,)] and shapes["deep"] == [(3,), (20,), (15,)]
    assert shapes["blocks"][2] == [(7,)] and shapes["pair"][1]["empty"] == [(0,)]


def test_matches_optax_in_bfloat16():
    state = _compare({}, jnp.bfloat16, 2e-2, 2e-2)
    assert {x.dtype for x in jax.tree.leaves(state)} == {jnp.dtype(jnp.bfloat16)}


def sm3_reference(grads_seq, b1=0.9, b2=1.0, eps=1e-8):
    """SM3 in float64 NumPy for one leaf (a 0-d leaf as a one-element vector); the updates."""
    shape = np.shape(grads_seq[0])
    rank = max(len(shape), 1)
    mu = [np.zeros(shape)] if len(shape) < 2 else [np.zeros(n) for n in shape]
    nu = np.zeros(shape, np.result_type(grads_seq[0], np.float64))
    weight = 1.0 if b2 == 1.0 else 1 - b2
    outputs = []
    for g in grads_seq:
        g = np.asarray(g).astype(nu.dtype)
        if len(shape) < 2:
            previous = mu[0]
        else:
            covers = [m.reshape([n if j == i else 1 for j, n in enumerate(shape)])
                      for i, m in enumerate(mu)]
            previous = functools.reduce(np.minimum, covers)
        accum = weight * np.abs(g) ** 2 + b2 * previous
        inverse = np.where(accum > 0, 1 / np.sqrt(accum + eps), 0.0)
        nu = (1 - b1) * g * inverse + b1 * nu
        if len(shape) < 2:
            mu = [accum]
        else:
            mu = [np.max(accum, axis=tuple(j for j in range(rank) if j != i), initial=0)
                  for i in range(rank)]
        outputs.append(nu)
    return outputs, mu


@pytest.mark.parametrize("kwargs", [{}, {"b1": 0.5, "b2": 0.99, "eps": 1e-3}])
def test_where_optax_fails_the_rule_is_numpy_s(kwargs):
    rng = np.random.default_rng(0)
    leaves = {
        "scalar": [np.float32(rng.standard_normal()) for _ in range(STEPS)],
        "empty_matrix": [np.zeros((0, 3), np.float32)] * STEPS,
        "complex": [(rng.standard_normal((6, 5)) + 1j * rng.standard_normal((6, 5)))
                    .astype(np.complex64) for _ in range(STEPS)],
    }
    grads_seq = [{k: jnp.asarray(v[t]) for k, v in leaves.items()} for t in range(STEPS)]
    ours, state = run_updates(gx.scale_by_sm3(**kwargs), grads_seq[0], grads_seq)
    for key, stream in leaves.items():
        expected, mu = sm3_reference(stream, **kwargs)
        for step, (mine, want) in enumerate(zip(ours, expected)):
            np.testing.assert_allclose(mine[key], want, rtol=1e-5, atol=1e-6,
                                       err_msg=f"{key}, step {step}")
        for got, want in zip(state.mu[key], mu):
            np.testing.assert_allclose(got, want, rtol=1e-5, err_msg=key)
    assert [m.shape for m in state.mu["scalar"]] == [()]
    assert [m.shape for m in state.mu["empty_matrix"]] == [(0,), (3,)]
    assert state.mu["complex"][0].dtype == jnp.float32 and state.nu["complex"].dtype == jnp.complex64
    with pytest.raises(IndexError):  # why optax is not the reference here
        optax.scale_by_sm3().update({"s": jnp.float32(1)}, optax.scale_by_sm3().init(
            {"s": jnp.float32(1)}))


def test_a_scalar_leaf_is_sm3_on_a_one_element_vector():
    params = {"s": jnp.float32(0.0)}
    grads_seq = [{"s": g["s"]} for g in gradient_stream(
        {"s": jnp.zeros((), jnp.float32)}, STEPS, seed=4)]
    ours, _ = run_updates(gx.scale_by_sm3(b2=0.9), params, grads_seq)
    theirs, _ = run_optax(optax.scale_by_sm3(b2=0.9), {"s": jnp.zeros(1)},
                          [{"s": g["s"][None]} for g in grads_seq])
    for mine, ref in zip(ours, theirs):
        np.testing.assert_allclose(mine["s"], ref["s"][0], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("make", [gx.scale_by_sm3, lambda: gx.sm3(0.1)], ids=["scale_by_sm3", "sm3"])
def test_flat_tree_is_refused_naming_the_transformation(make):
    params = random_params(0, jnp.float32, SHAPES)
    flat = gx.flat_tree(params)
    tx = make()
    with pytest.raises(TypeError, match=r"scale_by_sm3: got a gx.flat_tree buffer as params, "
                                        r".*needs the leaf's shape.*Use the per-leaf tree"):
        tx.init(flat)
    with pytest.raises(TypeError, match=r"(scale_by_sm3|sm3): .*flat_tree"):
        jax.jit(tx.update)(flat.ravel(params), tx.init(params), params)


_SHARDED_CHECK = r'''
import re
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
import gradxform as gx

assert jax.device_count() == 8
SPECS = {"m": ((16, 8), P("data", "model")), "t": ((2, 8, 12), P(None, "model", "data")),
         "v": ((8,), P("model")), "s": ((), P())}
host = lambda seed: {k: np.random.default_rng(seed).standard_normal(s).astype(np.float32)
                     for k, (s, _) in SPECS.items()}
WANT = {"m": [P("data"), P("model")], "t": [P(None), P("model"), P("data")], "v": [P("model")],
        "s": [P()]}
tx = gx.scale_by_sm3(b2=0.99)
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
    for key, specs in WANT.items():
        for leaf, sharding, spec in zip(eager.mu[key], derived.mu[key], specs):
            expected = NamedSharding(mesh, spec)
            assert leaf.sharding.is_equivalent_to(expected, leaf.ndim), (key, leaf.sharding)
            assert sharding.is_equivalent_to(expected, leaf.ndim), (key, sharding)
    with jax.set_mesh(mesh):
        state = jax.jit(tx.init, out_shardings=derived)(params)
        step = jax.jit(tx.update)
        text = step.lower(put(host(1)), state).compile().as_text()
        assert not re.findall(r"\ball-gather", text), "gathers"
        for seed, (want_u, want_state) in zip((1, 2, 3), want):
            u, state = step(put(host(seed)), state)
            for a, b in zip(jax.tree.leaves((u, state)), jax.tree.leaves((want_u, want_state))):
                np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-6, atol=1e-7)
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(derived)):
        assert a.sharding.is_equivalent_to(b, a.ndim), (a.sharding, b)
print("OK")
'''


def test_sharded_accumulators_on_8_devices_gather_nothing():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
               JAX_PLATFORMS="cpu")
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(_SHARDED_CHECK)], env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0 and "OK" in result.stdout, result.stderr[-3000:]
