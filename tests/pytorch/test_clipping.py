"""``gx.torch.clip_grad_norm_`` / ``clip_grad_value_`` and ``gx.clip_by_global_p_norm``
against ``torch.nn.utils`` run live, and alone against a float64 reference."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from jax.experimental import checkify

import gradxform as gx
from tests.pytorch.harness import gradient_stream, initial_params


def _torch_clipped(grads, clip, *args):
    leaves = [torch.nn.Parameter(torch.zeros(np.shape(g))) for g in jax.tree.leaves(grads)]
    for p, g in zip(leaves, jax.tree.leaves(grads)):
        p.grad = torch.tensor(np.asarray(g))
    getattr(torch.nn.utils, clip)(leaves, *args)
    return [p.grad.numpy() for p in leaves]


def _ours(tx, grads):
    out, _ = jax.jit(tx.update)(jax.tree.map(jnp.asarray, grads), tx.init(None))
    return [np.asarray(x) for x in jax.tree.leaves(out)]


@pytest.mark.parametrize("norm_type", [1.0, 2.0, 3.5, math.inf, "inf"])
@pytest.mark.parametrize("max_norm", [1e-3, 0.5, 5.0, 1e4])
def test_clip_grad_norm_matches_torch(norm_type, max_norm):
    grads = gradient_stream(steps=6)[5]  # a x30 step: every max_norm but the largest clips
    expected = _torch_clipped(grads, "clip_grad_norm_", max_norm, norm_type)
    ours = _ours(gx.torch.clip_grad_norm_(max_norm, norm_type), grads)
    for a, b in zip(ours, expected, strict=True):
        np.testing.assert_allclose(a, b, rtol=2e-6, atol=1e-9)


def test_clip_grad_value_matches_torch():
    grads = gradient_stream(steps=6)[5]
    expected = _torch_clipped(grads, "clip_grad_value_", 0.7)
    for a, b in zip(_ours(gx.torch.clip_grad_value_(0.7), grads), expected, strict=True):
        np.testing.assert_array_equal(a, b)


def test_clipping_then_adamw_over_sixty_steps_matches_torch():
    leaves = [torch.nn.Parameter(torch.tensor(x)) for x in jax.tree.leaves(initial_params())]
    opt = torch.optim.AdamW(leaves, lr=1e-2, weight_decay=0.05)
    tx = gx.chain(gx.torch.clip_grad_norm_(2.0), gx.torch.AdamW(lr=1e-2, weight_decay=0.05))
    params = jax.tree.map(jnp.asarray, initial_params())
    state = tx.init(params)

    @jax.jit
    def step(params, state, g):
        updates, state = tx.update(g, state, params)
        return gx.apply_updates(params, updates), state

    for g in gradient_stream():
        for p, gi in zip(leaves, jax.tree.leaves(g)):
            p.grad = torch.tensor(gi)
        torch.nn.utils.clip_grad_norm_(leaves, 2.0)
        opt.step()
        params, state = step(params, state, jax.tree.map(jnp.asarray, g))
        for a, b in zip(jax.tree.leaves(params), leaves):
            np.testing.assert_allclose(a, b.detach().numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("p", [1.0, 2.0, 3.0, math.inf])
def test_p_norm_clip_against_float64(p):
    grads = {"a": jnp.array([[3.0, -4.0], [1.0, 0.5]]), "b": jnp.array([-2.0, 7.0])}
    flat = np.concatenate([np.asarray(x, np.float64).ravel() for x in jax.tree.leaves(grads)])
    norm = np.max(np.abs(flat)) if math.isinf(p) else np.sum(np.abs(flat) ** p) ** (1 / p)
    for eps in (0.0, 1e-3):
        scale = min(1.0, 2.0 / (norm + eps))
        ours = _ours(gx.clip_by_global_p_norm(2.0, p, eps), grads)
        for a, x in zip(ours, jax.tree.leaves(grads)):
            np.testing.assert_allclose(a, np.asarray(x, np.float64) * scale, rtol=1e-6)


def test_l2_without_offset_is_clip_by_global_norm_to_rounding():
    # The same scale c / n; XLA may fuse the multiply differently in the two programs.
    for g in gradient_stream(steps=8):
        for a, b in zip(_ours(gx.clip_by_global_p_norm(1.5), g),
                        _ours(gx.clip_by_global_norm(1.5), g)):
            np.testing.assert_allclose(a, b, rtol=2.4e-7, atol=0)  # float32: 2 units


def test_row_sparse_leaf_counts_rows_once():
    g = gx.RowSparse(jnp.array([1, 1, 3]), jnp.array([[3.0], [1.0], [-2.0]]), 5)
    tx = gx.clip_by_global_p_norm(1.0, norm_type=1.0)
    sparse_out, _ = tx.update({"t": g}, tx.init(None))
    dense_out, _ = tx.update({"t": g.todense()}, tx.init(None))
    np.testing.assert_allclose(sparse_out["t"].todense(), dense_out["t"], rtol=1e-7)


@pytest.mark.allows_nan
def test_a_nonfinite_norm_zeroes_finite_entries_or_fails_the_check():
    grads = {"a": jnp.array([1.0, jnp.inf]), "b": jnp.array([2.0])}
    out = _ours(gx.torch.clip_grad_norm_(1.0), grads)
    expected = _torch_clipped(grads, "clip_grad_norm_", 1.0)
    for a, b in zip(out, expected):
        np.testing.assert_array_equal(a, b)  # 0 where finite, NaN where inf, as torch
    tx = gx.torch.clip_grad_norm_(1.0, error_if_nonfinite=True)
    checked = jax.jit(checkify.checkify(tx.update))
    error, _ = checked(grads, tx.init(None))
    assert "not finite" in error.get()
    error, _ = checked({"a": jnp.ones(2), "b": jnp.ones(1)}, tx.init(None))
    assert error.get() is None


@pytest.mark.parametrize("call, error, words", [
    (lambda: gx.torch.clip_grad_norm_(0.0), ValueError, ["max_norm", "0.0"]),
    (lambda: gx.torch.clip_grad_norm_(1.0, -2.0), ValueError, ["norm_type", "-2.0"]),
    (lambda: gx.torch.clip_grad_norm_(1.0, "fro"), ValueError, ["torch.clip_grad_norm_", "'fro'"]),
    (lambda: gx.torch.clip_grad_norm_(1.0, foreach="yes"), TypeError, ["foreach", "'yes'"]),
    (lambda: gx.torch.clip_grad_value_(-1.0), ValueError, ["torch.clip_grad_value_",
                                                           "clip_value", "-1.0"]),
    (lambda: gx.clip_by_global_p_norm(1.0, eps=-1e-6), ValueError, ["eps", "-1e-06"]),
])
def test_bad_arguments_raise_naming_them(call, error, words):
    with pytest.raises(error) as caught:
        call()
    for word in words:
        assert word in str(caught.value), (word, str(caught.value))
