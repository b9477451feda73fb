"""L-BFGS's memory on 8 devices: each leaf's ``(memory_size, *leaf.shape)`` stack is sharded
like the leaf, its leading axis replicated, and stays so through a jitted update that
gathers nothing.

The generic sharding test (``test_sharding.py``) expects a state leaf that is not shaped
like a parameter to be replicated; these stacks are not, by design: replicating them would
gather every difference of the params at each step.
"""

import re

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P

import gradxform as gx
from tests.multidevice.meshes import host_tree, make_mesh, on_mesh


def _stacked_spec(param):
    return P(None, *param.sharding.spec)


def test_memory_is_sharded_like_the_leaves_and_the_update_gathers_nothing():
    mesh = make_mesh()
    params = on_mesh(host_tree(0), mesh)
    tx = gx.scale_by_lbfgs(memory_size=4)
    state = tx.init(params)
    derived = gx.state_shardings(tx, params)
    kernel = params["dense"]["kernel"]
    for memory, shardings in ((state.diff_params_memory, derived.diff_params_memory),
                              (state.diff_updates_memory, derived.diff_updates_memory)):
        leaf = memory["dense"]["kernel"]
        assert leaf.shape == (4, 8, 4)
        want = NamedSharding(mesh, _stacked_spec(kernel))
        assert leaf.sharding.is_equivalent_to(want, 3)
        assert shardings["dense"]["kernel"].is_equivalent_to(want, 3)
    replicated = NamedSharding(mesh, P())
    assert state.weights_memory.sharding.is_equivalent_to(replicated, 1)
    assert derived.weights_memory.is_equivalent_to(replicated, 1)

    state = jax.jit(tx.init, out_shardings=derived)(params)
    update = jax.jit(tx.update)
    grads = on_mesh(host_tree(1), mesh)
    text = update.lower(grads, state, params).compile().as_text()
    assert not re.findall(r"\ball-gather(?:-start)?\(", text)
    for seed in (1, 2, 3):
        params = jax.tree.map(lambda p: p * 0.9, params)
        _, state = update(on_mesh(host_tree(seed), mesh), state, params)
    leaf = state.diff_updates_memory["dense"]["kernel"]
    assert leaf.sharding.is_equivalent_to(NamedSharding(mesh, _stacked_spec(kernel)), 3)
    assert bool(jnp.all(jnp.isfinite(leaf)))
