"""sam and normalize against optax.contrib, run live, and where they differ on purpose.

* float32, both modes: 40 jitted steps of a training loop on a small nonconvex
  loss (a quadratic plus a sine, with noise) over a nested tree with a 0-d, a
  zero-size and a ``None`` leaf, for SGD, SGD with momentum and Adam as outer
  and adversarial optimizers, sync periods 2 and 3, with and without
  ``reset_state``: the updates, the params and every field of the state
  (``steps_since_sync``, ``cache``, the inner optimizers' moments) agree at
  every step. In opaque mode ``grad_fn`` is that loss's gradient.
* bfloat16: 30 steps, optax in float32 on the same values; our updates within
  one bfloat16 rounding. ``normalize`` matches optax's.
* ``batch_axis_name``: under ``vmap`` with a named axis the gradients of
  ``grad_fn`` are averaged, as optax's.
* Where optax is wrong: with ``sync_period=1`` SAM is its outer optimizer
  (checked against plain SGD in float64 NumPy; optax mixes in the previous
  step's params), and a zero gradient on an outer step gives a finite update
  (optax's unused ``normalize`` of it makes NaN); ``normalize`` of zeros is 0.
* The inner optimizers get the extra arguments they accept; ``grad_fn`` is
  called ``k - 1`` times with ``i = 0, ..., k - 2``; errors name ``sam``.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradxform as gx
from tests.helpers import FAST_COMPILE, compare_with_optax, gradient_stream, random_params

STEPS = 40


def _loss(params):
    return sum(jnp.sum(0.15 * p**2 + 0.1 * jnp.sin(3 * p)) for p in jax.tree.leaves(params))


def _gradient(params, noise):
    return jax.tree.map(lambda g, n: g + 0.1 * n, jax.grad(_loss)(params), noise)


def _train(tx, apply, params, noises, opaque):
    @functools.partial(jax.jit, compiler_options=FAST_COMPILE)
    def step(params, state, noise):
        extra = {"grad_fn": lambda p, i: _gradient(p, noise)} if opaque else {}
        updates, state = tx.update(_gradient(params, noise), state, params, **extra)
        return updates, apply(params, updates), state

    state = tx.init(params)
    out = []
    for noise in noises:
        updates, params, state = step(params, state, noise)
        out.append((updates, params, state))
    return out


def _close(actual, expected, what):
    assert jax.tree.structure(actual) == jax.tree.structure(expected), what
    for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected)):
        np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(e, np.float64),
                                   rtol=1e-5, atol=1e-6, err_msg=what)


def _moments(state, get):
    found = {}
    for name in ("mu", "nu", "trace"):
        try:
            found[name] = get(state, name)
        except (KeyError, ValueError):
            continue
    return found


CASES = [
    pytest.param(lambda m: (m.sgd(0.05), m.chain(_normalize(m), m.sgd(0.02))), {}, id="sgd"),
    pytest.param(lambda m: (m.adam(1e-2), m.chain(_normalize(m), m.adam(1e-2))),
                 dict(sync_period=3, reset_state=False), id="adam-3-keep"),
    pytest.param(lambda m: (m.sgd(0.05, momentum=0.9), m.chain(_normalize(m), m.sgd(0.02))),
                 dict(opaque_mode=True), id="opaque-momentum"),
    pytest.param(lambda m: (m.adam(1e-2), m.chain(_normalize(m), m.adam(1e-2))),
                 dict(sync_period=3, reset_state=False, opaque_mode=True), id="opaque-adam-3-keep"),
]


def _normalize(module):
    return module.normalize() if module is gx else optax.contrib.normalize()


@pytest.mark.parametrize("make, kwargs", CASES)
def test_sam_matches_optax_field_by_field(make, kwargs):
    params = random_params(0)
    noises = gradient_stream(params, STEPS, seed=1)
    opaque = kwargs.get("opaque_mode", False)
    ours = _train(gx.sam(*make(gx), **kwargs), gx.apply_updates, params, noises, opaque)
    with jax.numpy_dtype_promotion("standard"), jax.debug_nans(False):
        theirs = _train(optax.contrib.sam(*make(optax), **kwargs), optax.apply_updates, params,
                        noises, opaque)
    for step, ((updates, new_params, state), (r_updates, r_params, r_state)) in enumerate(
            zip(ours, theirs)):
        _close(updates, r_updates, f"updates at step {step}")
        _close(new_params, r_params, f"params at step {step}")
        assert state._fields == r_state._fields
        assert int(state.steps_since_sync) == int(r_state.steps_since_sync)
        if opaque:
            assert state.cache is None and r_state.cache is None
        else:
            _close(state.cache, r_state.cache, f"cache at step {step}")
        for field in ("opt_state", "adv_state"):
            mine = _moments(getattr(state, field), gx.tree_get)
            assert mine.keys() == _moments(getattr(r_state, field), optax.tree.get).keys()
            for name, value in mine.items():
                _close(value, optax.tree.get(getattr(r_state, field), name),
                       f"{field}.{name} at step {step}")


def test_bfloat16_matches_optax_in_float32():
    # Gradients offset from 0: optax's normalize of a zero gradient is NaN.
    compare_with_optax(
        gx.sam(gx.sgd(0.1), gx.chain(gx.normalize(), gx.sgd(0.05)), sync_period=3),
        optax.contrib.sam(optax.sgd(0.1), optax.chain(optax.contrib.normalize(), optax.sgd(0.05)),
                          sync_period=3),
        dtype=jnp.bfloat16, steps=30, grads_transform=lambda g: jax.tree.map(lambda x: x + 0.5, g),
    )


def test_normalize_matches_optax_and_keeps_zeros():
    tree = random_params(3)
    tx, ref = gx.normalize(), optax.contrib.normalize()
    with jax.numpy_dtype_promotion("standard"):
        expected = jax.jit(lambda t: ref.update(t, ref.init(t))[0])(tree)
    _close(jax.jit(lambda t: tx.update(t, tx.init(t))[0])(tree), expected, "normalize")
    zeros = {"a": jnp.zeros(3), "b": [jnp.zeros((2, 2), jnp.bfloat16), None]}
    for leaf in jax.tree.leaves(tx.update(zeros, tx.init(zeros))[0]):  # eager, jax_debug_nans on
        np.testing.assert_array_equal(leaf, 0.0)
    assert gx.NormalizeState is gx.EmptyState


def test_batch_axis_name_averages_grad_fn_over_the_axis():
    params = {"w": jnp.array([0.5, -1.0, 2.0]), "b": jnp.float32(0.3)}
    noises = jax.tree.map(lambda p: jnp.stack([p * 0 + 1.0, p * 0 - 3.0]), params)

    def run(tx):
        def per_device(noise):
            grads = jax.lax.pmean(_gradient(params, noise), "batch")
            return tx.update(grads, tx.init(params), params,
                             grad_fn=lambda p, i: _gradient(p, noise))[0]
        return jax.jit(jax.vmap(per_device, axis_name="batch"))(noises)

    def make(m, sam):
        return sam(m.sgd(0.1), m.chain(_normalize(m), m.sgd(0.05)), sync_period=3,
                   opaque_mode=True, batch_axis_name="batch")

    ours = run(make(gx, gx.sam))
    with jax.numpy_dtype_promotion("standard"):
        theirs = run(make(optax, optax.contrib.sam))
    _close(ours, theirs, "updates")
    _close(jax.tree.map(lambda u: u[0], ours), jax.tree.map(lambda u: u[1], ours), "replicas")


@pytest.mark.allows_nan  # optax's reference makes a NaN; ours is run eagerly under debug_nans
def test_where_optax_is_wrong():
    # sync_period=1: SAM is its outer optimizer; float64 NumPy SGD on the same loss.
    tx = gx.sam(gx.sgd(0.1), gx.chain(gx.normalize(), gx.sgd(0.05)), sync_period=1)
    params = {"w": jnp.array([1.0, -2.0, 0.5])}
    expected = np.array([1.0, -2.0, 0.5])
    state, update = tx.init(params), jax.jit(tx.update)
    for _ in range(30):
        updates, state = update(jax.grad(_loss)(params), state, params)
        params = gx.apply_updates(params, updates)
        expected = expected - 0.1 * (0.3 * expected + 0.3 * np.cos(3 * expected))
    np.testing.assert_allclose(params["w"], expected, rtol=1e-5, atol=1e-6)
    # optax's sync_period=1 mixes in the previous step's params: 3 steps are not SGD's.
    ref = optax.contrib.sam(optax.sgd(0.1), optax.sgd(0.05), sync_period=1)
    p = {"w": jnp.array([1.0, -2.0, 0.5])}
    s, sgd3 = ref.init(p), np.array([1.0, -2.0, 0.5])
    with jax.numpy_dtype_promotion("standard"):
        update = jax.jit(ref.update)
        for _ in range(3):
            u, s = update(jax.grad(_loss)(p), s, p)
            p = optax.apply_updates(p, u)
            sgd3 = sgd3 - 0.1 * (0.3 * sgd3 + 0.3 * np.cos(3 * sgd3))
    assert np.max(np.abs(np.asarray(p["w"]) - sgd3)) > 1e-2
    # A zero gradient on an outer step: a finite update here, NaN in optax.
    grads = [{"w": jnp.array([1.0, 2.0])}, {"w": jnp.zeros(2)}]
    params = {"w": jnp.array([0.5, 0.5])}
    tx = gx.sam(gx.sgd(0.1), gx.chain(gx.normalize(), gx.sgd(0.05)))
    ref = optax.contrib.sam(optax.sgd(0.1), optax.chain(optax.contrib.normalize(), optax.sgd(0.05)))
    with jax.debug_nans(True):
        state = tx.init(params)
        for g in grads:
            updates, state = tx.update(g, state, params)
    assert np.all(np.isfinite(updates["w"]))
    with jax.numpy_dtype_promotion("standard"):
        s, update = ref.init(params), jax.jit(ref.update)
        for g in grads:
            u, s = update(g, s, params)
    assert np.all(np.isnan(u["w"]))


def test_extra_arguments_grad_fn_calls_and_errors():
    params = {"w": jnp.array([1.0, -1.0])}
    grads = jax.grad(_loss)(params)
    # The outer polyak_sgd needs value=: it reaches it; sync_period=1 is polyak_sgd itself.
    tx = gx.sam(gx.polyak_sgd(), gx.chain(gx.normalize(), gx.scale(-0.1)), sync_period=1)
    updates, _ = tx.update(grads, tx.init(params), params, value=_loss(params))
    inner = gx.polyak_sgd()
    expected, _ = inner.update(grads, inner.init(params), params, value=_loss(params))
    _close(updates, expected, "polyak outer step")
    calls = []

    def grad_fn(p, i):
        calls.append(i)
        return jax.grad(_loss)(p)

    tx = gx.sam(gx.sgd(0.1), gx.chain(gx.normalize(), gx.scale(-0.1)), sync_period=4,
                opaque_mode=True)
    tx.update(grads, tx.init(params), params, grad_fn=grad_fn)
    assert calls == [0, 1, 2]
    with pytest.raises(TypeError, match="sam: with opaque_mode=True, update needs"):
        tx.update(grads, tx.init(params), params)
    with pytest.raises(TypeError, match="sam: update needs the params"):
        tx.update(grads, tx.init(params))
    with pytest.raises(ValueError, match="sam: sync_period must be an int >= 1, got 0"):
        gx.sam(gx.sgd(0.1), gx.sgd(0.1), sync_period=0)
