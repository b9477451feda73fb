"""Key paths with Flax boxes left out (``gradxform.core.paths``).

Expected paths are written out by hand. Boxes are real Flax objects:
``nnx.Param`` variables from ``nnx.state`` and linen's ``nn.Partitioned`` /
``nn.LogicallyPartitioned`` from ``nn.with_partitioning`` and
``nn.with_logical_partitioning``. A boxed tree must give the same paths as the
same tree unboxed (``nnx.as_pure``, ``nn.meta.unbox``), and only boxes are left
out: an attribute that happens to be called ``value`` stays in the path.
"""

import subprocess
import sys
from typing import NamedTuple

import equinox as eqx
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import gradxform as gx
from gradxform.core import masks, paths


class TwoLayers(nnx.Module):
    def __init__(self, rngs):
        self.hidden = nnx.Linear(3, 4, rngs=rngs)
        self.out = nnx.Linear(4, 2, rngs=rngs)
        self.norm = nnx.LayerNorm(2, rngs=rngs)


class BoxedDense(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(
            2,
            kernel_init=nn.with_logical_partitioning(nn.initializers.ones_init(), ("in", "out")),
            bias_init=nn.with_partitioning(nn.initializers.zeros_init(), (None,)),
        )(x)


NNX_STATE = nnx.state(TwoLayers(nnx.Rngs(0)), nnx.Param)
LINEN_BOXED = BoxedDense().init(jax.random.key(0), jnp.ones((1, 3)))
NNX_PATHS = {"hidden/bias", "hidden/kernel", "out/bias", "out/kernel", "norm/bias", "norm/scale"}
LINEN_PATHS = {"params/Dense_0/kernel", "params/Dense_0/bias"}


def path_set(tree):
    return {path for path in jax.tree.leaves(paths.tree_paths(tree))}


def test_the_fixtures_are_boxed():
    boxes = jax.tree.leaves(NNX_STATE, is_leaf=lambda x: isinstance(x, nnx.Variable))
    assert len(boxes) == 6 and all(isinstance(box, nnx.Param) for box in boxes)
    kinds = sorted(type(box).__name__ for box in jax.tree.leaves(
        LINEN_BOXED, is_leaf=lambda x: isinstance(x, nn.meta.AxisMetadata)))
    assert kinds == ["LogicallyPartitioned", "Partitioned"]
    # What the boxes add to jax's own key paths, and what patterns must not see.
    raw = {jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(LINEN_BOXED)}
    assert "['params']['Dense_0']['kernel'].value" in raw


@pytest.mark.parametrize("boxed, unboxed, expected", [
    (NNX_STATE, nnx.as_pure(NNX_STATE), NNX_PATHS),
    (LINEN_BOXED, nn.meta.unbox(LINEN_BOXED), LINEN_PATHS),
], ids=["nnx", "linen"])
def test_boxed_and_unboxed_trees_have_the_same_paths(boxed, unboxed, expected):
    assert path_set(boxed) == path_set(unboxed) == expected
    assert [p for p, _ in paths.leaves_with_paths(boxed)] == [
        p for p, _ in paths.leaves_with_paths(unboxed)]
    # Laid out like the tree given: boxes kept, each holding its leaf's path.
    boxed_paths = paths.tree_paths(boxed)
    assert jax.tree.structure(boxed_paths) == jax.tree.structure(boxed)


@pytest.mark.parametrize("box", [
    nnx.Param(jnp.ones(2)), nnx.BatchStat(jnp.ones(2)),
    nn.Partitioned(jnp.ones(2), (None,)), nn.LogicallyPartitioned(jnp.ones(2), ("x",)),
], ids=["nnx.Param", "nnx.BatchStat", "nn.Partitioned", "nn.LogicallyPartitioned"])
def test_flax_boxes_are_recognised_and_opened(box):
    assert paths.is_box(box)
    np.testing.assert_array_equal(paths.unbox({"w": box})["w"], np.ones(2))
    assert paths.leaves_with_paths({"w": box})[0][0] == "w"


class Value(NamedTuple):
    value: jax.Array


class Holder(eqx.Module):
    value: jax.Array


class Variable:  # a user class that merely shares nnx's class name
    pass


@pytest.mark.parametrize("node", [jnp.ones(2), {"a": 1.0}, Value(jnp.ones(1)), Holder(jnp.ones(1)),
                                  Variable(), None], ids=["array", "dict", "namedtuple",
                                                          "eqx.Module", "same-name", "None"])
def test_other_nodes_are_not_boxes(node):
    assert not paths.is_box(node)


def test_a_field_called_value_stays_in_the_path():
    tree = {"a": Value(jnp.ones(1)), "b": Holder(jnp.ones(1)), "c": nnx.Param(jnp.ones(1))}
    assert [p for p, _ in paths.leaves_with_paths(tree)] == ["a/value", "b/value", "c"]


def test_unbox_returns_an_unboxed_tree_itself_and_keeps_none():
    tree = {"a": jnp.ones(1), "b": None, "c": [jnp.zeros(2)]}
    assert paths.unbox(tree) is tree
    opened = paths.unbox({"a": nnx.Param(jnp.ones(1)), "b": None})
    assert opened["b"] is None and isinstance(opened["a"], jax.Array)
    assert [p for p, leaf in paths.leaves_with_paths({"a": None, "b": [None, jnp.ones(1)]})] == [
        "a", "b/0", "b/1"]


def test_patterns_and_callables_see_the_unboxed_tree():
    for boxed in (NNX_STATE, LINEN_BOXED):
        mask = masks.resolve_mask("owner", r"(^|/)kernel$", boxed)
        assert jax.tree.structure(mask) == jax.tree.structure(boxed)  # laid out like the params
        selected = {p for (p, _), m in zip(paths.leaves_with_paths(boxed), jax.tree.leaves(mask))
                    if m}
        assert selected and all(p.endswith("/kernel") for p in selected)
        seen = []
        masks.resolve_mask("owner", lambda p: seen.append(p) or jax.tree.map(lambda _: True, p),
                           boxed)
        assert not any(paths.is_box(n) for n in jax.tree.leaves(seen[0], is_leaf=paths.is_box))


def test_flat_tree_layout_paths_and_keep_see_no_boxes():
    seen = []
    flat = gx.flat_tree(LINEN_BOXED, keep=lambda path, leaf: seen.append(path) or "kernel" in path)
    assert set(seen) == {slot.path for slot in flat.layout.slots} == LINEN_PATHS
    assert [spec.name for spec in flat.layout.buffers if spec.kept] == ["params/Dense_0/kernel"]
    assert jax.tree.structure(flat.unravel()) == jax.tree.structure(LINEN_BOXED)


def test_masked_on_a_flat_tree_of_boxed_params_selects_by_unboxed_path():
    flat = gx.flat_tree(LINEN_BOXED)
    tx = gx.masked(gx.set_to_zero(), [r"(^|/)bias$"])
    grads = flat.ravel(jax.tree.map(jnp.ones_like, LINEN_BOXED))
    updates = nn.meta.unbox(tx.update(grads, tx.init(flat), flat)[0].unravel())["params"]["Dense_0"]
    assert np.all(np.signbit(updates["bias"])) and not np.any(updates["bias"])
    np.testing.assert_array_equal(updates["kernel"], np.ones((3, 2), np.float32))


def test_gradxform_does_not_import_flax():
    code = "import sys, gradxform; assert 'flax' not in sys.modules, 'flax imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
