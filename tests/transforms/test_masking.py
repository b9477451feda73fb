"""masked, freeze and set_to_zero against optax.masked / optax.freeze (run live).

* ``masked`` must give optax's updates at every step for a bool prefix tree, a
  callable and regex key-path patterns (optax gets the equivalent bool tree);
  the unselected leaves must be the input gradients bit for bit, and the inner
  state must hold arrays for the selected leaves only.
* Nested masks select the AND of both (optax#271).
* ``freeze`` / ``set_to_zero`` emit ``-0.0``, so frozen params never move, not
  even a ``-0.0`` parameter (optax's ``+0.0`` would turn it into ``+0.0``).
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradxform as gx
from gradxform.core.masks import path_string
from tests.helpers import (
    assert_trees_close, compare_with_optax, gradient_stream, is_none, random_params, run_optax,
    run_updates,
)

STEPS = 50

# Leaves of the nested test tree: dense/kernel (4,3), dense/bias (3,), blocks/0 (2,2),
# blocks/1 None, blocks/2 (), pair/0 (5,), pair/1/inner (1,3), pair/1/empty (0,), scalar ().
PREFIX = {"dense": {"kernel": True, "bias": False}, "blocks": True,
          "pair": (False, {"inner": True, "empty": True}), "scalar": False}
PREFIX_FULL = {"dense": {"kernel": True, "bias": False}, "blocks": [True, None, True],
               "pair": (False, {"inner": True, "empty": True}), "scalar": False}
PATTERNS = ["kernel", "^blocks/0$", "inner|empty"]
PATTERNS_FULL = {"dense": {"kernel": True, "bias": False}, "blocks": [True, None, False],
                 "pair": (False, {"inner": True, "empty": True}), "scalar": False}


def by_rank(params):
    return jax.tree.map(lambda x: x.ndim >= 2, params)


BY_RANK_FULL = {"dense": {"kernel": True, "bias": False}, "blocks": [True, None, False],
                "pair": (False, {"inner": True, "empty": False}), "scalar": False}

MASKS = [
    pytest.param(PREFIX, PREFIX, PREFIX_FULL, id="bool-prefix"),
    pytest.param(by_rank, by_rank, BY_RANK_FULL, id="callable"),
    pytest.param(PATTERNS, PATTERNS_FULL, PATTERNS_FULL, id="patterns"),
]
INNERS = [
    pytest.param(lambda: gx.adam(1e-2), lambda: optax.adam(1e-2), id="adam"),
    pytest.param(lambda: gx.add_decayed_weights(0.1), lambda: optax.add_decayed_weights(0.1),
                 id="add_decayed_weights"),
    pytest.param(gx.scale_by_adam, optax.scale_by_adam, id="scale_by_adam"),
]


def selected_paths(full_mask):
    return {path_string(p) for p, flag in
            jax.tree_util.tree_flatten_with_path(full_mask)[0] if flag}


def bits(x):
    x = np.asarray(x)
    return x.view(np.uint16 if x.dtype.itemsize == 2 else np.uint32)


def assert_bitwise(a, b, context=""):
    assert a.dtype == b.dtype and a.shape == b.shape, context
    np.testing.assert_array_equal(bits(a), bits(b), err_msg=context)


def leaves_with_paths(tree):
    return [(path_string(p), x) for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]]


@pytest.mark.parametrize("make_gx, make_optax", INNERS)
@pytest.mark.parametrize("gx_mask, optax_mask, full", MASKS)
def test_masked_matches_optax(make_gx, make_optax, gx_mask, optax_mask, full):
    params = random_params(0)
    grads_seq = gradient_stream(params, STEPS, seed=1)
    mine, state = run_updates(gx.masked(make_gx(), gx_mask), params, grads_seq)
    ref, _ = run_optax(optax.masked(make_optax(), optax_mask), params, grads_seq)
    chosen = selected_paths(full)
    for step, (a, b, g) in enumerate(zip(mine, ref, grads_seq)):
        assert_trees_close(a, b, rtol=2e-6, atol=1e-6, context=f"step {step}")
        for (path, u), (_, x) in zip(leaves_with_paths(a), leaves_with_paths(g)):
            if path not in chosen:  # passed through: exactly the input gradient
                assert_bitwise(u, x, f"step {step}, {path}")
    # The inner state is built on the params with a MaskedNode in place of each part the
    # mask leaves out, as optax.masked builds it (a False prefix entry: its whole subtree).
    mask_tree = optax_mask(params) if callable(optax_mask) else optax_mask
    only_selected = jax.tree.map(lambda m, p: p if m else gx.MaskedNode(), mask_tree, params)
    expected = make_gx().init(only_selected)
    assert jax.tree.structure(state.inner_state, is_leaf=is_none) == jax.tree.structure(
        expected, is_leaf=is_none)


NONE_SELECTED = {"scalar": False, "dense": False, "blocks": False, "pair": False}


@pytest.mark.parametrize("gx_mask, optax_mask, n_selected", [
    (PREFIX, PREFIX, 5), (by_rank, by_rank, 3), (PATTERNS, PATTERNS_FULL, 4),
    (NONE_SELECTED, NONE_SELECTED, 0),
], ids=["bool-prefix", "callable", "patterns", "none-selected"])
def test_inner_state_holds_only_selected_leaves(gx_mask, optax_mask, n_selected):
    params = random_params(0)
    state = gx.masked(gx.scale_by_adam(), gx_mask).init(params)
    leaves = jax.tree.leaves(state)
    assert len(leaves) == 1 + 2 * n_selected  # count, then mu and nu per selected leaf
    sizes = [x.size for x in leaves[1:]]
    with jax.numpy_dtype_promotion("standard"):
        ref = optax.masked(optax.scale_by_adam(), optax_mask).init(params)
    assert sizes == [x.size for x in jax.tree.leaves(ref)[1:]]


# --- nested masks (optax#271) -----------------------------------------------------------

INNER_FULL = {"dense": {"kernel": True, "bias": False}, "blocks": [True, None, False],
              "pair": (False, {"inner": True, "empty": True}), "scalar": True}
OUTER_FULL = {"dense": {"kernel": True, "bias": True}, "blocks": [False, None, False],
              "pair": (True, {"inner": True, "empty": False}), "scalar": True}
AND_FULL = jax.tree.map(lambda a, b: a and b, INNER_FULL, OUTER_FULL)


def test_nested_masks_match_optax_and_the_single_and_mask():
    params = random_params(3)
    grads_seq = gradient_stream(params, 20, seed=4)
    nested, _ = run_updates(gx.masked(gx.masked(gx.adam(1e-2), INNER_FULL), OUTER_FULL),
                            params, grads_seq)
    single, _ = run_updates(gx.masked(gx.adam(1e-2), AND_FULL), params, grads_seq)
    ref, _ = run_optax(optax.masked(optax.masked(optax.adam(1e-2), INNER_FULL), OUTER_FULL),
                       params, grads_seq)
    for step, (a, b, c) in enumerate(zip(nested, single, ref)):
        jax.tree.map(lambda x, y: assert_bitwise(x, y, f"step {step}"), a, b)
        assert_trees_close(a, c, rtol=2e-6, atol=1e-6, context=f"step {step}")


def test_nested_prefix_callable_and_pattern_masks_equal_the_and_mask():
    # optax cannot nest prefix masks: the inner mask's list meets the outer MaskedNode
    # ("different types at key path"), so only the single-mask equivalent is checked here.
    params = random_params(5)
    grads_seq = gradient_stream(params, 12, seed=6)
    outer = {"dense": True, "blocks": False, "pair": (True, True), "scalar": True}
    inner = gx.masked(gx.scale_by_adam(), lambda p: jax.tree.map(lambda x: x.ndim != 1, p))
    nested = gx.masked(gx.masked(inner, ["kernel", "inner", "scalar"]), outer)
    # by rank != 1: kernel, blocks/0, blocks/2, inner, scalar; patterns: kernel, inner, scalar;
    # outer: not blocks.
    expected = {"dense": {"kernel": True, "bias": False}, "blocks": [False, None, False],
                "pair": (False, {"inner": True, "empty": False}), "scalar": True}
    mine, state = run_updates(nested, params, grads_seq)
    single, _ = run_updates(gx.masked(gx.scale_by_adam(), expected), params, grads_seq)
    for a, b in zip(mine, single):
        jax.tree.map(assert_bitwise, a, b)
    assert len(jax.tree.leaves(state)) == 1 + 2 * 3


def test_inner_prefix_mask_deeper_than_an_outer_masked_node():
    """The outer mask leaves ``blocks`` out as one MaskedNode; the inner mask goes below it."""
    params = random_params(11)
    grads_seq = gradient_stream(params, 8, seed=12)
    outer = {"dense": True, "blocks": False, "pair": (True, True), "scalar": True}
    inner = {"dense": {"kernel": True, "bias": False}, "blocks": [True, None, True],
             "pair": (False, {"inner": True, "empty": True}), "scalar": False}
    both = {"dense": {"kernel": True, "bias": False}, "blocks": [False, None, False],
            "pair": (False, {"inner": True, "empty": True}), "scalar": False}
    nested_tx = gx.masked(gx.masked(gx.scale_by_adam(), inner), outer)
    nested, state = run_updates(nested_tx, params, grads_seq)
    single, _ = run_updates(gx.masked(gx.scale_by_adam(), both), params, grads_seq)
    for a, b in zip(nested, single):
        jax.tree.map(assert_bitwise, a, b)
    assert isinstance(state.inner_state.inner_state.mu["blocks"], gx.MaskedNode)
    with pytest.raises(ValueError):  # optax meets the MaskedNode with the inner list
        optax.masked(optax.masked(optax.scale_by_adam(), inner), outer).init(params)


# --- freeze and set_to_zero ------------------------------------------------------------


def test_freeze_keeps_params_bitwise_and_others_move_as_unwrapped():
    params = random_params(7)
    params["dense"]["bias"] = jnp.array([-0.0, 0.0, 1.5])
    params["scalar"] = jnp.array(-0.0)
    frozen = {"dense": {"kernel": False, "bias": True}, "blocks": [True, None, False],
              "pair": (False, {"inner": False, "empty": True}), "scalar": True}
    grads_seq = gradient_stream(params, 25, seed=8)
    mine_tx = gx.chain(gx.adam(0.1), gx.freeze(frozen))
    ref_tx = optax.chain(optax.adam(0.1), optax.freeze(frozen))
    plain_tx = gx.adam(0.1)
    mine_u, ref_u = jax.jit(mine_tx.update), jax.jit(ref_tx.update)
    plain_u = jax.jit(plain_tx.update)
    ms, rs, ps = mine_tx.init(params), ref_tx.init(params), plain_tx.init(params)
    mine_p, plain_p = params, params
    for step, grads in enumerate(grads_seq):
        u, ms = mine_u(grads, ms, mine_p)
        with jax.numpy_dtype_promotion("standard"):
            r, rs = ref_u(grads, rs, mine_p)
        assert_trees_close(u, r, rtol=2e-6, atol=1e-7, context=f"step {step}")
        pu, ps = plain_u(grads, ps, plain_p)
        mine_p, plain_p = gx.apply_updates(mine_p, u), gx.apply_updates(plain_p, pu)
    chosen = selected_paths(frozen)
    original, plain = dict(leaves_with_paths(params)), dict(leaves_with_paths(plain_p))
    for path, leaf in leaves_with_paths(mine_p):
        if path in chosen:
            assert_bitwise(leaf, original[path], path)
        else:
            np.testing.assert_allclose(leaf, plain[path], rtol=1e-6, atol=1e-7, err_msg=path)
            assert leaf.size == 0 or not np.array_equal(leaf, original[path]), path
    assert np.signbit(mine_p["scalar"]) and np.signbit(mine_p["dense"]["bias"][0])


def test_set_to_zero_emits_negative_zero_in_the_gradients_dtypes():
    grads = {"a": jnp.ones((2, 3), jnp.bfloat16), "b": jnp.full(4, 7.0, jnp.float16),
             "c": jnp.array(-3.0), "none": None, "empty": jnp.zeros((0, 2))}
    tx = gx.set_to_zero()
    for update in (tx.update, jax.jit(tx.update)):
        out, _ = update(grads, tx.init(grads))
        assert out["none"] is None
        for u, g in zip(jax.tree.leaves(out), jax.tree.leaves(grads)):
            assert u.dtype == g.dtype and u.shape == g.shape
            as_f32 = np.asarray(u, np.float32)
            assert np.all(np.signbit(as_f32)) and not np.any(as_f32)


# --- errors -----------------------------------------------------------------------------

PARAMS_SMALL = {"w": jnp.ones(2), "b": {"x": jnp.ones(1), "y": jnp.ones(3)}}
BAD_MASKS = [
    pytest.param({"w": True}, id="missing-key"),
    pytest.param({"w": True, "b": False, "c": True}, id="extra-key"),
    pytest.param([True, False], id="list-vs-dict"),
    pytest.param({"w": True, "b": [False, True]}, id="list-vs-inner-dict"),
    pytest.param(lambda p: {"w": True}, id="callable-bad-tree"),
]


@pytest.mark.parametrize("mask", BAD_MASKS)
def test_mask_not_a_prefix_raises_eagerly_and_under_jit(mask):
    tx = gx.masked(gx.set_to_zero(), mask)
    state = gx.MaskedState(gx.EmptyState())
    for init, update in ((tx.init, tx.update), (jax.jit(tx.init), jax.jit(tx.update))):
        with pytest.raises(ValueError, match="masked.*mask"):
            init(PARAMS_SMALL)
        with pytest.raises(ValueError, match="masked.*mask"):
            update(PARAMS_SMALL, state, PARAMS_SMALL)


def test_array_entries_in_mask_raise_type_error_naming_the_path():
    tx = gx.masked(gx.set_to_zero(), {"w": True, "b": {"x": False, "y": jnp.array(True)}})
    with pytest.raises(TypeError, match="masked.*'b/y'"):
        tx.init(PARAMS_SMALL)
    traced = gx.masked(gx.set_to_zero(), lambda p: jax.tree.map(lambda x: x.sum() > 0, p))
    with pytest.raises(TypeError, match="masked.*'b/x'"):
        jax.jit(traced.update)(PARAMS_SMALL, gx.MaskedState(gx.EmptyState()), PARAMS_SMALL)


@pytest.mark.parametrize("mask, exc, text", [
    (["kernel", True], TypeError, "masked: mask mixes strings"),
    ({"w": "kernel", "b": False}, TypeError, "masked: mask mixes strings"),
    ("ker(nel", ValueError, "masked: mask has an invalid regex 'ker(nel'"),
    (["ok", "[bad"], ValueError, "masked: mask has an invalid regex '[bad'"),
    ({}, ValueError, "masked: mask must be"),
])
def test_bad_mask_at_construction(mask, exc, text):
    with pytest.raises(exc) as info:
        gx.masked(gx.sgd(0.1), mask)
    assert text in str(info.value)


@pytest.mark.parametrize("inner", [lambda g: g, None, 1.0, (gx.sgd(0.1),)])
def test_inner_must_be_a_transformation(inner):
    with pytest.raises(TypeError, match="masked: inner must be a transformation"):
        gx.masked(inner, PREFIX)


# --- composition --------------------------------------------------------------------------


def test_masked_in_chain_under_jit_does_not_retrace():
    traces = []
    tx = gx.chain(gx.masked(gx.add_decayed_weights(0.5), ["kernel"]), gx.sgd(0.1, momentum=0.9))
    params = random_params(9)

    @jax.jit
    def step(grads, state, params):
        traces.append(1)
        return tx.update(grads, state, params)

    state = tx.init(params)
    grads_seq = gradient_stream(params, 3, seed=10)
    kernel_only = {"dense": {"kernel": True, "bias": False}, "blocks": False, "pair": False,
                   "scalar": False}
    ref_tx = optax.chain(optax.masked(optax.add_decayed_weights(0.5), kernel_only),
                         optax.sgd(0.1, momentum=0.9))
    ref, _ = run_optax(ref_tx, params, grads_seq)
    for grads, r in zip(grads_seq, ref):
        updates, state = step(grads, state, params)
        assert_trees_close(updates, r, rtol=2e-6, atol=1e-7)
    assert len(traces) == 1


def test_masked_bf16_matches_optax_and_passes_others_through():
    mine, _ = compare_with_optax(gx.masked(gx.adam(1e-2), PREFIX),
                                 optax.masked(optax.adam(1e-2), PREFIX),
                                 dtype=jnp.bfloat16, steps=20)
    grads_seq = gradient_stream(random_params(0, jnp.bfloat16), 20, seed=1)
    for u, g in zip(mine, grads_seq):
        assert_bitwise(u["dense"]["bias"], g["dense"]["bias"])
        assert_bitwise(u["pair"][0], g["pair"][0])


def test_masked_with_none_leaves_in_params():
    params = {"a": jnp.ones(3), "frozen": None, "nested": [None, jnp.full(2, 2.0)]}
    grads = {"a": jnp.full(3, 0.5), "frozen": None, "nested": [None, jnp.full(2, 4.0)]}
    for mask, decays_a in [({"a": True, "frozen": True, "nested": True}, True),
                           (["nested"], False),
                           (lambda p: jax.tree.map(lambda x: True, p), True)]:
        tx = gx.masked(gx.add_decayed_weights(0.5), mask)
        updates, _ = jax.jit(tx.update)(grads, tx.init(params), params)
        assert updates["frozen"] is None and updates["nested"][0] is None
        expected_a = np.full(3, 1.0 if decays_a else 0.5, np.float32)
        np.testing.assert_array_equal(updates["a"], expected_a)
        np.testing.assert_array_equal(updates["nested"][1], np.full(2, 5.0, np.float32))
