"""scale_by_ademamix and scale_by_simplified_ademamix against their rules in float64 NumPy.

optax.contrib's aliases are compared live in tests/optimizers/test_contrib_adaptive.py;
here, over 30 jitted steps on a nested tree (scalars, ``None``, an empty leaf): AdEMAMix
(Pagliardini et al., 2024) with constant and scheduled ``b3`` and ``alpha`` (evaluated at
the step count from 0), and the simplified form (Morwani et al., 2025); a complex leaf's
second moment is :math:`|g|^2`; the state's dtypes follow ``mu_dtype``; counts saturate.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradxform as gx
from tests.helpers import gradient_stream, random_params, trajectory

STEPS = 30
INT32_MAX = int(np.iinfo(np.int32).max)


def _slow_decay(count):
    return 0.999 - 0.4 / (1.0 + count.astype(jnp.float32))


def _alpha_warmup(count):
    return 4.0 * jnp.minimum(count.astype(jnp.float32) / 10.0, 1.0)


def _value(schedule, t):
    return float(schedule(np.float64(t))) if callable(schedule) else schedule


def ademamix_reference(grads_seq, b1=0.9, b2=0.999, b3=0.9999, alpha=6.0, eps=1e-8,
                       eps_root=0.0):
    leaves0, treedef = jax.tree.flatten(grads_seq[0])
    m1, m2, nu = ([np.zeros(np.shape(x), np.complex128) for x in leaves0] for _ in range(3))
    outputs = []
    for t, grads in enumerate(grads_seq):
        decay, weight, out = _value(b3, t), _value(alpha, t), []
        for i, g in enumerate(treedef.flatten_up_to(grads)):
            g = np.asarray(g, np.complex128)
            m1[i] = b1 * m1[i] + (1 - b1) * g
            m2[i] = decay * m2[i] + (1 - decay) * g
            nu[i] = b2 * nu[i] + (1 - b2) * np.abs(g) ** 2
            m1_hat, nu_hat = m1[i] / (1 - b1 ** (t + 1)), nu[i].real / (1 - b2 ** (t + 1))
            out.append((m1_hat + weight * m2[i]) / (np.sqrt(nu_hat + eps_root) + eps))
        outputs.append(treedef.unflatten(out))
    return outputs


def simplified_reference(grads_seq, b1=0.99, b2=0.95, alpha=0.0, eps=1e-8, eps_root=0.0):
    leaves0, treedef = jax.tree.flatten(grads_seq[0])
    m, n = ([np.zeros(np.shape(x), np.complex128) for x in leaves0] for _ in range(2))
    outputs = []
    for t, grads in enumerate(grads_seq):
        weight, out = _value(alpha, t), []
        for i, g in enumerate(treedef.flatten_up_to(grads)):
            g = np.asarray(g, np.complex128)
            m[i] = b1 * m[i] + g
            n[i] = b2 * n[i] + (1 - b2) * np.abs(g) ** 2
            n_hat = n[i].real / (1 - b2 ** (t + 1))
            out.append((m[i] + weight * g) / (np.sqrt(n_hat + eps_root) + eps))
        outputs.append(treedef.unflatten(out))
    return outputs


def _assert_close(actual, expected, rtol, context):
    for got, want in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
        want = want if np.iscomplexobj(got) else want.real
        np.testing.assert_allclose(np.asarray(got, want.dtype), want, rtol=rtol, atol=rtol,
                                   err_msg=context)


CASES = [
    pytest.param(gx.scale_by_ademamix, ademamix_reference, {}, id="ademamix"),
    pytest.param(gx.scale_by_ademamix, ademamix_reference,
                 {"b1": 0.8, "b2": 0.99, "b3": _slow_decay, "alpha": _alpha_warmup, "eps": 1e-6,
                  "eps_root": 1e-8}, id="ademamix-schedules"),
    pytest.param(gx.scale_by_simplified_ademamix, simplified_reference, {}, id="simplified"),
    pytest.param(gx.scale_by_simplified_ademamix, simplified_reference,
                 {"b1": 0.9, "b2": 0.99, "alpha": _alpha_warmup, "eps_root": 1e-8},
                 id="simplified-schedule"),
]


@pytest.mark.parametrize("make, reference, kwargs", CASES)
def test_matches_the_float64_rule(make, reference, kwargs):
    params = random_params(0)
    grads_seq = gradient_stream(params, STEPS, seed=2)
    history = trajectory(make(**kwargs), params, grads_seq)
    for step, ((updates, _, _), want) in enumerate(zip(history, reference(grads_seq, **kwargs))):
        _assert_close(updates, want, 2e-5, f"step {step}")


@pytest.mark.parametrize("make, reference", [
    (gx.scale_by_ademamix, ademamix_reference),
    (gx.scale_by_simplified_ademamix, simplified_reference)], ids=["ademamix", "simplified"])
def test_a_complex_leaf_has_a_real_second_moment(make, reference):
    rng = np.random.default_rng(1)
    params = {"c": jnp.zeros((2, 3), jnp.complex64)}
    grads_seq = [{"c": jnp.asarray(rng.normal(size=(2, 3)) + 1j * rng.normal(size=(2, 3)),
                                   jnp.complex64)} for _ in range(8)]
    history = trajectory(make(), params, grads_seq)
    for step, ((updates, _, state), want) in enumerate(zip(history, reference(grads_seq))):
        _assert_close(updates, want, 2e-5, f"step {step}")
    assert state[-1]["c"].dtype == jnp.float32  # nu, n


def test_state_dtypes_follow_mu_dtype():
    params = {"w": jnp.zeros(3), "c": jnp.zeros(2, jnp.complex64), "h": jnp.zeros(2, jnp.float16),
              "skip": None}
    state = gx.scale_by_ademamix(mu_dtype=jnp.bfloat16).init(params)
    assert state._fields == ("count", "count_m2", "m1", "m2", "nu")
    for field, dtypes in (("m1", [jnp.complex64, jnp.bfloat16, jnp.bfloat16]),
                          ("m2", [jnp.complex64, jnp.bfloat16, jnp.bfloat16]),
                          ("nu", [jnp.bfloat16, jnp.bfloat16, jnp.bfloat16])):
        assert [x.dtype for x in jax.tree.leaves(getattr(state, field))] == dtypes, field
    plain = gx.scale_by_ademamix().init(params)
    assert [x.dtype for x in jax.tree.leaves(plain.nu)] == [jnp.float32, jnp.float32, jnp.float32]
    simple = gx.scale_by_simplified_ademamix().init(params)
    assert simple._fields == ("t", "m", "n") and simple.m["skip"] is None
    grads = jax.tree.map(lambda p: None if p is None else jnp.ones_like(p), params)
    updates, _ = jax.jit(gx.scale_by_ademamix(mu_dtype=jnp.bfloat16).update)(grads, state)
    assert [u.dtype for u in jax.tree.leaves(updates)] == [jnp.complex64, jnp.float16, jnp.float32]


@pytest.mark.parametrize("tx, counts", [
    (gx.scale_by_ademamix(b3=_slow_decay, alpha=_alpha_warmup), ("count", "count_m2")),
    (gx.scale_by_simplified_ademamix(alpha=_alpha_warmup), ("t",)),
], ids=["ademamix", "simplified"])
def test_step_counts_saturate(tx, counts):
    params = {"w": jnp.ones(3)}
    state = tx.init(params)._replace(**{c: jnp.asarray(INT32_MAX - 1, jnp.int32) for c in counts})
    update = jax.jit(tx.update)
    for scale in (1.0, -2.0, 0.5):
        updates, state = update({"w": scale * jnp.arange(3.0)}, state)
        assert np.all(np.isfinite(updates["w"]))
    assert all(int(getattr(state, c)) == INT32_MAX for c in counts)
