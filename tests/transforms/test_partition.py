"""partition and partition_by_patterns against optax.partition (run live).

* ``partition`` must give optax's updates at every step for a label prefix tree
  and a callable, with three groups (adam, sgd with momentum, set_to_zero); its
  state has one entry per label, each built on that label's leaves only.
* ``partition_by_patterns`` is ``partition`` with the label of the first
  matching pattern (else ``"default"``): it must equal ``partition`` with the
  equivalent explicit label tree bit for bit.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradxform as gx
from gradxform.core.masks import path_string
from tests.helpers import (
    assert_trees_close, gradient_stream, is_none, random_params, run_optax, run_updates,
)

STEPS = 32

# Leaves of the nested test tree: dense/kernel (4,3), dense/bias (3,), blocks/0 (2,2),
# blocks/1 None, blocks/2 (), pair/0 (5,), pair/1/inner (1,3), pair/1/empty (0,), scalar ().
LABELS = {"dense": {"kernel": "adam", "bias": "sgd"}, "blocks": "frozen",
          "pair": ("sgd", {"inner": "adam", "empty": "frozen"}), "scalar": "adam"}
LABEL_PATHS = {"adam": {"dense/kernel", "pair/1/inner", "scalar"},
               "sgd": {"dense/bias", "pair/0"},
               "frozen": {"blocks/0", "blocks/2", "pair/1/empty"}}


def labels_by_rank(params):
    return jax.tree.map(lambda x: {2: "adam", 1: "sgd"}.get(x.ndim, "frozen"), params)


RANK_PATHS = {"adam": {"dense/kernel", "blocks/0", "pair/1/inner"},
              "sgd": {"dense/bias", "pair/0", "pair/1/empty"},
              "frozen": {"blocks/2", "scalar"}}


def gx_groups():
    return {"adam": gx.adam(1e-2), "sgd": gx.sgd(0.1, momentum=0.9), "frozen": gx.set_to_zero()}


def optax_groups():
    return {"adam": optax.adam(1e-2), "sgd": optax.sgd(0.1, momentum=0.9),
            "frozen": optax.set_to_zero()}


def paths_of(tree):
    return {path_string(p) for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]}


def assert_bitwise_trees(a, b, context=""):
    assert jax.tree.structure(a, is_leaf=is_none) == jax.tree.structure(b, is_leaf=is_none), context
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        assert x.dtype == y.dtype, context
        np.testing.assert_array_equal(np.asarray(x).reshape(-1).view(np.uint8),
                                      np.asarray(y).reshape(-1).view(np.uint8),
                                      err_msg=context)


@pytest.mark.parametrize("labels, paths", [(LABELS, LABEL_PATHS), (labels_by_rank, RANK_PATHS)],
                         ids=["prefix-tree", "callable"])
def test_partition_matches_optax(labels, paths):
    params = random_params(0)
    grads_seq = gradient_stream(params, STEPS, seed=1)
    mine, state = run_updates(gx.partition(gx_groups(), labels), params, grads_seq)
    ref, _ = run_optax(optax.partition(optax_groups(), labels), params, grads_seq)
    for step, (a, b) in enumerate(zip(mine, ref)):
        assert_trees_close(a, b, rtol=2e-6, atol=1e-7, context=f"step {step}")
        for p, u in jax.tree_util.tree_flatten_with_path(a)[0]:
            if path_string(p) in paths["frozen"]:
                assert np.all(np.signbit(np.asarray(u))), f"step {step}, {path_string(p)}"
    states = state.inner_states
    assert set(states) == {"adam", "sgd", "frozen"}
    assert all(isinstance(s, gx.MaskedState) for s in states.values())
    adam_state, sgd_state = states["adam"].inner_state[0], states["sgd"].inner_state[0]
    assert paths_of(adam_state.mu) == paths_of(adam_state.nu) == paths["adam"]
    assert paths_of(sgd_state.trace) == paths["sgd"]
    assert jax.tree.leaves(states["frozen"]) == []
    # Structurally, as optax.partition: each state is a MaskedState of its transformation
    # initialised on the params with a MaskedNode wherever the labels (a prefix) differ.
    label_tree = labels(params) if callable(labels) else labels
    for label, tx in gx_groups().items():
        own = jax.tree.map(lambda lab, p: p if lab == label else gx.MaskedNode(), label_tree, params)
        assert jax.tree.structure(states[label], is_leaf=is_none) == jax.tree.structure(
            gx.MaskedState(tx.init(own)), is_leaf=is_none), label


def test_unused_label_keeps_only_counters_and_none_params_pass():
    params = {"w": jnp.ones(3), "skip": None, "b": jnp.full(2, 2.0)}
    grads = {"w": jnp.full(3, 0.5), "skip": None, "b": jnp.full(2, 4.0)}
    tx = gx.partition({"sgd": gx.sgd(0.5), "unused": gx.adam(1e-3)},
                      {"w": "sgd", "skip": "unused", "b": "sgd"})
    state = tx.init(params)
    assert [x.shape for x in jax.tree.leaves(state.inner_states["unused"])] == [(), ()]
    updates, _ = jax.jit(tx.update)(grads, state, params)
    assert updates["skip"] is None
    np.testing.assert_array_equal(updates["w"], np.full(3, -0.25, np.float32))
    np.testing.assert_array_equal(updates["b"], np.full(2, -2.0, np.float32))


# --- partition_by_patterns ----------------------------------------------------------------


def test_partition_by_patterns_first_match_wins_and_equals_partition():
    params = random_params(2)
    grads_seq = gradient_stream(params, 12, seed=3)
    rules = [("dense", gx.sgd(0.1)), ("kernel|inner|blocks/0", gx.adam(1e-2)),
             ("^pair", gx.sgd(0.05, momentum=0.5))]
    # dense/kernel matches rules 0 and 1: rule 0 wins; pair/1/inner matches rules 1 and 2: rule 1.
    # Patterns label each leaf, so the equivalent label tree is a full one (a prefix entry
    # would leave out a whole subtree as one MaskedNode, as in optax).
    explicit = {"dense": {"kernel": "rule0", "bias": "rule0"}, "blocks": ["rule1", None, "default"],
                "pair": ("rule2", {"inner": "rule1", "empty": "rule2"}), "scalar": "default"}
    by_patterns = gx.partition_by_patterns(rules, default=gx.scale_by_adam())
    by_labels = gx.partition({"rule0": gx.sgd(0.1), "rule1": gx.adam(1e-2),
                              "rule2": gx.sgd(0.05, momentum=0.5), "default": gx.scale_by_adam()},
                             explicit)
    mine, mine_state = run_updates(by_patterns, params, grads_seq)
    ref, ref_state = run_updates(by_labels, params, grads_seq)
    for step, (a, b) in enumerate(zip(mine, ref)):
        assert_bitwise_trees(a, b, f"step {step}")
    assert set(mine_state.inner_states) == {"rule0", "rule1", "rule2", "default"}
    for label in mine_state.inner_states:
        assert_bitwise_trees(mine_state.inner_states[label], ref_state.inner_states[label], label)
    for step, (u, g) in enumerate(zip(mine, grads_seq)):  # sgd(0.1) on the whole dense block
        for name in ("kernel", "bias"):
            np.testing.assert_array_equal(u["dense"][name],
                                          np.float32(-0.1) * np.asarray(g["dense"][name]))


def test_keras_multi_optimizer_example():
    """Keras's MultiOptimizer: sgd for biases and norm layers, adam for everything else."""
    rng = np.random.default_rng(4)
    shapes = {"dense": {"kernel": (3, 4), "bias": (4,)}, "norm": {"scale": (4,), "bias": (4,)},
              "out": {"kernel": (4, 2), "bias": (2,)}}
    params = jax.tree.map(lambda s: jnp.asarray(rng.standard_normal(s), jnp.float32), shapes,
                          is_leaf=lambda x: isinstance(x, tuple))
    grads_seq = gradient_stream(params, 20, seed=5, zero_every=0)
    tx = gx.partition_by_patterns([("bias|norm", gx.sgd(0.1))], default=gx.adam(1e-2))
    labels = {"dense": {"kernel": "adam", "bias": "sgd"}, "norm": "sgd",
              "out": {"kernel": "adam", "bias": "sgd"}}
    ref_tx = optax.partition({"sgd": optax.sgd(0.1), "adam": optax.adam(1e-2)}, labels)
    mine, state = run_updates(tx, params, grads_seq)
    ref, _ = run_optax(ref_tx, params, grads_seq)
    for step, (a, b, g) in enumerate(zip(mine, ref, grads_seq)):
        assert_trees_close(a, b, rtol=2e-6, atol=1e-7, context=f"step {step}")
        np.testing.assert_array_equal(a["norm"]["scale"],
                                      np.float32(-0.1) * np.asarray(g["norm"]["scale"]))
    assert paths_of(state.inner_states["default"].inner_state[0].mu) == {"dense/kernel",
                                                                         "out/kernel"}


# --- errors -----------------------------------------------------------------------------

PARAMS = {"w": jnp.ones(2), "b": {"x": jnp.ones(1), "y": jnp.ones(3)}}


def test_label_without_transformation_lists_missing_and_available():
    tx = gx.partition({"sgd": gx.sgd(0.1), "adam": gx.adam(0.1)},
                      {"w": "sgd", "b": {"x": "lamb", "y": "lion"}})
    with pytest.raises(ValueError) as info:
        tx.init(PARAMS)
    message = str(info.value)
    assert message.startswith("partition:")
    assert "['lamb', 'lion']" in message and "['adam', 'sgd']" in message
    callable_tx = gx.partition({"sgd": gx.sgd(0.1)}, lambda p: jax.tree.map(lambda _: "lamb", p))
    with pytest.raises(ValueError, match=r"partition: .*\['lamb'\].*\['sgd'\]"):
        jax.jit(callable_tx.update)(
            PARAMS, gx.PartitionState({"sgd": gx.MaskedState(gx.sgd(0.1).init(PARAMS))}), PARAMS)


@pytest.mark.parametrize("labels", [
    {"w": "sgd"}, {"w": "sgd", "b": "sgd", "c": "sgd"}, ["sgd", "sgd"],
    {"w": "sgd", "b": ["sgd", "sgd"]}, lambda p: {"w": "sgd"},
], ids=["missing-key", "extra-key", "list-vs-dict", "inner-list", "callable"])
def test_label_tree_not_a_prefix(labels):
    tx = gx.partition({"sgd": gx.sgd(0.1)}, labels)
    for init in (tx.init, jax.jit(tx.init)):
        with pytest.raises(ValueError, match="partition"):
            init(PARAMS)


@pytest.mark.parametrize("transforms, exc, text", [
    ({}, TypeError, "partition: transforms must be a non-empty mapping"),
    ([("sgd", gx.sgd(0.1))], TypeError, "partition: transforms must be a non-empty mapping"),
    (gx.sgd(0.1), TypeError, "partition: transforms must be a non-empty mapping"),
    ({"sgd": gx.sgd(0.1), "bad": lambda g: g}, TypeError,
     "partition: transforms['bad'] must be a transformation"),
    ({"sgd": None}, TypeError, "partition: transforms['sgd'] must be a transformation"),
], ids=["empty", "list", "transformation", "callable-value", "none-value"])
def test_bad_transforms(transforms, exc, text):
    with pytest.raises(exc) as info:
        gx.partition(transforms, {"w": "sgd", "b": "sgd"})
    assert text in str(info.value)


@pytest.mark.parametrize("labels", [None, {}, []])
def test_empty_labels(labels):
    with pytest.raises(ValueError, match="partition: labels"):
        gx.partition({"sgd": gx.sgd(0.1)}, labels)


def test_partition_by_patterns_bad_regex_names_rule_index():
    text = r"partition_by_patterns: rules\[1\] has an invalid regex '\(bias'"
    with pytest.raises(ValueError, match=text):
        gx.partition_by_patterns([("kernel", gx.sgd(0.1)), ("(bias", gx.sgd(0.1))], gx.adam(1e-3))


@pytest.mark.parametrize("rules, index", [
    ([("kernel",)], 0), ([("kernel", gx.sgd(0.1), 1)], 0),
    ([("a", gx.sgd(0.1)), ["b", gx.sgd(0.1)]], 1),
    ([(1, gx.sgd(0.1))], 0), ([gx.sgd(0.1)], 0),
], ids=["single", "triple", "list-pair", "non-string", "bare-transformation"])
def test_partition_by_patterns_rules_not_pairs(rules, index):
    with pytest.raises(TypeError, match=rf"partition_by_patterns: rules\[{index}\] must be a"):
        gx.partition_by_patterns(rules, gx.adam(1e-3))


@pytest.mark.parametrize("rules", ["kernel", {"kernel": gx.sgd(0.1)}, None])
def test_partition_by_patterns_rules_not_a_list(rules):
    with pytest.raises(TypeError, match="partition_by_patterns: rules must be a list"):
        gx.partition_by_patterns(rules, gx.adam(1e-3))


def test_partition_by_patterns_bad_transformations():
    with pytest.raises(TypeError, match="must be a transformation"):
        gx.partition_by_patterns([("kernel", lambda g: g)], gx.adam(1e-3))
    with pytest.raises(TypeError, match="must be a transformation"):
        gx.partition_by_patterns([("kernel", gx.sgd(0.1))], default=None)
