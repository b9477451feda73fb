"""Every optimizer converges on a parabola and on the 2-D Rosenbrock function.

Each run is one jitted `lax.scan` over the steps, in float32. The thresholds
are on the distance to the known minimiser: ``c`` for
``f(x) = sum((x - c)**2)``, ``(1, 1)`` for Rosenbrock from ``(-1.2, 1)``. With
weight decay the minimiser moves; where that shift can be computed exactly (the
Adagrad chain, whose fixed point depends only on its accumulator) the test
compares with the shifted point, elsewhere it bounds the shift.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradxform as gx

C = np.array([1.0, -2.0, 3.0, 0.5, -0.25])
PARABOLA_START = np.zeros(5)
ROSENBROCK_START = np.array([-1.2, 1.0])
ROSENBROCK_MIN = np.ones(2)
DECAY = 1e-4  # the small weight decay of adamw and of the hand-written chain


def parabola(x):
    return jnp.sum((x - jnp.asarray(C, jnp.float32)) ** 2)


def rosenbrock(x):
    return 100.0 * (x[1] - x[0] ** 2) ** 2 + (1.0 - x[0]) ** 2


def adagrad_chain(learning_rate):
    """The hand-written chain: clip, Adagrad, decoupled decay, learning rate."""
    return gx.chain(
        gx.clip_by_global_norm(1.0),
        gx.scale_by_adagrad(),
        gx.add_decayed_weights(DECAY),
        gx.scale_by_learning_rate(learning_rate),
    )


def minimize(tx, loss, start, steps):
    """``steps`` descent steps in one jitted scan; returns the final point, state and loss."""

    @jax.jit
    def run(x0):
        def step(carry, _):
            x, state = carry
            updates, state = tx.update(jax.grad(loss)(x), state, x)
            return (gx.apply_updates(x, updates), state), None

        (x, state), _ = jax.lax.scan(step, (x0, tx.init(x0)), None, length=steps)
        return x, state, loss(x)

    x, state, value = run(jnp.asarray(start, jnp.float32))
    assert x.dtype == jnp.float32
    return np.asarray(x, np.float64), state, float(value)


# name -> (optimizer, steps, tolerance on the distance to c)
PARABOLA_CASES = {
    "sgd": (lambda: gx.sgd(0.1), 500, 1e-4),
    "sgd-momentum": (lambda: gx.sgd(0.05, momentum=0.9), 500, 1e-4),
    "sgd-nesterov": (lambda: gx.sgd(0.05, momentum=0.9, nesterov=True), 500, 1e-4),
    "adagrad": (lambda: gx.adagrad(0.5), 500, 1e-4),
    "adam": (lambda: gx.adam(0.1), 500, 1e-4),
    "adam-amsgrad": (lambda: gx.adam(0.1, amsgrad=True), 500, 1e-4),
    "adam-nesterov": (lambda: gx.adam(0.1, nesterov=True), 500, 1e-4),
    "rmsprop": (lambda: gx.rmsprop(0.01), 500, 1e-4),
    "rmsprop-centered": (lambda: gx.rmsprop(0.01, centered=True), 500, 1e-4),
}


@pytest.mark.parametrize("name", list(PARABOLA_CASES))
def test_parabola(name):
    build, steps, tolerance = PARABOLA_CASES[name]
    x, _, value = minimize(build(), parabola, PARABOLA_START, steps)
    assert np.linalg.norm(x - C) < tolerance, x
    assert value < tolerance**2


def test_parabola_adamw():
    """AdamW stops where the Adam direction balances the decay: m_hat / sqrt(v_hat) = -lambda x.

    Since ``v_hat`` is an average of past squared gradients, ``|g| <=
    lambda |x| max|g_t|`` there, and ``g = 2 (x - c)`` gives ``|x - c| <=
    lambda |x| max|g_t| / 2``: at most about 1e-3 here (``max|g_t| = 2 max|c|``
    from a start at 0), and the decay pulls towards 0.
    """
    x, _, _ = minimize(gx.adamw(0.1, weight_decay=DECAY), parabola, PARABOLA_START, 500)
    bound = DECAY * np.abs(C) * 2 * np.max(np.abs(C)) / 2
    assert np.all(np.abs(x - C) <= bound + 1e-5), (x - C, bound)
    assert np.all(np.abs(x) <= np.abs(C) + 1e-5)  # shrunk towards 0, not pushed away


def test_parabola_adagrad_chain_reaches_the_shifted_minimiser():
    """The chain's fixed point is exact: ``g / sqrt(s + eps) + lambda x = 0``.

    With ``g = 2 (x - c)``, that is ``x = 2 c / (2 + lambda sqrt(s + eps))``,
    ``s`` being the final Adagrad accumulator (it stops growing once ``g`` is
    tiny). Clipping is inactive there.
    """
    x, state, _ = minimize(adagrad_chain(1.0), parabola, PARABOLA_START, 500)
    s = np.asarray(state[1].sum_of_squares, np.float64)
    shifted = 2 * C / (2 + DECAY * np.sqrt(s + 1e-7))
    np.testing.assert_allclose(x, shifted, rtol=1e-5, atol=1e-6)
    assert np.linalg.norm(x - C) < 1e-2  # and the shift is small


# name -> (optimizer, steps, tolerance on the distance to (1, 1))
ROSENBROCK_CASES = {
    "sgd": (lambda: gx.sgd(1e-3), 40_000, 1e-3),
    "sgd-momentum": (lambda: gx.sgd(1e-3, momentum=0.9), 20_000, 1e-4),
    "sgd-nesterov": (lambda: gx.sgd(5e-4, momentum=0.9, nesterov=True), 20_000, 1e-4),
    "adagrad": (lambda: gx.adagrad(0.5), 20_000, 1e-3),
    "adam": (lambda: gx.adam(1e-3), 20_000, 1e-4),
    "adam-amsgrad": (lambda: gx.adam(0.1, amsgrad=True), 20_000, 1e-4),
    "adam-nesterov": (lambda: gx.adam(3e-4, nesterov=True), 20_000, 1e-4),
    # See test_parabola_adamw: the decay moves the minimiser by at most
    # lambda |x| sqrt(v_hat) / (smallest Hessian eigenvalue, about 0.4).
    "adamw": (lambda: gx.adamw(1e-3, weight_decay=DECAY), 20_000, 1e-3),
    # With a constant rate, RMSProp's steps stay of order lr near the minimum
    # (g / rms(g) is of order 1), so it hovers within a few lr of it.
    "rmsprop": (lambda: gx.rmsprop(3e-4), 20_000, 3e-3),
    "rmsprop-centered": (lambda: gx.rmsprop(1e-4, centered=True), 20_000, 1e-3),
}


@pytest.mark.parametrize("name", list(ROSENBROCK_CASES))
def test_rosenbrock(name):
    build, steps, tolerance = ROSENBROCK_CASES[name]
    start_value = rosenbrock(jnp.asarray(ROSENBROCK_START))
    x, _, value = minimize(build(), rosenbrock, ROSENBROCK_START, steps)
    assert np.linalg.norm(x - ROSENBROCK_MIN) < tolerance, x
    assert value < 1e-4 * float(start_value)


def _rosenbrock_gradient(x):
    return np.array([
        -400.0 * x[0] * (x[1] - x[0] ** 2) - 2.0 * (1.0 - x[0]),
        200.0 * (x[1] - x[0] ** 2),
    ])


def _rosenbrock_hessian(x):
    return np.array([
        [1200.0 * x[0] ** 2 - 400.0 * x[1] + 2.0, -400.0 * x[0]],
        [-400.0 * x[0], 200.0],
    ])


def test_rosenbrock_adagrad_chain_reaches_the_shifted_minimiser():
    """The chain stops where ``grad f(x) + lambda sqrt(s + eps) x = 0``; solved here by Newton.

    ``s`` is the final Adagrad accumulator. The shifted point is then within a
    few 1e-2 of (1, 1), and the optimizer must sit on it.
    """
    x, state, _ = minimize(adagrad_chain(0.1), rosenbrock, ROSENBROCK_START, 20_000)
    damping = DECAY * np.sqrt(np.asarray(state[1].sum_of_squares, np.float64) + 1e-7)
    shifted = ROSENBROCK_MIN.copy()
    for _ in range(50):
        residual = _rosenbrock_gradient(shifted) + damping * shifted
        shifted -= np.linalg.solve(_rosenbrock_hessian(shifted) + np.diag(damping), residual)
    assert np.linalg.norm(_rosenbrock_gradient(shifted) + damping * shifted) < 1e-10
    np.testing.assert_allclose(x, shifted, rtol=0, atol=2e-4)
    assert np.linalg.norm(x - ROSENBROCK_MIN) < 5e-2
