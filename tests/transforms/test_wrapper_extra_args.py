"""Extra keyword arguments through every wrapper: an inner gets only those its update accepts.

A plain ``optax.GradientTransformation`` built from ``update(updates, state,
params=None)`` takes no extra keyword argument; calling it with ``value=``
raises ``TypeError``. optax's wrappers (``masked``, ``partition``,
``apply_if_finite``, ``MultiSteps``) drop the extra arguments for such an
inner (``with_extra_args_support``), and gradxform's ``chain`` decides from the
member's signature. Every gradxform wrapper must do the same:

* a wrapper around such an inner, called with ``value=`` on every step, gives
  the updates of optax's same wrapper run live (or, where optax has none, the
  analytic updates: the mean of the micro-batch gradients for
  ``accumulate_gradients``, the unscaled gradients for ``dynamic_loss_scale``);
* an inner whose update requires ``value`` still receives it, unchanged.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradxform as gx
from tests.helpers import assert_trees_close

PARAMS = {"w": jnp.array([1.0, -2.0, 3.0]), "b": jnp.array([0.5, -0.5])}
GRADS = [
    {"w": jnp.array([0.1, 0.2, -0.3]), "b": jnp.array([1.0, 2.0])},
    {"w": jnp.array([-0.4, 0.5, 0.6]), "b": jnp.array([-3.0, 4.0])},
    {"w": jnp.array([0.7, -0.8, 0.9]), "b": jnp.array([5.0, -6.0])},
    {"w": jnp.array([1.0, 1.1, -1.2]), "b": jnp.array([-7.0, 8.0])},
]
LR = 0.5


def plain_sgd(learning_rate=LR):
    """SGD as a plain optax transformation whose update takes no extra keyword argument."""

    def init(params):
        del params
        return optax.EmptyState()

    def update(updates, state, params=None):
        del params
        return jax.tree.map(lambda g: -learning_rate * g, updates), state

    return optax.GradientTransformation(init, update)


def value_recorder():
    """Identity on the updates; its state is the last ``value`` it was given (required)."""

    def init(params):
        del params
        return jnp.zeros([], jnp.float32)

    def update(updates, state, params=None, *, value):
        del params, state
        return updates, jnp.asarray(value, jnp.float32)

    return optax.GradientTransformationExtraArgs(init, update)


def run(tx, grads_seq=GRADS, **extra):
    state = tx.init(PARAMS)
    step = jax.jit(lambda g, s, p, v: tx.update(g, s, p, value=v, **extra))
    outputs = []
    for index, grads in enumerate(grads_seq):
        updates, state = step(grads, state, PARAMS, jnp.float32(index + 0.25))
        outputs.append(updates)
    return outputs, state


def run_optax(tx):
    state = tx.init(PARAMS)
    outputs = []
    for index, grads in enumerate(GRADS):
        with jax.numpy_dtype_promotion("standard"):
            updates, state = tx.update(grads, state, PARAMS, value=jnp.float32(index + 0.25))
        outputs.append(updates)
    return outputs


MASK = {"w": True, "b": False}
LABELS = {"w": "slow", "b": "fast"}

WRAPPERS_WITH_OPTAX = [
    pytest.param(lambda inner: gx.masked(inner(), MASK),
                 lambda inner: optax.masked(inner(), MASK), id="masked"),
    pytest.param(lambda inner: gx.partition({"slow": inner(), "fast": inner()}, LABELS),
                 lambda inner: optax.partition({"slow": inner(), "fast": inner()}, LABELS),
                 id="partition"),
    pytest.param(lambda inner: gx.apply_if_finite(inner(), 2),
                 lambda inner: optax.apply_if_finite(inner(), 2), id="apply_if_finite"),
    pytest.param(lambda inner: gx.multi_steps(inner(), 2),
                 lambda inner: optax.MultiSteps(inner(), 2).gradient_transformation(),
                 id="multi_steps"),
]


@pytest.mark.parametrize("make_gx, make_optax", WRAPPERS_WITH_OPTAX)
def test_wrapper_drops_extra_args_an_inner_does_not_take_as_optax(make_gx, make_optax):
    mine, _ = run(make_gx(plain_sgd))
    reference = run_optax(make_optax(plain_sgd))
    for step, (a, b) in enumerate(zip(mine, reference)):
        assert_trees_close(a, b, rtol=1e-6, atol=0, context=f"step {step}")


def test_accumulate_gradients_drops_extra_args_an_inner_does_not_take():
    mine, _ = run(gx.accumulate_gradients(plain_sgd(), every_k=2))
    for step in (1, 3):  # the steps that emit: -lr * mean of the two micro-batches
        expected = jax.tree.map(lambda a, b: -LR * (a + b) / 2, GRADS[step - 1], GRADS[step])
        assert_trees_close(mine[step], expected, rtol=1e-6, atol=0, context=f"step {step}")


def test_dynamic_loss_scale_drops_extra_args_an_inner_does_not_take():
    scale = 8.0
    scaled = [jax.tree.map(lambda g: g * scale, grads) for grads in GRADS]
    mine, _ = run(gx.dynamic_loss_scale(plain_sgd(), initial_scale=scale), scaled)
    for step, (updates, grads) in enumerate(zip(mine, GRADS)):
        assert_trees_close(updates, jax.tree.map(lambda g: -LR * g, grads), rtol=1e-6, atol=0,
                           context=f"step {step}")


WRAPPERS = [
    pytest.param(lambda inner: gx.masked(inner, MASK), lambda s: s.inner_state, id="masked"),
    pytest.param(lambda inner: gx.partition({"slow": inner, "fast": gx.sgd(0.1)}, LABELS),
                 lambda s: s.inner_states["slow"].inner_state, id="partition"),
    pytest.param(lambda inner: gx.apply_if_finite(inner, 2), lambda s: s.inner_state,
                 id="apply_if_finite"),
    pytest.param(lambda inner: gx.multi_steps(inner, 1), lambda s: s.inner_opt_state,
                 id="multi_steps"),
    pytest.param(lambda inner: gx.accumulate_gradients(inner, every_k=1),
                 lambda s: s.inner_state, id="accumulate_gradients"),
    pytest.param(lambda inner: gx.dynamic_loss_scale(inner, initial_scale=1.0),
                 lambda s: s.inner_state, id="dynamic_loss_scale"),
]


@pytest.mark.parametrize("wrap, recorded", WRAPPERS)
def test_wrapper_passes_extra_args_an_inner_takes_and_filters_the_rest(wrap, recorded):
    # The inner takes value (required) but not other; both are given on every step.
    _, state = run(wrap(value_recorder()), other=jnp.float32(-1.0))
    np.testing.assert_array_equal(recorded(state), np.float32(len(GRADS) - 1 + 0.25))
