"""scale_by_madgrad against MADGRAD written in float64 NumPy (the authors' PyTorch code).

optax.contrib's ``madgrad`` is compared live in tests/optimizers/test_contrib_adaptive.py;
here, over 30 jitted steps moving the params on a nested tree (scalars, ``None``, an empty
leaf), with a constant and a scheduled learning rate and momentum 0: the rule itself; a
complex leaf's sum of squares is :math:`|g|^2`, real; :math:`x_0` is the params given to
``init``, strongly typed; ``update`` needs the params; the count saturates.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradxform as gx
from tests.helpers import gradient_stream, random_params, trajectory

STEPS = 30
INT32_MAX = int(np.iinfo(np.int32).max)


def _decaying(count):
    return 1e-2 / (1.0 + count.astype(jnp.float32))


def madgrad_reference(params, grads_seq, learning_rate=1e-2, momentum=0.9, eps=1e-6):
    """``(updates, params)`` after each step; as ``madgrad.MADGRAD.step`` (Defazio, 2021)."""
    leaves, treedef = jax.tree.flatten(params)
    x0 = [np.asarray(p, np.complex128) for p in leaves]
    x = list(x0)
    s, sum_sq = ([np.zeros(np.shape(p)) * (1 + 0j) for p in leaves] for _ in range(2))
    history = []
    for k, grads in enumerate(grads_seq):
        rate = float(learning_rate(np.float64(k))) if callable(learning_rate) else learning_rate
        lam = (rate + eps) * np.sqrt(k + 1)
        updates = []
        for i, g in enumerate(treedef.flatten_up_to(grads)):
            g = np.asarray(g, np.complex128)
            s[i] = s[i] + lam * g
            sum_sq[i] = sum_sq[i] + lam * np.abs(g) ** 2
            z = x0[i] - s[i] / (np.cbrt(sum_sq[i].real) + eps)
            moved = (1 - momentum) * z + momentum * x[i]
            updates.append(moved - x[i])
            x[i] = moved
        history.append((treedef.unflatten(updates), treedef.unflatten(list(x))))
    return history


@pytest.mark.parametrize("kwargs", [
    pytest.param({"learning_rate": 1e-2}, id="defaults"),
    pytest.param({"learning_rate": _decaying, "momentum": 0.5, "eps": 1e-4}, id="schedule"),
    pytest.param({"learning_rate": 0.1, "momentum": 0.0}, id="no-momentum"),
])
def test_matches_the_float64_rule(kwargs):
    params = random_params(0)
    grads_seq = gradient_stream(params, STEPS, seed=2)
    history = trajectory(gx.scale_by_madgrad(**kwargs), params, grads_seq, move=True)
    for step, ((updates, moved, _), (want, want_params)) in enumerate(
            zip(history, madgrad_reference(params, grads_seq, **kwargs))):
        for got, expected in zip(jax.tree.leaves(updates), jax.tree.leaves(want), strict=True):
            # x_{k+1} - x_k in float32: the params' own rounding is the floor (about 1e-7).
            np.testing.assert_allclose(got, expected.real, rtol=1e-4, atol=1e-6,
                                       err_msg=f"step {step}")
        for got, expected in zip(jax.tree.leaves(moved), jax.tree.leaves(want_params)):
            np.testing.assert_allclose(got, expected.real, rtol=1e-5, atol=1e-6)


def test_a_complex_leaf_has_a_real_sum_of_squares():
    rng = np.random.default_rng(3)
    params = {"c": jnp.asarray(rng.normal(size=(2, 2)) + 1j * rng.normal(size=(2, 2)),
                               jnp.complex64)}
    grads_seq = [{"c": jnp.asarray(rng.normal(size=(2, 2)) + 1j * rng.normal(size=(2, 2)),
                                   jnp.complex64)} for _ in range(6)]
    history = trajectory(gx.scale_by_madgrad(0.1), params, grads_seq, move=True)
    for (updates, _, state), (want, _) in zip(history,
                                              madgrad_reference(params, grads_seq, 0.1)):
        np.testing.assert_allclose(np.asarray(updates["c"], np.complex128), want["c"], rtol=1e-4,
                                   atol=1e-6)
    assert state.grad_sum_sq["c"].dtype == jnp.float32 and state.s["c"].dtype == jnp.complex64


def test_state_holds_the_initial_params_strongly_typed():
    params = {"w": jnp.arange(3.0), "scalar": 2.5, "h": jnp.ones(2, jnp.float16), "skip": None,
              "steps": jnp.zeros(2, jnp.int32)}
    state = gx.scale_by_madgrad(0.1).init(params)
    assert state._fields == ("count", "grad_sum_sq", "s", "x0")
    np.testing.assert_array_equal(state.x0["w"], params["w"])
    assert state.x0["scalar"].dtype == jnp.float32 and not state.x0["scalar"].weak_type
    assert state.x0["skip"] is None and state.x0["steps"] is None
    assert state.grad_sum_sq["h"].dtype == jnp.float32 and state.s["h"].dtype == jnp.float16


def test_update_needs_params():
    tx = gx.scale_by_madgrad(0.1)
    params = {"w": jnp.ones(2)}
    with pytest.raises(ValueError, match="scale_by_madgrad: update needs params"):
        tx.update(params, tx.init(params))


def test_step_count_saturates():
    params = {"w": jnp.ones(3)}
    tx = gx.scale_by_madgrad(_decaying)
    state = tx.init(params)._replace(count=jnp.asarray(INT32_MAX - 1, jnp.int32))
    update = jax.jit(tx.update)
    for scale in (1.0, -2.0, 0.5):
        updates, state = update({"w": scale * jnp.arange(3.0)}, state, params)
        assert np.all(np.isfinite(updates["w"]))
    assert state.count.dtype == jnp.int32 and int(state.count) == INT32_MAX
