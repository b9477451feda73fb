"""trace and ema against optax."""

import jax.numpy as jnp
import optax
import pytest

import gradxform as gx
from tests.helpers import compare_with_optax

DTYPES = [jnp.float32, jnp.bfloat16, jnp.float16]


def _state_dtype(dtype):
    # Low-precision runs keep the accumulator in float32 so that the only
    # rounding left is that of the output, as in the float32 optax reference.
    return None if dtype == jnp.float32 else jnp.float32


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("decay", [0.0, 0.9, 1.0])
@pytest.mark.parametrize("nesterov", [False, True])
def test_trace_matches_optax(dtype, decay, nesterov):
    compare_with_optax(
        gx.trace(decay, nesterov=nesterov, accumulator_dtype=_state_dtype(dtype)),
        optax.trace(decay, nesterov=nesterov),
        dtype=dtype,
    )


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("decay,debias", [(0.9, True), (0.5, False), (0.999, True), (1.0, False)])
def test_ema_matches_optax(dtype, decay, debias):
    compare_with_optax(
        gx.ema(decay, debias=debias, accumulator_dtype=_state_dtype(dtype)),
        optax.ema(decay, debias=debias),
        dtype=dtype,
    )


def test_trace_with_bf16_accumulator_keeps_the_decay_in_float32():
    # optax multiplies a bf16 trace by decay rounded to bf16 (0.9 -> 0.8984375);
    # gradxform multiplies in float32 and rounds only the stored result.
    tx = gx.trace(0.9, accumulator_dtype=jnp.bfloat16)
    params = {"w": jnp.zeros((), jnp.float32)}
    state = tx.init(params)
    _, state = tx.update({"w": jnp.ones((), jnp.float32)}, state)
    _, state = tx.update({"w": jnp.zeros((), jnp.float32)}, state)
    assert state.trace["w"].dtype == jnp.bfloat16
    assert float(state.trace["w"]) == float(jnp.asarray(0.9, jnp.bfloat16))
