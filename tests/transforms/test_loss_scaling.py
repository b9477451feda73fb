"""static_loss_scale, dynamic_loss_scale, scale_loss and current_loss_scale.

``dynamic_loss_scale`` is checked against Keras's ``LossScaleOptimizer`` rule
written in NumPy: on finite gradients the inner gets ``g / s`` (the old scale)
and the scale doubles after ``N`` finite steps in a row; on a NaN or inf the
update is skipped, the scale halves and the counter restarts.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradxform as gx
from tests.helpers import assert_trees_close, gradient_stream, is_none, random_params

# Non-finite gradients are what this module feeds on purpose.
pytestmark = pytest.mark.allows_nan


def bits(x):
    x = np.asarray(x)
    if x.dtype.kind != "f" and x.dtype.name != "bfloat16":
        return x
    return x.view({2: np.uint16, 4: np.uint32, 8: np.uint64}[x.dtype.itemsize])


def assert_bitwise(a, b, context=""):
    assert jax.tree.structure(a, is_leaf=is_none) == jax.tree.structure(b, is_leaf=is_none)
    jax.tree.map(lambda x, y: np.testing.assert_array_equal(bits(x), bits(y), err_msg=context),
                 a, b)


def keras_dynamic_scale(script, initial_scale, growth_steps):
    """Per step: (scale used to unscale, scale after, counter after, skipped after)."""
    scale, counter, skipped = np.float32(initial_scale), 0, 0
    out = []
    for kind in script:
        used = scale
        if kind == "F":
            if counter == growth_steps - 1:
                counter, scale = 0, scale * np.float32(2)
            else:
                counter += 1
        else:
            counter, scale, skipped = 0, scale * np.float32(0.5), skipped + 1
        out.append((used, scale, counter, skipped))
    return out


SCRIPT = "FFFFIFFFFFFFNFFIIFFFFFFFFNF"


def scripted_grads(params, script, scales, seed=0):
    """Unscaled gradients, and the gradients of the scaled loss (with NaN/inf where scripted)."""
    plain = gradient_stream(params, len(script), seed=seed)
    scaled = []
    for kind, g, s in zip(script, plain, scales):
        g = jax.tree.map(lambda x: x * jnp.asarray(s, x.dtype), g)
        if kind != "F":
            bad = np.inf if kind == "I" else np.nan
            g = dict(g, pair=(g["pair"][0].at[2].set(bad), g["pair"][1]))
        scaled.append(g)
    return plain, scaled


@pytest.mark.parametrize("growth_steps", [1, 3, 4])
def test_dynamic_scale_sequence_matches_keras(growth_steps):
    params = random_params(0)
    ref = keras_dynamic_scale(SCRIPT, 2.0**10, growth_steps)
    plain, scaled = scripted_grads(params, SCRIPT, [r[0] for r in ref])
    tx = gx.dynamic_loss_scale(gx.identity(), initial_scale=2.0**10,
                               dynamic_growth_steps=growth_steps)
    update, state = jax.jit(tx.update), tx.init(params)
    for step, (kind, g, g_plain, (used, scale, counter, skipped)) in enumerate(
            zip(SCRIPT, scaled, plain, ref)):
        context = f"step {step} ({kind})"
        assert float(gx.current_loss_scale(state)) == used, context
        updates, state = update(g, state, params)
        if kind == "F":
            assert_bitwise(updates, g_plain, context)  # g * s / s with s a power of two
        else:
            assert all(np.all(np.signbit(np.asarray(u))) for u in jax.tree.leaves(updates)), context
            assert_bitwise(gx.apply_updates(params, updates), params, context)
        assert float(state.loss_scale) == scale, context
        assert int(state.growth_count) == counter, context
        assert int(state.skipped_steps) == skipped, context
        assert state.loss_scale.dtype == jnp.float32 and state.growth_count.dtype == jnp.int32


def rich_inner():
    """Keras's shape: clipping and Adam on accumulated means, then the parameter average."""
    optimizer = gx.chain(gx.clip_by_global_norm(2.0),
                         gx.adam(lambda c: 0.05 / (1.0 + c.astype(jnp.float32))))
    return gx.chain(gx.accumulate_gradients(optimizer, 2),
                    gx.params_ema(0.9, 3, calls_per_step=2))


def test_non_finite_steps_leave_params_and_entire_inner_state_bitwise():
    params = random_params(1)
    params["dense"]["bias"] = params["dense"]["bias"].at[0].set(-0.0)
    ref = keras_dynamic_scale(SCRIPT, 2.0**12, 3)
    plain, scaled = scripted_grads(params, SCRIPT, [r[0] for r in ref], seed=2)
    tx = gx.dynamic_loss_scale(rich_inner(), initial_scale=2.0**12, dynamic_growth_steps=3)
    alone = rich_inner()
    update, apply = jax.jit(tx.update), jax.jit(gx.apply_updates)
    alone_update = jax.jit(alone.update)
    state, alone_state, alone_params = tx.init(params), alone.init(params), params
    for step, (kind, g, g_plain) in enumerate(zip(SCRIPT, scaled, plain)):
        context = f"step {step} ({kind})"
        updates, new_state = update(g, state, params)
        new_params = apply(params, updates)
        if kind == "F":
            expected, alone_state = alone_update(g_plain, alone_state, alone_params)
            alone_params = gx.apply_updates(alone_params, expected)
            assert_trees_close(updates, expected, rtol=1e-6, atol=1e-7, context=context)
            assert_trees_close(new_state.inner_state, alone_state, rtol=1e-6, atol=1e-7,
                               context=context)
        else:
            jax.tree.map(np.testing.assert_array_equal, new_state.inner_state, state.inner_state)
            assert_bitwise(new_state.inner_state, state.inner_state, context)
            assert_bitwise(new_params, params, context)
        state, params = new_state, new_params
    finite = SCRIPT.count("F")
    assert int(state.inner_state[0].count) == finite
    assert int(state.inner_state[0].inner_state[1][0].count) == finite // 2  # Adam's t
    assert int(state.skipped_steps) == len(SCRIPT) - finite
    assert_trees_close(gx.finalize_params(params, state), alone_state[1].ema, rtol=1e-6, atol=1e-7)


def test_inner_not_run_on_non_finite_steps():
    calls = []

    def init(params):
        return jnp.zeros([], jnp.int32)

    def update(updates, state, params=None):
        jax.debug.callback(lambda: calls.append(1))
        return updates, state + 1

    tx = gx.dynamic_loss_scale(gx.GradientTransformation(init, update), initial_scale=4.0)
    step = jax.jit(tx.update)
    state = tx.init({"w": jnp.ones(2)})
    for value in [1.0, np.nan, np.inf, 2.0, -np.inf]:
        _, state = step({"w": jnp.array([value, 1.0])}, state)
    jax.effects_barrier()
    assert len(calls) == 2 and int(state.inner_state) == 2


def test_dynamic_loss_scale_under_jit_does_not_recompile():
    traces = []
    tx = gx.dynamic_loss_scale(gx.adam(1e-2), initial_scale=8.0, dynamic_growth_steps=2)

    def step(grads, state, params):
        traces.append(1)
        return tx.update(grads, state, params)

    step = jax.jit(step)
    params = {"w": jnp.ones(3), "b": None}
    state = tx.init(params)
    for value in [1.0, 2.0, np.nan, 3.0, 4.0, 5.0]:
        updates, new_state = step({"w": jnp.full(3, value), "b": None}, state, params)
        jax.tree.map(lambda a, b: None if a.dtype == b.dtype and a.shape == b.shape
                     else pytest.fail(f"{a.dtype} != {b.dtype}"), new_state, state)
        state = new_state
    assert len(traces) == 1
    assert float(state.loss_scale) == 16.0


# --- static_loss_scale ----------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float16], ids=lambda d: d.__name__)
def test_static_loss_scale_divides(dtype):
    params = random_params(3, dtype)
    grads = gradient_stream(params, 1, seed=4)[0]
    tx = gx.static_loss_scale(1024.0)
    state = tx.init(params)
    updates, new_state = jax.jit(tx.update)(grads, state)
    assert updates["blocks"][1] is None
    expected = jax.tree.map(lambda g: (np.asarray(g, np.float32) / np.float32(1024)).astype(g.dtype),
                            grads)
    assert_trees_close(updates, expected, rtol=0, atol=0)
    assert all(u.dtype == dtype for u in jax.tree.leaves(updates))
    assert float(new_state.loss_scale) == 1024.0


@pytest.mark.parametrize("make", [lambda: gx.static_loss_scale(2.0**16),
                                  lambda: gx.dynamic_loss_scale(gx.identity(), 2.0**16)],
                         ids=["static", "dynamic"])
def test_float16_gradients_with_scale_beyond_float16_range(make):
    grads = {"w": jnp.asarray([60000.0, 1000.0, -512.0], jnp.float16)}
    tx = make()
    updates, _ = tx.update(grads, tx.init(grads), grads)
    expected = (np.asarray(grads["w"], np.float32) / np.float32(2.0**16)).astype(np.float16)
    np.testing.assert_array_equal(np.asarray(updates["w"]), expected)


# --- scale_loss / current_loss_scale -------------------------------------------------------


def side_by_side_scales():
    """Scales 2 * 16 * 4 = 128, none of them inside another's inner state."""
    inner = gx.chain(gx.static_loss_scale(2.0), gx.dynamic_loss_scale(gx.sgd(0.1), 16.0))
    return gx.accumulate_gradients(gx.chain(inner, gx.static_loss_scale(4.0)), 1)


def scale_inside_dynamic():
    """Scales 2 * 16 * 4 = 128, the 4 inside the dynamic scale's inner state."""
    inner = gx.chain(gx.static_loss_scale(4.0), gx.sgd(0.1))
    return gx.chain(gx.static_loss_scale(2.0), gx.dynamic_loss_scale(inner, initial_scale=16.0))


@pytest.mark.parametrize("tx, scale", [
    (gx.chain(gx.static_loss_scale(8.0), gx.adam(1e-3)), 8.0),
    (gx.dynamic_loss_scale(gx.adam(1e-3), initial_scale=2.0**15), 2.0**15),
    (side_by_side_scales(), 128.0),
    (scale_inside_dynamic(), 128.0),
    (gx.dynamic_loss_scale(gx.dynamic_loss_scale(gx.sgd(0.1), 8.0), 4.0), 32.0),
    (gx.accumulate_gradients(gx.dynamic_loss_scale(gx.sgd(0.1), 32.0), 2), 32.0),
    (gx.named_chain(("s", gx.static_loss_scale(0.5)), ("o", gx.sgd(1.0))), 0.5),
], ids=["static-in-chain", "dynamic", "nested-product", "static-inside-dynamic",
        "dynamic-inside-dynamic", "inside-accumulation", "named_chain"])
def test_scale_loss_multiplies_by_product_of_scales(tx, scale):
    state = tx.init({"w": jnp.ones(2)})
    assert float(gx.current_loss_scale(state)) == scale
    loss = jnp.float32(0.3)
    np.testing.assert_array_equal(gx.scale_loss(loss, state), np.float32(0.3) * np.float32(scale))
    np.testing.assert_array_equal(jax.jit(gx.scale_loss)(loss, state),
                                  np.float32(0.3) * np.float32(scale))


@pytest.mark.parametrize("tx", [gx.adam(1e-3), gx.identity(), gx.accumulate_gradients(gx.sgd(1.0), 2)],
                         ids=["adam", "identity", "accumulate"])
def test_scale_loss_without_scale_returns_loss(tx):
    state = tx.init({"w": jnp.ones(2)})
    current = gx.current_loss_scale(state)
    assert current.dtype == jnp.float32 and float(current) == 1.0
    for loss in [jnp.float32(0.7), jnp.asarray(0.7, jnp.float16), jnp.asarray(3.0, jnp.bfloat16)]:
        scaled = gx.scale_loss(loss, state)
        assert scaled.dtype == loss.dtype
        np.testing.assert_array_equal(np.asarray(scaled), np.asarray(loss))


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16], ids=lambda d: d.__name__)
def test_scale_loss_keeps_low_precision_dtype(dtype):
    state = gx.dynamic_loss_scale(gx.sgd(0.1), initial_scale=2.0**10).init({"w": jnp.ones(2)})
    loss = jnp.asarray(1.37, dtype)
    scaled = gx.scale_loss(loss, state)
    assert scaled.dtype == dtype
    expected = (np.float32(np.asarray(loss, np.float32)) * np.float32(2.0**10)).astype(dtype)
    np.testing.assert_array_equal(np.asarray(scaled, np.float32), np.asarray(expected, np.float32))


@pytest.mark.parametrize("build", [side_by_side_scales,
                                   pytest.param(scale_inside_dynamic)],
                         ids=["side-by-side", "static-inside-dynamic"])
def test_scale_loss_gradients_unscale_to_true_gradients(build):
    """End to end: grad of scale_loss(loss) through static + dynamic scales is the plain grad."""
    tx = build()
    params = {"w": jnp.array([0.5, -1.5, 2.0])}
    state = tx.init(params)

    def loss_fn(p):
        return jnp.sum(p["w"] ** 3) / 3.0

    grads = jax.grad(lambda p: gx.scale_loss(loss_fn(p), state))(params)
    np.testing.assert_allclose(grads["w"], 128 * np.array([0.25, 2.25, 4.0]), rtol=1e-6)
    updates, _ = tx.update(grads, state, params)
    np.testing.assert_allclose(updates["w"], -0.1 * np.array([0.25, 2.25, 4.0]), rtol=1e-6)


# --- validation -----------------------------------------------------------------------------


@pytest.mark.parametrize("build, exc, text", [
    (lambda: gx.static_loss_scale(0.0), ValueError,
     "static_loss_scale: loss_scale must be in [2**-126, 2**126]"),
    (lambda: gx.static_loss_scale(-2.0), ValueError, "static_loss_scale: loss_scale"),
    (lambda: gx.static_loss_scale(float("inf")), ValueError, "static_loss_scale: loss_scale must be finite"),
    (lambda: gx.static_loss_scale(True), TypeError, "static_loss_scale: loss_scale must be a real number"),
    (lambda: gx.dynamic_loss_scale(gx.sgd(0.1), 0.0), ValueError, "dynamic_loss_scale: initial_scale"),
    (lambda: gx.dynamic_loss_scale(gx.sgd(0.1), float("nan")), ValueError, "dynamic_loss_scale: initial_scale must be finite"),
    (lambda: gx.dynamic_loss_scale(gx.sgd(0.1), 2.0, 0), ValueError,
     "dynamic_loss_scale: dynamic_growth_steps must be an int >= 1, got 0"),
    (lambda: gx.dynamic_loss_scale(gx.sgd(0.1), 2.0, 10.0), TypeError,
     "dynamic_loss_scale: dynamic_growth_steps must be an int >= 1, got 10.0"),
    (lambda: gx.dynamic_loss_scale(gx.sgd(0.1), 2.0, True), TypeError,
     "dynamic_loss_scale: dynamic_growth_steps must be an int >= 1, got True"),
    (lambda: gx.dynamic_loss_scale("adam"), TypeError, "dynamic_loss_scale: inner must be a transformation"),
], ids=["static-0", "static-neg", "static-inf", "static-bool", "dyn-0", "dyn-nan", "growth-0",
        "growth-float", "growth-bool", "inner-str"])
def test_validation_errors(build, exc, text):
    with pytest.raises(exc) as info:
        build()
    assert text in str(info.value)
