"""gradxform and optax transformations mixed in one optimizer, both ways round.

* gradxform inside optax: ``gx.to_optax(...)`` members of ``optax.chain``, a
  gradxform transformation under ``optax.masked``, and a gradxform schedule
  driving ``optax.scale_by_learning_rate``.
* optax inside gradxform: optax transformations as members of ``gx.chain``,
  among them ``optax.contrib.reduce_on_plateau``, which needs the loss as the
  extra argument ``value=``: ``gx.chain`` must hand it to that member and not
  to the plain optax members, whose ``update`` does not take it.

Each mixed optimizer trains an MLP on scikit-learn's digits for 300 jitted
steps and must reach the same losses and parameters as the all-optax
optimizer it mirrors.

Some optax transformations (``scale_by_adam``, ``reduce_on_plateau``) rely on
implicit dtype promotion; as members of a gradxform chain they are wrapped by
``optax_under_standard_promotion``, which switches promotion for their own
update only. Everything gradxform does stays under strict promotion.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from optax import contrib

import gradxform as gx
from tests.integrations.digits import BATCHES, STEPS, X, Y, cross_entropy
from tests.helpers import assert_trees_close, jit_counting_traces

SCHEDULE = dict(init_value=0.0, peak_value=1e-2, warmup_steps=30, decay_steps=STEPS, end_value=1e-4)
SGD_SCHEDULE = dict(SCHEDULE, peak_value=5e-2)
PLATEAU = dict(factor=0.5, patience=3, cooldown=2, accumulation_size=10, rtol=1e-2)


def init_mlp(key, sizes=(64, 32, 10)):
    params = {}
    for index, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        key, sub = jax.random.split(key)
        params[f"dense_{index}"] = {
            "kernel": jax.random.normal(sub, (fan_in, fan_out), jnp.float32) / np.sqrt(fan_in),
            "bias": jnp.zeros(fan_out, jnp.float32),
        }
    return params


PARAMS = init_mlp(jax.random.key(0))


def loss_fn(params, x, y):
    h = jax.nn.relu(x @ params["dense_0"]["kernel"] + params["dense_0"]["bias"])
    logits = h @ params["dense_1"]["kernel"] + params["dense_1"]["bias"]
    return cross_entropy(logits, y)


def train(tx, pass_loss=False):
    """300 jitted steps; ``value=loss`` is given to ``tx.update`` when ``pass_loss``."""

    def train_step(params, opt_state, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
        extra = {"value": loss} if pass_loss else {}
        updates, opt_state = tx.update(grads, opt_state, params, **extra)
        return optax.apply_updates(params, updates), opt_state, loss

    step, traces = jit_counting_traces(train_step)
    params, opt_state = PARAMS, tx.init(PARAMS)
    losses = []
    for batch in BATCHES:
        params, opt_state, loss = step(params, opt_state, X[batch], Y[batch])
        losses.append(loss)
    return params, opt_state, np.asarray(losses), len(traces)


def optax_under_standard_promotion(tx):
    """``tx`` (an optax transformation) with its own code run under standard promotion."""
    tx = optax.with_extra_args_support(tx)

    def init_fn(params):
        with jax.numpy_dtype_promotion("standard"):
            return tx.init(params)

    def update_fn(updates, state, params=None, **extra_args):
        with jax.numpy_dtype_promotion("standard"):
            return tx.update(updates, state, params, **extra_args)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def biases_out(params):
    return jax.tree_util.tree_map_with_path(lambda path, _: path[-1].key != "bias", params)


def check_against_optax(name, mixed, reference, pass_loss=False):
    params, opt_state, losses, traces = train(mixed, pass_loss)
    with jax.numpy_dtype_promotion("standard"):
        ref_params, ref_opt_state, ref_losses, _ = train(reference, pass_loss)
    final_loss = float(loss_fn(params, X, Y))
    initial_loss = float(loss_fn(PARAMS, X, Y))
    assert final_loss < 0.1 * initial_loss, (name, initial_loss, final_loss)
    assert traces == 1, name
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-5, atol=1e-6, err_msg=name)
    np.testing.assert_allclose(final_loss, float(loss_fn(ref_params, X, Y)), rtol=1e-5)
    assert_trees_close(params, ref_params, rtol=1e-4, atol=1e-6, context=name)
    return opt_state, ref_opt_state


def test_gradxform_members_inside_optax_chain():
    clip, adam = gx.to_optax(gx.clip_by_global_norm(1.0)), gx.to_optax(gx.scale_by_adam())
    assert isinstance(clip, optax.GradientTransformationExtraArgs)
    mixed = optax.chain(
        clip,
        adam,
        optax.masked(gx.to_optax(gx.add_decayed_weights(1e-2)), biases_out),
        # A gradxform schedule is a plain callable of the step count, usable by optax.
        optax.scale_by_learning_rate(gx.schedules.warmup_cosine_decay_schedule(**SCHEDULE)),
    )
    reference = optax.chain(
        optax.clip_by_global_norm(1.0),
        optax.scale_by_adam(),
        optax.add_decayed_weights(1e-2, mask=biases_out),
        optax.scale_by_learning_rate(optax.warmup_cosine_decay_schedule(**SCHEDULE)),
    )
    check_against_optax("optax.chain(gx...)", mixed, reference)


@pytest.mark.parametrize("pass_loss", [False, True], ids=["plain", "with-value"])
def test_optax_members_inside_gx_chain(pass_loss):
    if pass_loss:
        # The loss reaches reduce_on_plateau through gx.chain; the plain optax
        # clip_by_global_norm, which takes no extra arguments, is called without it.
        mixed = gx.chain(
            optax.clip_by_global_norm(1.0),
            optax_under_standard_promotion(optax.scale_by_adam()),
            gx.scale_by_learning_rate(3e-3),
            optax_under_standard_promotion(contrib.reduce_on_plateau(**PLATEAU)),
        )
        reference = optax.chain(
            optax.clip_by_global_norm(1.0),
            optax.scale_by_adam(),
            optax.scale_by_learning_rate(3e-3),
            contrib.reduce_on_plateau(**PLATEAU),
        )
    else:
        # Strict-clean optax members used as they are: clipping and Nesterov momentum.
        mixed = gx.chain(
            optax.clip_by_global_norm(1.0),
            optax.trace(decay=0.9, nesterov=True),
            gx.add_decayed_weights(1e-3, exclude=["bias"]),
            gx.scale_by_learning_rate(gx.schedules.warmup_cosine_decay_schedule(**SGD_SCHEDULE)),
        )
        reference = optax.chain(
            optax.clip_by_global_norm(1.0),
            optax.trace(decay=0.9, nesterov=True),
            optax.add_decayed_weights(1e-3, mask=biases_out),
            optax.scale_by_learning_rate(optax.warmup_cosine_decay_schedule(**SGD_SCHEDULE)),
        )
    opt_state, ref_opt_state = check_against_optax(repr(mixed), mixed, reference, pass_loss)
    if pass_loss:
        # The plateau logic really ran on the losses: it lowered the scale, as optax's did.
        scale, ref_scale = float(opt_state[-1].scale), float(ref_opt_state[-1].scale)
        assert scale < 1.0
        assert scale == ref_scale


def test_to_optax_passes_extra_arguments_only_to_an_update_that_takes_them():
    def update(updates, state, params=None):
        return jax.tree.map(lambda g: 2 * g, updates), state

    plain = optax.GradientTransformation(lambda params: optax.EmptyState(), update)
    wrapped = gx.to_optax(plain)
    params = {"w": jnp.ones(2)}
    updates, _ = wrapped.update(params, wrapped.init(params), params, value=jnp.float32(1.0))
    np.testing.assert_array_equal(updates["w"], [2.0, 2.0])
