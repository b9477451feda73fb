"""A static bound on a row-sparse gradient's slots: ``max_rows``, ``coalesce(g, size)`` and
what happens when a batch touches more rows than that (``overflow``).

References: a numpy loop that sums each row's values in order of appearance and
keeps the rows that appear first; ``jax.grad`` of the same loss (dense); and the
unbounded row-sparse gradient, which a bound that fits must reproduce bit for bit.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.experimental import checkify

import gradxform as gx

NUM_ROWS, DIM = 40, 3


def _params(seed=0):
    rng = np.random.default_rng(seed)
    return {"embed": jnp.asarray(rng.standard_normal((NUM_ROWS, DIM)), jnp.float32),
            "w": jnp.asarray(rng.standard_normal(DIM), jnp.float32)}


def _loss(params, ids, lookup=gx.sparse.lookup):
    return jnp.sum(jnp.tanh(lookup(params["embed"], ids) @ params["w"]) ** 2)


# The same loss with dense gradients under jax.grad, jit-able: ids are data there too.
_dense_loss = functools.partial(_loss, lookup=functools.partial(gx.sparse.lookup,
                                                                invalid_ids="drop"))


def _reference(ids, values, num_rows, size):
    """Kept rows (those first seen first, sorted), their in-order sums, and the distinct count."""
    seen = []
    for i in ids:
        if 0 <= i < num_rows and i not in seen:
            seen.append(i)
    kept = sorted(seen[:size])
    indices = np.full(size, num_rows)
    indices[:len(kept)] = kept
    sums = np.zeros((size,) + values.shape[1:], values.dtype)
    for slot, row in enumerate(kept):
        for i, v in zip(ids, values):
            if i == row:
                sums[slot] = sums[slot] + v
    return indices, sums, len(seen)


@settings(max_examples=60, deadline=None)
@given(ids=st.lists(st.integers(-3, 15), min_size=1, max_size=40), size=st.integers(1, 45),
       data=st.data())
def test_property_coalesce_to_size_keeps_the_first_seen_rows_with_their_sums(ids, size, data):
    num_rows = 12  # under jit, ids below 0 or from 12 on are empty slots
    # Magnitudes from 2**-10 up: no sum is subnormal, which XLA flushes to zero and numpy keeps.
    value = st.one_of(st.just(0.0), st.floats(2**-10, 1e3, width=32),
                      st.floats(-1e3, -2**-10, width=32))
    values = np.asarray(data.draw(st.lists(value, min_size=len(ids) * 2, max_size=len(ids) * 2)),
                        np.float32).reshape(-1, 2)
    indices, sums, touched = _reference(ids, values, num_rows, size)

    @jax.jit
    def both(i, v):
        g = gx.RowSparse(i, v, num_rows)
        return gx.sparse.coalesce(g, size, overflow="drop"), gx.sparse.coalesce(g)

    c, unbounded = both(jnp.asarray(ids, jnp.int32), jnp.asarray(values))
    assert c.unique and c.indices.shape == (size,)
    np.testing.assert_array_equal(c.indices, indices)
    np.testing.assert_array_equal(c.values, sums)  # bit for bit: in order of appearance
    assert int(gx.sparse.count_touched_rows(jnp.asarray(ids), num_rows)) == touched
    if touched <= size:  # it fits: the same dense array as without a size
        np.testing.assert_array_equal(c.todense(), unbounded.todense())


@pytest.mark.parametrize("jit", [False, True])
def test_a_bound_that_fits_gives_the_unbounded_gradient_and_optimizer_step_bit_for_bit(jit):
    params = _params()
    ids = jnp.array([[3, 7, 3, 9], [7, 1, 3, 0], [9, 9, 9, 9]])  # 5 rows, 12 ids
    bounded = gx.sparse.value_and_grad(_loss, "embed", max_rows=6, overflow="checkify",
                                       invalid_ids="checkify")
    unbounded = gx.sparse.value_and_grad(_loss, "embed", invalid_ids="drop")
    dense = jax.value_and_grad(_dense_loss)
    if jit:
        bounded, unbounded, dense = jax.jit(bounded), jax.jit(unbounded), jax.jit(dense)
    error, (value, grads) = checkify.checkify(bounded)(params, ids)
    assert error.get() is None
    _, per_id = unbounded(params, ids)
    dense_value, dense_grads = dense(params, ids)
    g = grads["embed"]
    assert g.indices.shape == (6,) and g.values.shape == (6, DIM) and g.unique
    np.testing.assert_array_equal(g.indices, [0, 1, 3, 7, 9, NUM_ROWS])
    np.testing.assert_array_equal(value, dense_value)
    np.testing.assert_array_equal(g.todense(), dense_grads["embed"])
    np.testing.assert_array_equal(g.values[:5], per_id["embed"].values[:5])
    np.testing.assert_array_equal(grads["w"], dense_grads["w"])
    tx = gx.adagrad(0.1)
    step = jax.jit(lambda p, s, g: (lambda u, s: (gx.apply_updates(p, u), s))(*tx.update(g, s, p)))
    for a, b in zip(jax.tree.leaves(step(params, tx.init(params), grads)),
                    jax.tree.leaves(step(params, tx.init(params), per_id))):
        np.testing.assert_array_equal(a, b)


def test_max_rows_per_table_and_a_bound_above_the_ids_keeps_one_slot_per_id():
    params = dict(_params(), other=jnp.ones((10, 2)))

    def loss(params, ids, other_ids, lookup=gx.sparse.lookup):
        return _loss(params, ids, lookup) + jnp.sum(lookup(params["other"], other_ids) ** 2)

    ids, other_ids = jnp.array([5, 5, 6, 5]), jnp.array([1, 2, 1])
    _, grads = gx.sparse.value_and_grad(loss, ["embed", "other"], max_rows={"embed": 2})(
        params, ids, other_ids)
    assert grads["embed"].indices.shape == (2,) and grads["other"].indices.shape == (3,)
    _, grads = gx.sparse.value_and_grad(loss, ["embed", "other"], max_rows=100)(
        params, ids, other_ids)
    assert grads["embed"].indices.shape == (4,) and grads["other"].indices.shape == (3,)
    _, dense = jax.value_and_grad(loss)(params, ids, other_ids)
    for name in ("embed", "other"):
        np.testing.assert_array_equal(grads[name].todense(), dense[name])


def test_overflow_raises_outside_jit_naming_the_table_the_count_and_the_bound():
    ids = jnp.array([1, 2, 3, 1, 4])
    with pytest.raises(ValueError, match=r"sparse.value_and_grad: 4 rows of the table 'embed' "
                                         r"were touched, more than max_rows=3.*overflow='drop'"):
        gx.sparse.value_and_grad(_loss, "embed", max_rows=3)(_params(), ids)
    g = gx.RowSparse(ids, jnp.ones((5, 1)), NUM_ROWS)
    with pytest.raises(ValueError, match=r"sparse.coalesce: 4 rows of g were touched, more than "
                                         r"size=2"):
        gx.sparse.coalesce(g, 2)


def test_overflow_raise_under_jit_asks_for_checkify_or_drop_at_trace_time():
    grad_fn = jax.jit(gx.sparse.value_and_grad(_loss, "embed", max_rows=3, invalid_ids="drop"))
    with pytest.raises(ValueError, match=r"traced.*max_rows=3.*overflow='checkify'.*"
                                         r"overflow='drop'.*count_touched_rows"):
        grad_fn(_params(), jnp.array([1, 2, 3, 1]))  # even a batch that fits: it is data
    with pytest.raises(ValueError, match=r"sparse.coalesce.*traced.*size=1"):
        jax.jit(lambda g: gx.sparse.coalesce(g, 1))(gx.RowSparse(jnp.array([1, 1]),
                                                                  jnp.ones((2, 1)), 4))


def test_overflow_checkify_reports_the_count_at_run_time():
    step = jax.jit(checkify.checkify(gx.sparse.value_and_grad(
        _loss, "embed", max_rows=3, overflow="checkify", invalid_ids="checkify")))
    error, _ = step(_params(), jnp.array([1, 2, 3, 1]))
    assert error.get() is None
    error, _ = step(_params(), jnp.array([1, 2, 3, 4, 5]))
    assert "5 rows of the table 'embed' were touched, more than max_rows=3" in error.get()


def test_overflow_drop_keeps_the_first_seen_rows_and_the_others_do_not_move():
    params = _params()
    ids = jnp.array([9, 2, 9, 30, 2, 5, 1])  # first seen: 9, 2, 30, 5, 1
    tx = gx.sgd(0.5)

    @jax.jit
    def step(params, state, ids):
        _, grads = gx.sparse.value_and_grad(_loss, "embed", max_rows=3, overflow="drop",
                                            invalid_ids="drop")(params, ids)
        updates, state = tx.update(grads, state, params)
        return gx.apply_updates(params, updates), state, grads

    new, _, grads = step(params, tx.init(params), ids)
    np.testing.assert_array_equal(grads["embed"].indices, [2, 9, 30])
    dense = jax.jit(jax.grad(_dense_loss))(params, ids)["embed"]
    np.testing.assert_allclose(grads["embed"].values, dense[np.array([2, 9, 30])], rtol=1e-6)
    moved = np.flatnonzero(np.any(np.asarray(new["embed"] != params["embed"]), axis=1))
    np.testing.assert_array_equal(moved, [2, 9, 30])  # rows 5 and 1 lost this step's gradient
    assert int(gx.sparse.count_touched_rows(ids, NUM_ROWS)) == 5


def test_count_touched_rows_leaves_out_padding_and_invalid_ids():
    ids = jnp.array([[4, 4, -1], [NUM_ROWS, 0, 7]])
    assert int(gx.sparse.count_touched_rows(ids, NUM_ROWS)) == 3
    assert int(gx.sparse.count_touched_rows(ids, NUM_ROWS, padding_id=0)) == 2
    assert int(jax.jit(gx.sparse.count_touched_rows, static_argnums=1)(ids, NUM_ROWS)) == 3
    assert int(gx.sparse.count_touched_rows(jnp.zeros((0,), jnp.int32), NUM_ROWS)) == 0


@pytest.mark.parametrize(
    "call, error, words",
    [
        (lambda: gx.sparse.value_and_grad(_loss, "embed", max_rows=0), ValueError,
         ["sparse.value_and_grad", "max_rows", "positive int", "0"]),
        (lambda: gx.sparse.value_and_grad(_loss, "embed", max_rows=True), ValueError,
         ["max_rows", "True"]),
        (lambda: gx.sparse.value_and_grad(_loss, "embed", max_rows=2.5), ValueError,
         ["max_rows", "2.5"]),
        (lambda: gx.sparse.value_and_grad(_loss, "embed", max_rows={"embedding": 4}), ValueError,
         ["max_rows", "'embedding'", "not one of the tables", "embed"]),
        (lambda: gx.sparse.value_and_grad(_loss, "embed", max_rows={"embed": -4}), ValueError,
         ["max_rows['embed']", "-4"]),
        (lambda: gx.sparse.value_and_grad(_loss, "embed", max_rows=4, overflow="clip"),
         ValueError, ["sparse.value_and_grad", "overflow", "'clip'"]),
        (lambda: gx.sparse.coalesce(gx.RowSparse(jnp.array([1]), jnp.ones((1, 1)), 4), size=0),
         ValueError, ["sparse.coalesce", "size", "0"]),
        (lambda: gx.sparse.coalesce(gx.RowSparse(jnp.array([1]), jnp.ones((1, 1)), 4), size=1,
                                    overflow=None), ValueError, ["sparse.coalesce", "overflow"]),
        (lambda: gx.sparse.count_touched_rows(jnp.ones(3), 4), TypeError,
         ["sparse.count_touched_rows", "ids", "float32"]),
        (lambda: gx.sparse.count_touched_rows(jnp.array([1]), 0), ValueError,
         ["sparse.count_touched_rows", "num_rows", "0"]),
        (lambda: gx.sparse.count_touched_rows(jnp.array([1]), 4, padding_id=True), TypeError,
         ["sparse.count_touched_rows", "padding_id", "True"]),
    ],
)
def test_bad_bound_arguments_raise_naming_them(call, error, words):
    with pytest.raises(error) as caught:
        call()
    for word in words:
        assert word in str(caught.value), (word, str(caught.value))
