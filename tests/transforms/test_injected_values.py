"""inject_hyperparams as optax's: true derivatives, any callable a schedule, stateful
schedules, and values set into the state checked as the constructor checks them.

References: the analytic derivative, optax's ``inject_hyperparams`` run live, and
the optimizers' own argument checks.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradxform as gx
from tests.helpers import DEFAULT_COMPILE, random_params

TARGET = jnp.array([1.0, -2.0, 0.5, 3.0])
START = jnp.array([0.3, 0.1, -0.7, 2.0])


def _loss(w):
    return 0.5 * jnp.sum((w - TARGET) ** 2)


def _loss_after_steps(tx, name, steps=1, set_in_state=True):
    """The loss after ``steps`` updates, as a function of the injected value ``name``."""

    def loss_of(value):
        params = {"w": START}
        state = tx.init(params)
        if set_in_state:
            state.hyperparams[name] = value
        for _ in range(steps):
            grads = jax.grad(lambda p: _loss(p["w"]))(params)
            updates, state = tx.update(grads, state, params)
            params = jax.tree.map(lambda p, u: p + u, params, updates)
        return _loss(params["w"])

    return loss_of


@pytest.mark.parametrize("jit", [False, True])
def test_meta_gradient_of_the_learning_rate_is_the_analytic_one(jit):
    # One SGD step: w1 = w - lr (w - t), L(w1) = (1 - lr)^2 ||w - t||^2 / 2,
    # dL/dlr = -(1 - lr) ||w - t||^2. It used to be 0 at the value the optimizer was built with.
    learning_rate = 0.1
    tx = gx.inject_hyperparams(gx.sgd)(learning_rate=learning_rate)
    grad = jax.grad(_loss_after_steps(tx, "learning_rate"))
    grad = jax.jit(grad) if jit else grad
    analytic = -(1 - learning_rate) * float(jnp.sum((START - TARGET) ** 2))
    for value in (learning_rate, 0.25):  # the value given, and a changed one
        expected = -(1 - value) * float(jnp.sum((START - TARGET) ** 2))
        np.testing.assert_allclose(grad(jnp.float32(value)), expected, rtol=1e-6)
    assert analytic != 0


@pytest.mark.parametrize(
    "factory,arguments,name",
    [
        ("adam", dict(learning_rate=0.05), "learning_rate"),
        ("adam", dict(learning_rate=0.05, b1=0.8), "b1"),
        ("adam", dict(learning_rate=0.05, b2=0.99), "b2"),
        ("sgd", dict(learning_rate=0.05, momentum=0.9), "momentum"),
        ("rmsprop", dict(learning_rate=0.01, decay=0.9), "decay"),
        ("adagrad", dict(learning_rate=0.1), "learning_rate"),
    ],
)
def test_meta_gradients_through_several_steps_match_optax(factory, arguments, name):
    gx_tx = gx.inject_hyperparams(getattr(gx, factory))(**arguments)
    with jax.numpy_dtype_promotion("standard"):
        optax_tx = optax.inject_hyperparams(getattr(optax, factory))(**arguments)
        expected = jax.grad(_loss_after_steps(optax_tx, name, steps=3))(
            jnp.float32(arguments[name]))
    got = jax.jit(jax.grad(_loss_after_steps(gx_tx, name, steps=3)),
                  compiler_options=DEFAULT_COMPILE)(jnp.float32(arguments[name]))
    assert float(expected) != 0
    # float32 through three steps: optax and gradxform round (1 - b1) and the
    # bias corrections in different places.
    np.testing.assert_allclose(got, expected, rtol=1e-4)


def test_derivatives_with_respect_to_params_through_an_injected_update_match_the_plain_one():
    plain = gx.adam(0.05)
    injected = gx.inject_hyperparams(gx.adam)(learning_rate=0.05)

    def loss_after_step(tx, w):
        params = {"w": w}
        grads = jax.grad(lambda p: _loss(p["w"]))(params)
        updates, _ = tx.update(grads, tx.init(params), params)
        return _loss(w + updates["w"])

    expected = jax.grad(lambda w: loss_after_step(plain, w))(START)
    got = jax.jit(jax.grad(lambda w: loss_after_step(injected, w)))(START)
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_values_are_still_bitwise_the_plain_optimizers_when_nobody_differentiates():
    params = random_params()
    grads = jax.tree.map(lambda p: 0.3 * jnp.ones_like(p), params)
    plain, injected = gx.adam(1e-3, b2=0.99), gx.inject_hyperparams(gx.adam)(1e-3, b2=0.99)
    expected, _ = jax.jit(plain.update)(grads, plain.init(params), params)
    got, _ = jax.jit(injected.update)(grads, injected.init(params), params)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(expected)):
        np.testing.assert_array_equal(np.asarray(a).view(np.uint32), np.asarray(b).view(np.uint32))


# --- any callable numeric argument is a schedule, as in optax -------------------------


def _float(count):
    return jnp.asarray(count).astype(jnp.float32)


def _run(tx, params, steps, promotion="strict", **extra_args):
    updates_seen = []
    with jax.numpy_dtype_promotion(promotion):
        state = tx.init(params)
        for step in range(steps):
            grads = jax.tree.map(lambda p: jnp.cos(p + step), params)
            updates, state = tx.update(grads, state, params, **extra_args)
            updates_seen.append(updates)
            params = jax.tree.map(lambda p, u: p + u, params, updates)
    return updates_seen, state


@pytest.mark.parametrize(
    "factory,arguments",
    [
        ("sgd", dict(learning_rate=0.1, momentum=lambda count: 0.5 + 0.04 * _float(count))),
        ("adam", dict(learning_rate=0.01, b1=lambda count: 0.9 - 0.005 * _float(count))),
        ("rmsprop", dict(learning_rate=0.01, decay=lambda count: 0.8 + 0.01 * _float(count))),
    ],
)
def test_a_callable_numeric_argument_is_a_schedule_as_in_optax(factory, arguments):
    params = {"w": jnp.array([0.5, -1.0, 2.0])}
    name = next(key for key, value in arguments.items() if callable(value))
    ours, state = _run(gx.inject_hyperparams(getattr(gx, factory))(**arguments), params, 6)
    theirs, optax_state = _run(
        optax.inject_hyperparams(getattr(optax, factory))(**arguments), params, 6, "standard"
    )
    for a, b in zip(ours, theirs):
        chex.assert_trees_all_close(a, b, rtol=2e-6, atol=1e-7)
    np.testing.assert_allclose(state.hyperparams[name], optax_state.hyperparams[name], rtol=1e-6)


def test_callables_a_factory_takes_as_masks_or_rules_stay_static():
    tx = gx.inject_hyperparams(gx.adamw)(learning_rate=1e-3, mask=lambda p: jax.tree.map(
        lambda x: x.ndim > 1, p))
    state = tx.init(random_params())
    assert "mask" not in state.hyperparams
    every_other = gx.inject_hyperparams(gx.multi_steps)(gx.sgd(0.1), every_k_schedule=lambda s: 2)
    hyperparams = every_other.init(random_params()).hyperparams
    assert "every_k_schedule" not in hyperparams
    assert "accumulator_dtype" not in hyperparams  # jnp.float32 is callable, and a dtype


class _HalveWhenTheLossRises:
    """A stateful schedule in optax's protocol: the value depends on the losses seen."""

    def init(self):
        return {"value": jnp.float32(0.1), "best": jnp.float32(jnp.inf)}

    def update(self, state, *, loss, **extra_args):
        del extra_args
        rose = loss > state["best"]
        return {"value": jnp.where(rose, state["value"] / 2, state["value"]),
                "best": jnp.minimum(loss, state["best"])}

    def __call__(self, state, **extra_args):
        del extra_args
        return state["value"]


def test_stateful_schedules_match_optax_and_keep_their_state():
    params = {"w": jnp.array([0.5, -1.0, 2.0])}
    schedule = _HalveWhenTheLossRises()
    losses = [3.0, 2.0, 2.5, 1.0, 1.5, 1.6]

    def run(tx, promotion):
        state, seen = tx.init(params), []
        with jax.numpy_dtype_promotion(promotion):
            for loss in losses:
                grads = {"w": jnp.ones(3)}
                updates, state = tx.update(grads, state, params, loss=jnp.float32(loss))
                seen.append(updates["w"])
        return seen, state

    ours, state = run(gx.inject_hyperparams(gx.sgd)(learning_rate=schedule), "strict")
    with jax.numpy_dtype_promotion("standard"):
        optax_tx = optax.inject_hyperparams(optax.sgd)(learning_rate=schedule)
    theirs, optax_state = run(optax_tx, "standard")
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, rtol=1e-7)
    # The loss rose three times (2.5, 1.5, 1.6): 0.1 / 2**3.
    assert float(state.hyperparams_states["learning_rate"]["value"]) == float(np.float32(0.0125))
    assert state._fields == optax_state._fields


# --- values set into the state are checked -----------------------------------------------


@pytest.mark.parametrize(
    "name,value,message",
    [
        ("b2", 1.0, "b2 must be in [0, 1)"),
        ("b2", 0.99999999, "stored as 1.0 in float32"),
        ("b1", -0.1, "b1 must be in [0, 1)"),
        ("learning_rate", float("nan"), "learning_rate must be finite"),
        ("learning_rate", -1e-3, "learning_rate must be in [0, inf)"),
        ("eps", float("inf"), "eps must be finite"),
    ],
)
def test_tree_set_and_item_assignment_check_the_value_as_the_constructor_does(name, value, message):
    state = gx.inject_hyperparams(gx.adam)(learning_rate=1e-3).init(random_params())
    with pytest.raises(ValueError) as info:
        gx.tree_set(state, **{name: value})
    assert message in str(info.value) and "tree_set" in str(info.value)
    assert "inject_hyperparams(adam)" in str(info.value)
    with pytest.raises(ValueError, match="state.hyperparams"):
        state.hyperparams[name] = value
    with pytest.raises(ValueError):  # the constructor agrees
        gx.adam(**{"learning_rate": 1e-3, name: value})


def test_setting_a_scheduled_value_raises_instead_of_being_overwritten():
    schedule = gx.schedules.linear_schedule(1e-2, 0.0, 10)
    state = gx.inject_hyperparams(gx.adam)(learning_rate=schedule).init(random_params())
    with pytest.raises(ValueError, match="computed by the schedule linear_schedule"):
        gx.tree_set(state, learning_rate=5e-3)
    with pytest.raises(ValueError, match="overwritten at the next update"):
        state.hyperparams["learning_rate"] = 5e-3
    with pytest.raises(TypeError, match="must be a real number"):
        gx.tree_set(state, b1=jnp.bool_(True))


def test_values_set_inside_jit_and_valid_values_are_accepted():
    tx = gx.inject_hyperparams(gx.adam)(learning_rate=1e-3)
    params = random_params()
    state = gx.tree_set(tx.init(params), b2=0.95, learning_rate=0.0)
    assert float(state.hyperparams["b2"]) == float(np.float32(0.95))

    @jax.jit
    def set_and_step(state, value):
        state.hyperparams["learning_rate"] = value  # a tracer: checked by nobody, as in optax
        return tx.update(params, state, params)

    updates, _ = set_and_step(state, jnp.float32(0.0))
    assert all(not np.any(np.asarray(u)) for u in jax.tree.leaves(updates))


def test_the_state_layout_is_optaxs_and_survives_pickle_and_tree_maps():
    import pickle

    params = random_params()
    state = gx.inject_hyperparams(gx.adam)(learning_rate=1e-3).init(params)
    with jax.numpy_dtype_promotion("standard"):
        optax_state = optax.inject_hyperparams(optax.adam)(learning_rate=1e-3).init(params)
    assert state._fields == optax_state._fields
    assert sorted(state.hyperparams) == sorted(optax_state.hyperparams)
    mapped = jax.tree.map(lambda x: x, state)
    assert jax.tree.structure(mapped) == jax.tree.structure(state)
    with pytest.raises(ValueError, match="b2 must be in"):
        mapped.hyperparams["b2"] = 1.0
    restored = pickle.loads(pickle.dumps(jax.device_get(state)))
    assert jax.tree.structure(restored) == jax.tree.structure(state)


def test_extra_arguments_reach_only_an_inner_update_that_takes_them():
    # An optax-style factory whose update takes no extra keyword arguments.
    def plain_scale(step_size: float = 0.5):
        def update(updates, state, params=None):
            return jax.tree.map(lambda g: step_size * g, updates), state

        return optax.GradientTransformation(lambda params: optax.EmptyState(), update)

    tx = gx.inject_hyperparams(plain_scale)(step_size=0.25)
    params = {"w": jnp.ones(3)}
    updates, _ = jax.jit(tx.update)(params, tx.init(params), params, loss=jnp.float32(1.0))
    np.testing.assert_array_equal(updates["w"], np.full(3, 0.25, np.float32))
    with jax.numpy_dtype_promotion("standard"):
        theirs = optax.inject_hyperparams(plain_scale)(step_size=0.25)
        expected, _ = theirs.update(params, theirs.init(params), params, loss=jnp.float32(1.0))
    np.testing.assert_array_equal(updates["w"], expected["w"])
