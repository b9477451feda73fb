"""Test-wide settings: every test, doctest and example runs under strict dtype promotion.

Reference computations (optax, NumPy) that rely on implicit promotion opt out
locally with ``jax.numpy_dtype_promotion("standard")``; gradxform never does.
"""

import os

# Keras 3 is the reference for the gx.keras presets; it must run on JAX, and the
# backend is fixed when keras is first imported.
os.environ["KERAS_BACKEND"] = "jax"

import jax  # noqa: E402

jax.config.update("jax_numpy_dtype_promotion", "strict")
