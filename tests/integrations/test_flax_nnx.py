"""gradxform optimizers inside Flax NNX's ``nnx.Optimizer(model, tx, wrt=nnx.Param)``.

``nnx.Optimizer`` calls ``tx.init`` on an ``nnx.State`` whose leaves are
``nnx.Param`` variables, and forwards the extra keyword arguments of
``optimizer.update(model, grads, **kwargs)`` to ``tx.update``. A chain holding
a small test transformation that requires ``value=`` (the loss) trains a real
MLP on scikit-learn's digits for 300 steps in an ``nnx.jit`` step; the same
loop with the optax equivalent must give the same loss and parameters, and the
recorded values must be exactly the losses the loop saw.

Key-path patterns (``masked``, ``partition_by_patterns``, ``add_decayed_weights``'s
``exclude``, ``adamw``'s ``mask``) must select the same leaves at ``init``, which
sees ``nnx.Param`` variables, and at ``update``, which sees bare arrays: each
optimizer's updates must equal optax's with the equivalent rank mask, step by
step, and Adam's first step must land on the kernels only.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import gradxform as gx
from tests.integrations.digits import BATCHES, STEPS, X, Y, cross_entropy
from tests.integrations.pattern_cases import KERNEL, PATTERN_CASES
from tests.helpers import assert_trees_close


class MLP(nnx.Module):
    def __init__(self, rngs):
        self.hidden = nnx.Linear(64, 32, rngs=rngs)
        self.out = nnx.Linear(32, 10, rngs=rngs)

    def __call__(self, x):
        return self.out(nnx.relu(self.hidden(x)))


def loss_fn(model, x, y):
    return cross_entropy(model(x), y)


def value_recorder(transformation_type):
    """Identity on the updates; keeps the last ``value`` given and the sum of all of them.

    ``value`` is a required keyword argument: if it did not reach this update,
    the step would raise a TypeError.
    """

    def init_fn(params):
        del params
        return {"last": jnp.zeros([], jnp.float32), "total": jnp.zeros([], jnp.float32)}

    def update_fn(updates, state, params=None, *, value):
        del params
        return updates, {"last": value, "total": state["total"] + value}

    return transformation_type(init_fn, update_fn)


def gx_optimizer():
    return gx.chain(
        value_recorder(gx.GradientTransformation),
        gx.clip_by_global_norm(1.0),
        gx.adam(3e-3),
    )


def optax_optimizer():
    return optax.chain(
        value_recorder(optax.GradientTransformationExtraArgs),
        optax.clip_by_global_norm(1.0),
        optax.adam(3e-3),
    )


def train(tx):
    """300 ``nnx.jit`` steps of ``optimizer.update(model, grads, value=loss)``."""
    traces = []

    @nnx.jit
    def train_step(model, optimizer, x, y):
        traces.append(None)
        loss, grads = nnx.value_and_grad(loss_fn)(model, x, y)
        optimizer.update(model, grads, value=loss)
        return loss

    model = MLP(nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    losses = [train_step(model, optimizer, X[batch], Y[batch]) for batch in BATCHES]
    return model, optimizer, np.asarray(losses), len(traces)


def test_init_receives_param_variables_and_state_mirrors_them():
    seen = []

    def init_fn(params):
        seen.append(params)
        return gx.EmptyState()

    probe = gx.GradientTransformation(init_fn, lambda updates, state, params=None: (updates, state))
    model = MLP(nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, gx.chain(probe, gx.adamw(1e-3)), wrt=nnx.Param)

    (params,) = seen
    assert isinstance(params, nnx.State)
    variables = jax.tree.leaves(params, is_leaf=lambda x: isinstance(x, nnx.Variable))
    assert len(variables) == 4 and all(isinstance(v, nnx.Param) for v in variables)
    # Adam's moments keep the params' structure and values' shapes; counters are arrays.
    adam_state = optimizer.opt_state[1][0]
    assert jax.tree.structure(nnx.as_pure(adam_state.mu)) == jax.tree.structure(
        nnx.as_pure(nnx.state(model, nnx.Param))
    )
    for leaf in jax.tree.leaves(nnx.as_pure(optimizer.opt_state)):
        assert isinstance(leaf, jax.Array)


def test_nnx_optimizer_passes_extra_args_and_matches_optax():
    model, optimizer, losses, traces = train(gx_optimizer())
    with jax.numpy_dtype_promotion("standard"):  # optax's adam needs implicit promotion
        ref_model, ref_optimizer, ref_losses, _ = train(optax_optimizer())

    initial = MLP(nnx.Rngs(0))
    initial_loss = float(loss_fn(initial, X, Y))
    final_loss = float(loss_fn(model, X, Y))
    assert final_loss < 0.1 * initial_loss, (initial_loss, final_loss)
    assert traces == 1
    assert int(optimizer.step[...]) == STEPS

    # The extra argument reached gradxform's chain member on every step, unchanged.
    recorded = nnx.as_pure(optimizer.opt_state[0])
    assert float(recorded["last"]) == losses[-1]
    np.testing.assert_allclose(float(recorded["total"]), losses.sum(dtype=np.float64), rtol=1e-5)

    np.testing.assert_allclose(losses, ref_losses, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(final_loss, float(loss_fn(ref_model, X, Y)), rtol=1e-5)
    assert_trees_close(
        nnx.as_pure(nnx.state(model, nnx.Param)),
        nnx.as_pure(nnx.state(ref_model, nnx.Param)),
        rtol=1e-4,
        atol=1e-6,
    )
    # gx.adam's Adam state (count, mu, nu) against optax.adam's, leaf by leaf.
    assert_trees_close(
        jax.tree.leaves(nnx.as_pure(optimizer.opt_state[2][0])),
        jax.tree.leaves(nnx.as_pure(ref_optimizer.opt_state[2][0])),
        rtol=1e-4,
        atol=1e-6,
    )


# --- key-path patterns and masks under nnx.Optimizer --------------------------------------
#
# nnx.Optimizer runs init on nnx.Param variables (key paths ".../kernel/value") and update
# on bare arrays (".../kernel"). Patterns must select the same leaves in both: here the
# kernels, which are also exactly the rank-2 leaves, so optax gets the same selection as a
# rank mask (a callable, which optax evaluates on whatever tree it is given).

PATTERN_STEPS = 12


def train_steps(tx, steps=PATTERN_STEPS):
    """``steps`` nnx.jit steps; the model, and each step's gradients and updates as plain trees."""

    @nnx.jit
    def train_step(model, optimizer, x, y):
        grads = nnx.grad(loss_fn)(model, x, y)
        return nnx.as_pure(grads), optimizer.update(model, grads)

    model = MLP(nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    history = [train_step(model, optimizer, X[batch], Y[batch]) for batch in BATCHES[:steps]]
    return model, history


@pytest.mark.parametrize("name", list(PATTERN_CASES))
def test_patterns_select_the_same_leaves_at_init_and_update(name):
    make_gx, make_optax = PATTERN_CASES[name]
    model, history = train_steps(make_gx())
    with jax.numpy_dtype_promotion("standard"):  # optax's adam needs implicit promotion
        ref_model, ref_history = train_steps(make_optax())
    for step, ((_, updates), (_, ref_updates)) in enumerate(zip(history, ref_history)):
        assert_trees_close(updates, ref_updates, rtol=1e-4, atol=1e-7,
                           context=f"{name}, step {step}")
    assert_trees_close(nnx.as_pure(nnx.state(model, nnx.Param)),
                       nnx.as_pure(nnx.state(ref_model, nnx.Param)), rtol=1e-4, atol=1e-6)


def test_masked_kernel_pattern_gives_adam_to_kernels_only():
    """Analytic first step: Adam's is -lr * g / (|g| + eps), the pass-through -lr * g."""
    _, [(grads, updates), *_] = train_steps(
        gx.chain(gx.masked(gx.scale_by_adam(), [KERNEL]), gx.scale(-0.05)), steps=1)
    for layer in ("hidden", "out"):
        g_kernel, g_bias = (np.asarray(grads[layer][name]) for name in ("kernel", "bias"))
        np.testing.assert_allclose(updates[layer]["kernel"],
                                   -0.05 * g_kernel / (np.abs(g_kernel) + 1e-8), rtol=1e-5)
        np.testing.assert_allclose(updates[layer]["bias"], -0.05 * g_bias, rtol=1e-6)


def test_masked_state_is_built_on_the_kernels_only():
    optimizer = nnx.Optimizer(MLP(nnx.Rngs(0)), gx.masked(gx.scale_by_adam(), [KERNEL]),
                              wrt=nnx.Param)
    mu = nnx.as_pure(optimizer.opt_state.inner_state.mu)
    for layer in ("hidden", "out"):
        assert isinstance(mu[layer]["bias"], gx.MaskedNode)
        assert isinstance(mu[layer]["kernel"], jax.Array)
