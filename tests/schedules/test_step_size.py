"""``relative_step_size`` and ``warmup_scaled_schedule``: values from their formulas, over a
constant and a scheduled rate, under jit, with the true derivative in the rate."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradxform as gx

S = gx.schedules
COUNTS = np.arange(12)


def _decaying(count):
    return 0.9 * 0.8 ** count


@pytest.mark.parametrize("rate", [0.5, 0.05, _decaying], ids=["capped", "below", "schedule"])
def test_relative_step_size_is_the_rate_capped_by_inverse_root(rate):
    values = np.array([float(S.relative_step_size(rate)(k)) for k in COUNTS])
    eta = np.array([rate(k) if callable(rate) else rate for k in COUNTS], np.float64)
    np.testing.assert_allclose(values, np.minimum(eta, 1 / np.sqrt(COUNTS + 1.0)), rtol=1e-6)


@pytest.mark.parametrize("warmup", [0, 1, 5])
@pytest.mark.parametrize("rate", [0.5, _decaying], ids=["constant", "schedule"])
def test_warmup_scaled_multiplies_by_the_warmup_fraction(rate, warmup):
    values = np.array([float(S.warmup_scaled_schedule(rate, warmup)(k)) for k in COUNTS])
    eta = np.array([rate(k) if callable(rate) else rate for k in COUNTS], np.float64)
    fraction = np.ones_like(eta) if warmup == 0 else np.minimum((COUNTS + 1.0) / warmup, 1.0)
    np.testing.assert_allclose(values, eta * fraction, rtol=1e-6)


def test_jit_on_a_traced_count_and_reprs():
    capped, warm = S.relative_step_size(0.5), S.warmup_scaled_schedule(0.5, 4)
    assert float(jax.jit(capped)(jnp.int32(3))) == pytest.approx(0.5)
    assert float(jax.jit(warm)(jnp.int32(1))) == pytest.approx(0.25)
    assert repr(capped) == "relative_step_size(learning_rate=0.5)"
    assert repr(warm) == "warmup_scaled_schedule(learning_rate=0.5, warmup_steps=4)"


def test_derivative_in_the_rate_is_exact():
    """d/d eta of min(eta, (t+1)^-1/2) is 1 below the cap and 0 above; of eta * f it is f."""
    below = jax.grad(lambda eta: S.relative_step_size(eta)(3))(0.1)
    above = jax.grad(lambda eta: S.relative_step_size(eta)(3))(0.9)
    warm = jax.grad(lambda eta: S.warmup_scaled_schedule(eta, 4)(2))(0.1)
    assert (float(below), float(above)) == (1.0, 0.0)
    assert float(warm) == pytest.approx(0.75)
