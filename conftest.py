"""Test-wide settings: every test, doctest and example runs under strict dtype promotion.

Reference computations (optax, NumPy) that rely on implicit promotion opt out
locally with ``jax.numpy_dtype_promotion("standard")``; gradxform never does.
"""

import jax

jax.config.update("jax_numpy_dtype_promotion", "strict")
