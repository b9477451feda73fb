"""A small float32 MLP regression problem from fixed seeds, shared by the tests that train
in fresh processes and compare bits (checkpoint resume, reproducibility)."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np


def init_mlp_params(features: int, hidden: int, seed: int = 0) -> dict:
    """A two-layer MLP's params, ``features -> hidden -> 1``."""
    k1, k2 = jax.random.split(jax.random.key(seed))
    return {
        "hidden": {
            "kernel": jax.random.normal(k1, (features, hidden), jnp.float32) / np.sqrt(features),
            "bias": jnp.zeros((hidden,), jnp.float32),
        },
        "out": {
            "kernel": jax.random.normal(k2, (hidden, 1), jnp.float32) / np.sqrt(hidden),
            "bias": jnp.zeros((1,), jnp.float32),
        },
    }


def make_regression_data(
    examples: int, features: int, target: Callable = np.tanh, seed: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """``y = target(x @ w) + noise`` for standard normal ``x`` and ``w``."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((examples, features)).astype(np.float32)
    w = rng.standard_normal((features, 1)).astype(np.float32)
    y = (target(x @ w) + 0.1 * rng.standard_normal((examples, 1))).astype(np.float32)
    return x, y
