"""The bounds of dynamic loss scaling: the scale never becomes 0 or inf.

A run of non-finite steps halves the scale down to its floor and no further,
so the next finite step is applied with finite numbers; finite steps double it
up to its ceiling and no further, so later steps go on being applied. Each run
drives the real pipeline: the gradient of ``gx.scale_loss(loss, state)`` for
the linear loss ``sum(c * w)``, whose true gradient is ``c``, so SGD's params
after ``k`` applied steps are ``w0 - k * lr * c`` (analytic; ``lr`` and ``c``
are powers of two, so float32 holds every value exactly).

torch's ``GradScaler`` (``torch.amp``, on CPU) is run live where it means
something: its scale halves with no floor (to 0 after about 165 halvings,
after which its next finite step writes NaN into the params), and its
doublings stop only where float32 would overflow, at 2**127, one doubling
above the ceiling here (2**126: XLA unscales by multiplying with 1/s, and
2**-127 is subnormal, flushed to 0).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradxform as gx

# Non-finite gradients are what this module feeds on purpose.
pytestmark = pytest.mark.allows_nan

W0 = np.array([1.0, -2.0], np.float32)
LR = 0.125
TINY = 2.0**-126


def _step_fn(tx):
    def step(params, state, c):
        grads = jax.grad(lambda p: gx.scale_loss(jnp.sum(p["w"] * c), state))(params)
        updates, state = tx.update(grads, state, params)
        return gx.apply_updates(params, updates), state

    return jax.jit(step)


def run(tx, script, c):
    """Runs ``script`` ("F" finite, "N" NaN loss); the scale after each step, the params, the state."""
    c = np.asarray(c, np.float32)
    bad = c.copy()
    bad[0] = np.nan
    params, step = {"w": jnp.asarray(W0)}, _step_fn(tx)
    state = tx.init(params)
    scales = []
    for kind in script:
        params, state = step(params, state, jnp.asarray(c if kind == "F" else bad))
        scales.append(float(gx.current_loss_scale(state)))
    return scales, params, state


def expected_params(applied, c):
    return (np.float64(W0) - applied * LR * np.float64(c)).astype(np.float32)


# --- the floor -----------------------------------------------------------------------------


@pytest.mark.parametrize("make, floor, c", [
    (lambda: gx.dynamic_loss_scale(gx.sgd(LR), initial_scale=2.0**15), 1.0, [0.25, -0.5]),
    # At the floor 2**-126 the scaled gradient must itself be a normal number (XLA flushes
    # subnormals to 0), hence |c| >= 1.
    (lambda: gx.keras.loss_scale_optimizer(gx.sgd(LR), initial_scale=2.0**15), TINY, [2.0, -4.0]),
    (lambda: gx.dynamic_loss_scale(gx.sgd(LR), 2.0**4, 3, min_loss_scale=2.0**-3), 2.0**-3,
     [0.25, -0.5]),
], ids=["default-floor-1", "keras-floor-2**-126", "min_loss_scale=2**-3"])
def test_many_non_finite_steps_stop_at_the_floor_then_a_finite_step_is_applied(make, floor, c):
    tx = make()
    initial = float(tx.init({"w": jnp.asarray(W0)}).loss_scale)
    skips = 200
    scales, params, state = run(tx, "N" * skips + "FFF", c)
    assert np.all(np.isfinite(np.asarray(params["w"])))
    np.testing.assert_array_equal(params["w"], expected_params(3, c))
    assert int(state.skipped_steps) == skips
    halvings = [max(initial * 0.5 ** (k + 1), floor) for k in range(skips)]
    assert scales[:skips] == halvings
    assert scales[skips - 1] == floor and min(scales) == floor


def test_below_one_a_finite_gradient_that_unscales_to_inf_is_held():
    """With s < 1, g / s can overflow float16 (or float32) although g is finite: held, not applied."""
    tx = gx.keras.loss_scale_optimizer(gx.sgd(1.0), initial_scale=0.5)
    params = {"w": jnp.asarray([1.0, 2.0], jnp.float16)}
    state = tx.init(params)
    grads = {"w": jnp.asarray([60000.0, 1.0], jnp.float16)}  # finite; 120000 is not a float16
    updates, state = jax.jit(tx.update)(grads, state, params)
    np.testing.assert_array_equal(gx.apply_updates(params, updates)["w"], params["w"])
    assert int(state.skipped_steps) == 1 and float(state.loss_scale) == 0.25
    # The same gradient at s = 0.25 is 240000 after unscaling: held again; at 2.0**-2 a
    # float16-sized one goes through, exactly g / s.
    updates, state = tx.update(grads, state, params)
    assert int(state.skipped_steps) == 2 and float(state.loss_scale) == 0.125
    small = {"w": jnp.asarray([0.5, -0.25], jnp.float16)}
    updates, state = tx.update(small, state, params)
    np.testing.assert_array_equal(updates["w"], np.asarray([-4.0, 2.0], np.float16))


# --- the ceiling ---------------------------------------------------------------------------


@pytest.mark.parametrize("initial, ceiling", [(2.0**15, 2.0**126), (3.0, 3.0 * 2.0**124)],
                         ids=["power-of-two", "three"])
@pytest.mark.parametrize("make", [
    lambda initial: gx.dynamic_loss_scale(gx.sgd(LR), initial, 1),
    lambda initial: gx.keras.loss_scale_optimizer(gx.sgd(LR), initial, 1),
], ids=["dynamic_loss_scale", "keras"])
def test_growth_every_step_stops_at_the_ceiling_and_steps_go_on_being_applied(
        make, initial, ceiling):
    steps = 140
    c = [0.25, -0.5]
    scales, params, state = run(make(initial), "F" * steps, c)
    assert int(state.skipped_steps) == 0
    np.testing.assert_array_equal(params["w"], expected_params(steps, c))
    # Doublings in float64, which stop where the next one would pass 2**126.
    assert scales == [min(initial * 2.0 ** (k + 1), ceiling) for k in range(steps)]
    assert ceiling <= 2.0**126 < 2 * ceiling


def test_max_loss_scale_stops_growth_below_it():
    tx = gx.dynamic_loss_scale(gx.sgd(LR), 2.0**10, 1, max_loss_scale=5000.0)
    scales, params, state = run(tx, "F" * 6 + "N" + "F" * 3, [0.25, -0.5])
    assert scales == [2048.0, 4096.0, 4096.0, 4096.0, 4096.0, 4096.0, 2048.0, 4096.0, 4096.0,
                      4096.0]
    np.testing.assert_array_equal(params["w"], expected_params(9, [0.25, -0.5]))


# --- arguments -----------------------------------------------------------------------------


DLS, KLSO, SLS = "dynamic_loss_scale", "keras.loss_scale_optimizer", "static_loss_scale"


@pytest.mark.parametrize("make, owner, argument, shown", [
    (lambda: gx.dynamic_loss_scale(gx.sgd(0.1), initial_scale=0.5), DLS, "initial_scale", "0.5"),
    (lambda: gx.dynamic_loss_scale(gx.sgd(0.1), min_loss_scale=0.0), DLS, "min_loss_scale", "0.0"),
    (lambda: gx.dynamic_loss_scale(gx.sgd(0.1), min_loss_scale=1e-40), DLS, "min_loss_scale",
     "1e-40"),
    (lambda: gx.dynamic_loss_scale(gx.sgd(0.1), min_loss_scale=2.0**16), DLS, "min_loss_scale",
     "65536.0"),
    (lambda: gx.dynamic_loss_scale(gx.sgd(0.1), max_loss_scale=1024.0), DLS, "max_loss_scale",
     "1024.0"),
    (lambda: gx.dynamic_loss_scale(gx.sgd(0.1), max_loss_scale=1e39), DLS, "max_loss_scale",
     "1e+39"),
    (lambda: gx.dynamic_loss_scale(gx.sgd(0.1), initial_scale=1e39), DLS, "initial_scale", "1e+39"),
    (lambda: gx.keras.loss_scale_optimizer(gx.sgd(0.1), initial_scale=1e-40), KLSO,
     "initial_scale", "1e-40"),
    (lambda: gx.keras.loss_scale_optimizer(gx.sgd(0.1), initial_scale=1e39), KLSO,
     "initial_scale", "1e+39"),
    (lambda: gx.static_loss_scale(1e-40), SLS, "loss_scale", "1e-40"),
    (lambda: gx.static_loss_scale(1e-46), SLS, "loss_scale", "1e-46"),
    (lambda: gx.static_loss_scale(1e39), SLS, "loss_scale", "1e+39"),
], ids=["initial-below-floor", "min-0", "min-subnormal", "min-above-initial", "max-below-initial",
        "max-beyond-float32", "initial-beyond-float32", "keras-initial-subnormal",
        "keras-initial-beyond-float32", "static-subnormal", "static-rounds-to-0",
        "static-beyond-float32"])
def test_scales_outside_float32_normal_range_or_out_of_order_raise(make, owner, argument, shown):
    with pytest.raises(ValueError) as info:
        make()
    message = str(info.value)
    assert message.startswith(f"{owner}: ") and argument in message and shown in message, message


def test_keras_preset_accepts_every_scale_in_range():
    for initial in (TINY, 0.5, 1.0, 2.0**15, 3.0 * 2.0**124, 2.0**126):
        state = gx.keras.loss_scale_optimizer(gx.sgd(0.1), initial).init({"w": jnp.ones(2)})
        assert float(state.loss_scale) == initial


# --- torch's GradScaler, live ---------------------------------------------------------------


def torch_scales(script, c, init_scale, growth_interval):
    """torch.amp.GradScaler on CPU with SGD on the same loss: the scale after each step, the params."""
    torch = pytest.importorskip("torch")
    w = torch.nn.Parameter(torch.tensor(W0))
    optimizer = torch.optim.SGD([w], lr=LR)
    scaler = torch.amp.GradScaler("cpu", init_scale=init_scale, growth_interval=growth_interval)
    c = torch.tensor(np.asarray(c, np.float32))
    bad = c.clone()
    bad[0] = float("nan")
    scales = []
    for kind in script:
        optimizer.zero_grad()
        scaler.scale(torch.sum(w * (c if kind == "F" else bad))).backward()
        scaler.step(optimizer)
        scaler.update()
        scales.append(scaler.get_scale())
    return scales, w.detach().numpy()


@pytest.mark.parametrize("initial", [2.0**15, 3.0], ids=["power-of-two", "three"])
def test_ceiling_against_torch_grad_scaler(initial):
    """torch's doublings and ours agree up to 2**126; torch's alone go on, to below 2**128."""
    script, c = "F" * 140, [0.25, -0.5]
    reference, torch_params = torch_scales(script, c, initial, growth_interval=1)
    assert max(reference) * 2 > float(np.finfo(np.float32).max) > max(reference)
    for tx in (gx.dynamic_loss_scale(gx.sgd(LR), initial, 1),
               gx.keras.loss_scale_optimizer(gx.sgd(LR), initial, 1)):
        scales, params, _ = run(tx, script, c)
        ceiling = max(scales)
        assert scales == [min(r, ceiling) for r in reference]
        assert reference.count(ceiling * 2) > 0 and ceiling * 2 > 2.0**126
        # Every step applied, on both sides.
        np.testing.assert_array_equal(params["w"], torch_params)


@pytest.mark.parametrize("make, floor", [
    (lambda: gx.dynamic_loss_scale(gx.sgd(LR), 2.0**15, 2), 1.0),
    (lambda: gx.keras.loss_scale_optimizer(gx.sgd(LR), 2.0**15, 2), TINY),
], ids=["dynamic_loss_scale", "keras"])
def test_floor_against_torch_grad_scaler(make, floor):
    """Above the floor the scales are torch's; torch goes on to 0, and then to NaN params."""
    script, c = "FFF" + "N" * 180 + "FFF", [2.0, -4.0]
    reference, torch_params = torch_scales(script, c, 2.0**15, growth_interval=2)
    scales, params, _ = run(make(), script, c)
    # Until torch's scale drops below the floor it is ours; then ours stays at the floor,
    # and the three finite steps at the end count towards a doubling (growth every 2).
    for i in range(len(script) - 3):
        assert scales[i] == (reference[i] if reference[i] >= floor else floor), i
    assert scales[-3:] == [floor, 2 * floor, 2 * floor]
    assert reference[-4] == 0.0 and np.isnan(torch_params).all()  # what the floor prevents
    np.testing.assert_array_equal(params["w"], expected_params(6, c))
