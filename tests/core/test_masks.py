"""Key-path masks, not-finite counts, ``positive_int``, and running an inner transformation
only when a condition holds (``update_or_hold`` / ``hold_updates``).

Expected values are written out by hand (path strings, which leaves match) or
computed with NumPy (counts of non-finite entries); the "inner not executed"
property is shown with a host callback that counts the inner's runs and by the
``cond`` in the jaxpr.
"""

import collections

import chex
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import gradxform as gx
from gradxform.core import control, masks, tree, validation
from tests.helpers import is_none, random_params

Pair = collections.namedtuple("Pair", ["weight", "bias"])
ONE = jnp.ones(1)

# --- key-path strings -------------------------------------------------------------------

PATH_CASES = [
    pytest.param({"dense": {"kernel": ONE, "bias": ONE}},
                 {"dense": {"kernel": "dense/kernel", "bias": "dense/bias"}}, id="dict"),
    pytest.param([ONE, [ONE, ONE]], ["0", ["1/0", "1/1"]], id="list"),
    pytest.param((ONE, {"a": (ONE,)}), ("0", {"a": ("1/a/0",)}), id="tuple"),
    pytest.param({"layer": Pair(ONE, ONE)},
                 {"layer": Pair("layer/weight", "layer/bias")}, id="namedtuple"),
    pytest.param({"params": {"Dense_0": {"kernel": ONE, "bias": ONE},
                             "LayerNorm_0": {"scale": ONE}}},
                 {"params": {"Dense_0": {"kernel": "params/Dense_0/kernel",
                                         "bias": "params/Dense_0/bias"},
                             "LayerNorm_0": {"scale": "params/LayerNorm_0/scale"}}},
                 id="flax-nested-dict"),
    pytest.param({"a": None, "b": [None, ONE]}, {"a": None, "b": [None, "b/1"]}, id="none-kept"),
    pytest.param(ONE, "", id="bare-leaf"),
]


@pytest.mark.parametrize("params, expected", PATH_CASES)
def test_tree_paths(params, expected):
    paths = masks.tree_paths(params)
    assert jax.tree.structure(paths, is_leaf=is_none) == jax.tree.structure(expected, is_leaf=is_none)
    assert paths == expected


def test_tree_paths_of_the_nested_test_tree():
    paths = masks.tree_paths(random_params())
    assert paths == {
        "dense": {"kernel": "dense/kernel", "bias": "dense/bias"},
        "blocks": ["blocks/0", None, "blocks/2"],
        "pair": ("pair/0", {"inner": "pair/1/inner", "empty": "pair/1/empty"}),
        "scalar": "scalar",
    }


# --- patterns ---------------------------------------------------------------------------

NAMES = {"dense": {"kernel": ONE, "bias": ONE}, "biases": ONE, "bias_net": {"w": ONE},
         "norm": {"scale": ONE}, "x": None}

PATTERN_CASES = [
    pytest.param("bias", {"dense/bias", "biases", "bias_net/w"}, id="search-anywhere"),
    pytest.param("(^|/)bias$", {"dense/bias"}, id="anchored-last-component"),
    pytest.param("^dense/", {"dense/kernel", "dense/bias"}, id="anchored-root"),
    pytest.param(["(^|/)bias$", "norm"], {"dense/bias", "norm/scale"}, id="list"),
    pytest.param(("kernel",), {"dense/kernel"}, id="tuple"),
    pytest.param("nothing-matches", set(), id="no-match"),
    pytest.param("", {"dense/kernel", "dense/bias", "biases", "bias_net/w", "norm/scale"},
                 id="empty-regex-matches-all"),
]


@pytest.mark.parametrize("patterns, matching", PATTERN_CASES)
def test_pattern_masks(patterns, matching):
    mask = masks.resolve_mask("owner", patterns, NAMES)
    paths = masks.tree_paths(NAMES)
    assert mask["x"] is None
    got = {p for p, m in zip(jax.tree.leaves(paths), jax.tree.leaves(mask)) if m}
    assert got == matching
    for m in jax.tree.leaves(mask):
        assert isinstance(m, bool)


def test_empty_pattern_list_and_none_match_nothing():
    assert masks.compile_patterns("o", "exclude", None) is None
    assert masks.compile_patterns("o", "exclude", []) is None
    assert not any(jax.tree.leaves(masks.match_paths(None, NAMES)))


@pytest.mark.parametrize("patterns, bad", [("(", "("), (["ok", "[a-"], "[a-"), ("*x", "*x")],
                         ids=["paren", "in-list", "nothing-to-repeat"])
def test_bad_regex_raises_value_error_naming_owner_argument_pattern(patterns, bad):
    with pytest.raises(ValueError) as info:
        masks.compile_patterns("my_owner", "exclude", patterns)
    message = str(info.value)
    assert "my_owner" in message and "exclude" in message and repr(bad) in message


@pytest.mark.parametrize("ctor", [
    lambda **kw: gx.add_decayed_weights(0.1, **kw),
    lambda **kw: gx.decoupled_weight_decay(0.1, 0.01, **kw),
], ids=["add_decayed_weights", "decoupled_weight_decay"])
@pytest.mark.parametrize("argument", ["exclude", "mask"])
def test_bad_regex_raises_at_construction(ctor, argument):
    with pytest.raises(ValueError, match=rf"{argument}.*'\(oops'"):
        ctor(**{argument: ["fine", "(oops"]})


@pytest.mark.parametrize("patterns", [5, [b"bias"], ["bias", 3], {"bias": True}],
                         ids=["int", "bytes", "mixed", "dict"])
def test_non_string_patterns_raise_type_error(patterns):
    with pytest.raises(TypeError, match="my_owner: exclude must be a regex string"):
        masks.compile_patterns("my_owner", "exclude", patterns)


@pytest.mark.parametrize("mask", [["bias", 3], {"w": "bias", "b": True}], ids=["list", "dict"])
def test_mask_mixing_strings_and_other_values_raises_at_construction(mask):
    with pytest.raises(TypeError, match="add_decayed_weights: mask mixes strings"):
        gx.add_decayed_weights(0.1, mask=mask)


def test_non_string_exclude_raises_at_construction():
    with pytest.raises(TypeError, match="add_decayed_weights: exclude"):
        gx.add_decayed_weights(0.1, exclude=["bias", 1])


# --- resolve_mask -----------------------------------------------------------------------


def test_resolve_mask_none_is_all_true_with_none_kept():
    params = random_params()
    mask = masks.resolve_mask("o", None, params)
    assert mask["blocks"][1] is None
    assert jax.tree.structure(mask, is_leaf=is_none) == jax.tree.structure(params, is_leaf=is_none)
    assert all(bool(m) for m in jax.tree.leaves(mask))


def test_resolve_mask_bool_prefix_tree_broadcasts():
    params = random_params()
    prefix = {"dense": {"kernel": True, "bias": False}, "blocks": True, "pair": False,
              "scalar": True}
    mask = masks.resolve_mask("o", prefix, params)
    assert mask == {"dense": {"kernel": True, "bias": False}, "blocks": [True, None, True],
                    "pair": (False, {"inner": False, "empty": False}), "scalar": True}


def test_resolve_mask_callable_is_called_with_params():
    params = random_params()
    seen = []

    def fn(p):
        seen.append(p)
        return jax.tree.map(lambda x: x.ndim >= 2, p)

    mask = masks.resolve_mask("o", fn, params)
    assert seen and seen[0] is params
    assert mask["dense"] == {"kernel": True, "bias": False}
    assert mask["blocks"] == [True, None, False]


def test_resolve_mask_patterns_on_nested_tree():
    mask = masks.resolve_mask("o", ["(^|/)bias$", "^pair/1/"], random_params())
    assert mask == {"dense": {"kernel": False, "bias": True}, "blocks": [False, None, False],
                    "pair": (False, {"inner": True, "empty": True}), "scalar": False}


def test_resolve_mask_not_a_prefix_raises_naming_owner():
    with pytest.raises(ValueError, match="my_owner: the mask's tree structure is not a prefix"):
        masks.resolve_mask("my_owner", {"dense": True}, random_params())


@pytest.mark.parametrize("mask", [[], {}, ()], ids=["empty-list", "empty-dict", "empty-tuple"])
def test_empty_mask_argument_rejected(mask):
    with pytest.raises(ValueError, match="my_owner: mask must be"):
        masks.check_mask_argument("my_owner", "mask", mask)


def test_exclusion_beats_selection_and_keeps_traced_bools():
    selected = {"a": True, "b": jnp.array(True), "c": False}
    excluded = {"a": True, "b": False, "c": False}
    combined = masks.combine_with_exclusion(selected, excluded)
    assert combined["a"] is False and combined["c"] is False
    assert isinstance(combined["b"], jax.Array) and bool(combined["b"])
    assert masks.is_static_false(False) and masks.is_static_false(np.bool_(False))
    assert not masks.is_static_false(jnp.array(False)) and not masks.is_static_false(True)


# --- which masks are functions ----------------------------------------------------------


class CallableBools(eqx.Module):
    w: bool
    b: bool

    def __call__(self, params):
        raise AssertionError("a pytree of bools is a mask tree, never called")


class CallableLabels(eqx.Module):
    w: str

    def __call__(self, params):
        raise AssertionError("a pytree of labels is a label tree, never called")


class Model(eqx.Module):
    weight: jax.Array

    def mask(self, params):
        return jax.tree.map(lambda _: True, params)


@pytest.mark.parametrize("mask, is_function", [
    (lambda p: p, True), (jnp.isfinite, True), (CallableBools(True, False), False),
    ({"w": True}, False), ([lambda p: p], False), (Model(jnp.ones(2)).mask, True),
    (CallableBools(np.bool_(True), jnp.array(False)), False),
], ids=["lambda", "jax-function", "callable-module-of-bools", "dict", "list-of-functions",
        "bound-method-of-a-model", "numpy-and-array-bools"])
def test_is_mask_function(mask, is_function):
    assert masks.is_mask_function(mask) is is_function


def test_is_mask_function_for_labels():
    assert not masks.is_mask_function(CallableLabels("adam"), masks.is_label_entry)
    assert masks.is_mask_function(Model(jnp.ones(2)).mask, masks.is_label_entry)
    assert masks.is_mask_function(lambda p: p, masks.is_label_entry)
    # A module of labels is not a mask of bools: as a mask it would be called.
    assert masks.is_mask_function(CallableLabels("adam"))


def test_callable_module_of_bools_is_validated_and_resolved_as_a_tree():
    mask = CallableBools(True, False)
    masks.check_mask_argument("o", "mask", mask)
    params = CallableBools(jnp.ones(2), jnp.zeros(3))
    resolved = masks.resolve_mask("o", mask, params)
    assert isinstance(resolved, CallableBools) and (resolved.w, resolved.b) == (True, False)


# --- tree_count_not_finite / tree_all_finite --------------------------------------------

_special = st.sampled_from([0.0, 1.5, -2.0, np.nan, np.inf, -np.inf, 1e30])


@pytest.mark.allows_nan
@settings(max_examples=25, deadline=None, database=None, derandomize=True)
@given(values=st.lists(st.lists(_special, max_size=6), max_size=4),
       dtype=st.sampled_from([np.float32, np.float16, jnp.bfloat16]))
def test_count_not_finite_matches_numpy(values, dtype):
    with np.errstate(over="ignore"):  # 1e30 overflows float16 to inf, on purpose
        leaves = [np.asarray(v, np.float64).astype(dtype) for v in values]
    tree_ = {"leaves": [jnp.asarray(x) for x in leaves], "none": None}
    expected = sum(int(np.sum(~np.isfinite(x.astype(np.float64)))) for x in leaves)
    count = tree.tree_count_not_finite(tree_)
    chex.assert_shape(count, ())
    chex.assert_type(count, jnp.int32)
    assert int(count) == expected
    assert bool(tree.tree_all_finite(tree_)) == (expected == 0)


@pytest.mark.allows_nan
def test_count_not_finite_empty_trees_and_jit():
    for empty in ({}, [], None, {"a": None}, {"z": jnp.zeros((0, 3))}):
        assert int(tree.tree_count_not_finite(empty)) == 0
        assert bool(tree.tree_all_finite(empty)) is True
    grads = {"a": jnp.array([1.0, jnp.nan]), "b": (jnp.full((2, 2), jnp.inf), None),
             "c": jnp.array(3, jnp.int32)}
    assert int(jax.jit(tree.tree_count_not_finite)(grads)) == 5
    assert not bool(jax.jit(tree.tree_all_finite)(grads))


# --- positive_int -----------------------------------------------------------------------


@pytest.mark.parametrize("value", [1, 7, np.int64(3), np.int32(1), np.uint8(2)],
                         ids=["1", "7", "np.int64", "np.int32", "np.uint8"])
def test_positive_int_accepts(value):
    validation.positive_int("o", "k", value)


@pytest.mark.parametrize("value, exc", [
    (True, TypeError), (np.bool_(True), TypeError), (1.0, TypeError), ("2", TypeError),
    (None, TypeError), (jnp.array(2), TypeError), (0, ValueError), (-3, ValueError),
    (np.int64(0), ValueError),
], ids=["True", "np.bool_", "float", "str", "None", "jax-array", "0", "-3", "np.int64(0)"])
def test_positive_int_rejects_naming_owner_argument_value(value, exc):
    with pytest.raises(exc) as info:
        validation.positive_int("my_owner", "every_k", value)
    message = str(info.value)
    assert message.startswith("my_owner: every_k must be an int >= 1") and repr(value) in message


def test_positive_int_minimum_and_allow_none():
    validation.positive_int("o", "k", None, allow_none=True)
    validation.positive_int("o", "k", 0, minimum=0)
    with pytest.raises(ValueError, match="an int >= 2 or None, got 1"):
        validation.positive_int("o", "k", 1, minimum=2, allow_none=True)


# --- hold_updates / update_or_hold ------------------------------------------------------


def bits(x):
    x = np.asarray(x)
    return x.view({2: np.uint16, 4: np.uint32, 8: np.uint64}[x.dtype.itemsize])


def assert_bitwise_equal(a, b):
    assert jax.tree.structure(a, is_leaf=is_none) == jax.tree.structure(b, is_leaf=is_none)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        assert x.dtype == y.dtype
        np.testing.assert_array_equal(bits(x), bits(y))


def counting_sgd(calls, lr=0.5):
    """SGD whose update counts its executions on the host, and records an extra kwarg."""

    def init(params):
        return jnp.zeros([], jnp.int32)

    def update(updates, state, params=None, *, tag=0.0):
        jax.debug.callback(lambda t: calls.append(float(t)), jnp.asarray(tag, jnp.float32))
        return jax.tree.map(lambda g: -lr * g, updates), state + 1

    return gx.GradientTransformation(init, update)


def test_hold_updates_are_negative_zero_of_each_dtype():
    shapes = {"a": jax.ShapeDtypeStruct((2, 3), jnp.float32), "b": None,
              "c": (jax.ShapeDtypeStruct((), jnp.bfloat16), jax.ShapeDtypeStruct((0,), jnp.float16))}
    held = control.hold_updates(shapes)
    assert held["b"] is None
    for leaf, shape in zip(jax.tree.leaves(held), jax.tree.leaves(shapes)):
        chex.assert_shape(leaf, shape.shape)
        assert leaf.dtype == shape.dtype
        assert np.all(np.signbit(np.asarray(leaf, np.float32))) and not np.any(np.asarray(leaf, np.float32))


@pytest.mark.allows_nan
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float16], ids=lambda d: d.__name__)
def test_held_updates_keep_params_bitwise_including_negative_zero(dtype):
    params = random_params(3, dtype)
    # Subnormals are left out: XLA on CPU flushes them to zero in any addition, -0.0 included.
    tiny = float(jnp.finfo(dtype).smallest_normal)
    params["specials"] = jnp.array([-0.0, 0.0, np.inf, -np.inf, np.nan, 1e-3, -5.0, tiny, -tiny],
                                   dtype)
    held = control.hold_updates(jax.eval_shape(lambda: params))
    assert_bitwise_equal(gx.apply_updates(params, held), params)
    assert_bitwise_equal(jax.jit(gx.apply_updates)(params, held), params)
    # +0.0 would not do: -0.0 + 0.0 is +0.0.
    plus = jax.tree.map(jnp.zeros_like, params)
    assert not np.signbit(np.asarray(gx.apply_updates(params, plus)["specials"][0], np.float32))


def test_update_or_hold_runs_inner_only_when_condition_holds():
    calls = []
    inner = counting_sgd(calls)
    params = {"w": jnp.array([-0.0, 1.0, -2.0]), "n": None}
    grads = {"w": jnp.array([1.0, 2.0, 3.0]), "n": None}
    prepared = []

    def prepare(g):
        jax.debug.callback(lambda: prepared.append(1))
        return jax.tree.map(lambda x: 2.0 * x, g)

    @jax.jit
    def step(condition, grads, inner_state, tag):
        return control.update_or_hold(condition, inner, grads, inner_state, params,
                                      {"tag": tag}, prepare=prepare)

    state = inner.init(params)
    script = [True, False, False, True, False, True]
    for i, condition in enumerate(script):
        updates, new_state = step(jnp.asarray(condition), grads, state, jnp.float32(i))
        jax.effects_barrier()
        assert updates["n"] is None
        if condition:
            np.testing.assert_array_equal(updates["w"], [-1.0, -2.0, -3.0])
            assert int(new_state) == int(state) + 1
        else:
            assert_bitwise_equal(updates, control.hold_updates(jax.eval_shape(lambda: grads)))
            assert_bitwise_equal(gx.apply_updates(params, updates), params)
            assert int(new_state) == int(state)
        state = new_state
    # The inner (and prepare) ran on the True steps only, with the extra argument passed through.
    assert calls == [float(i) for i, c in enumerate(script) if c]
    assert len(prepared) == sum(script)


def test_update_or_hold_lowers_to_a_cond():
    inner = counting_sgd([])
    grads = {"w": jnp.ones(3)}

    def step(condition, state):
        return control.update_or_hold(condition, inner, grads, state, grads, {})

    jaxpr = jax.make_jaxpr(step)(jnp.asarray(True), inner.init(grads))
    assert any(eqn.primitive.name == "cond" for eqn in jaxpr.jaxpr.eqns)


def test_update_or_hold_eager_with_python_bool():
    calls = []
    inner = counting_sgd(calls)
    grads = {"w": jnp.ones(2)}
    updates, state = control.update_or_hold(False, inner, grads, inner.init(grads), grads, {})
    jax.effects_barrier()
    assert calls == [] and int(state) == 0
    assert np.all(np.signbit(np.asarray(updates["w"])))
    updates, state = control.update_or_hold(True, inner, grads, inner.init(grads), grads, {})
    jax.effects_barrier()
    assert calls == [0.0] and int(state) == 1
    np.testing.assert_array_equal(updates["w"], [-0.5, -0.5])
