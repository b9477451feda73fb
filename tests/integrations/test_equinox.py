"""gradxform optimizers in an Equinox training loop.

An ``eqx.nn.MLP`` keeps its activation functions and sizes in the same pytree
as its arrays, so ``eqx.filter(model, eqx.is_inexact_array)`` gives params,
and ``eqx.filter_value_and_grad`` gradients, with ``None`` in place of every
non-array leaf. The optimizer must accept those trees, keep ``None`` where they
have it, and hold nothing but JAX arrays in its state (a Python scalar there
would be a static argument of ``eqx.filter_jit``, and every step would
recompile). The ``eqx.filter_jit`` step must be traced exactly once over 300
steps on scikit-learn's digits, and the run must match optax's.
"""

import equinox as eqx
import jax
import numpy as np
import optax

import gradxform as gx
from tests.integrations.digits import BATCHES, STEPS, X, Y, cross_entropy
from tests.helpers import assert_trees_close, is_none

SCHEDULE = dict(init_value=0.0, peak_value=0.1, warmup_steps=30, decay_steps=STEPS, end_value=1e-3)


MODEL = eqx.nn.MLP(64, 10, width_size=32, depth=1, key=jax.random.key(0))


def loss_fn(model, x, y):
    return cross_entropy(jax.vmap(model)(x), y)


def train(tx):
    """300 ``eqx.filter_jit`` steps; returns the model, the optimizer state and the trace count."""
    traces = []

    @eqx.filter_jit
    def train_step(model, opt_state, x, y):
        traces.append(None)
        loss, grads = eqx.filter_value_and_grad(loss_fn)(model, x, y)
        updates, opt_state = tx.update(grads, opt_state, eqx.filter(model, eqx.is_inexact_array))
        return eqx.apply_updates(model, updates), opt_state, loss

    model = MODEL
    opt_state = tx.init(eqx.filter(model, eqx.is_inexact_array))
    check_state_is_arrays(opt_state)
    for batch in BATCHES:
        model, opt_state, _ = train_step(model, opt_state, X[batch], Y[batch])
    return model, opt_state, len(traces)


def check_state_is_arrays(opt_state):
    leaves = jax.tree.leaves(opt_state, is_leaf=is_none)
    assert any(leaf is None for leaf in leaves)  # the MLP's activation slots, kept as None
    for leaf in leaves:
        assert leaf is None or isinstance(leaf, jax.Array), type(leaf)


def test_filtered_params_with_none_leaves_train_and_trace_once():
    params = eqx.filter(MODEL, eqx.is_inexact_array)
    assert any(leaf is None for leaf in jax.tree.leaves(params, is_leaf=is_none))

    # Clipping, Adagrad, weight decay on the weights only (a pattern on Equinox's key
    # paths, "layers/0/weight") and a scheduled learning rate: accumulators shaped
    # like the params, None slots included, and step counters.
    tx = gx.chain(
        gx.clip_by_global_norm(1.0),
        gx.scale_by_adagrad(initial_accumulator_value=0.1, eps=1e-7),
        gx.add_decayed_weights(1e-3, mask="weight"),
        gx.scale_by_learning_rate(gx.schedules.warmup_cosine_decay_schedule(**SCHEDULE)),
    )
    model, opt_state, traces = train(tx)
    assert traces == 1
    check_state_is_arrays(opt_state)

    ref_tx = optax.chain(
        optax.clip_by_global_norm(1.0),
        optax.scale_by_rss(initial_accumulator_value=0.1, eps=1e-7),
        optax.add_decayed_weights(
            1e-3,
            mask=lambda p: jax.tree_util.tree_map_with_path(
                lambda path, _: path[-1].name == "weight", p
            ),
        ),
        optax.scale_by_learning_rate(optax.warmup_cosine_decay_schedule(**SCHEDULE)),
    )
    with jax.numpy_dtype_promotion("standard"):
        ref_model, _, _ = train(ref_tx)

    initial_loss = float(loss_fn(MODEL, X, Y))
    loss = float(loss_fn(model, X, Y))
    assert loss < 0.1 * initial_loss, (initial_loss, loss)
    np.testing.assert_allclose(loss, float(loss_fn(ref_model, X, Y)), rtol=1e-5)
    assert_trees_close(
        eqx.filter(model, eqx.is_array), eqx.filter(ref_model, eqx.is_array), rtol=1e-4, atol=1e-6
    )
