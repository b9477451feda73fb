"""lookahead against optax.lookahead, run live, and what it guarantees beyond it.

* float32: 40 jitted steps of a whole training loop on both sides (gradients
  taken at each side's own fast params, the updates applied to both the fast
  and the slow params), over a nested tree with a 0-d, a zero-size and a
  ``None`` leaf, for several fast optimizers and argument sets (sync periods 1,
  3 and 5, step sizes 0, 0.5, 0.8 and 1, with and without ``reset_state``):
  the updates (fast and slow), the params, ``steps_since_sync`` and the fast
  optimizer's moments agree at every step (rtol 1e-5).
* bfloat16: at every step optax gets our bfloat16 params and fast updates cast
  to float32; our bfloat16 updates are within one bfloat16 rounding of its.
* Flax: a linen model's nested params, trained through ``TrainState.apply_gradients``,
  follow optax's lookahead; optax's own ``LookaheadParams`` are accepted.
* Composition: ``inject_hyperparams(lookahead)`` gives the plain lookahead's
  updates bit for bit; a lookahead around an injected optimizer too, except in
  the last bit on synchronisation steps, where XLA may fuse the plain
  optimizer's last multiply into lookahead's sum.
* Between synchronisations the slow params do not move (``-0.0`` updates); on a
  synchronisation step the fast params become the new slow ones; the fast
  optimizer gets the extra arguments it accepts; and errors name ``lookahead``.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradxform as gx
from tests.helpers import (
    DEFAULT_COMPILE, assert_trees_bitwise_equal, gradient_stream, random_params,
)

STEPS = 40


def _loss_grads(fast, noise):
    """The gradient of a quadratic pulling the fast params toward 0, plus noise."""
    return jax.tree.map(lambda p, n: 0.3 * p + n, fast, noise)


def _standard(fn):
    def wrapped(*args, **kwargs):
        with jax.numpy_dtype_promotion("standard"), jax.debug_nans(False):
            return fn(*args, **kwargs)

    return wrapped


def _train(tx, params_type, params, noises, promotion=None):
    """Jitted steps of a loop that applies both the fast and the slow updates."""
    wrap = _standard if promotion == "standard" else (lambda f: f)
    apply = optax.apply_updates if promotion == "standard" else gx.apply_updates

    @jax.jit
    def step(params, state, noise):
        grads = _loss_grads(params.fast, noise)
        updates, state = tx.update(grads, state, params)
        return apply(params, updates), state, updates

    step = wrap(step)
    params = params_type.init_synced(params)
    state = wrap(tx.init)(params)
    trajectory = []
    for noise in noises:
        params, state, updates = step(params, state, noise)
        trajectory.append((params, state, updates))
    return trajectory


def _moments(state):
    """The fast optimizer's arrays that both libraries keep under the same names."""
    found = {}
    for name in ("mu", "nu", "trace"):
        try:
            found[name] = gx.tree_get(state.fast_state, name)
        except (KeyError, ValueError):
            continue
    return found


def _optax_moments(state, names):
    return {name: optax.tree.get(state.fast_state, name) for name in names}


def _assert_close(actual, expected, context, rtol=1e-5, atol=1e-6):
    assert jax.tree.structure(actual) == jax.tree.structure(expected), context
    for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected)):
        assert a.shape == e.shape, context
        np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(e, np.float64),
                                   rtol=rtol, atol=atol, err_msg=context)


FAST = {
    "adam": (lambda: gx.adam(1e-2), lambda: optax.adam(1e-2)),
    "sgd_momentum": (lambda: gx.sgd(0.05, momentum=0.9, nesterov=True),
                     lambda: optax.sgd(0.05, momentum=0.9, nesterov=True)),
    "clip_adamw": (lambda: gx.chain(gx.clip_by_global_norm(1.0), gx.adamw(1e-2, weight_decay=1e-2)),
                   lambda: optax.chain(optax.clip_by_global_norm(1.0),
                                       optax.adamw(1e-2, weight_decay=1e-2))),
}
ARGUMENTS = [
    dict(sync_period=5, slow_step_size=0.5),
    dict(sync_period=3, slow_step_size=0.8, reset_state=True),
    dict(sync_period=1, slow_step_size=1.0),
    dict(sync_period=4, slow_step_size=0.0, reset_state=True),
]


@pytest.mark.parametrize("arguments", ARGUMENTS, ids=lambda a: "-".join(map(str, a.values())))
@pytest.mark.parametrize("fast", sorted(FAST))
def test_float32_training_matches_optax_step_by_step(fast, arguments):
    ours_fast, ref_fast = FAST[fast]
    params = random_params(0)
    noises = gradient_stream(params, STEPS, seed=1)
    ours = _train(gx.lookahead(ours_fast(), **arguments), gx.LookaheadParams, params, noises)
    with jax.numpy_dtype_promotion("standard"):
        ref_tx = optax.lookahead(ref_fast(), **arguments)
    theirs = _train(ref_tx, optax.LookaheadParams, params, noises, promotion="standard")
    for step, ((p, s, u), (rp, rs, ru)) in enumerate(zip(ours, theirs)):
        context = f"{fast}, step {step}"
        assert type(u) is gx.LookaheadParams and type(p) is gx.LookaheadParams
        _assert_close(u.fast, ru.fast, f"{context}: fast updates")
        _assert_close(u.slow, ru.slow, f"{context}: slow updates")
        _assert_close((p.fast, p.slow), (rp.fast, rp.slow), f"{context}: params")
        assert s.steps_since_sync.dtype == jnp.int32
        assert int(s.steps_since_sync) == int(rs.steps_since_sync) == (step + 1) % arguments[
            "sync_period"]
        mine = _moments(s)
        assert mine, "the fast optimizer's moments were not found"
        _assert_close(mine, _optax_moments(rs, mine), f"{context}: fast optimizer state")
        if arguments.get("reset_state") and int(s.steps_since_sync) == 0:
            fresh = gx.tree_get(gx.lookahead(ours_fast(), **arguments).init(p), "mu" if
                                "adam" in fast else "trace")
            _assert_close(mine["mu" if "adam" in fast else "trace"], fresh, f"{context}: reset")


def test_bfloat16_updates_are_one_rounding_from_optax_on_the_same_inputs():
    # The fast optimizer is the identity on both sides, fed bfloat16 SGD steps: the inputs of
    # lookahead's own arithmetic are then exactly equal (a bfloat16 SGD would round its
    # output, where optax's float32 one does not).
    tx = gx.lookahead(gx.identity(), sync_period=3, slow_step_size=0.6)
    with jax.numpy_dtype_promotion("standard"):
        ref = optax.lookahead(optax.identity(), sync_period=3, slow_step_size=0.6)
    params = gx.LookaheadParams.init_synced(random_params(0, jnp.bfloat16))
    noises = gradient_stream(random_params(0, jnp.bfloat16), STEPS, seed=2)
    state, update = tx.init(params), jax.jit(tx.update)
    f32 = jnp.float32
    ref_update = _standard(jax.jit(ref.update))
    for step, noise in enumerate(noises):
        grads = jax.tree.map(lambda g: -0.1 * g, _loss_grads(params.fast, noise))
        updates, new_state = update(grads, state, params)
        ref_params = optax.LookaheadParams(*jax.tree.map(lambda x: x.astype(f32), tuple(params)))
        ref_state = optax.LookaheadState(
            fast_state=_standard(ref.init)(ref_params).fast_state,  # the identity keeps nothing
            steps_since_sync=state.steps_since_sync)
        ref_updates, _ = ref_update(jax.tree.map(lambda g: g.astype(f32), grads), ref_state,
                                    ref_params)
        for part in ("fast", "slow"):
            mine, theirs = getattr(updates, part), getattr(ref_updates, part)
            for a, e in zip(jax.tree.leaves(mine), jax.tree.leaves(theirs)):
                assert a.dtype == jnp.bfloat16
                scale = float(np.max(np.abs(np.asarray(e)), initial=0.0))
                np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(e, np.float64),
                                           rtol=8e-3, atol=1e-6 * scale + 1e-30,
                                           err_msg=f"step {step} {part}")
        params, state = gx.apply_updates(params, updates), new_state
    assert int(state.steps_since_sync) == STEPS % 3


def test_slow_params_move_only_on_synchronisation_steps():
    tx = gx.lookahead(gx.adam(0.1), sync_period=4, slow_step_size=0.5)
    adam = gx.adam(0.1)  # run beside it, for the fast optimizer's own update u
    params = gx.LookaheadParams.init_synced({"w": jnp.array([1.0, -0.0, 2.0])})
    state, adam_state = tx.init(params), adam.init(params.fast)
    for step in range(12):
        grads = {"w": params.fast["w"] - 3.0}
        updates, state = jax.jit(tx.update)(grads, state, params)
        u, adam_state = jax.jit(adam.update)(grads, adam_state, params.fast)
        new = gx.apply_updates(params, updates)
        if step % 4 != 3:
            # -0.0 leaves every slow parameter bit for bit, -0.0 ones included.
            assert np.all(np.signbit(updates.slow["w"])) and not np.any(updates.slow["w"])
            assert_trees_bitwise_equal(new.slow, params.slow)
            np.testing.assert_array_equal(updates.fast["w"], u["w"])
        else:
            theta, phi = (np.asarray(x["w"], np.float64) for x in (params.fast, params.slow))
            expected = phi + 0.5 * (theta + np.asarray(u["w"], np.float64) - phi)
            np.testing.assert_allclose(new.slow["w"], expected, rtol=1e-6, atol=1e-7)
            np.testing.assert_allclose(new.fast["w"], expected, rtol=1e-6, atol=1e-7)
        params = new


def test_a_synchronisation_step_in_float64_numpy():
    # An independent reference for the update rule: plain SGD, one full period.
    alpha, lr, k = 0.7, 0.25, 3
    tx = gx.lookahead(gx.sgd(lr), sync_period=k, slow_step_size=alpha)
    start = np.array([1.0, -2.0, 0.5])
    params = gx.LookaheadParams.init_synced({"w": jnp.asarray(start, jnp.float32)})
    state = tx.init(params)
    fast = start.copy()
    for _ in range(k):
        grads = {"w": jnp.asarray(2.0 * fast, jnp.float32)}  # d/dw of sum(w**2)
        updates, state = tx.update(grads, state, params)
        params = gx.apply_updates(params, updates)
        fast = fast - lr * 2.0 * fast
    slow = start + alpha * (fast - start)
    np.testing.assert_allclose(params.slow["w"], slow, rtol=1e-6)
    np.testing.assert_allclose(params.fast["w"], slow, rtol=1e-6)


def test_flax_train_state_follows_optax_lookahead():
    nn = pytest.importorskip("flax.linen")
    from flax.training import train_state

    class MLP(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.tanh(nn.Dense(8)(x))
            x = nn.LayerNorm()(x)
            return nn.Dense(1)(x)

    model = MLP()
    x = jnp.asarray(np.random.default_rng(0).standard_normal((16, 3)), jnp.float32)
    y = jnp.sin(x[:, :1])
    variables = model.init(jax.random.key(0), x)

    def loss(params):
        return jnp.mean((model.apply(params, x) - y) ** 2)

    def run(tx, params_type, apply):
        state = train_state.TrainState.create(
            apply_fn=model.apply, params=params_type.init_synced(variables), tx=tx)

        @jax.jit
        def step(state):
            grads = jax.grad(loss)(state.params.fast)
            return state.apply_gradients(grads=grads)

        history = []
        for _ in range(30):
            state = apply(step)(state)
            history.append(state.params)
        return history

    ours = run(gx.lookahead(gx.adam(3e-2), sync_period=5, slow_step_size=0.5), gx.LookaheadParams,
               lambda f: f)
    with jax.numpy_dtype_promotion("standard"):
        ref_tx = optax.lookahead(optax.adam(3e-2), sync_period=5, slow_step_size=0.5)
    theirs = run(ref_tx, optax.LookaheadParams, _standard)
    for step, (mine, ref) in enumerate(zip(ours, theirs)):
        assert jax.tree.structure(mine.slow) == jax.tree.structure(variables)
        _assert_close((mine.fast, mine.slow), (ref.fast, ref.slow), f"step {step}")
    assert float(loss(ours[-1].slow)) < float(loss(variables))


def test_optax_lookahead_params_are_accepted_and_returned():
    tx = gx.lookahead(gx.sgd(0.1), sync_period=2, slow_step_size=0.5)
    params = optax.LookaheadParams.init_synced({"w": jnp.ones(2)})
    updates, _ = tx.update({"w": jnp.ones(2)}, tx.init(params), params)
    assert type(updates) is optax.LookaheadParams
    # init also takes the plain params, as the fast ones (as optax's does).
    plain = tx.init({"w": jnp.ones(2)})
    assert jax.tree.structure(plain) == jax.tree.structure(tx.init(params))


@pytest.mark.parametrize("reset_state", [False, True])
def test_inject_hyperparams_of_lookahead_is_bitwise_the_plain_one(reset_state):
    kwargs = dict(sync_period=3, slow_step_size=0.6, reset_state=reset_state)
    plain = gx.lookahead(gx.adam(1e-2), **kwargs)
    injected = gx.inject_hyperparams(gx.lookahead)(gx.adam(1e-2), **kwargs)
    around = gx.lookahead(gx.inject_hyperparams(gx.adam)(1e-2), **kwargs)
    params = random_params(3)
    noises = gradient_stream(params, 24, seed=4)

    def run(tx):
        # The update jitted on its own: compiled with apply_updates, XLA may fuse the plain
        # update's last multiply into the add (see transforms/injection.py).
        update = jax.jit(tx.update, compiler_options=DEFAULT_COMPILE)
        apply = jax.jit(gx.apply_updates, compiler_options=DEFAULT_COMPILE)
        p = gx.LookaheadParams.init_synced(params)
        state, trajectory = tx.init(p), []
        for noise in noises:
            u, state = update(_loss_grads(p.fast, noise), state, p)
            p = apply(p, u)
            trajectory.append((p, u))
        return trajectory

    expected = run(plain)
    for step, ((p, u), (ep, eu)) in enumerate(zip(run(injected), expected)):
        assert_trees_bitwise_equal(u, eu, f"updates at step {step}")
        assert_trees_bitwise_equal(p, ep, f"params at step {step}")
    # Around an injected optimizer: the plain program may fuse adam's last multiply into
    # lookahead's sum (one rounding fewer); the injected adam sits in a lax.cond, which XLA
    # does not fuse across. So the synchronisation steps may differ in the last bit.
    for step, ((p, u), (ep, eu)) in enumerate(zip(run(around), expected)):
        _assert_close(u, eu, f"around: updates at step {step}", rtol=1e-6, atol=1e-7)
        _assert_close(p, ep, f"around: params at step {step}", rtol=1e-6, atol=1e-7)
        if step % 3 != 2:  # not a synchronisation step: nothing for XLA to fuse
            assert_trees_bitwise_equal(u, eu, f"around: updates at step {step}")
    state = injected.init(gx.LookaheadParams.init_synced(params))
    assert float(state.hyperparams["slow_step_size"]) == np.float32(0.6)


def test_the_fast_optimizer_gets_the_extra_arguments_it_accepts():
    seen = []

    def update(updates, state, params=None, *, loss=None):
        seen.append(loss)
        return updates, state

    fast = gx.GradientTransformation(lambda params: (), update)
    tx = gx.lookahead(fast, sync_period=2, slow_step_size=0.5)
    params = gx.LookaheadParams.init_synced({"w": jnp.ones(2)})
    tx.update({"w": jnp.ones(2)}, tx.init(params), params, loss=3.0, other=1)
    assert seen == [3.0]


def test_steps_since_sync_cycles_and_the_state_layout_is_stable_under_jit():
    tx = gx.lookahead(gx.adam(1e-3), sync_period=3, slow_step_size=0.5, reset_state=True)
    params = gx.LookaheadParams.init_synced(random_params(0))
    state = tx.init(params)
    traces = []

    @jax.jit
    def step(params, state, grads):
        traces.append(None)
        updates, state = tx.update(grads, state, params)
        return gx.apply_updates(params, updates), state

    phases = []
    for grads in gradient_stream(params.fast, 7):
        params, state = step(params, state, grads)
        phases.append(int(state.steps_since_sync))
    assert phases == [1, 2, 0, 1, 2, 0, 1] and len(traces) == 1
    abstract = jax.eval_shape(tx.init, params)
    assert jax.tree.structure(abstract) == jax.tree.structure(state)


@pytest.mark.parametrize(
    "params, exc, shown",
    [
        ({"w": jnp.ones(2)}, TypeError, "params must be gx.LookaheadParams"),
        (None, TypeError, "got NoneType"),
        (gx.LookaheadParams({"w": jnp.ones(2)}, {"w": jnp.ones(3)}), ValueError, "params.slow"),
        (gx.LookaheadParams({"w": jnp.ones(3)}, {"w": jnp.ones(3)}), ValueError, "params.fast"),
    ],
)
def test_wrong_params_raise_naming_lookahead(params, exc, shown):
    tx = gx.lookahead(gx.sgd(0.1), sync_period=2, slow_step_size=0.5)
    state = tx.init({"w": jnp.ones(2)})
    with pytest.raises(exc) as info:
        tx.update({"w": jnp.ones(2)}, state, params)
    message = str(info.value)
    assert message.startswith("lookahead: ") and shown in message, message


def test_repr_and_bad_arguments():
    tx = gx.lookahead(gx.sgd(0.1), 5, 0.5)
    assert repr(tx) == (
        "lookahead(fast_optimizer=" + repr(gx.sgd(0.1)) + ", sync_period=5, slow_step_size=0.5, "
        "reset_state=False)")
    assert repr(gx.from_config(gx.to_config(tx))) == repr(tx)
    with pytest.raises(ValueError, match="lookahead: sync_period must be an int >= 1, got 0"):
        gx.lookahead(gx.sgd(0.1), 0, 0.5)
    with pytest.raises(ValueError, match=r"lookahead: slow_step_size must be in \[0, 1\], got 1.5"):
        gx.lookahead(gx.sgd(0.1), 2, 1.5)
