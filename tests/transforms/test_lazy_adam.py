"""scale_by_lazy_adam and lazy_adam: Adam that moves only the rows a row-sparse gradient touches.

* Dense leaves: bit for bit ``scale_by_adam`` (and ``adam``) with the same
  arguments, over 35 jitted steps of a nested tree with a None leaf, float32
  and bfloat16.
* Row-sparse leaves against ``torch.optim.SparseAdam`` run live on an
  ``nn.Embedding(sparse=True)`` table: Zipf-skewed ids with duplicates, the
  gradient taken from torch (coalesced, and raw with its duplicates), 60 steps.
  SparseAdam's rule (torch/optim/_functional.py ``sparse_adam``) is
  ``step_size = lr * sqrt(1 - b2**t) / (1 - b1**t)``,
  ``p -= step_size * m / (sqrt(v) + eps)`` on the touched rows, with ``t``
  advancing every step: ``eps_hat=True``.
* Against TensorFlow Addons' ``LazyAdam`` rule (not installable here), written
  below in float64 NumPy from its documentation.
* Untouched rows, duplicate indices, empty and out-of-range slots, a tree
  mixing a table with dense leaves, hostile arguments, ``eval_shape`` and state
  dtypes.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import gradxform as gx
from gradxform.core import sparse
from gradxform.core.sparse import RowSparse
from gradxform.optimizers.lazy_adam import lazy_adam
from gradxform.transforms.lazy_adam import ScaleByLazyAdamState, scale_by_lazy_adam
from tests.helpers import (
    assert_trees_bitwise_equal,
    gradient_stream,
    random_params,
    run_updates,
)

STEPS = 35

# ----------------------------------------------------------------- dense leaves: scale_by_adam

DENSE_CASES = [
    pytest.param({}, id="defaults"),
    pytest.param({"eps_hat": True}, id="eps_hat"),
    pytest.param({"b1": 0.0, "b2": 0.9, "eps": 1e-3, "eps_root": 1e-6}, id="eps_root"),
    pytest.param({"mu_dtype": jnp.bfloat16, "nu_dtype": jnp.float32, "eps_hat": True},
                 id="bf16_mu"),
]


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16], ids=["f32", "bf16"])
@pytest.mark.parametrize("kwargs", DENSE_CASES)
def test_dense_leaves_are_scale_by_adam_bit_for_bit(kwargs, dtype):
    params = random_params(0, dtype)
    grads = gradient_stream(params, STEPS, seed=4)
    ours, our_state = run_updates(scale_by_lazy_adam(**kwargs), params, grads)
    theirs, their_state = run_updates(gx.scale_by_adam(**kwargs), params, grads)
    assert isinstance(our_state, ScaleByLazyAdamState)
    for step, (a, b) in enumerate(zip(ours, theirs)):
        assert_trees_bitwise_equal(a, b, f"step {step}")
    assert_trees_bitwise_equal(tuple(our_state), tuple(their_state), "state")


def _train(tx, params, grads):
    update = jax.jit(tx.update)
    state = tx.init(params)
    for g in grads:
        updates, state = update(g, state, params)
        params = gx.apply_updates(params, updates)
    return params, state


def test_lazy_adam_dense_is_adam_bit_for_bit():
    params = random_params(1)
    grads = gradient_stream(params, STEPS, seed=5)
    schedule = gx.schedules.exponential_decay(1e-2, transition_steps=5, decay_rate=0.8)
    for lr in (1e-2, schedule):
        ours, _ = _train(lazy_adam(lr, b2=0.99), params, grads)
        theirs, _ = _train(gx.adam(lr, b2=0.99), params, grads)
        assert_trees_bitwise_equal(ours, theirs)
    ours, _ = _train(lazy_adam(1e-2, eps=1e-4, nu_dtype=jnp.float32, eps_hat=True), params, grads)
    theirs, _ = _train(gx.chain(gx.scale_by_adam(eps=1e-4, nu_dtype=jnp.float32, eps_hat=True),
                                gx.scale_by_learning_rate(1e-2)), params, grads)
    assert_trees_bitwise_equal(ours, theirs)


# ------------------------------------------------------ row-sparse: torch.optim.SparseAdam live

NUM_ROWS, DIM, BATCH, TORCH_STEPS = 300, 6, 48, 60


def _zipf_ids(rng, permutation):
    """``BATCH`` ids, Zipf-skewed (many duplicates of a few rows, a long tail rarely touched)."""
    return permutation[np.minimum(rng.zipf(1.15, BATCH) - 1, NUM_ROWS - 1)]


def _torch_sparse_adam_run(lr, b1, b2, eps, seed):
    """SparseAdam on an nn.Embedding(sparse=True): the table after each step, and each step's
    sparse gradient as torch made it (raw, with duplicates) and coalesced."""
    rng = np.random.default_rng(seed)
    init = rng.standard_normal((NUM_ROWS, DIM)).astype(np.float32)
    weights = torch.tensor(rng.standard_normal((BATCH, DIM)).astype(np.float32))
    permutation = rng.permutation(NUM_ROWS)
    emb = torch.nn.Embedding(NUM_ROWS, DIM, sparse=True)
    with torch.no_grad():
        emb.weight.copy_(torch.tensor(init))
    opt = torch.optim.SparseAdam(emb.parameters(), lr=lr, betas=(b1, b2), eps=eps)
    tables, raw, coalesced = [], [], []
    for _ in range(TORCH_STEPS):
        ids = torch.tensor(_zipf_ids(rng, permutation))
        opt.zero_grad()
        (emb(ids) * weights).sum().backward()
        grad = emb.weight.grad
        raw.append((grad._indices()[0].numpy().copy(), grad._values().numpy().copy()))
        grad = grad.coalesce()
        coalesced.append((grad.indices()[0].numpy().copy(), grad.values().numpy().copy()))
        opt.step()
        tables.append(emb.weight.detach().numpy().copy())
    return init, tables, raw, coalesced


def _padded(indices, values, slots):
    """Pads to ``slots`` slots with empty ones (index NUM_ROWS), so one compile serves all steps."""
    pad = slots - indices.shape[0]
    return (np.concatenate([indices, np.full(pad, NUM_ROWS, indices.dtype)]),
            np.concatenate([values, np.zeros((pad, DIM), values.dtype)]))


def _run_ours(tx, init, grads, *, unique):
    @jax.jit
    def step(params, state, indices, values):
        g = {"emb": RowSparse(indices, values, NUM_ROWS, unique=unique)}
        updates, state = tx.update(g, state, params)
        return gx.apply_updates(params, updates), state

    params = {"emb": jnp.asarray(init)}
    state = tx.init(params)
    tables = []
    for indices, values in grads:
        indices, values = _padded(indices, values, BATCH)
        params, state = step(params, state, jnp.asarray(indices, jnp.int32), jnp.asarray(values))
        tables.append(np.asarray(params["emb"]))
    return tables


def _assert_close_along_path(actual, expected, path, context):
    """``|actual - expected| <= 1e-5 |expected| + 2e-5 path``, ``path`` the sum of the |steps|.

    Torch computes ``sqrt(1 - b2**t)`` in float64 (Python floats), we in float32
    like optax, where ``1 - 0.999**t`` cancels: it is off by up to 2e-5
    relatively for t <= 60, so each step is, and a param near 0 that has moved
    far carries the error of its whole path, not of its value.
    """
    bound = 1e-5 * np.abs(expected) + 2e-5 * path
    excess = np.abs(np.asarray(actual, np.float64) - expected) - bound
    worst = np.unravel_index(np.argmax(excess), excess.shape)
    assert excess[worst] <= 0, (
        f"{context}: at {worst} {actual[worst]} vs torch {expected[worst]}, path {path[worst]}")


@pytest.mark.parametrize("hp", [
    pytest.param(dict(lr=0.05, b1=0.9, b2=0.999, eps=1e-8), id="torch-defaults"),
    pytest.param(dict(lr=0.02, b1=0.8, b2=0.95, eps=0.3), id="large-eps"),
])
def test_row_sparse_matches_torch_sparse_adam(hp):
    init, torch_tables, raw, coalesced = _torch_sparse_adam_run(**hp, seed=7)
    tx = lazy_adam(hp["lr"], b1=hp["b1"], b2=hp["b2"], eps=hp["eps"], eps_hat=True)
    ours_coalesced = _run_ours(tx, init, coalesced, unique=True)
    ours_raw = _run_ours(tx, init, raw, unique=False)  # duplicates summed by us
    gaps = []  # how long each touched row had been left alone
    last_touched = np.full(NUM_ROWS, -1)
    previous = [init, init, init]
    path = np.zeros_like(init)  # how far each entry has travelled in torch, step by step
    for step, (indices, _) in enumerate(coalesced):
        untouched = np.setdiff1d(np.arange(NUM_ROWS), indices)
        for name, tables, before in zip(("torch", "ours", "ours (raw)"),
                                        (torch_tables, ours_coalesced, ours_raw), previous):
            np.testing.assert_array_equal(tables[step][untouched], before[untouched],
                                          err_msg=f"{name} moved an untouched row, step {step}")
        path += np.abs(torch_tables[step] - previous[0])
        for ours in (ours_coalesced[step], ours_raw[step]):
            _assert_close_along_path(ours, torch_tables[step], path, f"step {step}")
        previous = [torch_tables[step], ours_coalesced[step], ours_raw[step]]
        gaps.extend(step - last_touched[indices][last_touched[indices] >= 0])
        last_touched[indices] = step
    assert max(gaps) >= 5, "no row came back after several untouched steps"
    assert (last_touched == -1).any(), "every row was touched: no never-touched row to check"
    np.testing.assert_array_equal(ours_coalesced[-1][last_touched == -1], init[last_touched == -1])
    # The comparison tells the epsilon placements apart: optax's form drifts off torch's.
    if hp["eps"] > 1e-3:
        other = _run_ours(lazy_adam(hp["lr"], b1=hp["b1"], b2=hp["b2"], eps=hp["eps"]), init,
                          coalesced, unique=True)
        assert not np.allclose(other[-1], torch_tables[-1], rtol=1e-3, atol=1e-4)


# --------------------------------------------------- TF-Addons LazyAdam, its documented rule

def tfa_lazy_adam_reference(table, grads, lr, b1, b2, eps):
    """tfa.optimizers.LazyAdam's sparse rule in float64 (its ``_resource_apply_sparse``)::

        lr_t = lr * sqrt(1 - b2**t) / (1 - b1**t)
        m[idx] = b1 * m[idx] + (1 - b1) * g;  v[idx] = b2 * v[idx] + (1 - b2) * g**2
        var[idx] -= lr_t * m[idx] / (sqrt(v[idx]) + eps)

    with ``t`` the optimizer's iteration count (every step) and duplicate
    indices summed first (Keras deduplicates an IndexedSlices gradient).
    """
    var = np.asarray(table, np.float64).copy()
    m, v = np.zeros_like(var), np.zeros_like(var)
    history = []
    for t, (indices, values) in enumerate(grads, start=1):
        rows, inverse = np.unique(indices, return_inverse=True)
        g = np.zeros((rows.size,) + var.shape[1:])
        np.add.at(g, inverse, np.asarray(values, np.float64))
        lr_t = lr * np.sqrt(1 - b2**t) / (1 - b1**t)
        m[rows] = b1 * m[rows] + (1 - b1) * g
        v[rows] = b2 * v[rows] + (1 - b2) * g * g
        var[rows] -= lr_t * m[rows] / (np.sqrt(v[rows]) + eps)
        history.append(var.copy())
    return history


@pytest.mark.parametrize("hp", [
    pytest.param(dict(lr=1e-2, b1=0.9, b2=0.999, eps=1e-7), id="tfa-defaults"),
    pytest.param(dict(lr=3e-2, b1=0.5, b2=0.9, eps=0.05), id="large-eps"),
])
def test_row_sparse_matches_tfa_lazy_adam_rule(hp):
    rng = np.random.default_rng(11)
    num_rows, row_shape, slots = 40, (3, 2), 12
    table = rng.standard_normal((num_rows, *row_shape)).astype(np.float32)
    grads = []
    for _ in range(50):
        indices = rng.integers(0, num_rows // 2, slots) * 2  # odd rows are never touched
        grads.append((indices, rng.standard_normal((slots, *row_shape)).astype(np.float32)))
    expected = tfa_lazy_adam_reference(table, grads, **hp)

    tx = lazy_adam(hp["lr"], b1=hp["b1"], b2=hp["b2"], eps=hp["eps"], eps_hat=True)
    step = jax.jit(lambda p, s, g: tx.update(g, s, p))
    params, state = [jnp.asarray(table)], tx.init([jnp.asarray(table)])
    path, previous = np.zeros(table.shape), table.astype(np.float64)
    for t, (indices, values) in enumerate(grads):
        updates, state = step(params, state, [RowSparse(indices, values, num_rows)])
        params = gx.apply_updates(params, updates)
        path += np.abs(expected[t] - previous)
        previous = expected[t]
        _assert_close_along_path(np.asarray(params[0]), expected[t], path, f"step {t}")
    np.testing.assert_array_equal(np.asarray(params[0])[1::2], table[1::2])


# ------------------------------------------ untouched rows, duplicates, empty slots, mixing

def _warm_state(tx, table, rng, steps=4):
    """The state after a few steps that touch every row, so no moment is zero."""
    state = tx.init({"emb": table})
    for _ in range(steps):
        g = jnp.asarray(rng.standard_normal(table.shape), table.dtype)
        _, state = tx.update({"emb": g}, state)
    return state


def test_untouched_rows_keep_moments_and_params_bitwise():
    rng = np.random.default_rng(0)
    table = jnp.asarray(rng.standard_normal((10, 4)), jnp.float32)
    tx = gx.chain(scale_by_lazy_adam(), gx.scale_by_learning_rate(0.1))
    state = _warm_state(tx, table, rng)
    g = RowSparse(jnp.array([7, 2]), jnp.asarray(rng.standard_normal((2, 4)), jnp.float32), 10)
    updates, new_state = jax.jit(tx.update)({"emb": g}, state)
    new_table = gx.apply_updates({"emb": table}, updates)["emb"]
    untouched = np.array([0, 1, 3, 4, 5, 6, 8, 9])
    for before, after in ((state[0].mu, new_state[0].mu), (state[0].nu, new_state[0].nu),
                          ({"emb": table}, {"emb": new_table})):
        np.testing.assert_array_equal(np.asarray(after["emb"])[untouched],
                                      np.asarray(before["emb"])[untouched])
        assert not np.array_equal(np.asarray(after["emb"])[[2, 7]],
                                  np.asarray(before["emb"])[[2, 7]])
    assert int(new_state[0].count) == int(state[0].count) + 1

    # The touched rows get dense Adam's numbers from the same state (same t, same row moments).
    dense = gx.chain(gx.scale_by_adam(), gx.scale_by_learning_rate(0.1))
    adam_state = (gx.ScaleByAdamState(*state[0]), state[1])
    dense_updates, dense_state = jax.jit(dense.update)({"emb": g.todense()}, adam_state)
    np.testing.assert_array_equal(np.asarray(updates["emb"].todense())[[2, 7]],
                                  np.asarray(dense_updates["emb"])[[2, 7]])
    for ours, theirs in zip(new_state[0][1:], dense_state[0][1:]):
        np.testing.assert_array_equal(np.asarray(ours["emb"])[[2, 7]],
                                      np.asarray(theirs["emb"])[[2, 7]])


def test_duplicates_are_summed_before_the_moments():
    # Multiples of 1/8: every sum is exact, whatever the order it is added in.
    rng = np.random.default_rng(1)
    values = rng.integers(-16, 16, (5, 3)).astype(np.float32) / 8
    table = jnp.asarray(rng.standard_normal((8, 3)), jnp.float32)
    tx = scale_by_lazy_adam(b1=0.8, b2=0.9, eps=1e-3)
    state = _warm_state(tx, table, rng)
    update = jax.jit(tx.update)
    with_duplicates = RowSparse(jnp.array([2, 5, 2, 5, 5]), jnp.asarray(values), 8)
    summed = RowSparse(jnp.array([5, 2]), jnp.asarray(np.stack([values[1] + values[3] + values[4],
                                                                values[0] + values[2]])), 8)
    a, state_a = update({"emb": with_duplicates}, state)
    b, state_b = update({"emb": summed}, state)
    assert_trees_bitwise_equal(a["emb"].todense(), b["emb"].todense())
    assert_trees_bitwise_equal(tuple(state_a), tuple(state_b))


def test_empty_and_out_of_range_slots_write_nothing():
    rng = np.random.default_rng(2)
    table = jnp.asarray(rng.standard_normal((6, 2)), jnp.float32)
    # eps = eps_root = 0: an empty slot's step would be 0 / 0 if it were computed as a row.
    tx = scale_by_lazy_adam(eps=0.0)
    state = _warm_state(tx, table, rng)

    @jax.jit
    def step(indices, values, state):  # traced indices: no eager range check
        return tx.update({"emb": RowSparse(indices, values, 6)}, state)

    values = jnp.asarray(rng.standard_normal((5, 2)), jnp.float32)
    indices = jnp.array([6, 3, 6, 17, -1])  # empty, row 3, empty, past the end, negative
    updates, new_state = step(indices, values, state)
    only_row_3, expected_state = step(jnp.array([3]), values[1:2], state)
    assert_trees_bitwise_equal(updates["emb"].todense(), only_row_3["emb"].todense())
    assert_trees_bitwise_equal(tuple(new_state), tuple(expected_state))
    assert np.isfinite(np.asarray(updates["emb"].values)).all()
    valid = np.asarray(sparse.valid_rows(updates["emb"]))
    np.testing.assert_array_equal(np.asarray(updates["emb"].values)[~valid], 0)
    # No valid slot at all: the moments stay, the count advances.
    updates, empty_state = step(jnp.array([6, 6]), values[:2], state)
    assert not np.asarray(updates["emb"].todense()).any()
    assert_trees_bitwise_equal((empty_state.mu, empty_state.nu), (state.mu, state.nu))
    assert int(empty_state.count) == int(state.count) + 1


def test_a_table_and_dense_leaves_in_one_update():
    rng = np.random.default_rng(3)
    dense_params = random_params(5)
    table = jnp.asarray(rng.standard_normal((20, 4)), jnp.float32)
    params = {"emb": table, "net": dense_params, "frozen": None}
    tx = lazy_adam(1e-2, eps_hat=True)
    reference = gx.chain(gx.scale_by_adam(eps_hat=True), gx.scale_by_learning_rate(1e-2))
    step = jax.jit(lambda p, s, g: tx.update(g, s, p))
    ref_step = jax.jit(lambda p, s, g: reference.update(g, s, p))
    state, ref_state = tx.init(params), reference.init(dense_params)
    net_grads = gradient_stream(dense_params, STEPS, seed=6)
    for t in range(STEPS):
        indices = rng.integers(0, 10, 7)  # rows 10..19 never touched
        g = {"emb": RowSparse(indices, rng.standard_normal((7, 4)).astype(np.float32), 20),
             "net": net_grads[t], "frozen": None}
        updates, state = step(params, state, g)
        params = gx.apply_updates(params, updates)
        ref_updates, ref_state = ref_step(dense_params, ref_state, net_grads[t])
        dense_params = gx.apply_updates(dense_params, ref_updates)
        assert_trees_bitwise_equal(params["net"], dense_params, f"step {t}")
    assert params["frozen"] is None and state[0].mu["frozen"] is None
    np.testing.assert_array_equal(np.asarray(params["emb"])[10:], np.asarray(table)[10:])
    assert not np.array_equal(np.asarray(params["emb"])[:10], np.asarray(table)[:10])


# ------------------------------------------------------- arguments, registry, shapes, dtypes

HOSTILE = [
    ("b1", 1.5, ValueError), ("b1", -0.1, ValueError), ("b1", 1.0, ValueError),
    ("b2", float("nan"), ValueError), ("b2", "0.9", TypeError), ("eps", -1, ValueError),
    ("eps", float("inf"), ValueError), ("eps_root", -1e-3, ValueError),
    ("mu_dtype", "int32", ValueError), ("nu_dtype", "not_a_dtype", TypeError),
    ("eps_hat", 1, TypeError),
]


@pytest.mark.parametrize("argument,value,exc", HOSTILE, ids=lambda x: repr(x)[:12])
def test_hostile_arguments_raise_naming_the_function(argument, value, exc):
    with pytest.raises(exc, match=f"^scale_by_lazy_adam: {argument}") as raised:
        scale_by_lazy_adam(**{argument: value})
    assert repr(value) in str(raised.value)
    with pytest.raises(exc, match=f"^lazy_adam: {argument}"):
        lazy_adam(0.1, **{argument: value})


@pytest.mark.parametrize("value,exc", [(-0.1, ValueError), ("0.1", TypeError),
                                       (float("nan"), ValueError)])
def test_hostile_learning_rate(value, exc):
    with pytest.raises(exc, match="^lazy_adam: learning_rate"):
        lazy_adam(value)


def test_declared_lazy_and_adam_refuses_row_sparse():
    assert sparse.ROW_SPARSE_RULES["scale_by_lazy_adam"] == "lazy"
    g = {"emb": RowSparse(jnp.array([1]), jnp.ones((1, 2)), 3)}
    tx = gx.scale_by_adam()
    with pytest.raises(TypeError, match="scale_by_lazy_adam"):
        tx.update(g, tx.init({"emb": jnp.zeros((3, 2))}))


def test_eval_shape_and_state_dtypes():
    params = {"emb": jnp.zeros((12, 3), jnp.bfloat16), "w": jnp.zeros((2, 2), jnp.float32),
              "none": None}
    tx = lazy_adam(1e-3, mu_dtype=jnp.bfloat16)
    abstract = jax.eval_shape(tx.init, params)
    state = tx.init(params)
    assert jax.tree.structure(abstract) == jax.tree.structure(state)
    for a, s in zip(jax.tree.leaves(abstract), jax.tree.leaves(state)):
        assert a.shape == s.shape and a.dtype == s.dtype
    inner = state[0]
    assert inner.count.dtype == jnp.int32 and inner.mu["none"] is None
    assert inner.mu["emb"].dtype == jnp.bfloat16 and inner.mu["w"].dtype == jnp.bfloat16
    assert inner.nu["emb"].dtype == jnp.bfloat16 and inner.nu["w"].dtype == jnp.float32
    # The table's state is the same dense arrays whether its gradient is dense or row-sparse.
    rows = RowSparse(jnp.array([0, 5, 5]), jnp.ones((3, 3), jnp.bfloat16), 12)
    step = jax.jit(lambda g, s: tx.update(g, s, params))
    after_sparse = step({"emb": rows, "w": jnp.ones((2, 2)), "none": None}, state)
    after_dense = step({"emb": rows.todense(), "w": jnp.ones((2, 2)), "none": None}, state)
    assert after_sparse[0]["emb"].dtype == jnp.bfloat16
    for a, b in zip(jax.tree.leaves(after_sparse[1]), jax.tree.leaves(after_dense[1])):
        assert a.shape == b.shape and a.dtype == b.dtype
    # Lazy and dense agree on the touched rows (same state, same step).
    np.testing.assert_array_equal(np.asarray(after_sparse[1][0].mu["emb"], np.float32)[[0, 5]],
                                  np.asarray(after_dense[1][0].mu["emb"], np.float32)[[0, 5]])
