"""Test-wide settings: every test, doctest and example runs under strict dtype
promotion and with ``jax_debug_nans``.

* Strict promotion: reference computations (optax, NumPy) that rely on
  implicit promotion opt out locally with ``jax.numpy_dtype_promotion("standard")``;
  gradxform never does.
* ``jax_debug_nans``: any NaN produced by a JAX operation raises
  ``FloatingPointError`` at the operation that made it. Tests that feed or
  expect NaN on purpose (non-finite gradients, skipped steps, NaN propagation)
  carry ``@pytest.mark.allows_nan``; everywhere else a NaN is a bug.

Hypothesis runs the "ci" profile unless ``HYPOTHESIS_PROFILE`` names another:
few examples, derandomized so that CI is deterministic (each parametrized case
still draws its own examples). ``HYPOTHESIS_PROFILE=thorough`` draws 200
random examples per test.
"""

import os

# Keras 3 is the reference for the gx.keras presets; it must run on JAX, and the
# backend is fixed when keras is first imported.
os.environ["KERAS_BACKEND"] = "jax"

import jax  # noqa: E402
import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

jax.config.update("jax_numpy_dtype_promotion", "strict")

_SLOW_IS_EXPECTED = [HealthCheck.too_slow, HealthCheck.data_too_large]
settings.register_profile(
    "ci", max_examples=5, deadline=None, derandomize=True, database=None,
    suppress_health_check=_SLOW_IS_EXPECTED,
)
settings.register_profile(
    "thorough", max_examples=200, deadline=None, suppress_health_check=_SLOW_IS_EXPECTED
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "allows_nan: the test makes NaN on purpose; run it without jax_debug_nans"
    )


@pytest.fixture(autouse=True)
def _debug_nans(request):
    enabled = request.node.get_closest_marker("allows_nan") is None
    with jax.debug_nans(enabled):
        yield
