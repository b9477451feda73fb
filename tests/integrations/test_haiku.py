"""gradxform optimizers in a dm-haiku training loop.

An ``hk.transform_with_state`` MLP with batch norm is trained on
scikit-learn's digits for 300 minibatch steps in one jitted step: the
optimizer sees Haiku's params dict (``"linear/w"``, ``"batch_norm/scale"``,
...), never the batch-norm statistics, which the loop carries beside it. The
same loop with the optax equivalent must reach the same loss, parameters and
statistics, and the loss must fall far.

Haiku's own batch norm relies on implicit dtype promotion, so the model's
forward and backward pass run under ``"standard"`` promotion; the gradxform
update does not, it runs under the suite's strict promotion.
"""

import haiku as hk
import jax
import numpy as np
import optax

import gradxform as gx
from tests.integrations.digits import BATCH, BATCHES, X, Y, cross_entropy
from tests.helpers import assert_trees_close, jit_counting_traces


def forward(x, is_training):
    x = hk.Linear(32)(x)
    x = hk.BatchNorm(create_scale=True, create_offset=True, decay_rate=0.9)(x, is_training)
    return hk.Linear(10)(jax.nn.relu(x))


NET = hk.without_apply_rng(hk.transform_with_state(forward))
with jax.numpy_dtype_promotion("standard"):
    PARAMS, MODEL_STATE = NET.init(jax.random.key(0), X[:BATCH], True)


def loss_fn(params, model_state, x, y, is_training=True):
    logits, model_state = NET.apply(params, model_state, x, is_training)
    return cross_entropy(logits, y), model_state


def eval_loss(params, model_state):
    with jax.numpy_dtype_promotion("standard"):  # Haiku's batch norm
        return float(loss_fn(params, model_state, X, Y, is_training=False)[0])


def train(tx):
    def train_step(params, model_state, opt_state, x, y):
        with jax.numpy_dtype_promotion("standard"):  # Haiku's batch norm, not the optimizer
            (loss, model_state), grads = jax.value_and_grad(loss_fn, has_aux=True)(
                params, model_state, x, y
            )
        updates, opt_state = tx.update(grads, opt_state, params)
        return gx.apply_updates(params, updates), model_state, opt_state, loss

    step, traces = jit_counting_traces(train_step)
    params, model_state, opt_state = PARAMS, MODEL_STATE, tx.init(PARAMS)
    for batch in BATCHES:
        params, model_state, opt_state, _ = step(params, model_state, opt_state, X[batch], Y[batch])
    return params, model_state, len(traces)


def weights_only(params):
    """optax's mask for "decay the Linear weights ``w`` only"."""
    return {module: {name: name == "w" for name in leaves} for module, leaves in params.items()}


def test_haiku_loop_nesterov_sgd_with_masked_decay_matches_optax():
    tx = gx.chain(
        gx.add_decayed_weights(1e-3, mask=r"(^|/)w$"),  # a pattern on "linear/w", "linear_1/w"
        gx.sgd(0.05, momentum=0.9, nesterov=True),
    )
    ref_tx = optax.chain(
        optax.add_decayed_weights(1e-3, mask=weights_only),
        optax.sgd(0.05, momentum=0.9, nesterov=True),
    )
    params, model_state, traces = train(tx)
    with jax.numpy_dtype_promotion("standard"):
        ref_params, ref_model_state, _ = train(ref_tx)

    initial_loss = eval_loss(PARAMS, MODEL_STATE)
    loss = eval_loss(params, model_state)
    assert loss < 0.1 * initial_loss, (initial_loss, loss)
    assert traces == 1
    np.testing.assert_allclose(loss, eval_loss(ref_params, ref_model_state), rtol=1e-5)
    assert_trees_close(params, ref_params, rtol=1e-4, atol=1e-6)
    assert_trees_close(model_state, ref_model_state, rtol=1e-4, atol=1e-6)
