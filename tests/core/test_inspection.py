"""tree_get / tree_set: values found by name anywhere in a nested state."""

import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradxform as gx
from tests.helpers import jit_counting_traces, random_params

SCHEDULE = gx.schedules.linear_schedule(1e-2, 0.0, 50)


def _state(tx, steps=3):
    params = random_params()
    state = tx.init(params)
    for _ in range(steps):
        _, state = jax.jit(tx.update)(params, state, params)
    return state


def test_finds_a_scheduled_learning_rate_where_optax_tree_get_raises():
    state = _state(gx.inject_hyperparams(gx.adam)(learning_rate=SCHEDULE))
    assert float(gx.tree_get(state, "learning_rate")) == float(jax.jit(SCHEDULE)(jnp.int32(2)))
    with jax.numpy_dtype_promotion("standard"):
        optax_tx = optax.inject_hyperparams(optax.adam)(
            learning_rate=optax.linear_schedule(1e-2, 0.0, 50)
        )
        optax_state = optax_tx.init(random_params())
    with pytest.raises(KeyError, match="multiple values"):
        optax.tree.get(optax_state, "learning_rate")


def test_finds_values_deep_inside_wrappers_and_returns_subtrees():
    tx = gx.chain(
        gx.record_global_norm(),
        gx.masked(gx.inject_hyperparams(gx.sgd)(learning_rate=0.1, momentum=0.9), ["dense"]),
        gx.apply_if_finite(gx.adam(1e-3), 3),
    )
    state = _state(tx)
    assert float(gx.tree_get(state, "learning_rate")) == pytest.approx(0.1)
    assert int(gx.tree_get(state, "notfinite_count")) == 0
    mu = gx.tree_get(state, "mu")
    chex.assert_trees_all_equal_structs(mu, state[2].inner_state[0].mu)
    assert gx.tree_get(state, "momentum") is state[1].inner_state.hyperparams["momentum"]


def test_ambiguous_name_lists_every_candidate_and_a_longer_path_resolves_it():
    # Adam's count and the parameter average's count are independent: no guessing.
    state = _state(gx.chain(gx.clip_by_global_norm(1.0), gx.adam(1e-3), gx.params_ema(0.9)))
    with pytest.raises(KeyError) as info:
        gx.tree_get(state, "count")
    message = str(info.value)
    assert "ambiguous" in message
    assert "/1/0/count" in message and "/2/count" in message
    assert int(gx.tree_get(state, "1/0/count")) == 3
    assert int(gx.tree_get(state, "/2/count/")) == 3


def test_a_schedule_count_yields_to_the_optimizers_count_as_in_optax():
    # optax's adam has one count (its constant learning rate keeps none); ours keeps a
    # second one for the learning rate, which tree_get passes over.
    params = random_params()
    for gx_tx, optax_tx in [
        (gx.adam(1e-3), optax.adam(1e-3)),
        (gx.adamw(1e-3, weight_decay=0.1), optax.adamw(1e-3, weight_decay=0.1)),
        (gx.chain(gx.clip_by_global_norm(1.0), gx.sgd(0.1, 0.9), gx.adam(SCHEDULE)),
         optax.chain(optax.clip_by_global_norm(1.0), optax.sgd(0.1, 0.9), optax.adam(1e-3))),
    ]:
        state, optax_state = gx_tx.init(params), optax_tx.init(params)
        for _ in range(3):
            _, state = jax.jit(gx_tx.update)(params, state, params)
            with jax.numpy_dtype_promotion("standard"):
                _, optax_state = jax.jit(optax_tx.update)(params, optax_state, params)
        expected = optax.tree.get(optax_state, "count")
        chex.assert_trees_all_equal(gx.tree_get(state, "count"), expected)
        # tree_set moves the mirrored counts with it, so they keep agreeing.
        reset = gx.tree_set(state, count=0)
        counts = [leaf for path, leaf in jax.tree_util.tree_leaves_with_path(reset)
                  if str(path[-1]) == ".count"]
        assert len(counts) >= 2 and all(int(count) == 0 for count in counts)


def test_a_leading_slash_anchors_at_the_root_and_every_listed_candidate_works():
    state = _state(gx.inject_hyperparams(gx.adam)(learning_rate=1e-3), steps=2)
    assert gx.tree_get(state, "count") is state.inner_state[0].count
    tx = gx.chain(gx.inject_hyperparams(gx.adam)(learning_rate=1e-3), gx.ema(0.9))
    state = _state(tx, steps=2)
    with pytest.raises(KeyError) as info:
        gx.tree_get(state, "count")
    candidates = re.findall(r"(/(?:\w+/)*count)", str(info.value))
    assert candidates == ["/0/count", "/0/inner_state/0/count", "/0/inner_state/1/count",
                          "/1/count"]
    for candidate in candidates:
        assert int(gx.tree_get(state, candidate)) == 2
    assert gx.tree_get(state, "/0/count") is state[0].count
    assert int(gx.tree_set(state, **{"/0/count": 7})[0].count) == 7


def test_missing_name_gives_the_default_as_optax_and_tree_set_lists_the_names():
    params = random_params()
    state = _state(gx.adam(SCHEDULE))
    optax_state = optax.adam(1e-3).init(params)
    assert optax.tree.get(optax_state, "learning_rate") is None
    assert gx.tree_get(state, "learning_rate") is None
    assert gx.tree_get(state, "learning_rate", default=0.5) == 0.5
    with pytest.raises(KeyError) as info:
        gx.tree_set(state, learning_rate=0.1)
    message = str(info.value)
    assert "no 'learning_rate'" in message and "'mu'" in message and "'nu'" in message
    assert "inject_hyperparams" in message


def test_a_state_class_name_and_a_filtering_function_select_as_in_optax():
    params = random_params()
    with jax.numpy_dtype_promotion("standard"):
        optax_tx = optax.inject_hyperparams(optax.sgd)(learning_rate=lambda c: 1 / (c + 1))
        optax_state = optax_tx.init(params)
    state = gx.chain(gx.scale_by_adam(), gx.sgd(0.1, 0.9)).init(params)
    adam_state = gx.tree_get(state, "ScaleByAdamState")
    assert adam_state is state[0]
    optax_adam_state = optax.tree.get(
        optax.chain(optax.scale_by_adam(), optax.sgd(0.1, 0.9)).init(params), "ScaleByAdamState")
    assert adam_state._fields == optax_adam_state._fields
    chex.assert_trees_all_equal(tuple(adam_state), tuple(optax_adam_state))
    assert gx.tree_get(state, "TraceState") is state[1][0]

    def arrays_only(path, value):
        return isinstance(value, jax.Array)

    gx_tx = gx.inject_hyperparams(gx.sgd)(learning_rate=gx.schedules.constant_schedule(1.0))
    gx_state = gx_tx.init(params)
    expected = optax.tree.get(optax_state, "learning_rate", filtering=arrays_only)
    assert float(gx.tree_get(gx_state, "learning_rate", filtering=arrays_only)) == float(expected)
    assert gx.tree_get(gx_state, "learning_rate", filtering=lambda path, value: False) is None
    # The path a filter sees is the jax key path.
    seen = []
    gx.tree_get(gx_state, "learning_rate", filtering=lambda path, value: seen.append(path) or True)
    assert seen == [(jax.tree_util.GetAttrKey("hyperparams"), jax.tree_util.DictKey("learning_rate"))]


@pytest.mark.parametrize("name", [3, "", "/", None])
def test_bad_name_is_a_type_error_naming_it(name):
    with pytest.raises(TypeError, match=re.escape(repr(name))):
        gx.tree_get(gx.adam(1e-3).init(random_params()), name)
    with pytest.raises(TypeError, match="tree_get: filtering must be a callable"):
        gx.tree_get(gx.adam(1e-3).init(random_params()), "count", None, 3)
    with pytest.raises(TypeError, match="tree_set: filtering must be a callable.*got 3"):
        gx.tree_set(gx.adam(1e-3).init(random_params()), 3, count=1)


def test_works_on_named_chains_and_plain_dicts():
    state = _state(gx.named_chain(("clip", gx.clip_by_global_norm(1.0)), ("opt", gx.sgd(0.1, 0.9))))
    chex.assert_trees_all_equal(gx.tree_get(state, "opt/0/trace"), state["opt"][0].trace)
    assert gx.tree_get({"a": {"b": 1}}, "b") == 1


def test_tree_set_keeps_dtypes_and_structure_and_leaves_the_rest():
    tx = gx.inject_hyperparams(gx.adam)(learning_rate=1e-3)
    state = _state(tx)
    new = gx.tree_set(state, learning_rate=5e-4, **{"hyperparams/b1": 0.5})
    assert jax.tree.structure(new) == jax.tree.structure(state)
    for old_leaf, new_leaf in zip(jax.tree.leaves(state), jax.tree.leaves(new)):
        assert old_leaf.dtype == new_leaf.dtype and old_leaf.shape == new_leaf.shape
    assert float(new.hyperparams["learning_rate"]) == float(np.float32(5e-4))
    assert float(new.hyperparams["b1"]) == 0.5
    chex.assert_trees_all_equal(new.inner_state, state.inner_state)
    assert float(state.hyperparams["learning_rate"]) == float(np.float32(1e-3))  # a copy


def test_tree_set_errors():
    state = _state(gx.inject_hyperparams(gx.adam)(learning_rate=1e-3))
    with pytest.raises(KeyError, match="ambiguous"):
        gx.tree_set(_state(gx.chain(gx.adam(1e-3), gx.params_ema(0.9))), count=0)
    with pytest.raises(KeyError, match="no 'lr'"):
        gx.tree_set(state, lr=0.1)
    with pytest.raises(ValueError, match=r"learning_rate must have shape \(\)"):
        gx.tree_set(state, learning_rate=jnp.ones(2))


def test_tree_set_value_is_used_under_jit_without_retracing():
    params = random_params()
    tx = gx.inject_hyperparams(gx.sgd)(learning_rate=0.1)
    step, traces = jit_counting_traces(
        lambda state: tx.update(jax.tree.map(jnp.ones_like, params), state, params)
    )

    updates, state = step(tx.init(params))
    updates, _ = step(gx.tree_set(state, learning_rate=0.0))
    assert all(not np.any(np.asarray(u)) for u in jax.tree.leaves(updates))
    assert len(traces) == 1
