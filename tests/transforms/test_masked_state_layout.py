"""The state layout of ``masked``, ``freeze`` and ``partition`` is optax's.

* The parts a mask leaves out are a ``MaskedNode`` in what the inner
  transformation sees, and so in its state: the whole subtree under a False
  entry of a prefix mask, one leaf under a full mask; ``None`` entries stay.
* ``partition`` wraps each label's state in a ``MaskedState``.
* ``optax.tree_utils.tree_map_params``, which sharding code uses to derive the
  state's partition specs from the params', works on these states and gives
  what it gives on optax's.

gradxform's and optax's state types are different classes of the same names,
so states are compared through `layout`: node type names, keys, and leaf
shapes and dtypes. The inner transformations used here (``scale_by_adam``,
``trace``, ``set_to_zero``) have the same state layout in both libraries.
"""

import jax
import jax.numpy as jnp
import optax
import pytest

import gradxform as gx
from tests.helpers import random_params

PARAMS = random_params(0)
# Leaves of the nested test tree: dense/kernel (4,3), dense/bias (3,), blocks/0 (2,2),
# blocks/1 None, blocks/2 (), pair/0 (5,), pair/1/inner (1,3), pair/1/empty (0,), scalar ().
PREFIX = {"dense": {"kernel": True, "bias": False}, "blocks": False,
          "pair": (True, False), "scalar": True}
FULL = {"dense": {"kernel": True, "bias": False}, "blocks": [True, None, False],
        "pair": (False, {"inner": True, "empty": True}), "scalar": False}
NONE_SELECTED = {"dense": False, "blocks": False, "pair": False, "scalar": False}


def by_rank(params):
    return jax.tree.map(lambda x: x.ndim >= 2, params)


def layout(tree):
    """``tree``'s structure as plain data: type names and keys of nodes, shapes of leaves."""
    children = jax.tree_util.tree_flatten_with_path(tree, is_leaf=lambda x: x is not tree)[0]
    if len(children) == 1 and children[0][1] is tree:
        if hasattr(tree, "shape") and hasattr(tree, "dtype"):
            return ("array", tuple(tree.shape), str(tree.dtype))
        return ("value", repr(tree))
    return (type(tree).__name__,
            tuple((jax.tree_util.keystr(keys), layout(child)) for keys, child in children))


def optax_init(tx, params=PARAMS):
    with jax.numpy_dtype_promotion("standard"):  # optax's own code needs implicit promotion
        return tx.init(params)


INNERS = [
    pytest.param(gx.scale_by_adam, optax.scale_by_adam, id="scale_by_adam"),
    pytest.param(lambda: gx.trace(0.9), lambda: optax.trace(0.9), id="trace"),
    pytest.param(gx.set_to_zero, optax.set_to_zero, id="set_to_zero"),
]
MASKS = [
    pytest.param(PREFIX, PREFIX, id="prefix"),
    pytest.param(FULL, FULL, id="full"),
    pytest.param(by_rank, by_rank, id="callable"),
    pytest.param(["kernel", "^blocks/0$", "inner|empty"], FULL, id="patterns"),
    pytest.param(NONE_SELECTED, NONE_SELECTED, id="none-selected"),
]


@pytest.mark.parametrize("gx_mask, optax_mask", MASKS)
@pytest.mark.parametrize("make_gx, make_optax", INNERS)
def test_masked_state_is_laid_out_as_optax(make_gx, make_optax, gx_mask, optax_mask):
    mine = gx.masked(make_gx(), gx_mask).init(PARAMS)
    reference = optax_init(optax.masked(make_optax(), optax_mask))
    assert layout(mine) == layout(reference)


def test_masked_nodes_stand_where_optax_puts_them():
    state = gx.masked(gx.scale_by_adam(), PREFIX).init(PARAMS)
    mu = state.inner_state.mu
    assert isinstance(mu["blocks"], gx.MaskedNode)  # a False prefix entry: one node for the subtree
    assert isinstance(mu["pair"][1], gx.MaskedNode)
    assert isinstance(mu["dense"]["bias"], gx.MaskedNode)
    assert mu["dense"]["kernel"].shape == (4, 3)
    full = gx.masked(gx.scale_by_adam(), FULL).init(PARAMS).inner_state.mu
    assert full["blocks"][1] is None and isinstance(full["blocks"][2], gx.MaskedNode)


def test_nested_masked_state_is_laid_out_as_optax():
    inner = {"dense": {"kernel": True, "bias": True}, "blocks": [False, None, True],
             "pair": (True, {"inner": False, "empty": True}), "scalar": True}
    mine = gx.masked(gx.masked(gx.scale_by_adam(), inner), FULL).init(PARAMS)
    reference = optax_init(optax.masked(optax.masked(optax.scale_by_adam(), inner), FULL))
    assert layout(mine) == layout(reference)


def test_freeze_state_is_laid_out_as_optax():
    mine = gx.chain(gx.trace(0.9), gx.freeze(PREFIX)).init(PARAMS)
    reference = optax_init(optax.chain(optax.trace(0.9), optax.freeze(PREFIX)))
    assert layout(mine) == layout(reference)


LABELS = {"dense": {"kernel": "adam", "bias": "trace"}, "blocks": "zero",
          "pair": ("trace", {"inner": "adam", "empty": "zero"}), "scalar": "adam"}


def labels_by_rank(params):
    return jax.tree.map(lambda x: {2: "adam", 1: "trace"}.get(x.ndim, "zero"), params)


def gx_groups():
    return {"adam": gx.scale_by_adam(), "trace": gx.trace(0.9), "zero": gx.set_to_zero()}


def optax_groups():
    return {"adam": optax.scale_by_adam(), "trace": optax.trace(0.9), "zero": optax.set_to_zero()}


@pytest.mark.parametrize("labels", [LABELS, labels_by_rank], ids=["prefix", "callable"])
def test_partition_state_is_laid_out_as_optax(labels):
    mine = gx.partition(gx_groups(), labels).init(PARAMS)
    reference = optax_init(optax.partition(optax_groups(), labels))
    assert layout(mine) == layout(reference)
    assert all(isinstance(s, gx.MaskedState) for s in mine.inner_states.values())


# --- optax.tree_utils.tree_map_params --------------------------------------------------------

SAME_LAYOUT = [
    pytest.param(lambda: gx.masked(gx.scale_by_adam(), PREFIX),
                 lambda: optax.masked(optax.scale_by_adam(), PREFIX), id="masked"),
    pytest.param(lambda: gx.masked(gx.trace(0.9), ["kernel", "inner"]),
                 lambda: optax.masked(optax.trace(0.9), {
                     "dense": {"kernel": True, "bias": False}, "blocks": [False, None, False],
                     "pair": (False, {"inner": True, "empty": False}), "scalar": False}),
                 id="masked-patterns"),
    pytest.param(lambda: gx.chain(gx.trace(0.9), gx.freeze(FULL)),
                 lambda: optax.chain(optax.trace(0.9), optax.freeze(FULL)), id="freeze"),
    pytest.param(lambda: gx.partition(gx_groups(), LABELS),
                 lambda: optax.partition(optax_groups(), LABELS), id="partition"),
]


def describe_param(leaf):
    return f"param{tuple(leaf.shape)}"


def spec_of(leaf):
    return f"spec{tuple(leaf.shape)}"


@pytest.mark.parametrize("make_gx, make_optax", SAME_LAYOUT)
def test_tree_map_params_works_as_on_optax(make_gx, make_optax):
    tx, ref_tx = make_gx(), make_optax()
    state, ref_state = tx.init(PARAMS), optax_init(ref_tx)
    mapped = optax.tree_utils.tree_map_params(
        tx, describe_param, state, transform_non_params=lambda _: "other")
    ref_mapped = optax.tree_utils.tree_map_params(
        ref_tx, describe_param, ref_state, transform_non_params=lambda _: "other")
    assert layout(mapped) == layout(ref_mapped)
    assert "param(4, 3)" in jax.tree.leaves(mapped)
    # With trees shaped like the params: each library's MaskedNode is a leaf of the map.
    specs = jax.tree.map(spec_of, PARAMS)
    mapped = optax.tree_utils.tree_map_params(
        tx, lambda _, spec: spec, state, specs, transform_non_params=lambda _: None,
        is_leaf=lambda x: isinstance(x, gx.MaskedNode))
    ref_mapped = optax.tree_utils.tree_map_params(
        ref_tx, lambda _, spec: spec, ref_state, specs, transform_non_params=lambda _: None,
        is_leaf=lambda x: isinstance(x, optax.MaskedNode))
    assert layout(mapped) == layout(ref_mapped)


def test_tree_map_params_on_adamw_with_a_mask():
    """optax's adamw masks a stateless decay; its Adam moments are what is compared."""
    tx = gx.adamw(1e-3, weight_decay=1e-2, mask=by_rank)
    ref_tx = optax.adamw(1e-3, weight_decay=1e-2, mask=by_rank)
    mapped = optax.tree_utils.tree_map_params(tx, describe_param, tx.init(PARAMS))
    ref_mapped = optax.tree_utils.tree_map_params(ref_tx, describe_param, optax_init(ref_tx))
    for field in ("mu", "nu"):
        assert getattr(mapped[0], field) == getattr(ref_mapped[0], field) == jax.tree.map(
            describe_param, PARAMS)
    assert mapped[0].count.dtype == jnp.int32
