"""Transformations on RowSparse leaves: exact rules equal the dense path, lazy rules touch rows only.

The dense reference is the same gradxform transformation given the dense
gradient (``densify`` of the same RowSparse, which equals JAX's gradient of a
lookup: tests/core/test_sparse.py); torch.optim.Adagrad with
``nn.Embedding(sparse=True)`` is run live for Adagrad.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import gradxform as gx

NUM_ROWS, DIM, SLOTS = 40, 3, 24


def _params(seed=0):
    rng = np.random.default_rng(seed)
    return {
        "embed": jnp.asarray(rng.standard_normal((NUM_ROWS, DIM)), jnp.float32),
        "dense": {"w": jnp.asarray(rng.standard_normal((3, 2)), jnp.float32), "none": None},
    }


def _sparse_grads(step, num_rows=NUM_ROWS, rows_used=NUM_ROWS // 2):
    """Ids with duplicates (a Zipf skew over the first rows_used rows) and empty slots."""
    rng = np.random.default_rng(100 + step)
    ids = np.minimum(rng.zipf(1.5, SLOTS) - 1, rows_used - 1)
    ids[rng.random(SLOTS) < 0.15] = num_rows  # empty slots
    values = rng.standard_normal((SLOTS, DIM)) * rng.uniform(0.1, 3)
    return {
        "embed": gx.RowSparse(jnp.asarray(ids, jnp.int32), jnp.asarray(values, jnp.float32),
                              num_rows),
        "dense": {"w": jnp.asarray(rng.standard_normal((3, 2)), jnp.float32), "none": None},
    }


def _densified(grads):
    return jax.tree.map(lambda g: g.todense() if isinstance(g, gx.RowSparse) else g, grads,
                        is_leaf=lambda g: isinstance(g, gx.RowSparse))


def _run(tx, grads_of_step, steps=8, params=None):
    """(updates per step, final state, final params), all jitted; updates densified."""
    params = _params() if params is None else params
    state = tx.init(params)

    @jax.jit
    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return gx.apply_updates(params, updates), state, _densified(updates)

    history = []
    for i in range(steps):
        params, state, updates = step(params, state, grads_of_step(i))
        history.append(updates)
    return history, state, params


EXACT = {
    "adagrad": lambda: gx.adagrad(0.1),
    "adagrad_zero_init": lambda: gx.adagrad(0.3, initial_accumulator_value=0.0, eps=0.0),
    "keras_adagrad": lambda: gx.keras.adagrad(0.05),
    "keras_adagrad_clipvalue_loss_scale": lambda: gx.keras.adagrad(
        0.05, clipvalue=0.5, loss_scale_factor=8.0),
    "sgd": lambda: gx.sgd(0.1),
    "sgd_schedule": lambda: gx.sgd(gx.schedules.exponential_decay(0.1, 3, 0.5)),
    "scale_clip": lambda: gx.chain(gx.clip(0.4), gx.scale(-0.2)),
    "injected_adagrad": lambda: gx.inject_hyperparams(gx.adagrad)(learning_rate=0.1),
}
# Norms sum the touched rows instead of the whole table: the same terms, another order.
EXACT_TO_ROUNDING = {
    "keras_adagrad_clipnorm": lambda: gx.keras.adagrad(0.05, clipnorm=0.5),
    "keras_adagrad_global_clipnorm": lambda: gx.keras.adagrad(0.05, global_clipnorm=0.5),
    "clip_by_global_norm_sgd": lambda: gx.chain(gx.clip_by_global_norm(1.0), gx.sgd(0.1)),
}


@pytest.mark.parametrize("name", sorted(EXACT))
def test_exact_rules_give_the_dense_updates_and_state_bit_for_bit(name):
    sparse_updates, sparse_state, sparse_params = _run(EXACT[name](), _sparse_grads)
    dense_updates, dense_state, dense_params = _run(
        EXACT[name](), lambda i: _densified(_sparse_grads(i)))
    for got, want in zip(sparse_updates, dense_updates):
        np.testing.assert_array_equal(got["embed"], want["embed"])
        np.testing.assert_array_equal(got["dense"]["w"], want["dense"]["w"])
    for got, want in zip(jax.tree.leaves(sparse_state), jax.tree.leaves(dense_state)):
        np.testing.assert_array_equal(got, want)
    # XLA may fuse the dense p + u into one rounding (an FMA); the scatter adds exactly.
    np.testing.assert_allclose(sparse_params["embed"], dense_params["embed"], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", sorted(EXACT_TO_ROUNDING))
def test_norm_based_rules_give_the_dense_numbers_to_rounding(name):
    sparse_updates, sparse_state, _ = _run(EXACT_TO_ROUNDING[name](), _sparse_grads)
    dense_updates, dense_state, _ = _run(
        EXACT_TO_ROUNDING[name](), lambda i: _densified(_sparse_grads(i)))
    for got, want in zip(sparse_updates, dense_updates):
        np.testing.assert_allclose(got["embed"], want["embed"], rtol=1e-5, atol=1e-7)
    for got, want in zip(jax.tree.leaves(sparse_state), jax.tree.leaves(dense_state)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


def test_global_norm_counts_each_row_once_after_summing_duplicates():
    g = gx.RowSparse(jnp.array([1, 1, 2, NUM_ROWS]), jnp.array([[3.0], [1.0], [3.0], [9.0]]),
                     NUM_ROWS)
    tx = gx.record_global_norm()
    _, state = tx.update({"t": g}, tx.init({"t": jnp.zeros((NUM_ROWS, 1))}))
    assert float(gx.tree_get(state, "global_norm")) == 5.0  # sqrt((3+1)**2 + 3**2); not 10
    assert float(gx.tree_global_norm({"t": g})) == 5.0
    clipped, _ = gx.clip_by_global_norm(1.0).update({"t": g}, gx.EmptyState())
    np.testing.assert_allclose(clipped["t"].todense()[1:3, 0], [0.8, 0.6], rtol=1e-6)


def test_lazy_momentum_moves_only_touched_rows():
    tx = gx.sgd(0.1, momentum=0.9)
    params = _params()
    state = tx.init(params)
    first = gx.RowSparse(jnp.array([2, 5]), jnp.ones((2, DIM)), NUM_ROWS)
    second = gx.RowSparse(jnp.array([5, NUM_ROWS]), 2 * jnp.ones((2, DIM)), NUM_ROWS)
    updates, state = tx.update({"embed": first, "dense": {"w": jnp.zeros((3, 2)), "none": None}},
                               state, params)
    updates, state = tx.update({"embed": second, "dense": {"w": jnp.zeros((3, 2)), "none": None}},
                               state, params)
    trace = np.asarray(gx.tree_get(state, "trace")["embed"])
    np.testing.assert_allclose(trace[5], 2 + 0.9 * 1.0)  # touched twice
    np.testing.assert_array_equal(trace[2], 1.0)  # lazy: not decayed while untouched
    np.testing.assert_array_equal(np.delete(trace, [2, 5], axis=0), 0)
    dense = updates["embed"].todense()
    np.testing.assert_allclose(dense[5], -0.1 * 2.9, rtol=1e-6)
    np.testing.assert_array_equal(dense[2], 0)  # the dense rule would step row 2 by -0.09


def test_decoupled_weight_decay_shrinks_touched_rows_only():
    params = _params()
    tx = gx.chain(gx.adagrad(0.1), gx.decoupled_weight_decay(0.5, 0.1))
    g = gx.RowSparse(jnp.array([3]), jnp.zeros((1, DIM)), NUM_ROWS)
    grads = {"embed": g, "dense": {"w": jnp.zeros((3, 2)), "none": None}}
    updates, _ = tx.update(grads, tx.init(params), params)
    dense = updates["embed"].todense()
    np.testing.assert_allclose(dense[3], -params["embed"][3] * 0.05, rtol=1e-6)
    np.testing.assert_array_equal(np.delete(np.asarray(dense), 3, axis=0), 0)
    np.testing.assert_allclose(updates["dense"]["w"], -params["dense"]["w"] * 0.05, rtol=1e-6)


def test_masked_partition_freeze_and_apply_if_finite_route_rowsparse_leaves():
    params, grads = _params(), _sparse_grads(0)
    dense_grads = _densified(grads)
    routed = {
        "masked": gx.masked(gx.adagrad(0.1), {"embed": True, "dense": False}),
        "partition": gx.partition({"a": gx.adagrad(0.1), "b": gx.adam(0.1)},
                                  {"embed": "a", "dense": "b"}),
        "patterns": gx.partition_by_patterns([("embed", gx.adagrad(0.1))], default=gx.adam(0.1)),
        "finite": gx.apply_if_finite(gx.adagrad(0.1), 3),
    }
    for name, tx in routed.items():
        sparse_updates, _ = jax.jit(tx.update)(grads, tx.init(params), params)
        dense_updates, _ = jax.jit(tx.update)(dense_grads, tx.init(params), params)
        assert isinstance(sparse_updates["embed"], gx.RowSparse), name
        np.testing.assert_array_equal(sparse_updates["embed"].todense(), dense_updates["embed"])
        np.testing.assert_array_equal(sparse_updates["dense"]["w"], dense_updates["dense"]["w"])
    # Masked out, the RowSparse leaf passes through as it came.
    tx = gx.masked(gx.adam(0.1), {"embed": False, "dense": True})
    out, _ = tx.update(grads, tx.init(params), params)
    assert out["embed"] is grads["embed"]
    # Frozen rows do not move.
    tx = gx.chain(gx.adagrad(0.1), gx.freeze({"embed": True, "dense": False}))
    out, _ = tx.update(grads, tx.init(params), params)
    np.testing.assert_array_equal(gx.apply_updates(params, out)["embed"], params["embed"])


@pytest.mark.allows_nan
def test_apply_if_finite_skips_a_step_with_a_nan_row_and_writes_nothing():
    params = _params()
    tx = gx.apply_if_finite(gx.adagrad(0.1), 3)
    bad = gx.RowSparse(jnp.array([1, 2]), jnp.array([[jnp.nan] * DIM, [1.0] * DIM]), NUM_ROWS)
    grads = {"embed": bad, "dense": {"w": jnp.ones((3, 2)), "none": None}}
    state = tx.init(params)
    updates, new_state = jax.jit(tx.update)(grads, state, params)
    assert int(gx.tree_get(new_state, "notfinite_count")) == 1
    new_params = gx.apply_updates(params, updates)
    np.testing.assert_array_equal(new_params["embed"], params["embed"])
    np.testing.assert_array_equal(gx.tree_get(new_state, "sum_of_squares")["embed"],
                                  gx.tree_get(state, "sum_of_squares")["embed"])


@pytest.mark.parametrize(
    "make, owner",
    [
        (lambda: gx.adam(0.1), "scale_by_adam"),
        (lambda: gx.rmsprop(0.1), "scale_by_rms"),
        (lambda: gx.chain(gx.clip_by_block_rms(1.0), gx.sgd(0.1)), "clip_by_block_rms"),
        (lambda: gx.keras.adagrad(0.1, use_ema=True), "params_ema"),
        (lambda: gx.keras.adagrad(0.1, gradient_accumulation_steps=2), "accumulate_gradients"),
        (lambda: gx.stateless_with_tree_map(lambda g, p: g), "stateless_with_tree_map"),
        (lambda: gx.chain(optax.scale(0.1)), "chain"),
    ],
)
def test_a_rule_without_a_sparse_form_refuses_rowsparse_by_name(make, owner):
    tx, params = make(), _params()
    with pytest.raises(TypeError) as caught:
        tx.update(_sparse_grads(0), tx.init(params), params)
    message = str(caught.value)
    for word in (owner, "row-sparse", "['embed']", "todense", "scale_by_adagrad"):
        assert word in message, (word, message)


def test_rows_are_written_in_place_without_a_dense_update():
    num_rows = 200_000  # 200k x 8 f32: 6.4 MB per table-sized buffer
    params = {"embed": jnp.zeros((num_rows, 8))}
    tx = gx.adagrad(0.1)
    grads = {"embed": gx.RowSparse(jnp.arange(64), jnp.ones((64, 8)), num_rows)}

    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return gx.apply_updates(params, updates), state

    # jax_debug_nans (on in this suite) turns donation off; a user's step has it on.
    with jax.debug_nans(False):
        compiled = jax.jit(step, donate_argnums=(0, 1)).lower(
            params, tx.init(params), grads).compile()
    memory = compiled.memory_analysis()
    table_bytes = num_rows * 8 * 4
    assert memory.temp_size_in_bytes < table_bytes / 10, memory
    assert memory.alias_size_in_bytes >= 2 * table_bytes, memory  # params and accumulator


@settings(max_examples=25, deadline=None)
@given(
    ids=st.lists(st.integers(0, 9), min_size=1, max_size=12),  # 9 is the padding slot
    scale=st.floats(0.01, 100.0),
    name=st.sampled_from(["adagrad", "sgd"]),
)
def test_property_sparse_equals_dense_for_adagrad_and_sgd(ids, scale, name):
    num_rows = 9
    rng = np.random.default_rng(len(ids))
    values = jnp.asarray(scale * rng.standard_normal((len(ids), 2)), jnp.float32)
    g = gx.RowSparse(jnp.asarray(ids, jnp.int32), values, num_rows)
    params = {"t": jnp.asarray(rng.standard_normal((num_rows, 2)), jnp.float32)}
    tx = gx.adagrad(0.1) if name == "adagrad" else gx.sgd(0.1)
    state = tx.init(params)
    sparse_updates, sparse_state = tx.update({"t": g}, state, params)
    dense_updates, dense_state = tx.update({"t": g.todense()}, state, params)
    np.testing.assert_array_equal(sparse_updates["t"].todense(), dense_updates["t"])
    for got, want in zip(jax.tree.leaves(sparse_state), jax.tree.leaves(dense_state)):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(gx.apply_updates(params, sparse_updates)["t"],
                                  gx.apply_updates(params, dense_updates)["t"])


def test_adagrad_matches_torch_sparse_adagrad():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    num_rows, dim, lr, init = 300, 4, 0.05, 0.1
    table = rng.standard_normal((num_rows, dim)).astype(np.float32)
    weights = rng.standard_normal((64, dim)).astype(np.float32)
    embedding = torch.nn.Embedding(num_rows, dim, sparse=True)
    with torch.no_grad():
        embedding.weight.copy_(torch.from_numpy(table))
    # torch puts eps outside the root; with eps=0 here and in ours the rules are the same.
    optimizer = torch.optim.Adagrad(embedding.parameters(), lr=lr,
                                    initial_accumulator_value=init, eps=0.0)
    tx = gx.adagrad(lr, initial_accumulator_value=init, eps=0.0)
    params = {"embed": jnp.asarray(table)}
    state = tx.init(params)
    step = jax.jit(lambda p, s, g: (lambda u, s: (gx.apply_updates(p, u), s))(*tx.update(g, s, p)))
    for _ in range(60):
        ids = np.minimum(rng.zipf(1.3, 64) - 1, num_rows - 1)
        optimizer.zero_grad()
        loss = (embedding(torch.from_numpy(ids)) * torch.from_numpy(weights)).sum()
        loss.backward()
        grad = embedding.weight.grad.coalesce()
        g = gx.RowSparse(jnp.asarray(grad.indices()[0].numpy(), jnp.int32),
                         jnp.asarray(grad.values().numpy()), num_rows)
        optimizer.step()
        params, state = step(params, state, {"embed": g})
    np.testing.assert_allclose(params["embed"], embedding.weight.detach().numpy(), rtol=1e-5,
                               atol=1e-6)
    torch_sum = optimizer.state[embedding.weight]["sum"].numpy()
    np.testing.assert_allclose(gx.tree_get(state, "sum_of_squares")["embed"], torch_sum,
                               rtol=1e-5)
