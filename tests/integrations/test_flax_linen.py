"""gradxform optimizers as the ``tx`` of Flax linen's ``TrainState``.

A small MLP is trained on scikit-learn's digits for 300 minibatch steps through
``TrainState.apply_gradients`` in one jitted step, once with a gradxform
optimizer and once, from the same parameters and batches, with the equivalent
optax optimizer. The final losses and parameters must agree, the loss must
fall far, and the step must be traced once (the state keeps its types).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax.training import train_state

import gradxform as gx
from tests.integrations.digits import BATCHES, STEPS, X, Y, cross_entropy
from tests.helpers import assert_trees_close, jit_counting_traces

SCHEDULE = dict(init_value=0.0, peak_value=1e-2, warmup_steps=30, decay_steps=STEPS, end_value=1e-4)


class MLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(10)(nn.relu(nn.Dense(32)(x)))


MODEL = MLP()
PARAMS = MODEL.init(jax.random.key(0), X[:1])


def loss_fn(params, x, y):
    return cross_entropy(MODEL.apply(params, x), y)


def train_step(state, x, y):
    loss, grads = jax.value_and_grad(loss_fn)(state.params, x, y)
    return state.apply_gradients(grads=grads), loss


def train(tx):
    """300 jitted TrainState steps; returns the final state, full-data loss and trace count."""
    step, traces = jit_counting_traces(train_step)
    state = train_state.TrainState.create(apply_fn=MODEL.apply, params=PARAMS, tx=tx)
    for batch in BATCHES:
        state, _ = step(state, X[batch], Y[batch])
    return state, float(loss_fn(state.params, X, Y)), len(traces)


def not_bias(params):
    """optax's mask for "decay every leaf but the biases"."""
    return jax.tree_util.tree_map_with_path(lambda path, _: path[-1].key != "bias", params)


CASES = {
    # AdamW with a warmup-cosine schedule, decaying the kernels only: a name pattern
    # on Flax's key paths ("params/Dense_0/kernel") against optax's boolean mask.
    "adamw-schedule-kernels-only": (
        lambda: gx.adamw(
            gx.schedules.warmup_cosine_decay_schedule(**SCHEDULE), weight_decay=1e-2, mask="kernel"
        ),
        lambda: optax.adamw(
            optax.warmup_cosine_decay_schedule(**SCHEDULE), weight_decay=1e-2, mask=not_bias
        ),
    ),
    "clip-adam": (
        lambda: gx.chain(gx.clip_by_global_norm(1.0), gx.adam(3e-3)),
        lambda: optax.chain(optax.clip_by_global_norm(1.0), optax.adam(3e-3)),
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_train_state_matches_optax(name):
    make_gx, make_optax = CASES[name]
    state, loss, traces = train(make_gx())
    with jax.numpy_dtype_promotion("standard"):  # optax's own code needs implicit promotion
        ref_state, ref_loss, _ = train(make_optax())

    initial_loss = float(loss_fn(PARAMS, X, Y))
    assert loss < 0.1 * initial_loss, (initial_loss, loss)
    assert traces == 1
    assert int(state.step) == STEPS
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
    assert_trees_close(state.params, ref_state.params, rtol=1e-4, atol=1e-6, context=name)
    for leaf, param in zip(jax.tree.leaves(state.params), jax.tree.leaves(PARAMS)):
        assert leaf.dtype == param.dtype == jnp.float32

