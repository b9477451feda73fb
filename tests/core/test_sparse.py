"""RowSparse: construction checks, pytree behaviour, and coalescing with the dense gradient's bits.

The reference for a row-sparse gradient is JAX's own dense gradient of a
gather (``jax.grad`` of ``table[ids]``), computed live.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import gradxform as gx
from gradxform.core import sparse


def _dense_gradient(ids, values, num_rows, jit=False):
    """JAX's gradient of ``sum(table[ids] * values)``: the values scatter-added at ids."""
    def loss(table):
        return jnp.sum(table.at[ids].get(mode="fill", fill_value=0, wrap_negative_indices=False)
                       * values)
    grad = jax.grad(loss)
    return (jax.jit(grad) if jit else grad)(jnp.zeros((num_rows,) + values.shape[1:], values.dtype))


def test_rowsparse_stands_for_its_dense_array_and_is_a_pytree():
    g = gx.RowSparse(jnp.array([2, 0, 2]), jnp.arange(6.0).reshape(3, 2), num_rows=4)
    assert g.shape == (4, 2) and g.dtype == jnp.float32 and g.ndim == 2
    np.testing.assert_array_equal(g.todense(), [[2, 3], [0, 0], [4, 6], [0, 0]])
    leaves, treedef = jax.tree.flatten(g)
    assert len(leaves) == 2
    rebuilt = treedef.unflatten(leaves)
    assert isinstance(rebuilt, gx.RowSparse) and rebuilt.num_rows == 4 and not rebuilt.unique
    out = jax.jit(lambda g: g)(g)  # crosses a jit boundary both ways
    np.testing.assert_array_equal(out.todense(), g.todense())
    assert "RowSparse(indices=" in repr(g) and "num_rows=4" in repr(g)


@pytest.mark.parametrize(
    "indices, values, num_rows, error, words",
    [
        ([5], np.ones((1, 2)), 4, ValueError, ["RowSparse", "indices", "5", "[0, 4)"]),
        ([-1], np.ones((1, 2)), 4, ValueError, ["RowSparse", "indices", "-1"]),
        ([0.5], np.ones((1, 2)), 4, TypeError, ["RowSparse", "indices", "integer"]),
        ([[0]], np.ones((1, 2)), 4, TypeError, ["RowSparse", "indices", "1-D"]),
        ([0, 1], np.ones((3, 2)), 4, ValueError, ["RowSparse", "values", "(3, 2)"]),
        ([0], np.ones((1, 2), np.int32), 4, TypeError, ["RowSparse", "values", "int32"]),
        ([0], np.ones((1, 2)), 0, ValueError, ["RowSparse", "num_rows", "0"]),
        ([0], np.ones((1, 2)), 4.0, ValueError, ["RowSparse", "num_rows", "4.0"]),
        ([0], np.ones((1, 2)), True, ValueError, ["RowSparse", "num_rows", "True"]),
    ],
)
def test_bad_rowsparse_raises_naming_argument_and_value(indices, values, num_rows, error, words):
    with pytest.raises(error) as caught:
        gx.RowSparse(jnp.asarray(indices), jnp.asarray(values), num_rows)
    for word in words:
        assert word in str(caught.value), (word, str(caught.value))


def test_unique_is_a_checked_promise():
    with pytest.raises(ValueError, match=r"unique=True.*\[1\]"):
        gx.RowSparse(jnp.array([1, 1]), jnp.ones((2, 1)), 4, unique=True)
    # Empty slots (index num_rows) may repeat.
    gx.RowSparse(jnp.array([1, 4, 4]), jnp.ones((3, 1)), 4, unique=True)


@pytest.mark.parametrize("jit", [False, True])
def test_coalesce_gives_the_dense_gradients_bits(jit):
    rng = np.random.default_rng(0)
    ids = jnp.asarray(rng.integers(0, 60, 3000), jnp.int32)  # many duplicates
    values = jnp.asarray(rng.standard_normal((3000, 5)), jnp.float32)
    g = gx.RowSparse(ids, values, 60)
    coalesce = jax.jit(gx.sparse.coalesce) if jit else gx.sparse.coalesce
    c = coalesce(g)
    assert c.unique and c.indices.shape == (3000,)
    touched = np.unique(np.asarray(ids))
    np.testing.assert_array_equal(c.indices[: touched.size], touched)
    assert np.all(np.asarray(c.indices[touched.size:]) == 60)
    np.testing.assert_array_equal(np.asarray(c.values[touched.size:]), 0)
    dense = _dense_gradient(ids, values, 60, jit=jit)
    np.testing.assert_array_equal(gx.sparse.densify(c), dense)
    np.testing.assert_array_equal(gx.sparse.densify(g), dense)


def test_out_of_table_indices_under_jit_never_reach_a_row():
    table = jnp.arange(12.0).reshape(4, 3)

    @jax.jit
    def run(indices):
        g = gx.RowSparse(indices, jnp.ones((3, 3)), 4)
        rows = sparse.gather_rows(table, indices)
        return gx.sparse.densify(g), gx.sparse.coalesce(g), rows, gx.apply_updates(table, g)

    dense, c, rows, applied = run(jnp.array([-1, 7, 2]))
    expected = np.zeros((4, 3))
    expected[2] = 1
    np.testing.assert_array_equal(dense, expected)  # -1 is not the last row, 7 is not clamped to 3
    np.testing.assert_array_equal(c.indices, [2, 4, 4])
    np.testing.assert_array_equal(rows, [[0, 0, 0], [0, 0, 0], [6, 7, 8]])
    np.testing.assert_array_equal(applied, table + expected)


def test_row_sparse_rules_lists_exact_lazy_and_routing_transforms():
    rules = gx.sparse.row_sparse_rules()
    assert rules["scale_by_adagrad"] == "exact" and rules["trace"] == "lazy"
    assert rules["chain"] == "routes" and "scale_by_adam" not in rules
    with pytest.raises(TypeError):
        rules["scale_by_adam"] = "exact"  # read-only view


@settings(max_examples=40, deadline=None)
@given(
    ids=st.lists(st.integers(0, 12), min_size=1, max_size=40),
    data=st.data(),
)
def test_coalesce_property_equals_dense_scatter(ids, data):
    num_rows = 12  # id 12 is an empty slot (padding)
    values = np.asarray(
        data.draw(st.lists(st.floats(-1e3, 1e3, width=32), min_size=len(ids) * 2,
                           max_size=len(ids) * 2)), np.float32).reshape(len(ids), 2)
    g = gx.RowSparse(jnp.asarray(ids, jnp.int32), jnp.asarray(values), num_rows)
    c = gx.sparse.coalesce(g)
    reference = np.zeros((num_rows, 2), np.float32)
    for i, v in zip(ids, values):  # order of appearance, as a scatter-add sums
        if i < num_rows:
            reference[i] += v
    np.testing.assert_array_equal(gx.sparse.densify(c), reference)
    kept = np.asarray(c.indices)[np.asarray(c.indices) < num_rows]
    assert kept.size == np.unique(kept).size and np.all(np.diff(kept) > 0)
