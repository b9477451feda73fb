"""Test-wide settings: every test, doctest and example runs under strict dtype
promotion and with ``jax_debug_nans``.

* Strict promotion: reference computations (optax, NumPy) that rely on
  implicit promotion opt out locally with ``jax.numpy_dtype_promotion("standard")``;
  gradxform never does.
* ``jax_debug_nans``: any NaN produced by a JAX operation raises
  ``FloatingPointError`` at the operation that made it. Tests that feed or
  expect NaN on purpose (non-finite gradients, skipped steps, NaN propagation)
  carry ``@pytest.mark.allows_nan``; everywhere else a NaN is a bug.

XLA compiles with ``FAST_COMPILE``'s options (``tests/helpers.py``): no backend
optimisation, no fusion emitters. The suite compiles thousands of small
programs, each 4-5x faster this way, and every comparison runs both sides under
the same options. The tests of what XLA's default compile guarantees (an
injected hyperparameter gives bit for bit the plain value) pin its options
with ``DEFAULT_COMPILE``. Subprocesses (the guides, the notebooks) inherit the
flags through ``XLA_FLAGS``; the 8-device suite runs with XLA's defaults
(``GRADXFORM_DEFAULT_COMPILE=1``), since it compares sharded with one-device
numbers as a user's compile gives them.

Hypothesis runs the "ci" profile unless ``HYPOTHESIS_PROFILE`` names another:
few examples, derandomized so that CI is deterministic (each parametrized case
still draws its own examples). ``HYPOTHESIS_PROFILE=thorough`` draws 200
random examples per test.
"""

import os

# Keras 3 is the reference for the gx.keras presets; it must run on JAX, and the
# backend is fixed when keras is first imported.
os.environ["KERAS_BACKEND"] = "jax"
# Before jax is imported: XLA reads its flags once, when the backend starts.
FAST_COMPILE_FLAGS = "--xla_cpu_use_fusion_emitters=false --xla_backend_optimization_level=0"
if os.environ.get("GRADXFORM_DEFAULT_COMPILE") != "1":
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {FAST_COMPILE_FLAGS}".strip()

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


# Started first, the longest files run beside the others instead of after them: with
# --no-loadscope-reorder (pyproject.toml), xdist's workers take the files in collection order
# (its default order, most tests first, put the one-test 8-device suite last).
_LONG_FIRST = ("tests/test_multidevice.py::", "tests/test_properties.py::")


def _start_rank(item) -> int:
    return next((rank for rank, prefix in enumerate(_LONG_FIRST)
                 if item.nodeid.startswith(prefix)), len(_LONG_FIRST))


def pytest_collection_modifyitems(config, items):
    items.sort(key=_start_rank)  # stable: the others keep their order


@pytest.fixture(autouse=True)
def _debug_nans(request):
    enabled = request.node.get_closest_marker("allows_nan") is None
    with jax.debug_nans(enabled):
        yield
