"""gx.sparse.value_and_grad: the tables' gradients as RowSparse rows, checked against jax.grad live.

The same loss runs both ways: with ``gx.sparse.lookup`` under ``jax.grad``
(dense gradients) and under ``gx.sparse.value_and_grad`` (row-sparse).
"""

import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import checkify

import gradxform as gx

NUM_ROWS, DIM = 50, 3


def _params(seed=0):
    rng = np.random.default_rng(seed)
    return {
        "embed": jnp.asarray(rng.standard_normal((NUM_ROWS, DIM)), jnp.float32),
        "other": {"table": jnp.asarray(rng.standard_normal((20, 2)), jnp.float32)},
        "w": jnp.asarray(rng.standard_normal(DIM), jnp.float32),
        "skip": None,
    }


def _loss(params, ids, lookup=gx.sparse.lookup):
    rows = lookup(params["embed"], ids)  # (batch, fields, DIM)
    logits = jnp.tanh(rows.sum(1)) @ params["w"]
    return jnp.mean(jnp.log1p(jnp.exp(-logits)))


def _ids(seed=1, shape=(16, 4), high=NUM_ROWS):
    rng = np.random.default_rng(seed)
    return jnp.asarray(np.minimum(rng.zipf(1.3, shape) - 1, high - 1), jnp.int32)


@pytest.mark.parametrize("jit", [False, True])
def test_table_gradient_is_the_dense_one_in_rows_and_the_rest_is_dense(jit):
    params, ids = _params(), _ids()
    grad_fn = gx.sparse.value_and_grad(_loss, "embed", invalid_ids="drop")
    dense_fn = jax.value_and_grad(functools.partial(_loss, lookup=functools.partial(
        gx.sparse.lookup, invalid_ids="drop")))
    if jit:
        grad_fn, dense_fn = jax.jit(grad_fn), jax.jit(dense_fn)
    value, grads = grad_fn(params, ids)
    dense_value, dense = dense_fn(params, ids)
    np.testing.assert_array_equal(value, dense_value)
    g = grads["embed"]
    assert isinstance(g, gx.RowSparse) and g.unique and g.indices.shape == (ids.size,)
    np.testing.assert_array_equal(gx.sparse.densify(g), dense["embed"])  # bit for bit
    np.testing.assert_array_equal(grads["w"], dense["w"])
    assert grads["skip"] is None
    np.testing.assert_array_equal(grads["other"]["table"], 0)  # unused, dense zeros as jax gives


def test_two_tables_several_lookups_has_aux_and_lookup_by_name():
    params, ids = _params(), _ids()
    other_ids = jnp.array([[1, 1], [19, 0]])

    def loss(params, ids, other_ids, lookup=gx.sparse.lookup):
        a = lookup(params["embed"], ids).sum((1, 2))
        b = lookup("other/table", other_ids).sum((1, 2)) if lookup is not gx.sparse.lookup else \
            lookup(params["other"]["table"], other_ids).sum((1, 2))
        c = lookup(params["embed"], ids[:2]).sum()
        return jnp.sum(jnp.sin(a[:2] * b)) + c, {"a": a}

    (value, aux), grads = gx.sparse.value_and_grad(loss, ["embed", "other/table"], has_aux=True)(
        params, ids, other_ids)
    (dense_value, dense_aux), dense = jax.value_and_grad(loss, has_aux=True)(params, ids, other_ids)
    np.testing.assert_allclose(value, dense_value, rtol=1e-6)
    np.testing.assert_array_equal(aux["a"], dense_aux["a"])
    for path in (("embed",), ("other", "table")):
        sparse_grad = functools.reduce(lambda t, k: t[k], path, grads)
        dense_grad = functools.reduce(lambda t, k: t[k], path, dense)
        # Two lookups of one table: the sums are the dense ones up to their order.
        np.testing.assert_allclose(sparse_grad.todense(), dense_grad, rtol=1e-6, atol=1e-7)


def test_padding_ids_read_zeros_and_get_no_gradient():
    params = _params()
    ids = jnp.array([[3, -1, 3], [-1, -1, 7]])
    grad_fn = gx.sparse.value_and_grad(_loss, "embed", padding_id=-1)
    value, grads = grad_fn(params, ids)
    dense_lookup = functools.partial(gx.sparse.lookup, padding_id=-1)
    dense_value, dense = jax.value_and_grad(functools.partial(_loss, lookup=dense_lookup))(
        params, ids)
    np.testing.assert_array_equal(value, dense_value)
    np.testing.assert_array_equal(grads["embed"].todense(), dense["embed"])
    kept = np.asarray(grads["embed"].indices)
    assert set(kept[kept < NUM_ROWS]) == {3, 7}
    np.testing.assert_array_equal(dense_lookup(params["embed"], ids)[0, 1], 0)
    # A padding id that is a real row (Keras's mask_zero, torch's padding_idx) is not trained.
    _, grads = gx.sparse.value_and_grad(_loss, "embed", padding_id=0)(params, jnp.array([[0, 5]]))
    assert 0 not in set(np.asarray(grads["embed"].indices).tolist())


def test_invalid_ids_raise_outside_jit_and_ask_for_a_choice_inside():
    params = _params()
    bad = jnp.array([[3, -2], [NUM_ROWS, 4]])
    with pytest.raises(ValueError, match=r"sparse.value_and_grad.*'embed'.*\[0, 50\).*-2.*\(0, 1\)"):
        gx.sparse.value_and_grad(_loss, "embed")(params, bad)
    with pytest.raises(ValueError, match=r"traced.*invalid_ids='checkify'.*invalid_ids='drop'"):
        jax.jit(gx.sparse.value_and_grad(_loss, "embed"))(params, bad)
    # checkify without jit keeps the ids concrete but traces what is computed from them.
    with pytest.raises(ValueError, match=r"traced.*invalid_ids='checkify'"):
        checkify.checkify(gx.sparse.value_and_grad(_loss, "embed"))(params, bad)
    with pytest.raises(ValueError, match=r"sparse.lookup.*-2"):
        gx.sparse.lookup(params["embed"], bad)


def test_checkify_mode_reports_invalid_ids_at_run_time():
    params = _params()
    step = jax.jit(checkify.checkify(gx.sparse.value_and_grad(_loss, "embed",
                                                              invalid_ids="checkify")))
    error, _ = step(params, jnp.array([[3, 4]]))
    assert error.get() is None
    error, _ = step(params, jnp.array([[3, 4000]]))
    assert "outside [0, 50)" in error.get()


def test_drop_mode_drops_and_counts_and_never_writes_another_row():
    params = _params()
    ids = jnp.array([[3, -2], [NUM_ROWS, 4], [2**30, 3]])
    _, grads = jax.jit(gx.sparse.value_and_grad(_loss, "embed", invalid_ids="drop"))(params, ids)
    kept = np.asarray(grads["embed"].indices)
    assert set(kept[kept < NUM_ROWS]) == {3, 4}
    assert int(gx.sparse.count_invalid_ids(ids, NUM_ROWS)) == 3
    rows = gx.sparse.lookup(params["embed"], ids, invalid_ids="drop")
    np.testing.assert_array_equal(rows[0, 1], 0)  # -2 is not row 48
    np.testing.assert_array_equal(rows[1, 0], 0)  # 50 is not clamped to row 49


def test_a_table_used_outside_lookup_raises():
    def tied(params, ids, lookup=gx.sparse.lookup):
        hidden = lookup(params["embed"], ids).sum(1)
        return jnp.sum(hidden @ params["embed"].T)  # a tied output layer

    with pytest.raises(TypeError, match=r"sparse.value_and_grad.*'embed'.*other than through lookup"):
        gx.sparse.value_and_grad(tied, "embed")(_params(), _ids())


@pytest.mark.parametrize(
    "kwargs, error, words",
    [
        ({"tables": "nope"}, ValueError, ["sparse.value_and_grad", "'nope'", "no", "embed"]),
        ({"tables": []}, TypeError, ["tables", "[]"]),
        ({"tables": ["embed", "embed"]}, TypeError, ["distinct"]),
        ({"tables": "embed", "padding_id": 1.5}, TypeError, ["padding_id", "1.5"]),
        ({"tables": "embed", "invalid_ids": "clip"}, ValueError, ["invalid_ids", "'clip'"]),
        ({"tables": "embed", "has_aux": 1}, TypeError, ["has_aux"]),
    ],
)
def test_bad_arguments_raise_naming_them(kwargs, error, words):
    params, ids = _params(), _ids()
    with pytest.raises(error) as caught:
        gx.sparse.value_and_grad(_loss, **kwargs)(params, ids)
    for word in words:
        assert word in str(caught.value), (word, str(caught.value))


def test_a_path_suffix_names_a_table_and_a_vector_is_a_table_of_scalars():
    params = _params()
    _, grads = gx.sparse.value_and_grad(
        lambda p, i, lookup: jnp.sum(lookup(p["other"]["table"], i)), "table")(
            params, jnp.array([1, 1]))
    np.testing.assert_array_equal(grads["other"]["table"].todense()[1], [2, 2])
    _, grads = gx.sparse.value_and_grad(lambda p, i, lookup: jnp.sum(lookup(p["w"], i)), "w")(
        params, jnp.array([2]))
    np.testing.assert_array_equal(grads["w"].todense(), [0, 0, 1])


def test_integer_leaf_or_float_ids_are_refused():
    params = dict(_params(), step=jnp.int32(3))
    with pytest.raises(TypeError, match=r"table 'step' must be a float array"):
        gx.sparse.value_and_grad(_loss, "step")(params, _ids())
    with pytest.raises(TypeError, match=r"ids must be an integer array, got float32"):
        gx.sparse.value_and_grad(_loss, "embed")(params, jnp.ones((2, 2)))


def test_flax_linen_embed_table():
    nn = pytest.importorskip("flax.linen")

    class Model(nn.Module):
        @nn.compact
        def __call__(self, ids, lookup=gx.sparse.lookup):
            embed = nn.Embed(NUM_ROWS, DIM)
            if self.is_initializing():
                embed(ids)
            return nn.Dense(1)(lookup(embed.embedding, ids).mean(1))[:, 0]

    model, ids = Model(), _ids()
    params = model.init(jax.random.key(0), ids)["params"]
    y = jnp.linspace(0, 1, ids.shape[0])

    def loss(params, ids, lookup=gx.sparse.lookup):
        return jnp.mean((model.apply({"params": params}, ids, lookup=lookup) - y) ** 2)

    value, grads = gx.sparse.value_and_grad(loss, "Embed_0/embedding")(params, ids)
    dense_value, dense = jax.value_and_grad(loss)(params, ids)
    np.testing.assert_array_equal(value, dense_value)
    np.testing.assert_array_equal(grads["Embed_0"]["embedding"].todense(),
                                  dense["Embed_0"]["embedding"])
    tx = gx.adagrad(0.1)
    updates, _ = tx.update(grads, tx.init(params), params)
    dense_updates, _ = tx.update(dense, tx.init(params), params)
    new = gx.apply_updates(params, updates)
    np.testing.assert_array_equal(new["Embed_0"]["embedding"],
                                  gx.apply_updates(params, dense_updates)["Embed_0"]["embedding"])


def test_flax_nnx_embed_with_nnx_optimizer():
    nnx = pytest.importorskip("flax.nnx")

    class Model(nnx.Module):
        def __init__(self, rngs):
            self.embed = nnx.Embed(NUM_ROWS, DIM, rngs=rngs)
            self.head = nnx.Linear(DIM, 1, rngs=rngs)

        def __call__(self, ids, lookup=gx.sparse.lookup):
            return self.head(lookup(self.embed.embedding[...], ids).mean(1))[:, 0]

    def make():
        return Model(nnx.Rngs(0))

    ids = _ids()
    y = jnp.linspace(0, 1, ids.shape[0])
    sparse_model, dense_model = make(), make()
    graphdef, _ = nnx.split(sparse_model, nnx.Param)

    def loss(params, ids, lookup=gx.sparse.lookup):
        return jnp.mean((nnx.merge(graphdef, params)(ids, lookup=lookup) - y) ** 2)

    grad_fn = gx.sparse.value_and_grad(loss, "embed/embedding")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        sparse_opt = nnx.Optimizer(sparse_model, gx.adagrad(0.1), wrt=nnx.Param)
        dense_opt = nnx.Optimizer(dense_model, gx.adagrad(0.1), wrt=nnx.Param)
        for _ in range(3):
            _, grads = grad_fn(nnx.state(sparse_model, nnx.Param), ids)
            assert isinstance(grads["embed"]["embedding"].get_value(), gx.RowSparse)
            sparse_opt.update(sparse_model, grads)  # optax.apply_updates adds the rows
            dense_grads = jax.grad(loss)(nnx.state(dense_model, nnx.Param), ids)
            dense_opt.update(dense_model, dense_grads)
    np.testing.assert_allclose(sparse_model.embed.embedding[...], dense_model.embed.embedding[...],
                               rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(sparse_model.head.kernel[...], dense_model.head.kernel[...],
                               rtol=1e-6)


def test_boxed_linen_params_keep_their_boxes_around_the_rowsparse_gradient():
    nn = pytest.importorskip("flax.linen")

    class Model(nn.Module):
        @nn.compact
        def __call__(self, ids, lookup=gx.sparse.lookup):
            embed = nn.Embed(NUM_ROWS, DIM, embedding_init=nn.with_partitioning(
                nn.initializers.normal(), ("rows", None)))
            if self.is_initializing():
                embed(ids)
            return lookup(embed.embedding, ids).sum((1, 2))

    model, ids = Model(), _ids()
    params = model.init(jax.random.key(0), ids)["params"]
    assert isinstance(params["Embed_0"]["embedding"], nn.Partitioned)

    def loss(params, ids, lookup=gx.sparse.lookup):
        return jnp.sum(jnp.sin(model.apply({"params": params}, ids, lookup=lookup)))

    _, grads = gx.sparse.value_and_grad(loss, "Embed_0/embedding")(params, ids)
    boxed = grads["Embed_0"]["embedding"]
    assert isinstance(boxed, nn.Partitioned) and isinstance(boxed.value, gx.RowSparse)
    dense = jax.grad(loss)(params, ids)
    tx = gx.adagrad(0.1)
    sparse_params = gx.apply_updates(params, tx.update(grads, tx.init(params), params)[0])
    dense_params = gx.apply_updates(params, tx.update(dense, tx.init(params), params)[0])
    np.testing.assert_array_equal(sparse_params["Embed_0"]["embedding"].value,
                                  dense_params["Embed_0"]["embedding"].value)


def test_equinox_module_with_integer_leaves_gets_none_for_them():
    eqx = pytest.importorskip("equinox")

    class Model(eqx.Module):
        embed: jax.Array
        w: jax.Array
        calls: jax.Array  # an integer counter, not trained

        def __call__(self, ids, lookup):
            return jnp.sum(jnp.tanh(lookup(self.embed, ids).sum(1) @ self.w))

    params = _params()
    model = Model(params["embed"], params["w"], jnp.int32(3))

    def loss(model, ids, lookup=gx.sparse.lookup):
        return model(ids, lookup)

    _, grads = gx.sparse.value_and_grad(loss, "embed")(model, _ids())
    assert isinstance(grads.embed, gx.RowSparse) and grads.calls is None
    tx = gx.adagrad(0.1)
    state = tx.init(eqx.filter(model, eqx.is_array))
    updates, _ = tx.update(grads, state, model)
    new = gx.apply_updates(model, updates)
    assert int(new.calls) == 3
    assert not np.array_equal(new.embed, model.embed)
