"""adadelta, adan, rprop, optimistic_gradient_descent, optimistic_adam and polyak_sgd.

* Each alias against optax's alias of the same name and arguments, over 50
  jitted steps on a nested tree (scalars, ``None`` and zero-size leaves), with
  schedules, masks and non-default rates, in float32 and bfloat16 (bfloat16
  compared with optax run in float32). Where optax's numbers are wrong (adan
  at ``b2 != 0.5``, optax#1715; rprop's one-step lag, optax#1725) the alias is
  compared with the paper's rule in float64 NumPy, and with optax's state.
  polyak_sgd gets the value of a real loss at every step of a trajectory.
* ``inject_hyperparams(alias)`` gives bit for bit the plain alias's updates,
  params and state over 20 jitted steps; for polyak_sgd the loss passed as
  ``value`` reaches the inner update through it.
* ``.inner`` is the documented chain; bad arguments name the alias.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradxform as gx
from tests.helpers import (
    assert_trees_bitwise_equal,
    assert_trees_close,
    compare_with_optax,
    gradient_stream,
    random_params,
    run_updates,
)
from tests.transforms.test_adan import adan_reference
from tests.transforms.test_polyak import _problem

STEPS = 50
INJECT_STEPS = 20


def _decaying(count):
    return 0.5 / (1.0 + 0.1 * count.astype(jnp.float32))


def _matrices(params):
    return jax.tree.map(lambda p: p.ndim >= 2, params)


def _optax(name, kwargs):
    if name == "optimistic_adam":  # deprecated in optax in favour of optimistic_adam_v2
        with pytest.warns(DeprecationWarning):
            return optax.optimistic_adam(**kwargs)
    return getattr(optax, name)(**kwargs)


CASES = [
    ("adadelta", dict(learning_rate=1.0)),
    ("adadelta", dict(learning_rate=None, rho=0.5)),  # no scaling: not negated, as optax
    ("adadelta", dict(learning_rate=_decaying, rho=0.95, eps=1e-5, weight_decay=1e-2,
                      weight_decay_mask=_matrices)),
    ("adan", dict(learning_rate=1e-2, b2=0.5)),  # b2 = 1 - b2: optax follows the paper here
    ("adan", dict(learning_rate=_decaying, b1=0.9, b2=0.5, b3=0.999, eps_root=0.0,
                  weight_decay=0.1, mask=_matrices)),
    ("optimistic_gradient_descent", dict(learning_rate=0.1)),
    ("optimistic_gradient_descent", dict(learning_rate=_decaying, alpha=0.5, beta=2.0)),
    ("optimistic_adam", dict(learning_rate=0.01, optimism=1.0)),
    ("optimistic_adam", dict(learning_rate=0.1)),
    ("optimistic_adam", dict(learning_rate=0.01, optimism=0.3, b1=0.8, b2=0.99, eps=1e-6,
                             nesterov=False)),
]
IDS = [f"{name}-{i}" for i, (name, _) in enumerate(CASES)]


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16], ids=lambda d: d.__name__)
@pytest.mark.parametrize("name, kwargs", CASES, ids=IDS)
def test_alias_matches_optax(name, kwargs, dtype):
    if dtype == jnp.bfloat16 and name == "optimistic_adam":
        kwargs = dict(kwargs, mu_dtype=jnp.float32)  # its nu stays bfloat16, as adam's test
    compare_with_optax(getattr(gx, name)(**kwargs), _optax(name, kwargs), dtype=dtype,
                       steps=STEPS, rtol=1e-5 if dtype == jnp.float32 else None)


@pytest.mark.parametrize("kwargs", [dict(learning_rate=1e-3),
                                    dict(learning_rate=1e-2, b1=0.9, b3=0.9, weight_decay=0.1)])
def test_adan_follows_the_paper_where_optax_does_not(kwargs):
    params = random_params(0)
    grads_seq = gradient_stream(params, STEPS, seed=1)
    ours, _ = run_updates(gx.adan(**kwargs), params, grads_seq)
    rule = {k: v for k, v in kwargs.items() if k in ("b1", "b3")}
    directions = adan_reference(grads_seq, eps_root=1e-8, **rule)
    decay = kwargs.get("weight_decay", 0.0)
    for step, (mine, direction) in enumerate(zip(ours, directions)):
        expected = jax.tree.map(lambda d, p: -kwargs["learning_rate"] * (d + decay * np.asarray(p)),
                                direction, params)
        assert_trees_close(mine, expected, 2e-5, 1e-8, f"step {step}")


@pytest.mark.parametrize("kwargs", [dict(learning_rate=0.1),
                                    dict(learning_rate=0.01, eta_minus=0.3, eta_plus=1.5,
                                         min_step_size=1e-3, max_step_size=0.2)])
def test_rprop_applies_the_update_optax_keeps_in_its_state(kwargs):
    params = random_params(0)
    grads_seq = gradient_stream(params, STEPS, seed=1)
    tx, reference = gx.rprop(**kwargs), optax.rprop(**kwargs)
    update, state = jax.jit(tx.update), tx.init(params)
    ref_update, ref_state = jax.jit(reference.update), reference.init(params)
    for step, grads in enumerate(grads_seq):
        updates, state = update(grads, state, params)
        with jax.numpy_dtype_promotion("standard"):
            _, ref_state = ref_update(grads, ref_state, params)
        for field in ("step_sizes", "prev_updates"):
            assert_trees_close(getattr(state[0], field), getattr(ref_state[0], field), 1e-6, 0,
                               f"step {step}, {field}")
        assert_trees_close(updates, jax.tree.map(jnp.negative, ref_state[0].prev_updates), 1e-6,
                           0, f"step {step}")


POLYAK_CASES = [
    pytest.param({}, id="defaults"),
    pytest.param(dict(max_learning_rate=0.3, scaling=_decaying, f_min=0.5, eps=1e-3,
                      variant="sps+"), id="options"),
    pytest.param(dict(scaling=0.5, f_min=-1.0), id="scaling"),
]


@pytest.mark.parametrize("kwargs", POLYAK_CASES)
def test_polyak_sgd_trajectory_matches_optax(kwargs):
    params, weights, value_and_grad = _problem(seed=3)
    tx, reference = gx.polyak_sgd(**kwargs), optax.polyak_sgd(**kwargs)
    ours, theirs = params, params
    update, state = jax.jit(tx.update), tx.init(params)
    with jax.numpy_dtype_promotion("standard"):
        ref_update, ref_state = jax.jit(reference.update), reference.init(params)
    for step, w in enumerate(weights):
        value, grads = value_and_grad(ours, w)
        updates, state = update(grads, state, ours, value=value)
        with jax.numpy_dtype_promotion("standard"):
            ref_value, ref_grads = value_and_grad(theirs, w)
            ref_updates, ref_state = ref_update(ref_grads, ref_state, theirs, value=ref_value)
        assert_trees_close(updates, ref_updates, 1e-5, 1e-6, f"step {step}")
        ours, theirs = gx.apply_updates(ours, updates), optax.apply_updates(theirs, ref_updates)
    assert_trees_close(ours, theirs, 1e-5, 1e-6, "params")


# ------------------------------------------------------------------- inject_hyperparams

INJECT_CASES = {
    "adadelta": (gx.adadelta, dict(learning_rate=1.0, rho=0.95, weight_decay=1e-2,
                                   weight_decay_mask=_matrices)),
    "adadelta_schedule": (gx.adadelta, dict(learning_rate=_decaying, eps=1e-5)),
    "adan": (gx.adan, dict(learning_rate=1e-3, b2=0.9, b3=0.95, weight_decay=1e-2)),
    "rprop": (gx.rprop, dict(learning_rate=0.01, eta_minus=0.3, eta_plus=1.3)),
    "optimistic_gradient_descent": (gx.optimistic_gradient_descent,
                                    dict(learning_rate=_decaying, alpha=0.7, beta=1.3)),
    "optimistic_adam": (gx.optimistic_adam, dict(learning_rate=0.01, optimism=0.5)),
}


def _trajectory(tx, params, grads_seq, values=None):
    """Updates, params and states after each jitted step (``values``: the losses to pass)."""
    update, state, history = jax.jit(tx.update), tx.init(params), []
    for step, grads in enumerate(grads_seq):
        extra = {} if values is None else {"value": values[step](params)}
        updates, state = update(grads, state, params, **extra)
        params = gx.apply_updates(params, updates)
        history.append((updates, params, state))
    return history


def _assert_bitwise(plain, injected, name):
    for step, ((u, p, s), (u_i, p_i, s_i)) in enumerate(zip(plain, injected)):
        context = f"{name}, step {step}"
        assert_trees_bitwise_equal(u_i, u, context)
        assert_trees_bitwise_equal(p_i, p, context)
        assert_trees_bitwise_equal(s_i.inner_state, s, context)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16], ids=lambda d: d.__name__)
@pytest.mark.parametrize("name", sorted(INJECT_CASES))
def test_inject_hyperparams_is_bitwise_the_plain_alias(name, dtype):
    factory, arguments = INJECT_CASES[name]
    params = random_params(0, dtype)
    grads_seq = gradient_stream(params, INJECT_STEPS, seed=3)
    plain = _trajectory(factory(**arguments), params, grads_seq)
    injected = _trajectory(gx.inject_hyperparams(factory)(**arguments), params, grads_seq)
    _assert_bitwise(plain, injected, name)
    changed = [np.any(np.asarray(p_a) != np.asarray(p_b))
               for p_a, p_b in zip(jax.tree.leaves(plain[-1][1]), jax.tree.leaves(params))]
    assert any(changed), "the params never moved"


def _half_squared_norm(params):
    return 1.0 + 0.5 * sum(jnp.sum(p.astype(jnp.float32) ** 2) for p in jax.tree.leaves(params))


def test_inject_hyperparams_passes_the_loss_to_polyak_sgd():
    arguments = dict(max_learning_rate=100.0, scaling=_decaying, f_min=0.25, eps=1e-3)
    params = random_params(0)
    grads_seq = gradient_stream(params, INJECT_STEPS, seed=3)
    values = [_half_squared_norm] * INJECT_STEPS
    plain = _trajectory(gx.polyak_sgd(**arguments), params, grads_seq, values)
    injected_tx = gx.inject_hyperparams(gx.polyak_sgd)(**arguments)
    _assert_bitwise(plain, _trajectory(injected_tx, params, grads_seq, values), "polyak_sgd")
    # The value is used: another loss gives other updates; none is a named error.
    doubled = _trajectory(injected_tx, params, grads_seq[:1],
                          [lambda p: 2 * _half_squared_norm(p)])
    assert not np.allclose(doubled[0][0]["dense"]["kernel"], plain[0][0]["dense"]["kernel"])
    with pytest.raises(TypeError, match="inject_hyperparams: update needs the current loss"):
        injected_tx.update(grads_seq[0], injected_tx.init(params), params)
    # A value set in the state reaches the inner update with the loss.
    state = injected_tx.init(params)
    state.hyperparams["max_learning_rate"] = jnp.asarray(1e-6)
    updates, _ = jax.jit(injected_tx.update)(grads_seq[0], state, params,
                                             value=_half_squared_norm(params))
    capped, _ = gx.polyak_sgd(**dict(arguments, max_learning_rate=1e-6)).update(
        grads_seq[0], gx.polyak_sgd(**arguments).init(params), params,
        value=_half_squared_norm(params))
    assert_trees_close(updates, capped, 1e-6, 0, "max_learning_rate set in the state")


# ------------------------------------------------------------------- .inner and errors


@pytest.mark.parametrize("optimizer, members", [
    (gx.adadelta(), ["add_decayed_weights", "scale_by_adadelta", "scale_by_learning_rate"]),
    (gx.adan(1e-3), ["scale_by_adan", "add_decayed_weights", "scale_by_learning_rate"]),
    (gx.rprop(1e-3), ["scale_by_rprop", "scale"]),
    (gx.optimistic_gradient_descent(0.1), ["scale_by_optimistic_gradient",
                                           "scale_by_learning_rate"]),
    (gx.optimistic_adam(0.1), ["scale_by_adam", "scale_by_optimistic_gradient",
                               "scale_by_learning_rate"]),
    (gx.polyak_sgd(), ["sgd", "scale_by_polyak"]),
], ids=lambda x: getattr(x, "name", None) or "")
def test_inner_is_the_documented_chain(optimizer, members):
    assert optimizer.inner.name == "chain"
    assert [member.name for member in optimizer.inner.children] == members


def test_optimistic_adam_passes_its_rates_to_the_optimistic_transform():
    inner = gx.optimistic_adam(0.02, b1=0.8).inner.children
    assert dict(inner[1].hyperparams) == {"alpha": 0.02, "beta": 0.02}
    assert inner[0].hyperparams["nesterov"] is True and inner[0].hyperparams["b1"] == 0.8
    assert inner[2].hyperparams["learning_rate"] == 1.0


@pytest.mark.parametrize("build, error, message", [
    (lambda: gx.adadelta(weight_decay_mask=3), TypeError, "adadelta: weight_decay_mask"),
    (lambda: gx.adadelta(rho=2.0), ValueError, r"adadelta: rho must be in \[0, 1\], got 2.0"),
    (lambda: gx.adan(1e-3, b2=1.0), ValueError, r"adan: b2 must be in \[0, 1\), got 1.0"),
    (lambda: gx.rprop(0.0), ValueError, r"rprop: learning_rate must be in \(0, inf\), got 0.0"),
    (lambda: gx.optimistic_gradient_descent(0.1, beta=float("inf")), ValueError,
     "optimistic_gradient_descent: beta must be finite"),
    (lambda: gx.optimistic_adam(_decaying), TypeError,
     "optimistic_adam: learning_rate must be a number, not a schedule"),
    (lambda: gx.optimistic_adam(0.1, optimism="a"), TypeError, "optimistic_adam: optimism"),
    (lambda: gx.polyak_sgd(scaling=-1.0), ValueError, r"polyak_sgd: scaling must be in \[0, inf\)"),
    (lambda: gx.polyak_sgd(variant="sps*"), ValueError, "polyak_sgd: variant must be one of"),
])
def test_bad_arguments_name_the_alias(build, error, message):
    with pytest.raises(error, match=message):
        build()


def test_polyak_sgd_without_the_loss_names_the_alias():
    tx, params = gx.polyak_sgd(), {"w": jnp.ones(2)}
    with pytest.raises(TypeError, match="polyak_sgd: update needs the current loss"):
        jax.jit(tx.update)(params, tx.init(params), params)
