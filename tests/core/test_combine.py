"""chain and named_chain: sequential composition, state layout, extra keyword arguments, optax interop.

References: applying the members one after another by hand, and optax's own
chains and optimizers (run under standard dtype promotion, which optax needs).
"""

import collections

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import gradxform as gx
from tests.helpers import (
    assert_trees_close,
    gradient_stream,
    is_none,
    random_params,
    run_optax,
    run_updates,
)

# --- random nested pytrees (hypothesis) --------------------------------------------------

# A few shapes only: eager jax compiles each primitive once per shape and dtype.
_SHAPES = [(), (1,), (3,), (2, 3), (0,)]


class _Leaf:
    """A leaf placeholder (not a pytree node), replaced by an array."""

    def __init__(self, shape):
        self.shape = shape


_leaf_specs = st.one_of(st.none(), st.sampled_from(_SHAPES).map(_Leaf))
_tree_specs = st.recursive(
    _leaf_specs,
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.lists(children, max_size=3).map(tuple),
        st.dictionaries(st.sampled_from(["a", "b", "c", "d"]), children, max_size=3),
    ),
    max_leaves=6,
).filter(lambda spec: spec is not None)  # a None params tree means "no params"


def _materialise(spec, rng, scale=1.0):
    return jax.tree.map(
        lambda leaf: jnp.asarray(scale * rng.standard_normal(leaf.shape), jnp.float32), spec
    )


_MEMBERS = {
    "clip": lambda: gx.clip(0.5),
    "clip_by_norm": lambda: gx.clip_by_norm(0.7),
    "clip_by_global_norm": lambda: gx.clip_by_global_norm(1.0),
    "adam": lambda: gx.scale_by_adam(),
    "adagrad": lambda: gx.scale_by_adagrad(),
    "rms": lambda: gx.scale_by_rms(decay=0.5),
    "trace": lambda: gx.trace(0.9, nesterov=True),
    "ema": lambda: gx.ema(0.8),
    "decay": lambda: gx.add_decayed_weights(0.1),
    "lr": lambda: gx.scale_by_learning_rate(0.3),
    "scale": lambda: gx.scale(-2.0),
}

_SETTINGS = settings(max_examples=12, deadline=None, database=None, derandomize=True)


@_SETTINGS
@given(
    spec=_tree_specs,
    names=st.lists(st.sampled_from(sorted(_MEMBERS)), min_size=1, max_size=4),
    seed=st.integers(0, 2**16),
)
def test_chain_equals_members_applied_in_turn(spec, names, seed):
    rng = np.random.default_rng(seed)
    params = _materialise(spec, rng)
    grads_seq = [_materialise(spec, rng, scale) for scale in (1.0, 3.0)]
    members = [_MEMBERS[name]() for name in names]
    tx = gx.chain(*members)

    state = tx.init(params)
    member_states = [m.init(params) for m in members]
    assert isinstance(state, tuple) and len(state) == len(members)
    for grads in grads_seq:
        updates, state = tx.update(grads, state, params)
        expected = grads
        for i, member in enumerate(members):
            expected, member_states[i] = member.update(expected, member_states[i], params)
        assert jax.tree.structure(updates, is_leaf=is_none) == jax.tree.structure(
            expected, is_leaf=is_none
        )
        for a, b in zip(jax.tree.leaves(updates), jax.tree.leaves(expected)):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        for s, e in zip(state, member_states):
            assert jax.tree.structure(s) == jax.tree.structure(e)
            for a, b in zip(jax.tree.leaves(s), jax.tree.leaves(e)):
                np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@settings(max_examples=10, deadline=None, database=None, derandomize=True)
@given(spec=_tree_specs, seed=st.integers(0, 2**16))
def test_chain_matches_optax_chain_on_random_trees(spec, seed):
    rng = np.random.default_rng(seed)
    params = _materialise(spec, rng)
    grads_seq = [_materialise(spec, rng, scale) for scale in (0.5, 2.0)]
    ours = gx.chain(
        gx.clip_by_global_norm(1.0),
        gx.scale_by_adam(),
        gx.add_decayed_weights(0.01),
        gx.scale_by_learning_rate(0.1),
    )
    theirs = optax.chain(
        optax.clip_by_global_norm(1.0),
        optax.scale_by_adam(),
        optax.add_decayed_weights(0.01),
        optax.scale_by_learning_rate(0.1),
    )
    updates, _ = run_updates(ours, params, grads_seq, jit=False)
    with jax.numpy_dtype_promotion("standard"):
        expected, _ = run_updates(theirs, params, grads_seq, jit=False)
    for mine, ref in zip(updates, expected):
        assert_trees_close(mine, ref, rtol=1e-5, atol=1e-6)


def test_chain_matches_optax_adamw_jitted_over_many_steps():
    params = random_params(2)
    grads_seq = gradient_stream(params, 20)
    ours = gx.chain(gx.clip_by_global_norm(1.0), gx.adamw(1e-2, weight_decay=0.1))
    theirs = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-2, weight_decay=0.1))
    updates, _ = run_updates(ours, params, grads_seq)
    expected, _ = run_optax(theirs, params, grads_seq)
    for step, (mine, ref) in enumerate(zip(updates, expected)):
        assert_trees_close(mine, ref, rtol=2e-6, atol=1e-6, context=f"step {step}")


def test_empty_chain_is_identity():
    tx = gx.chain()
    grads = {"w": jnp.array([1.0, -2.0])}
    state = tx.init(grads)
    assert state == ()
    updates, state = tx.update(grads, state)
    assert state == ()
    np.testing.assert_array_equal(updates["w"], np.array([1.0, -2.0], np.float32))


def test_chain_rejects_non_transformation_members():
    with pytest.raises(TypeError, match="chain: member 1"):
        gx.chain(gx.scale(1.0), 3.0)


@pytest.mark.parametrize("bad_state", [(gx.EmptyState(),), (gx.EmptyState(),) * 3, gx.EmptyState(), None])
def test_chain_state_of_wrong_length_raises(bad_state):
    tx = gx.chain(gx.scale(2.0), gx.clip(1.0))
    with pytest.raises(ValueError, match="chain"):
        tx.update({"w": jnp.ones(2)}, bad_state)


def test_chain_rejects_a_dict_state():
    tx = gx.chain(gx.scale(2.0), gx.clip(1.0))
    with pytest.raises(ValueError, match="chain"):
        tx.update({"w": jnp.ones(2)}, {"a": gx.EmptyState(), "b": gx.EmptyState()})


# --- named_chain -------------------------------------------------------------------------------


def test_named_chain_state_is_keyed_by_name_and_matches_chain():
    params = random_params(4)
    grads_seq = gradient_stream(params, 3)
    named = gx.named_chain(
        ("clip", gx.clip_by_global_norm(1.0)), ("adam", gx.scale_by_adam()), ("lr", gx.scale(-0.1))
    )
    plain = gx.chain(gx.clip_by_global_norm(1.0), gx.scale_by_adam(), gx.scale(-0.1))
    state = named.init(params)
    assert isinstance(state, dict)
    assert list(state) == ["clip", "adam", "lr"]
    assert isinstance(state["adam"], gx.ScaleByAdamState)
    assert isinstance(state["clip"], gx.EmptyState)

    named_updates, named_state = run_updates(named, params, grads_seq)
    plain_updates, plain_state = run_updates(plain, params, grads_seq)
    assert set(named_state) == {"clip", "adam", "lr"}  # jit returns dicts with sorted keys
    for a, b in zip(named_updates, plain_updates):
        assert_trees_close(a, b, rtol=0, atol=0)
    assert int(named_state["adam"].count) == 3
    assert_trees_close(named_state["adam"].mu, plain_state[1].mu, rtol=0, atol=0)

    # The same numbers as optax.
    expected, _ = run_optax(
        optax.chain(optax.clip_by_global_norm(1.0), optax.scale_by_adam(), optax.scale(-0.1)),
        params,
        grads_seq,
    )
    for a, b in zip(named_updates, expected):
        assert_trees_close(a, b, rtol=2e-6, atol=1e-6)


def test_named_chain_rejects_duplicate_names():
    with pytest.raises(ValueError, match="unique") as info:
        gx.named_chain(("a", gx.scale(1.0)), ("b", gx.clip(1.0)), ("a", gx.scale(2.0)))
    assert "named_chain" in str(info.value)


def test_named_chain_rejects_non_string_names():
    with pytest.raises(TypeError, match="named_chain"):
        gx.named_chain((1, gx.scale(1.0)))


def test_named_chain_state_missing_a_name_raises():
    tx = gx.named_chain(("a", gx.scale(1.0)), ("b", gx.clip(1.0)))
    with pytest.raises(ValueError, match="named_chain"):
        tx.update({"w": jnp.ones(2)}, {"a": gx.EmptyState()})


def test_named_chain_state_with_wrong_names_raises_value_error():
    tx = gx.named_chain(("a", gx.scale(1.0)), ("b", gx.clip(1.0)))
    with pytest.raises(ValueError, match="named_chain"):
        tx.update({"w": jnp.ones(2)}, {"a": gx.EmptyState(), "c": gx.EmptyState()})


# --- extra keyword arguments ---------------------------------------------------------------------


def _recording_members(log):
    def init(params):
        return gx.EmptyState()

    def takes_everything(updates, state, params=None, **extra_args):
        log.append(("everything", dict(extra_args)))
        return updates, state

    def takes_loss(updates, state, params=None, *, loss=None):
        log.append(("loss", loss))
        return jax.tree.map(lambda g: g * loss, updates), state

    def optax_style(updates, state, params=None):
        log.append(("plain", None))
        return updates, state

    return (
        gx.GradientTransformation(init, takes_everything),
        gx.GradientTransformation(init, takes_loss),
        gx.GradientTransformation(init, optax_style),
    )


def test_extra_args_are_forwarded_by_signature():
    log = []
    everything, loss_only, plain = _recording_members(log)
    tx = gx.chain(everything, loss_only, plain, gx.scale(-1.0))
    grads = {"w": jnp.array([1.0, 2.0])}
    updates, _ = tx.update(grads, tx.init(grads), None, loss=jnp.float32(3.0), step=7)
    assert [entry[0] for entry in log] == ["everything", "loss", "plain"]
    assert set(log[0][1]) == {"loss", "step"}
    assert log[0][1]["step"] == 7
    assert float(log[1][1]) == 3.0
    np.testing.assert_array_equal(updates["w"], np.array([-3.0, -6.0], np.float32))


def test_extra_args_reach_nested_and_named_chains():
    log = []
    everything, loss_only, plain = _recording_members(log)
    tx = gx.named_chain(("outer", gx.chain(plain, everything)), ("loss", loss_only))
    grads = {"w": jnp.array([0.5])}
    updates, state = tx.update(grads, tx.init(grads), loss=jnp.float32(2.0), other="x")
    assert [entry[0] for entry in log] == ["plain", "everything", "loss"]
    assert log[1][1] == {"loss": jnp.float32(2.0), "other": "x"}
    assert set(state) == {"outer", "loss"}
    np.testing.assert_array_equal(updates["w"], np.array([1.0], np.float32))


def test_extra_args_under_jit():
    log = []
    everything, loss_only, plain = _recording_members(log)
    tx = gx.chain(everything, loss_only, plain)
    grads = {"w": jnp.array([1.0, -1.0])}
    update = jax.jit(tx.update)
    updates, _ = update(grads, tx.init(grads), loss=jnp.float32(0.5))
    np.testing.assert_array_equal(updates["w"], np.array([0.5, -0.5], np.float32))


ALL_PUBLIC = {
    "scale": lambda: gx.scale(0.5),
    "scale_by_learning_rate": lambda: gx.scale_by_learning_rate(0.1),
    "scale_by_learning_rate_none": lambda: gx.scale_by_learning_rate(None),
    "scale_by_schedule": lambda: gx.scale_by_schedule(lambda c: 1.0 / (1.0 + c.astype(jnp.float32))),
    "scale_by_adagrad": gx.scale_by_adagrad,
    "scale_by_adam": gx.scale_by_adam,
    "scale_by_amsgrad": gx.scale_by_amsgrad,
    "scale_by_rms": gx.scale_by_rms,
    "scale_by_stddev": gx.scale_by_stddev,
    "trace": lambda: gx.trace(0.9),
    "ema": lambda: gx.ema(0.9),
    "clip": lambda: gx.clip(1.0),
    "clip_by_norm": lambda: gx.clip_by_norm(1.0),
    "clip_by_global_norm": lambda: gx.clip_by_global_norm(1.0),
    "add_decayed_weights": lambda: gx.add_decayed_weights(0.1),
    "identity": gx.identity,
    "stateless": lambda: gx.stateless(lambda g, p: g),
    "stateless_with_tree_map": lambda: gx.stateless_with_tree_map(lambda g, p: g),
    "chain": lambda: gx.chain(gx.clip(1.0), gx.scale_by_adam()),
    "named_chain": lambda: gx.named_chain(("clip", gx.clip(1.0)), ("adam", gx.scale_by_adam())),
    "sgd": lambda: gx.sgd(0.1, momentum=0.9),
    "adagrad": lambda: gx.adagrad(0.1),
    "adam": lambda: gx.adam(0.1),
    "adam_amsgrad": lambda: gx.adam(0.1, amsgrad=True),
    "adamw": lambda: gx.adamw(0.1),
    "rmsprop": lambda: gx.rmsprop(0.1, centered=True, momentum=0.9),
}


@pytest.mark.parametrize("name", sorted(ALL_PUBLIC))
def test_unknown_extra_args_accepted_by_every_public_transform(name):
    tx = ALL_PUBLIC[name]()
    params = {"w": jnp.array([1.0, -2.0, 0.5])}
    grads = {"w": jnp.array([0.3, 0.1, -0.2])}
    state = tx.init(params)
    expected, expected_state = tx.update(grads, state, params)
    updates, new_state = tx.update(
        grads, state, params, loss=jnp.float32(1.0), unknown_argument="anything", step=3
    )
    np.testing.assert_array_equal(np.asarray(updates["w"]), np.asarray(expected["w"]))
    assert jax.tree.structure(new_state) == jax.tree.structure(expected_state)


# --- optax interop --------------------------------------------------------------------------


def test_optax_members_inside_gx_chain_equal_optax_adam():
    params = random_params(6)
    grads_seq = gradient_stream(params, 10)
    with jax.numpy_dtype_promotion("standard"):  # the optax member needs it
        ours, _ = run_updates(
            gx.chain(optax.scale_by_adam(), gx.scale_by_learning_rate(1e-3)), params, grads_seq
        )
    expected, _ = run_optax(optax.adam(1e-3), params, grads_seq)
    for step, (mine, ref) in enumerate(zip(ours, expected)):
        assert_trees_close(mine, ref, rtol=1e-6, atol=1e-9, context=f"step {step}")


def test_plain_optax_member_gets_no_extra_args_and_extra_args_member_gets_all():
    seen = {}

    def extra_update(updates, state, params=None, **extra_args):
        seen.update(extra_args)
        return updates, state

    extra = optax.GradientTransformationExtraArgs(lambda p: optax.EmptyState(), extra_update)
    tx = gx.chain(optax.scale(2.0), extra)
    grads = {"w": jnp.array([1.0])}
    with jax.numpy_dtype_promotion("standard"):
        # optax.scale's update is update(updates, state, params=None): no extra args may reach it.
        updates, _ = tx.update(grads, tx.init(grads), None, loss=1.0)
    assert seen == {"loss": 1.0}
    np.testing.assert_array_equal(updates["w"], np.array([2.0], np.float32))


def test_to_optax_inside_optax_chain():
    wrapped = gx.to_optax(gx.scale_by_adam())
    assert isinstance(wrapped, optax.GradientTransformationExtraArgs)
    combined = optax.chain(optax.clip_by_global_norm(1.0), wrapped, optax.scale(-1e-2))
    assert isinstance(combined, optax.GradientTransformationExtraArgs)
    reference = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-2))
    params = random_params(7)
    grads_seq = gradient_stream(params, 10)

    with jax.numpy_dtype_promotion("standard"):  # optax's own members need it
        state = combined.init(params)
        update = jax.jit(lambda g, s, p: combined.update(g, s, p, loss=jnp.float32(1.0)))
        ours = []
        for grads in grads_seq:
            updates, state = update(grads, state, params)
            ours.append(updates)
    expected, _ = run_optax(reference, params, grads_seq)
    for step, (mine, ref) in enumerate(zip(ours, expected)):
        assert_trees_close(mine, ref, rtol=1e-6, atol=1e-9, context=f"step {step}")
    assert isinstance(state[1], gx.ScaleByAdamState)


def test_to_optax_passes_extra_args_through():
    seen = {}

    def update(updates, state, params=None, **extra_args):
        seen.update(extra_args)
        return updates, state

    wrapped = gx.to_optax(gx.GradientTransformation(lambda p: gx.EmptyState(), update))
    wrapped.update({"w": jnp.ones(1)}, gx.EmptyState(), None, loss=2.0)
    assert seen == {"loss": 2.0}


def test_to_optax_rejects_non_transformations():
    with pytest.raises(TypeError, match="to_optax"):
        gx.to_optax(lambda g: g)


def test_named_chain_state_is_an_ordered_dict_in_chain_order_as_optax():
    params = {"w": jnp.ones(2)}
    names = ("zeta", "alpha", "mid")
    ours = gx.named_chain(*[(n, gx.trace(0.5)) for n in names]).init(params)
    theirs = optax.named_chain(*[(n, optax.trace(0.5)) for n in names]).init(params)
    assert type(ours) is type(theirs) is collections.OrderedDict
    assert list(ours) == list(theirs) == list(names)
    assert [str(path[0]) for path, _ in jax.tree_util.tree_leaves_with_path(ours)] == [
        str(path[0]) for path, _ in jax.tree_util.tree_leaves_with_path(theirs)]
