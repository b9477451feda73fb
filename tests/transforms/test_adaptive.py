"""scale_by_adagrad, scale_by_rms and scale_by_stddev against optax."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradxform as gx
from tests.helpers import compare_with_optax, gradient_stream, random_params, run_optax, run_updates

DTYPES = [jnp.float32, jnp.bfloat16, jnp.float16]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize(
    "kwargs",
    [{}, {"initial_accumulator_value": 0.0, "eps": 1e-7}, {"initial_accumulator_value": 1.5, "eps": 0.0}],
)
def test_adagrad_matches_optax_scale_by_rss(dtype, kwargs):
    accumulator = {"accumulator_dtype": jnp.float32} if dtype != jnp.float32 else {}
    compare_with_optax(
        gx.scale_by_adagrad(**kwargs, **accumulator), optax.scale_by_rss(**kwargs), dtype=dtype
    )


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"decay": 0.5, "eps": 1e-3, "initial_scale": 0.1},
        {"eps_in_sqrt": False, "bias_correction": True, "decay": 0.99},
    ],
)
@pytest.mark.parametrize("centered", [False, True])
def test_rms_and_stddev_match_optax(dtype, kwargs, centered):
    low = dtype != jnp.float32
    if centered and low and kwargs.get("bias_correction"):
        pytest.skip(
            "ill-conditioned: at step 1 the debiased variance is exactly 0, so the "
            "update is g / eps and any rounding of the stored moments is amplified"
        )
    ours = gx.scale_by_stddev if centered else gx.scale_by_rms
    theirs = optax.scale_by_stddev if centered else optax.scale_by_rms
    if centered and kwargs.get("bias_correction"):
        return _compare_where_optax_is_finite(ours(**kwargs), theirs(**kwargs))
    # The low-precision moments are stored in the params' dtype (no dtype option,
    # as in optax), so they round every step: a looser tolerance there.
    compare_with_optax(
        ours(**kwargs), theirs(**kwargs), dtype=dtype,
        rtol=6e-2 if low else None, atol=6e-2 if low else None,
    )


def _compare_where_optax_is_finite(ours, theirs):
    """At step 1 the debiased variance is 0 exactly, and rounds to about -1 ulp.
    optax takes its square root and returns NaN for finite gradients; gradxform
    clamps the variance at 0 and returns the finite g / eps. Every other step
    agrees."""
    params = random_params(0, jnp.float32)
    grads_seq = gradient_stream(params, 20, seed=1)
    mine, _ = run_updates(ours, params, grads_seq)
    reference, _ = run_optax(theirs, params, grads_seq)
    assert any(not np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(reference[0]))
    for step, (u, r) in enumerate(zip(mine, reference)):
        for leaf, ref in zip(jax.tree.leaves(u), jax.tree.leaves(r)):
            assert np.all(np.isfinite(leaf)), step
            finite = np.isfinite(ref)
            np.testing.assert_allclose(np.asarray(leaf)[finite], np.asarray(ref)[finite], rtol=2e-5)
