"""``gx.torch.SparseAdam`` against ``torch.optim.SparseAdam`` on an ``nn.Embedding(sparse=True)``.

torch's run is ``tests/transforms/test_lazy_adam.py``'s: a 300 x 6 table, 48
Zipf-skewed ids a step (many duplicates, a long tail of rows rarely or never
touched), the loss ``(emb(ids) * weights).sum()``, 60 steps. It records each
step's raw sparse gradient, whose indices are the ids and whose values are
the weights (the cotangent of each looked-up row). Our side differentiates
the same loss with ``gx.sparse.value_and_grad``, which gives the table's
gradient as ``gx.RowSparse`` rows (duplicates summed), and steps the preset.

Compared after every step at rtol 1e-5 (the harness's `assert_leaves_close`):
torch computes ``sqrt(1 - b2**t) / (1 - b1**t)`` in float64, and the preset
computes the corrections to float32's precision (``accurate_bias_correction``).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import gradxform as gx
from gradxform.torch.sparse_adam import SparseAdam
from tests.pytorch.harness import assert_leaves_close
from tests.transforms.test_lazy_adam import (
    NUM_ROWS,
    TORCH_STEPS,
    _torch_sparse_adam_run,
)


def _loss(params, ids, cotangents, lookup=gx.sparse.lookup):
    return jnp.sum(lookup(params["emb"], ids) * cotangents)


def _run_ours(tx, init, raw):
    """The table after each step, the gradient taken by gx.sparse.value_and_grad under jit."""
    grad_fn = gx.sparse.value_and_grad(_loss, "emb", invalid_ids="drop")

    @jax.jit
    def step(params, state, ids, cotangents):
        _, grads = grad_fn(params, ids, cotangents)
        updates, state = tx.update(grads, state, params)
        return gx.apply_updates(params, updates), state, grads["emb"]

    params = {"emb": jnp.asarray(init)}
    state = tx.init(params)
    tables = []
    for ids, cotangents in raw:
        params, state, grad = step(params, state, jnp.asarray(ids, jnp.int32),
                                   jnp.asarray(cotangents))
        assert isinstance(grad, gx.RowSparse)
        tables.append(np.asarray(params["emb"]))
    return tables


def _assert_trajectory_close(ours, torch_tables, init, raw):
    touched = np.zeros(NUM_ROWS, bool)
    for step, (mine, theirs) in enumerate(zip(ours, torch_tables, strict=True)):
        assert_leaves_close([mine], [theirs], f"step {step}")
        touched[raw[step][0]] = True
    # Rows no id ever touched have not moved at all, on either side.
    assert (~touched).any()
    np.testing.assert_array_equal(ours[-1][~touched], init[~touched])
    np.testing.assert_array_equal(torch_tables[-1][~touched], init[~touched])


@pytest.mark.parametrize("hp", [
    pytest.param(dict(lr=0.05, b1=0.9, b2=0.999, eps=1e-8), id="torch-betas"),
    pytest.param(dict(lr=0.02, b1=0.8, b2=0.95, eps=0.3), id="large-eps"),
])
def test_sparse_adam_matches_torch(hp):
    init, torch_tables, raw, _ = _torch_sparse_adam_run(**hp, seed=7)
    assert len(raw) == TORCH_STEPS
    tx = SparseAdam(lr=hp["lr"], betas=(hp["b1"], hp["b2"]), eps=hp["eps"])
    _assert_trajectory_close(_run_ours(tx, init, raw), torch_tables, init, raw)


def test_sparse_adam_maximize_matches_torch(monkeypatch):
    """The same run with torch's ``maximize=True`` (SparseAdam negates the gradient first)."""
    monkeypatch.setattr(torch.optim, "SparseAdam",
                        functools.partial(torch.optim.SparseAdam, maximize=True))
    init, torch_tables, raw, _ = _torch_sparse_adam_run(lr=0.05, b1=0.9, b2=0.99, eps=1e-6,
                                                        seed=3)
    tx = SparseAdam(lr=0.05, betas=(0.9, 0.99), eps=1e-6, maximize=True)
    _assert_trajectory_close(_run_ours(tx, init, raw), torch_tables, init, raw)


def test_dense_gradients_are_sparse_adam_on_every_row():
    """torch refuses a dense gradient; here it means every row is touched: the numbers of torch's
    SparseAdam given a sparse gradient that lists every row."""
    rng = np.random.default_rng(5)
    num_rows, dim = 20, 3
    init = rng.standard_normal((num_rows, dim)).astype(np.float32)
    grads = [rng.standard_normal((num_rows, dim)).astype(np.float32) for _ in range(TORCH_STEPS)]
    weight = torch.nn.Parameter(torch.tensor(init))
    optimizer = torch.optim.SparseAdam([weight], lr=0.05, betas=(0.8, 0.99), eps=1e-3)
    weight.grad = torch.tensor(grads[0])
    with pytest.raises(RuntimeError, match="does not support dense gradients"):
        optimizer.step()
    every_row = torch.arange(num_rows)[None]
    torch_tables = []
    for g in grads:
        weight.grad = torch.sparse_coo_tensor(every_row, torch.tensor(g), (num_rows, dim),
                                              check_invariants=True)
        optimizer.step()
        torch_tables.append(weight.detach().numpy().copy())

    tx = SparseAdam(lr=0.05, betas=(0.8, 0.99), eps=1e-3)
    step = jax.jit(lambda p, s, g: (lambda u, s2: (gx.apply_updates(p, u), s2))(
        *tx.update(g, s, p)))
    params = {"emb": jnp.asarray(init)}
    state = tx.init(params)
    for t, g in enumerate(grads):
        params, state = step(params, state, {"emb": jnp.asarray(g)})
        assert_leaves_close([params["emb"]], [torch_tables[t]], f"step {t}")
    np.testing.assert_allclose(gx.tree_get(state, "mu")["emb"],
                               optimizer.state[weight]["exp_avg"].numpy(), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(gx.tree_get(state, "nu")["emb"],
                               optimizer.state[weight]["exp_avg_sq"].numpy(), rtol=1e-5,
                               atol=1e-7)


@pytest.mark.parametrize("kwargs, exc", [
    (dict(lr=0.0), ValueError), (dict(lr=-1e-3), ValueError), (dict(eps=0.0), ValueError),
    (dict(betas=(1.0, 0.999)), ValueError), (dict(betas=(0.9, -0.1)), ValueError),
    (dict(betas=0.9), TypeError), (dict(maximize=1), TypeError),
])
def test_bad_arguments_raise_naming_the_preset_and_the_argument(kwargs, exc):
    (argument,) = kwargs
    with pytest.raises(exc) as caught:
        SparseAdam(**kwargs)
    message = str(caught.value)
    assert "torch.SparseAdam" in message and argument in message, message
    if exc is ValueError:  # torch's own checks refuse the same values
        with pytest.raises(ValueError):
            torch.optim.SparseAdam([torch.nn.Parameter(torch.ones(2, 2))], **kwargs)
