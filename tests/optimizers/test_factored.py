"""adafactor and sm3 against optax's, live, and under inject_hyperparams.

* ``adafactor`` matches ``optax.adafactor`` over 40 jitted training steps (the
  params move) on a tree holding a factored (256, 130) matrix and
  (3, 200, 150) tensor, vectors, a scalar, a zero-size leaf and ``None``, for
  argument sets covering every member of its chain: a schedule as learning
  rate, momentum, weight decay with a mask, no clipping, no parameter scale,
  unfactored, another ``min_dim_size_to_factor`` and ``decay_rate``, and
  ``decay_offset`` (from a count past the offset: before it optax's decay is
  NaN, see tests/transforms/test_factored.py). The factored state and the
  momentum are compared field by field with optax's. bfloat16 params are
  compared with optax on the same values in float32.
* ``sm3`` matches ``optax.sm3``.
* ``inject_hyperparams(adafactor)`` and ``inject_hyperparams(sm3)`` give bit
  for bit the plain alias's updates, params and state over 30 jitted steps,
  and a value changed in the state acts as the alias built with that value.
* Both converge on a quadratic.
"""

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
    cast_tree,
    gradient_stream,
    random_params,
    run_optax,
    run_updates,
)

STEPS = 40
SHAPES = {
    "dense": {"kernel": (256, 130), "bias": (130,)},
    "deep": (3, 200, 150),
    "blocks": [(4, 3), None, ()],
    "pair": ((5,), {"empty": (0,)}),
}

# A factored (256, 130) matrix (factored with the defaults too), the rest as above.
SMALL_SHAPES = {"dense": {"kernel": (256, 130), "bias": (130,)}, "blocks": [(4, 3), None, ()]}


def _decaying(count):
    return 1e-2 / (1.0 + count.astype(jnp.float32))


def _matrices(params):
    return jax.tree.map(lambda p: p.ndim >= 2, params)


ADAFACTOR_CASES = [
    pytest.param(dict(), id="defaults"),
    pytest.param(dict(learning_rate=_decaying, momentum=0.9, weight_decay_rate=1e-3,
                      weight_decay_mask=_matrices), id="schedule-momentum-decay"),
    pytest.param(dict(learning_rate=0.05, clipping_threshold=None, multiply_by_parameter_scale=False,
                      factored=False, eps=1e-20), id="plain-unfactored"),
    pytest.param(dict(learning_rate=1e-2, min_dim_size_to_factor=4, decay_rate=0.6,
                      clipping_threshold=2.0), id="small-factored"),
    pytest.param(dict(learning_rate=1e-2, decay_offset=3), id="offset"),
]


def _trajectory(tx, params, grads_seq, state, standard=False):
    """Updates, params and states after each jitted training step."""
    update = jax.jit(tx.update)
    history = []
    for grads in grads_seq:
        # optax's reference makes NaN on the empty leaf (a mean of no entries): no debug_nans.
        with jax.numpy_dtype_promotion("standard" if standard else "strict"), \
                jax.debug_nans(not standard):
            updates, state = update(grads, state, params)
        params = jax.tree.map(lambda p, u: (p + u).astype(p.dtype), params, updates)
        history.append((updates, params, state))
    return history


def _assert_close_to_scale(actual, expected, rtol, context):
    """Each leaf to ``rtol`` of its largest entry: without a learning rate the params grow to
    ~500 in steps of their own RMS, and an entry that crossed 0 keeps that absolute error."""
    for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected)):
        scale = float(np.max(np.abs(e))) if e.size else 0.0
        np.testing.assert_allclose(a, e, rtol=rtol, atol=rtol * scale, err_msg=context)


def _with_count(state, count):
    """The factored state (first in both chains) set to ``count``, as past a decay offset."""
    return (state[0]._replace(count=jnp.int32(count)),) + tuple(state[1:])


@pytest.mark.parametrize("kwargs", ADAFACTOR_CASES)
def test_adafactor_matches_optax_in_float32(kwargs):
    params = random_params(0, jnp.float32, SHAPES)
    grads_seq = gradient_stream(params, STEPS, seed=1)
    tx, reference = gx.adafactor(**kwargs), optax.adafactor(**kwargs)
    start = kwargs.get("decay_offset", 0) + 2 if "decay_offset" in kwargs else 0
    ours = _trajectory(tx, params, grads_seq, _with_count(tx.init(params), start))
    theirs = _trajectory(reference, params, grads_seq,
                         _with_count(reference.init(params), start), standard=True)
    for step, ((u, p, _), (u_ref, p_ref, _)) in enumerate(zip(ours, theirs)):
        assert_trees_close(u, u_ref, 2e-5, 1e-7, f"updates at step {step}")
        _assert_close_to_scale(p, p_ref, 2e-5, f"params at step {step}")
    state, optax_state = ours[-1][2], theirs[-1][2]
    assert_trees_close(tuple(state[0]), tuple(optax_state[0]), 2e-5, 0.0, "FactoredState")
    if kwargs.get("momentum") is not None:
        ema, optax_ema = gx.tree_get(state, "ema"), optax.tree_utils.tree_get(optax_state, "ema")
        assert {x.dtype for x in jax.tree.leaves(ema)} == {jnp.dtype(jnp.float32)}
        assert_trees_close(ema, optax_ema, 2e-5, 1e-7, "momentum")


@pytest.mark.parametrize("kwargs", ADAFACTOR_CASES[:2])
def test_adafactor_matches_optax_in_bfloat16(kwargs):
    """Params fixed, as `tests.helpers.compare_with_optax` does: bfloat16 params move apart."""
    params = random_params(0, jnp.bfloat16, SHAPES)
    grads_seq = gradient_stream(params, STEPS, seed=1)
    ours, _ = run_updates(gx.adafactor(**kwargs), params, grads_seq)
    theirs, _ = run_optax(optax.adafactor(**kwargs), cast_tree(params, jnp.float32),
                          [cast_tree(g, jnp.float32) for g in grads_seq])
    for step, (mine, ref) in enumerate(zip(ours, theirs)):
        assert {x.dtype for x in jax.tree.leaves(mine)} == {jnp.dtype(jnp.bfloat16)}
        assert_trees_close(mine, ref, 3e-2, 1e-4, f"step {step}")


@pytest.mark.parametrize("kwargs", [dict(learning_rate=0.1), dict(learning_rate=0.01, momentum=0.5)])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16], ids=["float32", "bfloat16"])
def test_sm3_matches_optax(kwargs, dtype):
    shapes = {key: value for key, value in SHAPES.items() if key != "blocks"}  # optax: no scalars
    params = random_params(0, dtype, shapes)
    grads_seq = gradient_stream(params, STEPS, seed=1)
    ours, state = run_updates(gx.sm3(**kwargs), params, grads_seq)
    theirs, optax_state = run_optax(optax.sm3(**kwargs), cast_tree(params, jnp.float32),
                                    [cast_tree(g, jnp.float32) for g in grads_seq])
    tolerance = (1e-5, 1e-7) if dtype == jnp.float32 else (2e-2, 1e-4)
    for step, (mine, ref) in enumerate(zip(ours, theirs)):
        assert_trees_close(mine, ref, *tolerance, f"step {step}")
    # In bfloat16, the momentum nu is rounded at every store: 40 roundings of entries ~0.05.
    state_tolerance = tolerance if dtype == jnp.float32 else (2e-2, 2e-3)
    assert_trees_close(tuple(state[0]), tuple(optax_state[0]), *state_tolerance, "ScaleBySM3State")


INJECTED = {
    "adafactor": (gx.adafactor, dict(learning_rate=1e-2)),
    "adafactor_everything": (gx.adafactor, dict(
        learning_rate=_decaying, min_dim_size_to_factor=4, decay_rate=0.7, decay_offset=2,
        momentum=0.9, weight_decay_rate=1e-3, weight_decay_mask=_matrices)),
    "sm3": (gx.sm3, dict(learning_rate=0.1, momentum=0.8)),
}


def _plain_trajectory(tx, params, grads_seq, compiler_options=None):
    update = jax.jit(tx.update, compiler_options=compiler_options)
    state, history = tx.init(params), []
    for grads in grads_seq:
        updates, state = update(grads, state, params)
        params = gx.apply_updates(params, updates)
        history.append((updates, params, state))
    return history


@pytest.mark.parametrize("name", sorted(INJECTED))
def test_inject_hyperparams_is_bitwise_the_plain_alias(name):
    factory, kwargs = INJECTED[name]
    params = random_params(0, jnp.float32, SMALL_SHAPES)
    grads_seq = gradient_stream(params, 30, seed=3)
    plain = _plain_trajectory(factory(**kwargs), params, grads_seq, DEFAULT_COMPILE)
    injected = _plain_trajectory(gx.inject_hyperparams(factory)(**kwargs), params, grads_seq,
                                 DEFAULT_COMPILE)
    for step, ((u, p, s), (u_i, p_i, s_i)) in enumerate(zip(plain, injected)):
        assert_trees_bitwise_equal(u_i, u, f"{name}, step {step}")
        assert_trees_bitwise_equal(p_i, p, f"{name}, step {step}")
        assert_trees_bitwise_equal(s_i.inner_state, s, f"{name}, step {step}")


@pytest.mark.parametrize("factory, values, kwargs", [
    (gx.adafactor, dict(decay_rate=0.5, clipping_threshold=0.3), dict(learning_rate=1e-2)),
    (gx.adafactor, dict(eps=1e-10), dict(learning_rate=1e-2, factored=False)),
    (gx.sm3, dict(momentum=0.3), dict(learning_rate=0.1)),
], ids=["adafactor", "adafactor-unfactored", "sm3"])
def test_a_value_changed_in_the_state_acts_as_that_value(factory, values, kwargs):
    params = random_params(0, jnp.float32, SMALL_SHAPES)
    grads_seq = gradient_stream(params, 4, seed=5)
    tx = gx.inject_hyperparams(factory)(**kwargs)
    state = gx.tree_set(tx.init(params), **values)
    expected = _plain_trajectory(factory(**kwargs, **values), params, grads_seq)
    update = jax.jit(tx.update)
    for step, (grads, (want, _, _)) in enumerate(zip(grads_seq, expected)):
        updates, state = update(grads, state, params)
        params = gx.apply_updates(params, updates)
        assert_trees_close(updates, want, 1e-6, 1e-9, f"step {step}")


@pytest.mark.parametrize("tx", [gx.adafactor(0.1, min_dim_size_to_factor=2), gx.sm3(0.5)],
                         ids=["adafactor", "sm3"])
def test_converges_on_a_quadratic(tx):
    target = {"w": jnp.asarray(np.random.default_rng(0).standard_normal((8, 6)), jnp.float32),
              "b": jnp.linspace(-1.0, 1.0, 6)}

    def loss(params):
        return sum(jnp.sum((p - t) ** 2) for p, t in zip(jax.tree.leaves(params),
                                                           jax.tree.leaves(target)))

    params = jax.tree.map(lambda t: jnp.ones_like(t) * 0.5, target)
    state = tx.init(params)

    @jax.jit
    def step(params, state):
        updates, state = tx.update(jax.grad(loss)(params), state, params)
        return gx.apply_updates(params, updates), state

    start = float(loss(params))
    for _ in range(300):
        params, state = step(params, state)
    assert float(loss(params)) < 1e-2 * start
