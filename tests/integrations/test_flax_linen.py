"""gradxform optimizers as the ``tx`` of Flax linen's ``TrainState``.

A small MLP is trained on scikit-learn's digits for 300 minibatch steps through
``TrainState.apply_gradients`` in one jitted step, once with a gradxform
optimizer and once, from the same parameters and batches, with the equivalent
optax optimizer. The final losses and parameters must agree, the loss must
fall far, and the step must be traced once (the state keeps its types).

With params boxed by ``nn.with_logical_partitioning`` / ``nn.with_partitioning``
(``nn.LogicallyPartitioned`` kernels, ``nn.Partitioned`` biases), key-path
patterns, bool masks and label trees must select the kernels whether the
``TrainState`` stays boxed or is unboxed after ``init`` (as MaxText does): the
params must end where optax's, run on the unboxed tree with a rank mask, end,
and a first step of weight decay that excludes ``bias`` must leave the biases
undecayed.
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
from tests.integrations.pattern_cases import PATTERN_CASES, is_kernel, kernel_or_rest
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



# --- boxed params: nn.with_logical_partitioning / nn.with_partitioning --------------------
#
# Flax's lm1b, t5x and MaxText build their params boxed: the kernels in
# nn.LogicallyPartitioned, the biases in nn.Partitioned, both pytree nodes whose key
# paths end in ".../kernel/value". A TrainState then sees boxes at init and at update;
# MaxText also unboxes the whole state after init, so that update sees bare arrays.
# Patterns must select the same leaves in every case: the kernels, which are also the
# rank-2 leaves, so optax, run on the unboxed tree from the same start, gets a rank mask.

BOXED_STEPS = 12


def boxed_dense(features, kernel_axes):
    return nn.Dense(
        features,
        kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(), kernel_axes),
        # Non-zero biases, so that decaying them by mistake shows.
        bias_init=nn.with_partitioning(nn.initializers.normal(0.5), (None,)),
    )


class BoxedMLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        hidden = nn.relu(boxed_dense(32, ("features", "hidden"))(x))
        return boxed_dense(10, ("hidden", "classes"))(hidden)


BOXED_MODEL = BoxedMLP()
BOXED_PARAMS = BOXED_MODEL.init(jax.random.key(1), X[:1])


BOXED_CASES = {
    **PATTERN_CASES,
    # A bool tree made from the boxed params holds boxes too; it must also fit the
    # unboxed gradients.
    "masked-boxed-mask-tree": (
        lambda: gx.chain(gx.masked(gx.scale_by_adam(), is_kernel(BOXED_PARAMS)), gx.scale(-0.05)),
        lambda: optax.chain(optax.masked(optax.scale_by_adam(), is_kernel), optax.scale(-0.05)),
    ),
    "partition-boxed-label-tree": (
        lambda: gx.partition({"kernel": gx.adam(0.05), "rest": gx.sgd(0.1)},
                             kernel_or_rest(BOXED_PARAMS)),
        lambda: optax.partition({"kernel": optax.adam(0.05), "rest": optax.sgd(0.1)},
                                kernel_or_rest),
    ),
}


def boxed_loss(params, x, y):
    return cross_entropy(BOXED_MODEL.apply(params, x), y)


def boxed_step(state, x, y):
    grads = jax.grad(boxed_loss)(state.params, x, y)
    return state.apply_gradients(grads=grads), grads


def train_boxed(tx, params, unbox_after_init=False):
    """BOXED_STEPS jitted TrainState steps; the final params and each step's gradients."""
    state = train_state.TrainState.create(apply_fn=BOXED_MODEL.apply, params=params, tx=tx)
    if unbox_after_init:
        state = nn.meta.unbox(state)  # MaxText: params and optimizer state alike
    step = jax.jit(boxed_step)
    history = []
    for batch in BATCHES[:BOXED_STEPS]:
        state, grads = step(state, X[batch], Y[batch])
        history.append(grads)
    return state.params, history


_OPTAX_BOXED = {}


def optax_on_unboxed(name):
    if name not in _OPTAX_BOXED:
        with jax.numpy_dtype_promotion("standard"):  # optax's own code needs implicit promotion
            _OPTAX_BOXED[name] = train_boxed(BOXED_CASES[name][1](), nn.meta.unbox(BOXED_PARAMS))
    return _OPTAX_BOXED[name]


def test_boxed_params_are_boxed():
    kinds = {path[-1].key: type(box).__name__ for path, box in jax.tree_util.tree_flatten_with_path(
        BOXED_PARAMS, is_leaf=lambda x: isinstance(x, nn.meta.AxisMetadata))[0]}
    assert kinds == {"kernel": "LogicallyPartitioned", "bias": "Partitioned"}


@pytest.mark.parametrize("unbox_after_init", [False, True], ids=["boxed", "unboxed-after-init"])
@pytest.mark.parametrize("name", list(BOXED_CASES))
def test_boxed_train_state_selects_as_optax_on_the_unboxed_tree(name, unbox_after_init):
    params, _ = train_boxed(BOXED_CASES[name][0](), BOXED_PARAMS, unbox_after_init)
    ref_params, _ = optax_on_unboxed(name)
    if not unbox_after_init:
        assert jax.tree.structure(params) == jax.tree.structure(BOXED_PARAMS)  # still boxed
    assert_trees_close(nn.meta.unbox(params), ref_params, rtol=1e-4, atol=1e-6, context=name)


def test_boxed_exclude_keeps_biases_undecayed():
    """Analytic first step of sgd(lr) after add_decayed_weights: -lr * (g + wd * p) or -lr * g."""
    tx = gx.chain(gx.add_decayed_weights(0.5, exclude=[r"(^|/)bias$"]), gx.sgd(0.1))
    state = train_state.TrainState.create(apply_fn=BOXED_MODEL.apply, params=BOXED_PARAMS, tx=tx)
    grads = jax.grad(boxed_loss)(state.params, X[BATCHES[0]], Y[BATCHES[0]])
    updates, _ = tx.update(grads, state.opt_state, state.params)
    params, grads, updates = (nn.meta.unbox(t)["params"] for t in (BOXED_PARAMS, grads, updates))
    for layer in ("Dense_0", "Dense_1"):
        np.testing.assert_allclose(
            updates[layer]["kernel"],
            -0.1 * (np.asarray(grads[layer]["kernel"]) + 0.5 * np.asarray(params[layer]["kernel"])),
            rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(updates[layer]["bias"], -0.1 * np.asarray(grads[layer]["bias"]),
                                   rtol=1e-6)
