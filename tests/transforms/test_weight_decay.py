"""add_decayed_weights, with masks and schedules, against optax."""

import jax
import jax.numpy as jnp
import optax
import pytest

import gradxform as gx
from tests.helpers import compare_with_optax, random_params

DTYPES = [jnp.float32, jnp.bfloat16, jnp.float16]


def only_matrices(params):
    return jax.tree.map(lambda p: p.ndim >= 2, params)


def prefix_mask():
    params = random_params()
    mask = {key: True for key in params}
    mask["dense"] = {"kernel": True, "bias": False}
    mask["pair"] = False
    return mask


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize(
    "weight_decay", [1e-4, 0.3, 0.0, lambda count: 0.01 * (1.0 + count.astype(jnp.float32))],
    ids=["small", "large", "zero", "schedule"],
)
def test_add_decayed_weights_matches_optax(dtype, weight_decay):
    compare_with_optax(
        gx.add_decayed_weights(weight_decay), optax.add_decayed_weights(weight_decay), dtype=dtype
    )


@pytest.mark.parametrize("mask", [only_matrices, prefix_mask()], ids=["callable", "prefix-tree"])
def test_add_decayed_weights_mask_matches_optax(mask):
    compare_with_optax(
        gx.add_decayed_weights(0.1, mask=mask), optax.add_decayed_weights(0.1, mask=mask)
    )


def test_mask_of_jax_bools_works_under_jit():
    params = {"w": jnp.ones(2), "b": jnp.ones(2)}
    mask = {"w": jnp.array(True), "b": jnp.array(False)}
    tx = gx.add_decayed_weights(0.5, mask=lambda p: mask)
    updates, _ = jax.jit(tx.update)(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
    assert float(updates["w"][0]) == 0.5 and float(updates["b"][0]) == 0.0
