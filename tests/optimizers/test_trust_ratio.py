"""lamb, lars and fromage against optax's, and under inject_hyperparams.

* Each alias must match optax's over 50 jitted steps on a nested pytree
  (scalars, ``None`` and zero-size leaves), with several argument sets
  (schedules, masks, non-default rates), in float32 and bfloat16 (bfloat16
  compared with optax run in float32, see `tests.helpers.compare_with_optax`),
  and over 40 steps in which the params move by the updates (the trust ratio
  reads them), updates and params compared at every step. The state that
  holds numbers is compared field by field with optax's: LAMB's Adam moments
  (``count``, ``mu``, ``nu``) and LARS's momentum ``trace``.
* ``inject_hyperparams(lamb)``, ``(lars)`` and ``(fromage)`` give bit for bit the
  plain alias's updates, params and state over 30 jitted steps; a value
  changed in the state acts as the alias built with that value.
* Arguments are checked at construction, the error naming the alias.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradxform as gx
from tests.helpers import (
    DEFAULT_COMPILE,
    assert_trees_bitwise_equal,
    assert_trees_close,
    compare_with_optax,
    gradient_stream,
    random_params,
    trajectory,
)

DTYPES = [jnp.float32, jnp.bfloat16]
STEPS = 50


def _decaying(count):
    return 1e-2 / (1.0 + count.astype(jnp.float32))


def _matrices(params):
    return jax.tree.map(lambda p: p.ndim >= 2, params)


def _not_scalars(params):
    return jax.tree.map(lambda p: p.ndim >= 1, params)


LAMB_CASES = [
    pytest.param(dict(learning_rate=1e-3), id="defaults"),
    pytest.param(dict(learning_rate=1e-2, weight_decay=0.1, mask=_matrices), id="decay-mask"),
    pytest.param(dict(learning_rate=_decaying, b1=0.8, b2=0.99, eps=1e-4, eps_root=1e-8),
                 id="schedule-rates"),
]
LARS_CASES = [
    pytest.param(dict(learning_rate=0.1), id="defaults"),
    pytest.param(dict(learning_rate=0.5, weight_decay=1e-2, weight_decay_mask=_matrices,
                      trust_ratio_mask=_not_scalars), id="decay-masks"),
    pytest.param(dict(learning_rate=_decaying, trust_coefficient=0.02, eps=1e-3, momentum=0.5,
                      nesterov=True), id="schedule-nesterov"),
    pytest.param(dict(learning_rate=1.0, weight_decay=_decaying, momentum=0.0), id="no-momentum"),
]
FROMAGE_CASES = [
    pytest.param(dict(learning_rate=0.01), id="defaults"),
    pytest.param(dict(learning_rate=0.3, min_norm=1e-2), id="large-rate-min_norm"),
    pytest.param(dict(learning_rate=_decaying), id="schedule"),
]
ALIASES = {"lamb": LAMB_CASES, "lars": LARS_CASES, "fromage": FROMAGE_CASES}
CASES = [pytest.param(name, case.values[0], id=f"{name}-{case.id}")
         for name, cases in ALIASES.items() for case in cases]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("name, kwargs", CASES)
def test_matches_optax(name, kwargs, dtype):
    compare_with_optax(getattr(gx, name)(**kwargs), getattr(optax, name)(**kwargs), dtype=dtype,
                       steps=STEPS)


# Updates, params and states after each jitted step, the params moved by the updates;
# optax's runs keep the NaN checks on.
_trajectory = functools.partial(trajectory, move=True, compiler_options=None, check_nans=True)


def _moving(name, kwargs, steps=40):
    params = random_params(0)
    grads_seq = gradient_stream(params, steps, seed=1)
    ours = _trajectory(getattr(gx, name)(**kwargs), params, grads_seq)
    theirs = _trajectory(getattr(optax, name)(**kwargs), params, grads_seq, standard=True)
    for step, ((u, p, _), (u_ref, p_ref, _)) in enumerate(zip(ours, theirs)):
        assert_trees_close(u, u_ref, 1e-5, 1e-7, context=f"{name} updates, step {step}")
        assert_trees_close(p, p_ref, 1e-5, 1e-7, context=f"{name} params, step {step}")
    return ours, theirs


@pytest.mark.parametrize("name, kwargs", CASES)
def test_matches_optax_on_moving_params(name, kwargs):
    _moving(name, kwargs)


@pytest.mark.parametrize("kwargs", [case.values[0] for case in LAMB_CASES[1:]])
def test_lamb_adam_state_matches_optax_field_by_field(kwargs):
    ours, theirs = _moving("lamb", kwargs)
    for step, ((_, _, s), (_, _, s_ref)) in enumerate(zip(ours, theirs)):
        first, first_ref = s[0], s_ref[0]
        assert type(first).__name__ == type(first_ref).__name__ == "ScaleByAdamState"
        assert first._fields == first_ref._fields == ("count", "mu", "nu")
        assert int(first.count) == int(first_ref.count) == step + 1
        for field in ("mu", "nu"):
            assert_trees_close(getattr(first, field), getattr(first_ref, field), 2e-6, 1e-7,
                               context=f"{field}, step {step}")


@pytest.mark.parametrize("kwargs", [case.values[0] for case in LARS_CASES[1:3]])
def test_lars_trace_matches_optax_field_by_field(kwargs):
    ours, theirs = _moving("lars", kwargs)
    for step, ((_, _, s), (_, _, s_ref)) in enumerate(zip(ours, theirs)):
        assert len(s) == len(s_ref) == 4
        assert type(s[1]).__name__ == type(s_ref[1]).__name__ == "MaskedState"
        assert type(s[1].inner_state).__name__ == "EmptyState"
        trace, trace_ref = s[3], s_ref[3]
        assert type(trace).__name__ == type(trace_ref).__name__ == "TraceState"
        assert trace._fields == trace_ref._fields == ("trace",)
        assert_trees_close(trace.trace, trace_ref.trace, 1e-5, 1e-7, context=f"step {step}")


# --- inject_hyperparams ------------------------------------------------------------------------

INJECT_CASES = {
    "lamb": (gx.lamb, dict(learning_rate=1e-2, b2=0.99, weight_decay=0.05, mask=_matrices)),
    "lamb_schedule": (gx.lamb, dict(learning_rate=gx.schedules.warmup_cosine_decay_schedule(
        0.0, 1e-2, 5, 30, 1e-4), eps_root=1e-8)),
    "lars": (gx.lars, dict(learning_rate=0.3, weight_decay=1e-3, trust_coefficient=0.01,
                           momentum=0.8, nesterov=True, trust_ratio_mask=_not_scalars)),
    "lars_schedule": (gx.lars, dict(learning_rate=gx.schedules.warmup_cosine_decay_schedule(
        0.0, 0.5, 5, 30, 1e-4), eps=1e-4)),
    "fromage": (gx.fromage, dict(learning_rate=0.05, min_norm=1e-4)),
}


@pytest.mark.parametrize("name", INJECT_CASES)
def test_inject_hyperparams_is_bitwise_the_plain_alias_over_30_steps(name):
    factory, arguments = INJECT_CASES[name]
    params = random_params(0)
    grads_seq = gradient_stream(params, 30, seed=3)
    plain = _trajectory(factory(**arguments), params, grads_seq, compiler_options=DEFAULT_COMPILE)
    injected = _trajectory(gx.inject_hyperparams(factory)(**arguments), params, grads_seq,
                           compiler_options=DEFAULT_COMPILE)
    for step, ((u, p, s), (u_i, p_i, s_i)) in enumerate(zip(plain, injected)):
        context = f"{name}, step {step}"
        assert_trees_bitwise_equal(u_i, u, context)
        assert_trees_bitwise_equal(p_i, p, context)
        assert_trees_bitwise_equal(s_i.inner_state, s, context)


@pytest.mark.parametrize("factory, name, value", [
    (gx.lars, "trust_coefficient", 0.05), (gx.lamb, "b1", 0.5), (gx.fromage, "learning_rate", 0.2),
])
def test_a_value_changed_in_the_state_acts_as_the_alias_built_with_it(factory, name, value):
    arguments = dict(learning_rate=0.1)
    params = random_params(0)
    grads_seq = gradient_stream(params, 6, seed=5)
    tx = gx.inject_hyperparams(factory)(**arguments)
    state = gx.tree_set(tx.init(params), **{name: value})
    want = _trajectory(factory(**{**arguments, name: value}), params, grads_seq)
    update = jax.jit(tx.update)
    for step, (grads, (u_want, _, _)) in enumerate(zip(grads_seq, want)):
        updates, state = update(grads, state, params)
        params = jax.tree.map(lambda p, u: (p + u).astype(p.dtype), params, updates)
        assert_trees_close(updates, u_want, 1e-5, 1e-7, context=f"step {step}")


# --- arguments ---------------------------------------------------------------------------------


@pytest.mark.parametrize("factory, kwargs, argument", [
    (gx.lamb, dict(learning_rate=0.1, b1=1.5), "b1"),
    (gx.lamb, dict(learning_rate=0.1, weight_decay=-1.0), "weight_decay"),
    (gx.lars, dict(learning_rate=0.1, momentum=1.5), "momentum"),
    (gx.lars, dict(learning_rate=0.1, trust_coefficient=-0.1), "trust_coefficient"),
    (gx.lars, dict(learning_rate=0.1, trust_ratio_mask="bias("), "trust_ratio_mask"),
    (gx.lars, dict(learning_rate=0.1, weight_decay_mask={}), "weight_decay_mask"),
    (gx.fromage, dict(learning_rate=-0.1), "learning_rate"),
    (gx.fromage, dict(learning_rate=0.1, min_norm=-1.0), "min_norm"),
])
def test_errors_name_the_alias(factory, kwargs, argument):
    with pytest.raises(ValueError) as info:
        factory(**kwargs)
    message = str(info.value)
    assert message.startswith(f"{factory.__name__}: "), message
    assert argument in message and repr(kwargs[argument]) in message, message


def test_chains_are_optaxs():
    assert [m.name for m in gx.lamb(0.1).inner.children] == [
        "scale_by_adam", "add_decayed_weights", "scale_by_trust_ratio", "scale_by_learning_rate"]
    assert [m.name for m in gx.lars(0.1).inner.children] == [
        "add_decayed_weights", "masked", "scale_by_learning_rate", "trace"]
    assert [m.name for m in gx.fromage(0.1).inner.children] == [
        "scale_by_trust_ratio", "scale_by_learning_rate", "add_decayed_weights"]
    rate = gx.fromage(0.1).inner.children[1].hyperparams["learning_rate"]
    np.testing.assert_allclose(rate, 0.1 / np.sqrt(1.01), rtol=1e-15)
