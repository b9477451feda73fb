"""Sharded optimizer state on 8 devices, for every transform in the property tests.

* ``tx.init`` run eagerly puts each state leaf made from a parameter on that
  parameter's sharding; ``gx.state_shardings`` derives the same shardings
  without computing anything, for ``jax.jit(tx.init, out_shardings=...)`` on a
  mesh with automatic axes, and on a mesh with explicit axes plain ``jit``
  already agrees with it.
* A sharded ``update`` equals the one-device update, keeps the state where it
  is, and its compiled HLO has no all-gather: no transform gathers a leaf
  (but Muon's orthogonalisation, which needs each matrix whole:
  ``GATHERS_WHOLE_MATRICES``).
* Global reductions (the global norm, the finiteness check) see every shard.
* ZeRO-1: the params replicated, the state split over the "data" axis; the
  update then gathers nothing, and a whole train step gathers only the new
  params, one all-gather per split leaf.
* ``optax.tree_utils.tree_map_params`` maps the params' shardings over masked,
  frozen and partitioned states to the shardings ``state_shardings`` derives.
"""

from __future__ import annotations

import functools
import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

import gradxform as gx
from tests.helpers import assert_trees_bitwise_equal
from tests.multidevice.meshes import host_tree, make_mesh, on_mesh, on_one_device, shardings
from tests.factories import FACTORIES, NAMES, sweep

STEPS = 3
# Transforms whose updates are (partly) constant zeros, made from no input.
CONSTANT_UPDATES = {"freeze", "set_to_zero"}
# Statistics reduced over some axes of a leaf (factored second moments, SM3's per-axis
# accumulators) are sharded like that leaf without those axes, not replicated; their
# exact shardings are checked in tests/transforms/test_factored.py and test_sm3.py.
REDUCED_STATISTICS = {
    "adafactor_everything", "scale_by_factored_rms_factoring", "scale_by_sm3",
    "scale_by_factored_rms_torch", "keras_adafactor", "torch_adafactor_everything",
    "scale_by_sm3_decaying", "sm3",
}
# L-BFGS stacks memory_size differences of each leaf on a new leading axis: sharded like the
# leaf with that axis replicated (tests/multidevice/test_lbfgs_sharding.py checks the specs).
STACKED_MEMORY = {"lbfgs", "scale_by_lbfgs"}
# Muon orthogonalises each matrix whole (its docstring says so): the Newton-Schulz products
# gather a sharded matrix's shards; its momentum, and every other leaf, stay sharded.
GATHERS_WHOLE_MATRICES = {"muon", "muon_everything", "scale_by_muon", "scale_by_muon_options",
                          "scale_by_muon_torch_form", "scale_by_muon_keras_form", "keras_muon",
                          "keras_muon_everything", "torch_muon"}


def _param_for(state_path, state_leaf, params):
    """The param a state leaf was made from: the longest params path ending its path, same shape."""
    best = None
    for path, param in jax.tree_util.tree_leaves_with_path(params):
        if len(path) <= len(state_path) and tuple(state_path[len(state_path) - len(path):]) == path:
            if param.shape == state_leaf.shape and (best is None or len(path) > len(best[0])):
                best = (path, param)
    return None if best is None else best[1]


def _assert_equivalent(actual, expected, ndim, where):
    assert actual.is_equivalent_to(expected, ndim), f"{where}: {actual} is not {expected}"


def _gather_count(compiled_text: str) -> int:
    """All-gathers in compiled HLO: plain, combined (tuple-shaped) or asynchronous (-start)."""
    return len(re.findall(r"\ball-gather(?:-start)?\(", compiled_text))


@pytest.mark.parametrize("name", NAMES)
def test_eager_init_shards_state_like_params_and_state_shardings_agrees(name):
    mesh = make_mesh()
    params = on_mesh(host_tree(0), mesh)
    tx = FACTORIES[name]()
    state = tx.init(params)
    derived = gx.state_shardings(tx, params)
    assert jax.tree.structure(derived) == jax.tree.structure(state)
    for (path, leaf), sharding in zip(jax.tree_util.tree_leaves_with_path(state), jax.tree.leaves(derived)):
        where = f"{name} state{jax.tree_util.keystr(path)}"
        param = _param_for(path, leaf, params)
        if param is not None:
            _assert_equivalent(leaf.sharding, param.sharding, leaf.ndim, where)
            _assert_equivalent(sharding, param.sharding, leaf.ndim, where)
        elif name not in REDUCED_STATISTICS | STACKED_MEMORY:  # replicated (a (1,) leaf's spec may be P(None))
            _assert_equivalent(sharding, NamedSharding(mesh, P()), leaf.ndim, where)
        if leaf.ndim:
            _assert_equivalent(leaf.sharding, sharding, leaf.ndim, where)


# An 8-device compile per swept entry (every constructor; every entry with GRADXFORM_FULL_SWEEP=1).
COMPILED = sweep(NAMES)


@pytest.mark.parametrize("name", COMPILED)
def test_jit_init_with_derived_out_shardings_equals_eager_init(name):
    mesh = make_mesh()
    params = on_mesh(host_tree(0), mesh)
    tx = FACTORIES[name]()
    derived = gx.state_shardings(tx, params)
    state = jax.jit(tx.init, out_shardings=derived)(params)
    for (path, leaf), sharding in zip(jax.tree_util.tree_leaves_with_path(state), jax.tree.leaves(derived)):
        _assert_equivalent(leaf.sharding, sharding, leaf.ndim, f"state{jax.tree_util.keystr(path)}")
    assert_trees_bitwise_equal(state, tx.init(params), name)


def test_plain_jit_init_on_an_auto_mesh_is_why_state_shardings_exists():
    mesh = make_mesh()
    params = on_mesh(host_tree(0), mesh)
    tx = gx.adam(1e-3)
    kernel_moment = jax.jit(tx.init)(params)[0].mu["dense"]["kernel"]
    helped = jax.jit(tx.init, out_shardings=gx.state_shardings(tx, params))(params)
    assert kernel_moment.sharding.is_fully_replicated  # JAX 0.10's choice for fresh zeros
    assert helped[0].mu["dense"]["kernel"].sharding.spec == P("data", "model")


@functools.lru_cache(maxsize=None)
def _one_device_run(name):
    tx = FACTORIES[name]()
    params = on_one_device(host_tree(0))
    step = jax.jit(tx.update)
    state = tx.init(params)
    results = []
    for seed in range(1, STEPS + 1):
        updates, state = step(on_one_device(host_tree(seed)), state, params)
        results.append((updates, state))
    return results


def _assert_state_close(state, want_state):
    """float32 to a few ulp; a bfloat16 leaf (moments stored in bfloat16) to one of its ulp,
    since a last-bit float32 difference can round it the other way."""
    for leaf, want in zip(jax.tree.leaves(state), jax.tree.leaves(want_state)):
        tolerance = 8e-3 if leaf.dtype == jnp.bfloat16 else 2e-6
        np.testing.assert_allclose(  # on the host: the two live on different devices
            np.asarray(leaf, np.float64), np.asarray(want, np.float64), rtol=tolerance, atol=1e-7
        )


# Auto axes for every swept entry; Explicit axes (where jit keeps the params' shardings, a
# property of the mesh rather than of the transform) for a third of them, spread over the list.
AXIS_CASES = [pytest.param(name, AxisType.Auto, id=f"{name}-auto") for name in COMPILED] + [
    pytest.param(name, AxisType.Explicit, id=f"{name}-explicit") for name in COMPILED[::3]]


@pytest.mark.parametrize("name, axis_type", AXIS_CASES)
def test_sharded_update_equals_one_device_and_gathers_nothing(name, axis_type):
    mesh = make_mesh(axis_type)
    tx = FACTORIES[name]()
    params = on_mesh(host_tree(0), mesh)
    derived = gx.state_shardings(tx, params)
    reference = _one_device_run(name)  # outside the mesh context: one device
    with jax.set_mesh(mesh):
        if axis_type == AxisType.Explicit:
            state = jax.jit(tx.init)(params)  # explicit axes: jit keeps the params' shardings
        else:
            state = jax.jit(tx.init, out_shardings=derived)(params)
        step = jax.jit(tx.update)
        grads = on_mesh(host_tree(1), mesh)
        gathers = _gather_count(step.lower(grads, state, params).compile().as_text())
        assert gathers == 0 or name in GATHERS_WHOLE_MATRICES, gathers
        for seed, (want_updates, want_state) in zip(range(1, STEPS + 1), reference):
            updates, state = step(on_mesh(host_tree(seed), mesh), state, params)
            chex.assert_trees_all_close(updates, want_updates, rtol=2e-6, atol=1e-7)
            _assert_state_close(state, want_state)
    for (path, leaf), sharding in zip(jax.tree_util.tree_leaves_with_path(state), jax.tree.leaves(derived)):
        _assert_equivalent(leaf.sharding, sharding, leaf.ndim, f"state{jax.tree_util.keystr(path)}")
    if name in CONSTANT_UPDATES and axis_type == AxisType.Auto:
        return  # constant zeros: an auto mesh lets the compiler place them (replicated)
    for (path, leaf), param in zip(jax.tree_util.tree_leaves_with_path(updates), jax.tree.leaves(params)):
        _assert_equivalent(leaf.sharding, param.sharding, leaf.ndim, f"updates{jax.tree_util.keystr(path)}")


def _true_global_norm(tree) -> float:
    return float(np.sqrt(sum(np.sum(np.asarray(x, np.float64) ** 2) for x in jax.tree.leaves(tree))))


def test_global_norms_see_every_shard():
    mesh = make_mesh()
    grads = on_mesh(host_tree(1), mesh)
    true_norm = _true_global_norm(host_tree(1))
    np.testing.assert_allclose(jax.jit(gx.tree_global_norm)(grads), true_norm, rtol=1e-6)

    tx = gx.chain(gx.record_global_norm(), gx.clip_by_global_norm(true_norm / 4))
    updates, state = jax.jit(tx.update)(grads, tx.init(grads))
    np.testing.assert_allclose(gx.tree_get(state, "global_norm"), true_norm, rtol=1e-6)
    np.testing.assert_allclose(_true_global_norm(updates), true_norm / 4, rtol=1e-6)
    chex.assert_trees_all_close(
        updates, jax.tree.map(lambda g: g / 4, host_tree(1)), rtol=1e-5, atol=1e-7
    )


@pytest.mark.parametrize("wrapper", ["apply_if_finite", "dynamic_loss_scale"])
def test_one_non_finite_element_on_one_device_skips_the_step_on_every_device(wrapper):
    mesh = make_mesh()
    params = on_mesh(host_tree(0), mesh)
    inner = gx.adam(1e-3)
    if wrapper == "apply_if_finite":
        tx = gx.apply_if_finite(inner, max_consecutive_errors=5)
    else:
        tx = gx.dynamic_loss_scale(inner, 2.0**4, 2)
    step = jax.jit(tx.update)
    state = jax.jit(tx.init, out_shardings=gx.state_shardings(tx, params))(params)
    _, state = jax.block_until_ready(step(on_mesh(host_tree(1), mesh), state, params))

    poisoned = host_tree(2)
    poisoned["dense"]["kernel"][7, 3] = np.nan  # a corner that one device of eight holds
    grads = on_mesh(poisoned, mesh)
    assert len(grads["dense"]["kernel"].sharding.device_set) == 8
    updates, new_state = step(grads, state, params)

    chex.assert_trees_all_equal(updates, jax.tree.map(jnp.zeros_like, updates))
    assert_trees_bitwise_equal(new_state.inner_state, state.inner_state, wrapper)
    if wrapper == "apply_if_finite":
        assert int(new_state.notfinite_count) == 1
    else:
        assert float(new_state.loss_scale) == float(state.loss_scale) / 2


ZERO_NAMES = ["adam", "chain", "adamw", "keras_adam_everything", "keras_adagrad_everything"]


@pytest.mark.parametrize("name", ZERO_NAMES)
def test_zero1_splits_the_state_over_data_and_trains_like_one_device(name):
    mesh = make_mesh()
    tx = FACTORIES[name]()
    params = on_mesh(host_tree(0), mesh, replicated=True)
    replicated = shardings(mesh, replicated=True)
    zero = gx.state_shardings(tx, params, zero_axis="data")
    state = jax.jit(tx.init, out_shardings=zero)(params)

    split = 0
    for path, leaf in jax.tree_util.tree_leaves_with_path(state):
        param = _param_for(path, leaf, params)
        if param is not None and any(size % 4 == 0 and size >= 4 for size in leaf.shape):
            assert "data" in jax.tree.leaves(tuple(leaf.sharding.spec)), jax.tree_util.keystr(path)
            assert leaf.addressable_shards[0].data.size * 4 == leaf.size
            split += 1
    assert split >= 3, "every kernel, bias and vector moment should be split"

    def train_step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return gx.apply_updates(params, updates), state

    sharded_step = jax.jit(train_step, out_shardings=(replicated, zero))
    update_zero = gx.state_shardings(gx.trace(0.9), params, zero_axis="data").trace
    update_only = jax.jit(tx.update, out_shardings=(update_zero, zero))
    grads = on_mesh(host_tree(1), mesh, replicated=True)
    assert _gather_count(update_only.lower(grads, state, params).compile().as_text()) == 0
    # The whole step gathers the new params (that is ZeRO-1), never the state:
    # at most one all-gather per leaf that has its state split.
    whole = sharded_step.lower(params, state, grads).compile().as_text()
    assert 0 < _gather_count(whole) <= sum(
        1 for leaf, s in zip(jax.tree.leaves(params), jax.tree.leaves(update_zero))
        if not s.is_fully_replicated
    )

    one_device_step = jax.jit(train_step)
    single_params = on_one_device(host_tree(0))
    single_state = tx.init(single_params)
    for seed in range(1, STEPS + 2):
        params, state = sharded_step(params, state, on_mesh(host_tree(seed), mesh, replicated=True))
        # Wait for each step: with fewer cores than fake devices, XLA CPU runs the 8
        # devices on 8 threads, and a step launched while one still waits in a
        # collective can deadlock it.
        jax.block_until_ready((params, state))
        single_params, single_state = one_device_step(
            single_params, single_state, on_one_device(host_tree(seed))
        )
    chex.assert_trees_all_close(params, single_params, rtol=2e-6, atol=1e-7)
    chex.assert_trees_all_close(state, single_state, rtol=2e-6, atol=1e-7)
    for (path, leaf), sharding in zip(jax.tree_util.tree_leaves_with_path(state), jax.tree.leaves(zero)):
        _assert_equivalent(leaf.sharding, sharding, leaf.ndim, f"state{jax.tree_util.keystr(path)}")


def test_state_shardings_errors_name_the_problem():
    mesh = make_mesh()
    params = on_mesh(host_tree(0), mesh)
    with pytest.raises(ValueError, match=r"zero_axis='batch'.*\('data', 'model'\)"):
        gx.state_shardings(gx.adam(1e-3), params, zero_axis="batch")
    with pytest.raises(TypeError, match=r"\['w'\] has no sharding"):
        gx.state_shardings(gx.adam(1e-3), {"w": np.ones(3, np.float32)})
    other = jax.make_mesh((8,), ("data",), axis_types=(AxisType.Auto,))
    mixed = {"a": params["dense"]["kernel"], "b": jax.device_put(jnp.ones(8), NamedSharding(other, P()))}
    with pytest.raises(ValueError, match="2 different meshes"):
        gx.state_shardings(gx.adam(1e-3), mixed)
    scattered = {"a": jax.device_put(jnp.ones(2), jax.devices()[0]), "b": jax.device_put(jnp.ones(2), jax.devices()[1])}
    with pytest.raises(ValueError, match="2 different devices"):
        gx.state_shardings(gx.adam(1e-3), scattered)
    with pytest.raises(TypeError, match=r"NamedSharding on one mesh.*SingleDeviceSharding"):
        gx.state_shardings(gx.adam(1e-3), {"a": scattered["a"], "b": params["dense"]["bias"]})


def test_state_shardings_on_one_device_and_on_abstract_params():
    tx = gx.adam(1e-3)
    params = on_one_device(host_tree(0))
    device = jax.devices()[0]
    assert all(s == jax.sharding.SingleDeviceSharding(device) for s in jax.tree.leaves(gx.state_shardings(tx, params)))

    mesh = make_mesh()
    concrete = on_mesh(host_tree(0), mesh)
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), concrete)
    assert gx.state_shardings(tx, abstract) == gx.state_shardings(tx, concrete)


MASKED_STATES = {
    "masked-prefix": lambda: gx.masked(gx.adam(1e-3), {"dense": {"kernel": True, "bias": False},
                                                       "blocks": False, "pair": True, "scalar": True}),
    "masked-patterns": lambda: gx.masked(gx.scale_by_adam(), ["kernel", "^pair"]),
    "freeze": lambda: gx.chain(gx.sgd(0.1, momentum=0.9), gx.freeze(
        {"dense": {"kernel": False, "bias": True}, "blocks": True, "pair": False, "scalar": False})),
    "partition": lambda: gx.partition({"a": gx.adam(1e-3), "b": gx.sgd(0.1, momentum=0.9)}, {
        "dense": {"kernel": "a", "bias": "b"}, "blocks": "a", "pair": ("b", "a"), "scalar": "b"}),
    "partition-callable": lambda: gx.partition(
        {"a": gx.adam(1e-3), "b": gx.sgd(0.1, momentum=0.9)},
        lambda p: jax.tree.map(lambda x: "a" if x.ndim > 1 else "b", p)),
    "adamw-mask": lambda: gx.adamw(1e-3, weight_decay=1e-2, mask=["kernel"]),
}


@pytest.mark.parametrize("name", list(MASKED_STATES))
def test_optax_tree_map_params_derives_the_shardings_of_masked_states(name):
    """Sharding code maps the params' shardings over the state with optax's tree_map_params."""
    import optax  # a reference here, not a dependency of gradxform

    mesh = make_mesh()
    params = on_mesh(host_tree(0), mesh)
    tx = MASKED_STATES[name]()
    state = tx.init(params)
    via_optax = optax.tree_utils.tree_map_params(
        tx, lambda p: p.sharding, state, transform_non_params=lambda _: NamedSharding(mesh, P()))
    derived = gx.state_shardings(tx, params)
    assert jax.tree.structure(via_optax) == jax.tree.structure(derived) == jax.tree.structure(state)
    for (path, leaf), mapped, own in zip(jax.tree_util.tree_leaves_with_path(state),
                                         jax.tree.leaves(via_optax), jax.tree.leaves(derived)):
        where = f"{name} state{jax.tree_util.keystr(path)}"
        _assert_equivalent(mapped, own, leaf.ndim, where)
        if leaf.ndim:  # an eager counter sits on one device
            _assert_equivalent(leaf.sharding, own, leaf.ndim, where)
    jax.jit(tx.init, out_shardings=via_optax)(params)
