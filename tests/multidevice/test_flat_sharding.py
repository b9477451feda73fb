"""Flat parameters on 8 devices: sharded leaves stay arrays of their own, never gathered.

``gx.flat_tree`` keeps every leaf that is sharded over several devices as its own
array, with its sharding, and packs the replicated leaves into per-dtype
buffers. A jitted ``adam`` step (alone and after ``clip_by_global_norm``, whose
norm needs every shard) keeps the sharded leaves' shardings in the params and
in the state, its compiled HLO has no all-gather (nor has laying out sharded
gradients with ``ravel``, nor the gradient through ``unravel``), and its
results equal the per-leaf step on one device.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

import gradxform as gx
from tests.multidevice.meshes import make_mesh, on_one_device

# (shape, spec, dtype): two leaves sharded (one over both axes, one over "model"
# only, replicated over "data"), the others replicated.
SPECS = {
    "embedding": ((16, 4), P("data", "model"), np.float32),
    "wide": {"kernel": ((4, 8), P(None, "model"), np.float32), "bias": ((8,), P(), np.float32)},
    "dense": {"kernel": ((4, 3), P(), np.float32), "bias": ((3,), P(), np.float32)},
    "norm": ((3,), P(), np.float32),
    "half": ((2, 3), P(), jnp.bfloat16),
}
SHARDED = ("embedding", "wide/kernel")
STEPS = 3


def _is_spec(x):
    return isinstance(x, tuple) and len(x) == 3 and isinstance(x[1], P)


def _host_tree(seed):
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda s: rng.standard_normal(s[0]).astype(s[2]), SPECS, is_leaf=_is_spec)


def _on_mesh(tree, mesh):
    shardings = jax.tree.map(lambda s: NamedSharding(mesh, s[1]), SPECS, is_leaf=_is_spec)
    return jax.device_put(tree, shardings)


def _gather_count(compiled_text: str) -> int:
    """All-gathers in compiled HLO: plain, combined (tuple-shaped) or asynchronous (-start)."""
    return len(re.findall(r"\ball-gather(?:-start)?\(", compiled_text))


def _by_name(flat):
    return {spec.name: (spec, buffer) for spec, buffer in zip(flat.layout.buffers, flat.buffers)}


def _assert_sharded_leaves_in_place(flat, params, where):
    """Each sharded leaf is a kept buffer with its param's sharding; the rest replicated."""
    buffers = _by_name(flat)
    assert sorted(name for name, (spec, _) in buffers.items() if spec.kept) == sorted(SHARDED), where
    for name in SHARDED:
        param = params["embedding"] if name == "embedding" else params["wide"]["kernel"]
        buffer = buffers[name][1]
        assert buffer.shape == param.shape, (where, name)
        assert buffer.sharding.is_equivalent_to(param.sharding, buffer.ndim), (where, name, buffer.sharding)
        assert not buffer.sharding.is_fully_replicated, (where, name)
    for name, (spec, buffer) in buffers.items():
        if not spec.kept:
            assert buffer.ndim == 1 and buffer.sharding.is_fully_replicated, (where, name)


@pytest.mark.parametrize("axis_type", [AxisType.Auto, AxisType.Explicit], ids=["auto", "explicit"])
def test_flat_tree_keeps_sharded_leaves_and_buffers_the_replicated_ones(axis_type):
    mesh = make_mesh(axis_type)
    params = _on_mesh(_host_tree(0), mesh)
    flat = gx.flat_tree(params)
    _assert_sharded_leaves_in_place(flat, params, "flat_tree")
    assert sorted(_by_name(flat)) == sorted(["<float32>", "<bfloat16>", *SHARDED])
    assert _by_name(flat)["<float32>"][1].size == 8 + 4 * 3 + 3 + 3
    for got, want in zip(jax.tree.leaves(flat.unravel()), jax.tree.leaves(_host_tree(0))):
        np.testing.assert_array_equal(np.asarray(got), want)
    grads = flat.ravel(_on_mesh(_host_tree(1), mesh))
    _assert_sharded_leaves_in_place(grads, params, "ravel")


def _one_device_run(tx):
    """The per-leaf steps on one device: the reference."""
    params = on_one_device(_host_tree(0))
    step = jax.jit(_train_step(tx))
    state = tx.init(params)
    for seed in range(1, STEPS + 1):
        params, state = step(params, state, on_one_device(_host_tree(seed)))
    return params, state


def _train_step(tx):
    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return gx.apply_updates(params, updates), state

    return step


TRANSFORMS = {
    "adam": lambda: gx.adam(1e-2),
    "clip_then_adam": lambda: gx.chain(gx.clip_by_global_norm(1.0), gx.adam(1e-2)),
}


@pytest.mark.parametrize("axis_type", [AxisType.Auto, AxisType.Explicit], ids=["auto", "explicit"])
@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_flat_step_keeps_shardings_gathers_nothing_and_equals_one_device(name, axis_type):
    mesh = make_mesh(axis_type)
    tx = TRANSFORMS[name]()
    params = _on_mesh(_host_tree(0), mesh)
    flat = gx.flat_tree(params)
    want_params, want_state = _one_device_run(tx)

    with jax.set_mesh(mesh):
        eager_state = tx.init(flat)
        state = jax.jit(tx.init, out_shardings=gx.state_shardings(tx, flat))(flat)
        for moments in (gx.tree_get(eager_state, "mu"), gx.tree_get(state, "nu")):
            _assert_sharded_leaves_in_place(moments, params, "init")
        step = jax.jit(_train_step(tx))
        sharded_grads = _on_mesh(_host_tree(1), mesh)
        grads = flat.ravel(sharded_grads)
        assert _gather_count(step.lower(flat, state, grads).compile().as_text()) == 0
        # Were a sharded leaf packed into a buffer, laying out the gradients would gather it.
        assert _gather_count(jax.jit(flat.ravel).lower(sharded_grads).compile().as_text()) == 0
        for seed in range(1, STEPS + 1):
            flat, state = step(flat, state, flat.ravel(_on_mesh(_host_tree(seed), mesh)))
            # With fewer cores than fake devices, wait for each step (see test_sharding.py).
            jax.block_until_ready((flat, state))

    _assert_sharded_leaves_in_place(flat, params, "params after the steps")
    for moment in ("mu", "nu"):
        _assert_sharded_leaves_in_place(gx.tree_get(state, moment), params, f"{moment} after the steps")
        got = gx.tree_get(state, moment).unravel()
        for a, e in zip(jax.tree.leaves(got), jax.tree.leaves(gx.tree_get(want_state, moment))):
            np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(e, np.float64),
                                       rtol=2e-6, atol=1e-9)
    for a, e in zip(jax.tree.leaves(flat.unravel()), jax.tree.leaves(want_params)):
        tolerance = 8e-3 if a.dtype == jnp.bfloat16 else 2e-6
        np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(e, np.float64),
                                   rtol=tolerance, atol=1e-7)


def test_gradient_through_unravel_keeps_the_sharded_leaves():
    """On a mesh with explicit axes a gradient has its primal's sharding: so do the kept leaves'."""
    mesh = make_mesh(AxisType.Explicit)
    params = _on_mesh(_host_tree(0), mesh)
    flat = gx.flat_tree(params)

    def loss(tree):
        return (jnp.sum(jnp.tanh(tree["embedding"])) + jnp.sum(tree["wide"]["kernel"] ** 3)
                + jnp.sum(tree["wide"]["bias"] * tree["norm"][0]) + jnp.sum(tree["dense"]["kernel"] ** 2)
                + jnp.sum(tree["half"].astype(jnp.float32)))

    with jax.set_mesh(mesh):
        gradient = jax.jit(jax.grad(lambda f: loss(f.unravel())))
        assert _gather_count(gradient.lower(flat).compile().as_text()) == 0
        grads = gradient(flat)
    assert isinstance(grads, gx.FlatTree) and grads.layout == flat.layout
    _assert_sharded_leaves_in_place(grads, params, "gradient")
    want = jax.jit(jax.grad(loss))(on_one_device(_host_tree(0)))
    for a, e in zip(jax.tree.leaves(grads.unravel()), jax.tree.leaves(want)):
        np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(e, np.float64),
                                   rtol=1e-5, atol=1e-6)
